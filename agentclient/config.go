package agentclient

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jonboulle/clockwork"

	"github.com/streamspace/streamspace-realtime/models"
)

// Defaults for the zero values of Config.
const (
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultBackoffMin        = time.Second
	DefaultBackoffMax        = 30 * time.Second
	DefaultMaxConcurrent     = 16
	DefaultShutdownTimeout   = 10 * time.Second
)

// TunnelWriteBufferSize is the default Dialer's write buffer: one tunnel/1 data frame, its
// tunnel id and the largest chunk (PROTOCOL.md 6.3).
const TunnelWriteBufferSize = models.TunnelDataHeader + models.MaxTunnelChunk

// Config configures an Agent. Zero values mean the documented defaults. New copies it; the
// maps are read, never written, and must not be modified while the Agent runs.
type Config struct {
	// ServerURL is the control plane's base URL: http(s):// or ws(s)://, both accepted,
	// optionally with a path prefix. Required.
	ServerURL string
	// AgentID names the agent. Required.
	AgentID string
	// APIKey is sent as X-Agent-API-Key: the bootstrap key, or the agent's own key. When
	// registration issues a new key the Agent switches to it and calls OnAPIKey.
	APIKey string
	// Platform is one of kubernetes, docker, vm, cloud. Required.
	Platform string
	Region   string
	// OrgID is sent with the registration, for control planes that place agents by
	// organization. StreamSpace Realtime ignores it: an agent that registers itself is shared,
	// and an organization's agents are created by its admins (POST /api/v1/admin/agents).
	OrgID string
	// Capacity is sent at registration and in every heartbeat (e.g. maxSessions, cpu, memory).
	Capacity map[string]any
	Metadata map[string]any

	// HeartbeatInterval between heartbeats; one is also sent right after connecting. 30s.
	HeartbeatInterval time.Duration
	// BackoffMin and BackoffMax bound the reconnect backoff: waits are drawn at random
	// between BackoffMin and a cap that doubles from BackoffMin up to BackoffMax. 1s, 30s.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// MaxConcurrent bounds the command handlers in flight. 16.
	MaxConcurrent int
	// ShutdownTimeout bounds how long Run waits, once it is stopping, for running handlers to
	// return and their results to be sent. 10s.
	ShutdownTimeout time.Duration

	// Dialer dials the WebSocket; nil uses a copy of websocket.DefaultDialer with a 10s
	// handshake timeout and a write buffer that holds a whole tunnel data frame
	// (TunnelWriteBufferSize), so each frame is one masked frame and one write. A Dialer with
	// a smaller WriteBufferSize works, but splits each tunnel frame into fragments.
	Dialer *websocket.Dialer
	// HTTPClient sends registrations; nil uses a client with a 30s timeout.
	HTTPClient *http.Client
	// Logger receives the SDK's logs; nil uses slog.Default().
	Logger *slog.Logger
	// OnAPIKey is called, from Register or Run, when registration issues a new API key; the
	// Agent already uses it. Persist it: the bootstrap key is refused from then on.
	OnAPIKey func(key string)
	// Tunnels serves session streaming (PROTOCOL.md 6): it runs once per tunnel to a
	// session's VNC server; ProxyTo builds one from a dial function. When set, the Agent
	// offers the tunnel/1 extension when it connects and speaks StreamSpace's vnc_* messages to
	// a control plane that does not take it up. Nil: no tunnels (tunnel_open is refused with
	// "tunnels not served by this agent", and OpenTunnel fails with ErrNoTunnels).
	Tunnels TunnelHandler
	// Clock drives heartbeats, pings, backoff and the shutdown bound; nil is the real clock.
	// Socket deadlines always use real time.
	Clock clockwork.Clock
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("agentclient: new agent: %w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.AgentID == "":
		return bad("AgentID is required")
	case c.ServerURL == "":
		return bad("ServerURL is required")
	case c.Platform == "":
		return bad("Platform is required")
	case !models.ValidPlatform(c.Platform):
		return bad("platform %q is not one of kubernetes, docker, vm, cloud", c.Platform)
	case c.HeartbeatInterval < 0, c.BackoffMin < 0, c.BackoffMax < 0, c.ShutdownTimeout < 0:
		return bad("durations must not be negative")
	case c.MaxConcurrent < 0:
		return bad("MaxConcurrent must not be negative")
	}
	if _, _, err := baseURLs(c.ServerURL); err != nil {
		return bad("%v", err)
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	if c.BackoffMin > c.BackoffMax {
		return bad("BackoffMin %v is above BackoffMax %v", c.BackoffMin, c.BackoffMax)
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Dialer == nil {
		d := *websocket.DefaultDialer
		d.HandshakeTimeout = 10 * time.Second
		d.WriteBufferSize = TunnelWriteBufferSize
		c.Dialer = &d
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c, nil
}

// baseURLs turns the server URL into its HTTP and WebSocket bases, without a trailing slash.
func baseURLs(server string) (httpBase, wsBase string, err error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", "", fmt.Errorf("ServerURL %q: %w", server, err)
	}
	if u.Host == "" {
		return "", "", fmt.Errorf("ServerURL %q has no host", server)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("ServerURL %q must not carry a query or fragment", server)
	}
	var httpScheme, wsScheme string
	switch strings.ToLower(u.Scheme) {
	case "http", "ws":
		httpScheme, wsScheme = "http", "ws"
	case "https", "wss":
		httpScheme, wsScheme = "https", "wss"
	default:
		return "", "", fmt.Errorf("ServerURL %q must be http(s):// or ws(s)://", server)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	u.Scheme = httpScheme
	httpBase = u.String()
	u.Scheme = wsScheme
	return httpBase, u.String(), nil
}
