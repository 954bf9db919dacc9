package agentclient

import (
	"fmt"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// writeLoop is the connection's only socket writer. It first writes the outbox frames earlier
// connections could not deliver, then, until the connection ends: queued frames (acks, pongs,
// heartbeats, log lines) before each outbox frame (results, status reports), so an ack always
// precedes its command's result; a WebSocket ping every pingPeriod and after each burst of
// outbox frames, whose pong confirms them. Any write error ends the connection. It closes the
// socket when it returns.
func (c *conn) writeLoop() {
	defer c.ws.Close()
	ping := c.a.clock.NewTicker(c.a.pingPeriod)
	defer ping.Stop()

	c.a.outMu.Lock()
	backlog := len(c.a.out.frames)
	c.a.outMu.Unlock()
	for range backlog {
		f := c.a.popOutbox()
		if f == nil {
			break
		}
		if !c.writeOutbox(f) {
			close(c.flushed)
			return
		}
	}
	close(c.flushed)

	for {
		select {
		case <-c.done:
			c.finish()
			return
		default:
		}
		c.prune()
		// Pop before draining the queue: an ack queued before its result was pushed is
		// then written first.
		f := c.a.popOutbox()
		if !c.drain() {
			return
		}
		if f != nil {
			if !c.writeOutbox(f) {
				return
			}
			continue
		}
		if n := len(c.unconfirmed); n > 0 && c.unconfirmed[n-1].tag == c.pingSeq {
			if !c.ping() {
				return
			}
		}
		if c.hasReady() {
			// Tunnel data, one chunk per turn, once no control frame waits.
			select {
			case <-ping.Chan():
				if !c.ping() {
					return
				}
			default:
			}
			if !c.writeData() {
				return
			}
			continue
		}
		select {
		case <-c.tun.dataKick:
		case <-c.done:
		case f := <-c.send:
			if !c.write(f) {
				return
			}
		case <-c.a.outboxNotify:
		case <-ping.Chan():
			if !c.ping() {
				return
			}
		}
	}
}

// drain writes the frames queued at this moment.
func (c *conn) drain() bool {
	for range len(c.send) {
		if !c.write(<-c.send) {
			return false
		}
	}
	return true
}

// writeOutbox writes an outbox frame, keeping it until a pong confirms it; if the connection
// dies first, serveConn puts it back in the outbox.
func (c *conn) writeOutbox(f []byte) bool {
	c.unconfirmed = append(c.unconfirmed, sentFrame{data: f, tag: c.pingSeq})
	if len(c.unconfirmed) > outboxLimit {
		// A control plane that never answers pings with their data: assume delivered.
		c.unconfirmed = c.unconfirmed[1:]
	}
	return c.write(outFrame{kind: websocket.TextMessage, data: f})
}

// prune forgets the outbox frames the control plane confirmed.
func (c *conn) prune() {
	conf := c.confirmed.Load()
	i := 0
	for i < len(c.unconfirmed) && c.unconfirmed[i].tag <= conf {
		c.unconfirmed[i] = sentFrame{}
		i++
	}
	c.unconfirmed = c.unconfirmed[i:]
}

// ping writes a WebSocket ping carrying the next sequence number.
func (c *conn) ping() bool {
	seq := c.pingSeq
	c.pingSeq++
	return c.write(outFrame{kind: websocket.PingMessage, data: []byte(strconv.FormatUint(seq, 10))})
}

// confirm records the pong of a ping: every outbox frame written before that ping was read.
func (c *conn) confirm(data string) {
	seq, err := strconv.ParseUint(data, 10, 64)
	if err != nil {
		return
	}
	for {
		cur := c.confirmed.Load()
		if seq <= cur || c.confirmed.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// write writes one frame within writeWait; an error ends the connection.
func (c *conn) write(f outFrame) bool {
	deadline := time.Now().Add(c.a.writeWait)
	var err error
	if f.kind == websocket.TextMessage || f.kind == websocket.BinaryMessage {
		_ = c.ws.SetWriteDeadline(deadline)
		err = c.ws.WriteMessage(f.kind, f.data)
	} else {
		err = c.ws.WriteControl(f.kind, f.data, deadline)
	}
	if err != nil {
		c.fail(fmt.Errorf("agentclient: write frame: %w", err))
		return false
	}
	return true
}

// finish ends a connection that stop asked to close: with flush, it writes what is queued;
// then the close frame, and waits up to closeGrace for the control plane's, so the socket is
// not reset under frames it still reads. When the control plane answers our close frame with
// the same code, it has read everything before it: nothing is left unconfirmed.
func (c *conn) finish() {
	if c.closeCode == 0 {
		return
	}
	if c.flush {
		for {
			f := c.a.popOutbox()
			if !c.drain() {
				return
			}
			if f == nil {
				break
			}
			if !c.writeOutbox(f) {
				return
			}
		}
	}
	msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.a.writeWait)); err != nil {
		return
	}
	t := time.NewTimer(c.a.closeGrace)
	defer t.Stop()
	select {
	case <-c.readDone:
		if c.flush && int(c.peerClose.Load()) == c.closeCode {
			c.unconfirmed = nil
		}
	case <-t.C:
	}
}

// popOutbox takes the oldest outbox frame, or nil.
func (a *Agent) popOutbox() []byte {
	a.outMu.Lock()
	defer a.outMu.Unlock()
	return a.out.pop()
}
