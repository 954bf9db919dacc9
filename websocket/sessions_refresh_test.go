package websocket

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// countingStore counts the session-list queries made through it.
type countingStore struct {
	SessionStore
	lists atomic.Int64
}

func (s *countingStore) ListSessions(ctx context.Context, orgID, userID string, extraIDs ...string) ([]models.Session, error) {
	s.lists.Add(1)
	return s.SessionStore.ListSessions(ctx, orgID, userID, extraIDs...)
}

// 500 organizations with 10 listeners each: a check costs one query per organization and
// sends nothing when nothing changed; a change reaches exactly the clients that see it.
func TestSessionsRefreshOneQueryPerOrg(t *testing.T) {
	const orgs, perOrg = 500, 10
	ctx := context.Background()
	d := dbtest.Open(t, "sqlite")
	for o := range orgs {
		s := models.Session{ID: fmt.Sprintf("s-%d", o), OrgID: fmt.Sprintf("org-%d", o), UserID: "u0",
			State: models.SessionStatePending, Namespace: "ns"}
		if err := d.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	store := &countingStore{SessionStore: d}
	// Checks are run by hand. The clients read nothing once connected, so they answer no ping:
	// a PongWait longer than the test keeps them all, however slowly 5,000 dial on a busy machine.
	m := startManager(t, store, Config{SessionsInterval: time.Hour, PongWait: time.Hour})
	base := sessionsServer(t, m)
	dialer := &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	// In each org: users u0…u8, and u9 an admin who sees the whole org.
	conns := dialMany(t, dialer, base, orgs*perOrg, func(i int) url.Values {
		role := "user"
		if i%perOrg == perOrg-1 {
			role = "admin"
		}
		return params("org", fmt.Sprintf("org-%d", i/perOrg), "user", fmt.Sprintf("u%d", i%perOrg), "role", role)
	}, func(c *websocket.Conn) error {
		for _, want := range []string{"connected", "sessions_update"} {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, msg, err := c.ReadMessage(); err != nil {
				return err
			} else if f := string(msg); !strings.Contains(f, `"type":"`+want+`"`) {
				return fmt.Errorf("got %s, want %s", f, want)
			}
		}
		return nil
	})
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	waitReleased(t, m)

	check := func(wantUpdates float64) {
		t.Helper()
		queries, updates := store.lists.Load(), counterValue(t, m.metrics.listUpdates)
		m.refreshSessions(ctx)
		if got := store.lists.Load() - queries; got != orgs {
			t.Fatalf("a check made %d queries, want %d (one per org)", got, orgs)
		}
		if got := counterValue(t, m.metrics.listUpdates) - updates; got != wantUpdates {
			t.Fatalf("a check sent %v sessions_update frames, want %v", got, wantUpdates)
		}
	}
	check(0) // nothing changed since the snapshots

	if _, err := d.SetSessionState(ctx, "s-7", models.SessionStateRunning); err != nil {
		t.Fatal(err)
	}
	check(2) // org-7's u0, who owns the session, and its admin; nobody else sees it
	for _, i := range []int{7 * perOrg, 7*perOrg + perOrg - 1} {
		f := readUntilType(t, conns[i], "sessions_update")
		list, _ := f["sessions"].([]any)
		if len(list) != 1 || list[0].(map[string]any)["state"] != models.SessionStateRunning {
			t.Fatalf("client %d got %v, want s-7 running", i, f)
		}
	}
	check(0) // and not again
}

// Time alone moves idleDuration and lastActivity: no resend. A session crossing its idle
// threshold flips isIdle: resend.
func TestSessionsRefreshIdleFlip(t *testing.T) {
	ctx := context.Background()
	d := dbtest.Open(t, "sqlite")
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	s := models.Session{ID: "s1", OrgID: "o", UserID: "u", State: models.SessionStateRunning, Namespace: "ns",
		IdleTimeoutSeconds: 60, LastActivity: t0}
	if err := d.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(t0.Add(10 * time.Second).UnixNano())
	m := startManager(t, d, Config{SessionsInterval: time.Hour, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	conn := dial(t, sessionsServer(t, m), params("org", "o", "user", "u"))
	readUntilType(t, conn, "sessions_update")
	waitReleased(t, m)

	updates := func() float64 { return counterValue(t, m.metrics.listUpdates) }
	before := updates()
	now.Store(t0.Add(30 * time.Second).UnixNano())
	m.refreshSessions(ctx)
	if updates() != before {
		t.Fatal("resent when only idleDuration moved")
	}
	now.Store(t0.Add(61 * time.Second).UnixNano())
	m.refreshSessions(ctx)
	if updates() != before+1 {
		t.Fatal("not resent when the session became idle")
	}
	f := readUntilType(t, conn, "sessions_update")
	v := f["sessions"].([]any)[0].(map[string]any)
	if v["isIdle"] != true || v["idleDuration"] != float64(61) {
		t.Fatalf("view %v, want isIdle and idleDuration 61", v)
	}
}

// The loop runs by itself: a change shows up within an interval or two.
func TestSessionsRefreshLoop(t *testing.T) {
	ctx := context.Background()
	d := dbtest.Open(t, "sqlite")
	m := startManager(t, d, Config{SessionsInterval: 20 * time.Millisecond})
	conn := dial(t, sessionsServer(t, m), params("org", "o", "user", "u"))
	readUntilType(t, conn, "sessions_update")
	if err := d.CreateSession(ctx, models.Session{ID: "late", OrgID: "o", UserID: "u", State: models.SessionStatePending, Namespace: "ns"}); err != nil {
		t.Fatal(err)
	}
	f := readUntilType(t, conn, "sessions_update")
	if f["count"] != float64(1) {
		t.Fatalf("got %v, want the new session", f)
	}
}

// waitReleased waits until every client of m's sessions hub has had its first snapshot
// released: a client may read its snapshot a moment before the hub marks it released, and the
// periodic check leaves unreleased clients alone.
func waitReleased(t *testing.T, m *Manager) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, "snapshots released", func() bool {
		for _, ls := range m.hub.sessionListeners() {
			for _, l := range ls {
				if l.client.gate.held.Load() {
					return false
				}
			}
		}
		return true
	})
}

// A check of an unchanged organization allocates per check, not per client: the clients'
// lists are compared by fingerprints combined from one per session, without building them.
// (Before, each client cost a filtered copy of the list and a JSON encoder every interval.)
func TestSessionsRefreshUnchangedAllocatesNothingPerClient(t *testing.T) {
	ctx := context.Background()
	d := dbtest.Open(t, "sqlite")
	for i := range 5 {
		s := models.Session{ID: fmt.Sprintf("s-%d", i), OrgID: "o", UserID: fmt.Sprintf("u%d", i),
			State: models.SessionStateRunning, Namespace: "ns"}
		if err := d.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	m := startManager(t, d, Config{SessionsInterval: time.Hour, PongWait: time.Hour})
	base := sessionsServer(t, m)
	dialer := &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	connect := func(n int) {
		from := len(conns)
		conns = append(conns, dialMany(t, dialer, base, n, func(i int) url.Values {
			return params("org", "o", "user", fmt.Sprintf("u%d", (from+i)%10))
		}, func(c *websocket.Conn) error {
			_, _, err := c.ReadMessage()
			return err
		})...)
		waitReleased(t, m)
	}
	perCheck := func() float64 {
		m.refreshSessions(ctx) // the first check after connecting may still send
		return testing.AllocsPerRun(20, func() { m.refreshSessions(ctx) })
	}
	connect(50)
	few := perCheck()
	connect(450)
	many := perCheck()
	if perClient := (many - few) / 450; perClient > 0.05 {
		t.Fatalf("a check allocates %.0f times with 50 clients and %.0f with 500: %.2f per client, want none", few, many, perClient)
	}
	if updates := counterValue(t, m.metrics.listUpdates); updates != 0 {
		t.Fatalf("%v sessions_update frames sent for lists that did not change", updates)
	}
}
