package websocket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// Errors of AgentHub.OpenTunnel (PROTOCOL.md 6.1). The viewer socket answers each before the
// upgrade.
var (
	// ErrAgentOffline: the session's agent holds no socket on this replica.
	ErrAgentOffline = errors.New("websocket: the session's agent is not connected to this replica")
	// ErrTunnelNotReady: an agent speaking StreamSpace's messages has announced no tunnel for
	// the session (vnc_ready), or closed the last one.
	ErrTunnelNotReady = errors.New("websocket: the agent has no VNC tunnel open for the session")
	// ErrViewerBusy: an agent speaking StreamSpace's messages has one tunnel per session, and a
	// viewer holds it.
	ErrViewerBusy = errors.New("websocket: the session's one VNC tunnel already has a viewer")
	// ErrTooManyTunnels: a tunnel limit is reached; the error is a *TunnelLimitError.
	ErrTooManyTunnels = errors.New("websocket: too many VNC tunnels")
)

// TunnelLimitError names the limit a refused tunnel met: "user" or "agent".
type TunnelLimitError struct {
	Limit string
	Max   int
}

func (e *TunnelLimitError) Error() string {
	return fmt.Sprintf("websocket: too many VNC tunnels per %s (at most %d)", e.Limit, e.Max)
}

func (e *TunnelLimitError) Unwrap() error { return ErrTooManyTunnels }

// CloseCause, as the cause of the context given to Tunnel.Serve (context.WithCancelCause),
// names the close the viewer gets instead of 1001: the endpoint uses it for 4003 token expired
// and 4004 access revoked.
type CloseCause struct {
	Code   int
	Reason string
}

func (c CloseCause) Error() string {
	return fmt.Sprintf("websocket: viewer closed with %d %s", c.Code, c.Reason)
}

// NegotiateAgentFeatures returns, of the features an agent offered in its upgrade request's
// X-Agent-Features header (comma-separated), those this server uses on the socket: the value
// to answer in the 101 response and to give ServeAgentWithFeatures.
func NegotiateAgentFeatures(header string) []string {
	for f := range strings.SplitSeq(header, ",") {
		if strings.TrimSpace(f) == models.AgentFeatureTunnel {
			return []string{models.AgentFeatureTunnel}
		}
	}
	return nil
}

// TunnelRequest asks for a tunnel from one viewer to one session's VNC server, through the
// session's agent. The caller has authorized the viewer for the session (Manager.AuthorizeViewer).
type TunnelRequest struct {
	// Session is the session as read when the viewer was authorized; its AgentID names the
	// agent to go through.
	Session models.Session
	// UserID is the viewer, counted toward the per-user limit.
	UserID string
	// ViewOnly drops the viewer's input (PROTOCOL.md 6.4).
	ViewOnly bool
	// Expires closes the viewer with 4003 token expired at that time; zero means never.
	Expires time.Time
}

// Tunnel is one viewer's reserved path to a session's VNC server. OpenTunnel makes it; Serve
// relays until either end leaves; Close gives the reservation back when Serve is never called.
//
// Concurrency: the agent connection's reader hands bytes for the viewer to the tunnel's queue
// without blocking; the viewer's writer goroutine drains it; the viewer's reader (Serve's own
// goroutine) fills the queue toward the agent and waits when it is full; the agent's writer
// takes turns among tunnels. The queues are guarded by the agent connection's tunnel lock.
type Tunnel struct {
	hub    *AgentHub
	req    TunnelRequest
	set    *agentTunnels
	proto  string
	id     uint32   // tunnel/1
	slot   *vncSlot // StreamSpace's messages
	filter *viewerFilter

	// Guarded by set.mu.
	toAgent     []byte
	scheduled   bool
	opened      bool
	sendWindow  int64 // bytes the agent still accepts (tunnel/1)
	recvWindow  int64 // bytes the agent may still send (tunnel/1)
	toViewer    [][]byte
	viewerBytes int64
	consumed    int64  // written to the browser, not yet credited
	held        []byte // a held FramebufferUpdateRequest
	heldFull    bool   // the held request is non-incremental

	openedCh chan struct{}
	room     chan struct{} // toAgent has room again
	more     chan struct{} // toViewer has bytes

	endOnce    sync.Once
	end        chan struct{}
	endCode    int
	endReason  string
	agentKnows atomic.Bool // the agent ended the tunnel or was told: no close to send
	served     atomic.Bool
	release    sync.Once
}

// OpenTunnel reserves a tunnel for req through the session's agent, checking that the agent is
// connected here and the tunnel limits. It does no network I/O with the viewer.
func (h *AgentHub) OpenTunnel(ctx context.Context, req TunnelRequest) (*Tunnel, error) {
	refuse := func(reason string, err error) (*Tunnel, error) {
		h.metrics.vnc.refused.WithLabelValues(reason).Inc()
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("websocket: open tunnel: %w", err)
	}
	var c *AgentConnection
	if req.Session.AgentID != "" {
		c = h.GetConnection(req.Session.AgentID)
	}
	if c == nil || c.tunnels == nil || c.closing() {
		return refuse("agent_offline", ErrAgentOffline)
	}
	s, cfg := c.tunnels, h.cfg.VNC
	t := &Tunnel{
		hub: h, req: req, set: s,
		openedCh: make(chan struct{}), room: make(chan struct{}, 1), more: make(chan struct{}, 1),
		end: make(chan struct{}),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var slot *vncSlot
	switch {
	case s.closed:
		return refuse("agent_offline", ErrAgentOffline)
	case !s.tunnel1:
		slot = s.bySession[req.Session.ID]
		if slot == nil {
			return refuse("tunnel_not_ready", ErrTunnelNotReady)
		}
		if slot.taken {
			return refuse("viewer_busy", ErrViewerBusy)
		}
	}
	if s.count >= cfg.MaxPerAgent {
		return refuse("too_many_tunnels", &TunnelLimitError{Limit: "agent", Max: cfg.MaxPerAgent})
	}
	if !h.vncUsers.take(req.viewerKey(), cfg.MaxPerUser) {
		return refuse("too_many_tunnels", &TunnelLimitError{Limit: "user", Max: cfg.MaxPerUser})
	}
	s.count++
	if s.tunnel1 {
		// The id comes with tunnel_open (attach), so that ids reach the agent in order.
		t.proto, t.recvWindow = protoTunnel1, cfg.Window
		t.filter = newViewerFilter(t)
		return t, nil
	}
	// The slot's viewer from now on: the bytes that came early are the viewer's first.
	t.proto, t.slot = protoStreamSpace, slot
	slot.taken, slot.viewer = true, t
	t.filter = newViewerFilter(t)
	if len(slot.early) > 0 {
		t.filter.serverBytes(slot.early)
		t.toViewer, t.viewerBytes = [][]byte{slot.early}, int64(len(slot.early))
		slot.early = nil
		t.more <- struct{}{}
	}
	return t, nil
}

// Serve relays RFB bytes between conn, the viewer's upgraded socket, and the agent until
// either ends or ctx does, then closes conn with the code of PROTOCOL.md 6.1 and releases the
// tunnel. It returns why the tunnel ended (nil for a clean end).
func (t *Tunnel) Serve(ctx context.Context, conn *websocket.Conn) error {
	if !t.served.CompareAndSwap(false, true) {
		return errors.New("websocket: tunnel served twice")
	}
	defer t.Close()
	m := t.hub.metrics.vnc
	m.open.WithLabelValues(t.proto).Inc()
	defer m.open.WithLabelValues(t.proto).Dec()
	t.attach()

	if !t.req.Expires.IsZero() {
		expiry := time.AfterFunc(time.Until(t.req.Expires), func() { t.finish(CloseTokenExpired, "token expired") })
		defer expiry.Stop()
	}
	// No goroutine waits for ctx: an idle tunnel costs two, its reader and its writer.
	stop := context.AfterFunc(ctx, func() {
		var cause CloseCause
		if errors.As(context.Cause(ctx), &cause) {
			t.finish(cause.Code, cause.Reason)
		} else {
			t.finish(websocket.CloseGoingAway, "server shutting down")
		}
	})
	defer stop()
	readDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { t.writePump(conn, readDone) })
	t.readPump(conn)
	close(readDone)
	wg.Wait()
	if t.endCode == websocket.CloseNormalClosure {
		return nil
	}
	return fmt.Errorf("websocket: vnc tunnel closed with %d %s", t.endCode, t.endReason)
}

// attach makes a tunnel/1 tunnel live toward the agent: it is opened and given OpenTimeout to
// answer. (A StreamSpace tunnel is live from OpenTunnel on.)
func (t *Tunnel) attach() {
	s, cfg := t.set, t.hub.cfg.VNC
	if t.proto == protoTunnel1 {
		// Ids are numbered and queued in one step: an agent takes a tunnel_open whose id is
		// not above every earlier one for a reused id (PROTOCOL.md 6.3), and two viewers
		// attaching at once must not swap their frames.
		s.openMu.Lock()
		s.mu.Lock()
		if s.closed { // the agent left since OpenTunnel
			shutdown := s.shutdown
			s.mu.Unlock()
			s.openMu.Unlock()
			t.agentGone()
			t.agentClosed(shutdown)
			return
		}
		t.id = s.nextID
		s.nextID++
		s.byID[t.id] = t
		s.mu.Unlock()
		s.c.push(outbound(models.MessageTypeTunnelOpen, t.hub.cfg.Clock.Now(), models.TunnelOpenMessage{
			TunnelID: t.id, SessionID: t.req.Session.ID, ViewOnly: t.req.ViewOnly, Window: cfg.Window,
		}))
		s.openMu.Unlock()
		timer := time.AfterFunc(cfg.OpenTimeout, func() {
			select {
			case <-t.openedCh:
			default:
				t.finish(websocket.CloseInternalServerErr, "agent error: no answer")
			}
		})
		go func() { // owned: ends with the tunnel
			select {
			case <-t.openedCh:
			case <-t.end:
			}
			timer.Stop()
		}()
	}
}

// Close releases a tunnel that will not be served (the upgrade failed). Safe to call after
// Serve, and more than once.
func (t *Tunnel) Close() {
	t.release.Do(func() {
		t.finish(websocket.CloseGoingAway, "tunnel released")
		s := t.set
		served := t.served.Load()
		s.mu.Lock()
		s.count--
		if t.proto == protoTunnel1 {
			if s.byID[t.id] == t {
				delete(s.byID, t.id)
			}
		} else if served {
			if s.bySession[t.slot.sessionID] == t.slot {
				delete(s.bySession, t.slot.sessionID) // once per announcement
			}
		} else {
			// Never served: the next viewer gets the slot and what came for it.
			t.slot.taken, t.slot.viewer = false, nil
			t.slot.early = bytes.Join(t.toViewer, nil)
		}
		t.toAgent, t.toViewer, t.held = nil, nil, nil
		s.mu.Unlock()
		t.hub.vncUsers.give(t.req.viewerKey())
		if !served || t.agentKnows.Load() {
			return
		}
		now := t.hub.cfg.Clock.Now()
		if t.proto == protoTunnel1 {
			s.c.push(outbound(models.MessageTypeTunnelClose, now, models.TunnelCloseMessage{TunnelID: t.id}))
		} else {
			s.c.push(outbound(models.MessageTypeVNCClose, now, models.VNCCloseMessage{SessionID: t.slot.sessionID, Reason: "client_disconnect"}))
		}
	})
}

// viewerKey names the viewer among all organizations' users: user ids are only unique within
// an organization, and one tenant's alice must not use up another's.
func (r TunnelRequest) viewerKey() string { return r.Session.OrgID + "\x00" + r.UserID }

// userTunnels counts each user's tunnels on this replica, by viewerKey.
type userTunnels struct {
	mu sync.Mutex
	n  map[string]int
}

func (u *userTunnels) take(user string, limit int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == nil {
		u.n = map[string]int{}
	}
	if u.n[user] >= limit {
		return false
	}
	u.n[user]++
	return true
}

func (u *userTunnels) give(user string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n[user] <= 1 {
		delete(u.n, user)
	} else {
		u.n[user]--
	}
}
