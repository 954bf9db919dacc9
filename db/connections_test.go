package db_test

import (
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestConnections(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreate(t, d, sessionRow("s1", "o1", "u1", base), sessionRow("s2", "o2", "u1", base))

		count := func(id string) int {
			t.Helper()
			n, err := d.CountConnections(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		c := models.Connection{ID: "c1", SessionID: "s1", UserID: "u1", OrgID: "o1", ClientIP: "10.0.0.1",
			UserAgent: "test", Replica: "r1", ConnectedAt: base}
		if err := d.AddConnection(ctx, c); err != nil {
			t.Fatal(err)
		}
		wantErr(t, d.AddConnection(ctx, c), db.ErrConflict, "AddConnection(duplicate)")
		if err := d.AddConnection(ctx, models.Connection{ID: "c2", SessionID: "s1", UserID: "u2", OrgID: "o1"}); err != nil {
			t.Fatal(err)
		}
		if n := count("s1"); n != 2 {
			t.Errorf("CountConnections = %d, want 2", n)
		}

		var hb, at string
		if err := d.SQL().QueryRowContext(ctx, d.Expand("SELECT CAST(last_heartbeat AS TEXT), CAST(connected_at AS TEXT) FROM {connections} WHERE id = 'c1'")).Scan(&hb, &at); err != nil {
			t.Fatal(err)
		}
		if hb != at {
			t.Errorf("zero LastHeartbeat stored %s, want ConnectedAt %s", hb, at)
		}

		wantErr(t, d.AddConnection(ctx, models.Connection{ID: "c3", SessionID: "missing", OrgID: "o1"}),
			db.ErrNotFound, "AddConnection(missing session)")
		// A connection claiming another org than its session's is refused, and not counted.
		wantErr(t, d.AddConnection(ctx, models.Connection{ID: "c4", SessionID: "s2", OrgID: "o1"}),
			db.ErrNotFound, "AddConnection(wrong org)")
		if n := count("s2"); n != 0 {
			t.Errorf("cross-org connection counted: %d", n)
		}

		if err := d.RemoveConnection(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
		if err := d.RemoveConnection(ctx, "c1"); err != nil {
			t.Errorf("RemoveConnection(twice) = %v, want nil", err)
		}
		if n := count("s1"); n != 1 {
			t.Errorf("after remove CountConnections = %d, want 1", n)
		}
		if err := d.DeleteSession(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		if n := count("s1"); n != 0 {
			t.Errorf("connections survived DeleteSession: %d", n)
		}
		if n := count("nobody"); n != 0 {
			t.Errorf("CountConnections(unknown) = %d", n)
		}
	})
}
