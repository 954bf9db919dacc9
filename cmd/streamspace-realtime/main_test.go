package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, redistest.LeakOptions()...) }

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestTokenCommand(t *testing.T) {
	secret := strings.Repeat("s", 40)
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"token", "--user", "u1", "--org", "o1", "--role", "operator", "--ttl", "2h"},
		env(map[string]string{"STREAMSPACE_JWT_SECRET": secret}), &out, &errs)
	if err != nil {
		t.Fatalf("token: %v (%s)", err, errs.String())
	}
	v, err := auth.NewVerifier([]byte(secret), nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil || id.UserID != "u1" || id.OrgID != "o1" || id.Role != auth.RoleOperator {
		t.Fatalf("minted token verifies to %+v, %v", id, err)
	}
	if time.Until(id.ExpiresAt) < 119*time.Minute {
		t.Fatalf("expiry %v, want ~2h", id.ExpiresAt)
	}
	for _, args := range [][]string{
		{"token", "--org", "o1"},
		{"token", "--user", "u", "--org", "o", "--role", "root"},
		{"token", "--user", "u", "--org", "o", "--secret", "short"},
		{"nonsense"},
		{},
	} {
		if err := run(context.Background(), args, env(map[string]string{"STREAMSPACE_JWT_SECRET": secret}), &out, &errs); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
}

// startServeDev runs `serve --dev` on the database dbURL with the environment environ, and
// returns its banner once printed and the channel of serve's result.
func startServeDev(ctx context.Context, t *testing.T, dbURL string, environ map[string]string, out, errs *testkit.LockedBuffer) (string, <-chan error) {
	t.Helper()
	return startServeDevAt(ctx, t, "127.0.0.1:0", dbURL, environ, out, errs)
}

// startServeDevAt is startServeDev listening on addr.
func startServeDevAt(ctx context.Context, t *testing.T, addr, dbURL string, environ map[string]string, out, errs *testkit.LockedBuffer) (string, <-chan error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--addr", addr, "--database-url", dbURL}, env(environ), out, errs)
	}()
	printed := func() bool {
		select {
		case err := <-done:
			t.Fatalf("serve --dev returned %v before printing its banner; stderr:\n%s", err, errs.String())
		default:
		}
		return strings.Contains(out.String(), "auto-approval is")
	}
	if err := testkit.WaitFor(20*time.Second, printed); err != nil {
		t.Fatalf("serve --dev printed no banner; stdout:\n%s\nstderr:\n%s", out.String(), errs.String())
	}
	return out.String(), done
}

// TestServeDev runs the README's first command the way a newcomer would: `serve --dev` prints
// a token, a publish line, a start_session line for dev-agent and an agent line that work as
// printed, then stops cleanly.
func TestServeDev(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errs testkit.LockedBuffer
	banner, done := startServeDev(ctx, t, "sqlite://"+filepath.Join(t.TempDir(), "dev.db"), nil, &out, &errs)
	host := testkit.Submatch(t, banner, `ws://([^/]+)/api/v1/ws/sessions\?token=`)
	browserToken := testkit.Submatch(t, banner, `/api/v1/ws/sessions\?token=([A-Za-z0-9._-]+)`)
	serviceToken := testkit.Submatch(t, banner, `service token: (\S+)`)
	conn, _, err := gorilla.DefaultDialer.Dial("ws://"+host+"/api/v1/ws/sessions?token="+browserToken, nil)
	if err != nil {
		t.Fatalf("dial with the printed token: %v", err)
	}
	defer conn.Close()
	read := func() map[string]any {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var f map[string]any
		if err := conn.ReadJSON(&f); err != nil {
			t.Fatalf("read: %v", err)
		}
		return f
	}
	if f := read(); f["type"] != "connected" {
		t.Fatalf("first frame %v", f)
	}
	if f := read(); f["type"] != "sessions_update" || f["org_id"] != "default-org" {
		t.Fatalf("snapshot %v", f)
	}
	// The printed curl line's body, sent the same way.
	body := regexp.MustCompile(`-d '([^']+)'`).FindStringSubmatch(out.String())
	if body == nil {
		t.Fatalf("no publish line in:\n%s", out.String())
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+host+"/api/v1/events", strings.NewReader(body[1]))
	req.Header.Set("Authorization", "Bearer "+serviceToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var acc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&acc)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %d %v", resp.StatusCode, acc)
	}
	if f := read(); f["type"] != "session.created" || f["sessionId"] != "demo-1" {
		t.Fatalf("event %v", f)
	}

	// The printed watch line works too: it prints each frame on a line.
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watched testkit.LockedBuffer
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- run(watchCtx, []string{"watch", "--server", "ws://" + host, "--token", browserToken}, env(nil), &watched, &errs)
	}()
	waitFor := func(what string) {
		t.Helper()
		if err := testkit.WaitFor(10*time.Second, func() bool { return strings.Contains(watched.String(), what) }); err != nil {
			t.Fatalf("watch never printed %s; got:\n%s\nstderr:\n%s", what, watched.String(), errs.String())
		}
	}
	waitFor(`"type":"sessions_update"`)
	req, _ = http.NewRequest(http.MethodPost, "http://"+host+"/api/v1/events", strings.NewReader(body[1]))
	req.Header.Set("Authorization", "Bearer "+serviceToken)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(`"type":"session.created"`)
	stopWatch()
	if err := <-watchDone; err != nil {
		t.Fatalf("watch returned %v after interrupt", err)
	}
	if err := run(ctx, []string{"watch", "--server", "ws://" + host, "--token", "bad"}, env(nil), &watched, &errs); err == nil ||
		!strings.Contains(err.Error(), "401") {
		t.Fatalf("watch with a bad token: %v, want the 401 refusal", err)
	}
	testDevAgentStartsSession(ctx, t, banner, host, browserToken, serviceToken)
	testDevPodLogs(ctx, t, banner, host)
	testDevMetricsAndList(ctx, t, banner, host, browserToken)
	testAgentLineConnects(ctx, t, banner, host, serviceToken)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop after cancellation")
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for err == nil {
		_, _, err = conn.ReadMessage() // the second event, then the close
	}
	if !gorilla.IsCloseError(err, gorilla.CloseGoingAway) {
		t.Fatalf("after shutdown: %v, want close 1001", err)
	}
}

func TestServeRefusesIncompleteConfig(t *testing.T) {
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0"}, env(nil), &out, &errs)
	if err == nil || !strings.Contains(err.Error(), "STREAMSPACE_JWT_SECRET") || !strings.Contains(err.Error(), "STREAMSPACE_SERVICE_TOKEN") {
		t.Fatalf("serve without secrets: %v", err)
	}
	// A configured Redis that does not answer: refuse, never serve as a lone replica.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	_ = ln.Close()
	err = run(context.Background(), []string{"serve", "--dev", "--addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0", "--redis-url", "redis://" + deadAddr}, env(nil), &out, &errs)
	if err == nil || !strings.Contains(err.Error(), "STREAMSPACE_REDIS_URL") || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("serve with an unreachable redis: %v", err)
	}
}
