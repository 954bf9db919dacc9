package agentadmin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

// recheckTimeout bounds RecheckApproval's read of the approval.
const recheckTimeout = 5 * time.Second

// invalidKey is the one answer to a key that is not valid for the agent named: a wrong key,
// the bootstrap key for an agent with a key of its own, or an agent that does not exist.
func invalidKey() error {
	return refuse(ErrInvalidAgentKey, "the key is not valid for this agent")
}

// Register is an agent registering itself with key (PROTOCOL.md 3.1). The answer carries
// the agent as stored and, when this call approved it, its new key (shown once):
//
//	own key, known agent       → nothing changes but platform/region/capacity/metadata
//	bootstrap key, new agent   → created pending, or approved with a key (auto-approval)
//	bootstrap key, agent that has its own key → ErrInvalidAgentKey
//	rejected agent             → ErrAgentRejected
//
// StreamSpace's k8s-agent registers again on every reconnect with its own key.
func (s *Service) Register(ctx context.Context, key string, reg models.AgentRegistration) (models.Agent, string, error) {
	agent, err := s.db.GetAgent(ctx, reg.AgentID)
	switch {
	case errors.Is(err, db.ErrNotFound):
		return s.registerNew(ctx, key, reg)
	case err != nil:
		return agent, "", fmt.Errorf("read agent %q: %w", reg.AgentID, err)
	}
	ownKey := ownKeyMatches(key, agent.APIKeyHash)
	bootstrap := !ownKey && agent.APIKeyHash == "" && auth.BootstrapKeyMatches(key, s.cfg.BootstrapKey)
	switch {
	case !ownKey && !bootstrap:
		// The same answer as for an unknown agent (registerNew): an agent with a key of its
		// own takes no other, the bootstrap key included, and a wrong key does not tell which
		// agent ids exist.
		return agent, "", invalidKey()
	case agent.ApprovalStatus == models.ApprovalRejected:
		return agent, "", refuse(ErrAgentRejected, "this agent was rejected by an operator")
	}
	if err := s.db.UpdateAgentRegistration(ctx, agent.ID, reg.Platform, reg.Region, reg.Capacity, reg.Metadata); err != nil {
		return agent, "", fmt.Errorf("update agent %q: %w", agent.ID, err)
	}
	if agent.ApprovalStatus == models.ApprovalPending && s.cfg.AutoApprove {
		return s.approve(ctx, agent.ID)
	}
	if agent, err = s.db.GetAgent(ctx, agent.ID); err != nil {
		return agent, "", fmt.Errorf("read agent %q: %w", reg.AgentID, err)
	}
	return agent, "", nil
}

// registerNew creates an agent that presented the bootstrap key: pending, or approved with
// its own key when auto-approval is on. Self-registered agents are shared (no org): an agent
// does not choose its tenant; an admin creates an organization's agents with CreateAgent.
func (s *Service) registerNew(ctx context.Context, key string, reg models.AgentRegistration) (models.Agent, string, error) {
	// The own-key comparison an existing agent gets, so the time taken does not tell either.
	if ownKeyMatches(key, "") || !auth.BootstrapKeyMatches(key, s.cfg.BootstrapKey) {
		return models.Agent{}, "", invalidKey()
	}
	a := models.Agent{
		ID: reg.AgentID, Platform: reg.Platform, Region: reg.Region,
		Capacity: reg.Capacity, Metadata: reg.Metadata,
		Status: models.AgentStatusOffline, ApprovalStatus: models.ApprovalPending,
	}
	err := s.db.CreateAgent(ctx, a)
	if errors.Is(err, db.ErrConflict) {
		return a, "", refuse(ErrAgentExists, "an agent with this id was just registered; retry")
	}
	if err != nil {
		return a, "", fmt.Errorf("create agent %q: %w", a.ID, err)
	}
	s.log.Info("agent registered", "agent_id", a.ID, "platform", a.Platform, "auto_approve", s.cfg.AutoApprove)
	if s.cfg.AutoApprove {
		return s.approve(ctx, a.ID)
	}
	created, err := s.db.GetAgent(ctx, a.ID)
	if err != nil {
		return a, "", fmt.Errorf("read agent %q: %w", a.ID, err)
	}
	return created, "", nil
}

// approve approves the agent and issues its key, returned once.
func (s *Service) approve(ctx context.Context, agentID string) (models.Agent, string, error) {
	key := auth.NewAgentKey()
	if err := s.db.SetAgentApproval(ctx, agentID, models.ApprovalApproved, auth.HashAgentKey(key)); err != nil {
		return models.Agent{}, "", fmt.Errorf("approve agent %q: %w", agentID, err)
	}
	agent, err := s.db.GetAgent(ctx, agentID)
	if err != nil {
		return agent, "", fmt.Errorf("read agent %q: %w", agentID, err)
	}
	s.log.Info("agent approved", "agent_id", agentID)
	return agent, key, nil
}

// Admit checks an agent's connection before its upgrade: ErrInvalidAgentKey for a key that is
// not this agent's (an unknown agent included: one answer, so the endpoint does not tell which
// agent ids exist), ErrNotApproved for one not approved.
func (s *Service) Admit(ctx context.Context, agentID, key string) (models.Agent, error) {
	agent, err := s.db.GetAgent(ctx, agentID)
	known := err == nil
	if err != nil && !errors.Is(err, db.ErrNotFound) {
		return agent, fmt.Errorf("read agent %q: %w", agentID, err)
	}
	ownKey := ownKeyMatches(key, agent.APIKeyHash)
	bootstrap := known && agent.APIKeyHash == "" && auth.BootstrapKeyMatches(key, s.cfg.BootstrapKey)
	switch {
	case !known || (!ownKey && !bootstrap):
		return agent, invalidKey()
	case agent.ApprovalStatus != models.ApprovalApproved:
		return agent, refuse(ErrNotApproved, "agent is "+agent.ApprovalStatus)
	}
	return agent, nil
}

// RecheckApproval closes a just-registered agent that an operator rejected while it was
// connecting: the reject looked for its connection before it was registered and found none.
// Reject writes the approval first and then disconnects; the connection registers first and
// then this reads the approval, so one of the two always sees the other. It outlives ctx's
// cancellation (the request's), bounded by its own timeout.
func (s *Service) RecheckApproval(ctx context.Context, agentID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recheckTimeout)
	defer cancel()
	agent, err := s.db.GetAgent(ctx, agentID)
	if err != nil || agent.ApprovalStatus == models.ApprovalApproved {
		return
	}
	rejected := agent.ApprovalStatus == models.ApprovalRejected
	reason := "agent is " + agent.ApprovalStatus
	if rejected {
		reason = RejectedReason
	}
	s.hub.DisconnectAgent(agentID, gorilla.ClosePolicyViolation, reason, rejected)
}

// ListAgents returns the agents the scope sees: an organization's own and shared ones, or all
// for the service token, with status and replica as the cluster knows them now.
func (s *Service) ListAgents(ctx context.Context, scope auth.Scope) ([]models.Agent, error) {
	org := scope.OrgID
	if scope.Service {
		org = ""
	}
	agents, err := s.db.ListAgents(ctx, org)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	s.overlayLocations(ctx, agents)
	return agents, nil
}

// overlayLocations sets each agent's status and replica from the cluster's live record of
// connections, which the rows can trail: a replica that died abruptly leaves its agents'
// rows online. An agent some replica holds is online (or draining, as it last said); any
// other is offline. Should the cluster not answer, the rows stand as stored.
func (s *Service) overlayLocations(ctx context.Context, agents []models.Agent) {
	ids := make([]string, len(agents))
	for i, a := range agents {
		ids[i] = a.ID
	}
	where, err := s.hub.AgentLocations(ctx, ids)
	if err != nil {
		s.log.Warn("agent list: cluster locations unavailable; showing stored status", "err", err)
		return
	}
	for i := range agents {
		a := &agents[i]
		replica, online := where[a.ID]
		switch {
		case !online:
			a.Status, a.Replica = models.AgentStatusOffline, ""
		case a.Status != models.AgentStatusDraining:
			a.Status, a.Replica = models.AgentStatusOnline, replica
		default:
			a.Replica = replica
		}
	}
}

// CreateAgent creates an approved agent with its own key, returned once. An organization's
// admin creates agents of that organization; the service token chooses (reg.OrgID, or none
// for a shared agent).
func (s *Service) CreateAgent(ctx context.Context, scope auth.Scope, reg models.AgentRegistration) (models.Agent, string, error) {
	if !scope.Service {
		if reg.OrgID != "" && reg.OrgID != scope.OrgID {
			return models.Agent{}, "", refuse(ErrForbiddenOrg, "admins create agents of their own organization")
		}
		reg.OrgID = scope.OrgID
	}
	key := auth.NewAgentKey()
	err := s.db.CreateAgent(ctx, models.Agent{
		ID: reg.AgentID, OrgID: reg.OrgID, Platform: reg.Platform, Region: reg.Region,
		Capacity: reg.Capacity, Metadata: reg.Metadata, Status: models.AgentStatusOffline,
		ApprovalStatus: models.ApprovalApproved, APIKeyHash: auth.HashAgentKey(key),
	})
	if errors.Is(err, db.ErrConflict) {
		return models.Agent{}, "", refuse(ErrAgentExists, "an agent with this id exists")
	}
	if err != nil {
		return models.Agent{}, "", fmt.Errorf("create agent %q: %w", reg.AgentID, err)
	}
	agent, err := s.db.GetAgent(ctx, reg.AgentID)
	if err != nil {
		return agent, "", fmt.Errorf("read agent %q: %w", reg.AgentID, err)
	}
	s.log.Info("agent created", "agent_id", agent.ID, "org_id", agent.OrgID, "platform", agent.Platform)
	return agent, key, nil
}

// Approve approves a pending (or rejected) agent and returns its own key, once. Approving an
// approved agent is ErrAlreadyApproved, so a key in use is never replaced by accident.
func (s *Service) Approve(ctx context.Context, scope auth.Scope, agentID string) (models.Agent, string, error) {
	agent, err := s.staffAgent(ctx, scope, agentID, true)
	if err != nil {
		return agent, "", err
	}
	if agent.ApprovalStatus == models.ApprovalApproved {
		return agent, "", refuse(ErrAlreadyApproved, "agent is already approved")
	}
	return s.approve(ctx, agent.ID)
}

// Reject rejects the agent and, when it is connected here, tells it to shut down for good and
// disconnects it.
func (s *Service) Reject(ctx context.Context, scope auth.Scope, agentID string) (models.Agent, error) {
	agent, err := s.staffAgent(ctx, scope, agentID, true)
	if err != nil {
		return agent, err
	}
	if err := s.db.SetAgentApproval(ctx, agent.ID, models.ApprovalRejected, ""); err != nil {
		return agent, fmt.Errorf("reject agent %q: %w", agent.ID, err)
	}
	disconnected := s.hub.DisconnectAgent(agent.ID, gorilla.ClosePolicyViolation, RejectedReason, true)
	s.log.Info("agent rejected", "agent_id", agent.ID, "disconnected", disconnected)
	agent.ApprovalStatus = models.ApprovalRejected
	return agent, nil
}

// noKeyHash stands for the key hash of an agent that has none (or does not exist): no key
// hashes to it, and comparing with it costs what comparing with a real one does.
var noKeyHash = "sha256:" + strings.Repeat("0", 64)

// ownKeyMatches reports whether key is the agent's own (storedHash is its hash, "" for none).
// Every call hashes the key, so the time an answer takes does not tell whether the agent
// exists or has a key of its own.
func ownKeyMatches(key, storedHash string) bool {
	if storedHash == "" {
		storedHash = noKeyHash
	}
	return auth.AgentKeyMatches(key, storedHash)
}
