package websocket

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

func seedStore(t *testing.T) *db.Database {
	t.Helper()
	d := dbtest.Open(t, "sqlite")
	ctx := context.Background()
	for _, s := range []models.Session{
		{ID: "s-alice", OrgID: "org-a", UserID: "alice", State: "running"},
		{ID: "s-bob", OrgID: "org-a", UserID: "bob", State: "running"},
		{ID: "s-other", OrgID: "org-b", UserID: "alice", State: "running"},
	} {
		if err := d.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.UpsertOrganization(ctx, models.Organization{ID: "org-a", Name: "A", K8sNamespace: "ns-a"}); err != nil {
		t.Fatal(err)
	}
	if err := d.ShareSession(ctx, "s-bob", "alice", []string{"view"}); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestNotifyHelpers: each reference helper produces its documented type
// and data fields, and is routed to the session's organization as found in
// the database (a session of another org with the same user never leaks).
func TestNotifyHelpers(t *testing.T) {
	m := startManager(t, seedStore(t), Config{})
	base := sessionsServer(t, m)
	alice := dial(t, base, params("org", "org-a", "user", "alice"))
	aliceB := dial(t, base, params("org", "org-b", "user", "alice"))
	readUntilType(t, alice, "sessions_update")
	readUntilType(t, aliceB, "sessions_update")

	n := m.GetNotifier()
	cases := []struct {
		call func()
		typ  EventType
		data string
	}{
		{func() { n.NotifySessionCreated("s-alice", "alice", map[string]any{"template": "firefox"}) }, EventSessionCreated, `{"template":"firefox"}`},
		{func() { n.NotifySessionUpdated("s-alice", "alice", map[string]any{"description": "x"}) }, EventSessionUpdated, `{"description":"x"}`},
		{func() { n.NotifySessionStateChange("s-alice", "alice", "pending", "running") }, EventSessionStateChange, `{"newState":"running","oldState":"pending"}`},
		{func() { n.NotifySessionConnected("s-alice", "alice", "c1") }, EventSessionConnected, `{"connectionId":"c1"}`},
		{func() { n.NotifySessionDisconnected("s-alice", "alice", "c1") }, EventSessionDisconnected, `{"connectionId":"c1"}`},
		{func() { n.NotifySessionIdle("s-alice", "alice", 120) }, EventSessionIdle, `{"idleDuration":120}`},
		{func() { n.NotifySessionActive("s-alice", "alice") }, EventSessionActive, `null`},
		{func() { n.NotifySessionResourcesUpdated("s-alice", "alice", map[string]any{"cpu": "2"}) }, EventSessionResourcesUpdated, `{"resources":{"cpu":"2"}}`},
		{func() { n.NotifySessionTagsUpdated("s-alice", "alice", []string{"a", "b"}) }, EventSessionTagsUpdated, `{"tags":["a","b"]}`},
		{func() { n.NotifySessionError("s-alice", "alice", "boom") }, EventSessionError, `{"error":"boom"}`},
		{func() { n.NotifySessionDeleted("s-alice", "alice") }, EventSessionDeleted, `null`},
	}
	for _, tc := range cases {
		tc.call()
		f := readFrame(t, alice)
		data, _ := json.Marshal(f["data"])
		if EventType(f.str("type")) != tc.typ || f.str("sessionId") != "s-alice" || f.str("userId") != "alice" || string(data) != tc.data {
			t.Fatalf("%s: got %v (data %s), want data %s", tc.typ, f, data, tc.data)
		}
		if _, err := time.Parse(time.RFC3339Nano, f.str("timestamp")); err != nil || !strings.HasSuffix(f.str("timestamp"), "Z") {
			t.Fatalf("%s: timestamp %q is not RFC 3339 UTC", tc.typ, f.str("timestamp"))
		}
	}
	// Shared: the owner hears sharedWith, the grantee sharedBy.
	bob := dial(t, base, params("org", "org-a", "user", "bob"))
	readUntilType(t, bob, "sessions_update")
	n.NotifySessionShared("s-bob", "bob", "alice", []string{"view"})
	if f := readFrame(t, bob); f.str("type") != "session.shared" || f["data"].(map[string]any)["sharedWith"] != "alice" {
		t.Fatalf("owner got %v", f)
	}
	if f := readFrame(t, alice); f.str("type") != "session.shared" || f["data"].(map[string]any)["sharedBy"] != "bob" {
		t.Fatalf("grantee got %v", f)
	}
	// An event of org-b's session reaches alice's org-b client only.
	n.NotifySessionStateChange("s-other", "alice", "running", "stopped")
	if f := readFrame(t, aliceB); f.str("sessionId") != "s-other" {
		t.Fatalf("org-b client got %v", f)
	}
	if _, err := m.GetNotifier().BroadcastToOrg(context.Background(), "org-a", []byte(`{"type":"fence"}`)); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, alice); f.str("type") != "fence" {
		t.Fatalf("org-a client got %v before the fence: an org-b event leaked", f)
	}
}

func TestSubscribeAndUnsubscribeByClientID(t *testing.T) {
	m := startManager(t, nil, Config{})
	conn := dial(t, sessionsServer(t, m), params("org", "o", "user", "u"))
	id := readFrame(t, conn).str("clientId")
	readUntilType(t, conn, "sessions_update")
	n := m.GetNotifier()
	ctx := context.Background()
	n.SubscribeSession(id, "watched")
	n.SubscribeUser(id, "someone-else")
	for _, e := range []SessionEvent{
		{Type: EventSessionUpdated, SessionID: "watched", UserID: "x"},
		{Type: EventSessionUpdated, SessionID: "y", UserID: "someone-else"},
	} {
		if _, err := n.Publish(ctx, "o", e); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, conn); f.str("type") != string(EventSessionUpdated) {
			t.Fatalf("got %v", f)
		}
	}
	n.UnsubscribeClient(id)
	if _, err := n.Publish(ctx, "o", SessionEvent{Type: EventSessionUpdated, SessionID: "watched", UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.BroadcastToOrg(ctx, "o", []byte(`{"type":"fence"}`)); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, conn); f.str("type") != "fence" {
		t.Fatalf("unsubscribed client got %v", f)
	}
	n.CloseAll()
	if _, err := n.Publish(ctx, "o", SessionEvent{Type: EventSessionUpdated, UserID: "u"}); !errors.Is(err, ErrNotifierClosed) {
		t.Fatalf("publish after CloseAll: %v", err)
	}
}

func TestAuthorizeSession(t *testing.T) {
	m := startManager(t, seedStore(t), Config{})
	ctx := context.Background()
	cases := []struct {
		org, user, role, session string
		ok                       bool
	}{
		{"org-a", "alice", "user", "s-alice", true},
		{"org-a", "alice", "user", "s-bob", true}, // shared with her
		{"org-a", "carol", "user", "s-bob", false},
		{"org-a", "carol", "operator", "s-bob", true},
		{"org-a", "alice", "admin", "s-other", false}, // another org, even for an admin
		{"org-a", "alice", "user", "missing", false},
	}
	for _, tc := range cases {
		err := m.AuthorizeSession(ctx, &OrgContext{OrgID: tc.org, UserID: tc.user, Role: tc.role}, tc.session)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrSessionNotVisible)) {
			t.Errorf("%+v: %v", tc, err)
		}
	}
}

// TestDeprecatedSessionsEntryPoint: the org-less entry point lands in the
// default org, and a session subscription of another org is refused 1008.
func TestDeprecatedSessionsEntryPoint(t *testing.T) {
	m := startManager(t, seedStore(t), Config{DefaultOrg: "org-a"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		m.HandleSessionsWebSocket(conn, r.URL.Query().Get("user_id"), r.URL.Query().Get("session_id"))
	}))
	defer srv.Close()
	base := "ws" + strings.TrimPrefix(srv.URL, "http")
	conn := dial(t, base, params("user_id", "alice"))
	if f := readFrame(t, conn); f.str("type") != "connected" {
		t.Fatalf("first frame %v", f)
	}
	snap := readFrame(t, conn)
	if snap.str("org_id") != "org-a" || snap["count"] != float64(1) { // her own; shared ones only when subscribed
		t.Fatalf("snapshot %v", snap)
	}
	refused := dial(t, base, params("user_id", "alice", "session_id", "s-other"))
	if code, _ := expectClose(t, refused, 5*time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("foreign session: close %d, want 1008", code)
	}
	if got := m.Hub().GetK8sNamespaceForOrg("org-a"); got != "ns-a" {
		t.Fatalf("namespace resolved to %q, want the organization's ns-a", got)
	}
}

func TestEventTypesValid(t *testing.T) {
	all := []EventType{EventSessionCreated, EventSessionUpdated, EventSessionDeleted, EventSessionStateChange,
		EventSessionConnected, EventSessionDisconnected, EventSessionHeartbeat, EventSessionIdle, EventSessionActive,
		EventSessionResourcesUpdated, EventSessionTagsUpdated, EventSessionShared, EventSessionUnshared, EventSessionError}
	want := []string{"session.created", "session.updated", "session.deleted", "session.state.changed",
		"session.connected", "session.disconnected", "session.heartbeat", "session.idle", "session.active",
		"session.resources.updated", "session.tags.updated", "session.shared", "session.unshared", "session.error"}
	for i, e := range all {
		if string(e) != want[i] || !e.Valid() {
			t.Errorf("%q: want %q and valid", e, want[i])
		}
	}
	if EventType("session.exploded").Valid() {
		t.Error("unknown type reported valid")
	}
}

// gatedStore holds ListSessions until the test opens the gate, so events
// can be published while a client's snapshot is being read.
type gatedStore struct {
	SessionStore
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedStore) ListSessions(ctx context.Context, orgID, userID string, extraIDs ...string) ([]models.Session, error) {
	g.entered <- struct{}{}
	<-g.gate
	return g.SessionStore.ListSessions(ctx, orgID, userID, extraIDs...)
}

// TestSnapshotPrecedesEvents: events published while the snapshot is read
// wait for it, so a browser always sees connected, sessions_update, then
// events, in stream order.
func TestSnapshotPrecedesEvents(t *testing.T) {
	store := &gatedStore{SessionStore: seedStore(t), entered: make(chan struct{}), gate: make(chan struct{})}
	m := startManager(t, store, Config{})
	base := sessionsServer(t, m)
	conns := make(chan *websocket.Conn, 1)
	go func() {
		c, _, err := websocket.DefaultDialer.Dial(base+"?"+params("org", "org-a", "user", "alice").Encode(), nil)
		if err != nil {
			t.Error(err)
		}
		conns <- c
	}()
	<-store.entered // registered; the snapshot read is under way
	for i := 0; i < 3; i++ {
		if _, err := m.GetNotifier().Publish(context.Background(), "org-a", SessionEvent{Type: EventSessionUpdated, SessionID: "s-alice", UserID: "alice"}); err != nil {
			t.Fatal(err)
		}
	}
	close(store.gate)
	conn := <-conns
	if conn == nil {
		t.Fatal("dial failed")
	}
	defer conn.Close()
	if f := readFrame(t, conn); f.str("type") != "connected" || f["offset"] != float64(0) {
		t.Fatalf("first frame %v", f)
	}
	if f := readFrame(t, conn); f.str("type") != "sessions_update" {
		t.Fatalf("second frame %v, want the snapshot", f)
	}
	for i := 1; i <= 3; i++ {
		if f := readFrame(t, conn); f.str("type") != string(EventSessionUpdated) || f["offset"] != float64(i) {
			t.Fatalf("frame %v, want event at offset %d", f, i)
		}
	}
}
