package agentclient

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/streamspace/streamspace-realtime/internal/testkit"

	"github.com/streamspace/streamspace-realtime/models"
)

// While a tunnel pushes megabytes toward a control plane that reads slowly (it stops reading
// for a while, so TCP pushes back), the ack of a command sent meanwhile is written before
// every chunk the tunnel made after the ack was queued: control frames never wait behind the
// tunnel's data.
func TestTunnelControlFramesGoFirst(t *testing.T) {
	// Three tunnels push at once, so some tunnel always has a chunk ready.
	sessions := []string{"s1", "s2", "s3"}
	counters := map[string]*atomic.Int64{}
	handlers := map[string]TunnelHandler{}
	for _, s := range sessions {
		counters[s] = &atomic.Int64{}
		handlers[s] = stamped(counters[s])
	}
	atInvoke := make(chan int64, 1)
	cp, a, _ := setup(t, func(c *Config) {
		c.Tunnels = func(ctx context.Context, tn *Tunnel) error { return handlers[tn.SessionID()](ctx, tn) }
	})
	cp.UseTunnels(true)
	tokens, pause := make(chan struct{}), make(chan bool)
	cp.PaceReads(tokens)
	feederDone := make(chan struct{})
	go func() { // reads freely, or not at all while paused
		running := true
		for {
			var feed chan struct{}
			if running {
				feed = tokens
			}
			select {
			case feed <- struct{}{}:
			case running = <-pause:
			case <-feederDone:
				return
			}
		}
	}()
	t.Cleanup(func() { close(feederDone) })
	for _, s := range sessions {
		if err := a.OpenTunnel(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	// The ack is queued before the handler runs (dispatch): what tunnel 1's Write took by
	// then is known.
	a.Handle("probe", func(context.Context, Command) (map[string]any, error) {
		atInvoke <- counters["s1"].Load()
		return nil, nil
	})
	start(t, a)
	c := nextConn(t, cp)
	for i, s := range sessions {
		openTunnel(t, c, uint32(i+1), s, false, 8<<20)
	}
	nextOf1 := func() int64 {
		t.Helper()
		for {
			d, err := c.NextData(waitCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			if d.TunnelID == 1 {
				return int64(binary.BigEndian.Uint32(d.Data))
			}
		}
	}
	for nextOf1() < 16 {
	}
	pause <- false
	// Let the tunnels fill what TCP holds, so the writer is (most likely) blocked on the
	// socket when the command comes: 2 MiB taken by Write and not read by the control plane.
	testkit.Eventually(t, waitTimeout, "the tunnels to outrun the control plane", func() bool {
		var taken int64
		for _, n := range counters {
			taken += n.Load()
		}
		return taken-int64(len(c.DataFrames())) >= 2<<20/tunnelChunk
	})
	if err := c.SendCommand("c1", "probe", nil, 1); err != nil {
		t.Fatal(err)
	}
	var k int64
	select {
	case k = <-atInvoke:
	case <-waitCtx(t).Done():
		t.Fatal("the command was not run")
	}
	pause <- true
	next[models.AckMessage](t, c, models.MessageTypeAck)
	for nextOf1() <= k+8 {
	}

	ackAt := -1
	for i, f := range c.Frames() {
		if f.Type == models.MessageTypeAck {
			ackAt = i
			break
		}
	}
	later := 0
	for _, d := range c.DataFrames() {
		if d.TunnelID != 1 {
			continue
		}
		seq := int64(binary.BigEndian.Uint32(d.Data))
		if seq <= k {
			continue // possibly taken before the ack was queued
		}
		later++
		if d.After <= ackAt {
			t.Fatalf("chunk %d of tunnel 1, made after the ack was queued (%d chunks then), was written before it", seq, k)
		}
	}
	if later == 0 {
		t.Fatalf("no chunk came after the ack (k=%d): the test proved nothing", k)
	}
}

// Two tunnels pushing data both progress: the writer gives them turns.
func TestTunnelsTakeTurns(t *testing.T) {
	var accepted atomic.Int64
	_, _, c := setupTunnels(t, true, stamped(&accepted))
	const window = 8 << 20 // 128 chunks each
	openTunnel(t, c, 1, "s1", false, window)
	openTunnel(t, c, 2, "s2", false, window)
	got := map[uint32]int{}
	for got[1] < 32 || got[2] < 32 {
		d, err := c.NextData(waitCtx(t))
		if err != nil {
			t.Fatalf("after %v chunks: %v", got, err)
		}
		got[d.TunnelID]++
		if got[1] == window/tunnelChunk || got[2] == window/tunnelChunk {
			t.Fatalf("one tunnel sent its whole window while the other waited: %v chunks", got)
		}
	}
}

// ProxyTo dials the session's VNC server (the real one) before answering tunnel_opened, and
// the server's RFB banner comes through the tunnel.
func TestProxyToRealVNCServer(t *testing.T) {
	addr := os.Getenv("STREAMSPACE_TEST_VNC_ADDR")
	if addr == "" {
		addr = "127.0.0.1:5951"
	}
	dials := make(chan string, 2)
	var d net.Dialer
	_, _, c := setupTunnels(t, true, ProxyTo(func(ctx context.Context, session string) (net.Conn, error) {
		dials <- session
		if session == "gone" {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			free := l.Addr().String()
			l.Close()
			return d.DialContext(ctx, "tcp", free)
		}
		return d.DialContext(ctx, "tcp", addr)
	}))
	openTunnel(t, c, 1, "s1", false, models.DefaultTunnelWindow)
	if s := <-dials; s != "s1" {
		t.Fatalf("dialed for %q", s)
	}
	banner := nextData(t, c, 1)
	if len(banner) < 12 || string(banner[:4]) != "RFB " || banner[11] != '\n' {
		t.Fatalf("banner %q is not an RFB protocol version", banner)
	}
	if string(banner) == "RFB 003.008\n" {
		// A whole handshake through the tunnel, so the server does not count a failure.
		if err := c.SendData(1, []byte("RFB 003.008\n")); err != nil {
			t.Fatal(err)
		}
		sec := nextData(t, c, 1)
		if len(sec) < 2 || sec[0] == 0 || !slices.Contains(sec[1:], 1) {
			t.Fatalf("security types %v, want None among them", sec)
		}
		if err := c.SendData(1, []byte{1}); err != nil {
			t.Fatal(err)
		}
		if res := readData(t, c, 1, 4); binary.BigEndian.Uint32(res) != 0 {
			t.Fatalf("security result %v", res)
		}
		if err := c.SendData(1, []byte{1}); err != nil { // ClientInit, shared
			t.Fatal(err)
		}
		init := nextData(t, c, 1)
		if len(init) < 24 || binary.BigEndian.Uint16(init) == 0 {
			t.Fatalf("ServerInit %v", init)
		}
	} else {
		// The server turned this address away (RFB 3.3 refusal after too many failures of
		// other clients): the banner still came through the tunnel.
		t.Logf("the VNC server refused the connection: %q", banner)
	}
	if err := c.Send(models.MessageTypeTunnelClose, models.TunnelCloseMessage{TunnelID: 1}); err != nil {
		t.Fatal(err)
	}

	// A VNC server that cannot be reached: tunnel_close with the dial's error, no tunnel_opened.
	if err := c.Send(models.MessageTypeTunnelOpen, models.TunnelOpenMessage{TunnelID: 2, SessionID: "gone", Window: models.DefaultTunnelWindow}); err != nil {
		t.Fatal(err)
	}
	cl := next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose)
	if cl.TunnelID != 2 || len(cl.Reason) == 0 || len(cl.Reason) > 128 {
		t.Fatalf("tunnel_close %+v, want tunnel 2 with the dial error", cl)
	}
	for _, f := range c.Frames() {
		if f.Type == models.MessageTypeTunnelOpened {
			m, _ := agenttestDecodeOpened(f)
			if m.TunnelID == 2 {
				t.Fatal("tunnel_opened for a tunnel whose dial failed")
			}
		}
	}
}

// When the VNC server closes, ProxyTo ends the tunnel with a clean tunnel_close after the
// bytes it sent.
func TestProxyToEndsTheTunnelWhenTheServerCloses(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, err = c.Write([]byte("RFB 003.008\n"))
			c.Close()
		}
		served <- err
	}()
	var d net.Dialer
	_, _, c := setupTunnels(t, true, ProxyTo(func(ctx context.Context, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", l.Addr().String())
	}))
	openTunnel(t, c, 1, "s1", false, models.DefaultTunnelWindow)
	if got := string(readData(t, c, 1, 12)); got != "RFB 003.008\n" {
		t.Fatalf("data %q", got)
	}
	if err := recvErr(t, served); err != nil {
		t.Fatal(err)
	}
	cl := next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose)
	if cl != (models.TunnelCloseMessage{TunnelID: 1}) {
		t.Fatalf("tunnel_close %+v, want a clean close of tunnel 1", cl)
	}
	roundTrip(t, c)
	if cls := closesOf(t, c); len(cls) != 1 {
		t.Fatalf("tunnel_close frames %+v, want one", cls)
	}
}
