package server

import (
	"net/http"
)

// handleMetricsSocket serves GET /api/v1/ws/cluster (and its aliases): the organization's
// metrics for its operators and admins. Every refusal is an HTTP answer before the upgrade.
func (s *Server) handleMetricsSocket(w http.ResponseWriter, r *http.Request) {
	if !s.allowUpgrade(w, r) {
		return
	}
	id, ok := s.authenticateStaff(w, r, "organization metrics")
	if !ok {
		return
	}
	conn, release, ok := s.upgradeAdmitted(w, r, id)
	if !ok {
		return
	}
	if err := s.manager.ServeMetrics(r.Context(), conn, orgContext(id), release); err != nil {
		s.log.Warn("metrics socket closed at start", "org_id", id.OrgID, "user_id", id.UserID, "err", err)
	}
}
