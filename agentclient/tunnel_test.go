package agentclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/agentclient/agenttest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestTunnelRelaysBothWaysAndClosesFromEitherSide(t *testing.T) {
	var live atomic.Int32
	ends := make(chan error, 4)
	type seen struct {
		session  string
		viewOnly bool
	}
	seenc := make(chan seen, 4)
	echo := echoHandler("RFB 003.008\n", &live, ends)
	_, a, c := setupTunnels(t, true, func(ctx context.Context, tn *Tunnel) error {
		seenc <- seen{tn.SessionID(), tn.ViewOnly()}
		return echo(ctx, tn)
	})
	if !c.Tunnels {
		t.Fatal("the control plane did not take up tunnel/1")
	}

	// Tunnel 1: closed by the control plane.
	opened := openTunnel(t, c, 1, "s1", false, models.DefaultTunnelWindow)
	if opened.Window != models.DefaultTunnelWindow {
		t.Errorf("tunnel_opened window %d, want %d", opened.Window, models.DefaultTunnelWindow)
	}
	if s := <-seenc; s != (seen{"s1", false}) {
		t.Errorf("handler saw %+v", s)
	}
	if got := string(nextData(t, c, 1)); got != "RFB 003.008\n" {
		t.Fatalf("first bytes %q, want the greeting", got)
	}
	if err := c.SendData(1, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got := string(nextData(t, c, 1)); got != "hello" {
		t.Fatalf("echo %q, want hello", got)
	}
	if err := c.Send(models.MessageTypeTunnelClose, models.TunnelCloseMessage{TunnelID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, ends); err != nil {
		t.Fatalf("handler of a tunnel the control plane closed: %v, want a clean EOF", err)
	}

	// Tunnel 2, view-only: closed by the agent when its handler returns.
	openTunnel(t, c, 2, "s2", true, models.DefaultTunnelWindow)
	if s := <-seenc; s != (seen{"s2", true}) {
		t.Errorf("handler saw %+v, want session s2 view-only", s)
	}
	nextData(t, c, 2)
	if err := c.SendData(2, []byte("quit")); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, ends); err != nil {
		t.Fatal(err)
	}
	cl := next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose)
	if cl != (models.TunnelCloseMessage{TunnelID: 2}) {
		t.Errorf("tunnel_close %+v, want tunnel 2 with no reason", cl)
	}
	roundTrip(t, c)
	if cls := closesOf(t, c); len(cls) != 1 {
		t.Errorf("tunnel_close frames %+v: the agent must not answer the control plane's close", cls)
	}

	// A session the agent does not run (never given to OpenTunnel, or closed).
	a.CloseTunnel("s2")
	for id, s := range []string{3: "other", 4: "s2"} {
		if s == "" {
			continue
		}
		if err := c.Send(models.MessageTypeTunnelOpen, models.TunnelOpenMessage{TunnelID: uint32(id), SessionID: s, Window: 1024}); err != nil {
			t.Fatal(err)
		}
		cl := next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose)
		if cl != (models.TunnelCloseMessage{TunnelID: uint32(id), Reason: "session not running on this agent"}) {
			t.Errorf("tunnel_close %+v for session %s", cl, s)
		}
	}
	testkit.Eventually(t, waitTimeout, "handlers to end", func() bool { return live.Load() == 0 })
}

// A handler's Write and an io.Copy to the tunnel (ReadFrom, reading straight into frames) both
// send chunks of at most tunnelChunk within the window, resume on credit, and keep the bytes.
func TestTunnelNeverExceedsTheWindowAndResumesOnCredit(t *testing.T) {
	const total = 1 << 20
	const window = 100_000
	pattern := make([]byte, total)
	for i := range pattern {
		pattern[i] = byte(i % 251)
	}
	send := map[string]func(tn *Tunnel) (int64, error){
		"Write": func(tn *Tunnel) (int64, error) {
			n, err := tn.Write(pattern)
			return int64(n), err
		},
		// The wrapper hides bytes.Reader's WriteTo, as a net.Conn's reads are.
		"ReadFrom": func(tn *Tunnel) (int64, error) {
			return io.Copy(tn, struct{ io.Reader }{bytes.NewReader(pattern)})
		},
	}
	for name, write := range send {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			_, _, c := setupTunnels(t, true, func(ctx context.Context, tn *Tunnel) error {
				n, err := write(tn)
				if err == nil && n != total {
					err = io.ErrShortWrite
				}
				done <- err
				<-ctx.Done()
				return nil
			})
			openTunnel(t, c, 1, "s1", false, window)
			granted, got := int64(window), 0
			var all []byte
			for got < total {
				d := nextData(t, c, 1)
				if len(d) > tunnelChunk {
					t.Fatalf("chunk of %d bytes, over %d", len(d), tunnelChunk)
				}
				got += len(d)
				all = append(all, d...)
				if int64(got) > granted {
					t.Fatalf("received %d bytes with only %d granted", got, granted)
				}
				if int64(got) == granted {
					// The window is exhausted: the agent must stop until credit comes.
					roundTrip(t, c)
					if n := recorded(c); int64(n) > granted {
						t.Fatalf("%d bytes arrived with only %d granted", n, granted)
					}
					credit(t, c, 1, 70_000)
					granted += 70_000
				}
			}
			if err := recvErr(t, done); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !bytes.Equal(all, pattern) {
				t.Fatal("the viewer got other bytes than the handler sent")
			}
		})
	}
}

// recorded is how many data bytes arrived so far, consumed or not.
func recorded(c *agenttest.Conn) int {
	n := 0
	for _, d := range c.DataFrames() {
		n += len(d.Data)
	}
	return n
}

func TestTunnelCreditFollowsWhatTheHandlerRead(t *testing.T) {
	reads := make(chan int)
	readDone := make(chan error)
	_, _, c := setupTunnels(t, true, func(ctx context.Context, tn *Tunnel) error {
		if err := tn.Accept(); err != nil {
			return err
		}
		for n := range reads {
			_, err := io.ReadFull(tn, make([]byte, n))
			readDone <- err
		}
		return nil
	})
	t.Cleanup(func() { close(reads) })
	openTunnel(t, c, 1, "s1", false, models.DefaultTunnelWindow)
	// Credit comes once a quarter of the window was read (PROTOCOL.md 6.3).
	const quarter = models.DefaultTunnelWindow / 4
	chunk := make([]byte, 16<<10)
	send := func(n int) {
		t.Helper()
		for range n / len(chunk) {
			if err := c.SendData(1, chunk); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(3 * quarter) // within the window
	read := func(n int) {
		t.Helper()
		reads <- n
		if err := <-readDone; err != nil {
			t.Fatal(err)
		}
	}
	credits := func() (sum int64) {
		for _, f := range c.Frames() {
			if f.Type == models.MessageTypeTunnelCredit {
				m, _ := agenttest.Decode[models.TunnelCreditMessage](f)
				if m.TunnelID != 1 {
					t.Errorf("credit for tunnel %d", m.TunnelID)
				}
				sum += m.Bytes
			}
		}
		return sum
	}
	roundTrip(t, c)
	if n := credits(); n != 0 {
		t.Fatalf("%d bytes of credit before the handler read anything", n)
	}
	read(quarter / 2)
	roundTrip(t, c)
	if n := credits(); n != 0 {
		t.Fatalf("%d bytes of credit after %d read, want none below a quarter of the window", n, quarter/2)
	}
	read(quarter/2 + 16<<10)
	roundTrip(t, c)
	if n := credits(); n != quarter+16<<10 {
		t.Fatalf("credit %d after %d read, want %d", n, quarter+16<<10, quarter+16<<10)
	}
	read(2*quarter - 16<<10)
	roundTrip(t, c)
	if n := credits(); n != 3*quarter {
		t.Fatalf("credit %d after %d read, want %d", n, 3*quarter, 3*quarter)
	}
	// The credit granted makes room: a whole window more fits.
	send(models.DefaultTunnelWindow)
	read(models.DefaultTunnelWindow)
	roundTrip(t, c)
	if cls := closesOf(t, c); len(cls) != 0 {
		t.Fatalf("data within the granted window closed the tunnel: %+v", cls)
	}
}

func TestTunnelViolationsCloseOnlyThatTunnel(t *testing.T) {
	var live atomic.Int32
	ends := make(chan error, 4)
	echo := echoHandler("hi", &live, nil)
	_, _, c := setupTunnels(t, true, func(ctx context.Context, tn *Tunnel) error {
		if tn.SessionID() != "stuck" {
			return echo(ctx, tn)
		}
		// Never reads: the viewer's bytes fill the window.
		if err := tn.Accept(); err != nil {
			return err
		}
		<-ctx.Done()
		ends <- ctx.Err()
		return nil
	})
	openTunnel(t, c, 1, "stuck", false, models.DefaultTunnelWindow)
	openTunnel(t, c, 2, "s2", false, models.DefaultTunnelWindow)
	nextData(t, c, 2)

	// Data for a tunnel never opened.
	if err := c.SendData(7, []byte("x")); err != nil {
		t.Fatal(err)
	}
	cl := next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose)
	if cl != (models.TunnelCloseMessage{TunnelID: 7, Reason: "protocol violation"}) {
		t.Fatalf("tunnel_close %+v, want tunnel 7 protocol violation", cl)
	}

	// Beyond tunnel 1's window.
	chunk := make([]byte, 64<<10)
	for range models.DefaultTunnelWindow/len(chunk) + 1 {
		if err := c.SendData(1, chunk); err != nil {
			t.Fatal(err)
		}
	}
	cl = next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose)
	if cl != (models.TunnelCloseMessage{TunnelID: 1, Reason: "protocol violation"}) {
		t.Fatalf("tunnel_close %+v, want tunnel 1 protocol violation", cl)
	}
	if err := recvErr(t, ends); !errors.Is(err, context.Canceled) {
		t.Fatalf("the closed tunnel's ctx: %v, want canceled", err)
	}
	// Late data for the closed tunnel is discarded silently; tunnel 2 goes on.
	if err := c.SendData(1, []byte("late")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendData(2, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if got := string(nextData(t, c, 2)); got != "still here" {
		t.Fatalf("tunnel 2 echoed %q", got)
	}
	roundTrip(t, c)
	if cls := closesOf(t, c); len(cls) != 2 {
		t.Fatalf("tunnel_close frames %+v, want only tunnels 7 and 1", cls)
	}
	select {
	case <-c.Done():
		t.Fatal("a tunnel's violation closed the agent's socket")
	default:
	}
}

func TestTunnelDeadlines(t *testing.T) {
	errs := make(chan error, 2)
	_, _, c := setupTunnels(t, true, func(ctx context.Context, tn *Tunnel) error {
		_ = tn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := tn.Read(make([]byte, 10))
		errs <- err
		// A one-byte window: the second byte waits for credit that never comes.
		_ = tn.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := tn.Write([]byte("ab"))
		if n != 1 {
			t.Errorf("Write wrote %d bytes before its deadline, want 1", n)
		}
		errs <- err
		<-ctx.Done()
		return nil
	})
	openTunnel(t, c, 1, "s1", false, 1)
	if err := recvErr(t, errs); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v", err)
	}
	if err := recvErr(t, errs); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past its deadline: %v", err)
	}
	if got := string(nextData(t, c, 1)); got != "a" {
		t.Fatalf("data %q, want the one byte the window allowed", got)
	}
}

func TestTunnelOpenRefusedWithoutTunnels(t *testing.T) {
	cp, a, _ := setup(t, nil)
	cp.UseTunnels(true)
	start(t, a)
	c := nextConn(t, cp)
	if c.Features != "" || c.Tunnels {
		t.Fatalf("an agent without Tunnels offered %q", c.Features)
	}
	if err := c.SendData(1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(models.MessageTypeTunnelOpen, models.TunnelOpenMessage{TunnelID: 1, SessionID: "s1", Window: 1024}); err != nil {
		t.Fatal(err)
	}
	cl := next[models.TunnelCloseMessage](t, c, models.MessageTypeTunnelClose)
	if cl != (models.TunnelCloseMessage{TunnelID: 1, Reason: "tunnels not served by this agent"}) {
		t.Fatalf("tunnel_close %+v", cl)
	}
	if err := a.OpenTunnel(t.Context(), "s1"); !errors.Is(err, ErrNoTunnels) {
		t.Fatalf("OpenTunnel without Tunnels: %v, want ErrNoTunnels", err)
	}
}

// stamped writes chunks of tunnelChunk bytes numbered from 0 (big-endian in the first 4 bytes) until its
// ctx ends, counting in accepted the chunks Write took.
func stamped(accepted *atomic.Int64) TunnelHandler {
	return func(ctx context.Context, tn *Tunnel) error {
		chunk := make([]byte, tunnelChunk)
		for seq := uint32(0); ; seq++ {
			binary.BigEndian.PutUint32(chunk, seq)
			if _, err := tn.Write(chunk); err != nil {
				return nil
			}
			accepted.Add(1)
		}
	}
}
