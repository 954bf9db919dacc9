package websocket

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// metricsServer serves m's metrics socket with the caller's OrgContext from the query.
func metricsServer(t *testing.T, m *Manager) string {
	t.Helper()
	return socketServer(t, func(conn *websocket.Conn, q url.Values) {
		m.HandleMetricsWebSocketWithOrg(conn, &OrgContext{OrgID: q.Get("org"), UserID: q.Get("user"), Role: q.Get("role")})
	})
}

// An operator gets its organization's counts at once and then every interval; the counts
// are its organization's, with the shared agents; a user is refused with 1008.
func TestMetricsSocket(t *testing.T) {
	ctx := context.Background()
	d := dbtest.Open(t, "sqlite")
	for _, s := range []models.Session{
		{ID: "a1", OrgID: "o1", UserID: "u", State: models.SessionStateRunning, Namespace: "ns"},
		{ID: "a2", OrgID: "o1", UserID: "u", State: models.SessionStateHibernated, Namespace: "ns"},
		{ID: "b1", OrgID: "o2", UserID: "v", State: models.SessionStateRunning, Namespace: "ns"},
	} {
		if err := d.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.AddConnection(ctx, models.Connection{ID: "c1", SessionID: "a1", OrgID: "o1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.CreateAgent(ctx, models.Agent{ID: "shared", Platform: "docker"}); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, d, Config{MetricsInterval: 30 * time.Millisecond})
	base := metricsServer(t, m)

	conn := dial(t, base, params("org", "o1", "user", "ops", "role", "operator"))
	f := readUntilType(t, conn, "metrics_update")
	if f.str("org_id") != "o1" {
		t.Fatalf("metrics for %v", f)
	}
	got := f["metrics"].(map[string]any)
	sessions := got["sessions"].(map[string]any)
	agents := got["agents"].(map[string]any)
	if sessions["running"] != float64(1) || sessions["hibernated"] != float64(1) || sessions["total"] != float64(2) ||
		got["activeConnections"] != float64(1) || agents["online"] != float64(0) || agents["total"] != float64(1) {
		t.Fatalf("metrics of o1 = %v", got)
	}
	// The next ones come by themselves, and follow changes.
	if err := d.CreateSession(ctx, models.Session{ID: "a3", OrgID: "o1", UserID: "u", State: models.SessionStateRunning, Namespace: "ns"}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "a periodic update with the new session", func() bool {
		f := readUntilType(t, conn, "metrics_update")
		return f["metrics"].(map[string]any)["sessions"].(map[string]any)["total"] == float64(3)
	})

	user := dial(t, base, params("org", "o1", "user", "u", "role", "user"))
	if code, _ := expectClose(t, user, 5*time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("a user's metrics socket closed with %d, want 1008", code)
	}
}
