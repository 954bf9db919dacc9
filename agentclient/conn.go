package agentclient

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// sendQueue bounds the frames waiting for the writer besides the outbox: acks, pongs,
// heartbeats and log lines.
const sendQueue = 256

// outFrame is one frame for the writer: a text frame, or a pong control frame answering a
// WebSocket ping of the server.
type outFrame struct {
	kind int // websocket.TextMessage or websocket.PongMessage
	data []byte
}

// sentFrame is an outbox frame the writer wrote and the control plane has not confirmed yet:
// tag is the sequence number of the first ping written after it, whose pong proves the control
// plane read the frame.
type sentFrame struct {
	data []byte
	tag  uint64
}

// conn is one WebSocket connection of an Agent.
//
// Concurrency contract: a conn owns three goroutines, started and waited for by
// Agent.serveConn: the writer (the only one that writes to the socket, and the one that closes
// it), the reader and the heartbeat. stop is safe from any goroutine and only the first call
// counts; every error of either the reader or the writer ends the whole connection, so the
// Agent is never left reading without writing or the reverse. Fields marked writer-owned are
// touched by the writer only, then by serveConn after the writer has returned.
type conn struct {
	a      *Agent
	ws     *websocket.Conn
	runCtx context.Context // the Agent's run: command handlers derive from it
	ctx    context.Context // ends with the connection: log streams derive from it
	cancel context.CancelFunc
	send   chan outFrame

	once      sync.Once
	done      chan struct{} // closed by stop: the connection is ending
	cause     error         // why; written before done is closed
	closeCode int           // close frame the writer sends; 0 for none
	closeText string
	flush     bool // write what is queued before the close frame

	flushed    chan struct{} // closed by the writer once the outbox of earlier connections is out
	readDone   chan struct{} // closed when the reader returns
	peerClose  atomic.Int32  // close code the control plane sent, 0 if none
	gotFrame   atomic.Bool   // the control plane sent at least one frame
	confirmed  atomic.Uint64 // highest ping sequence number answered by a pong
	logsMu     sync.Mutex
	logStreams map[string]context.CancelFunc
	ext        bool    // the control plane took up tunnel/1 on this connection
	tun        tunnels // the connection's tunnels

	unconfirmed []sentFrame // writer-owned
	pingSeq     uint64      // writer-owned: sequence number of the next ping, from 1
}

func newConn(a *Agent, runCtx context.Context, ws *websocket.Conn, ext bool) *conn {
	ctx, cancel := context.WithCancel(runCtx)
	return &conn{
		a:          a,
		ws:         ws,
		runCtx:     runCtx,
		ctx:        ctx,
		cancel:     cancel,
		send:       make(chan outFrame, sendQueue),
		done:       make(chan struct{}),
		flushed:    make(chan struct{}),
		readDone:   make(chan struct{}),
		logStreams: make(map[string]context.CancelFunc),
		ext:        ext,
		tun:        newTunnels(),
		pingSeq:    1,
	}
}

// fail ends the connection at once: the socket is closed under both goroutines, without a
// close frame. For read and write errors.
func (c *conn) fail(cause error) {
	c.once.Do(func() {
		c.cause = cause
		close(c.done)
		_ = c.ws.Close() // safe concurrently with reads and writes; unblocks both
	})
}

// closeWith ends the connection with a close frame, written by the writer; with flush, the
// frames queued so far (acks, results, log lines) are written first.
func (c *conn) closeWith(cause error, code int, text string, flush bool) {
	c.once.Do(func() {
		c.cause, c.closeCode, c.closeText, c.flush = cause, code, text, flush
		close(c.done)
	})
}

// enqueue queues f for the writer, waiting while the queue is full, until the connection ends
// or ctx does.
func (c *conn) enqueue(ctx context.Context, f outFrame) error {
	select {
	case <-c.done:
		return errConnClosed
	default:
	}
	select {
	case c.send <- f:
		return nil
	case <-c.done:
		return errConnClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enqueueText encodes and queues a best-effort frame (lost if the connection dies).
func (c *conn) enqueueText(ctx context.Context, typ string, payload any) error {
	b, err := c.a.encode(typ, payload)
	if err != nil {
		return err
	}
	return c.enqueue(ctx, outFrame{kind: websocket.TextMessage, data: b})
}

// serveConn runs one connection until it ends and returns why, and whether it proved healthy
// (it received a frame or stayed up upHealthy): a healthy connection resets the backoff. When
// runCtx ends, serveConn stops taking commands, waits (within bound) for running handlers so
// their results go out on this connection, then closes it with 1000.
func (a *Agent) serveConn(runCtx context.Context, ws *websocket.Conn, ext bool, bound *shutdownBound) (cause error, healthy bool) {
	c := newConn(a, runCtx, ws, ext)
	started := a.clock.Now()
	a.stats.connected.Store(true)
	if a.stats.connects.Add(1) > 1 {
		a.stats.reconnects.Add(1)
	}
	a.log.Info("connected to the control plane")

	var wg sync.WaitGroup
	wg.Go(c.writeLoop)
	// The reader and the heartbeat start once earlier results are out, so those go first.
	select {
	case <-c.flushed:
	case <-c.done:
	}
	wg.Go(c.readLoop)
	wg.Go(c.heartbeatLoop)
	a.tunnelsUp(c)

	select {
	case <-runCtx.Done():
		a.work.wait(c.done, bound.C())
		c.closeWith(errStopping, websocket.CloseNormalClosure, "agent stopping", true)
	case <-c.done:
	}
	wg.Wait()
	a.tunnelsDown(c)
	c.cancel()

	// Both goroutines are gone: what the last pongs confirmed is dropped, the rest goes back
	// to the front of the outbox.
	c.prune()
	a.outMu.Lock()
	pending := make([][]byte, 0, len(c.unconfirmed))
	for _, f := range c.unconfirmed {
		pending = append(pending, f.data)
	}
	a.out.requeue(pending)
	a.outMu.Unlock()
	a.stats.connected.Store(false)
	return c.cause, c.gotFrame.Load() || a.clock.Since(started) >= a.upHealthy
}

// heartbeatLoop queues a heartbeat right away, then every HeartbeatInterval and whenever
// SetDraining changes the status, until the connection ends.
func (c *conn) heartbeatLoop() {
	t := c.a.clock.NewTicker(c.a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		if err := c.enqueueText(c.ctx, models.MessageTypeHeartbeat, c.a.heartbeat()); err != nil {
			return
		}
		select {
		case <-c.done:
			return
		case <-t.Chan():
			c.a.releaseRetries()
		case <-c.a.hbKick:
		}
	}
}

// shutdownBound is the one deadline of a shutdown, started by whoever first needs it.
type shutdownBound struct {
	a    *Agent
	once sync.Once
	t    <-chan time.Time
	stop func() bool
}

// C returns the bound's channel, starting its timer on the first call.
func (b *shutdownBound) C() <-chan time.Time {
	b.once.Do(func() {
		t := b.a.clock.NewTimer(b.a.cfg.ShutdownTimeout)
		b.t, b.stop = t.Chan(), t.Stop
	})
	return b.t
}

// release stops the bound's timer, if started.
func (b *shutdownBound) release() {
	b.once.Do(func() {})
	if b.stop != nil {
		b.stop()
	}
}
