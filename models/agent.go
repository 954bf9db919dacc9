package models

import "time"

// Agent statuses: whether an agent is connected and accepting new sessions.
const (
	AgentStatusOnline   = "online"
	AgentStatusOffline  = "offline"
	AgentStatusDraining = "draining"
)

// Agent approval states: a new agent waits for an admin unless auto-approval is on.
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
	ApprovalRejected = "rejected"
)

// Command statuses. A command only moves forward: pending → sent → ack → completed | failed,
// or expired when its deadline passes (PROTOCOL.md 3.5).
const (
	CommandStatusPending   = "pending"
	CommandStatusSent      = "sent"
	CommandStatusAck       = "ack"
	CommandStatusCompleted = "completed"
	CommandStatusFailed    = "failed"
	CommandStatusExpired   = "expired"
)

// CommandStatusFinal reports whether a command in this status will never change again, so
// callers can stop retrying or waiting for it.
func CommandStatusFinal(status string) bool {
	switch status {
	case CommandStatusCompleted, CommandStatusFailed, CommandStatusExpired:
		return true
	}
	return false
}

// Agent is a remote process that runs sessions on a platform (kubernetes, docker, vm, cloud).
// An empty OrgID marks a shared agent that serves every org. APIKeyHash never leaves the
// server: it is excluded from JSON so the type can be returned by handlers safely.
type Agent struct {
	ID             string         `json:"agentId"`
	OrgID          string         `json:"orgId,omitempty"`
	Platform       string         `json:"platform"`
	Region         string         `json:"region"`
	Status         string         `json:"status"`
	ApprovalStatus string         `json:"approvalStatus"`
	APIKeyHash     string         `json:"-"`
	Capacity       map[string]any `json:"capacity,omitempty"`
	Metadata       map[string]any `json:"metadata,omitempty"`
	// Replica holds the agent's connection; empty while the agent is offline.
	Replica string `json:"replica"`
	// ConnectionID names the agent's current connection, so the cleanup of a replaced
	// connection can never mark the new one offline.
	ConnectionID string `json:"-"`
	// LastHeartbeat is nil until the first heartbeat, so it is absent on the wire rather than
	// a zero time that agents would misread.
	LastHeartbeat *time.Time `json:"lastHeartbeat,omitempty"`
	CreatedAt     time.Time  `json:"createdAt"`
	UpdatedAt     time.Time  `json:"updatedAt"`
}

// AgentCommand is one entry of the durable command queue. The database row is the record of
// truth. Its fields are those of a command model an API server already has (ID, CommandID,
// AgentID, a nullable SessionID, Action, Payload, Status, a nullable ErrorMessage and the
// timestamps), so an embedder converts its own command to this one field for field.
type AgentCommand struct {
	// ID is the caller's own identifier of the command, for example the primary key of its
	// own commands table: stored with the command and returned with it, never sent to the
	// agent. Empty when the caller has none.
	ID string `json:"id,omitempty"`
	// CommandID names the command to the agent (its ack, complete and failed frames carry
	// it); the hub generates one when it is empty.
	CommandID string `json:"commandId"`
	AgentID   string `json:"agentId"`
	// SessionID is the session the command acts on; nil (or empty) for none.
	SessionID *string                `json:"sessionId,omitempty"`
	Action    string                 `json:"action"`
	Payload   map[string]interface{} `json:"payload"`
	Status    string                 `json:"status"`
	Attempts  int                    `json:"attempts"`
	// ErrorMessage is why the command failed or expired; nil otherwise.
	ErrorMessage   *string                `json:"errorMessage,omitempty"`
	Result         map[string]interface{} `json:"result,omitempty"`
	CreatedAt      time.Time              `json:"createdAt"`
	SentAt         *time.Time             `json:"sentAt,omitempty"`
	AcknowledgedAt *time.Time             `json:"acknowledgedAt,omitempty"`
	CompletedAt    *time.Time             `json:"completedAt,omitempty"`
	// ExpiresAt is the deadline after which an unfinished command becomes expired; nil means
	// none.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// OrgID is the organization whose session the command acts on (else its agent's): the one
	// whose admins may read it. Empty for commands stored without one.
	OrgID string `json:"orgId,omitempty"`
}

// GetSessionID returns the session the command acts on, "" for none.
func (c AgentCommand) GetSessionID() string {
	if c.SessionID == nil {
		return ""
	}
	return *c.SessionID
}

// GetErrorMessage returns why the command failed or expired, "" when it did not.
func (c AgentCommand) GetErrorMessage() string {
	if c.ErrorMessage == nil {
		return ""
	}
	return *c.ErrorMessage
}

// OptionalString returns a pointer to s, or nil for "": how the optional text fields of
// AgentCommand (SessionID, ErrorMessage) are set.
func OptionalString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
