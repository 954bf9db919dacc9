package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// fakeTunnels stands in for the AgentHub: it refuses with err, or opens echo tunnels that end
// as websocket.Tunnel.Serve does (1001, or the context's CloseCause).
type fakeTunnels struct {
	mu        sync.Mutex
	err       error
	connected bool
	reqs      []websocket.TunnelRequest
	closed    int // tunnels released without being served
	serving   int
}

func (f *fakeTunnels) set(err error, connected bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.connected = err, connected
}

func (f *fakeTunnels) OpenTunnel(_ context.Context, req websocket.TunnelRequest) (viewerTunnel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	if f.err != nil {
		return nil, f.err
	}
	return &echoTunnel{f: f}, nil
}

func (f *fakeTunnels) IsAgentConnected(string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connected
}

func (f *fakeTunnels) lastRequest() websocket.TunnelRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reqs[len(f.reqs)-1]
}

func (f *fakeTunnels) counts() (closed, serving int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed, f.serving
}

type echoTunnel struct {
	f    *fakeTunnels
	once sync.Once
}

func (e *echoTunnel) Close() {
	e.once.Do(func() {
		e.f.mu.Lock()
		e.f.closed++
		e.f.mu.Unlock()
	})
}

func (e *echoTunnel) Serve(ctx context.Context, conn *gorilla.Conn) error {
	e.once.Do(func() {})
	e.f.mu.Lock()
	e.f.serving++
	e.f.mu.Unlock()
	defer func() {
		e.f.mu.Lock()
		e.f.serving--
		e.f.mu.Unlock()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			typ, p, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if err := conn.WriteMessage(typ, p); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
		_ = conn.Close()
		return nil
	case <-ctx.Done():
	}
	code, reason := gorilla.CloseGoingAway, "server shutting down"
	var cc websocket.CloseCause
	if errors.As(context.Cause(ctx), &cc) {
		code, reason = cc.Code, cc.Reason
	}
	_ = conn.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	_ = conn.Close()
	<-done
	return context.Cause(ctx)
}

// vncServer is a test server whose viewer tunnels are fakeTunnels, with sessions of two
// organizations: s1 of alice in org-a on agent a1 (shared with "watch" to view and "ctl" to
// control), s-idle (stopped), s-noagent (running without an agent), s-b of org-b.
func vncServer(t *testing.T, mutate ...func(*Config)) (*testServer, *fakeTunnels) {
	t.Helper()
	ts := startServer(t, "sqlite", mutate...)
	fake := &fakeTunnels{}
	ts.tunnels = fake
	ctx := context.Background()
	old := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	for _, s := range []models.Session{
		{ID: "s1", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "a1", LastActivity: old},
		{ID: "s-idle", OrgID: "org-a", UserID: "alice", State: models.SessionStateStopped, AgentID: "a1"},
		{ID: "s-noagent", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning},
		{ID: "s-b", OrgID: "org-b", UserID: "bob", State: models.SessionStateRunning, AgentID: "b1"},
	} {
		if err := ts.Database().CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for user, perms := range map[string][]string{"watch": {"view"}, "ctl": {"view", "control"}} {
		if err := ts.Database().ShareSession(ctx, "s1", user, perms); err != nil {
			t.Fatal(err)
		}
	}
	return ts, fake
}

func vncPath(session, token string) string {
	return "/api/v1/vnc/" + session + "?token=" + token
}

// Every refusal of PROTOCOL.md 6.1 is an HTTP answer before the upgrade, with its code.
func TestVNCRefusals(t *testing.T) {
	t.Parallel()
	ts, fake := vncServer(t)
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	cases := []struct {
		name      string
		path      string
		header    http.Header
		tunnelErr error
		connected bool
		status    int
		code      string
	}{
		{name: "no token", path: "/api/v1/vnc/s1", status: 401},
		{name: "bad token", path: vncPath("s1", "nope"), status: 401},
		{name: "origin", path: vncPath("s1", alice), header: http.Header{"Origin": {"https://evil.example"}}, status: 403, code: "forbidden_origin"},
		{name: "invalid id", path: vncPath("bad%01id", alice), status: 400, code: "invalid_session_id"},
		{name: "unknown session", path: vncPath("nope", alice), status: 404, code: "session_not_found"},
		{name: "other org's session", path: vncPath("s-b", mint(t, "boss", "org-a", auth.RoleAdmin, time.Hour)), status: 404, code: "session_not_found"},
		{name: "same org, not shared", path: vncPath("s1", mint(t, "mallory", "org-a", auth.RoleUser, time.Hour)), status: 403, code: "forbidden_session"},
		{name: "not running", path: vncPath("s-idle", alice), status: 409, code: "session_not_running"},
		{name: "no agent", path: vncPath("s-noagent", alice), status: 503, code: "agent_offline"},
		{name: "agent offline", path: vncPath("s1", alice), tunnelErr: websocket.ErrAgentOffline, status: 503, code: "agent_offline"},
		{name: "agent elsewhere", path: vncPath("s1", alice), tunnelErr: websocket.ErrAgentOffline, connected: true, status: 503, code: "agent_elsewhere"},
		{name: "tunnel not ready", path: vncPath("s1", alice), tunnelErr: websocket.ErrTunnelNotReady, status: 503, code: "tunnel_not_ready"},
		{name: "viewer busy", path: vncPath("s1", alice), tunnelErr: websocket.ErrViewerBusy, status: 409, code: "viewer_busy"},
		{name: "too many tunnels", path: vncPath("s1", alice), tunnelErr: &websocket.TunnelLimitError{Limit: "user", Max: 4}, status: 429, code: "too_many_tunnels"},
		{name: "hub failure", path: vncPath("s1", alice), tunnelErr: errors.New("boom"), status: 503, code: "unavailable"},
	}
	for _, c := range cases {
		fake.set(c.tunnelErr, c.connected)
		conn, status, code := ts.dialWS(t, c.path, c.header)
		if conn != nil {
			t.Errorf("%s: upgraded", c.name)
			continue
		}
		if status != c.status || (c.code != "" && code != c.code) {
			t.Errorf("%s: %d %s, want %d %s", c.name, status, code, c.status, c.code)
		}
	}

	// Retry-After on tunnel_not_ready.
	fake.set(websocket.ErrTunnelNotReady, false)
	_, resp, err := gorilla.DefaultDialer.Dial(ts.wsURL(vncPath("s1", alice)), nil)
	if err == nil || resp == nil || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("tunnel_not_ready: err %v, Retry-After %q", err, resp.Header.Get("Retry-After"))
	}
	_ = resp.Body.Close()

	// A plain GET is 400 upgrade_required, and the tunnel it reserved is given back.
	fake.set(nil, false)
	resp, err = http.Get(ts.base + vncPath("s1", alice))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d, want 400", resp.StatusCode)
	}
	if closed, _ := fake.counts(); closed != 1 {
		t.Fatalf("%d tunnels released after the plain GET, want 1", closed)
	}
}

// Viewer sockets count toward the connection limits of 2.2 (429 too_many_connections), and a
// refused viewer gives its tunnel back; the upgrade rate applies too.
func TestVNCConnectionLimits(t *testing.T) {
	t.Parallel()
	ts, fake := vncServer(t, func(c *Config) { c.MaxConnectionsPerUser = 1 })
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	if conn, status, code := ts.dialWS(t, vncPath("s1", alice), nil); conn == nil {
		t.Fatalf("first viewer refused: %d %s", status, code)
	}
	if _, status, code := ts.dialWS(t, "/api/v1/ws/sessions?token="+alice, nil); status != 429 || code != "too_many_connections" {
		t.Fatalf("sessions socket beside a viewer: %d %s, want 429 too_many_connections", status, code)
	}
	if _, status, code := ts.dialWS(t, vncPath("s1", alice), nil); status != 429 || code != "too_many_connections" {
		t.Fatalf("second viewer: %d %s, want 429 too_many_connections", status, code)
	}
	if closed, _ := fake.counts(); closed != 1 {
		t.Fatalf("%d tunnels released, want 1 (the refused viewer's)", closed)
	}

	rated, _ := vncServer(t, func(c *Config) { c.UpgradeRate, c.UpgradeBurst = 0.001, 1 })
	if conn, status, code := rated.dialWS(t, vncPath("s1", alice), nil); conn == nil {
		t.Fatalf("first viewer refused: %d %s", status, code)
	}
	if _, status, code := rated.dialWS(t, vncPath("s1", alice), nil); status != 429 || code != "too_many_upgrades" {
		t.Fatalf("over the upgrade rate: %d %s, want 429 too_many_upgrades", status, code)
	}
}

// noVNC offers "binary" and gets it; a browser offering nothing is served all the same. The
// tunnel is asked for the caller and the session, view-only for a view share only.
func TestVNCSubprotocolAndGrant(t *testing.T) {
	t.Parallel()
	ts, fake := vncServer(t)
	for _, c := range []struct {
		user     string
		offer    []string
		want     string
		viewOnly bool
	}{
		{"alice", []string{"binary"}, "binary", false},
		{"ctl", nil, "", false},
		{"watch", []string{"base64", "binary"}, "binary", true},
	} {
		d := gorilla.Dialer{Subprotocols: c.offer, HandshakeTimeout: 10 * time.Second}
		conn, resp, err := d.Dial(ts.wsURL(vncPath("s1", mint(t, c.user, "org-a", auth.RoleUser, time.Hour))), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.user, err)
		}
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != c.want || conn.Subprotocol() != c.want {
			t.Errorf("%s offering %q: subprotocol %q, want %q", c.user, c.offer, got, c.want)
		}
		req := fake.lastRequest()
		if req.UserID != c.user || req.Session.ID != "s1" || req.Session.AgentID != "a1" || req.ViewOnly != c.viewOnly {
			t.Errorf("%s: tunnel request %+v, want viewOnly=%v", c.user, req, c.viewOnly)
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
// "vnc", its session's activity refreshed; closing it announces session.disconnected.
func TestVNCViewerPresenceAndActivity(t *testing.T) {
	t.Parallel()
	ts, fake := vncServer(t)
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
	_ = viewer.Close()
	f = readFrameOf(t, ops, string(websocket.EventSessionDisconnected))
	if data, _ := f["data"].(map[string]any); data["viewer"] != "vnc" {
		t.Fatalf("session.disconnected = %v", f)
	}
	testkit.Eventually(t, 10*time.Second, "the viewer's tunnel ends", func() bool { _, serving := fake.counts(); return serving == 0 })
	if n, _ := ts.Database().CountConnections(ctx, "s1"); n != 0 {
		t.Fatalf("%d connections left, want 0", n)
	}
}

// A withdrawn share closes its viewer with 4004; an expired token closes it with 4003;
// shutdown closes it with 1001.
func TestVNCViewerCloses(t *testing.T) {
	t.Parallel()
	ts, _ := vncServer(t, func(c *Config) { c.SessionsInterval = 50 * time.Millisecond })
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

// Through the real AgentHub: a session whose agent is not connected is 503 agent_offline.
func TestVNCRealHubAgentOffline(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite")
	if err := ts.Database().CreateSession(context.Background(), models.Session{ID: "s1", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "gone"}); err != nil {
		t.Fatal(err)
	}
	if _, status, code := ts.dialWS(t, vncPath("s1", mint(t, "alice", "org-a", auth.RoleUser, time.Hour)), nil); status != 503 || code != "agent_offline" {
		t.Fatalf("%d %s, want 503 agent_offline", status, code)
	}
}
