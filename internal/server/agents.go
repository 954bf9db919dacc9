package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

// rejectedReason is the shutdown reason and close text an agent gets when it is rejected.
const rejectedReason = "agent rejected by an operator"

// validAgentID keeps agent ids printable and bounded: they appear in URLs, logs and keys.
var validAgentID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// handleAgentRegister serves POST /api/v1/agents/register (PROTOCOL.md 3.1).
//
//	own key, known agent       → 200, nothing changes but platform/region/capacity/metadata
//	bootstrap key, new agent   → 201 with a new apiKey (auto-approval) or 202 pending
//	bootstrap key, agent that has its own key → 401
//	rejected agent             → 403
//
// StreamSpace's k8s-agent registers again on every reconnect with its own key: that is a 200.
func (s *Server) handleAgentRegister(w http.ResponseWriter, r *http.Request) {
	key := auth.AgentKeyFromRequest(r)
	if key == "" {
		s.fail(w, r, http.StatusUnauthorized, "missing_agent_key", "X-Agent-API-Key header required")
		return
	}
	var req models.AgentRegistration
	if !s.decodeBody(w, r, &req) || !s.validRegistration(w, r, req) {
		return
	}
	ctx := r.Context()
	agent, err := s.db.GetAgent(ctx, req.AgentID)
	switch {
	case errors.Is(err, db.ErrNotFound):
		s.registerNewAgent(w, r, req, key)
		return
	case err != nil:
		s.unavailable(w, r, "read agent", err)
		return
	}
	ownKey := ownKeyMatches(key, agent.APIKeyHash)
	bootstrap := !ownKey && agent.APIKeyHash == "" && auth.BootstrapKeyMatches(key, s.cfg.AgentBootstrapKey)
	switch {
	case !ownKey && !bootstrap:
		// The same answer as for an unknown agent (registerNewAgent): an agent with a key of
		// its own takes no other, the bootstrap key included, and a wrong key does not tell
		// which agent ids exist.
		s.failAgentKey(w, r)
		return
	case agent.ApprovalStatus == models.ApprovalRejected:
		s.fail(w, r, http.StatusForbidden, "agent_rejected", "this agent was rejected by an operator")
		return
	}
	if err := s.db.UpdateAgentRegistration(ctx, agent.ID, req.Platform, req.Region, req.Capacity, req.Metadata); err != nil {
		s.unavailable(w, r, "update agent", err)
		return
	}
	if agent.ApprovalStatus == models.ApprovalPending && s.cfg.AgentAutoApprove {
		s.approveAndReply(w, r, agent.ID, http.StatusCreated)
		return
	}
	agent, err = s.db.GetAgent(ctx, agent.ID)
	if err != nil {
		s.unavailable(w, r, "read agent", err)
		return
	}
	status := http.StatusOK
	if agent.ApprovalStatus == models.ApprovalPending {
		status = http.StatusAccepted
	}
	writeJSON(w, status, newRegistrationReply(agent, ""))
}

// registerNewAgent creates an agent that presented the bootstrap key: pending, or approved
// with its own key when auto-approval is on. Self-registered agents are shared (no org): an
// agent does not choose its tenant; an admin creates org agents with POST /api/v1/admin/agents.
func (s *Server) registerNewAgent(w http.ResponseWriter, r *http.Request, req models.AgentRegistration, key string) {
	// The own-key comparison an existing agent gets, so the time taken does not tell either.
	if ownKeyMatches(key, "") || !auth.BootstrapKeyMatches(key, s.cfg.AgentBootstrapKey) {
		s.failAgentKey(w, r)
		return
	}
	a := models.Agent{
		ID: req.AgentID, Platform: req.Platform, Region: req.Region,
		Capacity: req.Capacity, Metadata: req.Metadata,
		Status: models.AgentStatusOffline, ApprovalStatus: models.ApprovalPending,
	}
	err := s.db.CreateAgent(r.Context(), a)
	if errors.Is(err, db.ErrConflict) {
		s.fail(w, r, http.StatusConflict, "agent_exists", "an agent with this id was just registered; retry")
		return
	}
	if err != nil {
		s.unavailable(w, r, "create agent", err)
		return
	}
	s.log.Info("agent registered", "agent_id", a.ID, "platform", a.Platform, "auto_approve", s.cfg.AgentAutoApprove)
	if s.cfg.AgentAutoApprove {
		s.approveAndReply(w, r, a.ID, http.StatusCreated)
		return
	}
	created, err := s.db.GetAgent(r.Context(), a.ID)
	if err != nil {
		s.unavailable(w, r, "read agent", err)
		return
	}
	writeJSON(w, http.StatusAccepted, newRegistrationReply(created, ""))
}

// approveAndReply approves the agent, issues its key and answers with the key, once.
func (s *Server) approveAndReply(w http.ResponseWriter, r *http.Request, agentID string, status int) {
	key := auth.NewAgentKey()
	if err := s.db.SetAgentApproval(r.Context(), agentID, models.ApprovalApproved, auth.HashAgentKey(key)); err != nil {
		s.unavailable(w, r, "approve agent", err)
		return
	}
	agent, err := s.db.GetAgent(r.Context(), agentID)
	if err != nil {
		s.unavailable(w, r, "read agent", err)
		return
	}
	s.log.Info("agent approved", "agent_id", agentID)
	writeJSON(w, status, newRegistrationReply(agent, key))
}

func (s *Server) validRegistration(w http.ResponseWriter, r *http.Request, req models.AgentRegistration) bool {
	switch {
	case !validAgentID.MatchString(req.AgentID):
		s.fail(w, r, http.StatusBadRequest, "invalid_agent_id", "agentId must be 1-128 of A-Z a-z 0-9 . _ : - starting with a letter or digit")
		return false
	case !models.ValidPlatform(req.Platform):
		s.fail(w, r, http.StatusBadRequest, "invalid_platform", fmt.Sprintf("platform %q: want kubernetes, docker, vm or cloud", req.Platform))
		return false
	case len(req.Region) > 128 || !models.ValidName(req.Region):
		s.fail(w, r, http.StatusBadRequest, "invalid_region", "region must be at most 128 bytes of UTF-8 text without control characters")
		return false
	case jsonSize(req.Capacity) > models.MaxAgentObjectBytes:
		s.fail(w, r, http.StatusBadRequest, "invalid_capacity", fmt.Sprintf("capacity is larger than %d bytes of JSON", models.MaxAgentObjectBytes))
		return false
	case jsonSize(req.Metadata) > models.MaxAgentObjectBytes:
		s.fail(w, r, http.StatusBadRequest, "invalid_metadata", fmt.Sprintf("metadata is larger than %d bytes of JSON", models.MaxAgentObjectBytes))
		return false
	}
	return true
}

// jsonSize is the length of an object decoded from a request, encoded again as it is stored.
func jsonSize(m map[string]any) int {
	if len(m) == 0 {
		return 0
	}
	b, _ := json.Marshal(m) // decoded from JSON, so it encodes
	return len(b)
}

// handleAgentConnect serves GET /api/v1/agents/connect?agent_id=<id>: 400 without an id or
// with one that is not an id, 401 without a key or with a key that is not this agent's (an
// unknown agent included: one answer, so the endpoint does not tell which agent ids exist),
// 403 for one not approved; then the upgrade, and the AgentHub owns the connection.
func (s *Server) handleAgentConnect(w http.ResponseWriter, r *http.Request) {
	if !s.allowUpgrade(w, r) {
		return
	}
	agentID := r.URL.Query().Get("agent_id")
	if agentID == "" {
		s.fail(w, r, http.StatusBadRequest, "missing_agent_id", "agent_id query parameter required")
		return
	}
	if !models.ValidID(agentID) {
		s.fail(w, r, http.StatusBadRequest, "invalid_agent_id", "agent_id must be 1-256 bytes of UTF-8 text without control characters")
		return
	}
	key := auth.AgentKeyFromRequest(r)
	if key == "" {
		s.fail(w, r, http.StatusUnauthorized, "missing_agent_key", "X-Agent-API-Key header required")
		return
	}
	agent, err := s.db.GetAgent(r.Context(), agentID)
	known := err == nil
	if err != nil && !errors.Is(err, db.ErrNotFound) {
		s.unavailable(w, r, "read agent", err)
		return
	}
	ownKey := ownKeyMatches(key, agent.APIKeyHash)
	bootstrap := known && agent.APIKeyHash == "" && auth.BootstrapKeyMatches(key, s.cfg.AgentBootstrapKey)
	switch {
	case !known || (!ownKey && !bootstrap):
		s.failAgentKey(w, r)
		return
	case agent.ApprovalStatus != models.ApprovalApproved:
		s.fail(w, r, http.StatusForbidden, "agent_not_approved", "agent is "+agent.ApprovalStatus)
		return
	case !gorilla.IsWebSocketUpgrade(r):
		s.fail(w, r, http.StatusBadRequest, "upgrade_required", "this endpoint speaks WebSocket")
		return
	}
	conn, err := s.agentUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	if _, err := s.agents.ServeAgent(conn, agent.ID, agent.Platform); err != nil {
		s.log.Error("agent connection refused after upgrade", "agent_id", agent.ID, "err", err)
		code, reason := gorilla.CloseInternalServerErr, "cannot register the connection now"
		if s.draining.Load() {
			code, reason = gorilla.CloseGoingAway, "server shutting down"
		}
		closeSocket(conn, s.cfg.WriteWait, code, reason)
		return
	}
	s.recheckApproval(agent.ID)
}

// recheckApproval closes a just-registered agent that an operator rejected while it was
// connecting: the reject looked for its connection before it was registered and found none.
// Reject writes the approval first and then disconnects; this registers first and then reads
// the approval, so one of the two always sees the other.
func (s *Server) recheckApproval(agentID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	agent, err := s.db.GetAgent(ctx, agentID)
	if err != nil || agent.ApprovalStatus == models.ApprovalApproved {
		return
	}
	rejected := agent.ApprovalStatus == models.ApprovalRejected
	reason := "agent is " + agent.ApprovalStatus
	if rejected {
		reason = rejectedReason
	}
	s.agents.DisconnectAgent(agentID, gorilla.ClosePolicyViolation, reason, rejected)
}

// handleAgentList serves GET /api/v1/agents for operators, admins and services. A token's
// caller sees the agents serving its organization (its own and shared ones); the service
// token sees all.
func (s *Server) handleAgentList(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorizeStaff(w, r, auth.RoleOperator)
	if !ok {
		return
	}
	agents, err := s.db.ListAgents(r.Context(), scope.orgID)
	if err != nil {
		s.unavailable(w, r, "list agents", err)
		return
	}
	s.overlayLocations(r.Context(), agents)
	out := make([]agentListEntry, 0, len(agents))
	for _, a := range agents {
		out = append(out, newAgentListEntry(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": out})
}

// overlayLocations sets each agent's status and replica from the cluster's live record of
// connections, which the rows can trail: a replica that died abruptly leaves its agents'
// rows online. An agent some replica holds is online (or draining, as it last said); any
// other is offline. Should the cluster not answer, the rows stand as stored.
func (s *Server) overlayLocations(ctx context.Context, agents []models.Agent) {
	ids := make([]string, len(agents))
	for i, a := range agents {
		ids[i] = a.ID
	}
	where, err := s.agents.AgentLocations(ctx, ids)
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

// failAgentKey is the one answer to a key that is not valid for the agent named: a wrong key,
// the bootstrap key for an agent with a key of its own, or an agent that does not exist.
func (s *Server) failAgentKey(w http.ResponseWriter, r *http.Request) {
	s.fail(w, r, http.StatusUnauthorized, "invalid_agent_key", "the key is not valid for this agent")
}

// unavailable answers 503 for a failure of storage, logged once with its cause.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.Error(what+" failed", "path", r.URL.Path, "err", err)
	writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "unavailable", Message: "storage unavailable; retry"})
	s.metrics.refusals.WithLabelValues("unavailable").Inc()
}

// closeSocket closes an upgraded connection that was never handed to a hub.
func closeSocket(conn *gorilla.Conn, wait time.Duration, code int, reason string) {
	_ = conn.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(code, reason), time.Now().Add(wait))
	_ = conn.Close()
}
