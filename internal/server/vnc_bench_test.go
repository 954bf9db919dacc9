package server

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
)

// BenchmarkVNCRelay measures one viewer of the real VNC server (vnctest.Addr) three ways in one
// run, so that the figures compare:
//   - websockify: browser → websockify → VNC server, the direct relay noVNC is made for;
//   - tunnel1: browser → this server → an SDK agent (tunnel/1) → VNC server;
//   - streamspace: browser → this server → a StreamSpace k8s-agent (base64 vnc_data) → VNC server.
//
// roundtrip/*: a 1×1 non-incremental FramebufferUpdateRequest and its update, one at a time;
// ns/op is the round trip of a small message. screen/*: the whole screen in Raw, one request at
// a time; MB/s is one tunnel's throughput. Run it with
//
//	go test -run '^$' -bench VNCRelay -benchtime 3s ./internal/server/
func BenchmarkVNCRelay(b *testing.B) {
	f := newStreamingFixture(b)
	direct := startWebsockify(b, f.vnc)
	closes := 0
	paths := []struct {
		name string
		open func(b *testing.B) (*vnctest.Client, int, int)
	}{
		{"websockify", func(b *testing.B) (*vnctest.Client, int, int) { return dialWebsockify(b, direct) }},
		{"tunnel1", func(b *testing.B) (*vnctest.Client, int, int) {
			c, _, w, h := f.viewer(b, "s-sdk")
			return c, w, h
		}},
		{"streamspace", func(b *testing.B) (*vnctest.Client, int, int) {
			// The agent's one tunnel serves one viewer: wait until the last one's vnc_close
			// reached it, then have it announce a new one, as it would at a session's start.
			if err := testkit.WaitFor(10*time.Second, func() bool { return f.legacy.Received(models.MessageTypeVNCClose) >= closes }); err != nil {
				b.Fatal("the StreamSpace agent was not told the last viewer left")
			}
			closes++
			f.announce(b, "s-k8s")
			c, _, w, h := f.viewer(b, "s-k8s")
			return c, w, h
		}},
	}
	for _, p := range paths {
		b.Run("roundtrip/"+p.name, func(b *testing.B) {
			c, _, _ := p.open(b)
			b.ResetTimer()
			for b.Loop() {
				fullFrame(b, c, 1, 1)
			}
		})
	}
	for _, p := range paths {
		b.Run("screen/"+p.name, func(b *testing.B) {
			c, w, h := p.open(b)
			b.SetBytes(int64(w * h * 4))
			b.ResetTimer()
			for b.Loop() {
				fullFrame(b, c, w, h)
			}
		})
	}
}

// startWebsockify runs Debian's websockify in front of vnc (scripts/tools.sh installs it) and
// returns its address.
func startWebsockify(b *testing.B, vnc string) string {
	b.Helper()
	bin, err := exec.LookPath("websockify")
	if err != nil {
		b.Fatal("websockify is not installed: run scripts/tools.sh")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "127.0.0.1:"+port, vnc)
	if err := cmd.Start(); err != nil {
		cancel()
		b.Fatalf("start websockify: %v", err)
	}
	b.Cleanup(func() { cancel(); _ = cmd.Wait() })
	if err := testkit.WaitFor(10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}); err != nil {
		b.Fatalf("websockify did not listen on %s", addr)
	}
	if _, err := strconv.Atoi(port); err != nil {
		b.Fatal(err)
	}
	return addr
}

// dialWebsockify opens a viewer through websockify as noVNC does, and completes the handshake.
func dialWebsockify(b *testing.B, addr string) (*vnctest.Client, int, int) {
	b.Helper()
	d := gorilla.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial("ws://"+addr+"/", nil)
	if err != nil {
		b.Fatalf("dial websockify: %v", err)
	}
	b.Cleanup(func() { _ = ws.Close() })
	c := vnctest.NewClient(vnctest.WSConn(ws))
	w, h, _, err := c.Handshake()
	if err != nil {
		b.Fatalf("RFB handshake through websockify: %v", err)
	}
	if err := c.SetPixelFormat32(); err != nil {
		b.Fatal(err)
	}
	if err := c.SetEncodings(0); err != nil {
		b.Fatal(err)
	}
	return c, w, h
}

// BenchmarkVNCRelayAcrossReplicas measures one viewer of the real VNC server through an SDK
// agent held by replica b, three ways in one run: websockify's direct relay, a viewer on b
// (the tunnel served where the agent is), and a viewer on a (relayed to b over the peer link).
// The sub-benchmarks are BenchmarkVNCRelay's. Run it with
//
//	go test -run '^$' -bench VNCRelayAcrossReplicas -benchtime 3s ./internal/server/
func BenchmarkVNCRelayAcrossReplicas(b *testing.B) {
	vnc := vnctest.Addr(b)
	url := dbtest.URL(b, "postgres")
	_, prefix := redistest.Client(b)
	replica := func(name string) func(*Config) {
		return func(c *Config) {
			c.DatabaseURL, c.Replica, c.RedisURL, c.RedisPrefix = url, name, testRedisURL(), prefix
		}
	}
	ra, rb := startServer(b, "postgres", replica("ra")), startServer(b, "postgres", replica("rb"))
	s := models.Session{ID: "s1", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "sdk-1"}
	if err := ra.Database().CreateSession(context.Background(), s); err != nil {
		b.Fatal(err)
	}
	startSDKAgent(b, rb, "sdk-1", vnc, "s1")
	if err := testkit.WaitFor(20*time.Second, func() bool {
		where, err := ra.agents.AgentLocations(context.Background(), []string{"sdk-1"})
		return err == nil && where["sdk-1"] == "rb"
	}); err != nil {
		b.Fatal("a does not see the agent on b")
	}
	direct := startWebsockify(b, vnc)
	viewerOn := func(ts *testServer) func(b *testing.B) (*vnctest.Client, int, int) {
		return func(b *testing.B) (*vnctest.Client, int, int) {
			c, _, w, h := (&streamingFixture{ts: ts}).viewer(b, "s1")
			return c, w, h
		}
	}
	paths := []struct {
		name string
		open func(b *testing.B) (*vnctest.Client, int, int)
	}{
		{"websockify", func(b *testing.B) (*vnctest.Client, int, int) { return dialWebsockify(b, direct) }},
		{"local", viewerOn(rb)},
		{"relayed", viewerOn(ra)},
	}
	for _, kind := range []string{"roundtrip", "screen"} {
		for _, p := range paths {
			b.Run(kind+"/"+p.name, func(b *testing.B) {
				c, w, h := p.open(b)
				if kind == "roundtrip" {
					w, h = 1, 1
				} else {
					b.SetBytes(int64(w * h * 4))
				}
				b.ResetTimer()
				for b.Loop() {
					fullFrame(b, c, w, h)
				}
			})
		}
	}
}
