package db_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

// TestConcurrentWriters has 50 goroutines insert 20 sessions each (with a connection and a
// state change per session) at once. On SQLite every write must wait its turn rather than
// fail with SQLITE_BUSY.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		const writers, each = 50, 20
		var wg sync.WaitGroup
		errs := make(chan error, writers*each*3)
		start := make(chan struct{})
		for w := range writers {
			wg.Go(func() {
				<-start
				for i := range each {
					id := fmt.Sprintf("w%02d-%02d", w, i)
					s := sessionRow(id, "o1", fmt.Sprint("u", w), base.Add(time.Duration(w*each+i)*time.Microsecond))
					if err := d.CreateSession(ctx, s); err != nil {
						errs <- err
						continue
					}
					if err := d.AddConnection(ctx, models.Connection{ID: "c-" + id, SessionID: id, OrgID: "o1"}); err != nil {
						errs <- err
					}
					if _, err := d.SetSessionState(ctx, id, models.SessionStateStopped); err != nil {
						errs <- err
					}
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		failed := 0
		for err := range errs {
			if failed++; failed <= 5 {
				t.Errorf("concurrent write: %v", err)
			}
		}
		if failed > 0 {
			t.Fatalf("%d concurrent writes failed", failed)
		}
		all, err := d.ListSessions(ctx, "o1", "")
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != writers*each {
			t.Fatalf("stored %d sessions, want %d", len(all), writers*each)
		}
		for _, s := range all {
			if s.ActiveConnections != 1 || s.State != models.SessionStateStopped {
				t.Fatalf("session %s: connections %d state %s", s.ID, s.ActiveConnections, s.State)
			}
		}
	})
}

// TestConcurrentStateChanges races SetSessionState on one session: every returned old state
// must be one some other call set, and the transitions must chain (no lost update).
func TestConcurrentStateChanges(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		s := sessionRow("s1", "o1", "u1", base)
		s.State = "state-init"
		mustCreate(t, d, s)
		const n = 40
		olds := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				old, err := d.SetSessionState(ctx, "s1", fmt.Sprint("state-", i))
				if err != nil {
					t.Error(err)
				}
				olds[i] = old
			})
		}
		wg.Wait()
		// Each state is replaced at most once, and exactly one (the final one) never is.
		seen := map[string]int{}
		for _, o := range olds {
			seen[o]++
		}
		final, _ := d.GetSession(ctx, "s1")
		if seen[final.State] != 0 {
			t.Errorf("final state %s was also reported as replaced", final.State)
		}
		for st, c := range seen {
			if c != 1 {
				t.Errorf("state %s reported as replaced %d times (lost update)", st, c)
			}
		}
		if seen["state-init"] != 1 {
			t.Errorf("initial state replaced %d times, want 1", seen["state-init"])
		}
	})
}
