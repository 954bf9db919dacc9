package agentsim

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/agentclient/agenttest"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
)

// banner is what fakeVNC sends first, as a VNC server does.
const banner = "RFB 003.008\n"

// fakeVNC listens on a local TCP port and, for each connection, sends banner and holds the
// connection until the other side closes it: a VNC server as far as the simulator can tell
// (agentclient's tests relay a whole handshake to the real one). Its address is returned.
func fakeVNC(t *testing.T) string {
	t.Helper()
	return vnctest.ServeTCP(t, func(c net.Conn) {
		if _, err := c.Write([]byte(banner)); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	})
}

// runVNC starts a Sim whose sessions are streamed from a fakeVNC, against a control
// plane that takes up tunnel/1 when ext.
func runVNC(t *testing.T, ext bool) (*agenttest.Conn, string) {
	t.Helper()
	addr := fakeVNC(t)
	cp := agenttest.NewServer("k")
	t.Cleanup(cp.Close)
	cp.UseTunnels(ext)
	var d net.Dialer
	sim, err := New(Config{
		Config: agentclient.Config{
			ServerURL: cp.URL, AgentID: "sim-1", APIKey: "k", Platform: models.PlatformDocker,
			HeartbeatInterval: time.Hour, BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		},
		StepDelay: 5 * time.Millisecond,
		VNC: agentclient.ProxyTo(func(ctx context.Context, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- sim.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("Run did not return")
		}
	})
	c, err := cp.NextConn(wctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return c, addr
}

// With StreamSpace's messages, a session that reaches running announces its tunnel and the VNC
// server's banner comes through it; stopping the session ends it.
func TestRunningSessionAnnouncesItsTunnel(t *testing.T) {
	c, addr := runVNC(t, false)
	command(t, c, "c1", models.ActionStartSession, "s1")
	expectStatus(t, c, models.SessionStatePending)
	expectStatus(t, c, models.SessionStateRunning)
	ready := next[models.VNCReadyMessage](t, c, models.MessageTypeVNCReady)
	_, port, _ := net.SplitHostPort(addr)
	if ready.SessionID != "s1" || strconv.Itoa(ready.VNCPort) != port {
		t.Fatalf("vnc_ready %+v, want s1 on port %s", ready, port)
	}
	data := next[models.VNCDataMessage](t, c, models.MessageTypeVNCData)
	b, err := base64.StdEncoding.DecodeString(data.Data)
	if err != nil || string(b) != banner {
		t.Fatalf("first bytes %q (%v), want the RFB banner", b, err)
	}
	command(t, c, "c2", models.ActionStopSession, "s1")
	expectStatus(t, c, models.SessionStateStopped)
	next[models.CompleteMessage](t, c, models.MessageTypeComplete)
	next[models.CompleteMessage](t, c, models.MessageTypeComplete)
	// Stopped: the viewer leaving (vnc_close) opens no new tunnel.
	if err := c.Send(models.MessageTypeVNCClose, models.VNCCloseMessage{SessionID: "s1", Reason: "client_disconnect"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(models.MessageTypePing, models.PingMessage{Timestamp: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	next[models.PongMessage](t, c, models.MessageTypePong)
	n := 0
	for _, f := range c.Frames() {
		if f.Type == models.MessageTypeVNCReady {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d vnc_ready, want 1", n)
	}
}

// With tunnel/1, tunnels open for running sessions only.
func TestTunnelsOnlyToRunningSessions(t *testing.T) {
	c, _ := runVNC(t, true)
	open := func(id uint32, session string) {
		t.Helper()
		if err := c.Send(models.MessageTypeTunnelOpen, models.TunnelOpenMessage{TunnelID: id, SessionID: session, Window: models.DefaultTunnelWindow}); err != nil {
			t.Fatal(err)
		}
	}
	open(1, "s1")
	if cl := next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose); cl.TunnelID != 1 || cl.Reason == "" {
		t.Fatalf("tunnel_close %+v for a session not started", cl)
	}
	command(t, c, "c1", models.ActionStartSession, "s1")
	next[models.CompleteMessage](t, c, models.MessageTypeComplete)
	open(2, "s1")
	if m := next[models.TunnelOpenedMessage](t, c, models.MessageTypeTunnelOpened); m.TunnelID != 2 {
		t.Fatalf("tunnel_opened %+v", m)
	}
	d, err := c.NextData(wctx(t))
	if err != nil || d.TunnelID != 2 || string(d.Data) != banner {
		t.Fatalf("first data frame %+v (%v), want tunnel 2's RFB banner", d, err)
	}
	command(t, c, "c2", models.ActionStopSession, "s1")
	next[models.CompleteMessage](t, c, models.MessageTypeComplete)
	if cl := next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose); cl != (models.TunnelCloseMessage{TunnelID: 2, Reason: "session stopped"}) {
		t.Fatalf("tunnel_close %+v, want tunnel 2 ended as its session stopped", cl)
	}
	open(3, "s1")
	if cl := next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose); cl.TunnelID != 3 || cl.Reason == "" {
		t.Fatalf("tunnel_close %+v for a stopped session", cl)
	}
}
