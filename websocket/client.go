package websocket

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// Client represents one browser WebSocket connection.
//
// Concurrency contract: a Client owns one goroutine for good, its reader,
// and borrows a goroutine of its deliverer's to write (the delivering one,
// or for a delivery to many clients one of the goroutines it spreads the
// writes over). Whoever queues a frame when the socket is free writes it at
// once, without blocking (a nonblocking writev(2) of everything queued);
// only what the socket cannot take at once goes to a writer goroutine,
// which lives until the queue is empty. An idle client therefore holds one
// goroutine and no buffer. Pings come from the hub's pinger through the same
// queue. Closing is done by the goroutine that owns the writing side then
// (one is started when none does): it writes the close frame, closes the
// socket and unregisters the client. Its organization context is
// fixed at registration. Its outbound queue is bounded (Config.QueueSize,
// 256 frames by default); when it is full the client is closed with 4001
// instead of slowing the publisher. Exported methods are safe for concurrent
// use.
type Client struct {
	hub *Hub
	out outbox
	in  inbound // the raw reader's state (plain TCP sockets)
	id  string
	org OrgContext

	// users and sessions are the client's subscriptions, guarded by hub.mu.
	users    []string
	sessions []string

	closedWith closeCause // written once, by the closeWith that sets closing, before the outbox closes
	// The small fields together (an idle client's size matters).
	pumps    atomic.Int32
	closing  atomic.Bool // closeWith was called
	pingSlot uint8       // which of the pinger's ticks pings this client
	gate     holdGate
	expiry   expirySlot
	onGone   func()        // runs once the client is unregistered (org watch, connection row); may be nil
	listFP   atomic.Uint64 // fingerprint of the last session list sent (0: none yet)
}

// closeCause is the close code and reason a client is closed with.
type closeCause struct {
	code   int
	reason string
}

// holdGate is the seam between a client's first frames (greeting, replay, snapshot) and live
// deliveries, and the pause while its access to a session is checked again. While held,
// deliveries wait in pending (bounded like the queue) so that the frames the client must see
// first go first, and so that nothing reaches it while its access is being checked. holds
// counts the reasons it is held (guarded by mu); held is holds > 0.
type holdGate struct {
	held  atomic.Bool
	holds int32
	// after is the stream position the client starts after, fixed at registration: stream
	// entries at or before it are not its (its greeting and replay cover them).
	after   cluster.Position
	mu      sync.Mutex
	pending [][]byte
}

// expirySlot is the client's token deadline on the hub's expiry queue (monoNow), and its
// place there (-1: not queued).
type expirySlot struct {
	at    int64
	index int
}

// closeGrace bounds the closing handshake: after its close frame the writer
// waits this long for the peer's, so the socket is not reset under data
// the peer is still sending.
const closeGrace = time.Second

func newClient(h *Hub, conn *websocket.Conn, spec clientSpec) *Client {
	c := &Client{
		hub: h,
		id:  spec.id,
		org: spec.org,

		expiry: expirySlot{index: -1},
	}
	c.out.init(c, conn)
	// The reader and the closer: the last of the two to end tells the hub.
	c.pumps.Store(2)
	if spec.held {
		c.gate.holds = 1
		c.gate.held.Store(true)
	}
	c.onGone = spec.onGone
	return c
}

// ID returns the client's identifier.
func (c *Client) ID() string { return c.id }

// OrgID returns the organization the client belongs to.
func (c *Client) OrgID() string { return c.org.OrgID }

// K8sNamespace returns the client's Kubernetes namespace.
func (c *Client) K8sNamespace() string { return c.org.K8sNamespace }

// UserID returns the authenticated user of the client.
func (c *Client) UserID() string { return c.org.UserID }

// Role returns the client's role ("user", "operator" or "admin").
func (c *Client) Role() string { return c.org.Role }

// start starts the client's reader on conn, the connection it was made with. Read raw,
// conn itself is not kept: the gorilla connection and its buffer go.
func (c *Client) start(conn *websocket.Conn) {
	if !c.org.ExpiresAt.IsZero() {
		c.hub.expiries.add(c, time.Now().Add(c.org.ExpiresAt.Sub(c.hub.cfg.Now())))
	}
	if c.out.raw != nil {
		c.startRawReader()
	} else {
		// gorilla answers pings and close frames by writing to the socket itself; here every
		// write goes through the client's queue, so the answers do too.
		conn.SetPingHandler(func(data string) error {
			c.out.offer(controlFrame(opPong, []byte(data)))
			return nil
		})
		conn.SetCloseHandler(func(code int, _ string) error {
			c.closeWith(code, "", "client_closed") // the peer's code is echoed, as RFC 6455 5.5.1 asks
			return nil
		})
		go c.readPump(conn)
	}
	c.out.flushPreloaded()
}

// enqueue queues a message (one text frame) without blocking.
func (c *Client) enqueue(message []byte) { c.enqueueFrame(textFrame(message)) }

// enqueueFrame queues an encoded frame without blocking. A full queue closes
// the client with 4001: one slow browser never delays anyone else.
func (c *Client) enqueueFrame(frame []byte) {
	if c.enqueueFrameLater(frame) {
		c.out.flush()
	}
}

// enqueueFrameLater is enqueueFrame for a fan-out that writes later: when it
// returns true the caller owns the client's writing side and must flush it.
func (c *Client) enqueueFrameLater(frame []byte) (flush bool) {
	if c.gate.held.Load() {
		c.gate.mu.Lock()
		if c.gate.held.Load() {
			defer c.gate.mu.Unlock()
			if len(c.gate.pending) >= c.hub.cfg.QueueSize {
				c.overflow()
				return false
			}
			c.gate.pending = append(c.gate.pending, frame)
			return false
		}
		c.gate.mu.Unlock()
	}
	ok, flush := c.out.pushLater(frame)
	if ok {
		c.hub.metrics.messagesOut.Inc()
	}
	return flush
}

// enqueueEntryLater queues a stream entry's frame, as enqueueFrameLater, unless it comes at
// or before the client's start.
func (c *Client) enqueueEntryLater(frame []byte, at cluster.Position) (flush bool) {
	if at.Epoch == c.gate.after.Epoch && at.Offset <= c.gate.after.Offset {
		return false
	}
	return c.enqueueFrameLater(frame)
}

// preload queues the greeting of a client that has not started; start writes it.
func (c *Client) preload(frame []byte) { c.out.preload(frame) }

// hold makes deliveries wait in pending until a matching release.
func (c *Client) hold() {
	c.gate.mu.Lock()
	defer c.gate.mu.Unlock()
	c.gate.holds++
	c.gate.held.Store(true)
}

// release queues first (messages) and ends one hold; when it was the last, what was held
// back follows and deliveries go through from then on, all in that order. first, and what
// was held back, may be longer than the queue (a replay, and the deliveries that came during
// it): they are queued as room is made, each within the write wait, so a replay of a whole
// history is not mistaken for a slow consumer.
func (c *Client) release(first ...[]byte) {
	// Deliveries keep going to pending meanwhile; the hold lock is taken only to hand over,
	// so a long replay never holds up the hub's delivery path.
	ok := c.pushAllWait(first, textFrame)
	for ok {
		c.gate.mu.Lock()
		if c.gate.holds > 1 {
			c.gate.holds-- // still held for another reason: what is pending waits for it
			c.gate.mu.Unlock()
			return
		}
		batch := c.gate.pending
		c.gate.pending = nil
		if len(batch) == 0 {
			c.gate.holds = 0
			c.gate.held.Store(false)
			c.gate.mu.Unlock()
			return
		}
		// Still held while the batch is written: what arrives meanwhile comes after it.
		c.gate.mu.Unlock()
		ok = c.pushAllWait(batch, func(f []byte) []byte { return f })
	}
	c.gate.mu.Lock()
	c.gate.pending = nil
	c.gate.holds = 0
	c.gate.held.Store(false)
	c.gate.mu.Unlock()
}

// pushAllWait queues frames (each encoded by encode) with pushWait, and reports whether all
// were queued.
func (c *Client) pushAllWait(frames [][]byte, encode func([]byte) []byte) bool {
	for _, m := range frames {
		if !c.pushWait(encode(m)) {
			return false
		}
	}
	return true
}

// pushWait queues frame, waiting up to the write wait for room.
func (c *Client) pushWait(frame []byte) bool {
	var deadline <-chan time.Time
	for {
		ok, room, flush := c.out.tryPush(frame)
		if flush {
			c.out.flush()
		}
		if ok {
			c.hub.metrics.messagesOut.Inc()
			return true
		}
		if room == nil {
			return false // closing
		}
		if deadline == nil {
			t := time.NewTimer(c.hub.cfg.WriteWait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-room: // also signalled when the client closes
		case <-deadline:
			c.overflow()
			return false
		}
	}
}

// overflow closes a client that fell a whole queue behind.
func (c *Client) overflow() {
	c.closeWith(CloseSlowConsumer, "slow consumer: queue full", "slow_consumer")
}

// closeWith asks the client to close with code and reason. Only the first
// call counts; it never blocks and never does I/O itself.
func (c *Client) closeWith(code int, reason, metricReason string) {
	if c.closing.CompareAndSwap(false, true) {
		c.closedWith.code, c.closedWith.reason = code, reason
		c.hub.metrics.disconnects.WithLabelValues(metricReason).Inc()
		// Every close the browser caused or must hear about is logged, once: not the echo of
		// its own close, a shutdown or a lost peer.
		if metricReason != "client_closed" && code != websocket.CloseNormalClosure && code != websocket.CloseGoingAway {
			c.hub.cfg.Logger.Info("closing browser connection",
				"client_id", c.id, "org_id", c.org.OrgID, "user_id", c.org.UserID,
				"code", code, "reason", reason)
		}
		c.out.close()
	}
}

// pumpDone reports one goroutine's end; the last one tells the hub.
func (c *Client) pumpDone() {
	if c.pumps.Add(-1) == 0 {
		c.hub.finished()
	}
}

// readPump is readRaw for sockets this package cannot read raw (TLS), with
// gorilla's reader: it reads and discards browser messages (the sessions
// socket takes no commands), enforcing the size limit and the pong deadline. After a
// too-big message it keeps discarding until the peer answers the close
// frame or the writer gives up on the handshake.
func (c *Client) readPump(conn *websocket.Conn) {
	defer c.pumpDone()
	defer c.out.readerDone()
	cfg := c.hub.cfg
	_ = conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	})
	overRate := countPings(conn, &c.in.rate, cfg.ClientMessageRate, c.hub.metrics.messagesIn)
	for {
		_, r, err := conn.NextReader()
		if err == nil {
			c.hub.metrics.messagesIn.Inc()
		}
		if overRate() || (err == nil && c.in.rate.exceeded(time.Now(), cfg.ClientMessageRate)) {
			c.closeWith(websocket.ClosePolicyViolation, errRateExceeded.Error(), "rate_limited")
			return
		}
		if err != nil {
			c.closeWith(readCloseCode(err))
			return
		}
		n, err := io.Copy(io.Discard, io.LimitReader(r, cfg.MaxMessageSize+1))
		if err != nil {
			c.closeWith(readCloseCode(err))
			return
		}
		if n > cfg.MaxMessageSize {
			c.closeWith(websocket.CloseMessageTooBig, "message too big", "too_big")
		}
		_ = conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	}
}

// countPings makes the pings gorilla's reader answers count against a browser's frame rate
// (ClientMessageRate) like its messages; the function it returns reports whether one passed
// it, after which the reader returns errRateExceeded.
func countPings(conn *websocket.Conn, rate *frameRate, limit int, in prometheus.Counter) (over func() bool) {
	exceeded := false
	answer := conn.PingHandler()
	conn.SetPingHandler(func(data string) error {
		in.Inc()
		if rate.exceeded(time.Now(), limit) {
			exceeded = true
			return errRateExceeded
		}
		return answer(data)
	})
	return func() bool { return exceeded }
}

// readCloseCode maps a read error to the close to send and a metric reason.
func readCloseCode(err error) (int, string, string) {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return websocket.CloseNormalClosure, "bye", "client_closed"
	case errors.As(err, &ne) && ne.Timeout():
		return websocket.CloseGoingAway, "pong timeout", "pong_timeout"
	default:
		return websocket.CloseGoingAway, "connection lost", "read_error"
	}
}

// finish is the end of every client, run by the goroutine that owns the
// socket once the client is closing: it writes what is queued (on shutdown
// only, so a client closed by a shutdown loses nothing it was sent), the
// close frame, gives the peer closeGrace to answer, closes the socket and
// unregisters the client.
func (c *Client) finish(queued [][]byte) {
	wait := c.hub.cfg.WriteWait
	if c.closedWith.code == websocket.CloseGoingAway {
		_ = c.out.writeBlocking(queued, wait)
	}
	_ = c.out.writeBlocking([][]byte{controlFrame(opClose, websocket.FormatCloseMessage(c.closedWith.code, c.closedWith.reason))}, wait)
	c.out.awaitReader(closeGrace)
	c.stopRawReader()
	c.hub.expiries.remove(c)
	if c.out.netConn != nil {
		_ = c.out.netConn.Close()
	}
	c.hub.unregister(c)
	c.pumpDone()
}

// awaitClosed waits up to closeGrace for readDone: after sending its close
// frame a writer gives the reader that long to see the peer's, so the socket
// is not reset under data the peer is still sending.
func awaitClosed(readDone <-chan struct{}) {
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-readDone:
	case <-t.C:
	}
}

// writeText writes one text frame within wait.
func writeText(conn *websocket.Conn, msg []byte, wait time.Duration) error {
	if err := conn.SetWriteDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	return conn.WriteMessage(websocket.TextMessage, msg)
}

// drainQueue writes what is already queued, stopping at the first failure.
func drainQueue(conn *websocket.Conn, queue chan []byte, wait time.Duration) {
	for {
		select {
		case msg := <-queue:
			if writeText(conn, msg, wait) != nil {
				return
			}
		default:
			return
		}
	}
}

// closeConn refuses a connection that was never registered.
func closeConn(conn *websocket.Conn, wait time.Duration, code int, reason string) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(wait))
	_ = conn.Close()
}
