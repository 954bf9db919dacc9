package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/models"
)

// noRefresh keeps the periodic session-list check out of a test, so what it shows is done by
// the events alone.
func noRefresh(c *Config) { c.SessionsInterval = time.Hour }

// untilClosed reads conn until its close frame, within 10 s, and returns the frames it read
// before, the close code and its reason.
func untilClosed(t *testing.T, conn *gorilla.Conn) ([]wsFrame, int, string) {
	t.Helper()
	var frames []wsFrame
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var f wsFrame
		if err := conn.ReadJSON(&f); err != nil {
			var ce *gorilla.CloseError
			if errors.As(err, &ce) {
				return frames, ce.Code, ce.Text
			}
			t.Fatalf("no close frame after %v: %v", frames, err)
		}
		frames = append(frames, f)
	}
}

// framesBefore reads conn until a frame that match accepts, within 5 s each, and returns the
// frames read before it.
func framesBefore(t *testing.T, conn *gorilla.Conn, match func(wsFrame) bool) []wsFrame {
	t.Helper()
	var before []wsFrame
	for {
		f := readWS(t, conn)
		if match(f) {
			return before
		}
		before = append(before, f)
	}
}

// openSession opens the sessions socket of token subscribed to session and reads its
// greeting, snapshot and the announcement of its own connection; it returns the snapshot.
func openSession(t *testing.T, ts *testServer, token, session string) (*gorilla.Conn, wsFrame) {
	t.Helper()
	conn, status, code := ts.dialWS(t, "/api/v1/ws/sessions?session_id="+session, bearer(token))
	if conn == nil {
		t.Fatalf("session %s refused: %d %s", session, status, code)
	}
	if f := readWS(t, conn); f.str("type") != "connected" {
		t.Fatalf("first frame %v", f)
	}
	snap := readWS(t, conn)
	if snap.str("type") != "sessions_update" {
		t.Fatalf("snapshot %v", snap)
	}
	readUntil(t, conn, "session.connected")
	return conn, snap
}

func (ts *testServer) publish(t *testing.T, body string) {
	t.Helper()
	if status, eb := ts.post(t, "/api/v1/events", testService, body); status != http.StatusAccepted {
		t.Fatalf("publish %s: %d %+v", body, status, eb)
	}
}

func mentions(frames []wsFrame, marker string) bool {
	for _, f := range frames {
		if data, _ := f["data"].(map[string]any); data["marker"] == marker {
			return true
		}
	}
	return false
}

// A grantee's socket opened on a shared session is closed with 4004 "access revoked" as soon
// as the share is withdrawn and session.unshared published: nothing of the session published
// after that reaches it. The owner's socket on the same session goes on receiving everything.
func TestUnsharedSessionClosesGranteeSocket(t *testing.T) {
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ts := startServer(t, dialect, noRefresh)
			seedSessions(t, ts) // bob-vscode, bob's, shared with alice
			alice, _ := openSession(t, ts, mint(t, "alice", "org-a", auth.RoleUser, time.Hour), "bob-vscode")
			bob, _ := openSession(t, ts, mint(t, "bob", "org-a", auth.RoleUser, time.Hour), "bob-vscode")
			ts.publish(t, `{"orgId":"org-a","type":"session.updated","sessionId":"bob-vscode","userId":"bob","data":{"marker":"before"}}`)

			if err := ts.Database().UnshareSession(context.Background(), "bob-vscode", "alice"); err != nil {
				t.Fatal(err)
			}
			ts.publish(t, `{"orgId":"org-a","type":"session.unshared","sessionId":"bob-vscode","userId":"bob","data":{"unsharedFrom":"alice"}}`)
			ts.publish(t, `{"orgId":"org-a","type":"session.updated","sessionId":"bob-vscode","userId":"bob","data":{"marker":"after"}}`)

			frames, code, reason := untilClosed(t, alice)
			if code != 4004 || reason != "access revoked" {
				t.Fatalf("alice's socket closed with %d %q, want 4004 \"access revoked\"", code, reason)
			}
			if !mentions(frames, "before") || mentions(frames, "after") {
				t.Fatalf("alice, unshared, got %v: want the update before the revocation and nothing after", frames)
			}
			// The owner keeps its socket and every event, in order.
			got := framesBefore(t, bob, func(f wsFrame) bool {
				data, _ := f["data"].(map[string]any)
				return data["marker"] == "after"
			})
			if !mentions(got, "before") {
				t.Fatalf("bob got %v before the last update", got)
			}
			// Alice may not open it again.
			if _, status, code := ts.dialWS(t, "/api/v1/ws/sessions?session_id=bob-vscode", bearer(mint(t, "alice", "org-a", auth.RoleUser, time.Hour))); status != http.StatusForbidden || code != "forbidden_session" {
				t.Fatalf("alice reopening: %d %s", status, code)
			}
			if !strings.Contains(ts.logs.String(), "code=4004") {
				t.Fatalf("the revocation is not logged:\n%s", ts.logs.String())
			}
		})
	}
}

// A socket opened on a session that is deleted, its id then given to another user's new
// session in the same organization, never sees the new session: it is closed with 4004 on the
// deletion, or, when the deletion was never announced, on the creation, before its frame.
func TestReusedSessionIDClosesOldSubscribers(t *testing.T) {
	for _, dialect := range dbtest.Dialects() {
		for _, announced := range []bool{true, false} {
			name := dialect + "/deletion_announced"
			if !announced {
				name = dialect + "/deletion_silent"
			}
			t.Run(name, func(t *testing.T) { testReusedSessionID(t, dialect, announced) })
		}
	}
}

func testReusedSessionID(t *testing.T, dialect string, announced bool) {
	ts := startServer(t, dialect, noRefresh)
	seedSessions(t, ts) // alice-firefox is alice's; bob-vscode bob's, shared with alice
	ctx := context.Background()
	d := ts.Database()
	owner, _ := openSession(t, ts, mint(t, "alice", "org-a", auth.RoleUser, time.Hour), "alice-firefox")
	grantee, _ := openSession(t, ts, mint(t, "alice", "org-a", auth.RoleUser, time.Hour), "bob-vscode")
	admin, _, _ := ts.dialWS(t, "/api/v1/ws/sessions", bearer(mint(t, "root", "org-a", auth.RoleAdmin, time.Hour)))
	readUntil(t, admin, "sessions_update")

	for id, was := range map[string]string{"alice-firefox": "alice", "bob-vscode": "bob"} {
		if err := d.DeleteSession(ctx, id); err != nil {
			t.Fatal(err)
		}
		if announced {
			ts.publish(t, `{"orgId":"org-a","type":"session.deleted","sessionId":"`+id+`","userId":"`+was+`"}`)
		}
		if err := d.CreateSession(ctx, models.Session{ID: id, OrgID: "org-a", UserID: "carol", Namespace: "ns-a",
			Template: "carol-secret", State: "running", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		ts.publish(t, `{"orgId":"org-a","type":"session.created","sessionId":"`+id+`","userId":"carol","data":{"marker":"carol"}}`)
		ts.publish(t, `{"orgId":"org-a","type":"session.updated","sessionId":"`+id+`","userId":"carol","data":{"marker":"carol"}}`)
	}
	for name, conn := range map[string]*gorilla.Conn{"owner": owner, "grantee": grantee} {
		frames, code, reason := untilClosed(t, conn)
		if code != 4004 || reason != "access revoked" {
			t.Fatalf("alice's %s socket closed with %d %q, want 4004", name, code, reason)
		}
		if mentions(frames, "carol") {
			t.Fatalf("alice's %s socket got carol's session: %v", name, frames)
		}
	}
	// Whoever sees the whole org gets carol's events.
	framesBefore(t, admin, func(f wsFrame) bool { return f.str("type") == "session.created" && f.str("userId") == "carol" })
}

// The revocation is published on one replica and the grantee's socket is on another: the event
// reaches it over the bus and closes it the same way.
func TestUnsharedOnAnotherReplicaClosesGranteeSocket(t *testing.T) {
	url := dbtest.URL(t, "postgres")
	_, prefix := redistest.Client(t)
	var replicas []*testServer
	for _, name := range []string{"r1", "r2"} {
		replicas = append(replicas, startServer(t, "postgres", noRefresh, func(c *Config) {
			c.DatabaseURL, c.Replica, c.RedisURL, c.RedisPrefix = url, name, testRedisURL(), prefix
		}))
	}
	r1, r2 := replicas[0], replicas[1]
	seedSessions(t, r1)
	alice, _ := openSession(t, r2, mint(t, "alice", "org-a", auth.RoleUser, time.Hour), "bob-vscode")

	if err := r1.Database().UnshareSession(context.Background(), "bob-vscode", "alice"); err != nil {
		t.Fatal(err)
	}
	r1.publish(t, `{"orgId":"org-a","type":"session.unshared","sessionId":"bob-vscode","userId":"bob","data":{"unsharedFrom":"alice"}}`)
	r1.publish(t, `{"orgId":"org-a","type":"session.updated","sessionId":"bob-vscode","userId":"bob","data":{"marker":"after"}}`)
	frames, code, reason := untilClosed(t, alice)
	if code != 4004 || reason != "access revoked" || mentions(frames, "after") {
		t.Fatalf("alice on r2 got %v, closed with %d %q; want nothing after the revocation and 4004", frames, code, reason)
	}
}
