package server

import (
	"net/http"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/novnc"
)

// SetDevToken gives the dashboard the token `serve --dev` printed (web.Handler.SetDevToken).
func (s *Server) SetDevToken(token string) { s.dashboard.SetDevToken(token) }

// handleDashboardFile serves the dashboard's files below /ui/; any other path there is 404.
func (s *Server) handleDashboardFile(w http.ResponseWriter, r *http.Request) {
	if !s.dashboard.ServeFile(w, r) {
		s.fail(w, r, http.StatusNotFound, "not_found", "no such file")
	}
}

// meAnswer is the body of GET /api/v1/me.
type meAnswer struct {
	UserID       string    `json:"userId"`
	Username     string    `json:"username,omitempty"`
	OrgID        string    `json:"orgId"`
	Role         auth.Role `json:"role"`
	K8sNamespace string    `json:"k8sNamespace,omitempty"`
	ExpiresAt    time.Time `json:"expiresAt"`
}

// handleMe serves GET /api/v1/me: who a browser token says its holder is, or the 401 a
// WebSocket upgrade with it would get. Browsers cannot read why an upgrade was refused, so
// the JavaScript client asks here to tell "token expired" from "server unreachable".
func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) {
	token, ok := auth.BearerToken(r)
	if !ok {
		s.fail(w, r, http.StatusUnauthorized, "missing_token", "Authorization: Bearer <jwt> required")
		return
	}
	id, err := s.verifier.Verify(token)
	if err != nil {
		s.fail(w, r, http.StatusUnauthorized, auth.ErrorCode(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, meAnswer{
		UserID: id.UserID, Username: id.Username, OrgID: id.OrgID, Role: id.Role,
		K8sNamespace: id.K8sNamespace, ExpiresAt: id.ExpiresAt.UTC(),
	})
}

// novncHandler serves dir at /novnc/, or is nil for no directory.
func novncHandler(dir string) http.Handler {
	if dir == "" {
		return nil
	}
	return novnc.Handler(dir)
}

// handleNoVNC serves noVNC's files as websockify's --web does, or says how to get noVNC.
func (s *Server) handleNoVNC(w http.ResponseWriter, r *http.Request) {
	if s.novnc == nil {
		s.fail(w, r, http.StatusNotFound, "novnc_not_installed", novnc.ErrNotFound.Error())
		return
	}
	s.novnc.ServeHTTP(w, r)
}
