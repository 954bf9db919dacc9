package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
)

// streamingFixture is a server with two agents in front of the real VNC server: "sdk-1", this
// project's agent SDK (tunnel/1), and "k8s-1", a fake StreamSpace k8s-agent (vnc_* messages,
// one base64 tunnel per session). Session "s-sdk" runs on the first, "s-k8s" on the second,
// both alice's in org-a.
type streamingFixture struct {
	ts     *testServer
	vnc    string
	legacy *vnctest.LegacyAgent
}

func newStreamingFixture(tb testing.TB) *streamingFixture {
	tb.Helper()
	f := &streamingFixture{vnc: vnctest.Addr(tb)}
	f.ts = startServer(tb, "sqlite")
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	for _, s := range []models.Session{
		{ID: "s-sdk", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "sdk-1"},
		{ID: "s-k8s", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "k8s-1"},
	} {
		if err := f.ts.Database().CreateSession(ctx, s); err != nil {
			tb.Fatal(err)
		}
	}

	startSDKAgent(tb, f.ts, "sdk-1", f.vnc, "s-sdk")
	var err error
	f.legacy, err = vnctest.DialLegacyAgent(ctx, vnctest.LegacyAgentConfig{
		ServerURL: f.ts.base, AgentID: "k8s-1", APIKey: createAgent(tb, f.ts, "k8s-1"),
		VNCAddr: func(string) string { return f.vnc },
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(f.legacy.Close)
	if err := testkit.WaitFor(10*time.Second, func() bool {
		return f.ts.agents.IsAgentConnected("sdk-1") && f.ts.agents.IsAgentConnected("k8s-1")
	}); err != nil {
		tb.Fatal("the agents did not connect")
	}
	return f
}

// startSDKAgent runs agent id on the agent SDK until the test ends, relaying the desktops of
// sessions (tunnel/1) to the TCP server at vnc.
func startSDKAgent(tb testing.TB, ts *testServer, id, vnc string, sessions ...string) {
	tb.Helper()
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", vnc)
	}
	a, err := agentclient.New(agentclient.Config{
		ServerURL: ts.base, AgentID: id, APIKey: createAgent(tb, ts, id), Platform: models.PlatformDocker,
		Tunnels: agentclient.ProxyTo(dial),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	for _, s := range sessions {
		if err := a.OpenTunnel(ctx, s); err != nil {
			tb.Fatal(err)
		}
	}
}

// createAgent creates an approved agent through the admin API and returns its key.
func createAgent(tb testing.TB, ts *testServer, id string) string {
	tb.Helper()
	code, raw := ts.call(tb, "POST", "/api/v1/admin/agents", bearer(testService), registerBody(id, models.PlatformDocker))
	var reg struct{ APIKey string }
	if code != http.StatusCreated || json.Unmarshal(raw, &reg) != nil || reg.APIKey == "" {
		tb.Fatalf("create agent %s: %d %s", id, code, raw)
	}
	return reg.APIKey
}

// announce has the StreamSpace agent open a new tunnel to the VNC server for session, as it
// does when a session starts, and waits until the server takes it.
func (f *streamingFixture) announce(tb testing.TB, session string) {
	tb.Helper()
	if err := f.legacy.OpenTunnel(session); err != nil {
		tb.Fatal(err)
	}
	if err := testkit.WaitFor(10*time.Second, func() bool {
		return f.plainGet(tb, session) == http.StatusBadRequest // upgrade_required: every check passed
	}); err != nil {
		tb.Fatalf("the server did not take the tunnel of %s", session)
	}
}

// plainGet is the status of a plain GET of session's viewer socket as alice: 400
// upgrade_required once every check before the upgrade passes.
func (f *streamingFixture) plainGet(tb testing.TB, session string) int {
	tb.Helper()
	code, _ := f.ts.call(tb, "GET", "/api/v1/vnc/"+session, bearer(aliceToken(tb)), "")
	return code
}

func aliceToken(tb testing.TB) string {
	tb.Helper()
	tok, err := auth.Mint([]byte(testSecret), auth.Identity{UserID: "alice", OrgID: "org-a", Role: auth.RoleUser}, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// viewer opens the viewer socket of session as alice and completes the RFB handshake with
// the VNC server behind it.
func (f *streamingFixture) viewer(tb testing.TB, session string) (*vnctest.Client, *gorilla.Conn, int, int) {
	tb.Helper()
	tok := aliceToken(tb)
	d := gorilla.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(f.ts.wsURL("/api/v1/vnc/"+session+"?token="+tok), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("viewer of %s refused: %d %v", session, status, err)
	}
	tb.Cleanup(func() { _ = ws.Close() })
	if ws.Subprotocol() != "binary" {
		tb.Fatalf("subprotocol %q, want binary", ws.Subprotocol())
	}
	c := vnctest.NewClient(vnctest.WSConn(ws))
	w, h, _, err := c.Handshake()
	if err != nil {
		tb.Fatalf("RFB handshake through %s: %v", session, err)
	}
	if err := c.SetPixelFormat32(); err != nil {
		tb.Fatal(err)
	}
	if err := c.SetEncodings(0); err != nil { // Raw
		tb.Fatal(err)
	}
	return c, ws, w, h
}

// fullFrame asks for the whole screen and reads until the update covers it.
func fullFrame(tb testing.TB, c *vnctest.Client, w, h int) {
	tb.Helper()
	if err := c.RequestUpdate(false, 0, 0, w, h); err != nil {
		tb.Fatal(err)
	}
	covered := 0
	for covered < w*h {
		rects, err := c.ReadUpdate()
		if err != nil {
			tb.Fatalf("reading the screen: %v", err)
		}
		for _, r := range rects {
			covered += r.Dx() * r.Dy()
		}
	}
}

// TestVNCThroughBothAgentKinds: a browser's RFB session reaches the real VNC server through an
// agent of each kind. The SDK's tunnel/1 serves two viewers of one session at once; the
// StreamSpace agent's one tunnel serves one viewer, is closed with vnc_close when it leaves,
// and the next viewer waits for the agent to announce a new one.
func TestVNCThroughBothAgentKinds(t *testing.T) {
	f := newStreamingFixture(t)

	first, _, w, h := f.viewer(t, "s-sdk")
	second, _, w2, h2 := f.viewer(t, "s-sdk")
	if w != w2 || h != h2 || w == 0 {
		t.Fatalf("two viewers see %dx%d and %dx%d", w, h, w2, h2)
	}
	fullFrame(t, first, w, h)
	fullFrame(t, second, w, h)

	f.announce(t, "s-k8s")
	c, ws, w, h := f.viewer(t, "s-k8s")
	fullFrame(t, c, w, h)
	if code := f.plainGet(t, "s-k8s"); code != http.StatusConflict {
		t.Errorf("a second viewer of the StreamSpace agent's tunnel: %d, want 409 viewer_busy", code)
	}
	_ = ws.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, ""), time.Now().Add(time.Second))
	testkit.Eventually(t, 10*time.Second, "the agent is told the viewer left", func() bool {
		for _, m := range f.legacy.Frames(models.MessageTypeVNCClose) {
			var p models.VNCCloseMessage
			if json.Unmarshal(m.Payload, &p) == nil && p.SessionID == "s-k8s" && p.Reason == "client_disconnect" {
				return true
			}
		}
		return false
	})
	testkit.Eventually(t, 10*time.Second, "the next viewer waits for a new tunnel", func() bool {
		return f.plainGet(t, "s-k8s") == http.StatusServiceUnavailable
	})
	f.announce(t, "s-k8s")
	c, _, w, h = f.viewer(t, "s-k8s")
	fullFrame(t, c, w, h)
}
