package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// Config is the server's whole configuration. Every field is a flag of
// `serve` and an environment variable (ARCHITECTURE.md, Configuration);
// flags win over the environment, and zero values mean the defaults below.
type Config struct {
	Addr string
	// DebugAddr, when set, serves net/http/pprof there (keep it on loopback).
	DebugAddr   string
	DatabaseURL string
	// DBTablePrefix begins the name of every table and index the server keeps in the
	// database (empty: db.DefaultTablePrefix).
	DBTablePrefix string
	RedisURL      string
	RedisPrefix   string
	Replica       string
	// AgentOwnershipTTL: a replica that dies abruptly stops holding its agents in Redis this
	// long after its last refresh.
	AgentOwnershipTTL time.Duration
	JWTSecret         string
	ServiceToken      string
	AllowedOrigins    []string
	SessionSource     string
	Kubeconfig        string
	DefaultOrg        string
	DefaultNamespace  string
	ClientQueue       int
	SessionsInterval  time.Duration
	MetricsInterval   time.Duration
	// HistorySize and HistoryTTL bound each organization's replayable history
	// (PROTOCOL.md 2.4): at most the last HistorySize events, and those younger than
	// HistoryTTL up to ten times as many (in memory; Redis keeps the count), within
	// HistoryOrgBytes per organization and HistoryTotalBytes for all of them (cluster.History).
	HistorySize       int
	HistoryTTL        time.Duration
	HistoryOrgBytes   int64
	HistoryTotalBytes int64
	// MaxBroadcastBytes bounds an org broadcast's body, below MaxBodyBytes: every broadcast
	// stays in its organization's history.
	MaxBroadcastBytes int64
	PingInterval      time.Duration
	PongWait          time.Duration
	WriteWait         time.Duration
	MaxMessageSize    int64
	MaxBodyBytes      int64
	// MaxHeaderBytes bounds an HTTP request's line and headers (larger: 431).
	MaxHeaderBytes  int
	ShutdownTimeout time.Duration
	// Limits (docs/OPERATIONS.md, Limits). Zero turns each off.
	UpgradeRate           float64 // WebSocket upgrades per second per client address
	UpgradeBurst          int     // beyond the rate, at once (0: ten seconds' worth)
	MaxConnectionsPerUser int     // browser sockets one user holds on a replica
	MaxConnectionsPerOrg  int     // browser sockets one organization holds on a replica
	BrowserMessageRate    int     // frames per second a browser may send (over: 1008)
	MaxSubscriptions      int     // user and session subscriptions of one browser connection
	// Agents (PROTOCOL.md 3).
	AgentBootstrapKey     string
	AgentAutoApprove      bool
	AgentHeartbeatTimeout time.Duration
	AgentCheckInterval    time.Duration
	AgentHeartbeatFlush   time.Duration
	CommandAckTimeout     time.Duration
	CommandMaxAttempts    int
	CommandTTL            time.Duration
	LogLevel              string
	LogFormat             string
	// Session streaming (PROTOCOL.md 6): viewer sockets per user and tunnels per agent on a
	// replica (over: 429), and each tunnel direction's flow-control window in bytes.
	VNCMaxPerUser  int
	VNCMaxPerAgent int
	VNCWindow      int64
	// NoVNCDir is the noVNC directory served at /novnc/ (empty: found, see internal/novnc).
	NoVNCDir string
	// The link between replicas (package peer), started only with Redis: PeerAddr is where this
	// replica listens for the others, PeerAdvertiseAddr what they dial (complete fills it in),
	// PeerSecret what every replica proves it knows (complete derives it from JWTSecret when
	// not set).
	PeerAddr          string
	PeerAdvertiseAddr string
	PeerSecret        string
	// Dev generates missing secrets and prints how to connect.
	Dev bool
	// Kubernetes, when set (a *k8s.Client, say), is the session and log source whatever
	// SessionSource says; it stays the caller's. Embedders and tests set it; otherwise
	// SessionSource "kubernetes" has OpenKubernetes build one from Kubeconfig (empty:
	// in-cluster).
	Kubernetes websocket.KubernetesClient
	// OpenKubernetes builds the client of SessionSource "kubernetes" when Kubernetes is not
	// set, and the server closes what it built. Nil (a binary built without -tags
	// kubernetes): that source is refused at New, before anything is opened.
	OpenKubernetes KubernetesOpener

	// podIP is $POD_IP, which Kubernetes sets from status.podIP: the default advertised
	// address.
	podIP string

	// explicit names the environment variables of the settings given by flag or environment,
	// so that --dev can change a default without overriding a choice.
	explicit map[string]bool
}

// Defaults.
const (
	DefaultAddr           = ":8080"
	DefaultDatabaseURL    = "sqlite://streamspace.db"
	DefaultSessionSource  = "database"
	KubernetesSource      = "kubernetes"
	DefaultMaxBodyBytes   = 1 << 20
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxBroadcastBytes bounds a broadcast's body.
	DefaultMaxBroadcastBytes = 64 << 10
	// A user's browser holds a sessions socket per tab, and metrics and logs sockets beside
	// them; a reconnecting socket may still be counted until the server sees the old one go.
	// 64 leaves room for all of that and stops a single token from opening thousands.
	DefaultMaxConnectionsPerUser = 64
	// An organization's sockets, across the replicas sharing a Redis: room for thousands of
	// users at once, and a bound on what one tenant takes of the memory all share.
	DefaultMaxConnectionsPerOrg = 5000
	DefaultShutdownTimeout      = 10 * time.Second
	// DefaultPeerAddr is where replicas listen for each other.
	DefaultPeerAddr = ":8090"
)

// envFlag binds one setting to its flag and environment variable.
type envFlag struct {
	flag, env, usage string
	set              func(string) error
	def              string
}

func (c *Config) bindings() []envFlag {
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	dur := func(p *time.Duration) func(string) error {
		return func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return fmt.Errorf("not a duration: %q", v)
			}
			*p = d
			return nil
		}
	}
	integer := func(p *int64) func(string) error {
		return func(v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("not a non-negative integer: %q", v)
			}
			*p = n
			return nil
		}
	}
	var vncUser, vncAgent int64
	var queue, attempts, history, upgradeBurst, perUser, perOrg, browserRate, subscriptions, headerBytes int64
	number := func(p *float64) func(string) error {
		return func(v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
				return fmt.Errorf("not a non-negative number: %q", v)
			}
			*p = f
			return nil
		}
	}
	count := func(n *int64, dst *int) func(string) error {
		return func(v string) error {
			if err := integer(n)(v); err != nil {
				return err
			}
			*dst = int(*n)
			return nil
		}
	}
	boolean := func(p *bool) func(string) error {
		return func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("not a boolean: %q", v)
			}
			*p = b
			return nil
		}
	}
	return []envFlag{
		{"addr", "STREAMSPACE_ADDR", "listen address", str(&c.Addr), DefaultAddr},
		{"database-url", "STREAMSPACE_DATABASE_URL", "sqlite://path or postgres://…", str(&c.DatabaseURL), DefaultDatabaseURL},
		{"db-table-prefix", "STREAMSPACE_DB_TABLE_PREFIX", "prefix of every table and index name in the database (servers or installs sharing a database or schema differ here)", str(&c.DBTablePrefix), db.DefaultTablePrefix},
		{"redis-url", "STREAMSPACE_REDIS_URL", "Redis for several replicas (empty: single node)", str(&c.RedisURL), ""},
		{"redis-prefix", "STREAMSPACE_REDIS_PREFIX", "prefix of every Redis key and channel (installs sharing a Redis differ here)", str(&c.RedisPrefix), "streamspace"},
		{"replica", "STREAMSPACE_REPLICA", "this replica's name (default: hostname)", str(&c.Replica), ""},
		{"agent-ownership-ttl", "STREAMSPACE_AGENT_OWNERSHIP_TTL", "with Redis: how long a replica that died keeps holding its agents", dur(&c.AgentOwnershipTTL), "30s"},
		{"jwt-secret", "STREAMSPACE_JWT_SECRET", "HS256 secret of browser tokens (≥ 32 bytes)", str(&c.JWTSecret), ""},
		{"service-token", "STREAMSPACE_SERVICE_TOKEN", "bearer token of services and admins", str(&c.ServiceToken), ""},
		{"allowed-origins", "STREAMSPACE_ALLOWED_ORIGINS", "comma-separated browser origins (empty: same host only; with --dev, only for a localhost or IP-address host)", func(v string) error {
			c.AllowedOrigins = splitList(v)
			return nil
		}, ""},
		{"session-source", "STREAMSPACE_SESSION_SOURCE", "database or kubernetes (kubernetes: a binary built with -tags kubernetes, as the container image is)", str(&c.SessionSource), DefaultSessionSource},
		{"kubeconfig", "STREAMSPACE_KUBECONFIG", "kubeconfig path (empty: in-cluster)", str(&c.Kubeconfig), ""},
		{"default-org", "STREAMSPACE_DEFAULT_ORG", "organization of deprecated org-less entry points", str(&c.DefaultOrg), "default-org"},
		{"default-namespace", "STREAMSPACE_DEFAULT_NAMESPACE", "namespace of last resort", str(&c.DefaultNamespace), "streamspace"},
		{"client-queue", "STREAMSPACE_CLIENT_QUEUE", "messages queued per browser before it is closed with 4001", func(v string) error {
			if err := integer(&queue)(v); err != nil {
				return err
			}
			c.ClientQueue = int(queue)
			return nil
		}, "256"},
		{"sessions-interval", "STREAMSPACE_SESSIONS_INTERVAL", "how often each organization's session list is checked for changes", dur(&c.SessionsInterval), "3s"},
		{"metrics-interval", "STREAMSPACE_METRICS_INTERVAL", "how often operators' metrics sockets get their organization's counts", dur(&c.MetricsInterval), "5s"},
		{"history-size", "STREAMSPACE_HISTORY_SIZE", "events each organization keeps for browsers resuming with since (at most)", func(v string) error {
			if err := integer(&history)(v); err != nil {
				return err
			}
			c.HistorySize = int(history)
			return nil
		}, strconv.Itoa(cluster.DefaultHistorySize)},
		{"history-ttl", "STREAMSPACE_HISTORY_TTL", "beyond history-size, how long events stay replayable (single node)", dur(&c.HistoryTTL), cluster.DefaultHistoryTTL.String()},
		{"history-org-bytes", "STREAMSPACE_HISTORY_ORG_BYTES", "bytes of history each organization keeps at most (an event counts its size plus 64)", integer(&c.HistoryOrgBytes), strconv.Itoa(cluster.DefaultHistoryOrgBytes)},
		{"history-total-bytes", "STREAMSPACE_HISTORY_TOTAL_BYTES", "bytes of history all organizations keep together, on a single node or in Redis; over it the organizations above their share are trimmed", integer(&c.HistoryTotalBytes), strconv.Itoa(cluster.DefaultHistoryTotalBytes)},
		{"max-broadcast-bytes", "STREAMSPACE_MAX_BROADCAST_BYTES", "largest org broadcast body (larger: 413)", integer(&c.MaxBroadcastBytes), strconv.Itoa(DefaultMaxBroadcastBytes)},
		{"ping-interval", "STREAMSPACE_PING_INTERVAL", "WebSocket ping interval", dur(&c.PingInterval), "54s"},
		{"pong-wait", "STREAMSPACE_PONG_WAIT", "silence after which a connection is dropped", dur(&c.PongWait), "60s"},
		{"write-wait", "STREAMSPACE_WRITE_WAIT", "bound on one socket write", dur(&c.WriteWait), "10s"},
		{"max-message-size", "STREAMSPACE_MAX_MESSAGE_SIZE", "largest browser message in bytes (larger: 1009)", integer(&c.MaxMessageSize), "4096"},
		{"max-body-bytes", "STREAMSPACE_MAX_BODY_BYTES", "largest HTTP request body (larger: 413)", integer(&c.MaxBodyBytes), strconv.Itoa(DefaultMaxBodyBytes)},
		{"max-header-bytes", "STREAMSPACE_MAX_HEADER_BYTES", "largest HTTP request line and headers (larger: 431; 0: the default)", count(&headerBytes, &c.MaxHeaderBytes), strconv.Itoa(DefaultMaxHeaderBytes)},
		{"shutdown-timeout", "STREAMSPACE_SHUTDOWN_TIMEOUT", "how long shutdown drains connections", dur(&c.ShutdownTimeout), DefaultShutdownTimeout.String()},
		{"upgrade-rate", "STREAMSPACE_UPGRADE_RATE", "WebSocket upgrades per second per client address, over: 429 (0: off; behind a proxy every client shares its address)", number(&c.UpgradeRate), "0"},
		{"upgrade-burst", "STREAMSPACE_UPGRADE_BURST", "upgrades one address may open at once beyond the rate (0: ten seconds' worth)", count(&upgradeBurst, &c.UpgradeBurst), "0"},
		{"max-connections-per-user", "STREAMSPACE_MAX_CONNECTIONS_PER_USER", "browser sockets one user may hold (across replicas sharing a Redis), over: 429 (0: no limit)", count(&perUser, &c.MaxConnectionsPerUser), strconv.Itoa(DefaultMaxConnectionsPerUser)},
		{"max-connections-per-org", "STREAMSPACE_MAX_CONNECTIONS_PER_ORG", "browser sockets one organization may hold (across replicas sharing a Redis), over: 429 (0: no limit)", count(&perOrg, &c.MaxConnectionsPerOrg), strconv.Itoa(DefaultMaxConnectionsPerOrg)},
		{"browser-message-rate", "STREAMSPACE_BROWSER_MESSAGE_RATE", "frames per second a browser may send, over: close 1008 (0: no limit)", count(&browserRate, &c.BrowserMessageRate), "20"},
		{"max-subscriptions", "STREAMSPACE_MAX_SUBSCRIPTIONS", "user and session subscriptions of one browser connection, over: close 1008 (0: no limit)", count(&subscriptions, &c.MaxSubscriptions), "64"},
		{"agent-bootstrap-key", "STREAMSPACE_AGENT_BOOTSTRAP_KEY", "key new agents register with (empty: agents are created by admins only; --dev generates one)", str(&c.AgentBootstrapKey), ""},
		{"agent-auto-approve", "STREAMSPACE_AGENT_AUTO_APPROVE", "approve agents that register with the bootstrap key at once (--dev: true unless set)", boolean(&c.AgentAutoApprove), "false"},
		{"agent-heartbeat-timeout", "STREAMSPACE_AGENT_HEARTBEAT_TIMEOUT", "silence after which an agent is stale (closed with 4002)", dur(&c.AgentHeartbeatTimeout), "45s"},
		{"agent-check-interval", "STREAMSPACE_AGENT_CHECK_INTERVAL", "how often stale agents, ack timeouts and deadlines are checked", dur(&c.AgentCheckInterval), "10s"},
		{"agent-heartbeat-flush", "STREAMSPACE_AGENT_HEARTBEAT_FLUSH", "how often agents' heartbeats are written to the database, in one transaction", dur(&c.AgentHeartbeatFlush), "5s"},
		{"command-ack-timeout", "STREAMSPACE_COMMAND_ACK_TIMEOUT", "wait for an agent's ack before sending a command again", dur(&c.CommandAckTimeout), "30s"},
		{"command-max-attempts", "STREAMSPACE_COMMAND_MAX_ATTEMPTS", "deliveries of a command before it fails", func(v string) error {
			if err := integer(&attempts)(v); err != nil {
				return err
			}
			c.CommandMaxAttempts = int(attempts)
			return nil
		}, "5"},
		{"command-ttl", "STREAMSPACE_COMMAND_TTL", "deadline of a command; unfinished past it, it expires", dur(&c.CommandTTL), "24h"},
		{"vnc-max-per-user", "STREAMSPACE_VNC_MAX_PER_USER", "viewer sockets one user may hold on a replica, over: 429 too_many_tunnels (0: no limit)", count(&vncUser, &c.VNCMaxPerUser), "4"},
		{"vnc-max-per-agent", "STREAMSPACE_VNC_MAX_PER_AGENT", "VNC tunnels through one agent on a replica, over: 429 too_many_tunnels (0: no limit)", count(&vncAgent, &c.VNCMaxPerAgent), "32"},
		{"vnc-window", "STREAMSPACE_VNC_WINDOW", "flow-control window of each direction of a tunnel/1 tunnel, in bytes (at most 16 MiB)", integer(&c.VNCWindow), strconv.Itoa(models.DefaultTunnelWindow)},
		{"novnc-dir", "STREAMSPACE_NOVNC_DIR", "noVNC directory (holding core/rfb.js) served at /novnc/ (empty: Debian's /usr/share/novnc, or with --dev a verified download)", str(&c.NoVNCDir), ""},
		{"peer-addr", "STREAMSPACE_PEER_ADDR", "with Redis: listen address of the direct link other replicas relay viewers through", str(&c.PeerAddr), DefaultPeerAddr},
		{"peer-advertise-addr", "STREAMSPACE_PEER_ADVERTISE_ADDR", "host:port other replicas dial to reach --peer-addr (empty: $POD_IP, else --peer-addr's host, else this host's first non-loopback address, with --peer-addr's port)", str(&c.PeerAdvertiseAddr), ""},
		{"peer-secret", "STREAMSPACE_PEER_SECRET", "secret (≥ 32 bytes) every replica proves it knows on the peer link (empty: derived from the JWT secret)", str(&c.PeerSecret), ""},
		{"debug-addr", "STREAMSPACE_DEBUG_ADDR", "listen address of the Go profiler, /debug/pprof/ (empty: off; keep it on loopback)", str(&c.DebugAddr), ""},
		{"log-level", "STREAMSPACE_LOG_LEVEL", "debug, info, warn or error", str(&c.LogLevel), "info"},
		{"log-format", "STREAMSPACE_LOG_FORMAT", "text or json", str(&c.LogFormat), "text"},
	}
}

// LoadConfig reads the environment through getenv, then the `serve` flags in
// args, and validates the result.
func LoadConfig(args []string, getenv func(string) string) (Config, error) {
	c := Config{explicit: make(map[string]bool), podIP: getenv("POD_IP")}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.BoolVar(&c.Dev, "dev", false, "development mode: generated secrets and agent bootstrap key, auto-approved agents, an in-process agent (dev-agent), printed tokens and lines to try")
	for _, b := range c.bindings() {
		v := b.def
		if e := getenv(b.env); e != "" {
			v = e
			c.explicit[b.env] = true
		}
		if err := b.set(v); err != nil {
			return Config{}, fmt.Errorf("%s: %w", b.env, err)
		}
		fs.Func(b.flag, b.usage+" (env "+b.env+", default "+quoteEmpty(b.def)+")", func(v string) error {
			c.explicit[b.env] = true
			return b.set(v)
		})
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return c, c.complete()
}

// complete fills derived values and validates.
func (c *Config) complete() error {
	if c.Replica == "" {
		c.Replica, _ = os.Hostname()
	}
	if c.VNCWindow > models.MaxTunnelWindow || (c.VNCWindow > 0 && c.VNCWindow < models.MaxTunnelChunk) {
		return fmt.Errorf("STREAMSPACE_VNC_WINDOW: %d bytes is outside %d..%d", c.VNCWindow, models.MaxTunnelChunk, models.MaxTunnelWindow)
	}
	if c.Dev {
		if c.JWTSecret == "" {
			c.JWTSecret = randomHex(32)
		}
		if c.ServiceToken == "" {
			c.ServiceToken = randomHex(24)
		}
		// A developer's agents should connect with no admin step: a bootstrap key to
		// register with, approved at once (unless auto-approval was turned off explicitly).
		if c.AgentBootstrapKey == "" {
			c.AgentBootstrapKey = randomHex(32)
		}
		if !c.explicit["STREAMSPACE_AGENT_AUTO_APPROVE"] {
			c.AgentAutoApprove = true
		}
	}
	var errs []error
	if len(c.JWTSecret) < 32 {
		errs = append(errs, errors.New("STREAMSPACE_JWT_SECRET must be set to at least 32 bytes (or run with --dev)"))
	}
	if c.ServiceToken == "" {
		errs = append(errs, errors.New("STREAMSPACE_SERVICE_TOKEN must be set (or run with --dev)"))
	}
	if c.RedisURL != "" && c.AgentOwnershipTTL < time.Second {
		errs = append(errs, errors.New("STREAMSPACE_AGENT_OWNERSHIP_TTL must be at least 1s"))
	}
	if c.HistorySize < 1 {
		errs = append(errs, errors.New("STREAMSPACE_HISTORY_SIZE must be at least 1"))
	}
	if c.HistoryOrgBytes < 1 {
		errs = append(errs, errors.New("STREAMSPACE_HISTORY_ORG_BYTES must be at least 1"))
	}
	if c.HistoryTotalBytes < c.HistoryOrgBytes {
		errs = append(errs, errors.New("STREAMSPACE_HISTORY_TOTAL_BYTES must be at least STREAMSPACE_HISTORY_ORG_BYTES"))
	}
	if c.MaxBroadcastBytes < 1 {
		errs = append(errs, errors.New("STREAMSPACE_MAX_BROADCAST_BYTES must be at least 1"))
	}
	if c.SessionSource != DefaultSessionSource && c.SessionSource != KubernetesSource {
		errs = append(errs, fmt.Errorf("STREAMSPACE_SESSION_SOURCE %q: want %q or %q", c.SessionSource, DefaultSessionSource, KubernetesSource))
	}
	if c.DBTablePrefix != "" {
		if err := db.ValidateTablePrefix(c.DBTablePrefix); err != nil {
			errs = append(errs, fmt.Errorf("STREAMSPACE_DB_TABLE_PREFIX: %w", err))
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("STREAMSPACE_LOG_FORMAT %q: want text or json", c.LogFormat))
	}
	if err := c.completePeer(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func quoteEmpty(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// history is the event history every organization's stream keeps.
func (c Config) history() cluster.History {
	return cluster.History{Size: c.HistorySize, TTL: c.HistoryTTL, OrgBytes: c.HistoryOrgBytes, TotalBytes: c.HistoryTotalBytes}
}

// dbOptions are the database settings of the configuration.
func (c Config) dbOptions(log *slog.Logger) []db.Option {
	opts := []db.Option{db.WithLogger(log)}
	if c.DBTablePrefix != "" {
		opts = append(opts, db.WithTablePrefix(c.DBTablePrefix))
	}
	return opts
}
