package db_test

import (
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

// AnnounceIdle flips once per change, whoever asks first; the flag is read back with the row.
func TestAnnounceIdle(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreate(t, d, sessionRow("s1", "o1", "u1", base))
		for i, step := range []struct{ idle, want bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
			got, err := d.AnnounceIdle(ctx, "s1", step.idle)
			if err != nil || got != step.want {
				t.Fatalf("step %d: AnnounceIdle(%v) = %v, %v; want %v", i, step.idle, got, err, step.want)
			}
		}
		if _, err := d.AnnounceIdle(ctx, "s1", true); err != nil {
			t.Fatal(err)
		}
		if s, _ := d.GetSession(ctx, "s1"); !s.IdleAnnounced {
			t.Fatal("idle_announced not read back")
		}
	})
}

// Connections of a live replica are touched; those of a replica that died are swept; a
// restarted replica forgets its old ones.
func TestConnectionPresence(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreate(t, d, sessionRow("s1", "o1", "u1", base))
		old := base.Add(-time.Hour)
		for _, c := range []models.Connection{
			{ID: "live", SessionID: "s1", OrgID: "o1", Replica: "a", ConnectedAt: old},
			{ID: "dead", SessionID: "s1", OrgID: "o1", Replica: "b", ConnectedAt: old},
			{ID: "mine", SessionID: "s1", OrgID: "o1", Replica: "c", ConnectedAt: base},
		} {
			if err := d.AddConnection(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.TouchConnections(ctx, "a", base); err != nil {
			t.Fatal(err)
		}
		if n, err := d.SweepConnections(ctx, base.Add(-time.Minute)); err != nil || n != 1 {
			t.Fatalf("sweep = %d, %v; want the dead replica's one", n, err)
		}
		if err := d.ForgetConnections(ctx, "c"); err != nil {
			t.Fatal(err)
		}
		if n, _ := d.CountConnections(ctx, "s1"); n != 1 {
			t.Fatalf("%d connections left, want the live one", n)
		}
	})
}
