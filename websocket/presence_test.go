package websocket

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

// A browser that opens the socket of a session is a connection to it: recorded while open,
// announced with session.connected and session.disconnected to the session's organization.
func TestSessionConnectionsRecordedAndAnnounced(t *testing.T) {
	ctx := context.Background()
	d := dbtest.Open(t, "sqlite")
	if err := d.CreateSession(ctx, models.Session{ID: "s1", OrgID: "o", UserID: "owner", State: models.SessionStateRunning, Namespace: "ns"}); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, d, Config{SessionsInterval: time.Hour})
	base := sessionsServer(t, m)
	ops := dial(t, base, params("org", "o", "user", "ops", "role", "admin"))
	readUntilType(t, ops, "sessions_update")

	viewer := dial(t, base, params("org", "o", "user", "owner", "session", "s1"))
	first := readFrame(t, viewer)
	f := readUntilType(t, ops, string(EventSessionConnected))
	data, _ := f["data"].(map[string]any)
	if f.str("sessionId") != "s1" || f.str("userId") != "owner" || data["connectionId"] != first.str("clientId") || data["user"] != "owner" {
		t.Fatalf("session.connected = %v", f)
	}
	if n, _ := d.CountConnections(ctx, "s1"); n != 1 {
		t.Fatalf("%d connections recorded, want 1", n)
	}
	_ = viewer.Close()
	f = readUntilType(t, ops, string(EventSessionDisconnected))
	if f.str("sessionId") != "s1" {
		t.Fatalf("session.disconnected = %v", f)
	}
	if n, _ := d.CountConnections(ctx, "s1"); n != 0 {
		t.Fatalf("%d connections left, want 0", n)
	}
}

// A session crossing its idle threshold is announced once with session.idle, even when two
// replicas notice; activity brings session.active.
func TestSessionIdlenessAnnouncedOnce(t *testing.T) {
	ctx := context.Background()
	d := dbtest.Open(t, "sqlite")
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	if err := d.CreateSession(ctx, models.Session{ID: "s1", OrgID: "o", UserID: "u", State: models.SessionStateRunning,
		Namespace: "ns", IdleTimeoutSeconds: 60, LastActivity: t0}); err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(t0.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	bus := cluster.NewMemoryBus() // two replicas sharing one stream
	t.Cleanup(func() { _ = bus.Close() })
	a := startManager(t, d, Config{SessionsInterval: time.Hour, Now: clock, Bus: bus, Replica: "a"})
	b := startManager(t, d, Config{SessionsInterval: time.Hour, Now: clock, Bus: bus, Replica: "b"})
	owner := dial(t, sessionsServer(t, a), params("org", "o", "user", "u"))
	readUntilType(t, owner, "sessions_update")
	peer := dial(t, sessionsServer(t, b), params("org", "o", "user", "u"))
	readUntilType(t, peer, "sessions_update")
	waitReleased(t, a)
	waitReleased(t, b)

	now.Store(t0.Add(61 * time.Second).UnixNano())
	a.refreshSessions(ctx)
	b.refreshSessions(ctx)
	f := readUntilType(t, owner, string(EventSessionIdle))
	if data, _ := f["data"].(map[string]any); data["idleDuration"] != float64(61) {
		t.Fatalf("session.idle = %v", f)
	}
	if err := d.TouchSessionActivity(ctx, "s1", t0.Add(62*time.Second)); err != nil {
		t.Fatal(err)
	}
	now.Store(t0.Add(63 * time.Second).UnixNano())
	b.refreshSessions(ctx)
	a.refreshSessions(ctx)
	// The next event of the stream is session.active: no second session.idle before it.
	for {
		f := readFrame(t, owner)
		switch f.str("type") {
		case string(EventSessionIdle):
			t.Fatal("session.idle announced twice")
		case string(EventSessionActive):
			return
		}
	}
}
