// Package models holds the row and wire types shared by storage, the hubs and the agent SDK.
// They are plain values: no methods touch storage or the network, so every package can import
// them without pulling in a dependency.
package models

import "time"

// Session states, lower case as they travel on the wire and sit in the sessions table.
const (
	SessionStatePending    = "pending"
	SessionStateRunning    = "running"
	SessionStateHibernated = "hibernated"
	SessionStateStopped    = "stopped"
	SessionStateFailed     = "failed"
	SessionStateTerminated = "terminated"
)

// Organization is a tenant. Every session, connection and org-scoped agent belongs to one, and
// K8sNamespace is where its sessions run unless a session names another.
type Organization struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	K8sNamespace string    `json:"k8sNamespace"`
	CreatedAt    time.Time `json:"createdAt"`
}

// Session is one containerized desktop. OrgID never changes after creation: it is the tenancy
// boundary every read is filtered by.
type Session struct {
	ID        string `json:"id"`
	OrgID     string `json:"orgId"`
	UserID    string `json:"userId"`
	Namespace string `json:"namespace"`
	Template  string `json:"template"`
	State     string `json:"state"`
	PodName   string `json:"podName"`
	URL       string `json:"url"`
	CPU       string `json:"cpu"`
	Memory    string `json:"memory"`
	Platform  string `json:"platform"`
	AgentID   string `json:"agentId"`
	// IdleTimeoutSeconds is 0 when the session has no idle timeout.
	IdleTimeoutSeconds int64 `json:"idleTimeoutSeconds"`
	// IdleAnnounced is whether session.idle was published for the current idle spell.
	IdleAnnounced bool `json:"-"`
	// LastActivity is zero when the session was never active.
	LastActivity time.Time `json:"lastActivity"`
	CreatedAt    time.Time `json:"createdAt"`
	UpdatedAt    time.Time `json:"updatedAt"`
	// ActiveConnections is computed by reads from the connections table; writes ignore it.
	ActiveConnections int `json:"activeConnections"`
}

// IdleTimeout returns the idle timeout as a duration, 0 when the session has none.
func (s Session) IdleTimeout() time.Duration {
	return time.Duration(s.IdleTimeoutSeconds) * time.Second
}

// Connection is one browser viewing a session, recorded so every replica can count viewers.
// Replica names the process holding the socket, so a crashed replica's rows can be found.
type Connection struct {
	ID            string    `json:"id"`
	SessionID     string    `json:"sessionId"`
	UserID        string    `json:"userId"`
	OrgID         string    `json:"orgId"`
	ClientIP      string    `json:"clientIp"`
	UserAgent     string    `json:"userAgent"`
	Replica       string    `json:"replica"`
	ConnectedAt   time.Time `json:"connectedAt"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
}

// OrgMetrics are an organization's counts for `metrics_update` (PROTOCOL.md 2.5): its
// sessions, the browser connections to them, and the agents that serve it (its own and the
// shared ones).
type OrgMetrics struct {
	SessionsRunning    int
	SessionsHibernated int
	SessionsTotal      int
	ActiveConnections  int
	AgentsOnline       int
	AgentsTotal        int
}
