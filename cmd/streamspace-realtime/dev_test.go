package main

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// regexpListening finds the address in serve's "listening" log line.
var regexpListening = regexp.MustCompile(`msg=listening addr=(\S+)`)

// testDevAgentStartsSession follows the banner's start_session line: the command is accepted,
// and a browser watching sees the session created, then running, driven by dev-agent.
func testDevAgentStartsSession(ctx context.Context, t *testing.T, banner, host, browserToken, serviceToken string) {
	t.Helper()
	if !strings.Contains(banner, "dev-agent (docker, shared, simulated) runs in this process and is connected") {
		t.Fatalf("the banner does not say dev-agent is connected:\n%s", banner)
	}
	url := testkit.Submatch(t, banner, `curl -sS -X POST (http://\S+/api/v1/admin/agents/dev-agent/command)`)
	body := testkit.Submatch(t, banner, `-d '(\{"action":"start_session"[^']*)'`)
	if url != "http://"+host+"/api/v1/admin/agents/dev-agent/command" {
		t.Fatalf("command URL %s, want one on %s", url, host)
	}
	watcher := dialWatcher(ctx, t, host, browserToken)
	defer watcher.Close()

	status, answer := postJSON(ctx, t, url, serviceToken, body)
	if status != http.StatusAccepted || answer["commandId"] == nil {
		t.Fatalf("start_session: %d %v, want 202 with a commandId", status, answer)
	}
	f := nextFrame(t, watcher, func(f map[string]any) bool { return f["sessionId"] == "demo-2" })
	if f["type"] != "session.created" {
		t.Fatalf("first frame of demo-2 %v, want session.created", f)
	}
	f = nextFrame(t, watcher, func(f map[string]any) bool { return f["sessionId"] == "demo-2" })
	data, _ := f["data"].(map[string]any)
	if f["type"] != "session.state.changed" || data["oldState"] != "pending" || data["newState"] != "running" || data["agentId"] != "dev-agent" {
		t.Fatalf("second frame of demo-2 %v, want session.state.changed pending → running by dev-agent", f)
	}
}

// testDevPodLogs follows the banner's pod-logs line once demo-2 runs: dev-agent relays the
// last 100 lines of its pod, then follows with new ones.
func testDevPodLogs(ctx context.Context, t *testing.T, banner, host string) {
	t.Helper()
	url := testkit.Submatch(t, banner, `its pod logs:\s+websocat '(ws://\S+)'`)
	if !strings.HasPrefix(url, "ws://"+host+"/api/v1/ws/logs/sim-demo-2?token=") {
		t.Fatalf("logs URL %s", url)
	}
	conn, _, err := gorilla.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range 101 { // the tail, then one followed line
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("after %d log frames: %v", i, err)
		}
		var f struct{ Type, Namespace, Pod, Line, Timestamp string }
		if err := json.Unmarshal(data, &f); err != nil || f.Type != "log" || f.Pod != "sim-demo-2" || f.Namespace == "" ||
			!strings.Contains(f.Line, "sim-demo-2") || f.Timestamp == "" {
			t.Fatalf("log frame %d: %s", i, data)
		}
	}
}

// testDevMetricsAndList follows the banner's metrics line once demo-2 runs: the organization's
// metrics count it and dev-agent; a new sessions socket lists demo-2 running on its pod.
func testDevMetricsAndList(ctx context.Context, t *testing.T, banner, host, browserToken string) {
	t.Helper()
	url := testkit.Submatch(t, banner, `org metrics:\s+websocat '(ws://\S+)'`)
	conn, _, err := gorilla.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer conn.Close()
	f := nextFrame(t, conn, func(f map[string]any) bool { return f["type"] == "metrics_update" })
	m, _ := f["metrics"].(map[string]any)
	sessions, _ := m["sessions"].(map[string]any)
	agents, _ := m["agents"].(map[string]any)
	if sessions["running"].(float64) < 1 || agents["online"].(float64) < 1 {
		t.Fatalf("metrics %v: want demo-2 running and dev-agent online", f)
	}
	watcher, _, err := gorilla.DefaultDialer.DialContext(ctx, "ws://"+host+"/api/v1/ws/sessions?token="+browserToken, nil)
	if err != nil {
		t.Fatalf("dial the sessions socket: %v", err)
	}
	defer watcher.Close()
	list := nextFrame(t, watcher, func(f map[string]any) bool { return f["type"] == "sessions_update" })
	for _, s := range list["sessions"].([]any) {
		s := s.(map[string]any)
		status, _ := s["status"].(map[string]any)
		if s["name"] == "demo-2" && s["state"] == "running" && status["podName"] == "sim-demo-2" && s["agent_id"] == "dev-agent" {
			return
		}
	}
	t.Fatalf("sessions_update %v lacks demo-2 running on sim-demo-2", list)
}

// testAgentLineConnects runs the banner's `agent` line in-process with the printed bootstrap
// key: with auto-approval the server issues the agent its own key, and it comes online.
func testAgentLineConnects(ctx context.Context, t *testing.T, banner, host, serviceToken string) {
	t.Helper()
	line := testkit.Submatch(t, banner, `go run ./cmd/streamspace-realtime (agent .+)`)
	if !strings.Contains(line, "--server http://"+host+" ") {
		t.Fatalf("agent line %q does not name the server %s", line, host)
	}
	agentCtx, stop := context.WithCancel(ctx)
	defer stop()
	var out, errs testkit.LockedBuffer
	done := make(chan error, 1)
	go func() { done <- run(agentCtx, strings.Fields(line), env(nil), &out, &errs) }()

	online := func() bool {
		status := agentStatuses(ctx, t, host, serviceToken)
		return status["my-agent"] == "online" && status["dev-agent"] == "online"
	}
	if err := testkit.WaitFor(5*time.Second, online); err != nil {
		t.Fatalf("my-agent never came online: %v\nagent stdout:\n%s\nagent stderr:\n%s",
			agentStatuses(ctx, t, host, serviceToken), out.String(), errs.String())
	}
	if !strings.Contains(out.String(), "Next time run with --key ") {
		t.Fatalf("the agent did not print the key the server issued it:\n%s", out.String())
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent returned %v after interrupt", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop")
	}
}

// TestServeDevRestart starts `serve --dev` twice on one database, the second time with
// auto-approval turned off: dev-agent, already stored, is given a fresh key and connects again,
// and the banner tells how to approve another agent by hand.
func TestServeDevRestart(t *testing.T) {
	dbURL := "sqlite://" + filepath.Join(t.TempDir(), "dev.db")
	for i, environ := range []map[string]string{nil, {"STREAMSPACE_AGENT_AUTO_APPROVE": "false"}} {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errs testkit.LockedBuffer
		banner, done := startServeDev(ctx, t, dbURL, environ, &out, &errs)
		if !strings.Contains(banner, "dev-agent (docker, shared, simulated) runs in this process and is connected") {
			t.Fatalf("run %d: dev-agent is not connected:\n%s\nstderr:\n%s", i, banner, errs.String())
		}
		wantApproval := "auto-approval is on"
		if environ != nil {
			wantApproval = "auto-approval is off: approve it with curl -sS -X POST http://"
		}
		if !strings.Contains(banner, wantApproval) {
			t.Fatalf("run %d: the banner does not say %q:\n%s", i, wantApproval, banner)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d: serve returned %v", i, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("run %d: serve did not stop after cancellation", i)
		}
		if !strings.Contains(errs.String(), `msg="agent stopped" component=dev-agent`) {
			t.Fatalf("run %d: dev-agent did not stop before serve returned; stderr:\n%s", i, errs.String())
		}
	}
}

// TestServeWithoutDevRunsNoAgent checks that plain `serve` neither generates a bootstrap key
// nor runs an agent.
func TestServeWithoutDevRunsNoAgent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errs testkit.LockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--database-url", "sqlite://" + filepath.Join(t.TempDir(), "p.db")},
			env(map[string]string{"STREAMSPACE_JWT_SECRET": strings.Repeat("s", 32), "STREAMSPACE_SERVICE_TOKEN": "svc"}), &out, &errs)
	}()
	addr := ""
	listening := func() bool {
		if m := regexpListening.FindStringSubmatch(errs.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	}
	if err := testkit.WaitFor(10*time.Second, listening); err != nil {
		t.Fatalf("serve never listened; stderr:\n%s", errs.String())
	}
	if status := agentStatuses(ctx, t, addr, "svc"); len(status) != 0 {
		t.Fatalf("agents %v, want none", status)
	}
	// Without a bootstrap key, no agent registers by itself.
	status, answer := postJSON(ctx, t, "http://"+addr+"/api/v1/agents/register", "", `{"agentId":"a1","platform":"docker"}`)
	if status != http.StatusUnauthorized {
		t.Fatalf("register without a key: %d %v, want 401", status, answer)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
	if out.String() != "" || strings.Contains(errs.String(), "dev-agent") {
		t.Fatalf("serve without --dev printed a banner or ran dev-agent:\n%s\n%s", out.String(), errs.String())
	}
}

// dialWatcher opens a sessions socket as a browser would and reads past its first two frames.
func dialWatcher(ctx context.Context, t *testing.T, host, token string) *gorilla.Conn {
	t.Helper()
	conn, _, err := gorilla.DefaultDialer.DialContext(ctx, "ws://"+host+"/api/v1/ws/sessions?token="+token, nil)
	if err != nil {
		t.Fatalf("dial the sessions socket: %v", err)
	}
	for _, want := range []string{"connected", "sessions_update"} {
		if f := nextFrame(t, conn, func(map[string]any) bool { return true }); f["type"] != want {
			conn.Close()
			t.Fatalf("frame %v, want %s", f, want)
		}
	}
	return conn
}

// nextFrame returns the next frame that keep accepts, within 5s.
func nextFrame(t *testing.T, conn *gorilla.Conn, keep func(map[string]any) bool) map[string]any {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var f map[string]any
		if err := conn.ReadJSON(&f); err != nil {
			t.Fatalf("read: %v", err)
		}
		if keep(f) {
			return f
		}
	}
}

// postJSON posts body with a bearer token (none when empty) and decodes the answer.
func postJSON(ctx context.Context, t *testing.T, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	var answer map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	return resp.StatusCode, answer
}

// agentStatuses lists the agents with the service token: status by agent id.
func agentStatuses(ctx context.Context, t *testing.T, host, serviceToken string) map[string]string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/api/v1/agents", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+serviceToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("list agents: %v", err)
	}
	defer resp.Body.Close()
	var list struct {
		Agents []struct{ AgentID, Status string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("list agents: %d %v", resp.StatusCode, err)
	}
	out := make(map[string]string, len(list.Agents))
	for _, a := range list.Agents {
		out[a.AgentID] = a.Status
	}
	return out
}
