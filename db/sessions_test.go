package db_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestSessionCRUD(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		s := sessionRow("s1", "o1", "u1", base)
		s.LastActivity = base.Add(time.Minute)
		mustCreate(t, d, s)

		wantErr(t, d.CreateSession(ctx, s), db.ErrConflict, "CreateSession(duplicate)")
		other := sessionRow("s1", "o2", "u9", base)
		wantErr(t, d.CreateSession(ctx, other), db.ErrConflict, "CreateSession(duplicate id, other org)")
		if err := d.CreateSession(ctx, models.Session{ID: "x"}); err == nil {
			t.Error("CreateSession without org succeeded")
		}

		got, err := d.GetSession(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		want := s
		want.CreatedAt, want.UpdatedAt = base.Truncate(time.Microsecond), base.Truncate(time.Microsecond)
		want.LastActivity = s.LastActivity.Truncate(time.Microsecond)
		if got != want {
			t.Errorf("GetSession =\n %+v\nwant\n %+v", got, want)
		}

		_, err = d.GetSession(ctx, "missing")
		wantErr(t, err, db.ErrNotFound, "GetSession(missing)")

		// Upsert replaces fields but keeps org, created_at and (when zero) last_activity.
		up := got
		up.State, up.PodName, up.UserID = models.SessionStateHibernated, "pod-2", "u2"
		up.LastActivity, up.UpdatedAt = time.Time{}, time.Time{}
		up.CreatedAt = base.Add(time.Hour)
		if err := d.UpsertSession(ctx, up); err != nil {
			t.Fatal(err)
		}
		got2, _ := d.GetSession(ctx, "s1")
		if got2.State != models.SessionStateHibernated || got2.PodName != "pod-2" || got2.UserID != "u2" {
			t.Errorf("after upsert: %+v", got2)
		}
		if !got2.CreatedAt.Equal(want.CreatedAt) || !got2.LastActivity.Equal(want.LastActivity) {
			t.Errorf("upsert changed created_at or last_activity: %+v", got2)
		}
		if !got2.UpdatedAt.After(got.UpdatedAt) {
			t.Errorf("upsert did not advance updated_at: %v", got2.UpdatedAt)
		}

		// An upsert can never move a session into another org.
		hijack := got2
		hijack.OrgID, hijack.UserID = "o2", "attacker"
		wantErr(t, d.UpsertSession(ctx, hijack), db.ErrConflict, "UpsertSession(other org)")
		got3, _ := d.GetSession(ctx, "s1")
		if got3.OrgID != "o1" || got3.UserID != "u2" {
			t.Errorf("cross-org upsert changed the row: %+v", got3)
		}

		// Upsert of a new id inserts with defaults.
		if err := d.UpsertSession(ctx, models.Session{ID: "s2", OrgID: "o1", UserID: "u1"}); err != nil {
			t.Fatal(err)
		}
		s2, err := d.GetSession(ctx, "s2")
		if err != nil || s2.State != models.SessionStatePending || s2.CreatedAt.IsZero() || !s2.LastActivity.IsZero() {
			t.Errorf("upserted new session = %+v, %v", s2, err)
		}

		if err := d.DeleteSession(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, d.DeleteSession(ctx, "s1"), db.ErrNotFound, "DeleteSession(twice)")
		_, err = d.GetSession(ctx, "s1")
		wantErr(t, err, db.ErrNotFound, "GetSession(deleted)")
	})
}

func TestListSessionsOrderAndFilter(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		// Created out of order; b and c share created_at so id breaks the tie. The
		// microsecond steps also check that SQLite's text timestamps sort as instants.
		mustCreate(t, d,
			sessionRow("c", "o1", "u1", base.Add(2*time.Microsecond)),
			sessionRow("a", "o1", "u2", base.Add(time.Microsecond)),
			sessionRow("d", "o1", "u2", base.Add(time.Second)),
			sessionRow("b", "o1", "u1", base.Add(2*time.Microsecond)),
			sessionRow("e", "o1", "u1", base.Add(-time.Hour).In(time.FixedZone("x", 5*3600))),
		)
		all, err := d.ListSessions(ctx, "o1", "")
		if err != nil {
			t.Fatal(err)
		}
		if err := sameIDs(all, "e", "a", "b", "c", "d"); err != nil {
			t.Error("whole org:", err)
		}
		mine, _ := d.ListSessions(ctx, "o1", "u1")
		if err := sameIDs(mine, "e", "b", "c"); err != nil {
			t.Error("user u1:", err)
		}
		withShared, _ := d.ListSessions(ctx, "o1", "u1", "d", "missing")
		if err := sameIDs(withShared, "e", "b", "c", "d"); err != nil {
			t.Error("user u1 + extra:", err)
		}
		none, err := d.ListSessions(ctx, "o-empty", "")
		if err != nil || none == nil || len(none) != 0 {
			t.Errorf("empty org: %v, %v", ids(none), err)
		}
		if _, err := d.ListSessions(ctx, "", "u1"); err == nil {
			t.Error("ListSessions with empty org succeeded")
		}
	})
}

// TestListSessionsOrgIsolation fills random orgs and checks that no listing, whatever its
// user and extra ids (including ids of other orgs), returns a row of another org.
func TestListSessionsOrgIsolation(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		seed := rand.Uint64()
		r := rand.New(rand.NewPCG(seed, 42))
		t.Logf("seed %d", seed)
		orgs := []string{"org-a", "org-b", "org-c"}
		users := []string{"u1", "u2", "u3"}
		byID := map[string]models.Session{}
		var allIDs []string
		for i := range 60 {
			s := sessionRow(fmt.Sprintf("s%02d", i), orgs[r.IntN(len(orgs))], users[r.IntN(len(users))], base.Add(time.Duration(i)*time.Millisecond))
			mustCreate(t, d, s)
			byID[s.ID] = s
			allIDs = append(allIDs, s.ID)
		}
		for range 50 {
			org, user := orgs[r.IntN(len(orgs))], users[r.IntN(len(users))]
			var extra []string
			for range r.IntN(10) {
				extra = append(extra, allIDs[r.IntN(len(allIDs))])
			}
			got, err := d.ListSessions(ctx, org, user, extra...)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, id := range allIDs { // allIDs is in created_at order
				s := byID[id]
				if s.OrgID == org && (s.UserID == user || slices.Contains(extra, id)) {
					want = append(want, id)
				}
			}
			if err := sameIDs(got, want...); err != nil {
				t.Fatalf("ListSessions(%s, %s, %v): %v", org, user, extra, err)
			}
			for _, s := range got {
				if s.OrgID != org {
					t.Fatalf("ListSessions(%s) returned %s of %s", org, s.ID, s.OrgID)
				}
			}
		}
	})
}

func TestActiveConnectionsInReads(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreate(t, d, sessionRow("s1", "o1", "u1", base), sessionRow("s2", "o1", "u1", base.Add(time.Second)), sessionRow("s3", "o1", "u2", base.Add(2*time.Second)))
		for i := range 3 {
			if err := d.AddConnection(ctx, models.Connection{ID: fmt.Sprint("c1-", i), SessionID: "s1", OrgID: "o1", UserID: "u1"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.AddConnection(ctx, models.Connection{ID: "c2", SessionID: "s2", OrgID: "o1", UserID: "u1"}); err != nil {
			t.Fatal(err)
		}
		list, err := d.ListSessions(ctx, "o1", "")
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for _, s := range list {
			counts[s.ID] = s.ActiveConnections
		}
		if counts["s1"] != 3 || counts["s2"] != 1 || counts["s3"] != 0 || len(counts) != 3 {
			t.Errorf("ActiveConnections from ListSessions = %v, want s1:3 s2:1 s3:0", counts)
		}
		s1, _ := d.GetSession(ctx, "s1")
		if s1.ActiveConnections != 3 {
			t.Errorf("GetSession ActiveConnections = %d, want 3", s1.ActiveConnections)
		}
		if err := d.RemoveConnection(ctx, "c1-0"); err != nil {
			t.Fatal(err)
		}
		s1, _ = d.GetSession(ctx, "s1")
		if s1.ActiveConnections != 2 {
			t.Errorf("after remove ActiveConnections = %d, want 2", s1.ActiveConnections)
		}
	})
}

func TestSetSessionState(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		s := sessionRow("s1", "o1", "u1", base)
		s.State = models.SessionStatePending
		mustCreate(t, d, s)

		old, err := d.SetSessionState(ctx, "s1", models.SessionStateRunning)
		if err != nil || old != models.SessionStatePending {
			t.Fatalf("SetSessionState = %q, %v; want pending", old, err)
		}
		got, _ := d.GetSession(ctx, "s1")
		if got.State != models.SessionStateRunning || !got.UpdatedAt.After(base) {
			t.Errorf("after SetSessionState: state %q updated %v", got.State, got.UpdatedAt)
		}
		old, err = d.SetSessionState(ctx, "s1", models.SessionStateRunning)
		if err != nil || old != models.SessionStateRunning {
			t.Errorf("same state again = %q, %v", old, err)
		}
		again, _ := d.GetSession(ctx, "s1")
		if !again.UpdatedAt.Equal(got.UpdatedAt) {
			t.Errorf("setting the same state moved updated_at")
		}
		_, err = d.SetSessionState(ctx, "missing", models.SessionStateRunning)
		wantErr(t, err, db.ErrNotFound, "SetSessionState(missing)")
	})
}

func TestTouchSessionActivity(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreate(t, d, sessionRow("s1", "o1", "u1", base))
		got, _ := d.GetSession(ctx, "s1")
		if !got.LastActivity.IsZero() {
			t.Fatalf("new session LastActivity = %v, want zero", got.LastActivity)
		}
		t1 := base.Add(10 * time.Second)
		if err := d.TouchSessionActivity(ctx, "s1", t1); err != nil {
			t.Fatal(err)
		}
		// An older touch (a late replica) must not move it backwards.
		if err := d.TouchSessionActivity(ctx, "s1", base.Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
		got, _ = d.GetSession(ctx, "s1")
		if !got.LastActivity.Equal(t1.Truncate(time.Microsecond)) {
			t.Errorf("LastActivity = %v, want %v", got.LastActivity, t1)
		}
		t2 := t1.Add(time.Microsecond)
		if err := d.TouchSessionActivity(ctx, "s1", t2); err != nil {
			t.Fatal(err)
		}
		got, _ = d.GetSession(ctx, "s1")
		if !got.LastActivity.Equal(t2.Truncate(time.Microsecond)) {
			t.Errorf("LastActivity = %v, want %v", got.LastActivity, t2)
		}
		wantErr(t, d.TouchSessionActivity(ctx, "missing", t1), db.ErrNotFound, "TouchSessionActivity(missing)")
	})
}

// TestTimestampRoundTrip stores instants in several zones with nanoseconds and reads them back
// in UTC with microsecond precision on both dialects.
func TestTimestampRoundTrip(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		zones := []*time.Location{time.UTC, time.FixedZone("plus14", 14*3600), time.FixedZone("minus930", -(9*3600 + 1800))}
		instants := []time.Time{
			base,
			time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC),
			time.Date(2038, 1, 19, 3, 14, 8, 1000, time.UTC),
			time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Date(2026, 1, 1, 0, 0, 0, 1500, time.UTC),
		}
		for i, at := range instants {
			for j, z := range zones {
				id := fmt.Sprintf("s%d-%d", i, j)
				s := sessionRow(id, "o1", "u1", at.In(z))
				s.LastActivity = at.In(z).Add(time.Millisecond)
				mustCreate(t, d, s)
				got, err := d.GetSession(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				want := at.Truncate(time.Microsecond)
				if !got.CreatedAt.Equal(want) || got.CreatedAt.Location() != time.UTC {
					t.Errorf("%s: CreatedAt = %v (%v), want %v UTC", id, got.CreatedAt, got.CreatedAt.Location(), want)
				}
				if got.CreatedAt.Sub(at) > 0 || at.Sub(got.CreatedAt) >= time.Microsecond {
					t.Errorf("%s: precision lost: stored %v read %v", id, at, got.CreatedAt)
				}
				if !got.LastActivity.Equal(want.Add(time.Millisecond)) || got.LastActivity.Location() != time.UTC {
					t.Errorf("%s: LastActivity = %v, want %v UTC", id, got.LastActivity, want.Add(time.Millisecond))
				}
			}
		}
	})
}

func TestGetSessionByPod(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		old := sessionRow("s-old", "o1", "u1", base)
		old.PodName = "pod-a"
		newer := sessionRow("s-new", "o1", "u2", base.Add(time.Minute))
		newer.PodName = "pod-a"
		other := sessionRow("s-other", "o2", "u3", base)
		other.PodName = "pod-b"
		noPod := sessionRow("s-nopod", "o1", "u1", base)
		noPod.PodName = ""
		for _, s := range []models.Session{old, newer, other, noPod} {
			mustCreate(t, d, s)
		}
		got, err := d.GetSessionByPod(ctx, "o1", "pod-a")
		if err != nil || got.ID != "s-new" {
			t.Fatalf("GetSessionByPod(o1, pod-a) = %q, %v; want the newest session s-new", got.ID, err)
		}
		_, err = d.GetSessionByPod(ctx, "o1", "pod-b")
		wantErr(t, err, db.ErrNotFound, "GetSessionByPod(another org's pod)")
		_, err = d.GetSessionByPod(ctx, "o1", "missing")
		wantErr(t, err, db.ErrNotFound, "GetSessionByPod(missing)")
		_, err = d.GetSessionByPod(ctx, "o1", "")
		wantErr(t, err, db.ErrNotFound, "GetSessionByPod(empty)")
	})
}
