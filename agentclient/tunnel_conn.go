package agentclient

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// tunnelRetry is how long a StreamSpace-mode session waits to open a new tunnel after its
// handler ended on its own (the VNC server closed or could not be reached).
const tunnelRetry = 2 * time.Second

// Reasons sent in tunnel_close.
const (
	reasonViolation = "protocol violation"
	reasonNoTunnels = "tunnels not served by this agent"
	reasonNoSession = "session not running on this agent"
	reasonTooMany   = "too many tunnels"
	maxConnTunnels  = 256 // tunnels open at once on one connection
)

// tunnels is a connection's tunnel state, guarded by mu.
type tunnels struct {
	mu       sync.Mutex
	byID     map[uint32]*Tunnel // tunnel/1 tunnels
	bySess   map[string]*Tunnel // StreamSpace-mode tunnels, one per session
	maxID    uint32             // highest tunnel id the control plane opened
	readyMu  sync.Mutex
	ready    []*Tunnel     // tunnels with a frame for the writer, in turn order
	dataKick chan struct{} // cap 1: ready grew
}

func newTunnels() tunnels {
	return tunnels{byID: make(map[uint32]*Tunnel), bySess: make(map[string]*Tunnel), dataKick: make(chan struct{}, 1)}
}

// hasFeature reports whether the comma-separated list holds feature.
func hasFeature(list, feature string) bool {
	for f := range strings.SplitSeq(list, ",") {
		if strings.EqualFold(strings.TrimSpace(f), feature) {
			return true
		}
	}
	return false
}

// schedule gives t a turn of the writer.
func (c *conn) schedule(t *Tunnel) {
	c.tun.readyMu.Lock()
	c.tun.ready = append(c.tun.ready, t)
	c.tun.readyMu.Unlock()
	notify(c.tun.dataKick)
}

func (c *conn) hasReady() bool {
	c.tun.readyMu.Lock()
	defer c.tun.readyMu.Unlock()
	return len(c.tun.ready) > 0
}

// writeData writes one frame of the tunnel whose turn it is, after every control frame queued
// before that frame existed: control first, and tunnels take turns one chunk each.
func (c *conn) writeData() bool {
	c.tun.readyMu.Lock()
	if len(c.tun.ready) == 0 {
		c.tun.readyMu.Unlock()
		return true
	}
	t := c.tun.ready[0]
	c.tun.ready[0] = nil
	c.tun.ready = c.tun.ready[1:]
	c.tun.readyMu.Unlock()

	frame, last := t.take()
	if frame == nil {
		return true
	}
	// Taken first, drained second: a tunnel_opened queued before the chunk was made goes
	// before it.
	if !c.drain() {
		return false
	}
	kind := t.frameKind()
	if last {
		kind = websocket.TextMessage
	}
	if !c.write(outFrame{kind: kind, data: frame}) {
		return false
	}
	if kind == websocket.BinaryMessage {
		putFrame(frame) // written: gorilla copied it into its buffer
	}
	if !last && t.hasMore() {
		c.schedule(t)
	}
	return true
}

// forget removes t from the connection's tables; later data for it is discarded.
func (c *conn) forget(t *Tunnel) {
	c.tun.mu.Lock()
	defer c.tun.mu.Unlock()
	if t.id != 0 {
		if c.tun.byID[t.id] == t {
			delete(c.tun.byID, t.id)
		}
	} else if c.tun.bySess[t.session] == t {
		delete(c.tun.bySess, t.session)
	}
}

// endTunnels ends every tunnel of a connection that is over.
func (c *conn) endTunnels() {
	c.tun.mu.Lock()
	all := make([]*Tunnel, 0, len(c.tun.byID)+len(c.tun.bySess))
	for _, t := range c.tun.byID {
		all = append(all, t)
	}
	for _, t := range c.tun.bySess {
		all = append(all, t)
	}
	c.tun.mu.Unlock()
	for _, t := range all {
		t.peerClose()
	}
}

// sendClose answers a tunnel id that has no tunnel with tunnel_close.
func (c *conn) sendClose(id uint32, reason string) {
	_ = c.enqueueText(c.ctx, models.MessageTypeTunnelClose, models.TunnelCloseMessage{TunnelID: id, Reason: reason})
}

// onTunnelOpen starts a tunnel/1 tunnel's handler.
func (c *conn) onTunnelOpen(p json.RawMessage) {
	var m models.TunnelOpenMessage
	if err := json.Unmarshal(p, &m); err != nil || m.TunnelID == 0 {
		c.a.stats.unknown.Add(1)
		c.a.log.Warn("malformed tunnel_open ignored", "payload", truncate(p, 200))
		return
	}
	h := c.a.cfg.Tunnels
	if h == nil {
		c.sendClose(m.TunnelID, reasonNoTunnels)
		return
	}
	window := m.Window
	if window <= 0 || window > models.MaxTunnelWindow {
		c.sendClose(m.TunnelID, reasonViolation)
		return
	}
	c.tun.mu.Lock()
	if m.TunnelID <= c.tun.maxID {
		c.tun.mu.Unlock()
		c.a.log.Warn("tunnel_open reused a tunnel id", "tunnel_id", m.TunnelID)
		c.sendClose(m.TunnelID, reasonViolation)
		return
	}
	c.tun.maxID = m.TunnelID
	reason := ""
	switch {
	case !c.a.remembered(m.SessionID):
		reason = reasonNoSession
	case len(c.tun.byID) >= maxConnTunnels:
		reason = reasonTooMany
	}
	if reason != "" {
		c.tun.mu.Unlock()
		c.sendClose(m.TunnelID, reason)
		return
	}
	t := newTunnel(c, m.TunnelID, m.SessionID, m.ViewOnly, window, models.DefaultTunnelWindow)
	c.tun.byID[m.TunnelID] = t
	c.tun.mu.Unlock()
	c.a.log.Debug("tunnel opened", "tunnel_id", t.id, "session_id", t.session, "view_only", t.viewOnly)
	c.a.work.Go(func() { c.runTunnel(h, t) })
}

// onData handles a binary frame: a tunnel id and RFB bytes from the viewer.
func (c *conn) onData(data []byte) {
	if len(data) < models.TunnelDataHeader {
		c.a.stats.unknown.Add(1)
		return
	}
	id := binary.BigEndian.Uint32(data)
	body := data[models.TunnelDataHeader:]
	c.tun.mu.Lock()
	t, known := c.tun.byID[id]
	fresh := id > c.tun.maxID
	c.tun.mu.Unlock()
	switch {
	case !known && fresh && c.a.cfg.Tunnels != nil:
		c.a.log.Warn("data for a tunnel never opened", "tunnel_id", id)
		c.sendClose(id, reasonViolation)
	case !known: // closed a moment ago, or tunnels not served: discarded
	case len(body) == 0 || len(body) > models.MaxTunnelChunk:
		_ = t.closeWith(reasonViolation, true)
	default:
		t.deliver(body)
	}
}

// deliver buffers the viewer's bytes for Read; beyond the window (or, without one, beyond
// legacyRecvLimit) the tunnel is closed.
func (t *Tunnel) deliver(b []byte) {
	t.mu.Lock()
	if t.closed || t.peerClosed {
		t.mu.Unlock()
		return
	}
	if t.id != 0 && int64(len(b)) > t.recvWindow || t.id == 0 && len(t.recv)+len(b) > t.recvCap {
		t.mu.Unlock()
		t.c.a.log.Warn("tunnel data beyond its window: closing the tunnel", "tunnel_id", t.id, "session_id", t.session)
		reason := reasonViolation
		if t.id == 0 {
			reason = "viewer backlog"
		}
		_ = t.closeWith(reason, true)
		return
	}
	if t.id != 0 {
		t.recvWindow -= int64(len(b))
	}
	t.recv = append(t.recv, b...)
	t.mu.Unlock()
	notify(t.readable)
}

// onTunnelCredit widens a tunnel's send window.
func (c *conn) onTunnelCredit(p json.RawMessage) {
	var m models.TunnelCreditMessage
	if err := json.Unmarshal(p, &m); err != nil {
		c.a.stats.unknown.Add(1)
		return
	}
	c.tun.mu.Lock()
	t := c.tun.byID[m.TunnelID]
	c.tun.mu.Unlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	ok := m.Bytes > 0 && t.sendWindow+m.Bytes <= models.MaxTunnelWindow
	if ok {
		t.sendWindow += m.Bytes
	}
	t.mu.Unlock()
	if !ok {
		_ = t.closeWith(reasonViolation, true)
		return
	}
	notify(t.writable)
}

// onTunnelClose ends a tunnel the control plane closed.
func (c *conn) onTunnelClose(p json.RawMessage) {
	var m models.TunnelCloseMessage
	if err := json.Unmarshal(p, &m); err != nil {
		c.a.stats.unknown.Add(1)
		return
	}
	c.tun.mu.Lock()
	t := c.tun.byID[m.TunnelID]
	delete(c.tun.byID, m.TunnelID)
	c.tun.mu.Unlock()
	if t != nil {
		c.a.log.Debug("tunnel closed by the control plane", "tunnel_id", t.id, "reason", m.Reason)
		t.peerClose()
	}
}

// onVNCData hands base64 bytes of StreamSpace's messages to the session's tunnel.
func (c *conn) onVNCData(p json.RawMessage) {
	var m models.VNCDataMessage
	if err := json.Unmarshal(p, &m); err != nil {
		c.a.stats.unknown.Add(1)
		return
	}
	c.tun.mu.Lock()
	t := c.tun.bySess[m.SessionID]
	c.tun.mu.Unlock()
	if t == nil {
		return
	}
	if !t.isAccepted() {
		return // no vnc_ready yet: these bytes belong to no viewer of this tunnel
	}
	b, err := base64.StdEncoding.DecodeString(m.Data)
	if err != nil {
		_ = t.closeWith("invalid data", true)
		return
	}
	if len(b) > 0 {
		t.deliver(b)
	}
}

// onVNCClose ends the session's tunnel; its goroutine opens the next one.
func (c *conn) onVNCClose(p json.RawMessage) {
	var m models.VNCCloseMessage
	if err := json.Unmarshal(p, &m); err != nil {
		c.a.stats.unknown.Add(1)
		return
	}
	c.tun.mu.Lock()
	t := c.tun.bySess[m.SessionID]
	delete(c.tun.bySess, m.SessionID)
	c.tun.mu.Unlock()
	if t != nil {
		c.a.log.Debug("tunnel closed by the control plane", "session_id", m.SessionID, "reason", m.Reason)
		t.peerClose()
	}
}

// runTunnel runs a handler and ends its tunnel, unless the handler closed it or the control
// plane did: a handler error tells the control plane why (tunnel_close or vnc_error with its
// text, cut to 128 bytes), so a failed dial reaches the viewer.
func (c *conn) runTunnel(h TunnelHandler, t *Tunnel) {
	err := c.callHandler(h, t)
	t.mu.Lock()
	flowed, peer := t.flowed, t.peerClosed
	t.mu.Unlock()
	switch {
	case peer:
		_ = t.closeWith("", false)
	case err != nil:
		c.a.log.Info("tunnel handler failed", "session_id", t.session, "tunnel_id", t.id, "err", err, "bytes_flowed", flowed)
		_ = t.closeWith(truncateText(err.Error(), 128), true)
	case t.id == 0:
		// StreamSpace's messages have no close from the agent: vnc_error says the tunnel ended.
		_ = t.closeWith("vnc connection closed", true)
	default:
		_ = t.closeWith("", false)
	}
}

// callHandler calls h, turning a panic into an error.
func (c *conn) callHandler(h TunnelHandler, t *Tunnel) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.a.log.Error("tunnel handler panicked", "session_id", t.session, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("tunnel handler panicked: %v", r)
		}
	}()
	return h(t.ctx, t)
}

// openSession opens a StreamSpace-mode tunnel for a session, unless it has one.
func (c *conn) openSession(session string) {
	h := c.a.cfg.Tunnels
	if h == nil {
		return
	}
	c.tun.mu.Lock()
	if _, ok := c.tun.bySess[session]; ok {
		c.tun.mu.Unlock()
		return
	}
	t := newTunnel(c, 0, session, false, 0, legacyRecvLimit)
	c.tun.bySess[session] = t
	c.tun.mu.Unlock()
	c.a.work.Go(func() { c.runSession(h, t) })
}

// runSession runs a session's tunnels one after another while the session is remembered and
// the connection lives: right away after vnc_close, tunnelRetry later after the handler ended
// on its own.
func (c *conn) runSession(h TunnelHandler, t *Tunnel) {
	for {
		c.runTunnel(h, t)
		t.mu.Lock()
		peer := t.peerClosed
		t.mu.Unlock()
		if !c.a.remembered(t.session) {
			return
		}
		if !peer {
			timer := c.a.clock.NewTimer(c.a.tunnelRetry)
			select {
			case <-timer.Chan():
			case <-c.ctx.Done():
			}
			timer.Stop()
		}
		if !c.a.remembered(t.session) || c.ctx.Err() != nil {
			return
		}
		select {
		case <-c.done:
			return
		default:
		}
		c.tun.mu.Lock()
		if _, ok := c.tun.bySess[t.session]; ok {
			c.tun.mu.Unlock()
			return // OpenTunnel opened one meanwhile
		}
		t = newTunnel(c, 0, t.session, false, 0, legacyRecvLimit)
		c.tun.bySess[t.session] = t
		c.tun.mu.Unlock()
	}
}

// closeSession ends a session's tunnels: its StreamSpace-mode one, sending nothing, and its
// tunnel/1 ones with tunnel_close "session stopped".
func (c *conn) closeSession(session string) {
	c.tun.mu.Lock()
	legacy := c.tun.bySess[session]
	var ext []*Tunnel
	for _, t := range c.tun.byID {
		if t.session == session {
			ext = append(ext, t)
		}
	}
	c.tun.mu.Unlock()
	if legacy != nil {
		_ = legacy.Close()
	}
	for _, t := range ext {
		_ = t.closeWith("session stopped", true)
	}
}

// OpenTunnel makes the Agent serve tunnels for a session, now and after every reconnect. With
// StreamSpace's messages it opens the session's tunnel (running Config.Tunnels) and announces
// it with vnc_ready, and opens a new one after each vnc_close; with tunnel/1 it only remembers
// the session, since the control plane opens a tunnel per viewer. Call it when the session
// starts running.
func (a *Agent) OpenTunnel(ctx context.Context, sessionID string) error {
	switch {
	case a.cfg.Tunnels == nil:
		return fmt.Errorf("agentclient: open tunnel of session %s: %w", sessionID, ErrNoTunnels)
	case sessionID == "":
		return fmt.Errorf("agentclient: open tunnel: sessionId is required")
	case ctx.Err() != nil:
		return fmt.Errorf("agentclient: open tunnel of session %s: %w", sessionID, ctx.Err())
	}
	a.tunMu.Lock()
	a.tunSessions[sessionID] = struct{}{}
	c := a.tunConn
	a.tunMu.Unlock()
	if c != nil && !c.ext {
		c.openSession(sessionID)
	}
	return nil
}

// CloseTunnel forgets a session: its tunnels end (tunnel/1 ones with tunnel_close "session
// stopped"), the StreamSpace-mode one is not reopened, and tunnel_open for it is refused.
// Call it when the session stops.
func (a *Agent) CloseTunnel(sessionID string) {
	a.tunMu.Lock()
	delete(a.tunSessions, sessionID)
	c := a.tunConn
	a.tunMu.Unlock()
	if c != nil {
		c.closeSession(sessionID)
	}
}

func (a *Agent) remembered(session string) bool {
	a.tunMu.Lock()
	defer a.tunMu.Unlock()
	_, ok := a.tunSessions[session]
	return ok
}

// tunnelsUp attaches a new connection: with StreamSpace's messages, every remembered
// session's tunnel opens on it.
func (a *Agent) tunnelsUp(c *conn) {
	a.tunMu.Lock()
	a.tunConn = c
	sessions := make([]string, 0, len(a.tunSessions))
	for s := range a.tunSessions {
		sessions = append(sessions, s)
	}
	a.tunMu.Unlock()
	if !c.ext {
		for _, s := range sessions {
			c.openSession(s)
		}
	}
}

// tunnelsDown detaches a connection that ended and ends its tunnels.
func (a *Agent) tunnelsDown(c *conn) {
	a.tunMu.Lock()
	if a.tunConn == c {
		a.tunConn = nil
	}
	a.tunMu.Unlock()
	c.endTunnels()
}

// truncateText cuts s to at most n bytes.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
