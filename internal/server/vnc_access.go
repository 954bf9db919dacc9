package server

import (
	"errors"
	"net/http"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// viewerAccess is the answer of GET /api/v1/vnc/{sessionId}/access.
type viewerAccess struct {
	SessionID string `json:"sessionId"`
	State     string `json:"state"`
	ViewOnly  bool   `json:"viewOnly"`
}

// handleVNCAccess serves GET /api/v1/vnc/{sessionId}/access (PROTOCOL.md 6.1): what the caller
// may do with the session's desktop, decided exactly as the viewer socket decides it, so that a
// page can set up its viewer (view-only or not) before connecting. Its refusals are the viewer
// socket's first three steps.
func (s *Server) handleVNCAccess(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.authorize(w, r, browserSocket)
	if !ok {
		return
	}
	grant, ok := s.authorizeViewer(w, r, scope)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, viewerAccess{SessionID: grant.Session.ID, State: grant.Session.State, ViewOnly: grant.ViewOnly})
}

// authorizeViewer checks the path's session id and the caller's access to the session,
// answering a refusal itself (400, 404 alike for unknown and another organization's, 403, 503).
func (s *Server) authorizeViewer(w http.ResponseWriter, r *http.Request, scope auth.Scope) (websocket.ViewerGrant, bool) {
	id := scope.Identity
	sessionID := r.PathValue("sessionId")
	if !models.ValidID(sessionID) {
		s.fail(w, r, http.StatusBadRequest, "invalid_session_id", "the session id must be 1-256 bytes of UTF-8 text without control characters")
		return websocket.ViewerGrant{}, false
	}
	grant, err := s.manager.AuthorizeViewer(r.Context(), orgContext(id), sessionID)
	switch {
	case errors.Is(err, websocket.ErrSessionNotVisible):
		s.fail(w, r, http.StatusNotFound, "session_not_found", "no such session")
	case errors.Is(err, websocket.ErrSessionForbidden):
		s.fail(w, r, http.StatusForbidden, "forbidden_session", "this session is neither yours nor shared with you")
	case err != nil:
		s.log.Error("authorize viewer", "org_id", id.OrgID, "user_id", id.UserID, "session_id", sessionID, "err", err)
		s.fail(w, r, http.StatusServiceUnavailable, "unavailable", "cannot check the session now")
	default:
		return grant, true
	}
	return websocket.ViewerGrant{}, false
}
