package websocket_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// TestEmbeddingAPIServer plays an existing API server, StreamSpace's in shape, that embeds the
// package with nothing but its exported API (docs/EMBEDDING.md): the server's own database
// with its own agents, agent_commands, sessions, connections and organizations tables, its
// own command model, session source, authentication and router. A real agent and real
// browsers connect; in the end none of the server's tables was touched, and every table this
// project made carries its prefix.
func TestEmbeddingAPIServer(t *testing.T) {
	for _, dialect := range []db.Dialect{db.SQLite, db.Postgres} {
		t.Run(dialect.String(), func(t *testing.T) {
			testEmbedding(t, dialect)
		})
	}
}

func testEmbedding(t *testing.T, dialect db.Dialect) {
	e := openEmbedderDB(t, dialect)
	createEmbedderSchema(t, e)
	seedEmbedderRows(t, e, time.Now())
	before := snapshotEmbedder(t, e)

	s := startEmbedder(t, e)

	t.Run("offline agent: the embedder's pending command waits in the hub's queue", func(t *testing.T) {
		pending := e.pendingCommands(t)
		if len(pending) != 1 || pending[0].ID != embedPendingID {
			t.Fatalf("embedder's pending commands = %+v, want its one row", pending)
		}
		err := s.hub.SendCommandToAgent(embedAgentID, pending[0].toModel())
		if !errors.Is(err, websocket.ErrAgentNotConnected) {
			t.Fatalf("SendCommandToAgent to an offline agent = %v, want it stored and ErrAgentNotConnected", err)
		}
	})

	t.Run("agent authentication against the embedder's agents table", func(t *testing.T) {
		if _, code := dialEmbedAgent(t, s, embedAgentID, strings.Repeat("f", 64)); code != http.StatusUnauthorized {
			t.Errorf("wrong key: HTTP %d, want 401", code)
		}
		if _, code := dialEmbedAgent(t, s, "unknown-agent", embedAgentKey); code != http.StatusUnauthorized {
			t.Errorf("unknown agent: HTTP %d, want 401", code)
		}
		if s.hub.IsAgentConnected(embedAgentID) {
			t.Errorf("a refused agent is connected")
		}
	})

	agent, code := dialEmbedAgent(t, s, embedAgentID, embedAgentKey)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("agent connect: HTTP %d, want 101", code)
	}
	sendAgentFrame(t, agent, "heartbeat", map[string]any{"status": "online", "activeSessions": 1})
	testkit.Eventually(t, embedReadWait, "the agent is connected", func() bool {
		return s.hub.IsAgentConnected(embedAgentID)
	})
	if got := s.hub.GetConnectedAgents(); !slices.Equal(got, []string{embedAgentID}) {
		t.Errorf("GetConnectedAgents = %v, want [%s]", got, embedAgentID)
	}

	t.Run("commands from the embedder's model: delivered, acknowledged, completed, read back", func(t *testing.T) {
		// The command handed over while the agent was offline comes first.
		handed := nextCommand(t, agent, "cmd-legacy-2")
		if handed["action"] != "hibernate_session" {
			t.Errorf("handed-over command = %v, want hibernate_session", handed)
		}
		sendAgentFrame(t, agent, "ack", map[string]any{"commandId": "cmd-legacy-2"})
		sendAgentFrame(t, agent, "complete", map[string]any{"commandId": "cmd-legacy-2"})

		sessionID := embedAliceSess
		stop := embedderCommand{
			ID: uuid.NewString(), CommandID: "cmd-" + uuid.NewString(), AgentID: embedAgentID,
			SessionID: &sessionID, Action: "stop_session",
			Payload: &commandPayload{"sessionId": embedAliceSess, "deletePVC": false},
			Status:  models.CommandStatusPending, CreatedAt: time.Now(),
		}
		wake := embedderCommand{
			ID: uuid.NewString(), CommandID: "cmd-" + uuid.NewString(), AgentID: embedAgentID,
			SessionID: &sessionID, Action: "wake_session",
			Payload: &commandPayload{"sessionId": embedAliceSess},
			Status:  models.CommandStatusPending, CreatedAt: time.Now(),
		}
		for _, c := range []embedderCommand{stop, wake} {
			if err := s.hub.SendCommandToAgent(embedAgentID, c.toModel()); err != nil {
				t.Fatalf("SendCommandToAgent(%s): %v", c.Action, err)
			}
		}
		got := nextCommand(t, agent, stop.CommandID)
		if got["action"] != "stop_session" || got["payload"].(map[string]any)["sessionId"] != embedAliceSess {
			t.Errorf("stop command as the agent got it = %v", got)
		}
		if _, leaked := got["id"]; leaked {
			t.Errorf("the embedder's own id reached the agent: %v", got)
		}
		sendAgentFrame(t, agent, "ack", map[string]any{"commandId": stop.CommandID})
		sendAgentFrame(t, agent, "complete", map[string]any{"commandId": stop.CommandID, "result": map[string]any{"stopped": true}})
		nextCommand(t, agent, wake.CommandID)
		sendAgentFrame(t, agent, "ack", map[string]any{"commandId": wake.CommandID})
		sendAgentFrame(t, agent, "failed", map[string]any{"commandId": wake.CommandID, "error": "pod not found"})

		stored := waitCommandFinal(t, s, stop.CommandID)
		if stored.Status != models.CommandStatusCompleted || stored.ID != stop.ID ||
			stored.SessionID == nil || *stored.SessionID != embedAliceSess || stored.AcknowledgedAt == nil || stored.CompletedAt == nil {
			t.Errorf("stop command read back = %s, want completed with the embedder's id %s", stored, stop.ID)
		}
		if stored.Payload == nil || (*stored.Payload)["deletePVC"] != false {
			t.Errorf("stop command's payload read back = %v", stored.Payload)
		}
		failed := waitCommandFinal(t, s, wake.CommandID)
		if failed.Status != models.CommandStatusFailed || failed.ID != wake.ID || failed.ErrorMessage == nil ||
			*failed.ErrorMessage != "pod not found" {
			t.Errorf("wake command read back = %s, want failed with the agent's error and the embedder's id %s", failed, wake.ID)
		}
		handedBack := waitCommandFinal(t, s, "cmd-legacy-2")
		if handedBack.Status != models.CommandStatusCompleted || handedBack.ID != embedPendingID {
			t.Errorf("handed-over command read back = %s, want completed with the embedder's id %s", handedBack, embedPendingID)
		}
	})

	t.Run("browsers: lists and subscriptions from the embedder's sessions table", func(t *testing.T) {
		if _, code := dialEmbedBrowser(t, s, "", ""); code != http.StatusUnauthorized {
			t.Errorf("no token: HTTP %d, want 401", code)
		}
		if _, code := dialEmbedBrowser(t, s, "tok-alice", embedBobSess); code != http.StatusForbidden {
			t.Errorf("alice subscribing to bob's session: HTTP %d, want 403", code)
		}
		if _, code := dialEmbedBrowser(t, s, "tok-alice", embedOtherSess); code != http.StatusForbidden {
			t.Errorf("alice subscribing to another organization's session: HTTP %d, want 403", code)
		}

		alice, code := dialEmbedBrowser(t, s, "tok-alice", embedAliceSess)
		if code != http.StatusSwitchingProtocols {
			t.Fatalf("alice with session_id %s: HTTP %d, want 101", embedAliceSess, code)
		}
		nextFrame(t, alice, "connected", nil)
		list := nextFrame(t, alice, "sessions_update", nil)
		if names := sessionNames(list); !slices.Equal(names, []string{embedAliceSess}) || list["org_id"] != embedOrg {
			t.Errorf("alice's sessions_update = %v in %v, want only %s of %s", names, list["org_id"], embedAliceSess, embedOrg)
		}
		entry := sessionEntry(list, embedAliceSess)
		want := map[string]any{
			"template": "firefox", "state": "running", "user": embedAlice, "agent_id": embedAgentID,
			"namespace": "acme-sessions", "activeConnections": float64(2), "idleThreshold": float64(1800),
		}
		for k, v := range want {
			if entry[k] != v {
				t.Errorf("alice's session %s = %v, want %v (from the embedder's columns)", k, entry[k], v)
			}
		}
		if status, _ := entry["status"].(map[string]any); status["podName"] != "ss-alice-firefox-0" {
			t.Errorf("alice's session status = %v, want the embedder's pod_name", entry["status"])
		}

		operator, code := dialEmbedBrowser(t, s, "tok-operator", "")
		if code != http.StatusSwitchingProtocols {
			t.Fatalf("operator: HTTP %d, want 101", code)
		}
		names := sessionNames(nextFrame(t, operator, "sessions_update", nil))
		slices.Sort(names)
		if !slices.Equal(names, []string{embedAliceSess, embedBobSess}) {
			t.Errorf("operator's sessions_update = %v, want the organization's two sessions only", names)
		}

		// The subscription is live: an event of alice's session reaches her socket.
		if _, err := s.manager.GetNotifier().Publish(t.Context(), embedOrg, websocket.SessionEvent{
			Type: websocket.EventSessionUpdated, SessionID: embedAliceSess, UserID: embedAlice,
			Data: map[string]any{"note": "from the embedder"},
		}); err != nil {
			t.Fatal(err)
		}
		nextFrame(t, alice, string(websocket.EventSessionUpdated), func(f embedFrame) bool {
			return f["sessionId"] == embedAliceSess
		})
	})

	t.Run("Receive gets vnc_data for a session without a viewer of this package, and nothing the hub handles", func(t *testing.T) {
		conn := s.hub.GetConnection(embedAgentID)
		if conn == nil || conn.Receive == nil {
			t.Fatalf("GetConnection(%s) = %v, want the connection the handler registered, with Receive", embedAgentID, conn)
		}
		rfb := []byte("RFB 003.008\n")
		sendAgentFrame(t, agent, "vnc_data", map[string]any{
			"sessionId": embedAliceSess, "data": base64.StdEncoding.EncodeToString(rfb),
		})
		deadline := time.After(embedReadWait)
		for {
			select {
			case raw := <-conn.Receive:
				var f embedFrame
				if err := json.Unmarshal(raw, &f); err != nil {
					t.Fatalf("Receive got a frame that is not JSON: %v: %s", err, raw)
				}
				if f["type"] != "vnc_data" {
					// The hub consumed the heartbeat, acks and results before: Receive gets
					// only what the hub leaves to the embedder.
					t.Fatalf("Receive got a %v frame, which the hub handles itself: %s", f["type"], raw)
				}
				p := f.payload()
				if p["sessionId"] != embedAliceSess || p["data"] != base64.StdEncoding.EncodeToString(rfb) {
					t.Errorf("vnc_data on Receive = %v", f)
				}
				return
			case <-deadline:
				t.Fatalf("no vnc_data frame on Receive within %v", embedReadWait)
			}
		}
	})

	t.Run("a connection whose socket is a zero-value Conn is refused with an error", func(t *testing.T) {
		// The agent is known, so that the socket is the only reason left to refuse it.
		if err := s.database.EnsureAgent(t.Context(), models.Agent{ID: "zero-conn-agent", Platform: "kubernetes"}); err != nil {
			t.Fatal(err)
		}
		panicked, err := registerWithoutPanic(s.hub, &websocket.AgentConnection{
			AgentID: "zero-conn-agent", Conn: &gorilla.Conn{}, Platform: "kubernetes",
			LastPing: time.Now(), Send: make(chan []byte, 256), Receive: make(chan []byte, 256),
		})
		if panicked != nil {
			t.Fatalf("RegisterAgent with a zero-value *websocket.Conn panicked: %v", panicked)
		}
		if !errors.Is(err, websocket.ErrUnusableSocket) {
			t.Fatalf("RegisterAgent with a zero-value *websocket.Conn = %v, want ErrUnusableSocket", err)
		}
		if s.hub.IsAgentConnected("zero-conn-agent") {
			t.Errorf("the refused connection is registered")
		}
	})

	// Shutdown as the server's main does it, then the agent sees 1001.
	s.stop(t)
	_ = agent.SetReadDeadline(time.Now().Add(embedReadWait))
	for {
		if _, _, err := agent.ReadMessage(); err != nil {
			if !gorilla.IsCloseError(err, gorilla.CloseGoingAway) {
				t.Errorf("agent after shutdown: %v, want close 1001", err)
			}
			break
		}
	}
	if err := e.sql.PingContext(t.Context()); err != nil {
		t.Fatalf("the embedder's pool after Database.Close: %v, want it still open", err)
	}

	t.Run("the embedder's tables are untouched", func(t *testing.T) {
		after := snapshotEmbedder(t, e)
		for _, table := range embedderTables {
			b, a := before[table], after[table]
			if !reflect.DeepEqual(b.Columns, a.Columns) {
				t.Errorf("%s columns changed:\nbefore %q\nafter  %q", table, b.Columns, a.Columns)
			}
			if !reflect.DeepEqual(b.Indexes, a.Indexes) {
				t.Errorf("%s indexes changed:\nbefore %q\nafter  %q", table, b.Indexes, a.Indexes)
			}
			if !reflect.DeepEqual(b.Rows, a.Rows) {
				t.Errorf("%s rows changed:\nbefore %q\nafter  %q", table, b.Rows, a.Rows)
			}
		}
	})

	t.Run("this project's tables all carry the prefix", func(t *testing.T) {
		tables := e.tables(t)
		var ours []string
		for _, table := range tables {
			switch {
			case slices.Contains(embedderTables, table):
			case strings.HasPrefix(table, db.DefaultTablePrefix):
				ours = append(ours, table)
			default:
				t.Errorf("table %q is neither the embedder's nor prefixed %q", table, db.DefaultTablePrefix)
			}
		}
		for _, want := range []string{"agents", "agent_commands", "sessions", "organizations", "connections"} {
			if !slices.Contains(ours, db.DefaultTablePrefix+want) {
				t.Errorf("no %s%s among this project's tables %v", db.DefaultTablePrefix, want, ours)
			}
		}
	})
}

// waitCommandFinal polls the hub's store until the command is final, and returns it in the
// embedder's model.
func waitCommandFinal(t *testing.T, s *embedderServer, commandID string) embedderCommand {
	t.Helper()
	var (
		got     models.AgentCommand
		lastErr error
	)
	err := testkit.WaitFor(embedReadWait, func() bool {
		got, lastErr = s.database.GetCommand(t.Context(), commandID)
		return lastErr == nil && models.CommandStatusFinal(got.Status)
	})
	if err != nil {
		t.Fatalf("command %s not final: %s (last error %v)", commandID, embedderCommandFrom(got), lastErr)
	}
	return embedderCommandFrom(got)
}

// registerWithoutPanic calls RegisterAgent and reports a panic instead of crashing the test
// binary with it.
func registerWithoutPanic(hub *websocket.AgentHub, conn *websocket.AgentConnection) (panicked any, err error) {
	defer func() { panicked = recover() }()
	return nil, hub.RegisterAgent(conn)
}
