package server

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// The viewer's identity, as the viewer's replica verified it from the token, in the request
// that opens a relayed tunnel. Each value is percent-encoded (url.QueryEscape): ids are UTF-8
// text that header values cannot carry as is.
const (
	headerPeerOrg   = "X-Peer-Org"
	headerPeerUser  = "X-Peer-User"
	headerPeerRoles = "X-Peer-Roles"
)

// peerVNCPath is the route of a relayed viewer on the replica holding the session's agent.
const peerVNCPath = "/peer/v1/vnc/"

// peerHandler serves the streams other replicas open over the peer link, and only those: its
// routes are never on the public listener.
func (s *Server) peerHandler() http.Handler {
	mux := http.NewServeMux()
	route := peerVNCPath + "{sessionId}"
	mux.Handle("GET "+route, s.instrument(route, s.handlePeerVNC))
	mux.Handle("/", s.instrument("/peer/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "not_found", "no such peer endpoint")
	}))
	return s.recoverPanics(mux)
}

// setPeerIdentity writes id into the headers of a relayed viewer's request.
func setPeerIdentity(h http.Header, id auth.Identity) {
	h.Set(headerPeerOrg, url.QueryEscape(id.OrgID))
	h.Set(headerPeerUser, url.QueryEscape(id.UserID))
	h.Set(headerPeerRoles, url.QueryEscape(string(id.Role)))
}

// peerIdentity reads the identity a relaying replica forwards, checked as a token's claims
// are: an organization and a user that are ids, and one known role.
func peerIdentity(h http.Header) (auth.Identity, error) {
	field := func(name string) (string, error) {
		vs := h.Values(name)
		if len(vs) != 1 || len(vs[0]) > 3*models.MaxIDLen {
			return "", errors.New(name + " must be given once")
		}
		v, err := url.QueryUnescape(vs[0])
		if err != nil || !models.ValidID(v) || strings.TrimSpace(v) == "" {
			return "", errors.New(name + " is not an id")
		}
		return v, nil
	}
	org, err := field(headerPeerOrg)
	if err != nil {
		return auth.Identity{}, err
	}
	user, err := field(headerPeerUser)
	if err != nil {
		return auth.Identity{}, err
	}
	role, err := field(headerPeerRoles)
	if err != nil {
		return auth.Identity{}, err
	}
	if !auth.Role(role).Valid() {
		return auth.Identity{}, errors.New(headerPeerRoles + " is not a role")
	}
	return auth.Identity{OrgID: org, UserID: user, Role: auth.Role(role)}, nil
}

// handlePeerVNC serves GET /peer/v1/vnc/{sessionId} for another replica relaying a viewer
// whose session's agent is held here (PROTOCOL.md 6.1). The viewer's replica checked the
// token, Origin and limits and tracks presence; this replica authorizes the session again for
// the identity forwarded, then checks and opens the tunnel exactly as for a browser. Every
// refusal is the public endpoint's answer, which the viewer's replica passes on.
func (s *Server) handlePeerVNC(w http.ResponseWriter, r *http.Request) {
	id, err := peerIdentity(r.Header)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "invalid_peer_identity", err.Error())
		return
	}
	grant, ok := s.authorizeViewer(w, r, auth.Scope{Identity: id})
	if !ok {
		return
	}
	sess := grant.Session
	if !s.sessionViewable(w, r, sess) {
		return
	}
	tunnel, err := s.agents.OpenTunnel(r.Context(), websocket.TunnelRequest{Session: sess, UserID: id.UserID, ViewOnly: grant.ViewOnly})
	if err != nil {
		if errors.Is(err, websocket.ErrAgentOffline) {
			// Not agent_elsewhere: the viewer's replica looks the agent up again.
			s.fail(w, r, http.StatusServiceUnavailable, "agent_offline", "the session's agent is not connected to this replica")
			return
		}
		s.refuseTunnel(w, r, sess, err)
		return
	}
	conn, ok := s.upgradeWith(s.peerUpgrader, w, r)
	if !ok {
		tunnel.Close()
		return
	}
	s.viewers.Add(1)
	defer s.viewers.Done()
	// Not the request's context, which the link's end cancels: a link that dies is the stream's
	// failure, seen as such by the viewer's replica (1011 agent unreachable), not a shutdown.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	stopOnShutdown := context.AfterFunc(s.viewerLife, cancel) // Serve then closes with 1001
	defer stopOnShutdown()
	from, _ := peerReplica(r.Context())
	err = tunnel.Serve(ctx, conn)
	s.log.Debug("relayed viewer closed", "peer", from, "org_id", id.OrgID, "user_id", id.UserID,
		"session_id", sess.ID, "view_only", grant.ViewOnly, "err", err)
}

// newPeerUpgrader upgrades relayed viewers: the other end is a replica, whose frames carry up
// to a whole tunnel chunk, so the write buffer takes one (pooled); no Origin is involved.
func newPeerUpgrader() *gorilla.Upgrader {
	u := websocket.NewUpgrader(nil)
	u.ReadBufferSize = peerReadBuffer
	u.WriteBufferSize = peerWriteBuffer
	return u
}

// Buffers of the sockets between replicas: a frame of a whole tunnel chunk is written with one
// write (the write buffers are pooled, so an idle tunnel holds none); reads of large frames go
// past the read buffer straight into the copy.
const (
	peerReadBuffer  = 16 << 10
	peerWriteBuffer = models.MaxTunnelChunk + 64
)
