package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

// TestDashboardRoutes checks what the server adds for the dashboard: the page at /, its files
// below /ui/, and GET /api/v1/me, which tells a browser why its token is refused.
func TestDashboardRoutes(t *testing.T) {
	ts := startServer(t, "sqlite")
	get := func(path, bearer string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, ts.base+path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(body)
	}
	if status, h, body := get("/", ""); status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, "StreamSpace Realtime") {
		t.Fatalf("GET /: %d %s", status, h.Get("Content-Type"))
	}
	if status, _, _ := get("/ui/streamspace-realtime.js", ""); status != http.StatusOK {
		t.Fatalf("GET the client module: %d", status)
	}
	// Not a development server: no token for anyone.
	if status, _, body := get("/ui/config.json", ""); status != http.StatusOK || strings.Contains(body, "devToken") {
		t.Fatalf("GET /ui/config.json: %d %s", status, body)
	}
	for path, code := range map[string]string{"/ui/missing.js": "not_found", "/index.html": "not_found", "/api/v1/me": "missing_token"} {
		status, _, body := get(path, "")
		var e errorBody
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != code || status/100 != 4 {
			t.Fatalf("GET %s: %d %s, want %s", path, status, body, code)
		}
	}

	expired, err := auth.Mint([]byte(testSecret), auth.Identity{UserID: "u1", OrgID: "o1"}, time.Minute, time.Now().Add(-2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for tok, code := range map[string]string{"not-a-jwt": "invalid_token", expired: "token_expired"} {
		status, _, body := get("/api/v1/me", tok)
		var e errorBody
		if err := json.Unmarshal([]byte(body), &e); err != nil || status != http.StatusUnauthorized || e.Error != code {
			t.Fatalf("GET /api/v1/me with a bad token: %d %s, want 401 %s", status, body, code)
		}
	}
	status, _, body := get("/api/v1/me", mint(t, "u1", "o1", auth.RoleOperator, time.Hour))
	var me struct {
		UserID, OrgID, Role string
		ExpiresAt           time.Time
	}
	if err := json.Unmarshal([]byte(body), &me); err != nil || status != http.StatusOK || me.UserID != "u1" || me.OrgID != "o1" ||
		me.Role != "operator" || time.Until(me.ExpiresAt) < 59*time.Minute {
		t.Fatalf("GET /api/v1/me: %d %s", status, body)
	}
	if status, _ := ts.post(t, "/api/v1/me", "", "{}"); status != http.StatusMethodNotAllowed {
		t.Fatalf("POST /api/v1/me: %d, want 405", status)
	}
	// A query-string token is not read here: this is not an upgrade, and the query would be
	// the place a token leaks from.
	if status, _, _ := get("/api/v1/me?token="+mint(t, "u1", "o1", auth.RoleUser, time.Hour), ""); status != http.StatusUnauthorized {
		t.Fatalf("GET /api/v1/me?token=: %d, want 401", status)
	}
}
