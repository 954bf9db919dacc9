package websocket

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/k8s"
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

// Reasons a logs socket is refused before it opens.
var (
	// ErrLogsForbidden: only operators and admins read pod logs.
	ErrLogsForbidden = errors.New("websocket: pod logs are for operators and admins")
	// ErrNamespaceForbidden: the namespace is not the caller's organization's.
	ErrNamespaceForbidden = errors.New("websocket: namespace is not the organization's")
	// ErrPodNotFound: no session of the caller's organization runs the pod.
	ErrPodNotFound = errors.New("websocket: no session of the organization runs this pod")
)

// PodStore finds the session that runs a pod of an organization. *db.Database implements it.
type PodStore interface {
	GetSessionByPod(ctx context.Context, orgID, podName string) (models.Session, error)
}

// AgentLogRelay opens log streams relayed by the agents that run sessions. *AgentHub
// implements it.
type AgentLogRelay interface {
	OpenLogs(ctx context.Context, agentID string, req models.LogsRequest) (*AgentLogStream, error)
}

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

// HandleLogsWebSocket serves a logs connection without an organization.
//
// Deprecated: the caller is placed in the configured default organization as an operator,
// with namespace as its namespace; the server never uses it. Use HandleLogsWebSocketWithOrg.
func (m *Manager) HandleLogsWebSocket(conn *websocket.Conn, namespace, podName string) {
	m.handleLogs(conn, namespace, podName, &OrgContext{OrgID: m.cfg.DefaultOrg, K8sNamespace: namespace, Role: "operator"})
}

// HandleLogsWebSocketWithOrg serves an operator's or admin's logs socket for a pod of the
// organization's namespace: the last 100 lines, then new lines as they come, one `log` frame
// each, until the browser leaves or the source ends. A caller that may not read the pod's logs
// is closed with 1008; a source that fails gets `log_error` and 1011.
func (m *Manager) HandleLogsWebSocketWithOrg(conn *websocket.Conn, podName string, orgCtx *OrgContext) {
	m.handleLogs(conn, "", podName, orgCtx)
}

func (m *Manager) handleLogs(conn *websocket.Conn, namespace, podName string, orgCtx *OrgContext) {
	ctx, cancel := context.WithTimeout(m.ctx, defaultStoreCallTimeout)
	defer cancel()
	target, err := m.ResolveLogs(ctx, orgCtx, namespace, podName)
	if err != nil {
		reason, code := "pod not found", websocket.ClosePolicyViolation
		switch {
		case errors.Is(err, ErrLogsForbidden):
			reason = "operators and admins only"
		case errors.Is(err, ErrNamespaceForbidden):
			reason = "namespace is not your organization's"
		case !errors.Is(err, ErrPodNotFound):
			reason, code = "cannot look up the pod now", websocket.CloseInternalServerErr
		}
		closeConn(conn, m.cfg.WriteWait, code, reason)
		m.cfg.Logger.Warn("logs socket refused", "pod", podName, "err", err)
		return
	}
	if err := m.ServeLogs(conn, orgCtx, target); err != nil {
		m.cfg.Logger.Warn("logs socket refused", "pod", podName, "err", err)
	}
}

// ResolveLogs checks that the caller may read a pod's logs and finds the session that runs
// it: ErrLogsForbidden for a role other than operator or admin, ErrNamespaceForbidden for a
// namespace other than the organization's (an empty namespace means the organization's), and
// ErrPodNotFound for a pod no session of the organization runs. Other errors mean the sources
// could not answer.
func (m *Manager) ResolveLogs(ctx context.Context, orgCtx *OrgContext, namespace, podName string) (LogTarget, error) {
	if orgCtx == nil || orgCtx.OrgID == "" {
		return LogTarget{}, fmt.Errorf("logs of pod %q: organization required: %w", podName, ErrLogsForbidden)
	}
	org := *orgCtx
	if !org.seesWholeOrg() {
		return LogTarget{}, fmt.Errorf("logs of pod %q, role %q: %w", podName, org.Role, ErrLogsForbidden)
	}
	ns := m.namespaceFor(ctx, &org)
	if namespace != "" && namespace != ns {
		return LogTarget{}, fmt.Errorf("logs of %s/%s for org %q: %w", namespace, podName, org.OrgID, ErrNamespaceForbidden)
	}
	s, err := m.sessionByPod(ctx, org.OrgID, ns, podName)
	if err != nil {
		return LogTarget{}, err
	}
	return LogTarget{Namespace: ns, Pod: podName, Session: s}, nil
}

// sessionByPod finds the session of orgID that runs podName, in the session source. With
// Kubernetes it is a Session resource of the namespace that is the organization's by the rule
// of the sessions list (ownsResource): a resource of another organization, or one that names
// none in the shared default namespace, is not found, as a pod no resource names is.
func (m *Manager) sessionByPod(ctx context.Context, orgID, namespace, podName string) (models.Session, error) {
	notFound := fmt.Errorf("logs of %s/%s for org %q: %w", namespace, podName, orgID, ErrPodNotFound)
	if !models.ValidName(podName) || podName == "" {
		return models.Session{}, notFound // no pod has a name that is not one
	}
	if m.k8s != nil {
		sessions, err := m.k8s.ListSessions(ctx, namespace)
		if err != nil {
			return models.Session{}, fmt.Errorf("logs of %s/%s: %w", namespace, podName, err)
		}
		shared := m.sharedNamespace(namespace)
		for _, s := range sessions {
			if s.PodName != podName {
				continue
			}
			hasRow := false
			if shared && s.OrgID == "" { // only then does the row decide
				if hasRow, err = m.hasSessionRow(ctx, orgID, s.ID); err != nil {
					return models.Session{}, fmt.Errorf("logs of %s/%s: %w", namespace, podName, err)
				}
			}
			if ownsResource(orgID, shared, s, hasRow) {
				s.OrgID = orgID
				return s, nil
			}
		}
		return models.Session{}, notFound
	}
	store, ok := m.store.(PodStore)
	if !ok {
		return models.Session{}, notFound
	}
	s, err := store.GetSessionByPod(ctx, orgID, podName)
	if errors.Is(err, db.ErrNotFound) {
		return models.Session{}, notFound
	}
	if err != nil {
		return models.Session{}, fmt.Errorf("logs of %s/%s: %w", namespace, podName, err)
	}
	return s, nil
}

// hasSessionRow reports whether the database has session id as a row of orgID.
func (m *Manager) hasSessionRow(ctx context.Context, orgID, id string) (bool, error) {
	if m.store == nil {
		return false, nil
	}
	row, err := m.store.GetSession(ctx, id)
	if errors.Is(err, db.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return row.OrgID == orgID, nil
}

// ServeLogs streams a resolved pod's logs to an upgraded connection from the Manager's own
// goroutines, and returns at once. The Kubernetes API is the source when the Manager has a
// Kubernetes client, else the agent running the session (Config.Agents). The source is
// stopped as soon as the browser leaves, and the socket is closed with 1001 at shutdown.
func (m *Manager) ServeLogs(conn *websocket.Conn, orgCtx *OrgContext, target LogTarget) error {
	closed := onceOrNothing(target.OnClose)
	if orgCtx == nil || !orgCtx.seesWholeOrg() {
		closed()
		closeConn(conn, m.cfg.WriteWait, websocket.ClosePolicyViolation, "operators and admins only")
		return ErrLogsForbidden
	}
	m.logsMu.Lock()
	if m.logsClosed {
		m.logsMu.Unlock()
		closed()
		closeConn(conn, m.cfg.WriteWait, websocket.CloseGoingAway, "server shutting down")
		return errors.New("logs socket: shutting down")
	}
	m.logsOpen++
	m.logsMu.Unlock()
	org := *orgCtx
	go func() {
		defer m.logSocketDone()
		defer closed()
		m.streamLogs(conn, org, target)
	}()
	return nil
}

// logSocketDone counts a logs socket out, and tells a waiting Shutdown when it was the last.
func (m *Manager) logSocketDone() {
	m.logsMu.Lock()
	defer m.logsMu.Unlock()
	m.logsOpen--
	if m.logsClosed && m.logsOpen == 0 {
		close(m.logsDrained)
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

// streamLogs runs one logs socket: a reader that notices the browser leaving, the source, and
// this goroutine writing frames, pings and the final close.
func (m *Manager) streamLogs(conn *websocket.Conn, org OrgContext, t LogTarget) {
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	readDone := make(chan struct{})
	var readClose closeOrder // written before readDone is closed
	go func() {
		// readDone closes before the source is cancelled: whoever sees the cancellation finds
		// the reader's verdict (a 1009, say) already there.
		defer cancel()
		defer close(readDone)
		readClose = m.readLogsSocket(conn)
	}()
	open := m.metrics.connections.WithLabelValues("logs")
	open.Inc()
	defer open.Dec()

	src, err := m.openLogSource(ctx, t)
	code, reason := websocket.CloseNormalClosure, "log stream ended"
	if err == nil {
		code, reason, err = m.pumpLogs(ctx, conn, org, t, src)
		src.stop()
	}
	if err != nil {
		// After the browser left or at shutdown an error says nothing about the source.
		if ctx.Err() == nil {
			m.cfg.Logger.Warn("log stream failed", "org_id", org.OrgID, "namespace", t.Namespace,
				"pod", t.Pod, "source", srcKind(src), "err", err)
			frame, _ := json.Marshal(struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			}{"log_error", err.Error()})
			_ = writeText(conn, frame, m.cfg.WriteWait)
			code, reason = websocket.CloseInternalServerErr, "log source failed"
		}
	}
	select {
	case <-readDone:
		// The browser left or broke the rules; only the latter is told why.
		m.metrics.disconnects.WithLabelValues("logs", readClose.metric).Inc()
		if readClose.code != 0 {
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(readClose.code, readClose.reason), time.Now().Add(m.cfg.WriteWait))
		}
		_ = conn.Close()
		return
	default:
	}
	if m.ctx.Err() != nil {
		code, reason = websocket.CloseGoingAway, "server shutting down"
	}
	m.metrics.disconnects.WithLabelValues("logs", logsCloseReason(code)).Inc()
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(m.cfg.WriteWait))
	awaitClosed(readDone)
	_ = conn.Close()
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

// readLogsSocket reads and discards what the browser sends until it leaves, and returns the
// close to send when the browser broke a rule: a message over MaxMessageSize (1009), or
// silence past PongWait (1001). Pongs keep the connection alive.
func (m *Manager) readLogsSocket(conn *websocket.Conn) closeOrder {
	_ = conn.SetReadDeadline(time.Now().Add(m.cfg.PongWait))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(m.cfg.PongWait))
	})
	var rate frameRate
	in := m.metrics.messagesIn.WithLabelValues("logs")
	overRate := countPings(conn, &rate, m.cfg.ClientMessageRate, in)
	for {
		_, r, err := conn.NextReader()
		if err == nil {
			in.Inc()
		}
		if overRate() || (err == nil && rate.exceeded(time.Now(), m.cfg.ClientMessageRate)) {
			return closeOrder{websocket.ClosePolicyViolation, errRateExceeded.Error(), "rate_limited"}
		}
		if err == nil {
			var n int64
			n, err = io.Copy(io.Discard, io.LimitReader(r, m.cfg.MaxMessageSize+1))
			if err == nil && n > m.cfg.MaxMessageSize {
				return closeOrder{websocket.CloseMessageTooBig, "message too big", "too_big"}
			}
		}
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				return closeOrder{websocket.CloseGoingAway, "pong timeout", "pong_timeout"}
			}
			return closeOrder{metric: "client_closed"}
		}
		_ = conn.SetReadDeadline(time.Now().Add(m.cfg.PongWait))
	}
}

// openLogSource starts the pod's log stream: from the Kubernetes API, or from the agent that
// runs the session.
func (m *Manager) openLogSource(ctx context.Context, t LogTarget) (*logSource, error) {
	if m.k8s != nil {
		return m.openKubernetesLogs(ctx, t)
	}
	if m.cfg.Agents == nil || t.Session.AgentID == "" {
		return nil, errors.New("no agent runs this session, so its logs cannot be read")
	}
	s, err := m.cfg.Agents.OpenLogs(ctx, t.Session.AgentID, models.LogsRequest{
		Namespace: t.Namespace, Pod: t.Pod, SessionID: t.Session.ID, TailLines: LogsTailLines, Follow: true,
	})
	if errors.Is(err, ErrAgentNotConnected) {
		return nil, errors.New("the agent running this session is not connected")
	}
	if err != nil {
		return nil, fmt.Errorf("asking the agent for logs: %w", err)
	}
	return &logSource{q: s.q, kind: "agent", agent: s, stop: s.Close}, nil
}

// openKubernetesLogs opens the pod's log stream (follow, timestamps, the last 100 lines) and
// reads it into a queue from a goroutine that ends with ctx or the stream. Opening is bounded
// by LogsSilence.
func (m *Manager) openKubernetesLogs(ctx context.Context, t LogTarget) (*logSource, error) {
	sctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(m.cfg.LogsSilence, cancel)
	rc, err := m.k8s.PodLogs(sctx, t.Namespace, t.Pod, LogsTailLines)
	if !timer.Stop() {
		if err == nil {
			_ = rc.Close()
		}
		cancel()
		return nil, fmt.Errorf("the Kubernetes API did not open the log stream within %s", m.cfg.LogsSilence)
	}
	if err != nil {
		cancel()
		if errors.Is(err, k8s.ErrPodNotFound) {
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
			at, line := k8s.ParseLogLine(sc.Text())
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

// pumpLogs writes the source's lines to the browser, one `log` frame each, with pings, until
// the source ends (the close to send), the browser leaves or its token expires. An error is
// for `log_error`.
func (m *Manager) pumpLogs(ctx context.Context, conn *websocket.Conn, org OrgContext, t LogTarget, src *logSource) (int, string, error) {
	ping := time.NewTicker(m.cfg.PingInterval)
	defer ping.Stop()
	silence := time.NewTicker(m.cfg.LogsSilence)
	defer silence.Stop()
	var expiry <-chan time.Time
	if !org.ExpiresAt.IsZero() {
		et := time.NewTimer(org.ExpiresAt.Sub(m.cfg.Now()))
		defer et.Stop()
		expiry = et.C
	}
	lines := m.metrics.logLines.WithLabelValues(src.kind)
	for {
		recs, done, err := src.q.take()
		for _, r := range recs {
			at := r.At
			if at.IsZero() {
				at = m.cfg.Now()
			}
			frame, _ := json.Marshal(struct {
				Type      string    `json:"type"`
				Namespace string    `json:"namespace"`
				Pod       string    `json:"pod"`
				Timestamp time.Time `json:"timestamp"`
				Line      string    `json:"line"`
			}{"log", t.Namespace, t.Pod, at.UTC(), r.Line})
			if werr := writeText(conn, frame, m.cfg.WriteWait); werr != nil {
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
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(m.cfg.WriteWait)); err != nil {
				return websocket.CloseGoingAway, "write failed", nil
			}
		case <-silence.C:
			if src.agent == nil {
				continue
			}
			if !src.q.hasHeard() {
				return 0, "", fmt.Errorf("the agent sent no logs within %s", m.cfg.LogsSilence)
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
