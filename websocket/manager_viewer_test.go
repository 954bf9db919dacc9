package websocket

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

func viewerFixture(t *testing.T) *db.Database {
	t.Helper()
	ctx := context.Background()
	d := dbtest.Open(t, "sqlite")
	for _, s := range []models.Session{
		{ID: "s1", OrgID: "o", UserID: "owner", State: models.SessionStateRunning, Namespace: "ns"},
		{ID: "other", OrgID: "o2", UserID: "stranger", State: models.SessionStateRunning, Namespace: "ns"},
	} {
		if err := d.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for user, perms := range map[string][]string{"ctl": {"view", "control"}, "watch": {"view"}, "bare": nil} {
		if err := d.ShareSession(ctx, "s1", user, perms); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// Owners, operators, admins and control shares control the desktop; other shares watch;
// everyone else is refused, another organization's session alike with an unknown one.
func TestAuthorizeViewerDecisions(t *testing.T) {
	t.Parallel()
	d := viewerFixture(t)
	m := startManager(t, d, Config{SessionsInterval: time.Hour})
	cases := []struct {
		name, org, user, role, session string
		viewOnly                       bool
		err                            error
	}{
		{"owner", "o", "owner", "user", "s1", false, nil},
		{"admin", "o", "boss", "admin", "s1", false, nil},
		{"operator", "o", "ops", "operator", "s1", false, nil},
		{"control share", "o", "ctl", "user", "s1", false, nil},
		{"view share", "o", "watch", "user", "s1", true, nil},
		{"share without permissions", "o", "bare", "user", "s1", true, nil},
		{"same org, no share", "o", "nobody", "user", "s1", false, ErrSessionForbidden},
		{"other org", "o", "owner", "admin", "other", false, ErrSessionNotVisible},
		{"other org's admin", "o2", "boss", "admin", "s1", false, ErrSessionNotVisible},
		{"unknown", "o", "owner", "user", "missing", false, ErrSessionNotVisible},
		{"invalid id", "o", "owner", "user", "bad\x00id", false, ErrSessionNotVisible},
	}
	for _, c := range cases {
		g, err := m.AuthorizeViewer(t.Context(), &OrgContext{OrgID: c.org, UserID: c.user, Role: c.role}, c.session)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err = %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if g.ViewOnly != c.viewOnly || g.Session.ID != c.session {
			t.Errorf("%s: grant = {%s viewOnly=%v}, want {%s viewOnly=%v}", c.name, g.Session.ID, g.ViewOnly, c.session, c.viewOnly)
		}
	}
}

// A store without share permissions makes every share view-only.
func TestAuthorizeViewerWithoutSharePermissions(t *testing.T) {
	t.Parallel()
	d := viewerFixture(t)
	m := startManager(t, d, Config{SessionsInterval: time.Hour})
	m.store = plainSessionStore{d}
	g, err := m.AuthorizeViewer(t.Context(), &OrgContext{OrgID: "o", UserID: "ctl", Role: "user"}, "s1")
	if err != nil || !g.ViewOnly {
		t.Fatalf("grant = %+v, %v; want view-only", g, err)
	}
	if _, err := m.AuthorizeViewer(t.Context(), &OrgContext{OrgID: "o", UserID: "nobody", Role: "user"}, "s1"); !errors.Is(err, ErrSessionForbidden) {
		t.Fatalf("err = %v, want ErrSessionForbidden", err)
	}
}

// plainSessionStore hides the optional interfaces of the database.
type plainSessionStore struct{ d *db.Database }

func (p plainSessionStore) GetSession(ctx context.Context, id string) (models.Session, error) {
	return p.d.GetSession(ctx, id)
}
func (p plainSessionStore) ListSessions(ctx context.Context, orgID, userID string, extraIDs ...string) ([]models.Session, error) {
	return p.d.ListSessions(ctx, orgID, userID, extraIDs...)
}
func (p plainSessionStore) GetOrganization(ctx context.Context, id string) (models.Organization, error) {
	return p.d.GetOrganization(ctx, id)
}
func (p plainSessionStore) IsSessionSharedWith(ctx context.Context, sessionID, userID string) (bool, error) {
	return p.d.IsSessionSharedWith(ctx, sessionID, userID)
}

// A tracked viewer is a connection to its session: announced with viewer "vnc", its session's
// activity refreshed on open, periodically and at the end, and its context cancelled with
// 4004 when its share is withdrawn. Not parallel: it shortens the refresh period.
func TestTrackViewerPresenceActivityAndRevocation(t *testing.T) {
	old := viewerTouchEvery.Load()
	viewerTouchEvery.Store(int64(10 * time.Millisecond))
	t.Cleanup(func() { viewerTouchEvery.Store(old) })
	ctx := context.Background()
	d := viewerFixture(t)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var now atomic.Int64
	now.Store(t0.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	m := startManager(t, d, Config{SessionsInterval: 20 * time.Millisecond, Now: clock})
	ops := dial(t, sessionsServer(t, m), params("org", "o", "user", "ops", "role", "admin"))
	readUntilType(t, ops, "sessions_update")
	lastActivity := func() time.Time {
		s, err := d.GetSession(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		return s.LastActivity.UTC()
	}

	before := testkit.SteadyGoroutines()
	org := &OrgContext{OrgID: "o", UserID: "watch", Role: "user"}
	grant, err := m.AuthorizeViewer(ctx, org, "s1")
	if err != nil {
		t.Fatal(err)
	}
	vctx, stop := m.TrackViewer(ctx, grant, org, SessionsRequest{ClientIP: "127.0.0.1", UserAgent: "test"})
	f := readUntilType(t, ops, string(EventSessionConnected))
	data, _ := f["data"].(map[string]any)
	if f.str("sessionId") != "s1" || data["user"] != "watch" || data["viewer"] != "vnc" || data["viewOnly"] != true || data["connectionId"] == "" {
		t.Fatalf("session.connected = %v", f)
	}
	if n, _ := d.CountConnections(ctx, "s1"); n != 1 {
		t.Fatalf("%d connections recorded, want 1", n)
	}
	if got := lastActivity(); !got.Equal(t0) {
		t.Fatalf("lastActivity on open = %v, want %v", got, t0)
	}
	t1 := t0.Add(31 * time.Second)
	now.Store(t1.UnixNano())
	testkit.Eventually(t, 10*time.Second, "periodic activity refresh", func() bool { return lastActivity().Equal(t1) })

	if err := d.UnshareSession(ctx, "s1", "watch"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the viewer's context did not end when its share was withdrawn")
	}
	var cause CloseCause
	if !errors.As(context.Cause(vctx), &cause) || cause.Code != CloseAccessRevoked || cause.Reason != "access revoked" {
		t.Fatalf("cause = %v, want 4004 access revoked", context.Cause(vctx))
	}
	t2 := t1.Add(5 * time.Second)
	now.Store(t2.UnixNano())
	stop()
	stop() // idempotent
	f = readUntilType(t, ops, string(EventSessionDisconnected))
	if data, _ := f["data"].(map[string]any); data["viewer"] != "vnc" || f.str("sessionId") != "s1" {
		t.Fatalf("session.disconnected = %v", f)
	}
	if n, _ := d.CountConnections(ctx, "s1"); n != 0 {
		t.Fatalf("%d connections left, want 0", n)
	}
	if got := lastActivity(); !got.Equal(t2) {
		t.Fatalf("lastActivity at close = %v, want %v", got, t2)
	}
	testkit.GoroutinesBackTo(t, 10*time.Second, before)
}

// Control withdrawn from a share ends a viewer that had it; the caller's own end is no
// revocation.
func TestTrackViewerControlWithdrawn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := viewerFixture(t)
	m := startManager(t, d, Config{SessionsInterval: 20 * time.Millisecond})
	org := &OrgContext{OrgID: "o", UserID: "ctl", Role: "user"}
	grant, err := m.AuthorizeViewer(ctx, org, "s1")
	if err != nil || grant.ViewOnly {
		t.Fatalf("grant = %+v, %v", grant, err)
	}
	vctx, stop := m.TrackViewer(ctx, grant, org, SessionsRequest{})
	defer stop()
	if err := d.ShareSession(ctx, "s1", "ctl", []string{"view"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the viewer's context did not end when control was withdrawn")
	}
	var cause CloseCause
	if !errors.As(context.Cause(vctx), &cause) || cause.Code != CloseAccessRevoked {
		t.Fatalf("cause = %v, want 4004", context.Cause(vctx))
	}

	owner := &OrgContext{OrgID: "o", UserID: "owner", Role: "user"}
	g2, _ := m.AuthorizeViewer(ctx, owner, "s1")
	octx, ostop := m.TrackViewer(ctx, g2, owner, SessionsRequest{})
	ostop()
	var c2 CloseCause
	if octx.Err() == nil || errors.As(context.Cause(octx), &c2) {
		t.Fatalf("after stop: err %v cause %v, want cancelled without a close cause", octx.Err(), context.Cause(octx))
	}
}
