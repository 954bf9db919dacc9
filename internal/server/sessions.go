package server

import (
	"errors"
	"net/http"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// orgContext is the only way an OrgContext is made: from verified claims.
func orgContext(id auth.Identity) *websocket.OrgContext {
	return &websocket.OrgContext{
		OrgID:        id.OrgID,
		K8sNamespace: id.K8sNamespace,
		UserID:       id.UserID,
		Role:         string(id.Role),
		ExpiresAt:    id.ExpiresAt,
	}
}

// handleSessionsSocket serves GET /api/v1/ws/sessions[?session_id=S][&since=E:N].
// Every refusal is an HTTP answer before the upgrade.
func (s *Server) handleSessionsSocket(w http.ResponseWriter, r *http.Request) {
	if !s.allowUpgrade(w, r) {
		return
	}
	scope, ok := s.authorize(w, r, browserSocket)
	if !ok {
		return
	}
	id := scope.Identity
	q := r.URL.Query()
	since := q.Get("since")
	if since != "" {
		if _, err := websocket.ParseSince(since); err != nil {
			s.fail(w, r, http.StatusBadRequest, "invalid_since", err.Error())
			return
		}
	}
	org := orgContext(id)
	sessionID := q.Get("session_id")
	if sessionID != "" && !models.ValidID(sessionID) {
		s.fail(w, r, http.StatusBadRequest, "invalid_session_id", "session_id must be 1-256 bytes of UTF-8 text without control characters")
		return
	}
	if sessionID != "" {
		err := s.manager.AuthorizeSession(r.Context(), org, sessionID)
		switch {
		case errors.Is(err, websocket.ErrSessionNotVisible):
			s.fail(w, r, http.StatusForbidden, "forbidden_session", "session not found in your organization, or not yours")
			return
		case err != nil:
			s.log.Error("authorize session", "org_id", id.OrgID, "user_id", id.UserID, "session_id", sessionID, "err", err)
			s.fail(w, r, http.StatusServiceUnavailable, "unavailable", "cannot check the session now")
			return
		}
	}
	conn, release, ok := s.upgradeAdmitted(w, r, id)
	if !ok {
		return
	}
	req := websocket.SessionsRequest{SessionID: sessionID, ClientIP: clientIP(r), UserAgent: r.UserAgent(), Since: since, OnClose: release}
	if err := s.manager.ServeSessions(r.Context(), conn, org, req); err != nil {
		s.log.Warn("sessions socket closed at start", "org_id", id.OrgID, "user_id", id.UserID, "err", err)
	}
}

// upgradeBrowser upgrades a browser's request, answering a plain GET with 400; false means
// the request was answered.
func (s *Server) upgradeBrowser(w http.ResponseWriter, r *http.Request) (*gorilla.Conn, bool) {
	return s.upgradeWith(s.upgrader, w, r)
}

// upgradeWith upgrades r with u, answering a plain GET with 400 upgrade_required.
func (s *Server) upgradeWith(u *gorilla.Upgrader, w http.ResponseWriter, r *http.Request) (*gorilla.Conn, bool) {
	if !gorilla.IsWebSocketUpgrade(r) {
		s.fail(w, r, http.StatusBadRequest, "upgrade_required", "this endpoint speaks WebSocket")
		return nil, false
	}
	conn, err := u.Upgrade(w, r, nil)
	if err != nil {
		return nil, false // the upgrader answered and the failure is the client's
	}
	return conn, true
}

// upgradeAdmitted reserves one of the caller's browser connections (429 when a limit is
// reached), then upgrades; the release it returns gives the reservation back, and is called
// here when the upgrade fails.
func (s *Server) upgradeAdmitted(w http.ResponseWriter, r *http.Request, id auth.Identity) (*gorilla.Conn, func(), bool) {
	release, ok := s.admitBrowser(w, r, id.OrgID, id.UserID)
	if !ok {
		return nil, nil, false
	}
	conn, ok := s.upgradeBrowser(w, r)
	if !ok {
		release()
		return nil, nil, false
	}
	return conn, release, true
}
