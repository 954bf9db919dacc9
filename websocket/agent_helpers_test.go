package websocket

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// recordedEvents is an EventPublisher that keeps what it was given.
type recordedEvents struct {
	mu     sync.Mutex
	events []orgEvent
}

type orgEvent struct {
	org string
	ev  SessionEvent
}

func (r *recordedEvents) Publish(_ context.Context, orgID string, ev SessionEvent) (cluster.Position, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, orgEvent{orgID, ev})
	return cluster.Position{Epoch: "e", Offset: uint64(len(r.events))}, nil
}

func (r *recordedEvents) all() []orgEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]orgEvent(nil), r.events...)
}

// agentHarness is an AgentHub on a real database behind a real WebSocket endpoint, driven by
// a fake clock: the agent id comes from the query, as the server's route would pass it after
// checking the key.
type agentHarness struct {
	t      testing.TB
	hub    *AgentHub
	db     *db.Database
	clock  *clockwork.FakeClock
	events *recordedEvents
	url    string
}

func newAgentHarness(t testing.TB, d *db.Database, cfg AgentHubConfig) *agentHarness {
	t.Helper()
	h := &agentHarness{t: t, db: d, clock: clockwork.NewFakeClock(), events: &recordedEvents{}}
	cfg.Clock, cfg.Events = h.clock, h.events
	if cfg.Replica == "" {
		cfg.Replica = "replica-test"
	}
	h.hub = newAgentHub(d, cfg)
	go h.hub.Run()
	// Run's two tickers exist before any test advances the clock.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := h.clock.BlockUntilContext(ctx, 2); err != nil {
		t.Fatalf("hub loop did not start: %v", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if _, err := h.hub.ServeAgent(conn, r.URL.Query().Get("agent_id"), "docker"); err != nil {
			closeConn(conn, time.Second, websocket.CloseInternalServerErr, err.Error())
		}
	}))
	h.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.hub.Shutdown(ctx); err != nil {
			t.Errorf("agent hub shutdown: %v", err)
		}
		srv.Close()
	})
	return h
}

// addAgent stores an approved agent.
func (h *agentHarness) addAgent(id string) {
	h.t.Helper()
	if err := h.db.CreateAgent(h.t.Context(), models.Agent{ID: id, Platform: "docker", ApprovalStatus: models.ApprovalApproved}); err != nil {
		h.t.Fatalf("create agent %s: %v", id, err)
	}
}

// connect dials as agent id and waits until the hub has registered the connection.
func (h *agentHarness) connect(id string) *testAgent {
	h.t.Helper()
	return h.connectFor(h.t, id)
}

// connectFor is connect for a subtest: failures are reported to t.
func (h *agentHarness) connectFor(t testing.TB, id string) *testAgent {
	t.Helper()
	before := h.hub.GetConnection(id)
	conn, _, err := websocket.DefaultDialer.Dial(h.url+"?agent_id="+id, nil)
	if err != nil {
		t.Fatalf("dial agent %s: %v", id, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	testkit.Eventually(t, 5*time.Second, "agent registered", func() bool {
		c := h.hub.GetConnection(id)
		return c != nil && c != before
	})
	return &testAgent{t: t, conn: conn}
}

// submit stores a command for agent id through the hub.
func (h *agentHarness) submit(agentID, action string, payload map[string]any) models.AgentCommand {
	h.t.Helper()
	cmd, err := h.hub.SubmitCommand(h.t.Context(), models.AgentCommand{AgentID: agentID, Action: action, Payload: payload}, nil)
	if err != nil {
		h.t.Fatalf("submit %s: %v", action, err)
	}
	return cmd
}

func (h *agentHarness) command(id string) models.AgentCommand {
	h.t.Helper()
	c, err := h.db.GetCommand(h.t.Context(), id)
	if err != nil {
		h.t.Fatalf("get command %s: %v", id, err)
	}
	return c
}

func (h *agentHarness) agentRow(id string) models.Agent {
	h.t.Helper()
	a, err := h.db.GetAgent(h.t.Context(), id)
	if err != nil {
		h.t.Fatalf("get agent %s: %v", id, err)
	}
	return a
}

// advance moves the fake clock one check interval at a time and waits for each check pass,
// so no tick is lost and every effect of a tick happened before the next.
func (h *agentHarness) advance(d time.Duration) {
	h.t.Helper()
	step := h.hub.cfg.CheckInterval
	for ; d >= step; d -= step {
		before := h.hub.checks.Load()
		h.clock.Advance(step)
		testkit.Eventually(h.t, 5*time.Second, "check pass", func() bool { return h.hub.checks.Load() > before })
	}
	if d > 0 {
		h.clock.Advance(d)
	}
}

func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// testAgent is the agent end of a connection: a plain gorilla client speaking PROTOCOL.md 3.
type testAgent struct {
	t    testing.TB
	conn *websocket.Conn
}

func (a *testAgent) send(frameType string, payload any) {
	a.t.Helper()
	b, err := json.Marshal(map[string]any{"type": frameType, "timestamp": time.Now().UTC(), "payload": payload})
	if err != nil {
		a.t.Fatal(err)
	}
	a.sendRaw(string(b))
}

func (a *testAgent) sendRaw(s string) {
	a.t.Helper()
	if err := a.conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		a.t.Fatalf("agent write: %v", err)
	}
}

// agentFrameIn is a frame the agent received.
type agentFrameIn struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Payload   json.RawMessage `json:"payload"`
}

func (a *testAgent) next() agentFrameIn {
	a.t.Helper()
	_ = a.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := a.conn.ReadMessage()
	if err != nil {
		a.t.Fatalf("agent read: %v", err)
	}
	var f agentFrameIn
	if err := json.Unmarshal(data, &f); err != nil {
		a.t.Fatalf("frame %q: %v", data, err)
	}
	if f.Timestamp.IsZero() {
		a.t.Errorf("frame %q has no timestamp", data)
	}
	return f
}

// command reads the next frame and requires it to be a command.
func (a *testAgent) command() models.CommandMessage {
	a.t.Helper()
	f := a.next()
	if f.Type != models.MessageTypeCommand {
		a.t.Fatalf("got %s frame %s, want a command", f.Type, f.Payload)
	}
	var c models.CommandMessage
	if err := json.Unmarshal(f.Payload, &c); err != nil {
		a.t.Fatal(err)
	}
	return c
}

// errorFrame reads the next frame and requires it to be an error.
func (a *testAgent) errorFrame() models.ErrorMessage {
	a.t.Helper()
	f := a.next()
	if f.Type != models.MessageTypeError {
		a.t.Fatalf("got %s frame %s, want an error", f.Type, f.Payload)
	}
	var e models.ErrorMessage
	if err := json.Unmarshal(f.Payload, &e); err != nil {
		a.t.Fatal(err)
	}
	return e
}

// quiet asserts that nothing arrives within d. The connection cannot be read after it.
func (a *testAgent) quiet(d time.Duration) {
	a.t.Helper()
	_ = a.conn.SetReadDeadline(time.Now().Add(d))
	if _, data, err := a.conn.ReadMessage(); err == nil {
		a.t.Fatalf("unexpected frame %s", data)
	}
}
