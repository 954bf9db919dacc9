package server

import (
	"errors"
	"net/http"
	"strings"

	"github.com/google/uuid"
	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

// staffScope is who called an operator or admin endpoint: a service (every organization) or
// the holder of a token of one organization.
type staffScope struct {
	service bool
	orgID   string // empty for services
}

// servesOrg reports whether an agent of agentOrg is visible to the scope: services see all,
// an organization sees its own agents and shared ones (no org).
func (sc staffScope) servesOrg(agentOrg string) bool {
	return sc.service || agentOrg == "" || agentOrg == sc.orgID
}

// owns reports whether the scope may change an agent of agentOrg: services any, an
// organization's admins only their own (shared agents belong to the operators of the install).
func (sc staffScope) owns(agentOrg string) bool {
	return sc.service || (agentOrg != "" && agentOrg == sc.orgID)
}

// authorizeStaff accepts the service token, or a browser token whose role is at least min
// (operator < admin), and answers 401/403 itself.
func (s *Server) authorizeStaff(w http.ResponseWriter, r *http.Request, min auth.Role) (staffScope, bool) {
	if auth.ServiceTokenValid(r, s.cfg.ServiceToken) {
		return staffScope{service: true}, true
	}
	token, ok := auth.BearerToken(r)
	if !ok {
		s.fail(w, r, http.StatusUnauthorized, "unauthorized", "service token or "+string(min)+" token required")
		return staffScope{}, false
	}
	id, err := s.verifier.Verify(token)
	if err != nil {
		s.fail(w, r, http.StatusUnauthorized, auth.ErrorCode(err), err.Error())
		return staffScope{}, false
	}
	if id.Role != auth.RoleAdmin && (min == auth.RoleAdmin || id.Role != auth.RoleOperator) {
		s.fail(w, r, http.StatusForbidden, "forbidden", "role "+string(min)+" required")
		return staffScope{}, false
	}
	return staffScope{orgID: id.OrgID}, true
}

// handleAdminCreateAgent serves POST /api/v1/admin/agents: an approved agent with its own key,
// shown once in the 201 answer. An organization's admin creates agents of that organization;
// services choose (orgId, or none for a shared agent).
func (s *Server) handleAdminCreateAgent(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorizeStaff(w, r, auth.RoleAdmin)
	if !ok {
		return
	}
	var req models.AgentRegistration
	if !s.decodeBody(w, r, &req) || !s.validRegistration(w, r, req) {
		return
	}
	if !scope.service {
		if req.OrgID != "" && req.OrgID != scope.orgID {
			s.fail(w, r, http.StatusForbidden, "forbidden_org", "admins create agents of their own organization")
			return
		}
		req.OrgID = scope.orgID
	}
	key := auth.NewAgentKey()
	err := s.db.CreateAgent(r.Context(), models.Agent{
		ID: req.AgentID, OrgID: req.OrgID, Platform: req.Platform, Region: req.Region,
		Capacity: req.Capacity, Metadata: req.Metadata, Status: models.AgentStatusOffline,
		ApprovalStatus: models.ApprovalApproved, APIKeyHash: auth.HashAgentKey(key),
	})
	if errors.Is(err, db.ErrConflict) {
		s.fail(w, r, http.StatusConflict, "agent_exists", "an agent with this id exists")
		return
	}
	if err != nil {
		s.unavailable(w, r, "create agent", err)
		return
	}
	agent, err := s.db.GetAgent(r.Context(), req.AgentID)
	if err != nil {
		s.unavailable(w, r, "read agent", err)
		return
	}
	s.log.Info("agent created", "agent_id", agent.ID, "org_id", agent.OrgID, "platform", agent.Platform)
	writeJSON(w, http.StatusCreated, newRegistrationReply(agent, key))
}

// adminAgent loads the agent of the path and checks the scope may change it.
func (s *Server) adminAgent(w http.ResponseWriter, r *http.Request, scope staffScope, change bool) (models.Agent, bool) {
	id := r.PathValue("agent_id")
	agent, err := s.db.GetAgent(r.Context(), id)
	if err == nil && !(scope.servesOrg(agent.OrgID) && (!change || scope.owns(agent.OrgID))) {
		if !scope.servesOrg(agent.OrgID) {
			err = db.ErrNotFound // an agent of another organization does not exist for this caller
		} else {
			s.fail(w, r, http.StatusForbidden, "forbidden", "shared agents are managed with the service token")
			return agent, false
		}
	}
	if errors.Is(err, db.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, "unknown_agent", "no agent with this id")
		return agent, false
	}
	if err != nil {
		s.unavailable(w, r, "read agent", err)
		return agent, false
	}
	return agent, true
}

// handleAdminApproveAgent serves POST /api/v1/admin/agents/{agent_id}/approve: the agent is
// approved and its own key returned, once. Approving an approved agent is a conflict, so a key
// in use is never replaced by accident.
func (s *Server) handleAdminApproveAgent(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorizeStaff(w, r, auth.RoleAdmin)
	if !ok {
		return
	}
	agent, ok := s.adminAgent(w, r, scope, true)
	if !ok {
		return
	}
	if agent.ApprovalStatus == models.ApprovalApproved {
		s.fail(w, r, http.StatusConflict, "already_approved", "agent is already approved")
		return
	}
	s.approveAndReply(w, r, agent.ID, http.StatusOK)
}

// handleAdminRejectAgent serves POST /api/v1/admin/agents/{agent_id}/reject: the agent is
// rejected and, when connected here, told to shut down for good and disconnected.
func (s *Server) handleAdminRejectAgent(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorizeStaff(w, r, auth.RoleAdmin)
	if !ok {
		return
	}
	agent, ok := s.adminAgent(w, r, scope, true)
	if !ok {
		return
	}
	if err := s.db.SetAgentApproval(r.Context(), agent.ID, models.ApprovalRejected, ""); err != nil {
		s.unavailable(w, r, "reject agent", err)
		return
	}
	disconnected := s.agents.DisconnectAgent(agent.ID, gorilla.ClosePolicyViolation, rejectedReason, true)
	s.log.Info("agent rejected", "agent_id", agent.ID, "disconnected", disconnected)
	agent.ApprovalStatus = models.ApprovalRejected
	writeJSON(w, http.StatusOK, newRegistrationReply(agent, ""))
}

// commandRequest is the body of POST /api/v1/admin/agents/{agent_id}/command.
type commandRequest struct {
	Action    string         `json:"action"`
	SessionID string         `json:"sessionId"`
	Payload   map[string]any `json:"payload"`
}

// handleAdminCommand serves POST /api/v1/admin/agents/{agent_id}/command: the command is
// stored, then delivered when the agent is (or next gets) connected; 202 either way.
// start_session also creates the session row, pending, owned by payload "user", in payload
// "orgId" (default org), in payload "namespace" (else the org's), placed on the agent.
func (s *Server) handleAdminCommand(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorizeStaff(w, r, auth.RoleAdmin)
	if !ok {
		return
	}
	var req commandRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	req.Action = strings.TrimSpace(req.Action)
	if req.Action == "" || len(req.Action) > 64 {
		s.fail(w, r, http.StatusBadRequest, "invalid_action", "action is required (at most 64 bytes)")
		return
	}
	agent, ok := s.adminAgent(w, r, scope, false)
	if !ok {
		return
	}
	if agent.ApprovalStatus != models.ApprovalApproved {
		s.fail(w, r, http.StatusConflict, "agent_not_approved", "agent is "+agent.ApprovalStatus+"; its commands would never be delivered")
		return
	}
	if req.Payload == nil {
		req.Payload = map[string]any{}
	}
	if req.SessionID == "" {
		req.SessionID, _ = req.Payload["sessionId"].(string)
	}
	var session *models.Session
	if req.Action == models.ActionStartSession {
		if session, ok = s.newSessionFor(w, r, scope, agent, &req); !ok {
			return
		}
	} else if !scope.service && agent.OrgID == "" && !s.sessionInOrg(r, req.SessionID, scope.orgID) {
		// A shared agent runs every organization's sessions: an organization's admin may
		// command it only about that organization's sessions.
		s.fail(w, r, http.StatusForbidden, "forbidden_session", "commands to a shared agent must name a session of your organization")
		return
	}
	cmd, err := s.agents.SubmitCommand(r.Context(), models.AgentCommand{
		AgentID: agent.ID, SessionID: req.SessionID, Action: req.Action, Payload: req.Payload,
	}, session)
	if errors.Is(err, db.ErrConflict) {
		s.fail(w, r, http.StatusConflict, "session_exists", "a session with this id exists")
		return
	}
	if err != nil {
		s.unavailable(w, r, "submit command", err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"commandId": cmd.CommandID, "status": cmd.Status})
}

// newSessionFor builds the session row a start_session creates.
func (s *Server) newSessionFor(w http.ResponseWriter, r *http.Request, scope staffScope, agent models.Agent, req *commandRequest) (*models.Session, bool) {
	str := func(k string) string { v, _ := req.Payload[k].(string); return v }
	user := str("user")
	if user == "" {
		user = str("userId")
	}
	if user == "" {
		s.fail(w, r, http.StatusBadRequest, "missing_user", "start_session needs payload.user, the session's owner")
		return nil, false
	}
	org := str("orgId")
	if org == "" {
		org = s.cfg.DefaultOrg
		if !scope.service {
			org = scope.orgID
		}
	}
	if !scope.service && org != scope.orgID {
		s.fail(w, r, http.StatusForbidden, "forbidden_org", "admins start sessions in their own organization")
		return nil, false
	}
	if agent.OrgID != "" && agent.OrgID != org {
		s.fail(w, r, http.StatusForbidden, "forbidden_org", "the agent does not serve this organization")
		return nil, false
	}
	if req.SessionID == "" {
		req.SessionID = "sess-" + uuid.NewString()
	}
	ns := str("namespace")
	if ns == "" {
		ns = s.manager.NamespaceForOrg(r.Context(), org)
	}
	sess := &models.Session{
		ID: req.SessionID, OrgID: org, UserID: user, Namespace: ns, Template: str("template"),
		State: models.SessionStatePending, Platform: agent.Platform, AgentID: agent.ID,
	}
	if res, ok := req.Payload["resources"].(map[string]any); ok {
		sess.CPU, _ = res["cpu"].(string)
		sess.Memory, _ = res["memory"].(string)
	}
	return sess, true
}

// handleAdminGetCommand serves GET /api/v1/admin/commands/{commandId}.
func (s *Server) handleAdminGetCommand(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorizeStaff(w, r, auth.RoleAdmin)
	if !ok {
		return
	}
	cmd, err := s.db.GetCommand(r.Context(), r.PathValue("command_id"))
	if err == nil && !scope.service && !s.commandVisible(r, cmd, scope.orgID) {
		err = db.ErrNotFound // another organization's command does not exist for this caller
	}
	if errors.Is(err, db.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, "unknown_command", "no command with this id")
		return
	}
	if err != nil {
		s.unavailable(w, r, "read command", err)
		return
	}
	writeJSON(w, http.StatusOK, newCommandView(cmd))
}

// sessionInOrg reports whether the session exists in org.
func (s *Server) sessionInOrg(r *http.Request, sessionID, org string) bool {
	if sessionID == "" {
		return false
	}
	sess, err := s.db.GetSession(r.Context(), sessionID)
	return err == nil && sess.OrgID == org
}

// commandVisible reports whether an organization's admin may read a command: one sent to an
// agent of the organization, or to a shared agent about a session of the organization.
func (s *Server) commandVisible(r *http.Request, cmd models.AgentCommand, org string) bool {
	agent, err := s.db.GetAgent(r.Context(), cmd.AgentID)
	if err != nil {
		return false
	}
	if agent.OrgID != "" {
		return agent.OrgID == org
	}
	return s.sessionInOrg(r, cmd.SessionID, org)
}
