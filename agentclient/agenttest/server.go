// Package agenttest runs a fake StreamSpace control plane for tests of agents, much as
// net/http/httptest runs a fake HTTP server: just enough of PROTOCOL.md section 3 to register,
// connect, send frames to the agent and record the frames it sends.
//
//	cp := agenttest.NewServer("bootstrap-key")
//	defer cp.Close()
//	// run the agent against cp.URL, then:
//	conn, err := cp.NextConn(ctx)
//	err = conn.SendCommand("c1", "start_session", map[string]any{"sessionId": "s1"}, 1)
//	ack, err := conn.Next(ctx, models.MessageTypeAck)
package agenttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// Registration is one call of POST /api/v1/agents/register as the Server received it.
type Registration struct {
	Key  string // X-Agent-API-Key
	Body models.AgentRegistration
}

// Server is a fake control plane listening on a local port.
//
// Concurrency contract: all methods are safe for concurrent use. The Server owns one
// goroutine per agent connection (its reader, run by the HTTP handler); Close closes every
// connection and returns once those goroutines and the HTTP server have stopped.
//
// Register answers the codes queued by QueueRegisterAnswers, then 200 when the key is known
// and 401 when not; a 201 answer issues a key (IssueKey's, else a random one) that the Server
// accepts from then on. Connect answers the codes queued by QueueConnectAnswers, then 400
// without agent_id, 401 for an unknown key, else upgrades; a newer connection of an agent
// closes its previous one with 4000.
type Server struct {
	// URL is the base URL, http://127.0.0.1:port; agents accept it as their ServerURL.
	URL string

	srv *httptest.Server
	up  websocket.Upgrader

	mu            sync.Mutex
	keys          map[string]bool
	issueKey      string
	registerCodes []int
	connectCodes  []int
	registrations []Registration
	conns         []*Conn
	next          int           // NextConn's cursor into conns
	changed       chan struct{} // closed and replaced when a connection arrives
	live          map[string]*Conn
	closed        bool
	ignorePings   bool
	tunnels       bool // answer X-Agent-Features: tunnel/1 when offered
	pace          <-chan struct{}
	replacing     sync.WaitGroup // goroutines closing replaced connections
}

// NewServer starts a Server that accepts the given API keys.
func NewServer(keys ...string) *Server {
	s := &Server{
		keys:    make(map[string]bool),
		changed: make(chan struct{}),
		live:    make(map[string]*Conn),
	}
	for _, k := range keys {
		s.keys[k] = true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/agents/register", s.register)
	mux.HandleFunc("GET /api/v1/agents/connect", s.connect)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	return s
}

// Close closes every connection without a close frame and stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := append([]*Conn(nil), s.conns...)
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Kill()
	}
	s.replacing.Wait()
	s.srv.Close()
}

// AllowKey makes key valid for registering and connecting.
func (s *Server) AllowKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[key] = true
}

// RevokeKey makes key invalid.
func (s *Server) RevokeKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, key)
}

// IssueKey sets the key the next 201 answers issue.
func (s *Server) IssueKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issueKey = key
}

// IgnorePings makes connections accepted from now on leave the agent's WebSocket pings
// unanswered (no pong), as a control plane behind a broken proxy might.
func (s *Server) IgnorePings(ignore bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ignorePings = ignore
}

// UseTunnels makes connections accepted from now on take up the tunnel extension (PROTOCOL.md
// 6.3) when the agent offers it: the 101 answer carries X-Agent-Features: tunnel/1. Without
// it the Server answers as StreamSpace's control plane does, and an SDK agent speaks
// StreamSpace's vnc_* messages.
func (s *Server) UseTunnels(use bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tunnels = use
}

// PaceReads makes connections accepted from now on read the agent's frames slowly: one frame
// per token received from tokens, so TCP pushes back on the agent as a slow control plane
// would. Nil reads freely.
func (s *Server) PaceReads(tokens <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pace = tokens
}

// QueueRegisterAnswers queues status codes for the next registrations: 200, 201, 202, 401,
// 403, or any other code (answered as an error).
func (s *Server) QueueRegisterAnswers(codes ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.registerCodes = append(s.registerCodes, codes...)
}

// QueueConnectAnswers queues refusals (status codes) for the next connect attempts.
func (s *Server) QueueConnectAnswers(codes ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connectCodes = append(s.connectCodes, codes...)
}

// Registrations returns the registrations received so far.
func (s *Server) Registrations() []Registration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Registration(nil), s.registrations...)
}

// ConnCount returns how many connections were accepted so far.
func (s *Server) ConnCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Malformed returns how many frames, over all connections, were not one JSON object with a
// type.
func (s *Server) Malformed() int {
	s.mu.Lock()
	conns := append([]*Conn(nil), s.conns...)
	s.mu.Unlock()
	n := 0
	for _, c := range conns {
		n += c.Malformed()
	}
	return n
}

// NextConn returns the next accepted connection not returned yet, waiting for it until ctx
// ends.
func (s *Server) NextConn(ctx context.Context) (*Conn, error) {
	for {
		s.mu.Lock()
		if s.next < len(s.conns) {
			c := s.conns[s.next]
			s.next++
			s.mu.Unlock()
			return c, nil
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var body models.AgentRegistration
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.AgentID == "" {
		writeError(w, http.StatusBadRequest, "invalid_body", "agentId is required")
		return
	}
	key := r.Header.Get("X-Agent-API-Key")
	s.mu.Lock()
	s.registrations = append(s.registrations, Registration{Key: key, Body: body})
	code := http.StatusOK
	if !s.keys[key] {
		code = http.StatusUnauthorized
	}
	if len(s.registerCodes) > 0 {
		code = s.registerCodes[0]
		s.registerCodes = s.registerCodes[1:]
	}
	issued := ""
	if code == http.StatusCreated {
		issued = s.issueKey
		if issued == "" {
			issued = randomKey()
		}
		s.keys[issued] = true
	}
	s.mu.Unlock()

	approval := models.ApprovalApproved
	switch code {
	case http.StatusOK, http.StatusCreated:
	case http.StatusAccepted:
		approval = models.ApprovalPending
	case http.StatusUnauthorized:
		writeError(w, code, "invalid_api_key", "API key refused")
		return
	case http.StatusForbidden:
		writeError(w, code, "agent_rejected", "agent rejected")
		return
	default:
		writeError(w, code, "error", http.StatusText(code))
		return
	}
	now := time.Now().UTC().Format(time.RFC3339)
	agent := map[string]any{
		"id": body.AgentID, "agentId": body.AgentID, "platform": body.Platform, "region": body.Region,
		"status": models.AgentStatusOffline, "approvalStatus": approval, "createdAt": now, "updatedAt": now,
	}
	reply := map[string]any{
		"agent": agent, "approvalStatus": approval,
		"id": body.AgentID, "agentId": body.AgentID, "platform": body.Platform, "region": body.Region,
		"status": models.AgentStatusOffline, "createdAt": now, "updatedAt": now,
	}
	if issued != "" {
		reply["apiKey"] = issued
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(reply)
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("agent_id")
	key := r.Header.Get("X-Agent-API-Key")
	if key == "" {
		key = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	s.mu.Lock()
	code := 0
	if len(s.connectCodes) > 0 {
		code = s.connectCodes[0]
		s.connectCodes = s.connectCodes[1:]
	}
	known := s.keys[key]
	closed, ignorePings, tunnels, pace := s.closed, s.ignorePings, s.tunnels, s.pace
	s.mu.Unlock()
	switch {
	case closed:
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "server closed")
		return
	case code != 0:
		writeError(w, code, "refused", "refused by the test")
		return
	case id == "":
		writeError(w, http.StatusBadRequest, "missing_agent_id", "agent_id is required")
		return
	case !known:
		writeError(w, http.StatusUnauthorized, "invalid_api_key", "API key refused")
		return
	}
	features := r.Header.Get(models.AgentFeaturesHeader)
	var answer http.Header
	useTunnels := tunnels && offers(features, models.AgentFeatureTunnel)
	if useTunnels {
		answer = http.Header{models.AgentFeaturesHeader: {models.AgentFeatureTunnel}}
	}
	ws, err := s.up.Upgrade(w, r, answer)
	if err != nil {
		return
	}
	if ignorePings {
		ws.SetPingHandler(func(string) error { return nil })
	}
	c := newConn(id, key, ws)
	c.Features, c.Tunnels, c.pace = features, useTunnels, pace
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ws.Close()
		return
	}
	old := s.live[id]
	s.live[id] = c
	s.conns = append(s.conns, c)
	close(s.changed)
	s.changed = make(chan struct{})
	if old != nil {
		// Under mu, before Close can see closed and wait: the Add happens before the Wait.
		s.replacing.Go(func() { _ = old.Close(4000, "replaced by a newer connection") })
	}
	s.mu.Unlock()
	c.readLoop()
	s.mu.Lock()
	if s.live[id] == c {
		delete(s.live, id)
	}
	s.mu.Unlock()
}

// offers reports whether a comma-separated feature list holds feature.
func offers(list, feature string) bool {
	for f := range strings.SplitSeq(list, ",") {
		if strings.EqualFold(strings.TrimSpace(f), feature) {
			return true
		}
	}
	return false
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": errCode, "message": msg})
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ErrClosed is returned by Conn.Next when the connection ended without the frame waited for.
var ErrClosed = errors.New("agenttest: connection closed")
