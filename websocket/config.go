package websocket

import (
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// Close codes of PROTOCOL.md 1 beyond RFC 6455's.
const (
	// CloseReplaced: a newer connection of the same agent took over.
	CloseReplaced = 4000
	// CloseSlowConsumer: the connection's queue overflowed.
	CloseSlowConsumer = 4001
	// CloseHeartbeatTimeout: the agent stopped sending heartbeats.
	CloseHeartbeatTimeout = 4002
	// CloseTokenExpired: the credentials of the connection expired.
	CloseTokenExpired = 4003
	// CloseAccessRevoked: a session the connection is subscribed to is no longer visible to its
	// user (the share was withdrawn, the session was deleted, or its id now names another
	// user's new session).
	CloseAccessRevoked = 4004
)

// Defaults used when a Config field is zero.
const (
	DefaultQueueSize         = 256
	DefaultPingInterval      = 54 * time.Second
	DefaultSessionsInterval  = 3 * time.Second
	DefaultMetricsInterval   = 5 * time.Second
	DefaultPongWait          = 60 * time.Second
	DefaultWriteWait         = 10 * time.Second
	DefaultMaxMessageSize    = 4 << 10
	DefaultClientMessageRate = 20
	DefaultMaxSubscriptions  = 64
	DefaultDrainTimeout      = 5 * time.Second
	DefaultPresenceBurst     = 10
	DefaultPresenceInterval  = 2 * time.Second
	DefaultOrg               = "default-org"
	DefaultNamespace         = "streamspace"
	defaultStoreCallTimeout  = 5 * time.Second
)

// Config tunes the browser side of the package. The zero value means the
// documented defaults, so Config{} is always valid.
type Config struct {
	// QueueSize bounds each client's outbound queue (messages). A client
	// whose queue is full is closed with 4001 rather than slowing anyone.
	QueueSize int
	// PingInterval is how often a ping is sent; PongWait how long a
	// connection may stay silent (no pong, no message) before it is closed.
	PingInterval time.Duration
	PongWait     time.Duration
	// WriteWait bounds every write to a socket.
	WriteWait time.Duration
	// MaxMessageSize bounds one inbound browser message (bytes); larger
	// messages close the connection with 1009.
	MaxMessageSize int64
	// DrainTimeout bounds how long shutdown waits for queued messages to be
	// written and connections to close.
	DrainTimeout time.Duration
	// DefaultOrg and DefaultNamespace are what the deprecated entry points
	// without an organization map to, and the namespace of last resort.
	DefaultOrg       string
	DefaultNamespace string
	// Bus carries each organization's ordered event stream between
	// replicas. Nil means an in-process bus owned by the Manager, keeping
	// History for browsers that resume with `since`.
	Bus     cluster.Bus
	History cluster.History
	// Logger receives the package's logs; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the package's Prometheus collectors; nil means
	// they are kept but not registered.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now. Tests drive token expiry with it.
	Now func() time.Time
	// SessionsInterval is how often each organization with listeners has its session list
	// checked; a client gets `sessions_update` only when its visible list changed.
	SessionsInterval time.Duration
	// Replica names this process in the connection records; default: the hostname.
	Replica string
	// MetricsInterval is how often each organization with metrics listeners is sent its
	// `metrics_update`.
	MetricsInterval time.Duration
	// Agents relays pod logs from the agents running sessions, where the Kubernetes API is
	// not the source; nil means Logs relays them when it is set, else such logs are
	// unavailable (the browser gets `log_error`).
	Agents AgentLogRelay
	// Logs serves the logs sockets: the PodLogs of this replica, built before the Manager and
	// the AgentHub and handed to both (AgentHubConfig.Logs), so it relays the logs of the
	// agents the hub holds. Nil means a PodLogs of the Manager's own, which relays nothing
	// unless Agents is set.
	Logs *PodLogs
	// ClientMessageRate is how many frames a second a browser may send (its sessions and
	// metrics sockets take none but control frames); more closes it with 1008. Zero means
	// DefaultClientMessageRate, negative no limit.
	ClientMessageRate int
	// MaxSubscriptions bounds the user and session subscriptions of one browser connection
	// (Notifier.SubscribeUser and SubscribeSession); one more closes it with 1008. Zero means
	// DefaultMaxSubscriptions, negative no limit.
	MaxSubscriptions int
	// PresenceBurst and PresenceInterval bound the session.connected and session.disconnected
	// events one user's connections publish on a replica: PresenceBurst connections announced
	// at once, one more every PresenceInterval; a connection over it is announced later if it
	// stays open (see presenceLimiter). Zero means the defaults, a negative PresenceBurst no
	// limit.
	PresenceBurst    int
	PresenceInterval time.Duration
	// LogsSilence is how long an agent asked for logs may send nothing, and how long the
	// Kubernetes API may take to open a log stream, before the browser gets `log_error`.
	LogsSilence time.Duration
}

func (c Config) withDefaults() Config {
	if c.ClientMessageRate == 0 {
		c.ClientMessageRate = DefaultClientMessageRate
	}
	if c.MaxSubscriptions == 0 {
		c.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongWait <= 0 {
		c.PongWait = DefaultPongWait
	}
	if c.PingInterval >= c.PongWait {
		c.PingInterval = c.PongWait * 9 / 10
	}
	if c.WriteWait <= 0 {
		c.WriteWait = DefaultWriteWait
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.DefaultOrg == "" {
		c.DefaultOrg = DefaultOrg
	}
	if c.DefaultNamespace == "" {
		c.DefaultNamespace = DefaultNamespace
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.SessionsInterval <= 0 {
		c.SessionsInterval = DefaultSessionsInterval
	}
	if c.Replica == "" {
		c.Replica, _ = os.Hostname()
	}
	if c.MetricsInterval <= 0 {
		c.MetricsInterval = DefaultMetricsInterval
	}
	if c.PresenceBurst == 0 {
		c.PresenceBurst = DefaultPresenceBurst
	}
	if c.PresenceInterval <= 0 {
		c.PresenceInterval = DefaultPresenceInterval
	}
	if c.LogsSilence <= 0 {
		c.LogsSilence = DefaultLogsSilence
	}
	return c
}
