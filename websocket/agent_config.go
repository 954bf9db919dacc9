package websocket

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// Defaults of AgentHubConfig (PROTOCOL.md 3.4 and 3.5).
const (
	DefaultAgentHeartbeatTimeout = 45 * time.Second
	DefaultAgentCheckInterval    = 10 * time.Second
	DefaultHeartbeatFlush        = 5 * time.Second
	DefaultCommandAckTimeout     = 30 * time.Second
	DefaultCommandMaxAttempts    = 5
	DefaultCommandTTL            = 24 * time.Hour
	DefaultAgentQueueSize        = 256
	DefaultAgentMaxMessageSize   = 512 << 10
	DefaultAgentMessageRate      = 1000
	DefaultAgentMessageBurst     = 2000
	DefaultAgentReceiveTimeout   = 5 * time.Second
	// malformedLimit malformed frames within malformedWindow are tolerated; the next closes
	// the connection with 1008.
	malformedLimit  = 10
	malformedWindow = time.Minute
	// deliverBatch bounds one read of an agent's pending commands; firstPassLimit the read at
	// connect, which includes the commands earlier connections left unacknowledged.
	deliverBatch   = 500
	firstPassLimit = 10000
)

// AgentStore is what the AgentHub keeps agents, commands and the sessions placed on agents in.
// *db.Database implements it (over a pool the caller has too: db.OpenDB, db.OpenPool); an
// embedder may implement it over its own tables (docs/EMBEDDING.md). Every state change is a
// guarded update, so a late or duplicated call can never move a command backwards or mark a
// newer connection offline. A command, agent or session that does not exist is an error
// wrapping ErrNotFound; any other error means the store could not answer.
//
// The hub also uses, when the store implements it, SessionGetter: it checks that the session a
// vnc_ready announces is placed on the announcing agent before a viewer of this package may
// use the tunnel (without it no StreamSpace tunnel is accepted; such frames still reach
// AgentConnection.Receive).
type AgentStore interface {
	MarkAgentOnline(ctx context.Context, id, replica, connectionID string, at time.Time) error
	MarkAgentOffline(ctx context.Context, id, connectionID string, at time.Time) (bool, error)
	RecordAgentHeartbeats(ctx context.Context, beats []db.AgentHeartbeat) error

	CommandStore

	ApplyAgentStatuses(ctx context.Context, agentID string, reports []db.AgentStatusReport) ([]db.AgentStatusResult, error)
}

var _ AgentStore = (*db.Database)(nil)

// EventPublisher publishes a session event to an organization's stream. *Notifier implements
// it; the AgentHub turns agents' status reports into events through it.
type EventPublisher interface {
	Publish(ctx context.Context, orgID string, event SessionEvent) (cluster.Position, error)
}

var _ EventPublisher = (*Notifier)(nil)

// sessionEvents publishes the session events the agent side makes (a session created with its
// command, a state an agent reported) through the configured publisher, if any. A failure is
// logged and dropped: the session row it reports is already written.
type sessionEvents struct {
	pub    EventPublisher
	logger *slog.Logger
}

func (e sessionEvents) publish(ctx context.Context, orgID string, ev SessionEvent) {
	if e.pub == nil {
		return
	}
	if _, err := e.pub.Publish(ctx, orgID, ev); err != nil {
		e.logger.Warn("publishing session event failed", "org_id", orgID,
			"session_id", ev.SessionID, "type", string(ev.Type), "err", err)
	}
}

// Errors of the agent side, checked with errors.Is.
var (
	// ErrAgentNotConnected: the agent has no connection on this replica. A command given to
	// SendCommandToAgent is stored anyway and delivered when the agent connects.
	ErrAgentNotConnected = errors.New("websocket: agent not connected")
	// ErrAgentHubStopped: the hub is stopping or stopped and accepts no connections.
	ErrAgentHubStopped = errors.New("websocket: agent hub stopped")
	// ErrCommandConflict: a command with this id exists for another agent or action.
	ErrCommandConflict = errors.New("websocket: command id already used")
)

// AgentHubConfig tunes the agent side. The zero value means the documented defaults.
type AgentHubConfig struct {
	// Replica names this process: in the agents table and the cluster directory (which
	// replica holds a connection). Default: the hostname.
	Replica string
	// HeartbeatTimeout: an agent silent this long is stale, closed with 4002 and marked
	// offline. CheckInterval is how often that is checked, along with ack timeouts and
	// command deadlines.
	HeartbeatTimeout time.Duration
	CheckInterval    time.Duration
	// HeartbeatFlush is how often heartbeats are written to the database, in one transaction
	// for every agent that beat since the last flush.
	HeartbeatFlush time.Duration
	// AckTimeout: a command not acknowledged this long after its delivery is sent again
	// (attempt+1), until MaxAttempts deliveries; then it fails.
	AckTimeout  time.Duration
	MaxAttempts int
	// CommandTTL is the deadline given to commands that have none; past it an unfinished
	// command becomes expired. Negative means no deadline.
	CommandTTL time.Duration
	// QueueSize bounds each agent's outbound queue (frames). Commands wait for room; other
	// frames that find it full close the connection with 4001.
	QueueSize int
	// MaxMessageSize bounds one inbound frame (bytes); larger ones close with 1009.
	MaxMessageSize int64
	// MessageRate and MessageBurst bound inbound frames per second per connection; a flood
	// past them closes with 1008.
	MessageRate  float64
	MessageBurst int
	// PingInterval, PongWait and WriteWait are the WebSocket keepalive, as on the browser side.
	PingInterval time.Duration
	PongWait     time.Duration
	WriteWait    time.Duration
	// ReceiveTimeout bounds how long a frame left to the embedder waits for room on a full
	// AgentConnection.Receive before it is dropped and counted; the connection's reader waits
	// that long at most. At most half of PongWait.
	ReceiveTimeout time.Duration
	// DrainTimeout bounds Stop.
	DrainTimeout time.Duration
	// Directory shares agents with the other replicas; nil means this replica alone.
	Directory cluster.Directory
	// Events receives the session events made from agents' status reports; nil means none
	// are published (the session rows are still updated).
	Events EventPublisher
	// Logs relays the log streams of the agents this hub holds: the PodLogs of this replica,
	// built with the same Directory and handed to the Manager too (Config.Logs). Nil means a
	// PodLogs of the hub's own, which AgentHub.OpenLogs serves. The constructors panic on a
	// PodLogs that reaches other replicas through another Directory than the hub's.
	Logs *PodLogs
	// Clock drives heartbeats, staleness, ack timeouts and deadlines; nil means the real
	// clock. Tests pass a fake one so liveness tests take milliseconds.
	Clock      clockwork.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// VNC bounds the session-streaming tunnels through the agents (PROTOCOL.md 6).
	VNC VNCConfig
}

// Defaults of VNCConfig (PROTOCOL.md 6.1 to 6.4).
const (
	DefaultVNCMaxPerUser   = 4
	DefaultVNCMaxPerAgent  = 32
	DefaultVNCOpenTimeout  = 15 * time.Second
	DefaultVNCEarlyBytes   = 64 << 10
	DefaultVNCPaceBacklog  = 1 << 20
	DefaultVNCMaxBacklog   = 8 << 20
	DefaultVNCToAgentQueue = 256 << 10
)

// VNCConfig tunes the VNC tunnels. The zero value means the documented defaults.
type VNCConfig struct {
	// MaxPerUser and MaxPerAgent bound the viewer sockets of one user and the tunnels through
	// one agent, counted on this replica (STREAMSPACE_VNC_MAX_PER_USER, _PER_AGENT).
	MaxPerUser  int
	MaxPerAgent int
	// Window is each direction's starting credit on a tunnel/1 tunnel (STREAMSPACE_VNC_WINDOW),
	// at most models.MaxTunnelWindow.
	Window int64
	// OpenTimeout bounds the agent's answer to tunnel_open.
	OpenTimeout time.Duration
	// EarlyBytes bounds what a StreamSpace agent's tunnel may send before its viewer comes.
	EarlyBytes int
	// PaceBacklog: while more than this waits for a StreamSpace tunnel's browser, its
	// FramebufferUpdateRequests are held back; past MaxBacklog the viewer is closed with 4001.
	PaceBacklog int64
	MaxBacklog  int64
	// ToAgentQueue bounds a tunnel's bytes waiting for the agent; the viewer's reader waits
	// beyond it, so TCP slows the browser.
	ToAgentQueue int
}

func (c VNCConfig) withDefaults() VNCConfig {
	setInt := func(p *int, def int) {
		if *p <= 0 {
			*p = def
		}
	}
	setInt(&c.MaxPerUser, DefaultVNCMaxPerUser)
	setInt(&c.MaxPerAgent, DefaultVNCMaxPerAgent)
	setInt(&c.EarlyBytes, DefaultVNCEarlyBytes)
	setInt(&c.ToAgentQueue, DefaultVNCToAgentQueue)
	if c.Window <= 0 {
		c.Window = models.DefaultTunnelWindow
	}
	c.Window = min(c.Window, models.MaxTunnelWindow)
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = DefaultVNCOpenTimeout
	}
	if c.PaceBacklog <= 0 {
		c.PaceBacklog = DefaultVNCPaceBacklog
	}
	if c.MaxBacklog <= 0 {
		c.MaxBacklog = DefaultVNCMaxBacklog
	}
	return c
}

func (c AgentHubConfig) withDefaults() AgentHubConfig {
	setDur := func(p *time.Duration, def time.Duration) {
		if *p <= 0 {
			*p = def
		}
	}
	setDur(&c.HeartbeatTimeout, DefaultAgentHeartbeatTimeout)
	setDur(&c.CheckInterval, DefaultAgentCheckInterval)
	setDur(&c.HeartbeatFlush, DefaultHeartbeatFlush)
	setDur(&c.AckTimeout, DefaultCommandAckTimeout)
	setDur(&c.PongWait, DefaultPongWait)
	setDur(&c.PingInterval, DefaultPingInterval)
	setDur(&c.WriteWait, DefaultWriteWait)
	setDur(&c.DrainTimeout, DefaultDrainTimeout)
	if c.PingInterval >= c.PongWait {
		c.PingInterval = c.PongWait * 9 / 10
	}
	setDur(&c.ReceiveTimeout, DefaultAgentReceiveTimeout)
	// The reader waiting for Receive reads nothing meanwhile: the pong deadline must outlast it.
	c.ReceiveTimeout = min(c.ReceiveTimeout, c.PongWait/2)
	if c.CommandTTL == 0 {
		c.CommandTTL = DefaultCommandTTL
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultCommandMaxAttempts
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultAgentQueueSize
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultAgentMaxMessageSize
	}
	if c.MessageRate <= 0 {
		c.MessageRate = DefaultAgentMessageRate
	}
	if c.MessageBurst <= 0 {
		c.MessageBurst = DefaultAgentMessageBurst
	}
	if c.Replica == "" {
		c.Replica, _ = os.Hostname()
		if c.Replica == "" {
			c.Replica = "replica-" + uuid.NewString()[:8]
		}
	}
	c.VNC = c.VNC.withDefaults()
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
