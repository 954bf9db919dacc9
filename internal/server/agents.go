package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/agentadmin"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// validAgentID keeps agent ids printable and bounded: they appear in URLs, logs and keys.
var validAgentID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// handleAgentRegister serves POST /api/v1/agents/register (PROTOCOL.md 3.1): 201 with the
// agent's new key when this call approved it, 202 while it is pending, else 200; the rules are
// agentadmin.Service.Register's.
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
	agent, newKey, err := s.admin.Register(r.Context(), key, req)
	if err != nil {
		s.failAgentAdmin(w, r, "register agent", err)
		return
	}
	status := http.StatusOK
	switch {
	case newKey != "":
		status = http.StatusCreated
	case agent.ApprovalStatus == models.ApprovalPending:
		status = http.StatusAccepted
	}
	writeJSON(w, status, newRegistrationReply(agent, newKey))
}

// validRegistration checks a registration's fields, answering 400 for the first that is wrong.
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
	agent, err := s.admin.Admit(r.Context(), agentID, key)
	var refusal *agentadmin.Error
	switch {
	case errors.Is(err, agentadmin.ErrNotApproved) && errors.As(err, &refusal):
		// An agent that may not connect is forbidden, where a command to it is a conflict.
		s.fail(w, r, http.StatusForbidden, "agent_not_approved", refusal.Message)
		return
	case err != nil:
		s.failAgentAdmin(w, r, "admit agent", err)
		return
	case !gorilla.IsWebSocketUpgrade(r):
		s.fail(w, r, http.StatusBadRequest, "upgrade_required", "this endpoint speaks WebSocket")
		return
	}
	// The features the agent offered and this server uses on the socket (PROTOCOL.md 6.3).
	features := websocket.NegotiateAgentFeatures(r.Header.Get(models.AgentFeaturesHeader))
	var answer http.Header
	if len(features) > 0 {
		answer = http.Header{models.AgentFeaturesHeader: {strings.Join(features, ",")}}
	}
	conn, err := s.agentUpgrader.Upgrade(w, r, answer)
	if err != nil {
		return // the upgrader answered
	}
	if _, err := s.agents.ServeAgentWithFeatures(conn, agent.ID, agent.Platform, features); err != nil {
		s.log.Error("agent connection refused after upgrade", "agent_id", agent.ID, "err", err)
		code, reason := gorilla.CloseInternalServerErr, "cannot register the connection now"
		if s.draining.Load() {
			code, reason = gorilla.CloseGoingAway, "server shutting down"
		}
		closeSocket(conn, s.cfg.WriteWait, code, reason)
		return
	}
	s.admin.RecheckApproval(r.Context(), agent.ID)
}

// handleAgentList serves GET /api/v1/agents for operators, admins and services. A token's
// caller sees the agents serving its organization (its own and shared ones); the service
// token sees all.
func (s *Server) handleAgentList(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorize(w, r, operatorAPI)
	if !ok {
		return
	}
	agents, err := s.admin.ListAgents(r.Context(), scope)
	if err != nil {
		s.failAgentAdmin(w, r, "list agents", err)
		return
	}
	out := make([]agentListEntry, 0, len(agents))
	for _, a := range agents {
		out = append(out, newAgentListEntry(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": out})
}
