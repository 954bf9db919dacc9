package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// vncFixture is a test server with sessions of two organizations whose desktops are real
// agents in front of a real TCP peer: s1 of alice in org-a on agent a1, an SDK agent (tunnel/1)
// whose tunnels reach an echo server (shared with "watch" to view and "ctl" to control); s-k of
// alice on k1, a fake StreamSpace k8s-agent (one tunnel per session, announced with
// announce); s-idle (stopped), s-noagent (running without an agent), s-off (its agent never
// connected), s-b of org-b.
type vncFixture struct {
	*testServer
	echo   *echoServer
	legacy *vnctest.LegacyAgent
}

func vncServer(t *testing.T, mutate ...func(*Config)) *vncFixture {
	t.Helper()
	// The server's shutdown waits for its viewers, agents and their last database writes: a
	// loaded machine gets more than the usual 5 s, as a safety net only.
	mutate = append([]func(*Config){func(c *Config) { c.ShutdownTimeout = 30 * time.Second }}, mutate...)
	f := &vncFixture{testServer: startServer(t, "sqlite", mutate...), echo: startEcho(t)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	old := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	for _, s := range []models.Session{
		{ID: "s1", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "a1", LastActivity: old},
		{ID: "s-k", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "k1"},
		{ID: "s-idle", OrgID: "org-a", UserID: "alice", State: models.SessionStateStopped, AgentID: "a1"},
		{ID: "s-noagent", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning},
		{ID: "s-off", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "gone"},
		{ID: "s-b", OrgID: "org-b", UserID: "bob", State: models.SessionStateRunning, AgentID: "b1"},
	} {
		if err := f.Database().CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for user, perms := range map[string][]string{"watch": {"view"}, "ctl": {"view", "control"}} {
		if err := f.Database().ShareSession(ctx, "s1", user, perms); err != nil {
			t.Fatal(err)
		}
	}
	startSDKAgent(t, f.testServer, "a1", f.echo.addr, "s1")
	var err error
	f.legacy, err = vnctest.DialLegacyAgent(ctx, vnctest.LegacyAgentConfig{
		ServerURL: f.base, AgentID: "k1", APIKey: createAgent(t, f.testServer, "k1"),
		VNCAddr: func(string) string { return f.echo.addr },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.legacy.Close)
	testkit.Eventually(t, 10*time.Second, "the agents connect", func() bool {
		return f.agents.IsAgentConnected("a1") && f.agents.IsAgentConnected("k1")
	})
	return f
}

// announce has k1 open the tunnel of s-k, as StreamSpace's agent does when a session starts.
func (f *vncFixture) announce(t *testing.T) {
	t.Helper()
	(&streamingFixture{ts: f.testServer, legacy: f.legacy}).announce(t, "s-k")
}

// echoServer is a TCP server that sends back what it reads: the far end of the tunnels, where a
// VNC server would be. It counts the connections open.
type echoServer struct {
	addr string
	open atomic.Int32
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	e := &echoServer{}
	e.addr = vnctest.ServeTCP(t, func(c net.Conn) {
		e.open.Add(1)
		defer e.open.Add(-1)
		vnctest.Echo(c)
	})
	return e
}

func vncPath(session, token string) string {
	return "/api/v1/vnc/" + session + "?token=" + token
}

// Every refusal of PROTOCOL.md 6.1 is an HTTP answer before the upgrade, with its code, from
// the real AgentHub and agents.
func TestVNCRefusals(t *testing.T) {
	t.Parallel()
	ts := vncServer(t, func(c *Config) { c.VNCMaxPerUser = 1 })
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	refused := func(name, path string, header http.Header, status int, code string) {
		t.Helper()
		conn, got, gotCode := ts.dialWS(t, path, header)
		if conn != nil {
			t.Errorf("%s: upgraded", name)
			_ = conn.Close()
			return
		}
		if got != status || (code != "" && gotCode != code) {
			t.Errorf("%s: %d %s, want %d %s", name, got, gotCode, status, code)
		}
	}
	refused("no token", "/api/v1/vnc/s1", nil, 401, "")
	refused("bad token", vncPath("s1", "nope"), nil, 401, "")
	refused("origin", vncPath("s1", alice), http.Header{"Origin": {"https://evil.example"}}, 403, "forbidden_origin")
	refused("invalid id", vncPath("bad%01id", alice), nil, 400, "invalid_session_id")
	refused("unknown session", vncPath("nope", alice), nil, 404, "session_not_found")
	refused("other org's session", vncPath("s-b", mint(t, "boss", "org-a", auth.RoleAdmin, time.Hour)), nil, 404, "session_not_found")
	refused("same org, not shared", vncPath("s1", mint(t, "mallory", "org-a", auth.RoleUser, time.Hour)), nil, 403, "forbidden_session")
	refused("not running", vncPath("s-idle", alice), nil, 409, "session_not_running")
	refused("no agent", vncPath("s-noagent", alice), nil, 503, "agent_offline")
	refused("agent offline", vncPath("s-off", alice), nil, 503, "agent_offline")
	refused("tunnel not ready", vncPath("s-k", alice), nil, 503, "tunnel_not_ready")
	_, resp, err := gorilla.DefaultDialer.Dial(ts.wsURL(vncPath("s-k", alice)), nil)
	if err == nil || resp == nil || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("tunnel_not_ready: err %v, Retry-After missing", err)
	}
	_ = resp.Body.Close()

	// A plain GET is 400 upgrade_required, and gives back the one tunnel it reserved: the
	// viewer after it is let in.
	ts.announce(t)
	resp, err = http.Get(ts.base + vncPath("s-k", alice))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d, want 400", resp.StatusCode)
	}
	viewer, status, code := ts.dialWS(t, vncPath("s-k", alice), nil)
	if viewer == nil {
		t.Fatalf("viewer after a plain GET: %d %s", status, code)
	}
	refused("viewer busy", vncPath("s-k", mint(t, "ops", "org-a", auth.RoleOperator, time.Hour)), nil, 409, "viewer_busy")
	refused("too many tunnels", vncPath("s1", alice), nil, 429, "too_many_tunnels")
}

// agent_elsewhere: the hub has no tunnel to give because the agent's socket is on another
// replica, which IsAgentConnected (cluster-wide) still sees.
func TestVNCRefusalAgentElsewhere(t *testing.T) {
	t.Parallel()
	ts := vncServer(t)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/api/v1/vnc/s1", nil)
	ts.refuseTunnel(rec, req, models.Session{ID: "s1", AgentID: "a1"}, websocket.ErrAgentOffline)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"agent_elsewhere"`) {
		t.Fatalf("%d %s, want 503 agent_elsewhere", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	ts.refuseTunnel(rec, req, models.Session{ID: "s1", AgentID: "a1"}, errors.New("store down"))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"unavailable"`) {
		t.Fatalf("%d %s, want 503 unavailable", rec.Code, rec.Body)
	}
}

// Viewer sockets count toward the connection limits of 2.2 (429 too_many_connections), and a
// refused viewer gives its tunnel back; the upgrade rate applies too.
func TestVNCConnectionLimits(t *testing.T) {
	t.Parallel()
	ts := vncServer(t, func(c *Config) { c.MaxConnectionsPerUser = 1 })
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	ts.announce(t)
	first, status, code := ts.dialWS(t, vncPath("s1", alice), nil)
	if first == nil {
		t.Fatalf("first viewer refused: %d %s", status, code)
	}
	if _, status, code := ts.dialWS(t, "/api/v1/ws/sessions?token="+alice, nil); status != 429 || code != "too_many_connections" {
		t.Fatalf("sessions socket beside a viewer: %d %s, want 429 too_many_connections", status, code)
	}
	if _, status, code := ts.dialWS(t, vncPath("s-k", alice), nil); status != 429 || code != "too_many_connections" {
		t.Fatalf("second viewer: %d %s, want 429 too_many_connections", status, code)
	}
	_ = first.Close()
	// The refused viewer gave back s-k's one tunnel: once the first viewer's place is free,
	// s-k takes a viewer.
	testkit.Eventually(t, 10*time.Second, "a viewer of s-k is let in", func() bool {
		c, _, _ := ts.dialWS(t, vncPath("s-k", alice), nil)
		return c != nil
	})

	// The upgrade rate is checked first (agents' upgrades count too, so this server has none).
	rated := startServer(t, "sqlite", func(c *Config) { c.UpgradeRate, c.UpgradeBurst = 0.001, 1 })
	if _, status, code := rated.dialWS(t, vncPath("s1", alice), nil); status != 404 {
		t.Fatalf("first viewer: %d %s, want 404 (no such session there)", status, code)
	}
	if _, status, code := rated.dialWS(t, vncPath("s1", alice), nil); status != 429 || code != "too_many_upgrades" {
		t.Fatalf("over the upgrade rate: %d %s, want 429 too_many_upgrades", status, code)
	}
}

// noVNC offers "binary" and gets it; a browser offering nothing is served all the same. Bytes
// go through the agent to the far end and back.
func TestVNCSubprotocolAndRelay(t *testing.T) {
	t.Parallel()
	ts := vncServer(t)
	for _, c := range []struct {
		user  string
		offer []string
		want  string
	}{
		{"alice", []string{"binary"}, "binary"},
		{"ctl", nil, ""},
		{"watch", []string{"base64", "binary"}, "binary"},
	} {
		d := gorilla.Dialer{Subprotocols: c.offer, HandshakeTimeout: 10 * time.Second}
		conn, resp, err := d.Dial(ts.wsURL(vncPath("s1", mint(t, c.user, "org-a", auth.RoleUser, time.Hour))), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.user, err)
		}
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != c.want || conn.Subprotocol() != c.want {
			t.Errorf("%s offering %q: subprotocol %q, want %q", c.user, c.offer, got, c.want)
		}
		if err := conn.WriteMessage(gorilla.BinaryMessage, []byte("RFB 003.008\n")); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if typ, p, err := conn.ReadMessage(); err != nil || typ != gorilla.BinaryMessage || string(p) != "RFB 003.008\n" {
			t.Fatalf("%s: relay gave %d %q %v", c.user, typ, p, err)
		}
		_ = conn.Close()
	}
}

// An open viewer is a connection to its session: announced to the organization with viewer
// "vnc", its session's activity refreshed; closing it announces session.disconnected and ends
// its tunnel to the far end.
func TestVNCViewerPresenceAndActivity(t *testing.T) {
	t.Parallel()
	ts := vncServer(t)
	ctx := context.Background()
	ops, status, code := ts.dialWS(t, "/api/v1/ws/sessions?token="+mint(t, "ops", "org-a", auth.RoleAdmin, time.Hour), nil)
	if ops == nil {
		t.Fatalf("ops socket: %d %s", status, code)
	}
	readFrameOf(t, ops, "sessions_update")
	before, err := ts.Database().GetSession(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	viewer, status, code := ts.dialWS(t, vncPath("s1", mint(t, "watch", "org-a", auth.RoleUser, time.Hour)), nil)
	if viewer == nil {
		t.Fatalf("viewer: %d %s", status, code)
	}
	f := readFrameOf(t, ops, string(websocket.EventSessionConnected))
	data, _ := f["data"].(map[string]any)
	if f.str("sessionId") != "s1" || data["user"] != "watch" || data["viewer"] != "vnc" || data["viewOnly"] != true {
		t.Fatalf("session.connected = %v", f)
	}
	if n, _ := ts.Database().CountConnections(ctx, "s1"); n != 1 {
		t.Fatalf("%d connections recorded, want 1", n)
	}
	after, err := ts.Database().GetSession(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if !after.LastActivity.After(before.LastActivity) {
		t.Fatalf("lastActivity %v not refreshed (was %v)", after.LastActivity, before.LastActivity)
	}
	testkit.Eventually(t, 10*time.Second, "the tunnel reaches the far end", func() bool { return ts.echo.open.Load() == 1 })
	_ = viewer.Close()
	f = readFrameOf(t, ops, string(websocket.EventSessionDisconnected))
	if data, _ := f["data"].(map[string]any); data["viewer"] != "vnc" {
		t.Fatalf("session.disconnected = %v", f)
	}
	testkit.Eventually(t, 10*time.Second, "the viewer's tunnel ends at the far end", func() bool { return ts.echo.open.Load() == 0 })
	if n, _ := ts.Database().CountConnections(ctx, "s1"); n != 0 {
		t.Fatalf("%d connections left, want 0", n)
	}
}

// A withdrawn share closes its viewer with 4004; an expired token closes it with 4003;
// shutdown closes it with 1001.
func TestVNCViewerCloses(t *testing.T) {
	t.Parallel()
	ts := vncServer(t, func(c *Config) { c.SessionsInterval = 50 * time.Millisecond })
	viewer, status, code := ts.dialWS(t, vncPath("s1", mint(t, "watch", "org-a", auth.RoleUser, time.Hour)), nil)
	if viewer == nil {
		t.Fatalf("viewer: %d %s", status, code)
	}
	if err := ts.Database().UnshareSession(context.Background(), "s1", "watch"); err != nil {
		t.Fatal(err)
	}
	if got := closeCode(t, viewer, 10*time.Second); got != websocket.CloseAccessRevoked {
		t.Fatalf("after unshare: close %d, want 4004", got)
	}

	expiring, status, code := ts.dialWS(t, vncPath("s1", mint(t, "alice", "org-a", auth.RoleUser, time.Second)), nil)
	if expiring == nil {
		t.Fatalf("viewer: %d %s", status, code)
	}
	if got := closeCode(t, expiring, 15*time.Second); got != websocket.CloseTokenExpired {
		t.Fatalf("token expiry: close %d, want 4003", got)
	}

	last, status, code := ts.dialWS(t, vncPath("s1", mint(t, "ctl", "org-a", auth.RoleUser, time.Hour)), nil)
	if last == nil {
		t.Fatalf("viewer: %d %s", status, code)
	}
	go ts.stop()
	if got := closeCode(t, last, 10*time.Second); got != gorilla.CloseGoingAway {
		t.Fatalf("shutdown: close %d, want 1001", got)
	}
}

func readFrameOf(t *testing.T, c *gorilla.Conn, typ string) wsFrame {
	t.Helper()
	for {
		if f := readWS(t, c); f.str("type") == typ {
			return f
		}
	}
}
