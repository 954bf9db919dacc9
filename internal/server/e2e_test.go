package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

// TestSessionsSocketEndToEnd: a browser connects with a token, gets the
// `connected` frame and its snapshot from the database, then receives the
// events a service publishes for it, and nothing that is not its.
func TestSessionsSocketEndToEnd(t *testing.T) {
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) { testEndToEnd(t, dialect) })
	}
}

func seedSessions(t *testing.T, ts *testServer) {
	t.Helper()
	ctx := context.Background()
	d := ts.Database()
	if err := d.UpsertOrganization(ctx, models.Organization{ID: "org-a", Name: "A", K8sNamespace: "ns-a"}); err != nil {
		t.Fatal(err)
	}
	created := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	for _, s := range []models.Session{
		{ID: "alice-firefox", OrgID: "org-a", UserID: "alice", Namespace: "ns-a", Template: "firefox-browser", State: "running",
			PodName: "alice-firefox-0", URL: "https://a/alice", CPU: "1000m", Memory: "2Gi", Platform: "kubernetes", AgentID: "k8s-1",
			IdleTimeoutSeconds: 300, LastActivity: created, CreatedAt: created},
		{ID: "bob-vscode", OrgID: "org-a", UserID: "bob", Namespace: "ns-a", Template: "vscode", State: "hibernated", CreatedAt: created.Add(time.Second)},
		{ID: "eve-term", OrgID: "org-b", UserID: "alice", Namespace: "ns-b", Template: "terminal", State: "running", CreatedAt: created},
	} {
		if err := d.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.ShareSession(ctx, "bob-vscode", "alice", []string{"view"}); err != nil {
		t.Fatal(err)
	}
}

func testEndToEnd(t *testing.T, dialect string) {
	ts := startServer(t, dialect)
	seedSessions(t, ts)
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	admin := mint(t, "root", "org-a", auth.RoleAdmin, time.Hour)

	// Alice, subscribed to bob's session shared with her, with the token in the header.
	conn, status, code := ts.dialWS(t, "/api/v1/ws/sessions?session_id=bob-vscode",
		http.Header{"Authorization": {"Bearer " + alice}})
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("refused: %d %s", status, code)
	}
	first := readWS(t, conn)
	if first.str("type") != "connected" || first.str("clientId") == "" || first.str("epoch") == "" || first["recovered"] != false {
		t.Fatalf("first frame %v", first)
	}
	snap := readWS(t, conn)
	if snap.str("type") != "sessions_update" || snap.str("org_id") != "org-a" || snap["count"] != float64(2) {
		t.Fatalf("snapshot %v", snap)
	}
	var names []string
	for _, raw := range snap["sessions"].([]any) {
		s := raw.(map[string]any)
		names = append(names, s["name"].(string))
		if s["name"] == "alice-firefox" {
			status := s["status"].(map[string]any)
			resources := s["resources"].(map[string]any)
			if s["state"] != "running" || status["phase"] != "Running" || status["podName"] != "alice-firefox-0" ||
				resources["cpu"] != "1000m" || s["agent_id"] != "k8s-1" || s["user"] != "alice" ||
				s["idleThreshold"] != float64(300) || s["isIdle"] != true || s["isActive"] != false || s["namespace"] != "ns-a" {
				t.Fatalf("session view %v", s)
			}
			if d, _ := s["idleDuration"].(float64); d < 600 {
				t.Fatalf("idleDuration %v, want ≥ 600", s["idleDuration"])
			}
		}
	}
	if !slices.Equal(names, []string{"alice-firefox", "bob-vscode"}) {
		t.Fatalf("alice sees %v", names)
	}
	// Opening bob's shared session counts as a connection to it, announced to its subscribers.
	joined := readWS(t, conn)
	if data, _ := joined["data"].(map[string]any); joined.str("type") != "session.connected" || joined.str("sessionId") != "bob-vscode" ||
		joined.str("userId") != "bob" || joined["offset"] != float64(1) || data["connectionId"] != first.str("clientId") || data["user"] != "alice" {
		t.Fatalf("connection announcement %v", joined)
	}

	// The admin of org-a sees the whole org and every event of it.
	adminConn, _, _ := ts.dialWS(t, "/ws/sessions?token="+admin, nil)
	readWS(t, adminConn)
	if snap := readWS(t, adminConn); snap["count"] != float64(2) {
		t.Fatalf("admin snapshot %v", snap)
	}

	publish := func(body string) {
		t.Helper()
		if status, eb := ts.post(t, "/api/v1/events", testService, body); status != http.StatusAccepted {
			t.Fatalf("publish %s: %d %+v", body, status, eb)
		}
	}
	publish(`{"orgId":"org-b","type":"session.created","sessionId":"eve-term","userId":"alice"}`) // same user id, other org
	publish(`{"orgId":"org-a","type":"session.updated","sessionId":"carol-x","userId":"carol"}`)  // not alice's
	publish(`{"orgId":"org-a","type":"session.state.changed","sessionId":"alice-firefox","userId":"alice","data":{"oldState":"running","newState":"hibernated"}}`)
	publish(`{"orgId":"org-a","type":"session.connected","sessionId":"bob-vscode","userId":"bob","timestamp":"2026-11-26T10:30:00Z"}`) // via the shared-session subscription
	if status, eb := ts.post(t, "/api/v1/orgs/org-a/broadcast", admin, `{"type":"maintenance","message":"at noon"}`); status != http.StatusAccepted {
		t.Fatalf("broadcast: %d %+v", status, eb)
	}

	ev := readWS(t, conn)
	if ev.str("type") != "session.state.changed" || ev.str("sessionId") != "alice-firefox" || ev.str("userId") != "alice" ||
		ev["offset"] != float64(3) || ev.str("epoch") != first.str("epoch") || ev.str("timestamp") == "" {
		t.Fatalf("event %v", ev)
	}
	if data := ev["data"].(map[string]any); data["oldState"] != "running" || data["newState"] != "hibernated" {
		t.Fatalf("event data %v", data)
	}
	ev = readWS(t, conn)
	if ev.str("type") != "session.connected" || ev.str("timestamp") != "2026-11-26T10:30:00Z" || ev["offset"] != float64(4) {
		t.Fatalf("shared-session event %v", ev)
	}
	if ev = readWS(t, conn); ev.str("type") != "maintenance" || ev["offset"] != float64(5) {
		t.Fatalf("broadcast frame %v", ev)
	}
	var adminTypes []string
	for i := 0; i < 4; i++ {
		adminTypes = append(adminTypes, readWS(t, adminConn).str("type"))
	}
	if want := []string{"session.updated", "session.state.changed", "session.connected", "maintenance"}; !slices.Equal(adminTypes, want) {
		t.Fatalf("admin got %v, want %v", adminTypes, want)
	}

	// Shutdown: readiness goes, every browser gets its close 1001.
	ts.stop()
	if code := closeCode(t, conn, 5*time.Second); code != gorilla.CloseGoingAway {
		t.Fatalf("close on shutdown: %d, want 1001", code)
	}
	rec := httptest.NewRecorder()
	ts.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz after shutdown: %d", rec.Code)
	}
}

func TestTokenExpiryClosesOpenSocket(t *testing.T) {
	ts := startServer(t, "sqlite")
	tok := mint(t, "alice", "org-a", auth.RoleUser, 1500*time.Millisecond)
	conn, status, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+tok, nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("refused: %d", status)
	}
	if code := closeCode(t, conn, 10*time.Second); code != 4003 {
		t.Fatalf("close code %d, want 4003", code)
	}
}

func TestAllowedOriginAccepted(t *testing.T) {
	ts := startServer(t, "sqlite", func(c *Config) { c.AllowedOrigins = []string{"https://app.example"} })
	tok := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	for origin, want := range map[string]int{"https://app.example": 101, "https://other.example": 403} {
		_, status, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+tok, http.Header{"Origin": {origin}})
		if status != want {
			t.Fatalf("origin %s: %d, want %d", origin, status, want)
		}
	}
}
