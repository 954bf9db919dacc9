package server

import (
	"errors"
	"net/http"

	"github.com/streamspace/streamspace-realtime/internal/agentadmin"
	"github.com/streamspace/streamspace-realtime/models"
)

// agentRefusals maps each refusal of the agent administration to its HTTP status and error
// code (PROTOCOL.md 1).
var agentRefusals = []struct {
	kind   error
	status int
	code   string
}{
	{agentadmin.ErrUnknownAgent, http.StatusNotFound, "unknown_agent"},
	{agentadmin.ErrUnknownCommand, http.StatusNotFound, "unknown_command"},
	{agentadmin.ErrAgentExists, http.StatusConflict, "agent_exists"},
	{agentadmin.ErrAlreadyApproved, http.StatusConflict, "already_approved"},
	{agentadmin.ErrNotApproved, http.StatusConflict, "agent_not_approved"},
	{agentadmin.ErrSessionExists, http.StatusConflict, "session_exists"},
	{agentadmin.ErrAgentRejected, http.StatusForbidden, "agent_rejected"},
	{agentadmin.ErrSharedAgent, http.StatusForbidden, "forbidden"},
	{agentadmin.ErrForbiddenOrg, http.StatusForbidden, "forbidden_org"},
	{agentadmin.ErrForbiddenSession, http.StatusForbidden, "forbidden_session"},
	{agentadmin.ErrInvalidAgentKey, http.StatusUnauthorized, "invalid_agent_key"},
	{agentadmin.ErrInvalidAction, http.StatusBadRequest, "invalid_action"},
	{agentadmin.ErrInvalidSessionID, http.StatusBadRequest, "invalid_session_id"},
	{agentadmin.ErrSessionMismatch, http.StatusBadRequest, "session_mismatch"},
	{agentadmin.ErrInvalidPayload, http.StatusBadRequest, "invalid_payload"},
	{agentadmin.ErrMissingUser, http.StatusBadRequest, "missing_user"},
}

// failAgentAdmin answers an error of the agent administration: its refusal with the refusal's
// message, or 503 for a failure of storage (what names the operation in the log).
func (s *Server) failAgentAdmin(w http.ResponseWriter, r *http.Request, what string, err error) {
	var refusal *agentadmin.Error
	if errors.As(err, &refusal) {
		for _, m := range agentRefusals {
			if errors.Is(refusal.Kind, m.kind) {
				s.fail(w, r, m.status, m.code, refusal.Message)
				return
			}
		}
	}
	s.unavailable(w, r, what, err)
}

// handleAdminCreateAgent serves POST /api/v1/admin/agents: an approved agent with its own key,
// shown once in the 201 answer.
func (s *Server) handleAdminCreateAgent(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorize(w, r, adminAPI)
	if !ok {
		return
	}
	var req models.AgentRegistration
	if !s.decodeBody(w, r, &req) || !s.validRegistration(w, r, req) {
		return
	}
	agent, key, err := s.admin.CreateAgent(r.Context(), scope, req)
	if err != nil {
		s.failAgentAdmin(w, r, "create agent", err)
		return
	}
	writeJSON(w, http.StatusCreated, newRegistrationReply(agent, key))
}

// handleAdminApproveAgent serves POST /api/v1/admin/agents/{agent_id}/approve: the agent is
// approved and its own key returned, once.
func (s *Server) handleAdminApproveAgent(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorize(w, r, adminAPI)
	if !ok {
		return
	}
	agent, key, err := s.admin.Approve(r.Context(), scope, r.PathValue("agent_id"))
	if err != nil {
		s.failAgentAdmin(w, r, "approve agent", err)
		return
	}
	writeJSON(w, http.StatusOK, newRegistrationReply(agent, key))
}

// handleAdminRejectAgent serves POST /api/v1/admin/agents/{agent_id}/reject: the agent is
// rejected and, when connected here, told to shut down for good and disconnected.
func (s *Server) handleAdminRejectAgent(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorize(w, r, adminAPI)
	if !ok {
		return
	}
	agent, err := s.admin.Reject(r.Context(), scope, r.PathValue("agent_id"))
	if err != nil {
		s.failAgentAdmin(w, r, "reject agent", err)
		return
	}
	writeJSON(w, http.StatusOK, newRegistrationReply(agent, ""))
}

// handleAdminCommand serves POST /api/v1/admin/agents/{agent_id}/command: the command is
// stored, then delivered when the agent is (or next gets) connected; 202 either way. The
// rules of what a command may act on are agentadmin.Service.SubmitCommand's.
func (s *Server) handleAdminCommand(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorize(w, r, adminAPI)
	if !ok {
		return
	}
	var req agentadmin.CommandRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	cmd, err := s.admin.SubmitCommand(r.Context(), scope, r.PathValue("agent_id"), req)
	if err != nil {
		s.failAgentAdmin(w, r, "submit command", err)
		return
	}
	answer := map[string]any{"commandId": cmd.CommandID, "status": cmd.Status}
	if cmd.GetSessionID() != "" {
		answer["sessionId"] = cmd.GetSessionID() // the id chosen by the server when the request gave none
	}
	writeJSON(w, http.StatusAccepted, answer)
}

// handleAdminGetCommand serves GET /api/v1/admin/commands/{commandId}.
func (s *Server) handleAdminGetCommand(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorize(w, r, adminAPI)
	if !ok {
		return
	}
	cmd, err := s.admin.GetCommand(r.Context(), scope, r.PathValue("command_id"))
	if err != nil {
		s.failAgentAdmin(w, r, "read command", err)
		return
	}
	writeJSON(w, http.StatusOK, newCommandView(cmd))
}
