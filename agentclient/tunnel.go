package agentclient

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// TunnelHandler serves one tunnel: a viewer's RFB stream to a session's VNC server. It runs in
// its own goroutine, with a ctx that ends with the tunnel (closed by the control plane, the
// connection ending or the Agent stopping). The SDK closes t when the handler returns; an
// error returned before any byte flowed tells the control plane why the tunnel could not open.
type TunnelHandler func(ctx context.Context, t *Tunnel) error

// ErrNoTunnels is returned by OpenTunnel when Config.Tunnels is nil.
var ErrNoTunnels = errors.New("tunnels not served by this agent")

// Tunnel limits on the agent's side.
const (
	// tunnelChunk bounds one data frame (PROTOCOL.md 6.4: tunnels take turns one chunk each):
	// the largest 6.3 allows, so a fast VNC server costs the fewest frames and wake-ups.
	tunnelChunk = models.MaxTunnelChunk
	// legacyChunk bounds the RFB bytes of one vnc_data (StreamSpace's messages): base64 in
	// JSON makes them a third larger, and a control plane's frame limit must hold them.
	legacyChunk = 32 << 10
	// legacyRecvLimit bounds the viewer's bytes buffered for a StreamSpace-mode tunnel, which
	// has no window: a control plane that outruns the handler by more closes the tunnel.
	legacyRecvLimit = 4 << 20
)

// Tunnel is one tunnel as a net.Conn: Read returns the viewer's bytes (io.EOF once the control
// plane closed the tunnel), Write sends bytes to the viewer, blocking while the control plane's
// window is zero or the tunnel's one pending chunk has not been written yet, so a fast VNC
// server is slowed by TCP and never buffered without bound.
//
// The control plane learns that the tunnel is open (tunnel_opened, or vnc_ready for
// StreamSpace's messages) when the handler calls Accept, or implicitly on its first Read or
// Write: a handler that dials first and then reads or writes answers only once the dial
// succeeded.
//
// Concurrency contract: Read, Write, Close, deadlines and Accept are safe from any goroutine,
// as net.Conn requires; one Read and one Write at a time make sense.
type Tunnel struct {
	c        *conn
	id       uint32 // tunnel/1 id; 0 for StreamSpace's messages
	session  string
	viewOnly bool
	ctx      context.Context
	cancel   context.CancelFunc

	acceptOnce sync.Once
	accepted   atomic.Bool // Accept sent tunnel_opened or vnc_ready
	writeMu    sync.Mutex  // one Write or ReadFrom at a time: each is one run of frames

	mu         sync.Mutex
	recv       []byte        // the viewer's bytes not read yet
	recvCap    int           // bound of recv: our window (tunnel/1) or legacyRecvLimit
	recvWindow int64         // bytes the control plane may still send (tunnel/1)
	unacked    int64         // bytes read since the last credit we granted
	sendWindow int64         // bytes we may still send (tunnel/1)
	pending    []byte        // the next frame for the writer, nil when none
	closeFrame []byte        // with pending written, the writer sends this and the tunnel ends
	peerClosed bool          // the control plane closed the tunnel: Read gives EOF after recv
	closed     bool          // Close was called or the tunnel ended: Write fails
	flowed     bool          // a byte went either way
	podName    string        // for vnc_ready
	vncPort    int           // for vnc_ready
	readable   chan struct{} // cap 1: recv grew or the tunnel ended
	writable   chan struct{} // cap 1: window or pending slot freed, or the tunnel ended
	rdl, wdl   *deadline
}

func newTunnel(c *conn, id uint32, session string, viewOnly bool, sendWindow, recvCap int64) *Tunnel {
	ctx, cancel := context.WithCancel(c.ctx)
	t := &Tunnel{
		c: c, id: id, session: session, viewOnly: viewOnly, ctx: ctx, cancel: cancel,
		recvCap: int(recvCap), recvWindow: recvCap, sendWindow: sendWindow,
		readable: make(chan struct{}, 1), writable: make(chan struct{}, 1),
		rdl: newDeadline(), wdl: newDeadline(),
	}
	// The connection or the Agent ending unblocks a handler's Read and Write, whether or not
	// the handler watches its ctx.
	context.AfterFunc(ctx, t.peerClose)
	return t
}

// SessionID is the session whose VNC server the tunnel leads to.
func (t *Tunnel) SessionID() string { return t.session }

// ViewOnly reports whether the viewer may only watch. The control plane already drops a
// view-only viewer's input (PROTOCOL.md 6.4); a handler may enforce it too.
func (t *Tunnel) ViewOnly() bool { return t.viewOnly }

// SetTarget records the VNC server's pod and port, which vnc_ready announces for StreamSpace's
// messages; call it before Accept. ProxyTo sets the port of the address it dialed.
func (t *Tunnel) SetTarget(podName string, vncPort int) {
	t.mu.Lock()
	t.podName, t.vncPort = podName, vncPort
	t.mu.Unlock()
}

// Accept tells the control plane the tunnel is open: tunnel_opened with our window, or
// vnc_ready. Only the first call counts; Read and Write call it.
func (t *Tunnel) Accept() error {
	var err error
	t.acceptOnce.Do(func() {
		t.mu.Lock()
		pod, port, ended := t.podName, t.vncPort, t.closed || t.peerClosed
		t.mu.Unlock()
		if ended {
			err = fmt.Errorf("agentclient: accept tunnel of session %s: %w", t.session, net.ErrClosed)
			return
		}
		// Before the frame is queued: the control plane may answer it at once.
		t.accepted.Store(true)
		if t.id != 0 {
			err = t.c.enqueueText(t.ctx, models.MessageTypeTunnelOpened, models.TunnelOpenedMessage{TunnelID: t.id, Window: models.DefaultTunnelWindow})
		} else {
			err = t.c.enqueueText(t.ctx, models.MessageTypeVNCReady, models.VNCReadyMessage{SessionID: t.session, VNCPort: port, PodName: pod})
		}
		if err != nil {
			err = fmt.Errorf("agentclient: accept tunnel of session %s: %w", t.session, err)
		}
	})
	return err
}

func (t *Tunnel) isAccepted() bool { return t.accepted.Load() }

// Read reads the viewer's bytes; io.EOF once the control plane closed the tunnel.
func (t *Tunnel) Read(p []byte) (int, error) {
	if err := t.Accept(); err != nil {
		return 0, err
	}
	for {
		select {
		case <-t.rdl.wait():
			return 0, os.ErrDeadlineExceeded
		default:
		}
		t.mu.Lock()
		if len(t.recv) > 0 {
			n := copy(p, t.recv)
			t.recv = t.recv[n:]
			if len(t.recv) == 0 {
				t.recv = nil
			}
			t.flowed = true
			credit := t.takeCredit(n)
			t.mu.Unlock()
			if credit > 0 {
				_ = t.c.enqueueText(t.ctx, models.MessageTypeTunnelCredit, models.TunnelCreditMessage{TunnelID: t.id, Bytes: credit})
			}
			return n, nil
		}
		switch {
		case t.peerClosed:
			t.mu.Unlock()
			return 0, io.EOF
		case t.closed:
			t.mu.Unlock()
			return 0, net.ErrClosed
		}
		t.mu.Unlock()
		select {
		case <-t.readable:
		case <-t.rdl.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// takeCredit counts n bytes read and returns the credit to grant now: once a quarter of the
// window was read (PROTOCOL.md 6.3), so a busy tunnel costs a credit frame per quarter
// window, not per chunk. Called with mu held.
func (t *Tunnel) takeCredit(n int) int64 {
	if t.id == 0 {
		return 0
	}
	t.unacked += int64(n)
	if t.unacked < int64(t.recvCap)/4 {
		return 0
	}
	credit := t.unacked
	t.unacked = 0
	t.recvWindow += credit
	return credit
}

// Write sends p to the viewer in chunks of at most 64 KiB, each within the control plane's
// window; it blocks while the window is zero or the previous chunk waits for the writer.
func (t *Tunnel) Write(p []byte) (int, error) {
	if err := t.Accept(); err != nil {
		return 0, err
	}
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	written := 0
	for len(p) > 0 {
		n, err := t.awaitSend(len(p))
		if err != nil {
			return written, err
		}
		var frame []byte
		if t.id != 0 {
			frame = getFrame()[:models.TunnelDataHeader+n]
			binary.BigEndian.PutUint32(frame, t.id)
			copy(frame[models.TunnelDataHeader:], p[:n])
		} else if frame, err = t.legacyFrame(p[:n]); err != nil {
			return written, err
		}
		if err := t.submit(frame, n); err != nil {
			return written, err
		}
		p = p[n:]
		written += n
	}
	return written, nil
}

// ReadFrom sends what r yields to the viewer until r ends, as Write would: io.Copy to a
// tunnel/1 tunnel (ProxyTo's, from the VNC server) uses it, and each read then lands in the
// frame that carries it, up to a chunk and the window, with no copy in between.
func (t *Tunnel) ReadFrom(r io.Reader) (int64, error) {
	if t.id == 0 {
		return io.Copy(writerOnly{t}, r)
	}
	if err := t.Accept(); err != nil {
		return 0, err
	}
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	var total int64
	for {
		n, err := t.awaitSend(tunnelChunk)
		if err != nil {
			return total, err
		}
		frame := getFrame()
		m, rerr := r.Read(frame[models.TunnelDataHeader : models.TunnelDataHeader+n])
		if m > 0 {
			frame = frame[:models.TunnelDataHeader+m]
			binary.BigEndian.PutUint32(frame, t.id)
			if err := t.submit(frame, m); err != nil {
				return total, err
			}
			total += int64(m)
		} else {
			putFrame(frame)
		}
		switch {
		case errors.Is(rerr, io.EOF):
			return total, nil
		case rerr != nil:
			return total, rerr
		}
	}
}

// writerOnly hides a Tunnel's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

// awaitSend waits until the tunnel may make its next frame (the previous one was taken by the
// writer, and for tunnel/1 the window is open) and returns how many of want bytes it may
// carry. Called with writeMu held, so the answer holds until submit.
func (t *Tunnel) awaitSend(want int) (int, error) {
	for {
		select {
		case <-t.wdl.wait():
			return 0, os.ErrDeadlineExceeded
		default:
		}
		t.mu.Lock()
		if t.closed || t.peerClosed {
			t.mu.Unlock()
			return 0, net.ErrClosed
		}
		if t.pending == nil && (t.id == 0 || t.sendWindow > 0) {
			n := min(want, legacyChunk)
			if t.id != 0 {
				n = int(min(int64(want), tunnelChunk, t.sendWindow))
			}
			t.mu.Unlock()
			return n, nil
		}
		t.mu.Unlock()
		select {
		case <-t.writable:
		case <-t.wdl.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// submit hands the writer frame, carrying n bytes of RFB, and takes them from the window.
func (t *Tunnel) submit(frame []byte, n int) error {
	t.mu.Lock()
	if t.closed || t.peerClosed {
		t.mu.Unlock()
		putFrame(frame)
		return net.ErrClosed
	}
	if t.id != 0 {
		t.sendWindow -= int64(n)
	}
	t.pending = frame
	t.flowed = true
	t.mu.Unlock()
	t.c.schedule(t)
	return nil
}

// framePool lends tunnel/1 data frames of the largest size: taken when a chunk is made, given
// back once the writer wrote it, so a busy tunnel allocates nothing per chunk and an idle one
// holds no buffer.
var framePool = sync.Pool{New: func() any {
	b := make([]byte, models.TunnelDataHeader+tunnelChunk)
	return &b
}}

func getFrame() []byte { return *framePool.Get().(*[]byte) }

// putFrame gives back a frame getFrame lent; other buffers are left to the collector.
func putFrame(b []byte) {
	if cap(b) != models.TunnelDataHeader+tunnelChunk {
		return
	}
	b = b[:cap(b)]
	framePool.Put(&b)
}

// legacyFrame is the vnc_data frame carrying b (StreamSpace's messages).
func (t *Tunnel) legacyFrame(b []byte) ([]byte, error) {
	f, err := t.c.a.encode(models.MessageTypeVNCData, models.VNCDataMessage{SessionID: t.session, Data: base64.StdEncoding.EncodeToString(b)})
	if err != nil {
		return nil, fmt.Errorf("agentclient: tunnel of session %s: %w", t.session, err)
	}
	return f, nil
}

// frameKind is the WebSocket message type of the tunnel's data frames.
func (t *Tunnel) frameKind() int {
	if t.id != 0 {
		return websocket.BinaryMessage
	}
	return websocket.TextMessage
}

// Close ends the tunnel: for tunnel/1 a tunnel_close follows the data already written; for
// StreamSpace's messages nothing more is sent.
func (t *Tunnel) Close() error { return t.closeWith("", false) }

// closeWith ends the tunnel from our side. With reason (or report for StreamSpace's messages)
// the control plane is told why: tunnel_close carries it, or vnc_error.
func (t *Tunnel) closeWith(reason string, report bool) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	var frame []byte
	if !t.peerClosed {
		switch {
		case t.id != 0:
			frame, _ = t.c.a.encode(models.MessageTypeTunnelClose, models.TunnelCloseMessage{TunnelID: t.id, Reason: reason})
		case report:
			frame, _ = t.c.a.encode(models.MessageTypeVNCError, models.VNCErrorMessage{SessionID: t.session, Error: reason})
		}
	}
	t.closeFrame = frame
	t.mu.Unlock()
	t.c.forget(t)
	t.wake()
	if frame != nil {
		t.c.schedule(t)
	}
	t.cancel()
	return nil
}

// peerClose ends the tunnel from the control plane's side: Read gives what is buffered then
// io.EOF, Write fails, and nothing more is sent, not even a chunk waiting for the writer.
func (t *Tunnel) peerClose() {
	t.mu.Lock()
	if t.closed || t.peerClosed {
		t.mu.Unlock()
		t.wake()
		return
	}
	t.peerClosed = true
	if t.id != 0 && t.pending != nil {
		putFrame(t.pending)
	}
	t.pending, t.closeFrame = nil, nil
	t.mu.Unlock()
	t.wake()
	t.cancel()
}

// wake unblocks Read and Write so they see the tunnel's new state.
func (t *Tunnel) wake() {
	notify(t.readable)
	notify(t.writable)
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// take hands the writer the tunnel's next frame and whether the tunnel ended with it.
func (t *Tunnel) take() (frame []byte, last bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending != nil {
		frame, t.pending = t.pending, nil
		notify(t.writable)
		return frame, false
	}
	frame, t.closeFrame = t.closeFrame, nil
	return frame, true
}

// hasMore reports whether the writer has another frame of t to write.
func (t *Tunnel) hasMore() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending != nil || t.closeFrame != nil
}

// LocalAddr and RemoteAddr name the tunnel, for net.Conn.
func (t *Tunnel) LocalAddr() net.Addr  { return tunnelAddr("agent") }
func (t *Tunnel) RemoteAddr() net.Addr { return tunnelAddr("viewer:" + t.session) }

// SetDeadline sets both deadlines.
func (t *Tunnel) SetDeadline(d time.Time) error {
	t.rdl.set(d)
	t.wdl.set(d)
	return nil
}

// SetReadDeadline makes a blocked or later Read fail with os.ErrDeadlineExceeded at d; zero
// means none.
func (t *Tunnel) SetReadDeadline(d time.Time) error { t.rdl.set(d); return nil }

// SetWriteDeadline makes a blocked or later Write fail with os.ErrDeadlineExceeded at d.
func (t *Tunnel) SetWriteDeadline(d time.Time) error { t.wdl.set(d); return nil }

type tunnelAddr string

func (a tunnelAddr) Network() string { return "streamspace-tunnel" }
func (a tunnelAddr) String() string  { return string(a) }

// deadline is a net.Conn deadline: a channel closed when it passes, replaced when it is set
// again. Safe for concurrent use.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	gen   uint64 // bumped by each set: a timer of an earlier set closes nothing
	ch    chan struct{}
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

// set moves the deadline to at; zero means none.
func (d *deadline) set(at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	select {
	case <-d.ch: // passed: a fresh channel for the new deadline
		d.ch = make(chan struct{})
	default:
	}
	if at.IsZero() {
		return
	}
	ch, gen := d.ch, d.gen
	dur := time.Until(at)
	if dur <= 0 {
		close(ch)
		return
	}
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen { // a stale timer closes nothing
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
	})
}

// wait returns the channel closed when the current deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}
