package websocket

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// TestAgentBadInput sends each kind of bad frame on its own connection and checks the answer
// of PROTOCOL.md 3.2: an error frame naming the problem, nothing stored, the connection kept.
func TestAgentBadInput(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{})
		h.addAgent("a1")
		h.addAgent("other")
		ctx := t.Context()
		if err := d.CreateSession(ctx, models.Session{ID: "s-other", OrgID: "o1", UserID: "u1", AgentID: "other"}); err != nil {
			t.Fatal(err)
		}
		othersCmd := h.submit("other", models.ActionStopSession, map[string]any{"sessionId": "s-other"})

		cases := []struct {
			name, frame, want string
		}{
			{"not JSON", `hello`, "frame is not a JSON object"},
			{"JSON array", `[{"type":"ack"}]`, "frame is not a JSON object"},
			{"truncated JSON", `{"type":"ack","payload":{`, "frame is not valid JSON"},
			{"type not a string", `{"type":5,"payload":{}}`, "type must be a non-empty string"},
			{"type missing", `{"payload":{}}`, "type must be a non-empty string"},
			{"numeric timestamp", `{"type":"heartbeat","timestamp":1764150000,"payload":{"status":"online"}}`, "timestamp must be an RFC 3339 string"},
			{"timestamp not RFC 3339", `{"type":"heartbeat","timestamp":"yesterday","payload":{}}`, "timestamp must be an RFC 3339 string"},
			{"payload array", `{"type":"ack","payload":["x"]}`, "payload must be an object"},
			{"ack without commandId", `{"type":"ack","payload":{}}`, `ack payload needs "commandId"`},
			{"commandId a number", `{"type":"ack","payload":{"commandId":42}}`, `ack payload has the wrong shape: field "commandId" must be a string`},
			{"heartbeat bad status", `{"type":"heartbeat","payload":{"status":"sleepy"}}`, "heartbeat status must be online or draining"},
			{"activeSessions a string", `{"type":"heartbeat","payload":{"activeSessions":"3"}}`, `heartbeat payload has the wrong shape: field "activeSessions" must be a number`},
			{"status without state", `{"type":"status","payload":{"sessionId":"s-other"}}`, "status payload needs a state"},
			{"ack of another agent's command", `{"type":"ack","payload":{"commandId":"` + othersCmd.CommandID + `"}}`, "unknown command"},
			{"complete of another agent's command", `{"type":"complete","payload":{"commandId":"` + othersCmd.CommandID + `"}}`, "unknown command"},
			{"status of another agent's session", `{"type":"status","payload":{"sessionId":"s-other","state":"failed"}}`, "session is not placed on this agent"},
			{"command id too long", `{"type":"failed","payload":{"commandId":"` + strings.Repeat("x", 300) + `"}}`, `failed payload field "commandId" is too long`},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				a := h.connectFor(t, "a1")
				a.sendRaw(c.frame)
				if e := a.errorFrame(); e.Message != c.want {
					t.Errorf("answer %q, want %q", e.Message, c.want)
				}
				// The connection still works: a good frame gets no answer and no close.
				a.send("heartbeat", map[string]any{"status": "online"})
				a.quiet(100 * time.Millisecond)
			})
		}
		if c := h.command(othersCmd.CommandID); c.Status != models.CommandStatusPending {
			t.Errorf("another agent's command moved to %s", c.Status)
		}
		if s, _ := d.GetSession(ctx, "s-other"); s.State != models.SessionStatePending {
			t.Errorf("another agent's session moved to %s", s.State)
		}
	})
}

func TestAgentUnknownTypeIsIgnored(t *testing.T) {
	t.Parallel()
	h := newAgentHarness(t, dbtest.Open(t, "sqlite"), AgentHubConfig{})
	h.addAgent("a1")
	a := h.connect("a1")
	a.send("screen_share", map[string]any{"sessionId": "s1"})
	a.sendRaw(`{"type":"something_new"}`)
	testkit.Eventually(t, 5*time.Second, "unknown frames counted", func() bool {
		return counterValue(t, h.hub.metrics.framesIn.WithLabelValues("unknown")) == 2
	})
	a.quiet(100 * time.Millisecond)
}

func TestAgentMalformedLimitCloses1008(t *testing.T) {
	t.Parallel()
	h := newAgentHarness(t, dbtest.Open(t, "sqlite"), AgentHubConfig{HeartbeatTimeout: time.Hour})
	h.addAgent("a1")
	a := h.connect("a1")
	for i := range malformedLimit {
		a.sendRaw("not json")
		if e := a.errorFrame(); e.Message != "frame is not a JSON object" {
			t.Fatalf("frame %d: %+v", i, e)
		}
	}
	// Replays are not malformed: they never count toward the limit.
	cmd := h.submit("a1", models.ActionWakeSession, nil)
	a.command()
	a.send("complete", map[string]any{"commandId": cmd.CommandID})
	a.send("complete", map[string]any{"commandId": cmd.CommandID})
	if e := a.errorFrame(); e.Message != "command is already completed" {
		t.Fatalf("replay: %+v", e)
	}
	// A minute later the window has moved on.
	h.clock.Advance(malformedWindow)
	for range malformedLimit {
		a.sendRaw("{")
		a.errorFrame()
	}
	a.sendRaw("{") // the eleventh within a minute
	a.errorFrame()
	if code, reason := expectClose(t, a.conn, 5*time.Second); code != websocket.ClosePolicyViolation || reason != "too many malformed frames" {
		t.Fatalf("closed with %d %q, want 1008", code, reason)
	}
}

func TestAgentOversizeFrameCloses1009(t *testing.T) {
	t.Parallel()
	h := newAgentHarness(t, dbtest.Open(t, "sqlite"), AgentHubConfig{MaxMessageSize: 1024})
	h.addAgent("a1")
	a := h.connect("a1")
	big, _ := json.Marshal(map[string]any{"type": "heartbeat", "payload": map[string]any{"pad": strings.Repeat("x", 2048)}})
	a.sendRaw(string(big))
	if code, _ := expectClose(t, a.conn, 5*time.Second); code != websocket.CloseMessageTooBig {
		t.Fatalf("closed with %d, want 1009", code)
	}
	testkit.Eventually(t, 5*time.Second, "agent offline", func() bool {
		return h.agentRow("a1").Status == models.AgentStatusOffline
	})
}

func TestAgentFloodCloses1008(t *testing.T) {
	t.Parallel()
	h := newAgentHarness(t, dbtest.Open(t, "sqlite"), AgentHubConfig{MessageRate: 5, MessageBurst: 20})
	h.addAgent("a1")
	a := h.connect("a1")
	frame, _ := json.Marshal(map[string]any{"type": "pong", "timestamp": time.Now().UTC()})
	for range 200 {
		if err := a.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
			break // the server closed on us
		}
	}
	if code, reason := expectClose(t, a.conn, 5*time.Second); code != websocket.ClosePolicyViolation || reason != "too many frames" {
		t.Fatalf("closed with %d %q, want 1008 too many frames", code, reason)
	}
}
