package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// vncSubprotocols: noVNC offers "binary" as it does to websockify; a browser offering none is
// served the same way (PROTOCOL.md 6.1).
var vncSubprotocols = []string{"binary"}

// newVNCUpgrader upgrades viewer sockets. The read buffer is the HTTP server's own 4 KiB one,
// kept: a viewer sends small input, and a large frame is read past the buffer anyway. Writes
// take a pooled buffer for the frame header and the first bytes and hand the rest of a chunk
// to the same writev, so a larger one would only copy more. An idle viewer then holds no
// buffer of its own.
func newVNCUpgrader() *gorilla.Upgrader {
	u := websocket.NewUpgrader(nil)
	u.ReadBufferSize = 0
	u.Subprotocols = vncSubprotocols
	return u
}

// handleVNCSocket serves GET /api/v1/vnc/{sessionId}: a browser's RFB stream to a session's
// desktop, through the session's agent. Every refusal is an HTTP answer before the upgrade, in
// the order of PROTOCOL.md 6.1.
func (s *Server) handleVNCSocket(w http.ResponseWriter, r *http.Request) {
	if !s.allowUpgrade(w, r) {
		return
	}
	scope, ok := s.authorize(w, r, browserSocket)
	if !ok {
		return
	}
	id := scope.Identity
	org := orgContext(id)
	grant, ok := s.authorizeViewer(w, r, scope)
	if !ok {
		return
	}
	sess := grant.Session
	if !s.sessionViewable(w, r, sess) {
		return
	}
	tunnel, err := s.agents.OpenTunnel(r.Context(), websocket.TunnelRequest{Session: sess, UserID: id.UserID, ViewOnly: grant.ViewOnly})
	if errors.Is(err, websocket.ErrAgentOffline) && s.mesh != nil {
		s.relayViewer(w, r, id, org, grant) // the agent may be held by another replica
		return
	}
	if err != nil {
		s.refuseTunnel(w, r, sess, err)
		return
	}
	release, ok := s.admitBrowser(w, r, id.OrgID, id.UserID)
	if !ok {
		tunnel.Close()
		return
	}
	conn, ok := s.upgradeWith(s.vncUpgrader, w, r)
	if !ok {
		tunnel.Close()
		release()
		return
	}
	defer release()
	s.serveViewer(r.Context(), conn, tunnel, grant, org, websocket.SessionsRequest{ClientIP: clientIP(r), UserAgent: r.UserAgent()})
}

// sessionViewable answers the refusal of a session whose desktop cannot be viewed now: not
// running (409), or placed on no agent (503).
func (s *Server) sessionViewable(w http.ResponseWriter, r *http.Request, sess models.Session) bool {
	if sess.State != models.SessionStateRunning {
		s.fail(w, r, http.StatusConflict, "session_not_running", "the session is "+string(sess.State)+", not running")
		return false
	}
	if sess.AgentID == "" {
		s.fail(w, r, http.StatusServiceUnavailable, "agent_offline", "the session has no agent")
		return false
	}
	return true
}

// refuseTunnel answers the AgentHub's refusal of a tunnel.
func (s *Server) refuseTunnel(w http.ResponseWriter, r *http.Request, sess models.Session, err error) {
	var limit *websocket.TunnelLimitError
	switch {
	case errors.Is(err, websocket.ErrAgentOffline):
		// Without a peer link (a replica without Redis) a viewer must go to the agent's replica.
		if s.agents.IsAgentConnected(sess.AgentID) {
			s.fail(w, r, http.StatusServiceUnavailable, "agent_elsewhere", "the session's agent is connected to another replica; connect to that one")
			return
		}
		s.fail(w, r, http.StatusServiceUnavailable, "agent_offline", "the session's agent is not connected")
	case errors.Is(err, websocket.ErrTunnelNotReady):
		w.Header().Set("Retry-After", "2")
		s.fail(w, r, http.StatusServiceUnavailable, "tunnel_not_ready", "the session's agent has not opened its VNC tunnel yet; retry")
	case errors.Is(err, websocket.ErrViewerBusy):
		s.fail(w, r, http.StatusConflict, "viewer_busy", "another viewer is watching this session; its agent serves one at a time")
	case errors.As(err, &limit):
		s.fail(w, r, http.StatusTooManyRequests, "too_many_tunnels", limit.Error())
	case errors.Is(err, websocket.ErrTooManyTunnels):
		s.fail(w, r, http.StatusTooManyRequests, "too_many_tunnels", "too many VNC tunnels")
	default:
		s.log.Error("open VNC tunnel", "session_id", sess.ID, "agent_id", sess.AgentID, "err", err)
		s.fail(w, r, http.StatusServiceUnavailable, "unavailable", "cannot open a tunnel now")
	}
}

// serveViewer relays the viewer until it or the tunnel ends, the token expires (4003), its
// access is withdrawn (4004) or the server shuts down (1001), counting it as a connection to
// the session meanwhile.
func (s *Server) serveViewer(ctx context.Context, conn *gorilla.Conn, tunnel *websocket.Tunnel, grant websocket.ViewerGrant, org *websocket.OrgContext, req websocket.SessionsRequest) {
	ctx, done := s.viewerLifetime(ctx, grant, org, req)
	defer done()
	start := time.Now()
	err := tunnel.Serve(ctx, conn)
	s.log.Debug("viewer closed", "org_id", org.OrgID, "user_id", org.UserID, "session_id", grant.Session.ID,
		"view_only", grant.ViewOnly, "duration", time.Since(start), "err", err)
}

// viewerLifetime is the life of a browser's viewer socket on this replica, whether its tunnel
// is held here or relayed: the returned context ends at shutdown (then 1001), when the token
// expires (its cause a CloseCause for 4003) or when the viewer's access is withdrawn (4004),
// and the viewer counts as a connection to the session until done is called.
func (s *Server) viewerLifetime(ctx context.Context, grant websocket.ViewerGrant, org *websocket.OrgContext, req websocket.SessionsRequest) (_ context.Context, done func()) {
	s.viewers.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	// Shutdown ends every viewer; its server then closes it with 1001.
	stopOnShutdown := context.AfterFunc(s.viewerLife, cancel)
	cancelExp := context.CancelFunc(func() {})
	if !org.ExpiresAt.IsZero() {
		ctx, cancelExp = context.WithDeadlineCause(ctx, org.ExpiresAt,
			websocket.CloseCause{Code: websocket.CloseTokenExpired, Reason: "token expired"})
	}
	ctx, untrack := s.manager.TrackViewer(ctx, grant, org, req)
	return ctx, func() {
		untrack()
		cancelExp()
		stopOnShutdown()
		cancel()
		s.viewers.Done()
	}
}
