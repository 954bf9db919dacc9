package websocket

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/streamspace/streamspace-realtime/models"
)

// AgentConnection represents a single agent's WebSocket connection.
//
// Ownership: from RegisterAgent on (ServeAgent calls it) the hub owns the connection and its
// socket. It runs the socket's one reader and one writer, a dispatcher that delivers the
// agent's waiting commands in creation order, and a status writer that records the session
// status reports the reader hands it; all end when the connection closes, and the last one to
// end unregisters it. An embedder must not read or write Conn, run pumps of its own, or close
// Conn; its own frames for the agent (a VNC proxy's vnc_data, say) go through Enqueue rather
// than straight onto Send, which would skew the hub's ack timing. A connection registered
// without Conn has no socket here: its owner reads Send and delivers the frames itself, and
// the hub only queues them (nothing then arrives on Receive).
//
// Send is the bounded outbound queue the writer drains; nobody closes it (the writer stops on
// the connection's own done signal instead, so a late sender can never panic). Receive, when
// set before registration, gets the frames the hub leaves to the embedder, in the order the
// agent sent them: frame types the hub does not handle, and StreamSpace's vnc_ready, vnc_data
// and vnc_error frames of a session no Tunnel of this package holds on this connection (one
// reserved by AgentHub.OpenTunnel and not yet closed). The hub consumes everything else
// (heartbeat, ack, complete, failed, status, log, log_end, pong, tunnel/1 frames on a socket
// that negotiated tunnel/1, vnc_* frames of a session a Tunnel of this package holds) and
// malformed frames. A frame that
// finds Receive full waits up to AgentHubConfig.ReceiveTimeout for room, then is dropped and
// counted (streamspace_agent_receive_dropped_total): the reader, and with it heartbeats and
// acks, never waits longer. Nothing is offered once Done is closed, and the hub never closes
// Receive. Mutex guards LastPing and Platform; read them through the Mutex or the accessor
// methods.
type AgentConnection struct {
	// AgentID is the unique identifier for this agent.
	AgentID string
	// Conn is the agent's upgraded socket, which the hub reads and writes from registration
	// on; nil means the owner of the connection reads Send itself.
	Conn *websocket.Conn
	// Platform identifies the agent type (kubernetes, docker, vm, cloud).
	Platform string
	// LastPing is the time of the last frame received: any frame is a sign of life.
	LastPing time.Time
	// Send is the bounded queue of outbound frames; nil means the hub makes one. The hub and
	// Enqueue send on it.
	Send chan []byte
	// Receive, when set, gets the inbound frames the hub leaves to the embedder (see above).
	Receive chan []byte
	// Mutex protects concurrent access to connection fields.
	Mutex sync.RWMutex

	hub *AgentHub
	connLife
	budget   frameBudget
	cmds     *deliveries  // the command life's part on this connection: dispatcher and acks
	statuses *statusQueue // session status reports for the status writer

	// logStreams counts the log streams asked of this connection and still open; while there
	// are any, and for logLinger after the last one ends (the lines the agent sent before it
	// heard of the stop are still arriving), frames beyond the ordinary frame budget draw on
	// logLimiter.
	logStreams   atomic.Int32
	logStreamEnd atomic.Int64 // when the last stream ended (Unix nanoseconds)
	logLimiter   *rate.Limiter

	// tunnels are the VNC tunnels through this connection (PROTOCOL.md 6); tunnel1 is set
	// before registration when the socket negotiated the tunnel extension.
	tunnels *agentTunnels
	tunnel1 bool

	registered    atomic.Bool // RegisterAgent took it
	receiveWarned atomic.Bool // a frame left for Receive was dropped and logged
}

// connLife is who a connection is and where it stands in its life: its id, the status its
// agent last announced, its closing, and its goroutines still running.
type connLife struct {
	connID string
	status string // online or draining, guarded by the connection's Mutex

	closeOnce   sync.Once
	done        chan struct{}
	closeCode   int
	closeReason string
	readDone    chan struct{}
	pumps       atomic.Int32
}

func (l *connLife) closing() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// frameBudget is what an agent may send: frames per second (limiter), and malformed frames
// within malformedWindow.
type frameBudget struct {
	limiter     *rate.Limiter
	malformedMu sync.Mutex
	malformedAt []time.Time
}

// noteMalformed records a malformed frame and reports whether the connection is past the
// limit: more than malformedLimit within malformedWindow.
func (b *frameBudget) noteMalformed(now time.Time) bool {
	b.malformedMu.Lock()
	defer b.malformedMu.Unlock()
	keep := b.malformedAt[:0]
	for _, t := range b.malformedAt {
		if now.Sub(t) < malformedWindow {
			keep = append(keep, t)
		}
	}
	b.malformedAt = append(keep, now)
	return len(b.malformedAt) > malformedLimit
}

// logLinger is how long after its last log stream ends an agent's frames still draw on the
// log budget.
const logLinger = 2 * time.Second

// ConnectionID names this connection among all of the agent's connections, past and future.
func (c *AgentConnection) ConnectionID() string { return c.connID }

// LastSeen returns LastPing under the lock.
func (c *AgentConnection) LastSeen() time.Time {
	c.Mutex.RLock()
	defer c.Mutex.RUnlock()
	return c.LastPing
}

// Status returns "online" or "draining", as the agent's last heartbeat said.
func (c *AgentConnection) Status() string {
	c.Mutex.RLock()
	defer c.Mutex.RUnlock()
	return c.status
}

// Done is closed when the connection starts closing.
func (c *AgentConnection) Done() <-chan struct{} { return c.done }

func (c *AgentConnection) touch(at time.Time) {
	c.Mutex.Lock()
	if at.After(c.LastPing) {
		c.LastPing = at
	}
	c.Mutex.Unlock()
}

func (c *AgentConnection) setStatus(status string) {
	c.Mutex.Lock()
	c.status = status
	c.Mutex.Unlock()
}

// closeWith asks the connection to close with code and reason. Only the first call counts; it
// never blocks and does no I/O.
func (c *AgentConnection) closeWith(code int, reason, metricReason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.done)
		c.cmds.stop()
		if c.tunnels != nil {
			c.tunnels.closeAll(metricReason == "shutdown")
		}
		c.hub.metrics.disconnects.WithLabelValues(metricReason).Inc()
		if code != websocket.CloseNormalClosure && code != websocket.CloseGoingAway {
			c.hub.cfg.Logger.Info("closing agent connection", "agent_id", c.AgentID,
				"code", code, "reason", reason)
		}
	})
}

// relaysLogs reports whether a frame over the ordinary budget may pass as part of a log stream
// this side asked for.
func (c *AgentConnection) relaysLogs() bool {
	relaying := c.logStreams.Load() > 0 || time.Since(time.Unix(0, c.logStreamEnd.Load())) < logLinger
	return relaying && c.logLimiter.Allow()
}

// push queues a frame without blocking; a full queue closes the connection with 4001.
func (c *AgentConnection) push(frame []byte) bool {
	if c.closing() {
		return false
	}
	if c.tryQueue(frame) {
		return true
	}
	c.closeWith(CloseSlowConsumer, "slow consumer: queue full", "slow_consumer")
	return false
}

// tryQueue queues a frame when Send has room, counting it for the ack timing and the metrics,
// and reports whether it did; it never blocks.
func (c *AgentConnection) tryQueue(frame []byte) bool {
	select {
	case c.Send <- frame:
		c.cmds.flight.frameQueued()
		c.hub.metrics.framesOut.Inc()
		return true
	default:
		return false
	}
}

func (c *AgentConnection) start() {
	if c.Conn == nil {
		// No socket: the caller drains Send itself; only commands need a goroutine.
		c.pumps.Store(1)
		go c.dispatchLoop()
		return
	}
	c.pumps.Store(4)
	go c.writePump()
	go c.readPump()
	go c.dispatchLoop()
	go c.statusLoop()
}

// dispatchLoop runs the connection's command dispatcher (see commandBook.serve).
func (c *AgentConnection) dispatchLoop() {
	defer c.pumpDone()
	c.hub.commands.serve(c.cmds)
}

// pumpDone reports one goroutine's end; the last one unregisters the connection.
func (c *AgentConnection) pumpDone() {
	if c.pumps.Add(-1) == 0 {
		c.hub.unregister(c)
	}
}

// readPump reads frames, enforcing the size limit, the rate limit and the pong deadline, and
// hands each to the hub. Database work for a frame happens here, so one agent's frames are
// handled in the order it sent them and a slow database slows that agent only; session status
// reports, the frames an agent may send most of, go to the status writer instead, which
// writes whatever accumulated in one transaction (see statusQueue).
func (c *AgentConnection) readPump() {
	defer c.pumpDone()
	defer close(c.readDone)
	cfg := c.hub.cfg
	_ = c.Conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	c.Conn.SetPongHandler(func(string) error {
		c.touch(cfg.Clock.Now())
		return c.Conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	})
	for {
		mt, r, err := c.Conn.NextReader()
		if err != nil {
			c.closeWith(readCloseCode(err))
			return
		}
		if mt == websocket.BinaryMessage {
			if !c.readTunnelData(r) {
				return
			}
			continue
		}
		data, err := io.ReadAll(io.LimitReader(r, cfg.MaxMessageSize+1))
		if err != nil {
			c.closeWith(readCloseCode(err))
			return
		}
		_ = c.Conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
		if c.closing() {
			continue // discard until the peer answers our close frame
		}
		if int64(len(data)) > cfg.MaxMessageSize {
			c.hub.metrics.refused.WithLabelValues("too_big").Inc()
			c.closeWith(websocket.CloseMessageTooBig, "message too big", "too_big")
			continue
		}
		now := cfg.Clock.Now()
		c.touch(now)
		f, ferr := decodeAgentFrame(data)
		tunnelFrame := ferr == nil && isTunnelType(f.Type)                // bounded by the tunnels' backlog instead (6.2)
		if !tunnelFrame && !c.budget.limiter.Allow() && !c.relaysLogs() { // wall time: a flood is measured in real seconds
			c.hub.metrics.refused.WithLabelValues("rate_limited").Inc()
			c.closeWith(websocket.ClosePolicyViolation, "too many frames", "rate_limited")
			continue
		}
		c.cmds.flight.handlingStarted(now)
		left := c.hub.handleDecoded(c, f, ferr, now)
		c.cmds.flight.handlingEnded(cfg.Clock.Since(now))
		if left && c.Receive != nil {
			c.offer(f.Type, data)
		}
	}
}

// readTunnelData reads a binary frame, tunnel data (PROTOCOL.md 6.3: outside the frame
// budget, bounded by the windows), straight into a pooled chunk that the viewer's writer gives
// back: no allocation or copy per frame. It reports false when the socket failed.
func (c *AgentConnection) readTunnelData(r io.Reader) bool {
	cfg := c.hub.cfg
	var head [models.TunnelDataHeader]byte
	h, err := io.ReadFull(r, head[:])
	if err != nil && !isShortFrame(err) {
		c.closeWith(readCloseCode(err))
		return false
	}
	chunk := getChunk()
	n, err := io.ReadFull(r, chunk)
	if err != nil && !isShortFrame(err) {
		putChunk(chunk)
		c.closeWith(readCloseCode(err))
		return false
	}
	// Beyond a chunk: a violation of this tunnel, or of the frame limit when too big.
	extra, err := io.Copy(io.Discard, io.LimitReader(r, cfg.MaxMessageSize))
	if err != nil {
		putChunk(chunk)
		c.closeWith(readCloseCode(err))
		return false
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	if c.closing() {
		putChunk(chunk)
		return true // discard until the peer answers our close frame
	}
	if int64(h+n)+extra > cfg.MaxMessageSize {
		putChunk(chunk)
		c.hub.metrics.refused.WithLabelValues("too_big").Inc()
		c.closeWith(websocket.CloseMessageTooBig, "message too big", "too_big")
		return true
	}
	c.touch(cfg.Clock.Now())
	c.hub.metrics.frameIn("tunnel_data")
	if h < models.TunnelDataHeader || n == 0 {
		putChunk(chunk)
		c.hub.metrics.vnc.refused.WithLabelValues("protocol_violation").Inc()
		return true
	}
	c.tunnels.onData(binary.BigEndian.Uint32(head[:]), chunk[:n], extra > 0)
	return true
}

// isShortFrame reports a frame that ended before the buffer was full: not an error here.
func isShortFrame(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// writePump is the only writer of the socket: queued frames one per WebSocket frame, pings,
// and on close the close frame (after writing what is queued when the server is shutting
// down), then it closes the socket.
func (c *AgentConnection) writePump() {
	defer c.pumpDone()
	cfg := c.hub.cfg
	ticker := time.NewTicker(cfg.PingInterval)
	defer func() {
		ticker.Stop()
		_ = c.Conn.Close()
	}()
	for {
		// Control frames first; then one tunnel's chunk; then wait for either (PROTOCOL.md 6.4).
		var msg []byte
		mt, control := websocket.TextMessage, true
		select {
		case msg = <-c.Send:
		case <-ticker.C:
			if !c.ping() {
				return
			}
			continue
		case <-c.done:
			c.closeSocket()
			return
		default:
			if chunk, chunkType, ok := c.tunnels.nextChunk(cfg.Clock.Now()); ok {
				msg, mt, control = chunk, chunkType, false
				break
			}
			select {
			case msg = <-c.Send:
			case <-c.tunnels.wake:
				continue
			case <-ticker.C:
				if !c.ping() {
					return
				}
				continue
			case <-c.done:
				c.closeSocket()
				return
			}
		}
		if err := c.writeFrame(mt, msg); err != nil {
			c.closeWith(websocket.CloseGoingAway, "write failed", "write_error")
			return
		}
		if control {
			c.cmds.flight.frameWritten()
		}
	}
}

func (c *AgentConnection) ping() bool {
	if err := c.Conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.hub.cfg.WriteWait)); err != nil {
		c.closeWith(websocket.CloseGoingAway, "ping failed", "write_error")
		return false
	}
	return true
}

// closeSocket writes the close frame (after what is queued when the server is shutting down,
// or after a policy close's error frame) and waits briefly for the peer's.
func (c *AgentConnection) closeSocket() {
	if c.closeCode == websocket.CloseGoingAway || c.closeCode == websocket.ClosePolicyViolation {
		c.drain()
	}
	_ = c.Conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(c.closeCode, c.closeReason), time.Now().Add(c.hub.cfg.WriteWait))
	c.awaitPeerClose()
}

func (c *AgentConnection) writeFrame(mt int, msg []byte) error {
	if mt == websocket.TextMessage {
		return c.write(msg)
	}
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.hub.cfg.WriteWait)); err != nil {
		return err
	}
	return c.Conn.WriteMessage(mt, msg)
}

func (c *AgentConnection) write(msg []byte) error {
	return writeText(c.Conn, msg, c.hub.cfg.WriteWait)
}

// drain writes what is already queued, within the write deadline.
func (c *AgentConnection) drain() { drainQueue(c.Conn, c.Send, c.hub.cfg.WriteWait) }

func (c *AgentConnection) awaitPeerClose() { awaitClosed(c.readDone) }
