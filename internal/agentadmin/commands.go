package agentadmin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

// maxActionBytes bounds a command's action: it is stored, logged and counted.
const maxActionBytes = 64

// CommandRequest is a command as staff submit it (the body of
// POST /api/v1/admin/agents/{agent_id}/command).
type CommandRequest struct {
	Action    string         `json:"action"`
	SessionID string         `json:"sessionId"`
	Payload   map[string]any `json:"payload"`
}

// SubmitCommand stores a command for the agent agentID, delivered when the agent is (or next
// gets) connected. start_session also creates the session row, pending, owned by payload
// "user", in payload "orgId" (default org), in payload "namespace" (else the org's), placed on
// the agent. The stored command carries the session id the server chose when none was given.
//
// The control plane owns the identity of what a command acts on. For every caller but the
// service token, the session the agent is told of (payload "sessionId") is the one that was
// authorized, a session of the caller's organization, and payload "namespace" is that
// organization's namespace, whatever the request said.
func (s *Service) SubmitCommand(ctx context.Context, scope auth.Scope, agentID string, req CommandRequest) (models.AgentCommand, error) {
	action := strings.TrimSpace(req.Action)
	if action == "" || len(action) > maxActionBytes || !models.ValidName(action) {
		return models.AgentCommand{}, refuse(ErrInvalidAction, "action is required (at most 64 bytes of UTF-8 text without control characters)")
	}
	agent, err := s.staffAgent(ctx, scope, agentID, false)
	if err != nil {
		return models.AgentCommand{}, err
	}
	if agent.ApprovalStatus != models.ApprovalApproved {
		return models.AgentCommand{}, refuse(ErrNotApproved, "agent is "+agent.ApprovalStatus+"; its commands would never be delivered")
	}
	cmd := models.AgentCommand{AgentID: agent.ID, SessionID: models.OptionalString(req.SessionID), Action: action, Payload: req.Payload}
	if err := settleSession(&cmd, scope); err != nil {
		return cmd, err
	}
	var session *models.Session
	if action == models.ActionStartSession {
		if session, err = s.newSession(ctx, scope, agent, &cmd); err != nil {
			return cmd, err
		}
		cmd.OrgID = session.OrgID
	} else if cmd.OrgID, err = s.commandOrg(ctx, scope, agent, cmd.GetSessionID()); err != nil {
		return cmd, err
	}
	if !scope.Service {
		if cmd.GetSessionID() != "" {
			cmd.Payload["sessionId"] = cmd.GetSessionID()
		}
		if session != nil {
			cmd.Payload["namespace"] = session.Namespace
		} else {
			cmd.Payload["namespace"] = s.namespaces.NamespaceForOrg(ctx, cmd.OrgID)
		}
	}
	stored, err := s.hub.SubmitCommand(ctx, cmd, session)
	if errors.Is(err, db.ErrConflict) {
		// Session ids are global: this is the answer whichever organization holds the id.
		return stored, refuse(ErrSessionExists, "a session with this id exists; omit sessionId and the server chooses a free one")
	}
	if err != nil {
		return stored, fmt.Errorf("submit command to agent %q: %w", agent.ID, err)
	}
	return stored, nil
}

// settleSession settles the one session a command names (models.SettleCommandSession): only
// the service token may name two, one to be authorized and another for the agent.
func settleSession(cmd *models.AgentCommand, scope auth.Scope) error {
	err := models.SettleCommandSession(cmd, scope.Service)
	switch {
	case errors.Is(err, models.ErrSessionIDNotString):
		return refuse(ErrInvalidSessionID, "payload.sessionId must be a string")
	case errors.Is(err, models.ErrSessionMismatch):
		return refuse(ErrSessionMismatch, "payload.sessionId differs from sessionId: a command acts on the one session it names")
	case errors.Is(err, models.ErrInvalidSessionID):
		return refuse(ErrInvalidSessionID, "sessionId must be 1-256 bytes of UTF-8 text without control characters")
	}
	return err
}

// commandOrg authorizes a command other than start_session and returns the organization whose
// session it acts on (the agent's, for a command that names no session). An organization's
// admin may name only a session of its organization, on its own agents as on shared ones; a
// session of another organization gets the answer of one that does not exist. A shared agent
// runs every organization's sessions, so an admin's command to it must name one.
func (s *Service) commandOrg(ctx context.Context, scope auth.Scope, agent models.Agent, sessionID string) (string, error) {
	if sessionID == "" {
		if !scope.Service && agent.OrgID == "" {
			return "", refuse(ErrForbiddenSession, "commands to a shared agent must name a session of your organization")
		}
		return agent.OrgID, nil
	}
	sess, err := s.db.GetSession(ctx, sessionID)
	switch {
	case err == nil && (scope.Service || sess.OrgID == scope.OrgID):
		return sess.OrgID, nil
	case err != nil && !errors.Is(err, db.ErrNotFound):
		return "", fmt.Errorf("read session %q: %w", sessionID, err)
	case scope.Service:
		return agent.OrgID, nil // a session this database does not hold: the agent's org reads it
	}
	return "", refuse(ErrForbiddenSession, "commands must name a session of your organization")
}

// newSession builds the session row a start_session creates, choosing its id when the command
// names none. For a caller other than the service token the organization must be the
// caller's and the namespace is the organization's, whatever the payload says.
func (s *Service) newSession(ctx context.Context, scope auth.Scope, agent models.Agent, cmd *models.AgentCommand) (*models.Session, error) {
	str := func(k string) string { v, _ := cmd.Payload[k].(string); return v }
	for _, k := range []string{"user", "userId", "orgId", "namespace", "template"} {
		if !models.ValidName(str(k)) {
			return nil, refuse(ErrInvalidPayload, "payload."+k+" must be UTF-8 text without control characters")
		}
	}
	user := str("user")
	if user == "" {
		user = str("userId")
	}
	if user == "" {
		return nil, refuse(ErrMissingUser, "start_session needs payload.user, the session's owner")
	}
	org := str("orgId")
	if org == "" {
		org = s.cfg.DefaultOrg
		if !scope.Service {
			org = scope.OrgID
		}
	}
	if !scope.Service && org != scope.OrgID {
		return nil, refuse(ErrForbiddenOrg, "admins start sessions in their own organization")
	}
	if agent.OrgID != "" && agent.OrgID != org {
		return nil, refuse(ErrForbiddenOrg, "the agent does not serve this organization")
	}
	if cmd.GetSessionID() == "" {
		cmd.SessionID = models.OptionalString("sess-" + uuid.NewString())
	}
	ns := str("namespace")
	if ns == "" || !scope.Service {
		ns = s.namespaces.NamespaceForOrg(ctx, org)
	}
	sess := &models.Session{
		ID: cmd.GetSessionID(), OrgID: org, UserID: user, Namespace: ns, Template: str("template"),
		State: models.SessionStatePending, Platform: agent.Platform, AgentID: agent.ID,
	}
	if res, ok := cmd.Payload["resources"].(map[string]any); ok {
		sess.CPU, _ = res["cpu"].(string)
		sess.Memory, _ = res["memory"].(string)
		if !models.ValidName(sess.CPU) || !models.ValidName(sess.Memory) {
			return nil, refuse(ErrInvalidPayload, "payload.resources cpu and memory must be UTF-8 text without control characters")
		}
	}
	return sess, nil
}

// GetCommand returns the command id as the scope may see it: the service token any, an
// organization's admin those of its organization; any other is ErrUnknownCommand.
func (s *Service) GetCommand(ctx context.Context, scope auth.Scope, id string) (models.AgentCommand, error) {
	unknown := refuse(ErrUnknownCommand, "no command with this id")
	if !models.ValidID(id) {
		return models.AgentCommand{}, unknown // no command has an id that is not one
	}
	cmd, err := s.db.GetCommand(ctx, id)
	switch {
	case errors.Is(err, db.ErrNotFound):
		return cmd, unknown
	case err != nil:
		return cmd, fmt.Errorf("read command %q: %w", id, err)
	case !scope.Service && !s.commandVisible(ctx, cmd, scope.OrgID):
		return models.AgentCommand{}, unknown // another organization's command does not exist for this caller
	}
	return cmd, nil
}

// commandVisible reports whether an organization's admin may read a command: exactly the
// organization whose session it acted on, recorded when it was submitted. For a command stored
// without that record: the organization of its session while the session exists, else the
// organization of its agent.
func (s *Service) commandVisible(ctx context.Context, cmd models.AgentCommand, org string) bool {
	if cmd.OrgID != "" {
		return cmd.OrgID == org
	}
	if cmd.GetSessionID() != "" {
		sess, err := s.db.GetSession(ctx, cmd.GetSessionID())
		if err == nil {
			return sess.OrgID == org
		}
		if !errors.Is(err, db.ErrNotFound) {
			return false
		}
	}
	agent, err := s.db.GetAgent(ctx, cmd.AgentID)
	return err == nil && agent.OrgID != "" && agent.OrgID == org
}
