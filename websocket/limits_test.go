package websocket

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// A browser sending more frames a second than ClientMessageRate is closed with 1008, counted
// as rate_limited; one below it is served.
func TestClientMessageRate(t *testing.T) {
	var logs testkit.LockedBuffer
	m := startManager(t, nil, Config{ClientMessageRate: 5, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	base := sessionsServer(t, m)

	calm := dialRaw(t, base, params("org", "o", "user", "calm"))
	for range 3 {
		calm.write(clientFrame(0x89, []byte("p"), false))
		if op, _ := calm.read(); op != websocket.PongMessage {
			t.Fatalf("got %d, want a pong", op)
		}
	}
	// Twelve messages at once: however the burst straddles a second, one second holds six or
	// more of them, over the five allowed.
	flood := dialRaw(t, base, params("org", "o", "user", "flood"))
	var burst []byte
	for range 12 {
		burst = append(burst, clientFrame(0x81, []byte("x"), false)...)
	}
	flood.write(burst) // one write: the server may close before a thirteenth would land
	if code := flood.expectClose(); code != websocket.ClosePolicyViolation {
		t.Fatalf("flood closed with %d, want 1008", code)
	}
	testkit.Eventually(t, 5*time.Second, "the flood counted", func() bool {
		return counterValue(t, m.hub.metrics.disconnects.WithLabelValues("rate_limited")) == 1
	})
	if n := strings.Count(logs.String(), `reason="message rate exceeded"`); n != 1 {
		t.Fatalf("the close logged %d times, want once:\n%s", n, logs.String())
	}
	// The calm one is still served.
	m.Hub().BroadcastToOrg("o", []byte(`{"type":"still-here"}`))
	if op, p := calm.read(); op != websocket.TextMessage || !strings.Contains(string(p), "still-here") {
		t.Fatalf("calm client got %d %q", op, p)
	}
}

// The same limit holds on sockets read by gorilla's reader (TLS), pings included.
func TestClientMessageRateOverTLS(t *testing.T) {
	m := startManager(t, nil, Config{ClientMessageRate: 5})
	conn := dialTLSSessions(t, m)
	for range 12 {
		if err := conn.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
			break // closed already
		}
	}
	if code, reason := expectClose(t, conn, 5*time.Second); code != websocket.ClosePolicyViolation || reason != "message rate exceeded" {
		t.Fatalf("close %d %q, want 1008 message rate exceeded", code, reason)
	}
}

// A connection subscribed past MaxSubscriptions (through the Notifier, as an embedding server
// would) is closed with 1008 rather than left missing events it asked for.
func TestMaxSubscriptions(t *testing.T) {
	m := startManager(t, nil, Config{MaxSubscriptions: 3})
	conn, _, err := websocket.DefaultDialer.Dial(sessionsServer(t, m)+"?"+params("org", "o", "user", "u").Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	readUntilType(t, conn, "sessions_update")
	ids := m.Hub().GetClientsByOrg("o")
	if len(ids) != 1 {
		t.Fatalf("%d clients", len(ids))
	}
	id := ids[0].ID()
	n := m.GetNotifier()
	n.SubscribeSession(id, "s1") // with the user's own: 2
	n.SubscribeSession(id, "s2") // 3
	n.SubscribeSession(id, "s2") // already held: no change
	m.Hub().BroadcastToOrg("o", []byte(`{"type":"at-the-limit"}`))
	readUntilType(t, conn, "at-the-limit")
	n.SubscribeUser(id, "someone-else") // 4: over
	if code, reason := expectClose(t, conn, 5*time.Second); code != websocket.ClosePolicyViolation || reason != "too many subscriptions" {
		t.Fatalf("close %d %q, want 1008 too many subscriptions", code, reason)
	}
}
