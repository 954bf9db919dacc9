package websocket

import (
	"errors"
	"io"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// errTunnelEnded stops the viewer's reader once the tunnel has ended.
var errTunnelEnded = errors.New("websocket: vnc tunnel ended")

// finish ends the tunnel with the viewer's close code and reason; only the first call counts.
// It never blocks: the viewer's writer sends the close.
func (t *Tunnel) finish(code int, reason string) {
	t.endOnce.Do(func() {
		t.endCode, t.endReason = code, reason
		close(t.end)
		if code != websocket.CloseNormalClosure && code != websocket.CloseGoingAway {
			t.hub.cfg.Logger.Info("closing vnc viewer", "session_id", t.req.Session.ID,
				"agent_id", t.req.Session.AgentID, "code", code, "reason", reason)
		}
	})
}

func (t *Tunnel) ended() bool {
	select {
	case <-t.end:
		return true
	default:
		return false
	}
}

// agentGone marks a tunnel the agent ended or already knows ended: no close is sent for it.
func (t *Tunnel) agentGone() { t.agentKnows.Store(true) }

func (t *Tunnel) signalRoom() {
	select {
	case t.room <- struct{}{}:
	default:
	}
}

// fromAgent queues the agent's bytes for the viewer without blocking (the agent's reader must
// never wait on a browser). tunnel/1's window bounds the queue; a StreamSpace tunnel past
// MaxBacklog closes its viewer with 4001.
func (t *Tunnel) fromAgent(data []byte) {
	t.filter.serverBytes(data)
	s := t.set
	s.mu.Lock()
	if t.ended() {
		s.mu.Unlock()
		t.giveBack(data)
		return
	}
	t.toViewer = append(t.toViewer, data)
	t.viewerBytes += int64(len(data))
	over := t.proto == protoStreamSpace && t.viewerBytes > t.hub.cfg.VNC.MaxBacklog
	s.mu.Unlock()
	if over {
		t.hub.metrics.vnc.refused.WithLabelValues("slow_consumer").Inc()
		t.finish(CloseSlowConsumer, "slow consumer: viewer backlog")
		return
	}
	select {
	case t.more <- struct{}{}:
	default:
	}
}

// giveBack returns a chunk of the agent's bytes to the pool it was read into (tunnel/1 only:
// StreamSpace's bytes are decoded into buffers of their own).
func (t *Tunnel) giveBack(b []byte) {
	if t.proto == protoTunnel1 {
		putChunk(b)
	}
}

// sendToAgent queues the viewer's bytes for the agent, waiting while the queue is full (TCP
// then slows the browser). p is copied.
func (t *Tunnel) sendToAgent(p []byte) error {
	s := t.set
	limit := t.hub.cfg.VNC.ToAgentQueue
	for {
		s.mu.Lock()
		if t.ended() {
			s.mu.Unlock()
			return errTunnelEnded
		}
		if len(t.toAgent) == 0 || len(t.toAgent)+len(p) <= limit {
			t.toAgent = append(t.toAgent, p...)
			s.schedule(t)
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-t.room:
		case <-t.end:
			return errTunnelEnded
		}
	}
}

// readPump reads the browser's frames: binary only (1003), at most 64 KiB each (1009), each
// through the viewer filter toward the agent. After the tunnel ends it discards frames until
// the browser answers the close.
func (t *Tunnel) readPump(conn *websocket.Conn) {
	cfg := t.hub.cfg
	_ = conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	})
	refused := t.hub.metrics.vnc.refused
	for {
		mt, r, err := conn.NextReader()
		if err != nil {
			t.finish(websocket.CloseNormalClosure, "")
			return
		}
		if t.ended() {
			continue
		}
		if mt != websocket.BinaryMessage {
			refused.WithLabelValues("text_frame").Inc()
			t.finish(websocket.CloseUnsupportedData, "binary frames only")
			continue
		}
		data, err := io.ReadAll(io.LimitReader(r, maxViewerFrame+1))
		if err != nil {
			t.finish(websocket.CloseNormalClosure, "")
			return
		}
		if len(data) > maxViewerFrame {
			refused.WithLabelValues("too_big").Inc()
			t.finish(websocket.CloseMessageTooBig, "message too big")
			continue
		}
		_ = conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
		t.filter.write(data)
	}
}

// writePump is the viewer socket's only writer: the agent's bytes, one binary frame per
// chunk, pings, and at the end the close frame (after what the tunnel sent when it ended
// cleanly).
func (t *Tunnel) writePump(conn *websocket.Conn, readDone <-chan struct{}) {
	cfg := t.hub.cfg
	ticker := time.NewTicker(cfg.PingInterval)
	defer ticker.Stop()
	defer func() { _ = conn.Close() }()
	for {
		select {
		case <-t.more:
			if err := t.flush(conn); err != nil {
				t.finish(websocket.CloseGoingAway, "write failed")
				return
			}
		case <-ticker.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteWait)); err != nil {
				t.finish(websocket.CloseGoingAway, "ping failed")
				return
			}
		case <-t.end:
			if t.endCode == websocket.CloseNormalClosure && t.endReason != "" {
				_ = t.flush(conn)
			}
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(t.endCode, t.endReason), time.Now().Add(cfg.WriteWait))
			awaitClosed(readDone)
			return
		}
	}
}

// flush writes what waits for the browser, then grants the agent credit for it (tunnel/1:
// once a quarter of the window was written, PROTOCOL.md 6.3) or lets a held update request go
// (StreamSpace's messages).
func (t *Tunnel) flush(conn *websocket.Conn) error {
	s, cfg := t.set, t.hub.cfg
	threshold := cfg.VNC.Window / 4
	for {
		s.mu.Lock()
		batch := t.toViewer
		t.toViewer = nil
		s.mu.Unlock()
		if len(batch) == 0 {
			return nil
		}
		var n int64
		for _, b := range batch {
			if err := conn.SetWriteDeadline(time.Now().Add(cfg.WriteWait)); err != nil {
				return err
			}
			if err := conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
				return err
			}
			n += int64(len(b))
			t.giveBack(b)
		}
		t.hub.metrics.vnc.bytes.WithLabelValues("to_viewer").Add(float64(n))
		var credit int64
		s.mu.Lock()
		t.viewerBytes -= n
		if t.proto == protoTunnel1 {
			t.consumed += n
			if t.consumed >= threshold && !t.ended() {
				credit, t.consumed = t.consumed, 0
				t.recvWindow += credit
			}
		} else if t.held != nil && t.viewerBytes <= cfg.VNC.PaceBacklog && !t.ended() {
			t.toAgent = append(t.toAgent, t.held...)
			t.held = nil
			s.schedule(t)
		}
		s.mu.Unlock()
		if credit > 0 {
			s.c.push(outbound(models.MessageTypeTunnelCredit, cfg.Clock.Now(),
				models.TunnelCreditMessage{TunnelID: t.id, Bytes: credit}))
		}
	}
}
