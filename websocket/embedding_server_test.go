package websocket_test

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// embedderIdentity is who a browser token of the embedder names: what its own auth middleware
// verified (StreamSpace: the JWT's claims).
type embedderIdentity struct{ org, user, role string }

// embedderServer plays an API server that embeds the package: its own pool, tables, session
// source, authentication and router, and this project's Manager and AgentHub built with the
// exported API only.
type embedderServer struct {
	e        *embedderDB
	database *db.Database
	sessions *embedderSessions
	manager  *websocket.Manager
	hub      *websocket.AgentHub
	// tokens are the embedder's browser credentials.
	tokens map[string]embedderIdentity

	browserUpgrader *gorilla.Upgrader
	agentUpgrader   *gorilla.Upgrader
	http            *httptest.Server
	wsURL           string
	hubDone         chan struct{}
	stopOnce        sync.Once
}

// startEmbedder wires the package into the server the way its main would: db.OpenDB over the
// server's pool, a Manager over the server's own session source, an AgentHub over this
// project's agent tables, and the routes.
// agentStore, when given, builds the hub's store from this project's Database and the
// embedder's session source; by default the hub uses the Database as it is.
func startEmbedder(t *testing.T, e *embedderDB, agentStore ...func(*db.Database, *embedderSessions) websocket.AgentStore) *embedderServer {
	t.Helper()
	logs := &testkit.LockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("embedder logs:\n%s", logs.String())
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	database, err := db.OpenDB(ctx, e.sql, e.dialect)
	if err != nil {
		t.Fatalf("db.OpenDB over the embedder's pool: %v", err)
	}
	s := &embedderServer{
		e:        e,
		database: database,
		sessions: &embedderSessions{e: e},
		tokens: map[string]embedderIdentity{
			"tok-alice":    {org: embedOrg, user: embedAlice, role: "user"},
			"tok-operator": {org: embedOrg, user: "olga", role: "operator"},
		},
		browserUpgrader: websocket.NewUpgrader(nil),
		hubDone:         make(chan struct{}),
	}
	s.manager = websocket.NewManagerWithSources(s.sessions, nil, websocket.Config{
		Replica: "api-0", Logger: logger,
	})
	var hubStore websocket.AgentStore = database
	for _, build := range agentStore {
		hubStore = build(database, s.sessions)
	}
	s.hub = websocket.NewAgentHubWithStore(hubStore, websocket.AgentHubConfig{
		Replica: "api-0", Events: s.manager.GetNotifier(), Logger: logger,
	})
	// Agents send far more than browsers: a larger read buffer than the browsers' upgrader.
	agentUpgrader := *websocket.NewUpgrader(nil)
	agentUpgrader.ReadBufferSize = 32 << 10
	s.agentUpgrader = &agentUpgrader

	s.manager.Start()
	go func() {
		defer close(s.hubDone)
		s.hub.Run()
	}()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/agents/connect", s.handleAgentConnect)
	mux.HandleFunc("GET /api/v1/ws/sessions", s.handleSessionsSocket)
	s.http = httptest.NewServer(mux)
	s.wsURL = "ws" + strings.TrimPrefix(s.http.URL, "http")
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop is the server's shutdown: browsers and agents are closed with 1001, the hub's periodic
// work ends, this project's Database is closed (the pool stays the server's), then the HTTP
// server. Safe to call twice.
func (s *embedderServer) stop(t *testing.T) {
	t.Helper()
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.manager.Shutdown(ctx); err != nil {
			t.Errorf("manager shutdown: %v", err)
		}
		if err := s.hub.Shutdown(ctx); err != nil {
			t.Errorf("agent hub shutdown: %v", err)
		}
		select {
		case <-s.hubDone:
		case <-ctx.Done():
			t.Errorf("AgentHub.Run did not return after Shutdown")
		}
		if err := s.database.Close(); err != nil {
			t.Errorf("database close: %v", err)
		}
		s.http.Close()
	})
}

// handleAgentConnect is the embedder's agent endpoint, StreamSpace's shape: the agent is
// authenticated against the server's own agents table (its key against the stored hash),
// recorded in this project's agents table with EnsureAgent, upgraded, and handed to the hub
// as StreamSpace's handler builds the connection, with Send and Receive. The hub then reads
// and writes the socket; the handler returns.
func (s *embedderServer) handleAgentConnect(w http.ResponseWriter, r *http.Request) {
	agentID := r.URL.Query().Get("agent_id")
	if agentID == "" || !models.ValidID(agentID) {
		http.Error(w, "agent_id query parameter required", http.StatusBadRequest)
		return
	}
	var platform, region, orgID, keyHash string
	err := s.e.sql.QueryRowContext(r.Context(), s.e.rebind(
		`SELECT platform, COALESCE(region, ''), COALESCE(org_id, ''), COALESCE(api_key_hash, '')
		 FROM agents WHERE agent_id = ? AND approval_status = 'approved'`), agentID).
		Scan(&platform, &region, &orgID, &keyHash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// One answer for an unknown agent and a wrong key.
		http.Error(w, "invalid agent credentials", http.StatusUnauthorized)
		return
	case err != nil:
		http.Error(w, "database error", http.StatusInternalServerError)
		return
	}
	key := r.Header.Get("X-Agent-API-Key")
	if key == "" || subtle.ConstantTimeCompare([]byte(keyHash), []byte(embedderKeyHash(key))) != 1 {
		http.Error(w, "invalid agent credentials", http.StatusUnauthorized)
		return
	}
	if err := s.database.EnsureAgent(r.Context(), models.Agent{
		ID: agentID, OrgID: orgID, Platform: platform, Region: region,
	}); err != nil {
		http.Error(w, "cannot record the agent", http.StatusInternalServerError)
		return
	}
	conn, err := s.agentUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	agentConn := &websocket.AgentConnection{
		AgentID:  agentID,
		Conn:     conn,
		Platform: platform,
		LastPing: time.Now(),
		Send:     make(chan []byte, 256),
		Receive:  make(chan []byte, 256),
	}
	if err := s.hub.RegisterAgent(agentConn); err != nil {
		_ = conn.Close()
	}
}

// handleSessionsSocket is the embedder's browser endpoint: its own token check builds the
// OrgContext, a session_id is authorized before the upgrade (refused over HTTP), and the
// Manager serves the socket from the embedder's sessions table.
func (s *embedderServer) handleSessionsSocket(w http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	id, ok := s.tokens[token]
	if !ok {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	org := &websocket.OrgContext{OrgID: id.org, UserID: id.user, Role: id.role}
	sessionID := r.URL.Query().Get("session_id")
	if sessionID != "" {
		err := s.manager.AuthorizeSession(r.Context(), org, sessionID)
		switch {
		case errors.Is(err, websocket.ErrSessionNotVisible):
			http.Error(w, "session not found in your organization, or not yours", http.StatusForbidden)
			return
		case err != nil:
			http.Error(w, "cannot check the session now", http.StatusServiceUnavailable)
			return
		}
	}
	conn, err := s.browserUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	_ = s.manager.ServeSessions(r.Context(), conn, org, websocket.SessionsRequest{
		SessionID: sessionID, ClientIP: r.RemoteAddr, UserAgent: r.UserAgent(),
	})
}
