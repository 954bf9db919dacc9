package websocket

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/cluster"
)

// Client represents one browser WebSocket connection.
//
// Concurrency contract: a Client owns exactly two goroutines, a reader and
// a writer, both started by the hub and both ended by the connection's
// close; the writer is the only one that writes to the socket and the one
// that unregisters the client. Its organization context is fixed at
// registration. Its outbound queue is bounded (Config.QueueSize, 256 by
// default); when it is full the client is closed with 4001 instead of
// slowing the publisher. Exported methods are safe for concurrent use.
type Client struct {
	hub  *Hub
	conn *websocket.Conn
	send chan []byte
	id   string
	org  OrgContext

	// users and sessions are the client's subscriptions, guarded by hub.mu.
	users    map[string]struct{}
	sessions map[string]struct{}

	closeOnce   sync.Once
	done        chan struct{} // closed by closeWith: the client must go
	closeCode   int
	closeReason string
	pumps       atomic.Int32

	// While held, deliveries wait in pending (bounded like the queue) so
	// that the frames the client must see first, its snapshot, go first.
	held atomic.Bool
	// after is the stream position the client starts after, fixed at registration: stream
	// entries at or before it are not its (its greeting and replay cover them).
	after   cluster.Position
	holdMu  sync.Mutex
	pending [][]byte

	readDone chan struct{} // closed when the reader returns
	expiry   *time.Timer
	onGone   func()        // runs once the client is unregistered (org watch, connection row); may be nil
	listFP   atomic.Uint64 // fingerprint of the last session list sent (0: none yet)
}

// closeGrace bounds the closing handshake: after its close frame the writer
// waits this long for the peer's, so the socket is not reset under data
// the peer is still sending.
const closeGrace = time.Second

func newClient(h *Hub, conn *websocket.Conn, spec clientSpec) *Client {
	c := &Client{
		hub:      h,
		conn:     conn,
		send:     make(chan []byte, h.cfg.QueueSize),
		id:       spec.id,
		org:      spec.org,
		users:    make(map[string]struct{}),
		sessions: make(map[string]struct{}),
		done:     make(chan struct{}),
		readDone: make(chan struct{}),
	}
	c.held.Store(spec.held)
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

func (c *Client) start() {
	c.pumps.Store(2)
	if !c.org.ExpiresAt.IsZero() {
		c.expiry = time.AfterFunc(c.org.ExpiresAt.Sub(c.hub.cfg.Now()), func() {
			c.closeWith(CloseTokenExpired, "token expired", "token_expired")
		})
	}
	go c.writePump()
	go c.readPump()
}

// enqueue queues message without blocking. A full queue closes the client
// with 4001: one slow browser never delays anyone else.
func (c *Client) enqueue(message []byte) bool {
	if c.held.Load() {
		c.holdMu.Lock()
		if c.held.Load() {
			defer c.holdMu.Unlock()
			if len(c.pending) >= cap(c.send) {
				c.overflow()
				return false
			}
			c.pending = append(c.pending, message)
			return true
		}
		c.holdMu.Unlock()
	}
	return c.push(message)
}

// enqueueEntry queues a stream entry's frame unless it comes at or before the client's start.
func (c *Client) enqueueEntry(frame []byte, at cluster.Position) {
	if at.Epoch == c.after.Epoch && at.Offset <= c.after.Offset {
		return
	}
	c.enqueue(frame)
}

// release queues first, then what was held back, and lets deliveries
// through from then on, all in that order. first may be longer than the
// queue (a replay): it is queued as room is made, within the write wait, so
// a replay of a whole history is not mistaken for a slow consumer.
func (c *Client) release(first ...[]byte) {
	// Deliveries keep going to pending meanwhile; the hold lock is taken only for the
	// hand-over, so a long replay never holds up the hub's delivery path.
	ok := true
	for _, m := range first {
		if ok = c.pushWait(m); !ok {
			break
		}
	}
	c.holdMu.Lock()
	defer c.holdMu.Unlock()
	if ok {
		for _, m := range c.pending {
			if !c.push(m) {
				break
			}
		}
	}
	c.pending = nil
	c.held.Store(false)
}

// pushWait queues message, waiting up to the write wait for room.
func (c *Client) pushWait(message []byte) bool {
	select {
	case <-c.done:
		return false
	case c.send <- message:
		c.hub.metrics.messagesOut.Inc()
		return true
	default:
	}
	t := time.NewTimer(c.hub.cfg.WriteWait)
	defer t.Stop()
	select {
	case c.send <- message:
		c.hub.metrics.messagesOut.Inc()
		return true
	case <-c.done:
		return false
	case <-t.C:
		c.overflow()
		return false
	}
}

// push is the queue itself.
func (c *Client) push(message []byte) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.send <- message:
		c.hub.metrics.messagesOut.Inc()
		return true
	default:
		c.overflow()
		return false
	}
}

// overflow closes a client that fell a whole queue behind.
func (c *Client) overflow() {
	c.closeWith(CloseSlowConsumer, "slow consumer: queue full", "slow_consumer")
}

// closeWith asks the client to close with code and reason. Only the first
// call counts; it never blocks and never does I/O itself.
func (c *Client) closeWith(code int, reason, metricReason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.done)
		c.hub.metrics.disconnects.WithLabelValues(metricReason).Inc()
		if code == CloseSlowConsumer || code == CloseTokenExpired {
			c.hub.cfg.Logger.Info("closing browser connection",
				"client_id", c.id, "org_id", c.org.OrgID, "user_id", c.org.UserID,
				"code", code, "reason", reason)
		}
	})
}

// pumpDone reports one goroutine's end; the last one tells the hub.
func (c *Client) pumpDone() {
	if c.pumps.Add(-1) == 0 {
		c.hub.finished()
	}
}

// readPump reads and discards browser messages (the sessions socket takes
// no commands), enforcing the size limit and the pong deadline. After a
// too-big message it keeps discarding until the peer answers the close
// frame or the writer gives up on the handshake.
func (c *Client) readPump() {
	defer c.pumpDone()
	defer close(c.readDone)
	cfg := c.hub.cfg
	_ = c.conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	})
	for {
		_, r, err := c.conn.NextReader()
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
		_ = c.conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	}
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

// writePump is the only writer of the socket. It sends queued messages one
// frame each, pings, and on close drains what is queued (on shutdown only),
// sends the close frame, closes the socket and unregisters the client.
func (c *Client) writePump() {
	cfg := c.hub.cfg
	ticker := time.NewTicker(cfg.PingInterval)
	defer func() {
		ticker.Stop()
		if c.expiry != nil {
			c.expiry.Stop()
		}
		_ = c.conn.Close()
		c.hub.unregister(c)
		c.pumpDone()
	}()
	for {
		select {
		case msg := <-c.send:
			if err := c.write(msg); err != nil {
				c.closeWith(websocket.CloseGoingAway, "write failed", "write_error")
				return
			}
		case <-ticker.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteWait)); err != nil {
				c.closeWith(websocket.CloseGoingAway, "ping failed", "write_error")
				return
			}
		case <-c.done:
			if c.closeCode == websocket.CloseGoingAway {
				c.drain()
			}
			_ = c.conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(c.closeCode, c.closeReason),
				time.Now().Add(cfg.WriteWait))
			c.awaitPeerClose()
			return
		}
	}
}

// awaitPeerClose gives the reader closeGrace to see the peer's close frame.
func (c *Client) awaitPeerClose() { awaitClosed(c.readDone) }

func (c *Client) write(msg []byte) error { return writeText(c.conn, msg, c.hub.cfg.WriteWait) }

// drain writes what is already queued, within the write deadline, so a
// client closed by a shutdown loses nothing it was sent.
func (c *Client) drain() { drainQueue(c.conn, c.send, c.hub.cfg.WriteWait) }

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
