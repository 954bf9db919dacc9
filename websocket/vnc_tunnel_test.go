package websocket

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// openTunnel1 opens a viewer on a scripted tunnel/1 agent and answers its tunnel_open with
// window; it returns the viewer and the tunnel id.
func openTunnel1(t *testing.T, r *vncRig, a *fakeAgent, session, user string, viewOnly bool, window int64) (*websocket.Conn, uint32) {
	t.Helper()
	v, code := r.viewer(session, user, viewOnly)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("viewer got %d", code)
	}
	o := decodeAs[models.TunnelOpenMessage](t, a.expect(models.MessageTypeTunnelOpen))
	if o.SessionID != session || o.ViewOnly != viewOnly || o.Window <= 0 {
		t.Fatalf("tunnel_open %+v", o)
	}
	a.send(models.MessageTypeTunnelOpened, models.TunnelOpenedMessage{TunnelID: o.TunnelID, Window: window})
	return v, o.TunnelID
}

// TestVNCViewOnlyDropsInput: a view-only viewer's key, pointer and clipboard messages never
// reach the agent and are counted; its update requests and handshake do, ClientInit shared.
func TestVNCViewOnlyDropsInput(t *testing.T) {
	r := newVNCRig(t, AgentHubConfig{})
	r.addSession("a1", "s1")
	a := r.dialAgent("a1", true, 0)
	v, id := openTunnel1(t, r, a, "s1", "u1", true, models.DefaultTunnelWindow)
	if id != 1 {
		t.Fatalf("first tunnel id %d, want 1", id)
	}
	a.sendData(id, []byte("RFB 003.008\n\x01\x01"))
	readViewer(t, v, 14)
	a.sendData(id, []byte{0, 0, 0, 0})
	readViewer(t, v, 4)
	key := []byte{4, 1, 0, 0, 0, 0, 0, 0x61}
	pointer := []byte{5, 1, 0, 10, 0, 10}
	clip := []byte{6, 0, 0, 0, 0, 0, 0, 2, 'h', 'i'}
	update := []byte{3, 0, 0, 0, 0, 0, 0, 64, 0, 64}
	stream := bytes.Join([][]byte{[]byte("RFB 003.008\n"), {1}, {0}, key, pointer, clip, update}, nil)
	if err := v.WriteMessage(websocket.BinaryMessage, stream); err != nil {
		t.Fatal(err)
	}
	want := bytes.Join([][]byte{[]byte("RFB 003.008\n"), {1}, {1}, update}, nil)
	var got []byte
	for len(got) < len(want) {
		m := a.expect("data")
		got = append(got, m.data...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("agent got %v, want %v", got, want)
	}
	for _, kind := range []string{"key", "pointer", "clipboard"} {
		if n := testutil.ToFloat64(r.hub.metrics.vnc.inputDropped.WithLabelValues(kind)); n != 1 {
			t.Errorf("input dropped %s = %v, want 1", kind, n)
		}
	}
	// An unknown message type ends the viewer with 1008.
	if err := v.WriteMessage(websocket.BinaryMessage, []byte{200}); err != nil {
		t.Fatal(err)
	}
	if code, reason := viewerClosed(t, v); code != websocket.ClosePolicyViolation || reason != "unsupported RFB message" {
		t.Fatalf("viewer closed %d %q", code, reason)
	}
	if c := decodeAs[models.TunnelCloseMessage](t, a.expect(models.MessageTypeTunnelClose)); c.TunnelID != id {
		t.Fatalf("tunnel_close %+v", c)
	}
}

// TestVNCTunnelRefusals: each refusal of 6.1 and 6.3 closes only its tunnel; the agent's socket
// and another tunnel keep working.
func TestVNCTunnelRefusals(t *testing.T) {
	r := newVNCRig(t, AgentHubConfig{VNC: VNCConfig{Window: 16 << 10, MaxPerUser: 3, MaxPerAgent: 4, OpenTimeout: 200 * time.Millisecond}})
	r.addSession("a1", "s1")
	a := r.dialAgent("a1", true, 0)
	conn := r.hub.GetConnection("a1")
	keep, keepID := openTunnel1(t, r, a, "s1", "u0", false, 1<<20)
	// alive checks the kept tunnel both ways.
	alive := func() {
		t.Helper()
		a.sendData(keepID, []byte("ping"))
		if got := readViewer(t, keep, 4); string(got) != "ping" {
			t.Fatalf("kept viewer got %q", got)
		}
		if err := keep.WriteMessage(websocket.BinaryMessage, []byte("pong")); err != nil {
			t.Fatal(err)
		}
		if m := a.expect("data"); m.tunnel != keepID || string(m.data) != "pong" {
			t.Fatalf("agent got %d %q", m.tunnel, m.data)
		}
	}
	closedWith := func(v *websocket.Conn, code int, reason string) {
		t.Helper()
		if c, rsn := viewerClosed(t, v); c != code || rsn != reason {
			t.Fatalf("viewer closed %d %q, want %d %q", c, rsn, code, reason)
		}
	}
	violation := func(id uint32) {
		t.Helper()
		c := decodeAs[models.TunnelCloseMessage](t, a.expect(models.MessageTypeTunnelClose))
		if c.TunnelID != id || c.Reason != "protocol violation" {
			t.Fatalf("tunnel_close %+v, want %d protocol violation", c, id)
		}
	}

	// Data beyond the window (16 KiB).
	v, id := openTunnel1(t, r, a, "s1", "u1", false, 1<<20)
	a.sendData(id, make([]byte, 20<<10))
	violation(id)
	closedWith(v, websocket.CloseInternalServerErr, "tunnel protocol violation")
	alive()
	// A frame over a chunk (64 KiB): that tunnel's violation, the socket goes on.
	v, id = openTunnel1(t, r, a, "s1", "u1", false, 1<<20)
	a.sendData(id, make([]byte, models.MaxTunnelChunk+1))
	violation(id)
	closedWith(v, websocket.CloseInternalServerErr, "tunnel protocol violation")
	alive()
	// Credit past 16 MiB.
	v, id = openTunnel1(t, r, a, "s1", "u1", false, 1<<20)
	a.send(models.MessageTypeTunnelCredit, models.TunnelCreditMessage{TunnelID: id, Bytes: models.MaxTunnelWindow})
	violation(id)
	closedWith(v, websocket.CloseInternalServerErr, "tunnel protocol violation")
	// Data for a tunnel never opened; data for one closed a moment ago is dropped silently.
	a.sendData(99, []byte("x"))
	violation(99)
	a.sendData(id, []byte("late"))
	alive()
	// The agent refuses, or does not answer.
	v, code := r.viewer("s1", "u1", false)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("viewer got %d", code)
	}
	o := decodeAs[models.TunnelOpenMessage](t, a.expect(models.MessageTypeTunnelOpen))
	a.send(models.MessageTypeTunnelClose, models.TunnelCloseMessage{TunnelID: o.TunnelID, Reason: "connection refused"})
	closedWith(v, websocket.CloseInternalServerErr, "agent error: connection refused")
	v, _ = r.viewer("s1", "u1", false)
	o = decodeAs[models.TunnelOpenMessage](t, a.expect(models.MessageTypeTunnelOpen))
	closedWith(v, websocket.CloseInternalServerErr, "agent error: no answer")
	if c := decodeAs[models.TunnelCloseMessage](t, a.expect(models.MessageTypeTunnelClose)); c.TunnelID != o.TunnelID {
		t.Fatalf("tunnel_close %+v after no answer", c)
	}
	// Browser frames: text (1003), over 64 KiB (1009).
	v, _ = openTunnel1(t, r, a, "s1", "u1", false, 1<<20)
	_ = v.WriteMessage(websocket.TextMessage, []byte("hello"))
	closedWith(v, websocket.CloseUnsupportedData, "binary frames only")
	v, _ = openTunnel1(t, r, a, "s1", "u1", false, 1<<20)
	_ = v.WriteMessage(websocket.BinaryMessage, make([]byte, 64<<10+1))
	closedWith(v, websocket.CloseMessageTooBig, "message too big")
	alive()

	// Limits: 3 per user (u1 has none open now), 4 per agent (the kept one counts).
	testkit.Eventually(t, 5*time.Second, "closed tunnels released", func() bool {
		conn.tunnels.mu.Lock()
		defer conn.tunnels.mu.Unlock()
		return conn.tunnels.count == 1
	})
	for range 3 {
		openTunnel1(t, r, a, "s1", "u1", false, 1<<20)
	}
	if _, code := r.viewer("s1", "u1", false); code != http.StatusTooManyRequests {
		t.Fatalf("fourth viewer of a user got %d, want 429", code)
	}
	if _, code := r.viewer("s1", "u2", false); code != http.StatusTooManyRequests {
		t.Fatalf("fifth tunnel of an agent got %d, want 429", code)
	}
	alive()
	if r.hub.GetConnection("a1") != conn || conn.closing() {
		t.Fatal("a refusal closed the agent's socket")
	}
}

// TestVNCCreditBothWays: a browser that does not read stops the agent's sender at the window
// (the server grants credit only for what it wrote to the browser), and an agent that grants
// no credit stops the browser's bytes at the window, the browser's reader then waiting.
func TestVNCCreditBothWays(t *testing.T) {
	const window = 64 << 10
	r := newVNCRig(t, AgentHubConfig{VNC: VNCConfig{Window: window, ToAgentQueue: 64 << 10}})
	r.addSession("a1", "s1")
	a := r.dialAgent("a1", true, 0)
	v, id := openTunnel1(t, r, a, "s1", "u1", false, window)
	tun := tunnelOf(r.hub, "a1", id)

	// Browser to agent: the agent grants nothing beyond its window.
	const total = 1 << 20
	var written sync.WaitGroup
	written.Go(func() {
		for i := 0; i < total; i += 32 << 10 {
			if v.WriteMessage(websocket.BinaryMessage, bytes.Repeat([]byte{byte(i >> 15)}, 32<<10)) != nil {
				return
			}
		}
	})
	got := 0
	for got < window {
		m := a.expect("data")
		got += len(m.data)
	}
	if got != window {
		t.Fatalf("agent got %d bytes on a %d window", got, window)
	}
	testkit.Eventually(t, 10*time.Second, "the server's queue toward the agent full", func() bool {
		n, _, _ := tunnelState(tun)
		return n >= 32<<10
	})
	// Credit for the rest lets everything through, in order, never past the credit.
	credited := window
	for got < total {
		if got == credited {
			a.send(models.MessageTypeTunnelCredit, models.TunnelCreditMessage{TunnelID: id, Bytes: window})
			credited += window
		}
		m := a.expect("data")
		if want := byte(got >> 15); m.data[0] != want {
			t.Fatalf("byte %d is %d, want %d", got, m.data[0], want)
		}
		got += len(m.data)
		if got > credited {
			t.Fatalf("agent got %d bytes with %d credited", got, credited)
		}
	}
	written.Wait()

	// Agent to browser: the browser reads nothing yet, so no credit comes beyond what the
	// server wrote; the agent sends within the window only.
	sent := 0
	for sent < window {
		a.sendData(id, bytes.Repeat([]byte{7}, 16<<10))
		sent += 16 << 10
	}
	testkit.Eventually(t, 10*time.Second, "the agent's window used up", func() bool {
		_, recv, _ := tunnelState(tun)
		return recv == 0 || recv == window // either nothing credited yet, or all written and credited
	})
	if b := readViewer(t, v, window); len(b) != window {
		t.Fatalf("viewer got %d bytes", len(b))
	}
	c := decodeAs[models.TunnelCreditMessage](t, a.expect(models.MessageTypeTunnelCredit))
	if c.TunnelID != id || c.Bytes <= 0 || c.Bytes > window {
		t.Fatalf("credit %+v", c)
	}
}

// TestVNCControlFirst: a command submitted while a tunnel floods the agent's socket reaches
// the agent before the tunnel data queued when it was submitted (but one chunk), and a
// heartbeat is handled meanwhile.
func TestVNCControlFirst(t *testing.T) {
	r := newVNCRig(t, AgentHubConfig{VNC: VNCConfig{Window: models.MaxTunnelWindow}})
	r.addSession("a1", "s1")
	a := r.dialAgent("a1", true, 4096)
	conn := r.hub.GetConnection("a1")
	v, id := openTunnel1(t, r, a, "s1", "u1", false, models.MaxTunnelWindow)
	tun := tunnelOf(r.hub, "a1", id)
	a.pause.Lock() // the agent stops reading: the server's writer backs up
	paused := true
	defer func() {
		if paused {
			a.pause.Unlock()
		}
	}()
	stop := make(chan struct{})
	var flood sync.WaitGroup
	flood.Go(func() {
		chunk := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if v.WriteMessage(websocket.BinaryMessage, chunk) != nil {
				return
			}
		}
	})
	a.send(models.MessageTypeHeartbeat, models.HeartbeatMessage{Status: models.AgentStatusDraining})
	testkit.Eventually(t, 5*time.Second, "heartbeat handled during the flood", func() bool {
		return conn.Status() == models.AgentStatusDraining
	})
	// With the tunnels' lock held the writer can take no chunk: what is queued now is queued
	// before the command, and only the chunk the writer may be waiting to take can precede it.
	var queued int
	testkit.Eventually(t, 20*time.Second, "tunnel data queued", func() bool {
		conn.tunnels.mu.Lock()
		if queued = len(tun.toAgent); queued >= 4*tunnelChunk {
			return true // keeping the lock
		}
		conn.tunnels.mu.Unlock()
		return false
	})
	cmd, err := r.hub.SubmitCommand(t.Context(), models.AgentCommand{AgentID: "a1", Action: models.ActionStopSession, Payload: map[string]any{"sessionId": "s1"}}, nil)
	if err == nil {
		// Queued for the writer, or already taken by it: a writer waiting between two writes
		// (the kernel's buffers not yet full) takes the command at once and marks it sent.
		err = testkit.WaitFor(5*time.Second, func() bool {
			if len(conn.Send) > 0 {
				return true
			}
			got, err := r.db.GetCommand(t.Context(), cmd.CommandID)
			return err == nil && got.Status == models.CommandStatusSent
		})
	}
	conn.tunnels.mu.Unlock()
	close(stop)
	paused = false
	a.pause.Unlock()
	if err != nil {
		got, _ := r.db.GetCommand(t.Context(), cmd.CommandID)
		t.Fatalf("command not queued: %v (status %s)", err, got.Status)
	}
	if queued < 2*tunnelChunk {
		t.Fatalf("only %d bytes queued", queued)
	}
	after := -1
	for after < queued-tunnelChunk {
		m := a.expect2()
		switch {
		case m.typ == models.MessageTypeCommand:
			if c := decodeAs[models.CommandMessage](t, m); c.CommandID != cmd.CommandID {
				t.Fatalf("command %+v", c)
			}
			after = 0
		case m.typ == "data" && after >= 0:
			after += len(m.data)
		}
	}
	_ = v.Close()
	flood.Wait()
}

// TestVNCTwoTunnelsProgress: while one viewer floods its tunnel, another's round trips go on.
func TestVNCTwoTunnelsProgress(t *testing.T) {
	r := newVNCRig(t, AgentHubConfig{})
	r.addSession("a1", "s1")
	a := r.dialAgent("a1", true, 0)
	a.relayTo(echoServer(t), models.DefaultTunnelWindow)
	flooder, _ := r.viewer("s1", "u1", false)
	other, _ := r.viewer("s1", "u2", false)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // reads the echo so the flood goes on
		for {
			if _, _, err := flooder.ReadMessage(); err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		chunk := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if flooder.WriteMessage(websocket.BinaryMessage, chunk) != nil {
				return
			}
		}
	})
	for i := range 20 {
		msg := []byte{byte(i), 1, 2, 3}
		if err := other.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		if got := readViewer(t, other, 4); !bytes.Equal(got, msg) {
			t.Fatalf("round trip %d got %v", i, got)
		}
	}
	close(stop)
	_ = flooder.Close()
	wg.Wait()
}

// TestVNCViewerCloses: the agent's socket ending closes its viewers with 1011, the hub's
// shutdown with 1001, a context's CloseCause with its code, Expires with 4003.
func TestVNCViewerCloses(t *testing.T) {
	r := newVNCRig(t, AgentHubConfig{})
	r.addSession("a1", "s1")
	r.addSession("a2", "s2")
	a := r.dialAgent("a1", true, 0)
	v, _ := openTunnel1(t, r, a, "s1", "u1", false, 1<<20)
	_ = a.conn.Close()
	if c, rsn := viewerClosed(t, v); c != websocket.CloseInternalServerErr || rsn != "agent disconnected" {
		t.Fatalf("viewer closed %d %q", c, rsn)
	}

	// Serve's context and Expires, on a StreamSpace tunnel.
	b := r.dialAgent("a2", false, 0)
	serve := func(ctx context.Context, expires time.Time) (*websocket.Conn, chan error) {
		b.send(models.MessageTypeVNCReady, models.VNCReadyMessage{SessionID: "s2"})
		var tun *Tunnel
		testkit.Eventually(t, 5*time.Second, "tunnel ready", func() bool {
			sess, _ := r.db.GetSession(t.Context(), "s2")
			var err error
			tun, err = r.hub.OpenTunnel(t.Context(), TunnelRequest{Session: sess, UserID: "u1", Expires: expires})
			return err == nil
		})
		done := make(chan error, 1)
		srv := newViewerPair(t, func(c *websocket.Conn) { done <- tun.Serve(ctx, c) })
		return srv, done
	}
	ctx, cancel := context.WithCancelCause(t.Context())
	v, done := serve(ctx, time.Time{})
	cancel(CloseCause{Code: CloseAccessRevoked, Reason: "access revoked"})
	if c, rsn := viewerClosed(t, v); c != CloseAccessRevoked || rsn != "access revoked" {
		t.Fatalf("viewer closed %d %q", c, rsn)
	}
	if err := <-done; err == nil {
		t.Fatal("Serve returned nil for a revoked viewer")
	}
	if cl := decodeAs[models.VNCCloseMessage](t, b.expect(models.MessageTypeVNCClose)); cl.Reason != "client_disconnect" {
		t.Fatalf("vnc_close %+v", cl)
	}
	v, _ = serve(t.Context(), time.Now().Add(50*time.Millisecond))
	if c, rsn := viewerClosed(t, v); c != CloseTokenExpired || rsn != "token expired" {
		t.Fatalf("viewer closed %d %q", c, rsn)
	}
	b.expect(models.MessageTypeVNCClose)
	v, _ = serve(t.Context(), time.Time{})
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	_ = r.hub.Shutdown(stopCtx)
	if c, rsn := viewerClosed(t, v); c != websocket.CloseGoingAway || rsn != "server shutting down" {
		t.Fatalf("viewer closed %d %q", c, rsn)
	}
}

// TestVNCTunnelIDsReachTheAgentInOrder: viewers attaching at once get their tunnel_open
// frames to the agent with ids rising, as an agent requires of ids it has not seen
// (PROTOCOL.md 6.3: it answers an id not above every earlier one as reused).
func TestVNCTunnelIDsReachTheAgentInOrder(t *testing.T) {
	const viewers = 16
	r := newVNCRig(t, AgentHubConfig{VNC: VNCConfig{MaxPerUser: viewers, MaxPerAgent: viewers}})
	r.addSession("a1", "s1")
	a := r.dialAgent("a1", true, 0)
	var wg sync.WaitGroup
	errs := make(chan error, viewers)
	for range viewers {
		wg.Go(func() {
			conn, _, err := websocket.DefaultDialer.Dial(r.viewerURL+"/s1?user=u1", nil)
			if err != nil {
				errs <- err
				return
			}
			t.Cleanup(func() { _ = conn.Close() })
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("viewer: %v", err)
	}
	last := uint32(0)
	for range viewers {
		o := decodeAs[models.TunnelOpenMessage](t, a.expect(models.MessageTypeTunnelOpen))
		if o.TunnelID <= last {
			t.Fatalf("tunnel_open %d after %d", o.TunnelID, last)
		}
		last = o.TunnelID
	}
}
