package websocket

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// listedIDs returns the session ids of a sessions_update frame.
func listedIDs(f frame) []string {
	var ids []string
	list, _ := f["sessions"].([]any)
	for _, raw := range list {
		if s, ok := raw.(map[string]any); ok {
			ids = append(ids, s["name"].(string))
		}
	}
	return ids
}

// framesUntilClose reads until the close frame, within d, and returns what came before it,
// with the code and reason.
func framesUntilClose(t *testing.T, conn *websocket.Conn, d time.Duration) ([]frame, int, string) {
	t.Helper()
	var frames []frame
	_ = conn.SetReadDeadline(time.Now().Add(d))
	for {
		var f frame
		if err := conn.ReadJSON(&f); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return frames, ce.Code, ce.Text
			}
			t.Fatalf("no close frame after %v: %v", frames, err)
		}
		frames = append(frames, f)
	}
}

// The periodic session-list check authorizes the rows it reads, not the subscriptions: a share
// withdrawn without any event, and a session subscription made through the Notifier for a
// session the user may not see, close their sockets with 4004, and no sessions_update ever
// lists those sessions to them. Subscriptions that still stand are left alone.
func TestSessionsRefreshClosesRevokedSubscriptions(t *testing.T) {
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			d := dbtest.Open(t, dialect)
			for _, s := range []models.Session{
				{ID: "bob-s", OrgID: "o1", UserID: "bob", Namespace: "ns", State: models.SessionStateRunning},
				{ID: "carol-s", OrgID: "o1", UserID: "carol", Namespace: "ns", State: models.SessionStateRunning},
				{ID: "dan-s", OrgID: "o1", UserID: "dan", Namespace: "ns", State: models.SessionStateRunning},
			} {
				if err := d.CreateSession(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			for _, share := range [][2]string{{"bob-s", "alice"}, {"dan-s", "erin"}} {
				if err := d.ShareSession(ctx, share[0], share[1], []string{"view"}); err != nil {
					t.Fatal(err)
				}
			}
			m := startManager(t, d, Config{SessionsInterval: time.Hour}) // checks are run by hand
			base := sessionsServer(t, m)

			open := func(user, session string) (conn *websocket.Conn, clientID string, listed []string) {
				conn = dial(t, base, params("org", "o1", "user", user, "session", session))
				hello := readUntilType(t, conn, "connected")
				snap := readUntilType(t, conn, "sessions_update")
				return conn, hello.str("clientId"), listedIDs(snap)
			}
			alice, _, listed := open("alice", "bob-s")
			if !slices.Contains(listed, "bob-s") {
				t.Fatalf("alice's first list %v lacks the session shared with her", listed)
			}
			erin, _, _ := open("erin", "dan-s")
			bob, _, _ := open("bob", "bob-s")
			// A subscription the Notifier was asked for, to a session alice may not see.
			mallory, id, _ := open("alice", "")
			m.GetNotifier().SubscribeSession(id, "carol-s")
			waitReleased(t, m)

			if err := d.UnshareSession(ctx, "bob-s", "alice"); err != nil {
				t.Fatal(err)
			}
			m.refreshSessions(ctx)

			for name, conn := range map[string]*websocket.Conn{"unshared": alice, "notifier": mallory} {
				frames, code, reason := framesUntilClose(t, conn, 5*time.Second)
				if code != CloseAccessRevoked || reason != "access revoked" {
					t.Fatalf("%s socket closed with %d %q, want 4004", name, code, reason)
				}
				for _, f := range frames {
					if f.str("type") == "sessions_update" {
						if ids := listedIDs(f); slices.Contains(ids, "carol-s") || slices.Contains(ids, "bob-s") {
							t.Fatalf("%s socket was listed %v", name, ids)
						}
					}
				}
			}
			// The owner and a grantee whose share stands keep their sockets.
			if _, err := m.GetNotifier().Publish(ctx, "o1", SessionEvent{Type: EventSessionUpdated, SessionID: "bob-s", UserID: "bob"}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.GetNotifier().Publish(ctx, "o1", SessionEvent{Type: EventSessionUpdated, SessionID: "dan-s", UserID: "dan"}); err != nil {
				t.Fatal(err)
			}
			if f := readUntilType(t, bob, "session.updated"); f.str("sessionId") != "bob-s" {
				t.Fatalf("bob got %v", f)
			}
			if f := readUntilType(t, erin, "session.updated"); f.str("sessionId") != "dan-s" {
				t.Fatalf("erin got %v", f)
			}
		})
	}
}

// A delivery that holds a client for a check, while the client's first snapshot is still on
// its way, lets its frames through only once both are done, in order.
func TestHeldClientWaitsForEveryHold(t *testing.T) {
	m := startManager(t, nil, Config{})
	base := socketServer(t, func(conn *websocket.Conn, _ url.Values) {
		c := m.hub.serve(conn, clientSpec{id: "c1", org: OrgContext{OrgID: "o1", UserID: "u1"}, users: []string{"u1"}, held: true}, nil, clusterPositionZero)
		c.hold()                     // a check
		c.enqueue([]byte(`{"n":1}`)) // held back
		c.release([]byte(`{"n":0}`)) // the first frames; the check is still on
		c.enqueue([]byte(`{"n":2}`)) // held back still
		c.release()                  // the check ends
	})
	conn := dial(t, base, nil)
	for want := range 3 {
		if f := readFrame(t, conn); f["n"] != float64(want) {
			t.Fatalf("frame %d is %v", want, f)
		}
	}
}

// Deliveries held back while a replay longer than the queue is written wait for room like
// the replay does, instead of finding the queue full and closing the client with 4001.
func TestReleaseLongerThanQueueKeepsHeldDeliveries(t *testing.T) {
	const queue = 4
	m := startManager(t, nil, Config{QueueSize: queue, WriteWait: time.Minute})
	clients := make(chan *Client, 1)
	base := socketServer(t, func(conn *websocket.Conn, _ url.Values) {
		c := m.hub.serve(conn, clientSpec{id: "c1", org: OrgContext{OrgID: "o1", UserID: "u1"}, users: []string{"u1"}, held: true}, nil, clusterPositionZero)
		clients <- c
		c.enqueue([]byte(`{"n":-1}`)) // a delivery that came during the replay: it follows it
		// The first frame is more than the sockets' buffers hold, so the writer blocks on it
		// while the browser does not read, and the rest of the replay fills the queue.
		replay := [][]byte{fmt.Appendf(nil, `{"n":0,"blob":%q}`, strings.Repeat("x", 16<<20))}
		for i := 1; i <= queue; i++ {
			replay = append(replay, fmt.Appendf(nil, `{"n":%d}`, i))
		}
		c.release(replay...)
	})
	conn := dialSmallBuffer(t, base, nil)
	c := <-clients
	testkit.Eventually(t, 30*time.Second, "a full queue", func() bool {
		c.out.mu.Lock()
		defer c.out.mu.Unlock()
		return len(c.out.queue) == queue
	})
	for want := range queue + 1 {
		if f := readFrame(t, conn); f["n"] != float64(want) {
			t.Fatalf("frame %d is %v", want, f["n"])
		}
	}
	if f := readFrame(t, conn); f["n"] != float64(-1) {
		t.Fatalf("after the replay: %v, want the held delivery", f["n"])
	}
}
