package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	gorilla "github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// relayHandshakeTimeout bounds the lookup of the replica holding a session's agent and the
// whole opening of the relayed tunnel there, before the browser is upgraded.
const relayHandshakeTimeout = 10 * time.Second

// relayCloseGrace bounds the closing handshakes at a relay's end: a socket is not reset under
// data its other end may still be sending.
const relayCloseGrace = time.Second

// reasonAgentUnreachable closes a relayed viewer whose link to the agent's replica died.
const reasonAgentUnreachable = "agent unreachable"

// peerWriteBuffers lends the write buffers of the sockets between replicas, all of one size.
var peerWriteBuffers = &sync.Pool{}

// browserFrames lends the buffer one browser frame is read into before it goes to the peer.
var browserFrames = sync.Pool{New: func() any { b := make([]byte, models.MaxTunnelChunk+1); return &b }}

// newRelayUpgrader upgrades the viewers relayed to another replica as newVNCUpgrader does, with
// a read buffer of relayReadBuffer: a browser sends small input messages, and larger frames are
// read past the buffer into the frame's own.
func newRelayUpgrader() *gorilla.Upgrader {
	u := newVNCUpgrader()
	u.ReadBufferSize = relayReadBuffer
	return u
}

// relayReadBuffer is the read buffer of a relayed viewer's socket: what every relayed tunnel
// holds, idle or not.
const relayReadBuffer = 2 << 10

// relayMetrics count the viewers relayed to the replica holding their session's agent.
type relayMetrics struct {
	open        prometheus.Gauge
	unreachable *prometheus.CounterVec
}

func newRelayMetrics(reg prometheus.Registerer) *relayMetrics {
	m := &relayMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamspace_vnc_peer_tunnels_open",
			Help: "Viewer sockets of this replica relayed to the replica holding their session's agent.",
		}),
		unreachable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_vnc_peer_unreachable_total",
			Help: "Relayed viewers refused or closed because the replica holding the agent could not be reached, by reason: lookup (no address known), dial (no link or no answer), stream (the link died while streaming).",
		}, []string{"reason"}),
	}
	for _, reason := range []string{"lookup", "dial", "stream"} {
		m.unreachable.WithLabelValues(reason)
	}
	reg.MustRegister(m.open, m.unreachable)
	return m
}

// relayViewer serves a viewer whose session's agent is held by another replica (PROTOCOL.md
// 6.1): it opens the tunnel there over the peer link, passing any refusal on as its own,
// then upgrades the browser and relays both ways. id, org and grant are the viewer's, checked
// here; the other replica authorizes again for id.
func (s *Server) relayViewer(w http.ResponseWriter, r *http.Request, id auth.Identity, org *websocket.OrgContext, grant websocket.ViewerGrant) {
	ctx, cancel := context.WithTimeout(r.Context(), relayHandshakeTimeout)
	defer cancel()
	sess := grant.Session
	var upstream *gorilla.Conn
	for attempt := 1; upstream == nil; attempt++ {
		replica, addr, ok := s.locateHolder(ctx, w, r, sess)
		if !ok {
			return
		}
		conn, refusal, err := s.dialHolder(ctx, id, sess.ID, replica, addr)
		switch {
		case err != nil:
			s.relayMetrics.unreachable.WithLabelValues("dial").Inc()
			s.log.Warn("cannot reach the replica holding an agent", "replica", replica, "addr", addr,
				"session_id", sess.ID, "agent_id", sess.AgentID, "err", err)
			s.failUnreachable(w, r)
			return
		case refusal != nil && refusal.body.Error == "agent_offline" && attempt == 1:
			continue // the agent moved meanwhile: look again, once
		case refusal != nil:
			if v := refusal.retryAfter; v != "" {
				w.Header().Set("Retry-After", v)
			}
			s.fail(w, r, refusal.status, refusal.body.Error, refusal.body.Message)
			return
		}
		upstream = conn
	}
	release, ok := s.admitBrowser(w, r, id.OrgID, id.UserID)
	if !ok {
		closeSocket(upstream, s.cfg.WriteWait, gorilla.CloseNormalClosure, "")
		return
	}
	defer release()
	browser, ok := s.upgradeWith(s.relayUpgrader, w, r)
	if !ok {
		closeSocket(upstream, s.cfg.WriteWait, gorilla.CloseNormalClosure, "")
		return
	}
	s.serveRelay(r.Context(), browser, upstream, grant, org, websocket.SessionsRequest{ClientIP: clientIP(r), UserAgent: r.UserAgent()})
}

// locateHolder finds the replica holding the session's agent and its peer address, or answers
// the refusal itself: 503 agent_offline when no replica holds it, 503 unavailable when it
// cannot be known or reached now.
func (s *Server) locateHolder(ctx context.Context, w http.ResponseWriter, r *http.Request, sess models.Session) (replica, addr string, ok bool) {
	where, err := s.agents.AgentLocations(ctx, []string{sess.AgentID})
	replica, held := where[sess.AgentID]
	switch {
	case !held && err != nil:
		s.log.Warn("locating an agent failed", "session_id", sess.ID, "agent_id", sess.AgentID, "err", err)
		s.relayMetrics.unreachable.WithLabelValues("lookup").Inc()
		s.failUnreachable(w, r)
		return "", "", false
	case !held, replica == s.cfg.Replica:
		// Here it would have been found; a socket being replaced or closed is not served.
		s.fail(w, r, http.StatusServiceUnavailable, "agent_offline", "the session's agent is not connected")
		return "", "", false
	}
	addr, ok, err = s.peers.PeerAddr(ctx, replica)
	if err != nil || !ok {
		s.log.Warn("no peer address for the replica holding an agent", "replica", replica,
			"session_id", sess.ID, "agent_id", sess.AgentID, "err", err)
		s.relayMetrics.unreachable.WithLabelValues("lookup").Inc()
		s.failUnreachable(w, r)
		return "", "", false
	}
	return replica, addr, true
}

// failUnreachable answers 503 unavailable for a replica that cannot be reached now.
func (s *Server) failUnreachable(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", "2")
	s.fail(w, r, http.StatusServiceUnavailable, "unavailable", "cannot reach the replica holding the session's agent")
}

// peerRefusal is the other replica's answer when it did not open the tunnel.
type peerRefusal struct {
	status     int
	retryAfter string
	body       errorBody
}

// dialHolder opens the viewer's tunnel on replica, at addr, over the peer link. It returns the
// socket, or the replica's refusal, or an error when it could not be asked or did not answer
// as a replica does.
func (s *Server) dialHolder(ctx context.Context, id auth.Identity, sessionID, replica, addr string) (*gorilla.Conn, *peerRefusal, error) {
	d := gorilla.Dialer{
		NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return s.mesh.Dial(ctx, replica, addr)
		},
		HandshakeTimeout: relayHandshakeTimeout,
		ReadBufferSize:   peerReadBuffer,
		WriteBufferSize:  peerWriteBuffer,
		WriteBufferPool:  peerWriteBuffers,
	}
	h := http.Header{}
	setPeerIdentity(h, id)
	conn, resp, err := d.DialContext(ctx, "ws://"+addr+peerVNCPath+url.PathEscape(sessionID), h)
	if err == nil {
		return conn, nil, nil
	}
	if resp == nil || !errors.Is(err, gorilla.ErrBadHandshake) {
		return nil, nil, err
	}
	defer resp.Body.Close()
	ref := &peerRefusal{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if json.Unmarshal(raw, &ref.body) != nil || ref.body.Error == "" || resp.StatusCode < 400 || resp.StatusCode > 599 {
		return nil, nil, errors.New("the replica answered " + resp.Status + " without an error body")
	}
	return nil, ref, nil
}

// serveRelay relays the viewer until it or the other replica's tunnel ends, the token expires
// (4003), its access is withdrawn (4004) or the server shuts down (1001), counting it as a
// connection to the session meanwhile, as serveViewer does for a tunnel held here.
func (s *Server) serveRelay(ctx context.Context, browser, upstream *gorilla.Conn, grant websocket.ViewerGrant, org *websocket.OrgContext, req websocket.SessionsRequest) {
	s.relayMetrics.open.Inc()
	defer s.relayMetrics.open.Dec()
	ctx, done := s.viewerLifetime(ctx, grant, org, req)
	defer done()
	start := time.Now()
	rl := &relay{browser: browser, upstream: upstream, end: make(chan struct{}),
		pingInterval: s.cfg.PingInterval, pongWait: s.cfg.PongWait, writeWait: s.cfg.WriteWait}
	rl.run(ctx)
	if rl.code == gorilla.CloseInternalServerErr && rl.reason == reasonAgentUnreachable {
		s.relayMetrics.unreachable.WithLabelValues("stream").Inc()
	}
	s.log.Debug("relayed viewer closed", "org_id", org.OrgID, "user_id", org.UserID, "session_id", grant.Session.ID,
		"duration", time.Since(start), "code", rl.code, "reason", rl.reason)
}

// relay copies one viewer's frames between the browser and the other replica's tunnel.
//
// Two pumps, each the only reader of one socket and the only writer of data to the other:
// up (browser to upstream) reads a browser frame (binary, at most one tunnel chunk) into a
// pooled buffer and writes it; down (upstream to browser) streams each frame through without
// holding it. Either waits while its writer's socket does not take bytes, so a browser that
// stops reading stops reading the stream, whose window then stops the other replica's tunnel:
// nothing queues here and no other stream of the link waits. run sends the pings and, at the
// end, the close frames (WriteControl is safe beside the pumps' writes).
type relay struct {
	browser, upstream                 *gorilla.Conn
	pingInterval, pongWait, writeWait time.Duration

	endOnce sync.Once
	end     chan struct{}
	// Set once before end closes: the browser's close, and which side already closed.
	code         int
	reason       string
	browserGone  bool
	upstreamGone bool
}

// finish ends the relay; only the first call counts. browserGone: the browser left (nothing
// more can be sent to it); upstreamGone: the other replica closed or cannot be reached.
func (rl *relay) finish(code int, reason string, browserGone, upstreamGone bool) {
	rl.endOnce.Do(func() {
		rl.code, rl.reason, rl.browserGone, rl.upstreamGone = code, reason, browserGone, upstreamGone
		close(rl.end)
	})
}

func (rl *relay) ended() bool {
	select {
	case <-rl.end:
		return true
	default:
		return false
	}
}

func (rl *relay) run(ctx context.Context) {
	upDone, downDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(upDone); rl.up() }()
	go func() { defer close(downDone); rl.down() }()
	ping := time.NewTicker(rl.pingInterval)
	defer ping.Stop()
wait:
	for {
		select {
		case <-ping.C:
			if err := rl.browser.WriteControl(gorilla.PingMessage, nil, time.Now().Add(rl.writeWait)); err != nil {
				rl.finish(gorilla.CloseGoingAway, "", true, false)
				break wait
			}
		case <-ctx.Done():
			var cause websocket.CloseCause
			if errors.As(context.Cause(ctx), &cause) {
				rl.finish(cause.Code, cause.Reason, false, false)
			} else {
				rl.finish(gorilla.CloseGoingAway, "server shutting down", false, false)
			}
			break wait
		case <-rl.end:
			break wait
		}
	}
	deadline := time.Now().Add(rl.writeWait)
	if !rl.browserGone {
		_ = rl.browser.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(rl.code, rl.reason), deadline)
	}
	if !rl.upstreamGone {
		_ = rl.upstream.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, ""), deadline)
	}
	// Each pump ends when its socket's close handshake completes; past the grace, closing the
	// sockets ends them.
	grace := time.NewTimer(relayCloseGrace)
	defer grace.Stop()
	for _, done := range []chan struct{}{upDone, downDone} {
		select {
		case <-done:
		case <-grace.C:
		}
	}
	_ = rl.browser.Close()
	_ = rl.upstream.Close()
	<-upDone
	<-downDone
}

// up relays the browser's frames to the other replica. After the end it reads on, dropping
// frames, until the browser answers the close.
func (rl *relay) up() {
	b := rl.browser
	_ = b.SetReadDeadline(time.Now().Add(rl.pongWait))
	b.SetPongHandler(func(string) error { return b.SetReadDeadline(time.Now().Add(rl.pongWait)) })
	for {
		mt, rd, err := b.NextReader()
		if err != nil {
			rl.finish(gorilla.CloseNormalClosure, "", true, false)
			return
		}
		if rl.ended() {
			continue
		}
		if mt != gorilla.BinaryMessage {
			rl.finish(gorilla.CloseUnsupportedData, "binary frames only", false, false)
			continue
		}
		_ = b.SetReadDeadline(time.Now().Add(rl.pongWait))
		rl.forward(rd)
	}
}

// forward reads one browser frame and writes it to the other replica.
func (rl *relay) forward(rd io.Reader) {
	bufp := browserFrames.Get().(*[]byte)
	defer browserFrames.Put(bufp)
	buf := *bufp
	n, err := io.ReadFull(rd, buf)
	switch {
	case err == nil: // a whole buffer: one byte more than a frame may hold
		rl.finish(gorilla.CloseMessageTooBig, "message too big", false, false)
		return
	case !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF):
		return // the next NextReader reports it
	}
	_ = rl.upstream.SetWriteDeadline(time.Now().Add(rl.writeWait))
	if err := rl.upstream.WriteMessage(gorilla.BinaryMessage, buf[:n]); err != nil {
		rl.finish(gorilla.CloseInternalServerErr, reasonAgentUnreachable, false, true)
	}
}

// down relays the other replica's frames to the browser, then its close: the code and reason
// it sends, or 1011 agent unreachable when the stream fails without one.
func (rl *relay) down() {
	u, b := rl.upstream, rl.browser
	_ = u.SetReadDeadline(time.Now().Add(rl.pongWait))
	u.SetPingHandler(func(data string) error {
		_ = u.SetReadDeadline(time.Now().Add(rl.pongWait))
		err := u.WriteControl(gorilla.PongMessage, []byte(data), time.Now().Add(rl.writeWait))
		if errors.Is(err, gorilla.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		mt, rd, err := u.NextReader()
		if err != nil {
			var ce *gorilla.CloseError
			if errors.As(err, &ce) && sendableClose(ce.Code) {
				rl.finish(ce.Code, ce.Text, false, true)
			} else {
				rl.finish(gorilla.CloseInternalServerErr, reasonAgentUnreachable, false, true)
			}
			return
		}
		_ = u.SetReadDeadline(time.Now().Add(rl.pongWait))
		if rl.ended() {
			continue
		}
		_ = b.SetWriteDeadline(time.Now().Add(rl.writeWait))
		w, err := b.NextWriter(mt)
		if err != nil {
			rl.finish(gorilla.CloseGoingAway, "", true, false)
			continue
		}
		src := &readErr{r: rd}
		_, err = io.Copy(w, src)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil && src.err == nil {
			rl.finish(gorilla.CloseGoingAway, "", true, false)
		}
		// A read error of the stream is NextReader's to report.
	}
}

// readErr remembers the error of its reader, to tell it from the writer's in a copy.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// sendableClose reports whether a close code received may be sent on: not one of those that
// only describe a connection that ended without a close (1005, 1006, 1015).
func sendableClose(code int) bool {
	switch {
	case code == gorilla.CloseNoStatusReceived, code == gorilla.CloseAbnormalClosure, code == gorilla.CloseTLSHandshake:
		return false
	case code >= 1000 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}
