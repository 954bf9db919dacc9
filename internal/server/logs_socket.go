package server

import (
	"errors"
	"net/http"

	"github.com/streamspace/streamspace-realtime/websocket"
)

// handleLogsSocket serves GET /api/v1/ws/logs/{namespace}/{pod} and /api/v1/ws/logs/{pod}
// (and the /ws/logs aliases): one pod's log lines for the operators and admins of the
// organization whose session runs it. Every refusal is an HTTP answer before the upgrade.
func (s *Server) handleLogsSocket(w http.ResponseWriter, r *http.Request) {
	if !s.allowUpgrade(w, r) {
		return
	}
	scope, ok := s.authorize(w, r, staffSocket("pod logs"))
	if !ok {
		return
	}
	id := scope.Identity
	org := orgContext(id)
	namespace, pod := r.PathValue("namespace"), r.PathValue("pod")
	target, err := s.manager.ResolveLogs(r.Context(), org, namespace, pod)
	switch {
	case errors.Is(err, websocket.ErrNamespaceForbidden):
		s.fail(w, r, http.StatusForbidden, "forbidden_namespace", "the namespace is not your organization's")
		return
	case errors.Is(err, websocket.ErrPodNotFound):
		s.fail(w, r, http.StatusNotFound, "pod_not_found", "no session of your organization runs this pod")
		return
	case err != nil:
		s.log.Error("resolve logs", "org_id", id.OrgID, "namespace", namespace, "pod", pod, "err", err)
		s.fail(w, r, http.StatusServiceUnavailable, "unavailable", "cannot look up the pod now")
		return
	}
	conn, release, ok := s.upgradeAdmitted(w, r, id)
	if !ok {
		return
	}
	target.OnClose = release
	if err := s.manager.ServeLogs(conn, org, target); err != nil {
		s.log.Warn("logs socket closed at start", "org_id", id.OrgID, "pod", pod, "err", err)
	}
}
