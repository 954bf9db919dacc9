package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/streamspace/streamspace-realtime/internal/novnc"
	"github.com/streamspace/streamspace-realtime/web"
)

// Handler returns the server's routes. Every error answer is JSON
// {"error","message"} (PROTOCOL.md 1), including 404 and 405.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(method, path string, h http.HandlerFunc) {
		mux.Handle(method+" "+path, s.instrument(path, h))
		mux.Handle(path, s.instrument(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", method)
			s.fail(w, r, http.StatusMethodNotAllowed, "method_not_allowed", "use "+method)
		}))
	}
	route(http.MethodGet, "/api/v1/ws/sessions", s.handleSessionsSocket)
	route(http.MethodGet, "/ws/sessions", s.handleSessionsSocket)
	route(http.MethodGet, "/api/v1/vnc/{sessionId}", s.handleVNCSocket)
	route(http.MethodGet, "/api/v1/vnc/{sessionId}/access", s.handleVNCAccess)
	for _, path := range []string{"/api/v1/ws/cluster", "/api/v1/ws/metrics", "/ws/metrics"} {
		route(http.MethodGet, path, s.handleMetricsSocket)
	}
	for _, prefix := range []string{"/api/v1/ws/logs/", "/ws/logs/"} {
		route(http.MethodGet, prefix+"{namespace}/{pod}", s.handleLogsSocket)
		route(http.MethodGet, prefix+"{pod}", s.handleLogsSocket)
	}
	route(http.MethodPost, "/api/v1/events", s.handlePublishEvent)
	route(http.MethodPost, "/api/v1/orgs/{org}/broadcast", s.handleOrgBroadcast)
	route(http.MethodPost, "/api/v1/agents/register", s.handleAgentRegister)
	route(http.MethodGet, "/api/v1/agents/connect", s.handleAgentConnect)
	route(http.MethodGet, "/api/v1/agents", s.handleAgentList)
	route(http.MethodPost, "/api/v1/admin/agents", s.handleAdminCreateAgent)
	route(http.MethodPost, "/api/v1/admin/agents/{agent_id}/approve", s.handleAdminApproveAgent)
	route(http.MethodPost, "/api/v1/admin/agents/{agent_id}/reject", s.handleAdminRejectAgent)
	route(http.MethodPost, "/api/v1/admin/agents/{agent_id}/command", s.handleAdminCommand)
	route(http.MethodGet, "/api/v1/admin/commands/{command_id}", s.handleAdminGetCommand)
	route(http.MethodGet, "/api/v1/me", s.handleMe)
	route(http.MethodGet, "/{$}", s.dashboard.ServePage)
	route(http.MethodGet, web.Prefix, s.handleDashboardFile)
	route(http.MethodGet, novnc.Prefix, s.handleNoVNC)
	route(http.MethodGet, "/healthz", s.handleHealthz)
	route(http.MethodGet, "/readyz", s.handleReadyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.Handle("/", s.instrument("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "not_found", "no such endpoint")
	}))
	return s.recoverPanics(mux)
}
