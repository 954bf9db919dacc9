package db_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestAgentCRUD(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		hb := base.Add(time.Minute)
		full := models.Agent{
			ID: "a1", OrgID: "o1", Platform: "kubernetes", Region: "eu-west", Status: models.AgentStatusOnline,
			ApprovalStatus: models.ApprovalApproved, APIKeyHash: "hash-1",
			Capacity: map[string]any{"cpu": 8.0, "sessions": 20.0}, Metadata: map[string]any{"version": "1.2"},
			Replica: "r1", ConnectionID: "conn-1", LastHeartbeat: &hb,
			CreatedAt: base, UpdatedAt: base.Add(time.Second),
		}
		mustCreateAgent(t, d, full)
		wantErr(t, d.CreateAgent(ctx, models.Agent{ID: "a1", OrgID: "o2"}), db.ErrConflict, "CreateAgent(duplicate)")
		if err := d.CreateAgent(ctx, models.Agent{}); err == nil {
			t.Error("CreateAgent without id succeeded")
		}

		got, err := d.GetAgent(ctx, "a1")
		if err != nil {
			t.Fatal(err)
		}
		want := full
		wantHB := hb.Truncate(time.Microsecond)
		want.LastHeartbeat = &wantHB
		want.CreatedAt, want.UpdatedAt = base.Truncate(time.Microsecond), base.Add(time.Second).Truncate(time.Microsecond)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GetAgent =\n %+v\nwant\n %+v", got, want)
		}
		_, err = d.GetAgent(ctx, "missing")
		wantErr(t, err, db.ErrNotFound, "GetAgent(missing)")

		// Defaults: offline, pending, created now, updated at creation, "{}" maps, no heartbeat.
		before := time.Now().Add(-time.Second)
		mustCreateAgent(t, d, models.Agent{ID: "a2"})
		a2, err := d.GetAgent(ctx, "a2")
		if err != nil {
			t.Fatal(err)
		}
		if a2.Status != models.AgentStatusOffline || a2.ApprovalStatus != models.ApprovalPending ||
			a2.LastHeartbeat != nil || a2.CreatedAt.Before(before) || !a2.UpdatedAt.Equal(a2.CreatedAt) ||
			a2.Capacity == nil || len(a2.Capacity) != 0 || a2.Metadata == nil || len(a2.Metadata) != 0 {
			t.Errorf("agent with defaults = %+v", a2)
		}

		// Re-registration replaces platform, region, capacity and metadata only.
		if err := d.UpdateAgentRegistration(ctx, "a1", "docker", "us-east", map[string]any{"cpu": 4.0}, nil); err != nil {
			t.Fatal(err)
		}
		got, _ = d.GetAgent(ctx, "a1")
		want.Platform, want.Region = "docker", "us-east"
		want.Capacity, want.Metadata = map[string]any{"cpu": 4.0}, map[string]any{}
		if !got.UpdatedAt.After(want.UpdatedAt) {
			t.Errorf("re-registration did not advance updated_at: %v", got.UpdatedAt)
		}
		want.UpdatedAt = got.UpdatedAt
		if !reflect.DeepEqual(got, want) {
			t.Errorf("after UpdateAgentRegistration =\n %+v\nwant\n %+v", got, want)
		}
		wantErr(t, d.UpdateAgentRegistration(ctx, "missing", "p", "r", nil, nil), db.ErrNotFound, "UpdateAgentRegistration(missing)")
	})
}

func TestSetAgentApproval(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreateAgent(t, d, models.Agent{ID: "a1", APIKeyHash: "old", CreatedAt: base})
		if err := d.SetAgentApproval(ctx, "a1", models.ApprovalApproved, "new"); err != nil {
			t.Fatal(err)
		}
		got, _ := d.GetAgent(ctx, "a1")
		if got.ApprovalStatus != models.ApprovalApproved || got.APIKeyHash != "new" || !got.UpdatedAt.After(base) {
			t.Errorf("after approval with key: %+v", got)
		}
		// Without a key hash the stored one is kept.
		if err := d.SetAgentApproval(ctx, "a1", models.ApprovalRejected, ""); err != nil {
			t.Fatal(err)
		}
		got, _ = d.GetAgent(ctx, "a1")
		if got.ApprovalStatus != models.ApprovalRejected || got.APIKeyHash != "new" {
			t.Errorf("after rejection without key: %+v", got)
		}
		wantErr(t, d.SetAgentApproval(ctx, "missing", models.ApprovalApproved, "k"), db.ErrNotFound, "SetAgentApproval(missing)")
		if err := d.SetAgentApproval(ctx, "a1", "", ""); err == nil {
			t.Error("SetAgentApproval with an empty status succeeded")
		}
	})
}

func TestListAndCountAgentsByOrg(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		// An empty table lists an empty, non-nil slice and counts zeros.
		list, err := d.ListAgents(ctx, "o1")
		if err != nil || list == nil || len(list) != 0 {
			t.Errorf("ListAgents on an empty table = %v, %v", list, err)
		}
		if online, total, err := d.CountAgents(ctx, "o1"); err != nil || online != 0 || total != 0 {
			t.Errorf("CountAgents on an empty table = %d, %d, %v", online, total, err)
		}
		// Created out of id order; "shared-*" serve every org.
		for _, a := range []models.Agent{
			{ID: "o2-a", OrgID: "o2", Status: models.AgentStatusOnline},
			{ID: "shared-b", Status: models.AgentStatusDraining},
			{ID: "o1-b", OrgID: "o1"},
			{ID: "o1-a", OrgID: "o1", Status: models.AgentStatusOnline},
			{ID: "shared-a"},
		} {
			mustCreateAgent(t, d, a)
		}
		cases := []struct {
			org           string
			want          []string
			online, total int
		}{
			{"o1", []string{"o1-a", "o1-b", "shared-a", "shared-b"}, 2, 4},
			{"o2", []string{"o2-a", "shared-a", "shared-b"}, 2, 3},
			{"o3", []string{"shared-a", "shared-b"}, 1, 2},
			{"", []string{"o1-a", "o1-b", "o2-a", "shared-a", "shared-b"}, 3, 5},
		}
		for _, c := range cases {
			list, err := d.ListAgents(ctx, c.org)
			if err != nil {
				t.Fatal(err)
			}
			if got := agentIDs(list); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("ListAgents(%q) = %v, want %v", c.org, got, c.want)
			}
			online, total, err := d.CountAgents(ctx, c.org)
			if err != nil || online != c.online || total != c.total {
				t.Errorf("CountAgents(%q) = %d, %d, %v; want %d, %d", c.org, online, total, err, c.online, c.total)
			}
		}
	})
}

// TestAgentConnectionOwnership replaces an agent's connection and checks that the old
// connection's late cleanup cannot take the new one offline.
func TestAgentConnectionOwnership(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		mustCreateAgent(t, d, models.Agent{ID: "a1", CreatedAt: base})
		t1, t2 := base.Add(time.Minute), base.Add(2*time.Minute)
		if err := d.MarkAgentOnline(ctx, "a1", "r1", "c1", t1); err != nil {
			t.Fatal(err)
		}
		a := mustGetAgent(t, d, "a1")
		if a.Status != models.AgentStatusOnline || a.Replica != "r1" || a.ConnectionID != "c1" ||
			!heartbeatAt(a, t1) || !a.UpdatedAt.Equal(t1.Truncate(time.Microsecond)) {
			t.Fatalf("after MarkAgentOnline(c1): %+v", a)
		}
		// The agent reconnects through another replica before c1's cleanup runs.
		if err := d.MarkAgentOnline(ctx, "a1", "r2", "c2", t2); err != nil {
			t.Fatal(err)
		}
		for _, stale := range []string{"c1", "", "never"} {
			changed, err := d.MarkAgentOffline(ctx, "a1", stale, t2.Add(time.Second))
			if err != nil || changed {
				t.Errorf("MarkAgentOffline(%q) = %v, %v; want false", stale, changed, err)
			}
		}
		a = mustGetAgent(t, d, "a1")
		if a.Status != models.AgentStatusOnline || a.Replica != "r2" || a.ConnectionID != "c2" {
			t.Fatalf("a stale cleanup changed the agent: %+v", a)
		}
		changed, err := d.MarkAgentOffline(ctx, "a1", "c2", t2.Add(time.Minute))
		if err != nil || !changed {
			t.Fatalf("MarkAgentOffline(c2) = %v, %v; want true", changed, err)
		}
		a = mustGetAgent(t, d, "a1")
		if a.Status != models.AgentStatusOffline || a.Replica != "" || a.ConnectionID != "" || !heartbeatAt(a, t2) {
			t.Errorf("after MarkAgentOffline(c2): %+v (last heartbeat must be kept)", a)
		}
		changed, err = d.MarkAgentOffline(ctx, "a1", "c2", t2.Add(time.Hour))
		if err != nil || changed {
			t.Errorf("second MarkAgentOffline(c2) = %v, %v; want false", changed, err)
		}
		wantErr(t, d.MarkAgentOnline(ctx, "missing", "r1", "c1", t1), db.ErrNotFound, "MarkAgentOnline(missing)")
		if changed, err := d.MarkAgentOffline(ctx, "missing", "c1", t1); err != nil || changed {
			t.Errorf("MarkAgentOffline(missing) = %v, %v", changed, err)
		}
	})
}

func TestRecordAgentHeartbeats(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		capacity := map[string]any{"sessions": 10.0}
		for _, id := range []string{"a1", "a2", "a3", "a4"} {
			mustCreateAgent(t, d, models.Agent{ID: id, Capacity: capacity, CreatedAt: base})
			if err := d.MarkAgentOnline(ctx, id, "r1", "c-"+id, base); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.RecordAgentHeartbeats(ctx, nil); err != nil {
			t.Errorf("empty batch: %v", err)
		}
		t1, t2 := base.Add(10*time.Second), base.Add(20*time.Second)
		err := d.RecordAgentHeartbeats(ctx, []db.AgentHeartbeat{
			// a1: two beats in one batch; the later one wins, the out-of-order older one is ignored.
			{AgentID: "a1", ConnectionID: "c-a1", At: t2, Status: models.AgentStatusDraining, Capacity: map[string]any{"sessions": 3.0}},
			{AgentID: "a1", ConnectionID: "c-a1", At: t1, Status: models.AgentStatusOnline, Capacity: map[string]any{"sessions": 9.0}},
			// a2: a beat from a replaced connection changes nothing.
			{AgentID: "a2", ConnectionID: "c-old", At: t2, Status: models.AgentStatusDraining, Capacity: map[string]any{}},
			// a3: empty status is online, nil capacity keeps the stored one.
			{AgentID: "a3", ConnectionID: "c-a3", At: t1},
			// unknown agent: ignored.
			{AgentID: "ghost", ConnectionID: "c-ghost", At: t1},
		})
		if err != nil {
			t.Fatal(err)
		}
		a1 := mustGetAgent(t, d, "a1")
		if !heartbeatAt(a1, t2) || a1.Status != models.AgentStatusDraining || a1.Capacity["sessions"] != 3.0 {
			t.Errorf("a1 = %+v; want heartbeat %v, draining, 3 sessions", a1, t2)
		}
		a2 := mustGetAgent(t, d, "a2")
		if !heartbeatAt(a2, base) || a2.Status != models.AgentStatusOnline || a2.Capacity["sessions"] != 10.0 {
			t.Errorf("stale connection's beat changed a2: %+v", a2)
		}
		a3 := mustGetAgent(t, d, "a3")
		if !heartbeatAt(a3, t1) || a3.Status != models.AgentStatusOnline || a3.Capacity["sessions"] != 10.0 {
			t.Errorf("a3 = %+v; want heartbeat %v, online, capacity kept", a3, t1)
		}

		// A later flush carrying an older beat never moves last_heartbeat backwards.
		if err := d.RecordAgentHeartbeats(ctx, []db.AgentHeartbeat{{AgentID: "a1", ConnectionID: "c-a1", At: t1}}); err != nil {
			t.Fatal(err)
		}
		if a1 := mustGetAgent(t, d, "a1"); !heartbeatAt(a1, t2) || a1.Status != models.AgentStatusDraining {
			t.Errorf("older beat moved a1 back: %+v", a1)
		}

		// An offline agent (connection_id '') takes no beat, not even one without a connection.
		if ok, err := d.MarkAgentOffline(ctx, "a4", "c-a4", t1); !ok || err != nil {
			t.Fatalf("MarkAgentOffline(a4) = %v, %v", ok, err)
		}
		if err := d.RecordAgentHeartbeats(ctx, []db.AgentHeartbeat{{AgentID: "a4", At: t2}}); err != nil {
			t.Fatal(err)
		}
		if a4 := mustGetAgent(t, d, "a4"); a4.Status != models.AgentStatusOffline || !heartbeatAt(a4, base) {
			t.Errorf("beat without connection changed an offline agent: %+v", a4)
		}

		// A bad status fails the whole batch before anything is written.
		err = d.RecordAgentHeartbeats(ctx, []db.AgentHeartbeat{
			{AgentID: "a3", ConnectionID: "c-a3", At: t2.Add(time.Minute)},
			{AgentID: "a1", ConnectionID: "c-a1", At: t2.Add(time.Minute), Status: models.AgentStatusOffline},
		})
		if err == nil {
			t.Error("batch with status offline succeeded")
		}
		if a3 := mustGetAgent(t, d, "a3"); !heartbeatAt(a3, t1) {
			t.Errorf("failed batch wrote a3: %+v", a3)
		}
	})
}

func mustCreateAgent(t *testing.T, d *db.Database, a models.Agent) {
	t.Helper()
	if err := d.CreateAgent(t.Context(), a); err != nil {
		t.Fatalf("CreateAgent(%s): %v", a.ID, err)
	}
}

func mustGetAgent(t *testing.T, d *db.Database, id string) models.Agent {
	t.Helper()
	a, err := d.GetAgent(t.Context(), id)
	if err != nil {
		t.Fatalf("GetAgent(%s): %v", id, err)
	}
	return a
}

// heartbeatAt reports whether the agent's last heartbeat is at, to the stored microsecond.
func heartbeatAt(a models.Agent, at time.Time) bool {
	return a.LastHeartbeat != nil && a.LastHeartbeat.Equal(at.Truncate(time.Microsecond))
}

func agentIDs(as []models.Agent) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.ID
	}
	return out
}
