package websocket

import (
	"context"
	"errors"
	"fmt"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/k8s/podlog"
)

// The Manager's side of pod logs: who may read which pod's logs. Streaming them is PodLogs'
// (logs_socket.go).

// Reasons a logs socket is refused before it opens.
var (
	// ErrLogsForbidden: only operators and admins read pod logs.
	ErrLogsForbidden = errors.New("websocket: pod logs are for operators and admins")
	// ErrNamespaceForbidden: the namespace is not the caller's organization's.
	ErrNamespaceForbidden = errors.New("websocket: namespace is not the organization's")
	// ErrPodNotFound: no session of the caller's organization runs the pod, or the pod does
	// not exist. It is podlog.ErrPodNotFound, which k8s.ErrPodNotFound is too, so one check
	// covers a pod the sources do not name and one a PodLogSource does not find.
	ErrPodNotFound = podlog.ErrPodNotFound
)

// HandleLogsWebSocket serves a logs connection without an organization.
//
// Deprecated: the caller is placed in the configured default organization as an operator,
// with namespace as its namespace; the server never uses it. Use HandleLogsWebSocketWithOrg.
func (m *Manager) HandleLogsWebSocket(conn *websocket.Conn, namespace, podName string) {
	m.handleLogs(conn, namespace, podName, &OrgContext{OrgID: m.cfg.DefaultOrg, K8sNamespace: namespace, Role: "operator"})
}

// HandleLogsWebSocketWithOrg serves an operator's or admin's logs socket for a pod of the
// organization's namespace: the last 100 lines, then new lines as they come, one `log` frame
// each, until the browser leaves or the source ends. A caller that may not read the pod's logs
// is closed with 1008; a source that fails gets `log_error` and 1011.
func (m *Manager) HandleLogsWebSocketWithOrg(conn *websocket.Conn, podName string, orgCtx *OrgContext) {
	m.handleLogs(conn, "", podName, orgCtx)
}

func (m *Manager) handleLogs(conn *websocket.Conn, namespace, podName string, orgCtx *OrgContext) {
	ctx, cancel := context.WithTimeout(m.ctx, defaultStoreCallTimeout)
	defer cancel()
	target, err := m.ResolveLogs(ctx, orgCtx, namespace, podName)
	if err != nil {
		reason, code := "pod not found", websocket.ClosePolicyViolation
		switch {
		case errors.Is(err, ErrLogsForbidden):
			reason = "operators and admins only"
		case errors.Is(err, ErrNamespaceForbidden):
			reason = "namespace is not your organization's"
		case !errors.Is(err, ErrPodNotFound):
			reason, code = "cannot look up the pod now", websocket.CloseInternalServerErr
		}
		closeConn(conn, m.cfg.WriteWait, code, reason)
		m.cfg.Logger.Warn("logs socket refused", "pod", podName, "err", err)
		return
	}
	if err := m.ServeLogs(conn, orgCtx, target); err != nil {
		m.cfg.Logger.Warn("logs socket refused", "pod", podName, "err", err)
	}
}

// ResolveLogs checks that the caller may read a pod's logs and finds the session that runs
// it: ErrLogsForbidden for a role other than operator or admin, ErrNamespaceForbidden for a
// namespace other than the organization's (an empty namespace means the organization's), and
// ErrPodNotFound for a pod no session of the organization runs. Other errors mean the sources
// could not answer.
func (m *Manager) ResolveLogs(ctx context.Context, orgCtx *OrgContext, namespace, podName string) (LogTarget, error) {
	if orgCtx == nil || orgCtx.OrgID == "" {
		return LogTarget{}, fmt.Errorf("logs of pod %q: organization required: %w", podName, ErrLogsForbidden)
	}
	org := *orgCtx
	if !org.seesWholeOrg() {
		return LogTarget{}, fmt.Errorf("logs of pod %q, role %q: %w", podName, org.Role, ErrLogsForbidden)
	}
	ns := m.namespaceFor(ctx, &org)
	if namespace != "" && namespace != ns {
		return LogTarget{}, fmt.Errorf("logs of %s/%s for org %q: %w", namespace, podName, org.OrgID, ErrNamespaceForbidden)
	}
	s, err := m.sessionByPod(ctx, org.OrgID, ns, podName)
	if err != nil {
		return LogTarget{}, err
	}
	return LogTarget{Namespace: ns, Pod: podName, Session: s}, nil
}

// ServeLogs streams a resolved pod's logs to an upgraded connection from the Manager's own
// goroutines (those of its PodLogs), and returns at once. The Manager's PodLogSource (its
// Kubernetes client, or a SessionSource given to NewManagerWithSources that implements
// PodLogSource) is the source when it has one, else the agent running the session
// (Config.Agents, else Config.Logs). The source is stopped as soon as the browser leaves, and the socket is
// closed with 1001 at shutdown.
func (m *Manager) ServeLogs(conn *websocket.Conn, orgCtx *OrgContext, target LogTarget) error {
	return m.logs.serveSocket(&logSocket{
		conn: conn, target: target, cfg: m.cfg, metrics: m.metrics, pods: m.podLogs, agents: m.logRelay(),
	}, orgCtx)
}

// logRelay is what the Manager asks for the logs agents relay: Config.Agents, else the
// Config.Logs it shares with the AgentHub; nil when neither is set (such logs are unavailable).
func (m *Manager) logRelay() AgentLogRelay {
	switch {
	case m.cfg.Agents != nil:
		return m.cfg.Agents
	case m.cfg.Logs != nil:
		return m.cfg.Logs
	}
	return nil
}
