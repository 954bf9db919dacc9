package models

import (
	"encoding/json"
	"time"
)

// Message types of the agent WebSocket (PROTOCOL.md 3.3 and 3.4). The names are StreamSpace's,
// so its agents and this project's SDK speak the same protocol.
const (
	// Control plane → agent.
	MessageTypeCommand  = "command"
	MessageTypePing     = "ping"
	MessageTypeShutdown = "shutdown"
	MessageTypeLogs     = "logs"
	MessageTypeLogsStop = "logs_stop"
	MessageTypeError    = "error"

	// Agent → control plane.
	MessageTypeHeartbeat = "heartbeat"
	MessageTypeAck       = "ack"
	MessageTypeComplete  = "complete"
	MessageTypeFailed    = "failed"
	MessageTypeStatus    = "status"
	MessageTypePong      = "pong"
	MessageTypeLog       = "log"
	MessageTypeLogEnd    = "log_end"
)

// Command actions every agent of StreamSpace understands. Agents may accept others.
const (
	ActionStartSession     = "start_session"
	ActionStopSession      = "stop_session"
	ActionHibernateSession = "hibernate_session"
	ActionWakeSession      = "wake_session"
)

// AgentMessage is the envelope of every frame in both directions: one JSON object per frame.
// Senders always set Timestamp; a receiver accepts a missing one (StreamSpace's status frames
// have none), which decodes as the zero time.
type AgentMessage struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Payload   json.RawMessage `json:"payload,omitempty"`
}

// CommandMessage is the payload of a "command" frame. Attempt is 1 on the first delivery and
// grows with each resend, so an agent can tell a retry from a new command; CommandID stays the
// same, and agents drop a CommandID they have already handled.
type CommandMessage struct {
	CommandID string         `json:"commandId"`
	Action    string         `json:"action"`
	Payload   map[string]any `json:"payload"`
	Attempt   int            `json:"attempt"`
}

// HeartbeatMessage is the payload of a "heartbeat" frame. Status is "online" or "draining";
// Capacity is free-form (StreamSpace's agents send maxCpu, maxMemory and maxSessions numbers).
type HeartbeatMessage struct {
	Status         string         `json:"status"`
	ActiveSessions int            `json:"activeSessions"`
	Capacity       map[string]any `json:"capacity,omitempty"`
}

// AckMessage acknowledges that an agent received a command, before it runs it.
type AckMessage struct {
	CommandID string `json:"commandId"`
}

// CompleteMessage reports that a command succeeded, with an optional result object.
type CompleteMessage struct {
	CommandID string         `json:"commandId"`
	Result    map[string]any `json:"result,omitempty"`
}

// FailedMessage reports that a command failed, and why.
type FailedMessage struct {
	CommandID string `json:"commandId"`
	Error     string `json:"error"`
}

// StatusMessage reports the state of a session placed on the reporting agent.
// PlatformMetadata may carry podName and podIP.
type StatusMessage struct {
	SessionID        string         `json:"sessionId"`
	State            string         `json:"state"`
	VNCReady         bool           `json:"vncReady"`
	VNCPort          int            `json:"vncPort,omitempty"`
	PlatformMetadata map[string]any `json:"platformMetadata,omitempty"`
}

// PingMessage and PongMessage are the application-level keepalive; WebSocket ping frames run
// besides them.
type PingMessage struct {
	Timestamp time.Time `json:"timestamp"`
}

// PongMessage answers a PingMessage.
type PongMessage struct {
	Timestamp time.Time `json:"timestamp"`
}

// ShutdownMessage tells an agent to stop for good. It is sent only to an agent an operator
// rejects; a replica that is merely shutting down closes with 1001 instead.
type ShutdownMessage struct {
	Reason string `json:"reason,omitempty"`
}

// ErrorMessage answers a frame the control plane refused: malformed, of the wrong shape, or
// about a command or session that is not the agent's. CommandID or SessionID names what was
// refused when the frame named it. Retry is set when the frame was fine but could not be
// recorded (the database was unavailable): the agent should send it again later.
type ErrorMessage struct {
	Message   string `json:"message"`
	CommandID string `json:"commandId,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
	Retry     bool   `json:"retry,omitempty"`
}

// LogsRequest asks the agent running a session to stream a pod's logs (PROTOCOL.md 2.5).
type LogsRequest struct {
	RequestID string `json:"requestId"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	SessionID string `json:"sessionId"`
	TailLines int    `json:"tailLines"`
	Follow    bool   `json:"follow"`
}

// LogsStop ends a log stream started by a LogsRequest.
type LogsStop struct {
	RequestID string `json:"requestId"`
}

// LogLine is one log line an agent relays for a LogsRequest. Timestamp is the source's, when
// it has one.
type LogLine struct {
	RequestID string     `json:"requestId"`
	Namespace string     `json:"namespace"`
	Pod       string     `json:"pod"`
	Line      string     `json:"line"`
	Timestamp *time.Time `json:"timestamp,omitempty"`
}

// LogEnd ends a relayed log stream; Error is empty when the stream simply ended.
type LogEnd struct {
	RequestID string `json:"requestId"`
	Error     string `json:"error,omitempty"`
}

// AgentRegistration is the body of POST /api/v1/agents/register and POST /api/v1/admin/agents.
type AgentRegistration struct {
	AgentID  string         `json:"agentId"`
	Platform string         `json:"platform"`
	Region   string         `json:"region,omitempty"`
	OrgID    string         `json:"orgId,omitempty"`
	Capacity map[string]any `json:"capacity,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// Agent platforms of PROTOCOL.md 3.1.
const (
	PlatformKubernetes = "kubernetes"
	PlatformDocker     = "docker"
	PlatformVM         = "vm"
	PlatformCloud      = "cloud"
)

// ValidPlatform reports whether p is one of the four platforms agents register with.
func ValidPlatform(p string) bool {
	switch p {
	case PlatformKubernetes, PlatformDocker, PlatformVM, PlatformCloud:
		return true
	}
	return false
}
