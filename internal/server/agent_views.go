package server

import (
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// agentView is an agent on the wire. Registration replies carry it under "agent" and its
// fields again at the top level (PROTOCOL.md 3.1): StreamSpace's k8s-agent decodes the top
// level into strings and a time.Time, and exits on anything else, so ids and status are
// always strings and times are RFC 3339 strings or absent, never "".
type agentView struct {
	ID             string         `json:"id"`
	AgentID        string         `json:"agentId"`
	OrgID          string         `json:"orgId,omitempty"`
	Platform       string         `json:"platform"`
	Region         string         `json:"region"`
	Status         string         `json:"status"`
	ApprovalStatus string         `json:"approvalStatus"`
	Replica        string         `json:"replica"`
	Capacity       map[string]any `json:"capacity"`
	Metadata       map[string]any `json:"metadata,omitempty"`
	LastHeartbeat  *time.Time     `json:"lastHeartbeat,omitempty"`
	CreatedAt      *time.Time     `json:"createdAt,omitempty"`
	UpdatedAt      *time.Time     `json:"updatedAt,omitempty"`
}

func newAgentView(a models.Agent) agentView {
	v := agentView{
		ID: a.ID, AgentID: a.ID, OrgID: a.OrgID, Platform: a.Platform, Region: a.Region,
		Status: a.Status, ApprovalStatus: a.ApprovalStatus, Replica: a.Replica,
		Capacity: a.Capacity, Metadata: a.Metadata,
		LastHeartbeat: utcPtr(a.LastHeartbeat),
		CreatedAt:     timePtr(a.CreatedAt), UpdatedAt: timePtr(a.UpdatedAt),
	}
	if v.Capacity == nil {
		v.Capacity = map[string]any{}
	}
	if v.Status == "" {
		v.Status = models.AgentStatusOffline
	}
	if v.Status == models.AgentStatusOffline {
		v.Replica = ""
	}
	return v
}

// registrationReply is the answer of POST /api/v1/agents/register, of agent creation and of
// approval. APIKey is set only when a key was issued by this very call: it is shown once.
type registrationReply struct {
	agentView
	Agent          agentView `json:"agent"`
	ApprovalStatus string    `json:"approvalStatus"`
	APIKey         string    `json:"apiKey,omitempty"`
}

func newRegistrationReply(a models.Agent, apiKey string) registrationReply {
	v := newAgentView(a)
	return registrationReply{agentView: v, Agent: v, ApprovalStatus: a.ApprovalStatus, APIKey: apiKey}
}

// agentListEntry is one agent of GET /api/v1/agents (PROTOCOL.md 4).
type agentListEntry struct {
	AgentID        string         `json:"agentId"`
	OrgID          string         `json:"orgId,omitempty"`
	Platform       string         `json:"platform"`
	Region         string         `json:"region"`
	Status         string         `json:"status"`
	ApprovalStatus string         `json:"approvalStatus"`
	LastHeartbeat  *time.Time     `json:"lastHeartbeat"`
	Replica        string         `json:"replica"`
	Capacity       map[string]any `json:"capacity"`
}

func newAgentListEntry(a models.Agent) agentListEntry {
	v := newAgentView(a)
	return agentListEntry{
		AgentID: v.AgentID, OrgID: v.OrgID, Platform: v.Platform, Region: v.Region, Status: v.Status,
		ApprovalStatus: v.ApprovalStatus, LastHeartbeat: v.LastHeartbeat, Replica: v.Replica,
		Capacity: v.Capacity,
	}
}

// commandView is GET /api/v1/admin/commands/{commandId}: every field of PROTOCOL.md 4 always
// present, null where there is no value yet.
type commandView struct {
	CommandID      string         `json:"commandId"`
	AgentID        string         `json:"agentId"`
	SessionID      string         `json:"sessionId"`
	Action         string         `json:"action"`
	Payload        map[string]any `json:"payload"`
	Status         string         `json:"status"`
	Attempts       int            `json:"attempts"`
	Error          string         `json:"error"`
	Result         map[string]any `json:"result"`
	CreatedAt      time.Time      `json:"createdAt"`
	SentAt         *time.Time     `json:"sentAt"`
	AcknowledgedAt *time.Time     `json:"acknowledgedAt"`
	CompletedAt    *time.Time     `json:"completedAt"`
	ExpiresAt      *time.Time     `json:"expiresAt"`
}

func newCommandView(c models.AgentCommand) commandView {
	payload := c.Payload
	if payload == nil {
		payload = map[string]any{}
	}
	return commandView{
		CommandID: c.CommandID, AgentID: c.AgentID, SessionID: c.GetSessionID(), Action: c.Action,
		Payload: payload, Status: c.Status, Attempts: c.Attempts, Error: c.GetErrorMessage(), Result: c.Result,
		CreatedAt: c.CreatedAt.UTC(), SentAt: utcPtr(c.SentAt), AcknowledgedAt: utcPtr(c.AcknowledgedAt),
		CompletedAt: utcPtr(c.CompletedAt), ExpiresAt: utcPtr(c.ExpiresAt),
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
