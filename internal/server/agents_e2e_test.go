package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// sendAgent writes one envelope frame as an agent does.
func sendAgent(t *testing.T, c *gorilla.Conn, frameType string, payload any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"type": frameType, "timestamp": time.Now().UTC(), "payload": payload})
	if err := c.WriteMessage(gorilla.TextMessage, b); err != nil {
		t.Fatalf("agent write: %v", err)
	}
}

// TestStartSessionEndToEnd: an admin starts a session on an agent that is offline; the row
// is created pending and the owner's browser sees session.created; the agent connects, gets
// the command, reports the session running, completes the command; the browser sees the
// state change live, and the command's record has every field of PROTOCOL.md 4.
func TestStartSessionEndToEnd(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, dialect, func(c *Config) { c.AgentHeartbeatFlush = 50 * time.Millisecond })
			code, raw := ts.call(t, "POST", "/api/v1/admin/agents", bearer(testService), registerBody("docker-1", "docker"))
			if code != http.StatusCreated {
				t.Fatalf("create agent: %d %s", code, raw)
			}
			key := decodeRegistration(t, raw).APIKey

			alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
			browser, status, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+alice, nil)
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("browser refused: %d", status)
			}
			readWS(t, browser) // connected
			readWS(t, browser) // sessions_update

			code, raw = ts.call(t, "POST", "/api/v1/admin/agents/docker-1/command", bearer(testService),
				`{"action":"start_session","sessionId":"sess-1","payload":{"user":"alice","orgId":"org-a","template":"firefox","resources":{"cpu":"1","memory":"2Gi"}}}`)
			var acc struct{ CommandID, Status string }
			_ = json.Unmarshal(raw, &acc)
			if code != http.StatusAccepted || acc.CommandID == "" || acc.Status != models.CommandStatusPending {
				t.Fatalf("command while offline: %d %s", code, raw)
			}
			s, err := ts.Database().GetSession(t.Context(), "sess-1")
			if err != nil || s.OrgID != "org-a" || s.UserID != "alice" || s.State != models.SessionStatePending ||
				s.AgentID != "docker-1" || s.Platform != "docker" || s.Namespace != "streamspace" || s.Memory != "2Gi" {
				t.Fatalf("session row %+v, %v", s, err)
			}
			if f := readWS(t, browser); f.str("type") != "session.created" || f.str("sessionId") != "sess-1" {
				t.Fatalf("browser got %v, want session.created", f)
			}

			agent, status, _ := ts.connectAgent(t, "docker-1", key)
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("agent refused: %d", status)
			}
			f := readWS(t, agent)
			payload, _ := f["payload"].(map[string]any)
			inner, _ := payload["payload"].(map[string]any)
			if f.str("type") != "command" || payload["commandId"] != acc.CommandID || payload["action"] != "start_session" ||
				payload["attempt"] != float64(1) || inner["sessionId"] != "sess-1" || inner["user"] != "alice" {
				t.Fatalf("agent got %v", f)
			}
			if _, err := time.Parse(time.RFC3339Nano, f.str("timestamp")); err != nil {
				t.Errorf("command timestamp %q: %v", f.str("timestamp"), err)
			}
			sendAgent(t, agent, "ack", map[string]any{"commandId": acc.CommandID})
			sendAgent(t, agent, "status", map[string]any{"sessionId": "sess-1", "state": "running", "vncReady": true,
				"vncPort": 5900, "platformMetadata": map[string]any{"podName": "sim-sess-1", "podIP": "10.0.0.7"}})
			sendAgent(t, agent, "complete", map[string]any{"commandId": acc.CommandID, "result": map[string]any{"podName": "sim-sess-1"}})

			ev := readWS(t, browser)
			data, _ := ev["data"].(map[string]any)
			if ev.str("type") != "session.state.changed" || ev.str("userId") != "alice" || data["oldState"] != "pending" || data["newState"] != "running" {
				t.Fatalf("browser got %v, want the state change", ev)
			}

			var cmd map[string]any
			testkit.Eventually(t, 5*time.Second, "command completed", func() bool {
				code, raw = ts.call(t, "GET", "/api/v1/admin/commands/"+acc.CommandID, bearer(testService), "")
				cmd = nil
				_ = json.Unmarshal(raw, &cmd)
				return cmd["status"] == models.CommandStatusCompleted
			})
			if code != http.StatusOK || cmd["status"] != "completed" || cmd["attempts"] != float64(1) || cmd["agentId"] != "docker-1" ||
				cmd["sessionId"] != "sess-1" || cmd["action"] != "start_session" {
				t.Fatalf("command record %d %s", code, raw)
			}
			for _, field := range []string{"commandId", "payload", "error", "result", "createdAt", "sentAt", "acknowledgedAt", "completedAt"} {
				if _, ok := cmd[field]; !ok {
					t.Errorf("command record lacks %q: %s", field, raw)
				}
			}
			if s, _ := ts.Database().GetSession(t.Context(), "sess-1"); s.State != "running" || s.PodName != "sim-sess-1" {
				t.Errorf("session after status: %+v", s)
			}

			// The agent list shows it online on this replica, with its last heartbeat.
			sendAgent(t, agent, "heartbeat", map[string]any{"status": "draining", "activeSessions": 1})
			var listed map[string]any
			testkit.Eventually(t, 10*time.Second, "agent listed draining", func() bool {
				_, raw = ts.call(t, "GET", "/api/v1/agents", bearer(testService), "")
				var body struct{ Agents []map[string]any }
				_ = json.Unmarshal(raw, &body)
				if len(body.Agents) == 1 && body.Agents[0]["status"] == "draining" {
					listed = body.Agents[0]
				}
				return listed != nil
			})
			if listed == nil || listed["replica"] != ts.cfg.Replica || listed["replica"] == "" || listed["lastHeartbeat"] == nil ||
				listed["approvalStatus"] != "approved" || listed["platform"] != "docker" {
				t.Fatalf("agent list entry %v (last body %s)", listed, raw)
			}

			// A replica shutting down closes agents with 1001 and sends no `shutdown`.
			ts.stop()
			_ = agent.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				_, msg, err := agent.ReadMessage()
				if err != nil {
					var ce *gorilla.CloseError
					if !errors.As(err, &ce) || ce.Code != gorilla.CloseGoingAway {
						t.Fatalf("agent connection ended with %v, want 1001", err)
					}
					break
				}
				var m map[string]any
				_ = json.Unmarshal(msg, &m)
				if m["type"] == models.MessageTypeShutdown {
					t.Fatal("a replica shutting down sent `shutdown`")
				}
			}
		})
	}
}

// TestStreamSpaceAgentFrames sends the frames exactly as StreamSpace's k8s-agent builds them
// (time.Now() with its zone as the timestamp, integer capacities, "result": null,
// "platformMetadata": null, a pong) and checks each is taken with no error frame.
func TestStreamSpaceAgentFrames(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite", func(c *Config) { c.AgentHeartbeatFlush = 20 * time.Millisecond })
	code, raw := ts.call(t, "POST", "/api/v1/admin/agents", bearer(testService), `{"agentId":"k8s-prod-1","platform":"kubernetes"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, raw)
	}
	key := decodeRegistration(t, raw).APIKey
	// Its registration on every (re)connect: capacity as integers, metadata, its own key.
	code, raw = ts.call(t, "POST", "/api/v1/agents/register", http.Header{auth.AgentKeyHeader: {key}, "Content-Type": {"application/json"}},
		`{"agentId":"k8s-prod-1","platform":"kubernetes","region":"us-east-1","capacity":{"maxCpu":100,"maxMemory":128,"maxSessions":100},"metadata":{"namespace":"streamspace","kubernetes":true}}`)
	if code != http.StatusOK {
		t.Fatalf("re-register: %d %s", code, raw)
	}
	decodeRegistration(t, raw)
	conn, status, _ := ts.connectAgent(t, "k8s-prod-1", key)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("connect: %d", status)
	}
	code, raw = ts.call(t, "POST", "/api/v1/admin/agents/k8s-prod-1/command", bearer(testService),
		`{"action":"start_session","sessionId":"sess-456","payload":{"user":"alice","template":"firefox-browser"}}`)
	if code != http.StatusAccepted {
		t.Fatalf("command: %d %s", code, raw)
	}
	cmdFrame := readWS(t, conn)
	cmdID, _ := cmdFrame["payload"].(map[string]any)["commandId"].(string)

	zone := time.FixedZone("agent-local", -5*3600)
	frame := func(typ string, payload any) {
		b, _ := json.Marshal(map[string]any{"type": typ, "timestamp": time.Now().In(zone), "payload": payload})
		if err := conn.WriteMessage(gorilla.TextMessage, b); err != nil {
			t.Fatal(err)
		}
	}
	frame("heartbeat", map[string]any{"status": "online", "activeSessions": 0,
		"capacity": map[string]any{"maxCpu": 100, "maxMemory": 128, "maxSessions": 100}})
	frame("ack", map[string]any{"commandId": cmdID})
	frame("status", map[string]any{"sessionId": "sess-456", "state": "running", "vncReady": true, "vncPort": 0, "platformMetadata": nil})
	frame("complete", map[string]any{"commandId": cmdID, "result": nil})
	frame("pong", nil)

	testkit.Eventually(t, 5*time.Second, "command completed, session running, heartbeat stored", func() bool {
		c, err := ts.Database().GetCommand(context.Background(), cmdID)
		s, serr := ts.Database().GetSession(context.Background(), "sess-456")
		a, aerr := ts.Database().GetAgent(context.Background(), "k8s-prod-1")
		return err == nil && serr == nil && aerr == nil && c.Status == models.CommandStatusCompleted &&
			s.State == "running" && a.Capacity["maxSessions"] == float64(100) && a.Region == "us-east-1"
	})
	// Nothing it sent was refused: the next frame it reads is the close of the shutdown.
	ts.stop()
	for {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			break
		}
		t.Errorf("unexpected frame %s", msg)
	}
}
