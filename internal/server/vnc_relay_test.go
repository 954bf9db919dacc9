package server

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/desktop"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/peer"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// relayFixture is two replicas on one PostgreSQL and one Redis: viewers connect to a, and the
// session's agent holds its socket on b. s1 is alice's session in org-a on "sdk-1", an agent
// SDK (tunnel/1) in front of the built-in desktop, shared with "watch" to view only; s-k is
// alice's on "k1", a fake StreamSpace k8s-agent whose tunnels reach an echo server; s-gone's
// agent never connected.
type relayFixture struct {
	a, b   *testServer
	desk   *desktop.Desktop
	open   atomic.Int32 // the desktop's connections open: one per tunnel the agent holds
	legacy *vnctest.LegacyAgent
}

func newRelayFixture(t *testing.T, mutateB ...func(*Config)) *relayFixture {
	t.Helper()
	_, prefix := redistest.Client(t)
	return newRelayFixtureOn(t, testRedisURL(), prefix, nil, mutateB...)
}

// newRelayFixtureOn is newRelayFixture on the Redis at redisURL, with mutate applied to both
// replicas' configurations and mutateB to b's.
func newRelayFixtureOn(t *testing.T, redisURL, prefix string, mutate func(*Config), mutateB ...func(*Config)) *relayFixture {
	t.Helper()
	url := dbtest.URL(t, "postgres")
	replica := func(name string) func(*Config) {
		return func(c *Config) {
			c.DatabaseURL, c.Replica, c.RedisURL, c.RedisPrefix = url, name, redisURL, prefix
			c.ShutdownTimeout = 30 * time.Second // a safety net on a loaded machine only
			if mutate != nil {
				mutate(c)
			}
		}
	}
	f := &relayFixture{desk: desktop.New(desktop.Options{Width: desktop.MinWidth, Height: desktop.MinHeight})}
	f.a = startServer(t, "postgres", replica("ra"))
	f.b = startServer(t, "postgres", append([]func(*Config){replica("rb")}, mutateB...)...)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, s := range []models.Session{
		{ID: "s1", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "sdk-1"},
		{ID: "s-k", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "k1"},
		{ID: "s-gone", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "gone"},
	} {
		if err := f.a.Database().CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.a.Database().ShareSession(ctx, "s1", "watch", []string{"view"}); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served sync.WaitGroup
	served.Go(func() { _ = f.desk.ServeListener(ctx, countingListener{Listener: ln, open: &f.open}) })
	t.Cleanup(func() { cancel(); served.Wait() })
	startSDKAgent(t, f.b, "sdk-1", ln.Addr().String(), "s1")

	echo := startEcho(t)
	f.legacy, err = vnctest.DialLegacyAgent(ctx, vnctest.LegacyAgentConfig{
		ServerURL: f.b.base, AgentID: "k1", APIKey: createAgent(t, f.b, "k1"),
		VNCAddr: func(string) string { return echo.addr },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.legacy.Close)

	testkit.Eventually(t, 20*time.Second, "a to see b's agents and peer address", func() bool {
		where, err := f.a.agents.AgentLocations(ctx, []string{"sdk-1", "k1"})
		_, published, _ := f.a.peers.PeerAddr(ctx, "rb")
		return err == nil && where["sdk-1"] == "rb" && where["k1"] == "rb" && published
	})
	return f
}

// countingListener counts the connections it accepted that are not closed yet.
type countingListener struct {
	net.Listener
	open *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &countedConn{Conn: c, open: l.open}, nil
}

type countedConn struct {
	net.Conn
	once sync.Once
	open *atomic.Int32
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// dialViewer opens the viewer socket of session on ts with token.
func dialViewer(t *testing.T, ts *testServer, session, token string) *gorilla.Conn {
	t.Helper()
	d := gorilla.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 20 * time.Second}
	ws, resp, err := d.Dial(ts.wsURL(vncPath(session, token)), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("viewer of %s refused: %d %v", session, status, err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	if ws.Subprotocol() != "binary" {
		t.Fatalf("subprotocol %q, want binary", ws.Subprotocol())
	}
	return ws
}

// openViewer opens the viewer socket of session on ts with token and completes the RFB
// handshake with the desktop behind it.
func openViewer(t *testing.T, ts *testServer, session, token string) (*vnctest.Client, *gorilla.Conn, int, int) {
	t.Helper()
	ws := dialViewer(t, ts, session, token)
	c := vnctest.NewClient(vnctest.WSConn(ws))
	w, h, _, err := c.Handshake()
	if err != nil {
		t.Fatalf("RFB handshake through %s: %v", session, err)
	}
	if err := c.SetPixelFormat32(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetEncodings(0); err != nil { // Raw
		t.Fatal(err)
	}
	return c, ws, w, h
}

// refusal is the status, error code and Retry-After of a viewer socket refused on ts.
func refusal(t *testing.T, ts *testServer, session, token string) (int, string, string) {
	t.Helper()
	d := gorilla.Dialer{HandshakeTimeout: 20 * time.Second}
	ws, resp, err := d.Dial(ts.wsURL(vncPath(session, token)), nil)
	if err == nil {
		_ = ws.Close()
		t.Fatalf("viewer of %s upgraded, want a refusal", session)
	}
	if resp == nil {
		t.Fatalf("viewer of %s: %v", session, err)
	}
	defer resp.Body.Close()
	var eb errorBody
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
		t.Fatalf("refusal of %s is not JSON: %v", session, err)
	}
	return resp.StatusCode, eb.Error, resp.Header.Get("Retry-After")
}

// closeOf reads ws, dropping RFB bytes, until its close frame.
func closeOf(t *testing.T, ws *gorilla.Conn) (int, string) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *gorilla.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("no close frame: %v", err)
			}
			return ce.Code, ce.Text
		}
	}
}

// metricSum is the sum of the samples of a gauge or counter family of ts, whose labels include
// those of match.
func metricSum(t *testing.T, ts *testServer, name string, match map[string]string) float64 {
	t.Helper()
	families, err := ts.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			for k, v := range match {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue samples
				}
			}
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// A viewer on a streams the desktop whose agent b holds: the RFB handshake and a whole
// framebuffer arrive, its clicks reach the desktop, and when it leaves the agent's tunnel
// ends. A view-only viewer gets the picture and b drops its input. The link is one for both.
func TestRelayStreamsADesktopHeldByAnotherReplica(t *testing.T) {
	t.Parallel()
	f := newRelayFixture(t)
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)

	c, ws, w, h := openViewer(t, f.a, "s1", alice)
	if dw, dh := f.desk.Size(); w != dw || h != dh {
		t.Fatalf("the viewer sees %dx%d, the desktop is %dx%d", w, h, dw, dh)
	}
	fullFrame(t, c, w, h)
	if err := c.Pointer(10, 10, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Pointer(10, 10, 0); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the click to reach the desktop", func() bool { return f.desk.Clicks() == 1 })
	if got := metricSum(t, f.a, "streamspace_vnc_peer_tunnels_open", nil); got != 1 {
		t.Errorf("a counts %v relayed tunnels, want 1", got)
	}
	if got := metricSum(t, f.b, "streamspace_vnc_tunnels_open", nil); got != 1 {
		t.Errorf("b counts %v tunnels, want 1", got)
	}
	if got := metricSum(t, f.a, "streamspace_vnc_tunnels_open", nil); got != 0 {
		t.Errorf("a counts %v tunnels of its own, want 0", got)
	}

	// View only: the picture, and no input past b.
	watch := mint(t, "watch", "org-a", auth.RoleUser, time.Hour)
	vc, _, w, h := openViewer(t, f.a, "s1", watch)
	if err := vc.Pointer(20, 20, 1); err != nil {
		t.Fatal(err)
	}
	if err := vc.Pointer(20, 20, 0); err != nil {
		t.Fatal(err)
	}
	fullFrame(t, vc, w, h) // read after the clicks: b has read them too
	testkit.Eventually(t, 20*time.Second, "b to drop the view-only viewer's clicks", func() bool {
		return metricSum(t, f.b, "streamspace_vnc_input_dropped_total", map[string]string{"message": "pointer"}) == 2
	})
	if n := f.desk.Clicks(); n != 1 {
		t.Fatalf("the desktop counted %d clicks, want only the controlling viewer's 1", n)
	}
	if got := metricSum(t, f.a, "streamspace_peer_links", nil); got != 1 {
		t.Errorf("a holds %v peer links, want one for every tunnel to b", got)
	}

	// The browser leaves: b ends its tunnel, the agent closes its connection to the desktop.
	if n := f.open.Load(); n != 2 {
		t.Fatalf("the desktop has %d viewers, want 2", n)
	}
	_ = ws.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, ""), time.Now().Add(time.Second))
	testkit.Eventually(t, 20*time.Second, "the agent's tunnel to end", func() bool {
		return f.open.Load() == 1 && metricSum(t, f.b, "streamspace_vnc_tunnels_open", nil) == 1 &&
			metricSum(t, f.a, "streamspace_vnc_peer_tunnels_open", nil) == 1
	})
}

// Every refusal of b passes through a as b answered it, and a refuses what it knows itself.
// b authorizes the forwarded identity again, and a replica without the secret gets no link.
func TestRelayRefusals(t *testing.T) {
	t.Parallel()
	f := newRelayFixture(t, func(c *Config) { c.VNCMaxPerAgent = 1 })
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)

	openViewer(t, f.a, "s1", alice)
	if status, code, _ := refusal(t, f.a, "s1", alice); status != http.StatusTooManyRequests || code != "too_many_tunnels" {
		t.Errorf("a second tunnel through sdk-1: %d %s, want b's 429 too_many_tunnels", status, code)
	}
	if status, code, retry := refusal(t, f.a, "s-k", alice); status != http.StatusServiceUnavailable || code != "tunnel_not_ready" || retry != "2" {
		t.Errorf("s-k before its tunnel: %d %s Retry-After %q, want b's 503 tunnel_not_ready, 2", status, code, retry)
	}
	if err := f.legacy.OpenTunnel("s-k"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "b to take the tunnel of s-k", func() bool {
		code, _ := f.b.call(t, "GET", "/api/v1/vnc/s-k", bearer(alice), "")
		return code == http.StatusBadRequest // upgrade_required: every check passed
	})
	kws := dialViewer(t, f.a, "s-k", alice) // to the echo server: what is sent comes back
	if err := kws.WriteMessage(gorilla.BinaryMessage, []byte("RFB 003.008\n")); err != nil {
		t.Fatal(err)
	}
	var echoed []byte
	_ = kws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(echoed) < 12 {
		_, data, err := kws.ReadMessage()
		if err != nil {
			t.Fatalf("s-k through b: %v after %q", err, echoed)
		}
		echoed = append(echoed, data...)
	}
	if string(echoed) != "RFB 003.008\n" {
		t.Errorf("s-k through b echoed %q", echoed)
	}
	if status, code, _ := refusal(t, f.a, "s-k", alice); status != http.StatusConflict || code != "viewer_busy" {
		t.Errorf("a second viewer of s-k: %d %s, want b's 409 viewer_busy", status, code)
	}

	if status, code, _ := refusal(t, f.a, "s-gone", alice); status != http.StatusServiceUnavailable || code != "agent_offline" {
		t.Errorf("a session whose agent no replica holds: %d %s, want 503 agent_offline", status, code)
	}
	if code, _ := f.a.call(t, "GET", "/peer/v1/vnc/s1", nil, ""); code != http.StatusNotFound {
		t.Errorf("the peer route on the public listener: %d, want 404", code)
	}

	// A replica that knows the secret reaches b's peer route, which decides for itself.
	addr := f.b.cfg.PeerAdvertiseAddr
	friend := testMesh(t, "rx", f.b.cfg.PeerSecret)
	asPeer := func(header http.Header) (int, string) {
		t.Helper()
		d := gorilla.Dialer{HandshakeTimeout: 20 * time.Second, NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return friend.Dial(ctx, "rb", addr)
		}}
		ws, resp, err := d.Dial("ws://"+addr+"/peer/v1/vnc/s1", header)
		if err == nil {
			_ = ws.Close()
			return http.StatusSwitchingProtocols, ""
		}
		if resp == nil {
			t.Fatalf("peer route: %v", err)
		}
		defer resp.Body.Close()
		var eb errorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		return resp.StatusCode, eb.Error
	}
	identity := func(org, user, role string) http.Header {
		h := http.Header{}
		setPeerIdentity(h, auth.Identity{OrgID: org, UserID: user, Role: auth.Role(role)})
		return h
	}
	for _, tc := range []struct {
		name   string
		header http.Header
		status int
		code   string
	}{
		{"another organization", identity("org-b", "alice", "admin"), http.StatusNotFound, "session_not_found"},
		{"a user it is not shared with", identity("org-a", "mallory", "user"), http.StatusForbidden, "forbidden_session"},
		{"no identity", http.Header{}, http.StatusBadRequest, "invalid_peer_identity"},
		{"an unknown role", identity("org-a", "alice", "root"), http.StatusBadRequest, "invalid_peer_identity"},
		{"a control character", identity("org-a", "al\x01ice", "user"), http.StatusBadRequest, "invalid_peer_identity"},
		{"a user id too long", identity("org-a", strings.Repeat("a", models.MaxIDLen+1), "user"), http.StatusBadRequest, "invalid_peer_identity"},
		{"the agent's limit", identity("org-a", "alice", "user"), http.StatusTooManyRequests, "too_many_tunnels"},
	} {
		if status, code := asPeer(tc.header); status != tc.status || code != tc.code {
			t.Errorf("peer route, %s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}

	// Without the secret there is no link, so no request.
	intruder := testMesh(t, "intruder", strings.Repeat("x", 32))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if conn, err := intruder.Dial(ctx, "rb", addr); err == nil {
		_ = conn.Close()
		t.Fatal("a replica without the secret opened a stream to b")
	}
	testkit.Eventually(t, 20*time.Second, "b to count the link it refused for a wrong proof", func() bool {
		return metricSum(t, f.b, "streamspace_peer_handshakes_total", map[string]string{"result": "refused_proof"}) == 1
	})
}

// testMesh is a peer link of a replica name with secret that serves nothing.
func testMesh(t *testing.T, name, secret string) *peer.Mesh {
	t.Helper()
	m, err := peer.New(peer.Config{Replica: name, Secret: []byte(secret), Handler: http.NotFoundHandler()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// b's orderly shutdown closes a's viewer with b's 1001, and the agent's tunnel with it.
func TestRelayPassesOnTheHoldersShutdown(t *testing.T) {
	t.Parallel()
	f := newRelayFixture(t)
	c, ws, w, h := openViewer(t, f.a, "s1", mint(t, "alice", "org-a", auth.RoleUser, time.Hour))
	fullFrame(t, c, w, h)
	go f.b.stop()
	if code, reason := closeOf(t, ws); code != gorilla.CloseGoingAway || reason != "server shutting down" {
		t.Fatalf("viewer closed with %d %q, want 1001 server shutting down", code, reason)
	}
	testkit.Eventually(t, 20*time.Second, "a to forget the relayed tunnel", func() bool {
		return metricSum(t, f.a, "streamspace_vnc_peer_tunnels_open", nil) == 0
	})
}

// The link to b dying under a tunnel closes a's viewer with 1011 agent unreachable; while b
// cannot be reached, a new viewer is told to retry.
func TestRelayLinkLoss(t *testing.T) {
	t.Parallel()
	f := newRelayFixture(t)
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	c, ws, w, h := openViewer(t, f.a, "s1", alice)
	fullFrame(t, c, w, h)
	if err := f.b.mesh.Close(); err != nil {
		t.Fatal(err)
	}
	if code, reason := closeOf(t, ws); code != gorilla.CloseInternalServerErr || reason != "agent unreachable" {
		t.Fatalf("viewer closed with %d %q, want 1011 agent unreachable", code, reason)
	}
	if status, code, retry := refusal(t, f.a, "s1", alice); status != http.StatusServiceUnavailable || code != "unavailable" || retry != "2" {
		t.Fatalf("a viewer while b is unreachable: %d %s Retry-After %q, want 503 unavailable, 2", status, code, retry)
	}
	if n := metricSum(t, f.a, "streamspace_vnc_peer_unreachable_total", map[string]string{"reason": "stream"}); n != 1 {
		t.Errorf("a counted %v tunnels lost with their link, want 1", n)
	}
	if n := metricSum(t, f.a, "streamspace_vnc_peer_unreachable_total", map[string]string{"reason": "dial"}); n != 1 {
		t.Errorf("a counted %v viewers refused for want of a link, want 1", n)
	}
	testkit.Eventually(t, 20*time.Second, "the agent's tunnel to end", func() bool { return f.open.Load() == 0 })
}

// A Redis restart does not touch a relayed tunnel (nothing of it passes through Redis); while
// Redis is away a new viewer whose agent is on another replica is told to retry, and once it
// is back (and the replicas have published their claims again) it is served.
func TestRelaySurvivesARedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	f := newRelayFixtureOn(t, srv.URL(), "relay", func(c *Config) { c.AgentOwnershipTTL = 3 * time.Second })
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	c, _, w, h := openViewer(t, f.a, "s1", alice)
	fullFrame(t, c, w, h)

	srv.Stop(t)
	fullFrame(t, c, w, h)
	if status, code, retry := refusal(t, f.a, "s1", alice); status != http.StatusServiceUnavailable || code != "unavailable" || retry != "2" {
		t.Errorf("a new viewer while Redis is away: %d %s Retry-After %q, want 503 unavailable, 2", status, code, retry)
	}
	srv.Restart(t)
	fullFrame(t, c, w, h)
	testkit.Eventually(t, 30*time.Second, "a new viewer to be served again", func() bool {
		d := gorilla.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 20 * time.Second}
		ws, _, err := d.Dial(f.a.wsURL(vncPath("s1", alice)), nil)
		if err != nil {
			return false
		}
		_ = ws.Close()
		return true
	})
	fullFrame(t, c, w, h)
	if err := c.Pointer(30, 30, 1); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the first viewer's click to reach the desktop", func() bool { return f.desk.Clicks() == 1 })
}

// A browser that stops reading slows only its own tunnel: its stream's window stops b's
// tunnel, and another viewer relayed over the same link goes on getting whole screens.
func TestRelayStalledViewerDoesNotBlockTheLink(t *testing.T) {
	t.Parallel()
	// Long write waits, so the stalled viewer stays open (stalled) for the whole test.
	_, prefix := redistest.Client(t)
	f := newRelayFixtureOn(t, testRedisURL(), prefix, func(c *Config) { c.WriteWait = 2 * time.Minute })
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	stalled, _, w, h := openViewer(t, f.a, "s1", alice)
	// Far more screens than the sockets' buffers, the stream's window and the tunnel's hold.
	for range 200 {
		if err := stalled.RequestUpdate(false, 0, 0, w, h); err != nil {
			t.Fatal(err)
		}
	}
	other, _, w, h := openViewer(t, f.a, "s1", alice)
	for range 5 {
		fullFrame(t, other, w, h)
	}
	if n := metricSum(t, f.a, "streamspace_vnc_peer_tunnels_open", nil); n != 2 {
		t.Fatalf("a relays %v tunnels, want both viewers' still open", n)
	}
	// What b sent is bounded by the windows and socket buffers, far below what was asked.
	if sent, asked := metricSum(t, f.b, "streamspace_vnc_bytes_total", map[string]string{"direction": "to_viewer"}), float64(200*w*h*4); sent > asked/2 {
		t.Errorf("b sent %v bytes toward a viewer that reads nothing (of %v asked)", sent, asked)
	}
	if n := metricSum(t, f.a, "streamspace_peer_links", nil); n != 1 {
		t.Fatalf("a holds %v peer links, want the one both tunnels share", n)
	}
}

// The viewer's replica owns the viewer's life: a withdrawn share closes a relayed viewer with
// 4004 and an expired token with 4003, as for a tunnel held here, and each ends the tunnel on
// the agent's replica.
func TestRelayViewerCloses(t *testing.T) {
	t.Parallel()
	f := newRelayFixtureOn(t, testRedisURL(), relayPrefix(t), func(c *Config) { c.SessionsInterval = 50 * time.Millisecond })
	_, watcher, _, _ := openViewer(t, f.a, "s1", mint(t, "watch", "org-a", auth.RoleUser, time.Hour))
	if err := f.a.Database().UnshareSession(context.Background(), "s1", "watch"); err != nil {
		t.Fatal(err)
	}
	if got := closeCode(t, watcher, 15*time.Second); got != websocket.CloseAccessRevoked {
		t.Fatalf("after unshare: close %d, want 4004", got)
	}
	testkit.Eventually(t, 20*time.Second, "the withdrawn viewer's tunnel to end on b", func() bool { return f.open.Load() == 0 })

	_, expiring, _, _ := openViewer(t, f.a, "s1", mint(t, "alice", "org-a", auth.RoleUser, 5*time.Second))
	if got := closeCode(t, expiring, 20*time.Second); got != websocket.CloseTokenExpired {
		t.Fatalf("token expiry: close %d, want 4003", got)
	}
	testkit.Eventually(t, 20*time.Second, "the expired viewer's tunnel to end on b", func() bool { return f.open.Load() == 0 })
}

func relayPrefix(t *testing.T) string {
	t.Helper()
	_, prefix := redistest.Client(t)
	return prefix
}
