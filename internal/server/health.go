package server

import (
	"context"
	"net/http"
	"time"
)

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz reports ready when the database (and Redis, with several
// replicas) answers and the server is not shutting down, so a load balancer
// stops sending before the drain and while this replica is cut off from the
// cluster.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.fail(w, r, http.StatusServiceUnavailable, "not_ready", "shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.db.Ping(ctx); err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, "not_ready", "database unreachable")
		return
	}
	if s.cluster != nil {
		if err := s.cluster.ready(ctx); err != nil {
			s.fail(w, r, http.StatusServiceUnavailable, "not_ready", "redis unreachable or subscriptions not restored")
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
