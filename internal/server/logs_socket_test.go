package server

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// The logs routes: an operator of the organization gets the pod's lines relayed by the agent
// running its session, on every path form; every refusal is an HTTP answer before the upgrade
// (401 no token, 403 user or another namespace, 404 a pod the organization does not run, 400
// not an upgrade).
func TestLogsSocketRoute(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, dialect)
			code, raw := ts.call(t, "POST", "/api/v1/admin/agents", bearer(testService), registerBody("docker-1", "docker"))
			if code != http.StatusCreated {
				t.Fatalf("create agent: %d %s", code, raw)
			}
			key := decodeRegistration(t, raw).APIKey
			ctx := t.Context()
			for _, s := range []models.Session{
				{ID: "s1", OrgID: "acme", UserID: "u", Namespace: "streamspace", PodName: "pod-1", AgentID: "docker-1", State: models.SessionStateRunning},
				{ID: "s2", OrgID: "other", UserID: "v", Namespace: "streamspace", PodName: "pod-2", AgentID: "docker-1", State: models.SessionStateRunning},
			} {
				if err := ts.Database().CreateSession(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			agent, status, _ := ts.connectAgent(t, "docker-1", key)
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("agent refused: %d", status)
			}
			// The upgrade answers before the hub has registered the connection.
			testkit.Eventually(t, 5*time.Second, "the agent's registration", func() bool { return ts.Agents().IsAgentConnected("docker-1") })
			as := func(role auth.Role) http.Header {
				return http.Header{"Authorization": {"Bearer " + mint(t, "x", "acme", role, time.Hour)}}
			}
			for _, path := range []string{"/api/v1/ws/logs/streamspace/pod-1", "/api/v1/ws/logs/pod-1", "/ws/logs/streamspace/pod-1", "/ws/logs/pod-1"} {
				browser, code, _ := ts.dialWS(t, path, as(auth.RoleOperator))
				if code != http.StatusSwitchingProtocols {
					t.Fatalf("%s: %d", path, code)
				}
				var req models.LogsRequest
				for {
					f := readWS(t, agent)
					if f.str("type") == models.MessageTypeLogs {
						b, _ := json.Marshal(f["payload"])
						_ = json.Unmarshal(b, &req)
						break
					}
				}
				if req.Pod != "pod-1" || req.Namespace != "streamspace" || req.SessionID != "s1" || req.TailLines != 100 || !req.Follow {
					t.Fatalf("%s: logs request %+v", path, req)
				}
				sendAgent(t, agent, models.MessageTypeLog, map[string]any{"requestId": req.RequestID, "line": "hello", "timestamp": "2026-11-26T10:00:00Z"})
				if f := readWS(t, browser); f.str("type") != "log" || f.str("line") != "hello" || f.str("pod") != "pod-1" ||
					f.str("namespace") != "streamspace" || f.str("timestamp") != "2026-11-26T10:00:00Z" {
					t.Fatalf("%s: frame %v", path, f)
				}
				sendAgent(t, agent, models.MessageTypeLogEnd, map[string]any{"requestId": req.RequestID})
				if code := closeCode(t, browser, 5*time.Second); code != gorilla.CloseNormalClosure {
					t.Fatalf("%s: close %d after log_end, want 1000", path, code)
				}
			}
			for _, tc := range []struct {
				path   string
				header http.Header
				status int
				code   string
			}{
				{"/api/v1/ws/logs/pod-1", nil, http.StatusUnauthorized, ""},
				{"/api/v1/ws/logs/pod-1", as(auth.RoleUser), http.StatusForbidden, "forbidden_role"},
				{"/api/v1/ws/logs/other-ns/pod-1", as(auth.RoleAdmin), http.StatusForbidden, "forbidden_namespace"},
				{"/api/v1/ws/logs/pod-2", as(auth.RoleAdmin), http.StatusNotFound, "pod_not_found"},
				{"/api/v1/ws/logs/streamspace/missing", as(auth.RoleAdmin), http.StatusNotFound, "pod_not_found"},
			} {
				if _, status, errCode := ts.dialWS(t, tc.path, tc.header); status != tc.status || (tc.code != "" && errCode != tc.code) {
					t.Errorf("%s: %d %s, want %d %s", tc.path, status, errCode, tc.status, tc.code)
				}
			}
			if code, raw := ts.call(t, "GET", "/api/v1/ws/logs/pod-1", as(auth.RoleAdmin), ""); code != http.StatusBadRequest {
				t.Errorf("plain GET: %d %s, want 400", code, raw)
			}
		})
	}
}
