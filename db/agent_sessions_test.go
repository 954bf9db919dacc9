package db_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestApplyAgentStatus(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		s := sessionRow("s1", "o1", "u1", base)
		s.State, s.PodName, s.AgentID = models.SessionStatePending, "", "a1"
		mustCreate(t, d, s)

		_, _, err := d.ApplyAgentStatus(ctx, "a2", "s1", "running", "p")
		wantErr(t, err, db.ErrNotFound, "status from another agent")
		_, _, err = d.ApplyAgentStatus(ctx, "a1", "nope", "running", "p")
		wantErr(t, err, db.ErrNotFound, "status of an unknown session")
		if got, _ := d.GetSession(ctx, "s1"); got.State != models.SessionStatePending {
			t.Fatalf("refused reports changed the session: %+v", got)
		}

		before, changed, err := d.ApplyAgentStatus(ctx, "a1", "s1", "running", "pod-1")
		if err != nil || !changed || before.State != models.SessionStatePending || before.OrgID != "o1" || before.UserID != "u1" {
			t.Fatalf("first report: before %+v changed %v err %v", before, changed, err)
		}
		got, _ := d.GetSession(ctx, "s1")
		if got.State != "running" || got.PodName != "pod-1" || !got.UpdatedAt.After(s.UpdatedAt) {
			t.Fatalf("after report: %+v", got)
		}
		if _, changed, err := d.ApplyAgentStatus(ctx, "a1", "s1", "running", ""); err != nil || changed {
			t.Errorf("same state, no pod: changed %v err %v", changed, err)
		}
		if _, changed, _ := d.ApplyAgentStatus(ctx, "a1", "s1", "hibernated", ""); !changed {
			t.Error("a new state was not a change")
		}
		if got, _ := d.GetSession(ctx, "s1"); got.PodName != "pod-1" || got.State != "hibernated" {
			t.Errorf("an empty pod name cleared the pod: %+v", got)
		}

		// Concurrent reports serialize: each sees the state the previous one left.
		var wg sync.WaitGroup
		seen := make(chan string, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				before, changed, err := d.ApplyAgentStatus(ctx, "a1", "s1", fmt.Sprintf("state-%d", i), "")
				if err != nil || !changed {
					t.Errorf("report %d: changed %v err %v", i, changed, err)
					return
				}
				seen <- before.State
			}()
		}
		wg.Wait()
		close(seen)
		olds := map[string]bool{}
		for s := range seen {
			if olds[s] {
				t.Errorf("two reports both replaced state %q: an update was lost", s)
			}
			olds[s] = true
		}
	})
}
