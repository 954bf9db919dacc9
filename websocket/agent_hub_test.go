package websocket

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestAgentOnlineOfflineAndReplacement(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{})
		h.addAgent("a1")

		first := h.connect("a1")
		row := h.agentRow("a1")
		if row.Status != models.AgentStatusOnline || row.Replica != "replica-test" || row.ConnectionID == "" {
			t.Fatalf("after connect: status %q replica %q conn %q", row.Status, row.Replica, row.ConnectionID)
		}
		if !h.hub.IsAgentConnected("a1") || !slices.Equal(h.hub.GetConnectedAgents(), []string{"a1"}) {
			t.Fatalf("connected agents = %v", h.hub.GetConnectedAgents())
		}

		second := h.connect("a1")
		if code, _ := expectClose(t, first.conn, 5*time.Second); code != CloseReplaced {
			t.Fatalf("replaced connection closed with %d, want %d", code, CloseReplaced)
		}
		// Once the old connection's cleanup has run, the new one is untouched.
		newConn := h.hub.GetConnection("a1").ConnectionID()
		testkit.Eventually(t, 5*time.Second, "the replaced connection cleaned up", func() bool {
			return counterValue(t, h.hub.metrics.connections) == 1
		})
		row = h.agentRow("a1")
		if row.Status != models.AgentStatusOnline || row.ConnectionID != newConn {
			t.Fatalf("after replacement: status %q conn %q, want online %q", row.Status, row.ConnectionID, newConn)
		}
		if h.hub.GetConnection("a1") == nil {
			t.Fatal("old connection's cleanup removed the new connection")
		}

		_ = second.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
		testkit.Eventually(t, 5*time.Second, "agent offline", func() bool {
			return h.agentRow("a1").Status == models.AgentStatusOffline && !h.hub.IsAgentConnected("a1")
		})
		if h.agentRow("a1").LastHeartbeat == nil {
			t.Error("last_heartbeat lost on disconnect")
		}
	})
}

func TestAgentCommandsWaitAndArriveInOrder(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{})
		h.addAgent("a1")
		var want []string
		for i := range 5 {
			cmd := models.AgentCommand{Action: models.ActionStopSession, Payload: map[string]any{"n": i}}
			err := h.hub.SendCommandToAgent("a1", &cmd)
			if !errors.Is(err, ErrAgentNotConnected) {
				t.Fatalf("SendCommandToAgent offline: err = %v, want ErrAgentNotConnected", err)
			}
			if cmd.CommandID == "" || h.command(cmd.CommandID).Status != models.CommandStatusPending {
				t.Fatalf("offline command not stored pending: %+v", cmd)
			}
			want = append(want, cmd.CommandID)
			h.clock.Advance(time.Millisecond) // distinct creation times
		}
		a := h.connect("a1")
		var got []string
		for range want {
			c := a.command()
			if c.Attempt != 1 || c.Action != models.ActionStopSession {
				t.Errorf("command %+v: want attempt 1, stop_session", c)
			}
			got = append(got, c.CommandID)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("delivery order %v, want creation order %v", got, want)
		}
		for _, id := range want {
			if s := h.command(id).Status; s != models.CommandStatusSent {
				t.Errorf("command %s is %s after delivery, want sent", id, s)
			}
		}
		// Connected now: a new command goes straight out, and without an error.
		cmd := models.AgentCommand{Action: "custom_action", Payload: map[string]any{"x": "y"}}
		if err := h.hub.SendCommandToAgent("a1", &cmd); err != nil {
			t.Fatalf("SendCommandToAgent online: %v", err)
		}
		if c := a.command(); c.CommandID != cmd.CommandID || c.Payload["x"] != "y" {
			t.Fatalf("got %+v, want %s", c, cmd.CommandID)
		}
	})
}

func TestAgentCommandLifecycle(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{})
		h.addAgent("a1")
		a := h.connect("a1")
		ok := h.submit("a1", models.ActionStartSession, map[string]any{"sessionId": "s1"})
		bad := h.submit("a1", models.ActionStopSession, map[string]any{"sessionId": "s2"})
		if ok.GetSessionID() != "s1" {
			t.Errorf("SessionID not taken from payload: %+v", ok)
		}
		for _, id := range []string{ok.CommandID, bad.CommandID} {
			if c := a.command(); c.CommandID != id {
				t.Fatalf("got command %s, want %s", c.CommandID, id)
			}
		}
		a.send("ack", map[string]any{"commandId": ok.CommandID})
		a.send("complete", map[string]any{"commandId": ok.CommandID, "result": map[string]any{"podName": "p1"}})
		a.send("failed", map[string]any{"commandId": bad.CommandID, "error": "no such session"})
		testkit.Eventually(t, 5*time.Second, "commands final", func() bool {
			return h.command(ok.CommandID).Status == models.CommandStatusCompleted &&
				h.command(bad.CommandID).Status == models.CommandStatusFailed
		})
		done := h.command(ok.CommandID)
		if done.Result["podName"] != "p1" || done.AcknowledgedAt == nil || done.CompletedAt == nil || done.Attempts != 1 {
			t.Errorf("completed command %+v", done)
		}
		if f := h.command(bad.CommandID); f.GetErrorMessage() != "no such session" || f.CompletedAt == nil {
			t.Errorf("failed command %+v", f)
		}

		// A replayed complete changes nothing and is answered.
		a.send("complete", map[string]any{"commandId": ok.CommandID, "result": map[string]any{"podName": "other"}})
		if e := a.errorFrame(); e.CommandID != ok.CommandID || e.Message != "command is already completed" {
			t.Errorf("replay answer %+v", e)
		}
		if h.command(ok.CommandID).Result["podName"] != "p1" {
			t.Error("replayed complete overwrote the result")
		}
		// A late ack after completion is a harmless duplicate: no answer, no change.
		a.send("ack", map[string]any{"commandId": ok.CommandID})
		a.send("pong", map[string]any{})
		a.quiet(200 * time.Millisecond)
		if s := h.command(ok.CommandID).Status; s != models.CommandStatusCompleted {
			t.Errorf("late ack moved the command back to %s", s)
		}
	})
}

func TestAgentAckTimeoutResendsThenFails(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{
			AckTimeout: 30 * time.Second, MaxAttempts: 3, CheckInterval: 10 * time.Second,
			HeartbeatTimeout: time.Hour,
		})
		h.addAgent("a1")
		a := h.connect("a1")
		cmd := h.submit("a1", models.ActionWakeSession, nil)
		for attempt := 1; attempt <= 3; attempt++ {
			c := a.command()
			if c.CommandID != cmd.CommandID || c.Attempt != attempt {
				t.Fatalf("delivery %d: got %s attempt %d", attempt, c.CommandID, c.Attempt)
			}
			if got := h.command(cmd.CommandID).Attempts; got != attempt {
				t.Fatalf("stored attempts %d, want %d", got, attempt)
			}
			h.advance(40 * time.Second)
		}
		testkit.Eventually(t, 5*time.Second, "command failed after 3 deliveries", func() bool {
			return h.command(cmd.CommandID).Status == models.CommandStatusFailed
		})
		if e := h.command(cmd.CommandID).GetErrorMessage(); e != "not acknowledged after 3 deliveries" {
			t.Errorf("error %q", e)
		}

		// An acknowledged command is never resent.
		acked := h.submit("a1", models.ActionWakeSession, nil)
		if c := a.command(); c.CommandID != acked.CommandID {
			t.Fatalf("got %s", c.CommandID)
		}
		a.send("ack", map[string]any{"commandId": acked.CommandID})
		testkit.Eventually(t, 5*time.Second, "ack stored", func() bool {
			return h.command(acked.CommandID).Status == models.CommandStatusAck
		})
		h.advance(2 * time.Minute)
		a.send("heartbeat", map[string]any{"status": "online"})
		a.quiet(200 * time.Millisecond)
	})
}

func TestAgentUnacknowledgedCommandsResentOnReconnect(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{})
		h.addAgent("a1")
		a := h.connect("a1")
		cmd := h.submit("a1", models.ActionStartSession, map[string]any{"sessionId": "s1"})
		if c := a.command(); c.Attempt != 1 {
			t.Fatalf("first delivery attempt %d", c.Attempt)
		}
		// The TCP connection dies without a close frame, before the ack.
		_ = a.conn.NetConn().Close()
		b := h.connect("a1")
		c := b.command()
		if c.CommandID != cmd.CommandID || c.Attempt != 2 {
			t.Fatalf("after reconnect got %s attempt %d, want %s attempt 2", c.CommandID, c.Attempt, cmd.CommandID)
		}
		b.send("ack", map[string]any{"commandId": c.CommandID})
		b.send("complete", map[string]any{"commandId": c.CommandID})
		testkit.Eventually(t, 5*time.Second, "completed", func() bool {
			return h.command(cmd.CommandID).Status == models.CommandStatusCompleted
		})
	})
}

func TestAgentStaleIsClosedAndOffline(t *testing.T) {
	t.Parallel()
	d := dbtest.Open(t, "sqlite")
	h := newAgentHarness(t, d, AgentHubConfig{HeartbeatTimeout: 45 * time.Second, CheckInterval: 10 * time.Second})
	h.addAgent("a1")
	h.addAgent("a2")
	a1 := h.connect("a1")
	a2 := h.connect("a2")
	h.advance(30 * time.Second)
	a2.send("heartbeat", map[string]any{"status": "online"}) // a2 stays alive
	testkit.Eventually(t, 5*time.Second, "a2's heartbeat seen", func() bool {
		return h.hub.GetConnection("a2").LastSeen().Equal(h.clock.Now())
	})
	h.advance(20 * time.Second)
	if code, reason := expectClose(t, a1.conn, 5*time.Second); code != CloseHeartbeatTimeout || reason == "" {
		t.Fatalf("stale agent closed with %d %q, want %d", code, reason, CloseHeartbeatTimeout)
	}
	testkit.Eventually(t, 5*time.Second, "a1 offline", func() bool {
		return h.agentRow("a1").Status == models.AgentStatusOffline
	})
	if !h.hub.IsAgentConnected("a2") {
		t.Fatal("an agent that beat in time was closed")
	}
}

func TestAgentHeartbeatsAreCoalesced(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{HeartbeatFlush: 5 * time.Second, HeartbeatTimeout: time.Hour})
		const agents = 20
		var conns []*testAgent
		for i := range agents {
			id := fmt.Sprintf("a%02d", i)
			h.addAgent(id)
			conns = append(conns, h.connect(id))
		}
		flushesBefore := counterValue(t, h.hub.metrics.flushes)
		h.clock.Advance(time.Second)
		beatAt := h.clock.Now()
		for i, a := range conns {
			for range 10 {
				status := "online"
				if i == 0 {
					status = "draining"
				}
				a.send("heartbeat", map[string]any{"status": status, "activeSessions": 3, "capacity": map[string]any{"maxSessions": 10}})
			}
		}
		testkit.Eventually(t, 5*time.Second, "all heartbeats received", func() bool {
			return counterValue(t, h.hub.metrics.heartbeats) >= agents*10
		})
		if got := h.agentRow("a01").LastHeartbeat; got != nil && !got.Before(beatAt) {
			t.Fatal("heartbeats reached the database before the flush")
		}
		h.clock.Advance(5 * time.Second)
		testkit.Eventually(t, 5*time.Second, "heartbeats flushed", func() bool {
			return counterValue(t, h.hub.metrics.flushes) == flushesBefore+1
		})
		for i := range agents {
			row := h.agentRow(fmt.Sprintf("a%02d", i))
			if row.LastHeartbeat == nil || !row.LastHeartbeat.Equal(beatAt.UTC().Truncate(time.Microsecond)) {
				t.Fatalf("agent %s last_heartbeat %v, want %v", row.ID, row.LastHeartbeat, beatAt)
			}
			if row.Capacity["maxSessions"] != float64(10) {
				t.Errorf("agent %s capacity %v", row.ID, row.Capacity)
			}
		}
		if s := h.agentRow("a00").Status; s != models.AgentStatusDraining {
			t.Errorf("draining agent stored as %q", s)
		}
		// 200 heartbeats, one database write.
		if got := counterValue(t, h.hub.metrics.flushes) - flushesBefore; got != 1 {
			t.Errorf("%v flushes for 200 heartbeats, want 1", got)
		}
	})
}

func TestAgentStatusReports(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{})
		h.addAgent("a1")
		h.addAgent("a2")
		ctx := t.Context()
		for _, s := range []models.Session{
			{ID: "s1", OrgID: "o1", UserID: "u1", AgentID: "a1"},
			{ID: "s2", OrgID: "o1", UserID: "u2", AgentID: "a2"},
		} {
			if err := d.CreateSession(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		a := h.connect("a1")
		// StreamSpace's status frames carry no timestamp.
		a.sendRaw(`{"type":"status","payload":{"sessionId":"s1","state":"Running","vncReady":true,"vncPort":5900,"platformMetadata":{"podName":"pod-s1","podIP":"10.0.0.1"}}}`)
		testkit.Eventually(t, 5*time.Second, "session running and its event published", func() bool {
			s, _ := d.GetSession(ctx, "s1")
			return s.State == models.SessionStateRunning && s.PodName == "pod-s1" && len(h.events.all()) > 0
		})
		evs := h.events.all()
		if len(evs) != 1 || evs[0].org != "o1" || evs[0].ev.Type != EventSessionStateChange ||
			evs[0].ev.UserID != "u1" || evs[0].ev.Data["oldState"] != "pending" || evs[0].ev.Data["newState"] != "running" {
			t.Fatalf("events %+v", evs)
		}
		// The same state again is no change and no event.
		a.send("status", map[string]any{"sessionId": "s1", "state": "running"})
		// Another agent's session is refused and untouched.
		a.send("status", map[string]any{"sessionId": "s2", "state": "failed"})
		if e := a.errorFrame(); e.SessionID != "s2" || e.Message != "session is not placed on this agent" {
			t.Errorf("answer %+v", e)
		}
		a.send("status", map[string]any{"sessionId": "nope", "state": "failed"})
		if e := a.errorFrame(); e.Message != "session is not placed on this agent" {
			t.Errorf("answer for an unknown session %+v", e)
		}
		if s, _ := d.GetSession(ctx, "s2"); s.State != models.SessionStatePending {
			t.Errorf("other agent's session changed to %s", s.State)
		}
		if n := len(h.events.all()); n != 1 {
			t.Errorf("%d events, want 1", n)
		}
		a.send("status", map[string]any{"sessionId": "s1", "state": "deleted"})
		testkit.Eventually(t, 5*time.Second, "session deleted and session.deleted published", func() bool {
			_, err := d.GetSession(ctx, "s1")
			evs := h.events.all()
			return errors.Is(err, db.ErrNotFound) && evs[len(evs)-1].ev.Type == EventSessionDeleted
		})
		if n := len(h.events.all()); n != 2 {
			t.Errorf("%d events, want state change and deletion only", n)
		}
	})
}

func TestAgentHubShutdownClosesAgentsWith1001(t *testing.T) {
	t.Parallel()
	d := dbtest.Open(t, "sqlite")
	h := newAgentHarness(t, d, AgentHubConfig{})
	h.addAgent("a1")
	a := h.connect("a1")
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.hub.Stop()
	}()
	if code, _ := expectClose(t, a.conn, 5*time.Second); code != websocket.CloseGoingAway {
		t.Fatalf("closed with %d, want 1001", code)
	}
	<-done
	if s := h.agentRow("a1").Status; s != models.AgentStatusOffline {
		t.Errorf("after shutdown the agent is %s", s)
	}
	if err := h.hub.RegisterAgent(&AgentConnection{AgentID: "a1"}); !errors.Is(err, ErrAgentHubStopped) {
		t.Errorf("register after stop: %v", err)
	}
	h.hub.Stop() // idempotent
}

// TestAgentRacingConnectionsLeaveOneOnline: connections of one agent arrive at once; whatever
// the order, exactly one survives, and the database names that one, online.
func TestAgentRacingConnectionsLeaveOneOnline(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{})
		h.addAgent("a1")
		const n = 8
		conns := make(chan *websocket.Conn, n)
		for range n {
			go func() {
				c, _, err := websocket.DefaultDialer.Dial(h.url+"?agent_id=a1", nil)
				if err != nil {
					t.Errorf("dial: %v", err)
					c = nil
				}
				conns <- c
			}()
		}
		var all []*websocket.Conn
		for range n {
			if c := <-conns; c != nil {
				all = append(all, c)
				t.Cleanup(func() { _ = c.Close() })
			}
		}
		// Every connection but one is closed with 4000. Each is read until it closes; the
		// survivor's read only ends when the test closes it.
		closes := make(chan int, len(all))
		for _, c := range all {
			go func() {
				var err error
				for err == nil {
					_, _, err = c.ReadMessage()
				}
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					closes <- ce.Code
				} else {
					closes <- -1
				}
			}()
		}
		deadline := time.After(30 * time.Second)
		for replaced := 0; replaced < len(all)-1; {
			select {
			case code := <-closes:
				if code != CloseReplaced {
					t.Fatalf("a connection ended with %d, want %d (replaced) for all but one", code, CloseReplaced)
				}
				replaced++
			case <-deadline:
				t.Fatalf("%d of %d connections replaced within 30 s, want all but one", replaced, len(all))
			}
		}
		testkit.Eventually(t, 5*time.Second, "database names the surviving connection", func() bool {
			live := h.hub.GetConnection("a1")
			row := h.agentRow("a1")
			return live != nil && row.Status == models.AgentStatusOnline && row.ConnectionID == live.ConnectionID()
		})
	})
}

// TestAgentHubReferenceUsage drives the hub the way the reference documents it: the caller
// builds an AgentConnection with its own Send channel, registers it, and reads what the hub
// sends; heartbeats come through UpdateAgentHeartbeat.
func TestAgentHubReferenceUsage(t *testing.T) {
	t.Parallel()
	d := dbtest.Open(t, "sqlite")
	h := newAgentHarness(t, d, AgentHubConfig{HeartbeatTimeout: 45 * time.Second, CheckInterval: 10 * time.Second})
	h.addAgent("k8s-prod-us-east-1")
	conn := &AgentConnection{
		AgentID:  "k8s-prod-us-east-1",
		Platform: "kubernetes",
		LastPing: h.clock.Now(),
		Send:     make(chan []byte, 256),
		Receive:  make(chan []byte, 256),
	}
	if err := h.hub.RegisterAgent(conn); err != nil {
		t.Fatal(err)
	}
	if got := h.hub.GetConnection("k8s-prod-us-east-1"); got != conn || got.Platform != "kubernetes" {
		t.Fatalf("GetConnection = %v", got)
	}
	cmd := &models.AgentCommand{CommandID: "cmd-123", Action: "start_session", Payload: map[string]interface{}{"sessionId": "sess-456"}}
	if err := h.hub.SendCommandToAgent("k8s-prod-us-east-1", cmd); err != nil {
		t.Fatal(err)
	}
	var f struct {
		Type    string
		Payload models.CommandMessage
	}
	select {
	case raw := <-conn.Send:
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no command on Send")
	}
	if f.Type != "command" || f.Payload.CommandID != "cmd-123" || f.Payload.Payload["sessionId"] != "sess-456" || f.Payload.Attempt != 1 {
		t.Fatalf("command frame %+v", f)
	}
	if stored := h.command("cmd-123"); stored.GetSessionID() != "sess-456" || stored.Status != models.CommandStatusSent {
		t.Fatalf("stored %+v", stored)
	}
	// Resubmitting the same command id is harmless.
	again := &models.AgentCommand{CommandID: "cmd-123", Action: "start_session"}
	if err := h.hub.SendCommandToAgent("k8s-prod-us-east-1", again); err != nil || again.Status != models.CommandStatusSent {
		t.Fatalf("resubmit: %v %+v", err, again)
	}
	if err := h.hub.SendCommandToAgent("someone-else", &models.AgentCommand{CommandID: "cmd-123", Action: "x"}); !errors.Is(err, ErrCommandConflict) {
		t.Fatalf("reusing a command id for another agent: %v", err)
	}

	h.hub.BroadcastToAllAgents([]byte(`{"type":"notice","payload":{}}`), "")
	if raw := <-conn.Send; string(raw) != `{"type":"notice","payload":{}}` {
		t.Fatalf("broadcast %s", raw)
	}
	h.hub.BroadcastToAllAgents([]byte(`{"type":"notice","payload":{}}`), "k8s-prod-us-east-1")
	select {
	case raw := <-conn.Send:
		t.Fatalf("excluded agent got %s", raw)
	case <-time.After(50 * time.Millisecond):
	}

	// Heartbeats through the API keep the agent fresh past the timeout.
	h.advance(40 * time.Second)
	if err := h.hub.UpdateAgentHeartbeat("k8s-prod-us-east-1"); err != nil {
		t.Fatal(err)
	}
	h.advance(20 * time.Second)
	if !h.hub.IsAgentConnected("k8s-prod-us-east-1") {
		t.Fatal("an agent that beat through UpdateAgentHeartbeat went stale")
	}
	if err := h.hub.UpdateAgentHeartbeat("nobody"); !errors.Is(err, ErrAgentNotConnected) {
		t.Errorf("heartbeat of an unknown agent: %v", err)
	}

	h.hub.UnregisterAgent("k8s-prod-us-east-1")
	testkit.Eventually(t, 5*time.Second, "unregistered and offline", func() bool {
		return !h.hub.IsAgentConnected("k8s-prod-us-east-1") && h.agentRow("k8s-prod-us-east-1").Status == models.AgentStatusOffline
	})
	if got := h.hub.GetConnectedAgents(); len(got) != 0 {
		t.Errorf("connected agents after unregister: %v", got)
	}
}
