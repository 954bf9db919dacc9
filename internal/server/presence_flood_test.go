package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// A user opening and closing its session's socket in a loop publishes a bounded number of
// presence events (a budget per user: websocket.DefaultPresenceBurst, one more every
// websocket.DefaultPresenceInterval), so another browser of the organization resuming with
// `since` still recovers; the connection rows stay exact, and a connection held back by the
// budget is announced once it allows.
func TestPresenceFloodBounded(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		ts := startServer(t, dialect, func(c *Config) {
			c.HistorySize = 100
			c.SessionsInterval = 200 * time.Millisecond
		})
		if err := ts.Database().CreateSession(ctx, models.Session{ID: "s1", OrgID: "org-a", UserID: "alice", State: "running"}); err != nil {
			t.Fatal(err)
		}
		alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
		carol := mint(t, "carol", "org-a", auth.RoleUser, time.Hour)
		admin := mint(t, "root", "org-a", auth.RoleAdmin, time.Hour)
		carolSince := ts.publishAccepted(t, "/api/v1/events", testService, `{"orgId":"org-a","type":"session.updated","sessionId":"c1","userId":"carol"}`)
		ops, _, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+admin, nil)
		readWS(t, ops) // connected

		const cycles = 60
		began := time.Now()
		for i := range cycles {
			conn, status, code := ts.dialWS(t, "/api/v1/ws/sessions?session_id=s1&token="+alice, nil)
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("cycle %d: %d %s", i, status, code)
			}
			readWS(t, conn) // connected: the connection is recorded
			_ = conn.Close()
		}
		// Every connection is gone once its row is; a session.disconnected follows its
		// session.connected, so the events are all in once the counts match after a marker.
		testkit.Eventually(t, 10*time.Second, "every connection's row gone", func() bool {
			n, err := ts.Database().CountConnections(ctx, "s1")
			if err != nil {
				t.Fatal(err)
			}
			return n == 0
		})
		ts.publishAccepted(t, "/api/v1/events", testService, `{"orgId":"org-a","type":"session.updated","sessionId":"marker","userId":"root"}`)
		elapsed := time.Since(began)
		count := map[string]int{}
		for marker := false; !marker || count[string(websocket.EventSessionConnected)] != count[string(websocket.EventSessionDisconnected)]; {
			f := readWS(t, ops)
			count[f.str("type")]++
			marker = marker || f.str("sessionId") == "marker"
		}
		presence := count[string(websocket.EventSessionConnected)] + count[string(websocket.EventSessionDisconnected)]
		bound := 2 * (websocket.DefaultPresenceBurst + int(elapsed/websocket.DefaultPresenceInterval) + 1)
		if presence > bound || count[string(websocket.EventSessionConnected)] == 0 {
			t.Fatalf("%d connect/close cycles in %v published %d presence events, want 1 to %d", cycles, elapsed.Round(time.Millisecond), presence, bound)
		}

		r, status, code := ts.dialWS(t, "/api/v1/ws/sessions?since="+carolSince+"&token="+carol, nil)
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("carol's resume: %d %s", status, code)
		}
		if f := readWS(t, r); f["recovered"] != true {
			t.Fatalf("carol resuming after the flood: %v, want recovered true", f)
		}

		// A connection that stays open is announced, once the budget allows.
		held, _, _ := ts.dialWS(t, "/api/v1/ws/sessions?session_id=s1&token="+alice, nil)
		id := readWS(t, held).str("clientId")
		for {
			f := readWS(t, ops) // within the budget's interval and a session check
			if data, _ := f["data"].(map[string]any); f.str("type") == string(websocket.EventSessionConnected) && data["connectionId"] == id {
				break
			}
		}
		_ = held.Close()
		for {
			f := readWS(t, ops)
			if data, _ := f["data"].(map[string]any); f.str("type") == string(websocket.EventSessionDisconnected) && data["connectionId"] == id {
				break
			}
		}
		if n, _ := ts.Database().CountConnections(ctx, "s1"); n != 0 {
			t.Fatalf("%d connections recorded after the last closed", n)
		}
	})
}
