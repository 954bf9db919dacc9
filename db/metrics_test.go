package db_test

import (
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

// OrgMetrics counts the organization's own sessions and connections, and its agents plus the
// shared ones; nothing of another organization.
func TestOrgMetrics(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		running := sessionRow("r1", "o1", "u1", base)
		running.State = models.SessionStateRunning
		hib := sessionRow("h1", "o1", "u1", base)
		hib.State = models.SessionStateHibernated
		other := sessionRow("x1", "o2", "u9", base)
		other.State = models.SessionStateRunning
		pending := sessionRow("p1", "o1", "u2", base)
		pending.State = models.SessionStatePending
		mustCreate(t, d, running, hib, pending, other)
		for _, c := range []models.Connection{
			{ID: "c1", SessionID: "r1", OrgID: "o1"}, {ID: "c2", SessionID: "r1", OrgID: "o1"},
			{ID: "c3", SessionID: "x1", OrgID: "o2"},
		} {
			if err := d.AddConnection(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		for _, a := range []models.Agent{
			{ID: "own", OrgID: "o1", Platform: "docker"}, {ID: "shared", Platform: "docker"},
			{ID: "theirs", OrgID: "o2", Platform: "docker"},
		} {
			if err := d.CreateAgent(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.MarkAgentOnline(ctx, "shared", "r", "conn", base); err != nil {
			t.Fatal(err)
		}
		if err := d.MarkAgentOnline(ctx, "theirs", "r", "conn", base); err != nil {
			t.Fatal(err)
		}
		got, err := d.OrgMetrics(ctx, "o1")
		if err != nil {
			t.Fatal(err)
		}
		want := models.OrgMetrics{SessionsRunning: 1, SessionsHibernated: 1, SessionsTotal: 3,
			ActiveConnections: 2, AgentsOnline: 1, AgentsTotal: 2}
		if got != want {
			t.Fatalf("metrics of o1 = %+v, want %+v", got, want)
		}
		if empty, err := d.OrgMetrics(ctx, "nobody"); err != nil || empty.SessionsTotal != 0 || empty.AgentsTotal != 1 {
			t.Fatalf("metrics of an empty org = %+v, %v; want only the shared agent", empty, err)
		}
	})
}
