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

// TestDevTokenRefusedToRebindingNames plays a DNS-rebinding page against a development server:
// evil.example resolved to 127.0.0.1, so the browser's requests come from loopback with Host
// and Origin both naming evil.example. /ui/config.json keeps the token from it, and its
// WebSocket upgrade is refused for its Origin, while the server's own names (localhost and
// loopback addresses) still get both. A production server keeps the same-host rule for any
// name it is reached by.
func TestDevTokenRefusedToRebindingNames(t *testing.T) {
	dev := startServer(t, "sqlite", func(c *Config) { c.Dev = true })
	dev.SetDevToken("dev-jwt")
	port := dev.base[strings.LastIndex(dev.base, ":")+1:]
	devToken := func(host string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, dev.base+"/ui/config.json", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var c struct{ DevToken string }
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /ui/config.json with Host %s: %d %v", host, resp.StatusCode, err)
		}
		return c.DevToken
	}
	for host, want := range map[string]string{
		"evil.example:" + port: "", "evil.example": "", "localhost.evil.example:" + port: "",
		"10.1.2.3:" + port: "", "0.0.0.0:" + port: "",
		"localhost:" + port: "dev-jwt", "LOCALHOST:" + port: "dev-jwt", "127.0.0.1:" + port: "dev-jwt",
		"127.0.0.2": "dev-jwt", "[::1]:" + port: "dev-jwt",
	} {
		if got := devToken(host); got != want {
			t.Errorf("Host %s from loopback: devToken %q, want %q", host, got, want)
		}
	}

	tok := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	upgrade := func(ts *testServer, host, origin string) int {
		t.Helper()
		_, status, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+tok, http.Header{"Host": {host}, "Origin": {origin}})
		return status
	}
	for _, tc := range []struct {
		host, origin string
		want         int
	}{
		{"evil.example:" + port, "http://evil.example:" + port, http.StatusForbidden},
		{"evil.example", "http://evil.example", http.StatusForbidden},
		{"localhost:" + port, "http://localhost:" + port, http.StatusSwitchingProtocols},
		{"127.0.0.1:" + port, "http://127.0.0.1:" + port, http.StatusSwitchingProtocols},
		{"[::1]:" + port, "http://[::1]:" + port, http.StatusSwitchingProtocols},
		// A phone on the developer's network, by address: no name to rebind.
		{"192.168.1.20:" + port, "http://192.168.1.20:" + port, http.StatusSwitchingProtocols},
		{"localhost:" + port, "http://evil.example:" + port, http.StatusForbidden},
	} {
		if got := upgrade(dev, tc.host, tc.origin); got != tc.want {
			t.Errorf("dev server, Host %s, Origin %s: %d, want %d", tc.host, tc.origin, got, tc.want)
		}
	}
	// A name the developer lists is allowed on a development server too.
	listed := startServer(t, "sqlite", func(c *Config) { c.Dev = true; c.AllowedOrigins = []string{"http://devbox.lan:" + port} })
	if got := upgrade(listed, "devbox.lan:"+port, "http://devbox.lan:"+port); got != http.StatusSwitchingProtocols {
		t.Errorf("dev server, listed origin: %d, want 101", got)
	}
	// Production: the dashboard reached by its public name, with nothing configured.
	prod := startServer(t, "sqlite")
	for host, origin := range map[string]string{
		"rt.example.com": "https://rt.example.com", "rt.example.com:8443": "https://rt.example.com:8443",
		"127.0.0.1:" + port: "http://127.0.0.1:" + port,
	} {
		if got := upgrade(prod, host, origin); got != http.StatusSwitchingProtocols {
			t.Errorf("production server, Host %s, Origin %s: %d, want 101", host, origin, got)
		}
	}
	if got := upgrade(prod, "rt.example.com", "https://evil.example"); got != http.StatusForbidden {
		t.Errorf("production server, foreign Origin: %d, want 403", got)
	}
}
