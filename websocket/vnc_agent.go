package websocket

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// Protocols of a tunnel, as the streamspace_vnc_tunnels_open label names them.
const (
	protoStreamSpace = "streamspace"
	protoTunnel1     = models.AgentFeatureTunnel
)

// tunnelChunk bounds the RFB bytes one tunnel sends before the next tunnel (or a control
// frame) gets its turn on the agent's socket (PROTOCOL.md 6.4): the largest data frame 6.3
// allows.
const tunnelChunk = models.MaxTunnelChunk

// maxViewerFrame bounds one browser frame (PROTOCOL.md 6.1).
const maxViewerFrame = models.MaxTunnelChunk

// SessionGetter reads a session; *db.Database satisfies it. The hub checks a vnc_ready's
// session with it, once per announcement and never on the data path.
type SessionGetter interface {
	GetSession(ctx context.Context, id string) (models.Session, error)
}

// vncSlot is the one tunnel a StreamSpace agent announced for a session (vnc_ready): the
// bytes its VNC server sent before a viewer came, and the viewer once one does.
type vncSlot struct {
	sessionID string
	early     []byte
	viewer    *Tunnel
	taken     bool // a viewer reserved it: one viewer per announcement
}

// agentTunnels is one agent connection's tunnels and the scheduler that takes turns among
// them on the connection's writer. mu guards every tunnel's queues too: the reader, the
// writer and the viewers meet here only, never across I/O.
type agentTunnels struct {
	c       *AgentConnection
	tunnel1 bool // the connection negotiated tunnel/1

	openMu sync.Mutex // numbers tunnel/1 tunnels and queues their tunnel_open, in that order

	mu        sync.Mutex
	nextID    uint32
	byID      map[uint32]*Tunnel
	bySession map[string]*vncSlot
	count     int       // reserved tunnels, for the per-agent limit
	ready     []*Tunnel // tunnels with bytes for the agent, in turn order
	closed    bool
	shutdown  bool // closed for the server's shutdown

	wake       chan struct{} // the writer has tunnel data to look at
	errLimiter *rate.Limiter // error answers to tunnel frames, 10 a second
}

func newAgentTunnels(c *AgentConnection, tunnel1 bool) *agentTunnels {
	return &agentTunnels{
		c: c, tunnel1: tunnel1, nextID: 1,
		byID: map[uint32]*Tunnel{}, bySession: map[string]*vncSlot{},
		wake:       make(chan struct{}, 1),
		errLimiter: rate.NewLimiter(10, 10),
	}
}

func (s *agentTunnels) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// schedule puts t in the turn order if it has bytes it may send. Called with s.mu held.
func (s *agentTunnels) schedule(t *Tunnel) {
	if t.scheduled || len(t.toAgent) == 0 || t.ended() {
		return
	}
	if t.proto == protoTunnel1 && t.sendWindow <= 0 {
		return
	}
	t.scheduled = true
	s.ready = append(s.ready, t)
	s.signal()
}

// nextChunk takes the next tunnel's turn: at most tunnelChunk bytes (and its window), framed
// for the agent. The writer calls it only when no control frame waits.
func (s *agentTunnels) nextChunk(now time.Time) (frame []byte, msgType int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.ready) > 0 {
		t := s.ready[0]
		s.ready[0] = nil
		s.ready = s.ready[1:]
		t.scheduled = false
		n := min(len(t.toAgent), tunnelChunk)
		if t.proto == protoTunnel1 {
			n = int(min(int64(n), t.sendWindow))
		}
		if n <= 0 || t.ended() {
			continue
		}
		chunk := t.toAgent[:n]
		if t.proto == protoTunnel1 {
			frame = make([]byte, models.TunnelDataHeader+n)
			binary.BigEndian.PutUint32(frame, t.id)
			copy(frame[models.TunnelDataHeader:], chunk)
			msgType = websocket.BinaryMessage
			t.sendWindow -= int64(n)
		} else {
			frame = outbound(models.MessageTypeVNCData, now, models.VNCDataMessage{
				SessionID: t.req.Session.ID, Data: base64.StdEncoding.EncodeToString(chunk),
			})
			msgType = websocket.TextMessage
		}
		t.toAgent = t.toAgent[n:]
		if len(t.toAgent) == 0 {
			t.toAgent = nil
		}
		s.schedule(t)
		t.signalRoom()
		s.c.hub.metrics.vnc.bytes.WithLabelValues("to_agent").Add(float64(n))
		return frame, msgType, true
	}
	return nil, 0, false
}

// closeAll ends every viewer when the agent's socket closes: 1001 for a shutdown, else 1011.
func (s *agentTunnels) closeAll(shutdown bool) {
	s.mu.Lock()
	s.closed, s.shutdown = true, shutdown
	var viewers []*Tunnel
	for _, t := range s.byID {
		viewers = append(viewers, t)
	}
	for _, sl := range s.bySession {
		if sl.viewer != nil {
			viewers = append(viewers, sl.viewer)
		}
	}
	s.mu.Unlock()
	for _, t := range viewers {
		t.agentGone()
		t.agentClosed(shutdown)
	}
}

// agentClosed ends a viewer whose agent's socket closed: 1001 for a shutdown, else 1011.
func (t *Tunnel) agentClosed(shutdown bool) {
	if shutdown {
		t.finish(websocket.CloseGoingAway, "server shutting down")
	} else {
		t.finish(websocket.CloseInternalServerErr, "agent disconnected")
	}
}

// refuse answers a refused tunnel frame with an error frame naming the session, at most 10 a
// second; it never counts toward the malformed limit nor closes the agent.
func (s *agentTunnels) refuse(reason, sessionID, msg string, now time.Time) {
	h := s.c.hub
	h.metrics.vnc.refused.WithLabelValues(reason).Inc()
	if !s.errLimiter.Allow() {
		return
	}
	s.c.push(errorFrame(&frameError{msg: msg, sessionID: sessionID}, now))
}

// isTunnelType reports the frame types outside the agent's frame rate limit (PROTOCOL.md 6.2):
// those a tunnel's traffic is made of, which its window or backlog bounds instead. vnc_ready
// (a database read each) and vnc_error stay under the limit: a tunnel sends one of each.
func isTunnelType(t string) bool {
	switch t {
	case models.MessageTypeVNCData, models.MessageTypeTunnelOpened, models.MessageTypeTunnelCredit, models.MessageTypeTunnelClose:
		return true
	}
	return false
}

// dispatchTunnelFrame handles the session-streaming frame types; handled is false for others.
// left reports a frame the hub leaves to the embedder (see AgentConnection.Receive): a vnc_*
// frame of a session no Tunnel of this package holds, or a tunnel/1 frame on a connection that
// did not negotiate tunnel/1 (a type unknown there).
func (h *AgentHub) dispatchTunnelFrame(c *AgentConnection, f agentFrame, now time.Time) (handled, left bool, _ *frameError) {
	s := c.tunnels
	switch f.Type {
	case models.MessageTypeVNCReady:
		var m models.VNCReadyMessage
		if err := decodePayload(f, &m); err != nil {
			return true, false, err
		}
		if err := requireID(f.Type, "sessionId", m.SessionID); err != nil {
			return true, false, err
		}
		return true, h.onVNCReady(c, m.SessionID, now), nil
	case models.MessageTypeVNCData:
		var m models.VNCDataMessage
		if err := decodePayload(f, &m); err != nil {
			return true, false, err
		}
		if err := requireID(f.Type, "sessionId", m.SessionID); err != nil {
			return true, false, err
		}
		return true, s.onVNCData(m, now), nil
	case models.MessageTypeVNCError:
		var m models.VNCErrorMessage
		if err := decodePayload(f, &m); err != nil {
			return true, false, err
		}
		return true, s.onVNCError(m), nil
	case models.MessageTypeTunnelOpened, models.MessageTypeTunnelCredit, models.MessageTypeTunnelClose:
		if !s.tunnel1 {
			return true, true, nil // not negotiated: a type unknown here
		}
		var m struct {
			TunnelID uint32 `json:"tunnelId"`
			Window   int64  `json:"window"`
			Bytes    int64  `json:"bytes"`
			Reason   string `json:"reason"`
		}
		if err := decodePayload(f, &m); err != nil {
			return true, false, err
		}
		s.onTunnelControl(f.Type, m.TunnelID, m.Window, m.Bytes, m.Reason)
		return true, false, nil
	}
	return false, false, nil
}

// Who a StreamSpace tunnel's frames are for. A Tunnel of this package holds a session's
// announcement on a connection from AgentHub.OpenTunnel, which reserves it, to the tunnel's
// Close (the end of Serve): while one does, the session's vnc_* frames are the hub's, for that
// viewer. Otherwise they are the embedder's (AgentConnection.Receive, when set): the hub still
// records an announcement of a session placed on the agent, and keeps the first bytes, for a
// viewer of its own that may come, but answers the agent nothing about them. Without Receive
// the hub alone handles them, and answers what it cannot use with an error frame.

// heldByViewer reports whether a Tunnel of this package holds sessionID's announcement. Called
// with s.mu held.
func (s *agentTunnels) heldByViewer(sessionID string) bool {
	sl := s.bySession[sessionID]
	return sl != nil && sl.viewer != nil
}

// embedderReads reports whether the connection's owner takes the frames the hub leaves.
func (s *agentTunnels) embedderReads() bool { return s.c.Receive != nil }

// onVNCReady accepts a StreamSpace agent's tunnel for a session placed on it, replacing an
// earlier one (whose viewer is closed), and reports whether the frame is the embedder's.
func (h *AgentHub) onVNCReady(c *AgentConnection, sessionID string, now time.Time) (left bool) {
	s := c.tunnels
	getter, _ := h.store.(SessionGetter)
	placed := false
	if getter != nil {
		ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
		sess, err := getter.GetSession(ctx, sessionID)
		cancel()
		if err != nil && !isNotFound(err) {
			h.cfg.Logger.Warn("checking a vnc_ready's session failed", "agent_id", c.AgentID, "session_id", sessionID, "err", err)
		}
		placed = err == nil && sess.AgentID == c.AgentID
	}
	s.mu.Lock()
	left = s.embedderReads() && !s.heldByViewer(sessionID)
	old := s.bySession[sessionID]
	if placed {
		s.bySession[sessionID] = &vncSlot{sessionID: sessionID}
	}
	s.mu.Unlock()
	if !placed {
		if !left {
			s.refuse("not_placed", sessionID, "session is not placed on this agent", now)
		}
		return left
	}
	if old != nil && old.viewer != nil {
		old.viewer.agentGone()
		old.viewer.finish(websocket.CloseInternalServerErr, "agent error: tunnel reopened")
	}
	return left
}

// onVNCData hands a StreamSpace tunnel's bytes to its viewer, or keeps them until one comes,
// and reports whether the frame is the embedder's.
func (s *agentTunnels) onVNCData(m models.VNCDataMessage, now time.Time) (left bool) {
	data, err := base64.StdEncoding.DecodeString(m.Data)
	valid := err == nil && len(data) > 0
	s.mu.Lock()
	sl := s.bySession[m.SessionID]
	if s.embedderReads() && !s.heldByViewer(m.SessionID) {
		if sl != nil && valid {
			s.keepEarly(sl, data, false)
		}
		s.mu.Unlock()
		return true
	}
	if sl == nil {
		s.mu.Unlock()
		s.refuse("unknown_tunnel", m.SessionID, "no VNC tunnel is open for the session", now)
		return false
	}
	viewer := sl.viewer
	if !valid {
		if s.bySession[m.SessionID] == sl {
			delete(s.bySession, m.SessionID)
		}
		s.mu.Unlock()
		s.refuse("invalid_data", m.SessionID, "vnc_data data is not valid base64", now)
		s.c.push(outbound(models.MessageTypeVNCClose, now, models.VNCCloseMessage{SessionID: m.SessionID, Reason: "invalid data"}))
		if viewer != nil {
			viewer.agentGone()
			viewer.finish(websocket.CloseInternalServerErr, "tunnel protocol violation")
		}
		return false
	}
	if viewer == nil {
		s.keepEarly(sl, data, true)
		s.mu.Unlock()
		return false
	}
	s.mu.Unlock()
	viewer.fromAgent(data)
	return false
}

// keepEarly keeps the bytes a tunnel sent before its viewer came, up to VNC.EarlyBytes; with
// counted, what does not fit counts as refused (early_overflow). Called with s.mu held.
func (s *agentTunnels) keepEarly(sl *vncSlot, data []byte, counted bool) {
	room := s.c.hub.cfg.VNC.EarlyBytes - len(sl.early)
	if len(data) > room {
		if counted {
			s.c.hub.metrics.vnc.refused.WithLabelValues("early_overflow").Inc()
		}
		data = data[:max(room, 0)]
	}
	sl.early = append(sl.early, data...)
}

// onVNCError ends a StreamSpace tunnel the agent reports failed, and reports whether the frame
// is the embedder's.
func (s *agentTunnels) onVNCError(m models.VNCErrorMessage) (left bool) {
	s.mu.Lock()
	left = s.embedderReads() && !s.heldByViewer(m.SessionID)
	sl := s.bySession[m.SessionID]
	if sl != nil {
		delete(s.bySession, m.SessionID)
	}
	s.mu.Unlock()
	if sl != nil && sl.viewer != nil {
		sl.viewer.agentGone()
		sl.viewer.finish(websocket.CloseInternalServerErr, agentErrorReason(m.Error))
	}
	return left
}

// agentErrorReason is the viewer's close reason for an agent's error text, cut to 128 bytes.
func agentErrorReason(text string) string {
	return "agent error: " + models.TruncateUTF8(models.SanitizeText(text), 128)
}

// onTunnelControl handles tunnel_opened, tunnel_credit and tunnel_close (PROTOCOL.md 6.3).
func (s *agentTunnels) onTunnelControl(typ string, id uint32, window, credit int64, reason string) {
	s.mu.Lock()
	t := s.byID[id]
	if t == nil {
		known := id != 0 && id < s.nextID
		s.mu.Unlock()
		if !known && typ != models.MessageTypeTunnelClose {
			s.violation(id, nil)
		}
		return // a tunnel closed a moment ago
	}
	switch typ {
	case models.MessageTypeTunnelOpened:
		if t.opened || window <= 0 || window > models.MaxTunnelWindow {
			s.mu.Unlock()
			s.violation(id, t)
			return
		}
		t.opened, t.sendWindow = true, window
		close(t.openedCh)
		s.schedule(t)
	case models.MessageTypeTunnelCredit:
		if !t.opened || credit <= 0 || t.sendWindow+credit > models.MaxTunnelWindow {
			s.mu.Unlock()
			s.violation(id, t)
			return
		}
		t.sendWindow += credit
		s.schedule(t)
	case models.MessageTypeTunnelClose:
		delete(s.byID, id)
		s.mu.Unlock()
		t.agentGone()
		if reason == "" {
			t.finish(websocket.CloseNormalClosure, "tunnel closed")
		} else {
			t.finish(websocket.CloseInternalServerErr, agentErrorReason(reason))
		}
		return
	}
	s.mu.Unlock()
}

// onData handles a tunnel/1 binary data frame: the tunnel id, then RFB bytes for its viewer
// in a pooled chunk (getChunk), which the viewer's writer gives back; tooBig: the frame
// carried more than a chunk.
func (s *agentTunnels) onData(id uint32, data []byte, tooBig bool) {
	if !s.tunnel1 {
		putChunk(data)
		s.c.hub.metrics.vnc.refused.WithLabelValues("protocol_violation").Inc()
		return
	}
	s.mu.Lock()
	t := s.byID[id]
	if t == nil {
		known := id != 0 && id < s.nextID
		s.mu.Unlock()
		putChunk(data)
		if !known {
			s.violation(id, nil)
		}
		return
	}
	if !t.opened || tooBig || int64(len(data)) > t.recvWindow {
		s.mu.Unlock()
		putChunk(data)
		s.violation(id, t)
		return
	}
	t.recvWindow -= int64(len(data))
	s.mu.Unlock()
	t.fromAgent(data)
}

// chunkPool lends the buffers tunnel data is read into from an agent's socket: a chunk each
// (models.MaxTunnelChunk), taken by the agent's reader, given back by the viewer's writer once
// written, so a busy tunnel allocates nothing per frame and an idle one holds no buffer.
var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, models.MaxTunnelChunk)
	return &b
}}

func getChunk() []byte { return *chunkPool.Get().(*[]byte) }

// putChunk gives back a chunk getChunk lent; any other buffer is left to the collector.
func putChunk(b []byte) {
	if cap(b) != models.MaxTunnelChunk {
		return
	}
	b = b[:cap(b)]
	chunkPool.Put(&b)
}

// violation closes one tunnel the agent broke 6.3 on; the agent's socket goes on.
func (s *agentTunnels) violation(id uint32, t *Tunnel) {
	s.c.hub.metrics.vnc.refused.WithLabelValues("protocol_violation").Inc()
	s.c.hub.cfg.Logger.Info("agent broke the tunnel protocol", "agent_id", s.c.AgentID, "tunnel_id", id)
	if t != nil {
		s.mu.Lock()
		delete(s.byID, id)
		s.mu.Unlock()
		t.agentGone()
		t.finish(websocket.CloseInternalServerErr, "tunnel protocol violation")
	}
	s.c.push(outbound(models.MessageTypeTunnelClose, s.c.hub.cfg.Clock.Now(),
		models.TunnelCloseMessage{TunnelID: id, Reason: "protocol violation"}))
}

// isNotFound reports a store's answer for a session that does not exist.
func isNotFound(err error) bool { return errors.Is(err, db.ErrNotFound) }
