package models

// Session streaming messages (PROTOCOL.md 6). StreamSpace's own set, spoken by its k8s-agent:
// one tunnel per session, RFB bytes as base64 in JSON.
const (
	MessageTypeVNCReady = "vnc_ready" // agent to server
	MessageTypeVNCData  = "vnc_data"  // both ways
	MessageTypeVNCError = "vnc_error" // agent to server
	MessageTypeVNCClose = "vnc_close" // server to agent
)

// The tunnel extension (PROTOCOL.md 6.3): a tunnel per viewer, binary data frames and
// credit-based flow control, for agents that announce AgentFeatureTunnel.
const (
	MessageTypeTunnelOpen   = "tunnel_open"   // server to agent
	MessageTypeTunnelOpened = "tunnel_opened" // agent to server
	MessageTypeTunnelCredit = "tunnel_credit" // both ways
	MessageTypeTunnelClose  = "tunnel_close"  // both ways
)

// AgentFeaturesHeader carries, on an agent socket's upgrade request, the features the agent
// speaks (comma-separated), and on the 101 answer those the server uses on that socket.
const AgentFeaturesHeader = "X-Agent-Features"

// AgentFeatureTunnel is the tunnel extension of PROTOCOL.md 6.3.
const AgentFeatureTunnel = "tunnel/1"

// Tunnel limits of PROTOCOL.md 6.3 and 6.4.
const (
	// TunnelDataHeader is the tunnel id in front of every binary data frame (big-endian).
	TunnelDataHeader = 4
	// MaxTunnelChunk bounds the RFB bytes of one data frame or one vnc_data.
	MaxTunnelChunk = 64 << 10
	// DefaultTunnelWindow is each direction's window when a tunnel opens.
	DefaultTunnelWindow = 1 << 20
	// MaxTunnelWindow bounds a window grown by credit.
	MaxTunnelWindow = 16 << 20
)

// VNCReadyMessage is vnc_ready: the agent's tunnel to the session's VNC server is open.
type VNCReadyMessage struct {
	SessionID string `json:"sessionId"`
	VNCPort   int    `json:"vncPort"`
	PodName   string `json:"podName,omitempty"`
}

// VNCDataMessage is vnc_data: RFB bytes, base64 (standard encoding, padded).
type VNCDataMessage struct {
	SessionID string `json:"sessionId"`
	Data      string `json:"data"`
}

// VNCErrorMessage is vnc_error: the agent's tunnel for the session failed.
type VNCErrorMessage struct {
	SessionID string `json:"sessionId"`
	Error     string `json:"error"`
}

// VNCCloseMessage is vnc_close: the server ends the session's tunnel.
type VNCCloseMessage struct {
	SessionID string `json:"sessionId"`
	Reason    string `json:"reason,omitempty"`
}

// TunnelOpenMessage is tunnel_open: a viewer wants a tunnel to the session's VNC server.
type TunnelOpenMessage struct {
	TunnelID  uint32 `json:"tunnelId"`
	SessionID string `json:"sessionId"`
	ViewOnly  bool   `json:"viewOnly"`
	Window    int64  `json:"window"`
}

// TunnelOpenedMessage is tunnel_opened: the agent reached the VNC server.
type TunnelOpenedMessage struct {
	TunnelID uint32 `json:"tunnelId"`
	Window   int64  `json:"window"`
}

// TunnelCreditMessage is tunnel_credit: the receiver consumed Bytes; the sender may send that
// much more.
type TunnelCreditMessage struct {
	TunnelID uint32 `json:"tunnelId"`
	Bytes    int64  `json:"bytes"`
}

// TunnelCloseMessage is tunnel_close: the sender sends nothing more on the tunnel. Reason is
// empty for a clean end.
type TunnelCloseMessage struct {
	TunnelID uint32 `json:"tunnelId"`
	Reason   string `json:"reason,omitempty"`
}
