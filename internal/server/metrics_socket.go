package server

import (
	"net/http"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

// handleMetricsSocket serves GET /api/v1/ws/cluster (and its aliases): the organization's
// metrics for its operators and admins. Every refusal is an HTTP answer before the upgrade.
func (s *Server) handleMetricsSocket(w http.ResponseWriter, r *http.Request) {
	id, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if id.Role != auth.RoleOperator && id.Role != auth.RoleAdmin {
		s.fail(w, r, http.StatusForbidden, "forbidden_role", "organization metrics are for operators and admins")
		return
	}
	if !gorilla.IsWebSocketUpgrade(r) {
		s.fail(w, r, http.StatusBadRequest, "upgrade_required", "this endpoint speaks WebSocket")
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered and the failure is the client's
	}
	if err := s.manager.ServeMetrics(r.Context(), conn, orgContext(id)); err != nil {
		s.log.Warn("metrics socket closed at start", "org_id", id.OrgID, "user_id", id.UserID, "err", err)
	}
}
