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
	var (
		agent models.Agent
		err   = db.ErrNotFound // no agent has an id that is not one
	)
	if models.ValidID(id) {
		agent, err = s.db.GetAgent(r.Context(), id)
	}
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
//
// The control plane owns the identity of what a command acts on. For every caller but the
// service token, the session the agent is told of (payload "sessionId") is the one that was
// authorized, a session of the caller's organization, and payload "namespace" is that
// organization's namespace, whatever the request said.
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
	if req.Action == "" || len(req.Action) > 64 || !models.ValidName(req.Action) {
		s.fail(w, r, http.StatusBadRequest, "invalid_action", "action is required (at most 64 bytes of UTF-8 text without control characters)")
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
	if !s.commandSessionID(w, r, scope, &req) {
		return
	}
	var (
		session *models.Session
		org     string // whose session the command acts on: who may read it
	)
	if req.Action == models.ActionStartSession {
		if session, ok = s.newSessionFor(w, r, scope, agent, &req); !ok {
			return
		}
		org = session.OrgID
	} else if org, ok = s.commandOrg(w, r, scope, agent, req.SessionID); !ok {
		return
	}
	if !scope.service {
		if req.SessionID != "" {
			req.Payload["sessionId"] = req.SessionID
		}
		if session != nil {
			req.Payload["namespace"] = session.Namespace
		} else {
			req.Payload["namespace"] = s.manager.NamespaceForOrg(r.Context(), org)
		}
	}
	cmd, err := s.agents.SubmitCommand(r.Context(), models.AgentCommand{
		AgentID: agent.ID, SessionID: req.SessionID, Action: req.Action, Payload: req.Payload, OrgID: org,
	}, session)
	if errors.Is(err, db.ErrConflict) {
		// Session ids are global: this is the answer whichever organization holds the id.
		s.fail(w, r, http.StatusConflict, "session_exists", "a session with this id exists; omit sessionId and the server chooses a free one")
		return
	}
	if err != nil {
		s.unavailable(w, r, "submit command", err)
		return
	}
	answer := map[string]any{"commandId": cmd.CommandID, "status": cmd.Status}
	if cmd.SessionID != "" {
		answer["sessionId"] = cmd.SessionID // the id chosen by the server when the request gave none
	}
	writeJSON(w, http.StatusAccepted, answer)
}

// commandSessionID settles the one session id a command names: the body's "sessionId", else
// payload "sessionId". A caller other than the service token may not name two: a payload
// "sessionId" that differs from the authorized one is refused, not passed to the agent.
func (s *Server) commandSessionID(w http.ResponseWriter, r *http.Request, scope staffScope, req *commandRequest) bool {
	inPayload := ""
	if v, present := req.Payload["sessionId"]; present && v != nil {
		str, isString := v.(string)
		if !isString {
			s.fail(w, r, http.StatusBadRequest, "invalid_session_id", "payload.sessionId must be a string")
			return false
		}
		inPayload = str
	}
	switch {
	case req.SessionID == "":
		req.SessionID = inPayload
	case inPayload != "" && inPayload != req.SessionID && !scope.service:
		s.fail(w, r, http.StatusBadRequest, "session_mismatch", "payload.sessionId differs from sessionId: a command acts on the one session it names")
		return false
	}
	if req.SessionID != "" && !models.ValidID(req.SessionID) {
		s.fail(w, r, http.StatusBadRequest, "invalid_session_id", "sessionId must be 1-256 bytes of UTF-8 text without control characters")
		return false
	}
	return true
}

// commandOrg authorizes a command other than start_session and returns the organization whose
// session it acts on (the agent's, for a command that names no session). An organization's
// admin may name only a session of its organization, on its own agents as on shared ones; a
// session of another organization gets the answer of one that does not exist. A shared agent
// runs every organization's sessions, so an admin's command to it must name one.
func (s *Server) commandOrg(w http.ResponseWriter, r *http.Request, scope staffScope, agent models.Agent, sessionID string) (string, bool) {
	if sessionID == "" {
		if !scope.service && agent.OrgID == "" {
			s.fail(w, r, http.StatusForbidden, "forbidden_session", "commands to a shared agent must name a session of your organization")
			return "", false
		}
		return agent.OrgID, true
	}
	sess, err := s.db.GetSession(r.Context(), sessionID)
	switch {
	case err == nil && (scope.service || sess.OrgID == scope.orgID):
		return sess.OrgID, true
	case err != nil && !errors.Is(err, db.ErrNotFound):
		s.unavailable(w, r, "read session", err)
		return "", false
	case scope.service:
		return agent.OrgID, true // a session this database does not hold: the agent's org reads it
	}
	s.fail(w, r, http.StatusForbidden, "forbidden_session", "commands must name a session of your organization")
	return "", false
}

// newSessionFor builds the session row a start_session creates. For a caller other than the
// service token the namespace is the organization's, whatever the payload says.
func (s *Server) newSessionFor(w http.ResponseWriter, r *http.Request, scope staffScope, agent models.Agent, req *commandRequest) (*models.Session, bool) {
	str := func(k string) string { v, _ := req.Payload[k].(string); return v }
	for _, k := range []string{"user", "userId", "orgId", "namespace", "template"} {
		if !models.ValidName(str(k)) {
			s.fail(w, r, http.StatusBadRequest, "invalid_payload", "payload."+k+" must be UTF-8 text without control characters")
			return nil, false
		}
	}
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
	if ns == "" || !scope.service {
		ns = s.manager.NamespaceForOrg(r.Context(), org)
	}
	sess := &models.Session{
		ID: req.SessionID, OrgID: org, UserID: user, Namespace: ns, Template: str("template"),
		State: models.SessionStatePending, Platform: agent.Platform, AgentID: agent.ID,
	}
	if res, ok := req.Payload["resources"].(map[string]any); ok {
		sess.CPU, _ = res["cpu"].(string)
		sess.Memory, _ = res["memory"].(string)
		if !models.ValidName(sess.CPU) || !models.ValidName(sess.Memory) {
			s.fail(w, r, http.StatusBadRequest, "invalid_payload", "payload.resources cpu and memory must be UTF-8 text without control characters")
			return nil, false
		}
	}
	return sess, true
}

// handleAdminGetCommand serves GET /api/v1/admin/commands/{commandId}.
func (s *Server) handleAdminGetCommand(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorizeStaff(w, r, auth.RoleAdmin)
	if !ok {
		return
	}
	var (
		cmd models.AgentCommand
		err = db.ErrNotFound // no command has an id that is not one
	)
	if id := r.PathValue("command_id"); models.ValidID(id) {
		cmd, err = s.db.GetCommand(r.Context(), id)
	}
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

// commandVisible reports whether an organization's admin may read a command: exactly the
// organization whose session it acted on, recorded when it was submitted. For a command stored
// without that record: the organization of its session while the session exists, else the
// organization of its agent.
func (s *Server) commandVisible(r *http.Request, cmd models.AgentCommand, org string) bool {
	if cmd.OrgID != "" {
		return cmd.OrgID == org
	}
	if cmd.SessionID != "" {
		sess, err := s.db.GetSession(r.Context(), cmd.SessionID)
		if err == nil {
			return sess.OrgID == org
		}
		if !errors.Is(err, db.ErrNotFound) {
			return false
		}
	}
	agent, err := s.db.GetAgent(r.Context(), cmd.AgentID)
	return err == nil && agent.OrgID != "" && agent.OrgID == org
}
