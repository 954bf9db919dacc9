package websocket

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// A connection whose Conn is a zero-value websocket.Conn (built, not upgraded) is refused
// with ErrUnusableSocket, through RegisterAgent and ServeAgent alike: no panic, no agent
// marked online, nothing registered.
func TestRegisterAgentUnusableSocket(t *testing.T) {
	t.Parallel()
	h := newAgentHarness(t, dbtest.Open(t, "sqlite"), AgentHubConfig{})
	h.addAgent("a1")
	conn := &AgentConnection{AgentID: "a1", Conn: &websocket.Conn{}, Platform: "kubernetes",
		Send: make(chan []byte, 256), Receive: make(chan []byte, 256)}
	if err := h.hub.RegisterAgent(conn); !errors.Is(err, ErrUnusableSocket) {
		t.Fatalf("RegisterAgent with a zero-value Conn: %v, want ErrUnusableSocket", err)
	}
	if _, err := h.hub.ServeAgent(&websocket.Conn{}, "a1", "docker"); !errors.Is(err, ErrUnusableSocket) {
		t.Fatalf("ServeAgent with a zero-value Conn: %v, want ErrUnusableSocket", err)
	}
	if h.hub.GetConnection("a1") != nil || h.hub.IsAgentConnected("a1") {
		t.Fatal("a connection without a socket was registered")
	}
	if row := h.agentRow("a1"); row.Status == models.AgentStatusOnline || row.ConnectionID != "" {
		t.Fatalf("agent row %+v: a refused connection was recorded", row)
	}
	for _, id := range []string{"a\x00b", strings.Repeat("x", maxIDLen+1)} {
		if err := h.hub.RegisterAgent(&AgentConnection{AgentID: id}); err == nil {
			t.Errorf("agent id %q was accepted", id)
		}
	}
}

// A connection without Conn is the caller's to drive: commands and Enqueue'd frames arrive on
// its Send, registering the same connection again is refused, and UnregisterAgent and the
// hub's Stop end such connections without touching a socket.
func TestRegisterAgentWithoutSocket(t *testing.T) {
	t.Parallel()
	h := newAgentHarness(t, dbtest.Open(t, "sqlite"), AgentHubConfig{})
	h.addAgent("a1")
	h.addAgent("a2")
	conn := &AgentConnection{AgentID: "a1", Platform: "kubernetes", Send: make(chan []byte, 256), Receive: make(chan []byte, 256)}
	if err := conn.Enqueue([]byte(`{"type":"early"}`)); !errors.Is(err, ErrAgentNotConnected) {
		t.Fatalf("Enqueue before registration: %v", err)
	}
	if err := h.hub.RegisterAgent(conn); err != nil {
		t.Fatal(err)
	}
	if err := h.hub.RegisterAgent(conn); !errors.Is(err, ErrAlreadyRegistered) {
		t.Fatalf("registering the same connection again: %v, want ErrAlreadyRegistered", err)
	}
	if h.hub.GetConnection("a1") != conn {
		t.Fatal("the second registration replaced the first")
	}
	cmd := h.submit("a1", "start_session", map[string]any{"sessionId": "s1"})
	var f agentFrameIn
	select {
	case raw := <-conn.Send:
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no command on Send")
	}
	if f.Type != models.MessageTypeCommand || !strings.Contains(string(f.Payload), cmd.CommandID) {
		t.Fatalf("frame %s %s, want the command", f.Type, f.Payload)
	}
	if err := conn.Enqueue([]byte(`{"type":"vnc_close","payload":{"sessionId":"s1"}}`)); err != nil {
		t.Fatal(err)
	}
	if raw := <-conn.Send; string(raw) != `{"type":"vnc_close","payload":{"sessionId":"s1"}}` {
		t.Fatalf("Send got %s, want the enqueued frame", raw)
	}

	h.hub.UnregisterAgent("a1")
	testkit.Eventually(t, 10*time.Second, "a1 unregistered and offline", func() bool {
		return !h.hub.IsAgentConnected("a1") && h.agentRow("a1").Status == models.AgentStatusOffline
	})
	if err := conn.Enqueue([]byte(`{"type":"late"}`)); !errors.Is(err, ErrAgentNotConnected) {
		t.Fatalf("Enqueue after unregistering: %v", err)
	}
	if err := h.hub.RegisterAgent(conn); !errors.Is(err, ErrAlreadyRegistered) {
		t.Fatalf("registering a closed connection again: %v, want ErrAlreadyRegistered", err)
	}

	other := &AgentConnection{AgentID: "a2", Platform: "docker"}
	if err := h.hub.RegisterAgent(other); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := h.hub.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a connection without socket: %v", err)
	}
	if h.hub.GetConnection("a2") != nil || h.agentRow("a2").Status != models.AgentStatusOffline {
		t.Fatal("the connection without socket outlived the hub")
	}
}

// receiveAgentServer is the agent route of an embedder that builds the AgentConnection itself,
// as StreamSpace's handler does, with a Receive channel, and registers it with h's hub.
func receiveAgentServer(t *testing.T, h *agentHarness, receive chan []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &AgentConnection{AgentID: r.URL.Query().Get("agent_id"), Conn: conn, Platform: "kubernetes",
			LastPing: time.Now(), Send: make(chan []byte, 256), Receive: receive}
		if err := h.hub.RegisterAgent(c); err != nil {
			closeConn(conn, time.Second, websocket.CloseInternalServerErr, err.Error())
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// dialAgent connects as agent id to base and waits until the hub holds the connection.
func dialAgent(t *testing.T, h *agentHarness, base, id string) *testAgent {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(base+"?agent_id="+id, nil)
	if err != nil {
		t.Fatalf("dial agent %s: %v", id, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	testkit.Eventually(t, 10*time.Second, "agent registered", func() bool { return h.hub.GetConnection(id) != nil })
	return &testAgent{t: t, conn: conn}
}

// received reads the next frame on receive and returns its type and its payload's sessionId
// (or n, for the test's own frames).
func received(t *testing.T, receive <-chan []byte) string {
	t.Helper()
	select {
	case raw := <-receive:
		var f struct {
			Type    string `json:"type"`
			Payload struct {
				SessionID string `json:"sessionId"`
				N         int    `json:"n"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatalf("Receive got %q: %v", raw, err)
		}
		if f.Payload.SessionID != "" {
			return f.Type + " " + f.Payload.SessionID
		}
		return f.Type + " " + string(rune('0'+f.Payload.N))
	case <-time.After(10 * time.Second):
		t.Fatal("nothing on Receive")
		return ""
	}
}

// sentinel sends a frame the hub refuses (an ack without commandId) and requires the agent's
// next frame to be that refusal: the hub answered nothing the agent sent before it.
func sentinel(t *testing.T, agent *testAgent) {
	t.Helper()
	agent.send(models.MessageTypeAck, map[string]any{})
	if e := agent.errorFrame(); !strings.Contains(e.Message, "commandId") {
		t.Fatalf("error frame %+v, want the sentinel's refusal", e)
	}
}

// Receive gets, in order, the frames the hub leaves: types it does not handle, and vnc_* frames
// of sessions no Tunnel of this package holds, without the hub answering them. Heartbeats,
// acks and pongs are the hub's. While a Tunnel of this package holds a session, that session's
// vnc_data is the tunnel's and not offered; once the tunnel is closed it is offered again.
func TestAgentReceiveGetsWhatTheHubLeaves(t *testing.T) {
	t.Parallel()
	d := dbtest.Open(t, "sqlite")
	h := newAgentHarness(t, d, AgentHubConfig{})
	h.addAgent("a1")
	viewed := models.Session{ID: "s-viewed", OrgID: "o1", UserID: "u1", AgentID: "a1", State: models.SessionStateRunning}
	if err := d.CreateSession(t.Context(), viewed); err != nil {
		t.Fatal(err)
	}
	receive := make(chan []byte, 64)
	agent := dialAgent(t, h, receiveAgentServer(t, h, receive), "a1")

	cmd := h.submit("a1", "start_session", nil)
	if got := agent.command(); got.CommandID != cmd.CommandID {
		t.Fatalf("command %+v", got)
	}
	agent.send(models.MessageTypeHeartbeat, map[string]any{"status": "online"})
	agent.send("custom_thing", map[string]any{"n": 1})
	agent.send(models.MessageTypeVNCReady, models.VNCReadyMessage{SessionID: "s-viewed"})
	agent.send(models.MessageTypeVNCData, models.VNCDataMessage{SessionID: "s-free", Data: "aGVsbG8="})
	agent.send(models.MessageTypeAck, models.AckMessage{CommandID: cmd.CommandID})
	agent.send(models.MessageTypeVNCError, models.VNCErrorMessage{SessionID: "s-free", Error: "gone"})
	agent.send(models.MessageTypePong, map[string]any{})
	agent.send(models.MessageTypeTunnelCredit, map[string]any{"tunnelId": 1, "bytes": 10}) // not negotiated here
	agent.send("custom_thing", map[string]any{"n": 2})
	sentinel(t, agent)

	for _, want := range []string{"custom_thing 1", "vnc_ready s-viewed", "vnc_data s-free", "vnc_error s-free", "tunnel_credit 0", "custom_thing 2"} {
		if got := received(t, receive); got != want {
			t.Fatalf("Receive got %q, want %q", got, want)
		}
	}
	if n := len(receive); n != 0 {
		t.Fatalf("%d more frames on Receive, want none (the hub's own frames are not offered)", n)
	}
	if got := h.command(cmd.CommandID).Status; got != models.CommandStatusAck {
		t.Fatalf("command %s after its ack, want acknowledged", got)
	}

	// A viewer of this package holds s-viewed: its vnc_data is the tunnel's.
	tun, err := h.hub.OpenTunnel(t.Context(), TunnelRequest{Session: viewed, UserID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	agent.send(models.MessageTypeVNCData, models.VNCDataMessage{SessionID: "s-viewed", Data: "aGVsbG8="})
	agent.send("custom_thing", map[string]any{"n": 3})
	sentinel(t, agent)
	if got := received(t, receive); got != "custom_thing 3" {
		t.Fatalf("Receive got %q, want custom_thing 3 (the viewed session's vnc_data is the tunnel's)", got)
	}
	tun.set.mu.Lock()
	toViewer := string(joinBytes(tun.toViewer))
	tun.set.mu.Unlock()
	if toViewer != "hello" {
		t.Fatalf("the tunnel got %q, want hello", toViewer)
	}

	// Closed, the tunnel holds nothing: the session's frames are the embedder's again.
	tun.Close()
	agent.send(models.MessageTypeVNCData, models.VNCDataMessage{SessionID: "s-viewed", Data: "d29ybGQ="})
	if got := received(t, receive); got != "vnc_data s-viewed" {
		t.Fatalf("Receive got %q, want vnc_data s-viewed", got)
	}
}

func joinBytes(parts [][]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// warnCounter counts the Warn records whose message contains match.
type warnCounter struct {
	match string
	n     atomic.Int64
}

func (w *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && strings.Contains(r.Message, w.match) {
		w.n.Add(1)
	}
	return nil
}
func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnCounter) WithGroup(string) slog.Handler      { return w }

// A Receive nobody drains holds the reader up to ReceiveTimeout per frame, no longer: the
// frames after the ones dropped (an ack here) are still handled, every drop is counted, and
// the connection's drops are logged once.
func TestAgentReceiveNobodyDrains(t *testing.T) {
	t.Parallel()
	warns := &warnCounter{match: "Receive"}
	h := newAgentHarness(t, dbtest.Open(t, "sqlite"), AgentHubConfig{ReceiveTimeout: 50 * time.Millisecond, Logger: slog.New(warns)})
	h.addAgent("a1")
	receive := make(chan []byte, 1)
	agent := dialAgent(t, h, receiveAgentServer(t, h, receive), "a1")
	cmd := h.submit("a1", "start_session", nil)
	if got := agent.command(); got.CommandID != cmd.CommandID {
		t.Fatalf("command %+v", got)
	}
	const frames = 5
	for i := range frames {
		agent.send("custom_thing", map[string]any{"n": i + 1})
	}
	agent.send(models.MessageTypeHeartbeat, map[string]any{"status": "draining"})
	agent.send(models.MessageTypeAck, models.AckMessage{CommandID: cmd.CommandID})
	testkit.Eventually(t, 30*time.Second, "the ack after the undelivered frames recorded", func() bool {
		return h.command(cmd.CommandID).Status == models.CommandStatusAck
	})
	if got := h.hub.GetConnection("a1").Status(); got != models.AgentStatusDraining {
		t.Errorf("status %q after the heartbeat, want draining", got)
	}
	if got := counterValue(t, h.hub.metrics.receiveDrops.WithLabelValues("unknown")); got != frames-1 {
		t.Errorf("%v drops counted, want %d", got, frames-1)
	}
	if got := warns.n.Load(); got != 1 {
		t.Errorf("%d warnings logged, want one for the connection", got)
	}
	if got := received(t, receive); got != "custom_thing 1" {
		t.Errorf("Receive holds %q, want the first frame", got)
	}
}
