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
	scope, ok := s.authorize(w, r, staffSocket("organization metrics"))
	if !ok {
		return
	}
	id := scope.Identity
	conn, release, ok := s.upgradeAdmitted(w, r, id)
	if !ok {
		return
	}
	if err := s.manager.ServeMetrics(r.Context(), conn, orgContext(id), release); err != nil {
		s.log.Warn("metrics socket closed at start", "org_id", id.OrgID, "user_id", id.UserID, "err", err)
	}
}
