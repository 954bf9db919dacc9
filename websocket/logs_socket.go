package websocket

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/k8s/podlog"
	"github.com/streamspace/streamspace-realtime/models"
)

// Log streaming limits (PROTOCOL.md 2.5).
const (
	// LogsTailLines is how many past lines a logs socket starts with.
	LogsTailLines = 100
	// DefaultLogsSilence is how long an agent asked for logs may stay silent before the
	// browser gets `log_error`, and how long a Kubernetes API may take to open the stream.
	DefaultLogsSilence = 10 * time.Second
	// maxLogLine bounds one line read from the Kubernetes API.
	maxLogLine = 1 << 20
)

// AgentLogRelay opens log streams relayed by the agents that run sessions. *PodLogs and
// *AgentHub implement it.
type AgentLogRelay interface {
	OpenLogs(ctx context.Context, agentID string, req models.LogsRequest) (*AgentLogStream, error)
}

var (
	_ AgentLogRelay = (*PodLogs)(nil)
	_ AgentLogRelay = (*AgentHub)(nil)
)

// LogTarget is a pod whose logs a caller may read: its organization's namespace, the pod,
// and the session that runs it.
type LogTarget struct {
	Namespace string
	Pod       string
	Session   models.Session
	// OnClose, when set, is called once when the connection is over, refused at the start
	// or closed later.
	OnClose func()
}

// logSocket is one browser's logs socket, with what the Manager serving it lends it: its
// limits, clock, logger and metrics, and the pod's log sources.
type logSocket struct {
	conn    *websocket.Conn
	org     OrgContext
	target  LogTarget
	cfg     Config        // the Manager's, with defaults
	metrics *hubMetrics   // the Manager's
	pods    PodLogSource  // the source when set
	agents  AgentLogRelay // else this one; nil: agent-relayed logs are unavailable
}

// logSockets are the logs sockets a PodLogs serves, counted so that the Manager's shutdown
// can close them (1001) and wait for them.
type logSockets struct {
	ctx    context.Context // cancelled by close: every socket ends
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	open    int
	drained chan struct{} // closed once closed is set and open is back to zero
}

func newLogSockets() *logSockets {
	s := &logSockets{drained: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// enter counts a socket in, unless the sockets are closed.
func (l *logSockets) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.open++
	return true
}

// leave counts a socket out, and tells a waiting closer when it was the last.
func (l *logSockets) leave() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.closed && l.open == 0 {
		close(l.drained)
	}
}

// serveSocket streams a resolved pod's logs to s's connection from goroutines of the
// component (counted in sockets), and returns at once; see Manager.ServeLogs.
func (p *PodLogs) serveSocket(s *logSocket, orgCtx *OrgContext) error {
	closed := onceOrNothing(s.target.OnClose)
	if orgCtx == nil || !orgCtx.seesWholeOrg() {
		closed()
		closeConn(s.conn, s.cfg.WriteWait, websocket.ClosePolicyViolation, "operators and admins only")
		return ErrLogsForbidden
	}
	if !p.sockets.enter() {
		closed()
		closeConn(s.conn, s.cfg.WriteWait, websocket.CloseGoingAway, "server shutting down")
		return errors.New("logs socket: shutting down")
	}
	s.org = *orgCtx
	go func() {
		defer p.sockets.leave()
		defer closed()
		s.run(p.sockets.ctx)
	}()
	return nil
}

// closeSockets ends every logs socket (1001) and refuses new ones. The Manager calls it at
// its shutdown. It is idempotent.
func (p *PodLogs) closeSockets() {
	l := p.sockets
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		if l.open == 0 {
			close(l.drained)
		}
	}
	l.mu.Unlock()
	l.cancel()
}

// waitSockets waits, until ctx ends, for the logs sockets closeSockets closed.
func (p *PodLogs) waitSockets(ctx context.Context) error {
	select {
	case <-p.sockets.drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("websocket: waiting for log sockets: %w", ctx.Err())
	}
}

// logSource is where one socket's lines come from.
type logSource struct {
	q     *logQueue
	kind  string // "kubernetes" or "agent", for metrics and logs
	agent *AgentLogStream
	stop  func()
}

func srcKind(s *logSource) string {
	if s == nil {
		return "none"
	}
	return s.kind
}

// run serves one logs socket until it closes (shutdown ends it with 1001): a reader that
// notices the browser leaving, the source, and this goroutine writing frames, pings and the final close.
func (s *logSocket) run(shutdown context.Context) {
	ctx, cancel := context.WithCancel(shutdown)
	defer cancel()
	readDone := make(chan struct{})
	var readClose closeOrder // written before readDone is closed
	go func() {
		// readDone closes before the source is cancelled: whoever sees the cancellation finds
		// the reader's verdict (a 1009, say) already there.
		defer cancel()
		defer close(readDone)
		readClose = s.read()
	}()
	open := s.metrics.connections.WithLabelValues("logs")
	open.Inc()
	defer open.Dec()

	src, err := s.openSource(ctx)
	code, reason := websocket.CloseNormalClosure, "log stream ended"
	if err == nil {
		code, reason, err = s.pump(ctx, src)
		src.stop()
	}
	if err != nil {
		// After the browser left or at shutdown an error says nothing about the source.
		if ctx.Err() == nil {
			s.cfg.Logger.Warn("log stream failed", "org_id", s.org.OrgID, "namespace", s.target.Namespace,
				"pod", s.target.Pod, "source", srcKind(src), "err", err)
			frame, _ := json.Marshal(struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			}{"log_error", err.Error()})
			_ = writeText(s.conn, frame, s.cfg.WriteWait)
			code, reason = websocket.CloseInternalServerErr, "log source failed"
		}
	}
	select {
	case <-readDone:
		// The browser left or broke the rules; only the latter is told why.
		s.metrics.disconnects.WithLabelValues("logs", readClose.metric).Inc()
		if readClose.code != 0 {
			_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(readClose.code, readClose.reason), time.Now().Add(s.cfg.WriteWait))
		}
		_ = s.conn.Close()
		return
	default:
	}
	if shutdown.Err() != nil {
		code, reason = websocket.CloseGoingAway, "server shutting down"
	}
	s.metrics.disconnects.WithLabelValues("logs", logsCloseReason(code)).Inc()
	_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(s.cfg.WriteWait))
	awaitClosed(readDone)
	_ = s.conn.Close()
	<-readDone
}

// logsCloseReason is the disconnect metric's reason for a logs socket the server closes with
// code.
func logsCloseReason(code int) string {
	switch code {
	case websocket.CloseNormalClosure:
		return "stream_ended"
	case websocket.CloseGoingAway:
		return "shutdown"
	case websocket.CloseInternalServerErr:
		return "source_failed"
	case CloseSlowConsumer:
		return "slow_consumer"
	case CloseTokenExpired:
		return "token_expired"
	default:
		return "other"
	}
}

// closeOrder is a close frame to send; code 0 means none.
type closeOrder struct {
	code   int
	reason string
	metric string // the disconnect metric's reason
}

// read reads and discards what the browser sends until it leaves, and returns the
// close to send when the browser broke a rule: a message over MaxMessageSize (1009), or
// silence past PongWait (1001). Pongs keep the connection alive.
func (s *logSocket) read() closeOrder {
	_ = s.conn.SetReadDeadline(time.Now().Add(s.cfg.PongWait))
	s.conn.SetPongHandler(func(string) error {
		return s.conn.SetReadDeadline(time.Now().Add(s.cfg.PongWait))
	})
	var rate frameRate
	in := s.metrics.messagesIn.WithLabelValues("logs")
	overRate := countPings(s.conn, &rate, s.cfg.ClientMessageRate, in)
	for {
		_, r, err := s.conn.NextReader()
		if err == nil {
			in.Inc()
		}
		if overRate() || (err == nil && rate.exceeded(time.Now(), s.cfg.ClientMessageRate)) {
			return closeOrder{websocket.ClosePolicyViolation, errRateExceeded.Error(), "rate_limited"}
		}
		if err == nil {
			var n int64
			n, err = io.Copy(io.Discard, io.LimitReader(r, s.cfg.MaxMessageSize+1))
			if err == nil && n > s.cfg.MaxMessageSize {
				return closeOrder{websocket.CloseMessageTooBig, "message too big", "too_big"}
			}
		}
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				return closeOrder{websocket.CloseGoingAway, "pong timeout", "pong_timeout"}
			}
			return closeOrder{metric: "client_closed"}
		}
		_ = s.conn.SetReadDeadline(time.Now().Add(s.cfg.PongWait))
	}
}

// openSource starts the pod's log stream: from the PodLogSource (the Kubernetes API), or from
// the agent that runs the session.
func (s *logSocket) openSource(ctx context.Context) (*logSource, error) {
	if s.pods != nil {
		return s.openPodLogs(ctx)
	}
	if s.agents == nil || s.target.Session.AgentID == "" {
		return nil, errors.New("no agent runs this session, so its logs cannot be read")
	}
	stream, err := s.agents.OpenLogs(ctx, s.target.Session.AgentID, models.LogsRequest{
		Namespace: s.target.Namespace, Pod: s.target.Pod, SessionID: s.target.Session.ID, TailLines: LogsTailLines, Follow: true,
	})
	if errors.Is(err, ErrAgentNotConnected) {
		return nil, errors.New("the agent running this session is not connected")
	}
	if err != nil {
		return nil, fmt.Errorf("asking the agent for logs: %w", err)
	}
	return &logSource{q: stream.q, kind: "agent", agent: stream, stop: stream.Close}, nil
}

// openPodLogs opens the pod's log stream (follow, timestamps, the last 100 lines) and
// reads it into a queue from a goroutine that ends with ctx or the stream. Opening is bounded
// by LogsSilence.
func (s *logSocket) openPodLogs(ctx context.Context) (*logSource, error) {
	sctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(s.cfg.LogsSilence, cancel)
	rc, err := s.pods.PodLogs(sctx, s.target.Namespace, s.target.Pod, LogsTailLines)
	if !timer.Stop() {
		if err == nil {
			_ = rc.Close()
		}
		cancel()
		return nil, fmt.Errorf("the Kubernetes API did not open the log stream within %s", s.cfg.LogsSilence)
	}
	if err != nil {
		cancel()
		if errors.Is(err, ErrPodNotFound) { // k8s.ErrPodNotFound is the same error
			return nil, errors.New("the pod does not exist in Kubernetes")
		}
		return nil, fmt.Errorf("opening the pod's log stream: %w", err)
	}
	q := newLogQueue(defaultLogQueueLines, defaultLogQueueBytes)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer rc.Close()
		sc := bufio.NewScanner(rc)
		sc.Buffer(make([]byte, 0, 64<<10), maxLogLine)
		for sc.Scan() {
			at, line := podlog.ParseLine(sc.Text())
			if err := q.put(sctx, logRecord{Line: line, At: at}); err != nil {
				return
			}
		}
		err := sc.Err()
		if sctx.Err() != nil {
			return
		}
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("a log line is longer than %d bytes", maxLogLine)
		} else if err != nil && !errors.Is(err, io.EOF) {
			err = fmt.Errorf("reading the pod's log stream: %w", err)
		}
		q.finish(err)
	}()
	stop := func() {
		cancel()
		q.finish(nil)
		<-done
	}
	return &logSource{q: q, kind: "kubernetes", stop: stop}, nil
}

// pump writes the source's lines to the browser, one `log` frame each, with pings, until
// the source ends (the close to send), the browser leaves or its token expires. An error is
// for `log_error`.
func (s *logSocket) pump(ctx context.Context, src *logSource) (int, string, error) {
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	silence := time.NewTicker(s.cfg.LogsSilence)
	defer silence.Stop()
	var expiry <-chan time.Time
	if !s.org.ExpiresAt.IsZero() {
		et := time.NewTimer(s.org.ExpiresAt.Sub(s.cfg.Now()))
		defer et.Stop()
		expiry = et.C
	}
	lines := s.metrics.logLines.WithLabelValues(src.kind)
	for {
		recs, done, err := src.q.take()
		for _, r := range recs {
			at := r.At
			if at.IsZero() {
				at = s.cfg.Now()
			}
			frame, _ := json.Marshal(struct {
				Type      string    `json:"type"`
				Namespace string    `json:"namespace"`
				Pod       string    `json:"pod"`
				Timestamp time.Time `json:"timestamp"`
				Line      string    `json:"line"`
			}{"log", s.target.Namespace, s.target.Pod, at.UTC(), r.Line})
			if werr := writeText(s.conn, frame, s.cfg.WriteWait); werr != nil {
				return CloseSlowConsumer, "write failed", nil
			}
			lines.Inc()
		}
		if done {
			if errors.Is(err, errLogOverflow) {
				return CloseSlowConsumer, "slow consumer: log stream overflow", nil
			}
			return websocket.CloseNormalClosure, "log stream ended", err
		}
		if len(recs) > 0 {
			continue
		}
		select {
		case <-src.q.ready:
		case <-ping.C:
			if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteWait)); err != nil {
				return websocket.CloseGoingAway, "write failed", nil
			}
		case <-silence.C:
			if src.agent == nil {
				continue
			}
			if !src.q.hasHeard() {
				return 0, "", fmt.Errorf("the agent sent no logs within %s", s.cfg.LogsSilence)
			}
			if !src.agent.stillHeld(ctx) {
				return 0, "", errAgentGone
			}
		case <-expiry:
			return CloseTokenExpired, "token expired", nil
		case <-ctx.Done():
			return websocket.CloseGoingAway, "server shutting down", nil
		}
	}
}
