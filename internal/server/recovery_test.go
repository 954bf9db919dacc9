package server

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

// A browser that reconnects with `since` gets, after `connected` (recovered), the events it
// missed that are its own, in order, then the snapshot, then live events; a position the
// server cannot replay says recovered false.
func TestSessionsSocketResume(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite")
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	publish := func(user, session string) {
		t.Helper()
		body := fmt.Sprintf(`{"orgId":"org-a","type":"session.updated","sessionId":%q,"userId":%q}`, session, user)
		if code, e := ts.post(t, "/api/v1/events", testService, body); code != http.StatusAccepted {
			t.Fatalf("publish: %d %+v", code, e)
		}
	}
	conn, _, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+alice, nil)
	hello := readWS(t, conn)
	readWS(t, conn) // sessions_update
	publish("alice", "a1")
	first := readWS(t, conn)
	if first.str("sessionId") != "a1" {
		t.Fatalf("live event %v", first)
	}
	_ = conn.Close()
	publish("alice", "a2")
	publish("bob", "b1") // not alice's
	publish("alice", "a3")

	since := fmt.Sprintf("%s:%d", hello.str("epoch"), int(first["offset"].(float64)))
	conn, status, _ := ts.dialWS(t, "/api/v1/ws/sessions?since="+since+"&token="+alice, nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("resume refused: %d", status)
	}
	if f := readWS(t, conn); f.str("type") != "connected" || f["recovered"] != true || f["offset"] != first["offset"].(float64)+3 {
		t.Fatalf("connected %v, want recovered at the head", f)
	}
	for _, want := range []string{"a2", "a3"} {
		if f := readWS(t, conn); f.str("sessionId") != want || f.str("epoch") != hello.str("epoch") {
			t.Fatalf("replayed %v, want %s", f, want)
		}
	}
	if f := readWS(t, conn); f.str("type") != "sessions_update" {
		t.Fatalf("after the replay: %v", f)
	}
	publish("alice", "a4")
	if f := readWS(t, conn); f.str("sessionId") != "a4" {
		t.Fatalf("live after the replay: %v", f)
	}

	old, _, _ := ts.dialWS(t, "/api/v1/ws/sessions?since=gone:1&token="+alice, nil)
	if f := readWS(t, old); f["recovered"] != false {
		t.Fatalf("unknown epoch: %v", f)
	}
}
