package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

// The metrics socket and its aliases: operators and admins get their organization's
// metrics_update; a user is refused with 403 before the upgrade, a missing token with 401.
func TestMetricsSocketRoute(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite")
	if err := ts.Database().CreateSession(t.Context(), models.Session{ID: "s1", OrgID: "acme", UserID: "u",
		State: models.SessionStateRunning, Namespace: "ns"}); err != nil {
		t.Fatal(err)
	}
	bearer := func(role auth.Role) http.Header {
		return http.Header{"Authorization": {"Bearer " + mint(t, "x", "acme", role, time.Hour)}}
	}
	for _, path := range []string{"/api/v1/ws/cluster", "/api/v1/ws/metrics", "/ws/metrics"} {
		conn, code, _ := ts.dialWS(t, path, bearer(auth.RoleOperator))
		if code != http.StatusSwitchingProtocols {
			t.Fatalf("%s as operator: %d", path, code)
		}
		f := readWS(t, conn)
		m, _ := f["metrics"].(map[string]any)
		if f.str("type") != "metrics_update" || f.str("org_id") != "acme" || m["sessions"].(map[string]any)["running"] != float64(1) {
			t.Fatalf("%s: first frame %v", path, f)
		}
	}
	if _, code, errCode := ts.dialWS(t, "/api/v1/ws/cluster", bearer(auth.RoleUser)); code != http.StatusForbidden || errCode != "forbidden_role" {
		t.Fatalf("user: %d %s, want 403 forbidden_role", code, errCode)
	}
	if _, code, _ := ts.dialWS(t, "/api/v1/ws/cluster", nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", code)
	}
}
