package agentclient

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/streamspace/streamspace-realtime/models"
)

// Handler runs one command. Its ctx ends when the Agent stops; a handler outlives the
// connection it came on, and its result is delivered on whichever connection is up when it
// returns. A nil error reports complete with result; an error reports failed with its text.
// Handlers run concurrently, up to Config.MaxConcurrent at a time.
type Handler func(ctx context.Context, cmd Command) (result map[string]any, err error)

// Command is one command of the control plane (PROTOCOL.md 3.3). Attempt is 1 on the first
// delivery; a command is handed to a Handler once, whatever the number of deliveries.
type Command struct {
	ID      string
	Action  string
	Payload map[string]any
	Attempt int
}

// LogsHandler streams the logs a "logs" request asks for, calling emit for each line (at is
// the source's time, or zero), until it has sent what was asked or ctx ends: "logs_stop", the
// end of the connection the request came on, or the Agent stopping. emit blocks while the
// outbound queue is full and returns an error once the stream cannot go on; the handler should
// then return. The SDK sends "log_end" when the handler returns, with the error's text unless
// the stream was stopped.
type LogsHandler func(ctx context.Context, req models.LogsRequest, emit func(line string, at time.Time) error) error

// Agent is one agent process's link to the control plane.
//
// Concurrency contract: all methods are safe for concurrent use. Run owns every goroutine of
// the Agent: per connection one reader, one writer (the only goroutine that writes to the
// socket) and one heartbeat goroutine, plus one goroutine per command handler and per log
// stream; Run returns only after the connection goroutines have ended and the handlers have
// returned or ShutdownTimeout has passed. Handle, HandleLogs, SetDraining and
// SetActiveSessions may be called before or while Run runs. Run runs once at a time.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	clock   clockwork.Clock
	httpURL string
	wsURL   string

	keyMu      sync.RWMutex
	apiKey     string
	registered atomic.Bool

	hmu         sync.RWMutex
	handlers    map[string]Handler
	logsHandler LogsHandler

	draining       atomic.Bool
	activeSessions atomic.Pointer[func() int]
	hbKick         chan struct{} // asks the heartbeat goroutine for a heartbeat now

	outMu        sync.Mutex
	out          outbox
	retry        [][]byte      // frames to send again with the next heartbeat, guarded by outMu
	outboxNotify chan struct{} // the outbox has frames for the writer

	memMu sync.Mutex
	mem   *memory

	slots   chan struct{} // one token per running handler
	work    work          // handlers and log streams
	running atomic.Bool

	stats counters

	tunMu       sync.Mutex
	tunSessions map[string]struct{} // sessions given to OpenTunnel
	tunConn     *conn               // the connection up now, nil between connections

	// Timings of a connection; constants, lowered by tests.
	pingPeriod time.Duration // WebSocket pings, and the application keepalive they carry
	pongWait   time.Duration // read deadline, extended by any frame or pong
	writeWait  time.Duration // deadline of one write
	closeGrace time.Duration // wait for the peer's close frame after sending ours
	upHealthy  time.Duration // a connection up this long resets the backoff
	// tunnelRetry is the wait before a StreamSpace-mode tunnel that ended on its own opens
	// again.
	tunnelRetry time.Duration
}

// Connection timings (PROTOCOL.md leaves them to the agent).
const (
	pingPeriod = 25 * time.Second
	pongWait   = 60 * time.Second
	writeWait  = 10 * time.Second
	closeGrace = time.Second
	upHealthy  = time.Minute
	readLimit  = 512 << 10
)

// New validates cfg and returns an Agent that has not connected yet.
func New(cfg Config) (*Agent, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	httpURL, wsURL, _ := baseURLs(cfg.ServerURL)
	log := cfg.Logger.With("agent_id", cfg.AgentID)
	return &Agent{
		cfg:          cfg,
		log:          log,
		clock:        cfg.Clock,
		httpURL:      httpURL,
		wsURL:        wsURL,
		apiKey:       cfg.APIKey,
		handlers:     make(map[string]Handler),
		hbKick:       make(chan struct{}, 1),
		out:          outbox{log: log},
		outboxNotify: make(chan struct{}, 1),
		mem:          newMemory(memoryLimit),
		slots:        make(chan struct{}, cfg.MaxConcurrent),
		pingPeriod:   pingPeriod,
		pongWait:     pongWait,
		writeWait:    writeWait,
		closeGrace:   closeGrace,
		upHealthy:    upHealthy,
		tunnelRetry:  tunnelRetry,
		tunSessions:  make(map[string]struct{}),
	}, nil
}

// ID returns the agent id.
func (a *Agent) ID() string { return a.cfg.AgentID }

// Handle registers h for commands whose action is action, replacing any previous one; a nil h
// removes it. Commands without a handler fail with "unknown action: <action>".
func (a *Agent) Handle(action string, h Handler) {
	a.hmu.Lock()
	defer a.hmu.Unlock()
	if h == nil {
		delete(a.handlers, action)
		return
	}
	a.handlers[action] = h
}

// HandleLogs registers h for "logs" requests; nil removes it. Without one, "logs" requests are
// ignored and counted in Stats.UnknownFrames (the control plane then tells the browser).
func (a *Agent) HandleLogs(h LogsHandler) {
	a.hmu.Lock()
	defer a.hmu.Unlock()
	a.logsHandler = h
}

func (a *Agent) handler(action string) Handler {
	a.hmu.RLock()
	defer a.hmu.RUnlock()
	return a.handlers[action]
}

func (a *Agent) logs() LogsHandler {
	a.hmu.RLock()
	defer a.hmu.RUnlock()
	return a.logsHandler
}

// SetDraining sets the status heartbeats carry: "draining" (no new sessions, please) or
// "online". A change sends a heartbeat at once when connected.
func (a *Agent) SetDraining(draining bool) {
	if a.draining.Swap(draining) != draining {
		a.kickHeartbeat()
	}
}

// SetActiveSessions sets the function heartbeats call for activeSessions; nil reports 0. It is
// called from the heartbeat goroutine and must be safe for that.
func (a *Agent) SetActiveSessions(f func() int) {
	if f == nil {
		a.activeSessions.Store(nil)
		return
	}
	a.activeSessions.Store(&f)
}

func (a *Agent) kickHeartbeat() {
	select {
	case a.hbKick <- struct{}{}:
	default:
	}
}

// ReportStatus sends a session's state (a "status" frame). It does not wait for the network:
// the report is queued in order with the command results and sent on the current connection,
// or on the next one if the current one is down or dies before the control plane confirmed
// it. It fails only when ctx is already done or msg cannot be encoded.
func (a *Agent) ReportStatus(ctx context.Context, msg models.StatusMessage) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("agentclient: report status of session %s: %w", msg.SessionID, err)
	}
	if msg.SessionID == "" {
		return fmt.Errorf("agentclient: report status: sessionId is required")
	}
	f, err := a.encode(models.MessageTypeStatus, msg)
	if err != nil {
		return fmt.Errorf("agentclient: report status of session %s: %w", msg.SessionID, err)
	}
	a.pushReliable(f)
	return nil
}

// pushReliable queues a frame that must be delivered (complete, failed, status) and wakes the
// writer.
func (a *Agent) pushReliable(f []byte) {
	a.outMu.Lock()
	a.out.push(f)
	a.outMu.Unlock()
	select {
	case a.outboxNotify <- struct{}{}:
	default:
	}
}

// retryLater keeps a frame the control plane asked to have again; the next heartbeat moves it
// to the outbox.
func (a *Agent) retryLater(f []byte) {
	a.outMu.Lock()
	a.retry = append(a.retry, f)
	if len(a.retry) > outboxLimit {
		a.retry = a.retry[len(a.retry)-outboxLimit:]
	}
	a.outMu.Unlock()
}

// releaseRetries moves the frames kept by retryLater to the outbox.
func (a *Agent) releaseRetries() {
	a.outMu.Lock()
	frames := a.retry
	a.retry = nil
	a.outMu.Unlock()
	for _, f := range frames {
		a.pushReliable(f)
	}
}

// encode builds one frame: the envelope of PROTOCOL.md 3.2 with the current UTC time.
func (a *Agent) encode(typ string, payload any) ([]byte, error) {
	p, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", typ, err)
	}
	b, err := json.Marshal(models.AgentMessage{Type: typ, Timestamp: a.clock.Now().UTC(), Payload: p})
	if err != nil {
		return nil, fmt.Errorf("encode %s frame: %w", typ, err)
	}
	return b, nil
}

func (a *Agent) key() string {
	a.keyMu.RLock()
	defer a.keyMu.RUnlock()
	return a.apiKey
}

// setKey switches to a key registration issued and tells OnAPIKey.
func (a *Agent) setKey(key string) {
	a.keyMu.Lock()
	changed := a.apiKey != key
	a.apiKey = key
	a.keyMu.Unlock()
	if changed {
		a.log.Info("control plane issued a new API key; using it from now on")
		if a.cfg.OnAPIKey != nil {
			a.cfg.OnAPIKey(key)
		}
	}
}
