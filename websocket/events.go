package websocket

import (
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

// EventType represents the type of session event for real-time notifications.
type EventType string

// The fourteen session event types. Their strings are part of the wire
// contract (PROTOCOL.md 2.3) and never change.
const (
	// EventSessionCreated is emitted when a new session is created.
	// Data: session details (template, resources, state).
	EventSessionCreated EventType = "session.created"
	// EventSessionUpdated is emitted when session metadata is modified.
	// Data: changed fields.
	EventSessionUpdated EventType = "session.updated"
	// EventSessionDeleted is emitted when a session is deleted. Data: none.
	EventSessionDeleted EventType = "session.deleted"
	// EventSessionStateChange is emitted when the session state transitions.
	// Data: oldState, newState.
	EventSessionStateChange EventType = "session.state.changed"
	// EventSessionConnected is emitted when a user connects to a session.
	// Data: connectionId.
	EventSessionConnected EventType = "session.connected"
	// EventSessionDisconnected is emitted when a user disconnects.
	// Data: connectionId.
	EventSessionDisconnected EventType = "session.disconnected"
	// EventSessionHeartbeat is emitted on a periodic session heartbeat.
	EventSessionHeartbeat EventType = "session.heartbeat"
	// EventSessionIdle is emitted when the session becomes idle.
	// Data: idleDuration (seconds).
	EventSessionIdle EventType = "session.idle"
	// EventSessionActive is emitted when an idle session becomes active again.
	EventSessionActive EventType = "session.active"
	// EventSessionResourcesUpdated is emitted when CPU/memory limits change.
	// Data: resources.
	EventSessionResourcesUpdated EventType = "session.resources.updated"
	// EventSessionTagsUpdated is emitted when session tags change. Data: tags.
	EventSessionTagsUpdated EventType = "session.tags.updated"
	// EventSessionShared is emitted when a session is shared.
	// Data: sharedWith (to the owner) or sharedBy (to the grantee), permissions.
	EventSessionShared EventType = "session.shared"
	// EventSessionUnshared is emitted when sharing is revoked. Data: unsharedFrom.
	EventSessionUnshared EventType = "session.unshared"
	// EventSessionError is emitted when an error occurs. Data: error.
	EventSessionError EventType = "session.error"
)

// eventTypes lists the fourteen session event types in the order they are declared.
var eventTypes = []EventType{
	EventSessionCreated, EventSessionUpdated, EventSessionDeleted,
	EventSessionStateChange, EventSessionConnected, EventSessionDisconnected,
	EventSessionHeartbeat, EventSessionIdle, EventSessionActive,
	EventSessionResourcesUpdated, EventSessionTagsUpdated,
	EventSessionShared, EventSessionUnshared, EventSessionError,
}

var knownEventTypes = func() map[EventType]bool {
	m := make(map[EventType]bool, len(eventTypes))
	for _, t := range eventTypes {
		m[t] = true
	}
	return m
}()

// EventTypes returns the fourteen session event types, for clients and tests that must handle
// every one of them.
func EventTypes() []EventType { return append([]EventType(nil), eventTypes...) }

// Valid reports whether t is one of the fourteen session event types. The
// publish API refuses any other; Go callers may still send custom types.
func (t EventType) Valid() bool { return knownEventTypes[t] }

// SessionEvent represents a session-related event sent to WebSocket clients.
//
// It is routed to the clients subscribed to UserID, to the clients
// subscribed to SessionID, and to the operators and admins of the
// organization, never outside the organization it was published in. On the
// wire the frame also carries the organization stream's "offset" and
// "epoch" (PROTOCOL.md 2.3).
type SessionEvent struct {
	// Type identifies the event type (e.g., "session.created").
	Type EventType `json:"type"`
	// SessionID is the ID of the session this event relates to.
	SessionID string `json:"sessionId"`
	// UserID is the owner of the session.
	UserID string `json:"userId"`
	// Timestamp is when the event occurred (server time, UTC on the wire).
	Timestamp time.Time `json:"timestamp"`
	// Data contains the event-specific payload (optional).
	Data map[string]interface{} `json:"data,omitempty"`
}

// OrgContext contains the organization context for WebSocket connections.
// SECURITY: it is REQUIRED for every connection the server accepts, and it
// must be built from verified credentials only (a signed token), never from
// request parameters. A Client copies it at registration; it cannot change
// for the life of the connection.
type OrgContext struct {
	// OrgID is the organization this connection belongs to.
	OrgID string
	// K8sNamespace is the Kubernetes namespace for this org.
	K8sNamespace string
	// UserID is the authenticated user's ID.
	UserID string
	// Role is the caller's role: "user" (the default when empty) sees its own
	// sessions and those shared with it; "operator" and "admin" see the
	// whole organization.
	Role string
	// ExpiresAt is when the caller's credentials expire; the connection is
	// closed with 4003 then. Zero means never.
	ExpiresAt time.Time
}

// seesWholeOrg reports whether the role receives every event of the org, by the one role
// order of the server (auth.Role).
func (o *OrgContext) seesWholeOrg() bool {
	return auth.Role(o.Role).CanSeeWholeOrg()
}

// BroadcastMessage represents a message to be sent to multiple agents.
type BroadcastMessage struct {
	// Message is the raw JSON bytes to send.
	Message []byte
	// ExcludeAgentID optionally excludes a specific agent from the broadcast.
	ExcludeAgentID string
}
