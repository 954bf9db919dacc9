package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

// TestSecretsNeverLogged runs every way a secret reaches the server, accepted and refused,
// at the debug log level, and checks that none of them appears in the logs: browser tokens
// in the query and the header (good, expired, forged), the service token (right and wrong),
// the bootstrap key, agents' own keys (issued, presented, presented for another agent) and
// the JWT secret itself.
func TestSecretsNeverLogged(t *testing.T) {
	ts := startServer(t, "sqlite", withBootstrap(true), func(c *Config) { c.LogLevel = "debug" })
	good := mint(t, "u1", "o1", auth.RoleAdmin, time.Hour)
	short := mint(t, "u2", "o1", auth.RoleUser, 1500*time.Millisecond)
	forged, err := auth.Mint([]byte(strings.Repeat("f", 40)), auth.Identity{UserID: "u1", OrgID: "o1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"good token": good, "short token": short, "forged token": forged,
		"service token": testService, "bootstrap key": testBootstrap, "jwt secret": testSecret}

	// Browsers: sockets with the token in the query and in the header, HTTP calls.
	for _, tok := range []string{good, short, forged} {
		for _, path := range []string{"/api/v1/ws/sessions", "/api/v1/ws/cluster", "/api/v1/ws/logs/some-pod"} {
			ts.dialWS(t, path+"?token="+tok, nil)
			ts.dialWS(t, path, bearer(tok))
		}
		ts.call(t, http.MethodGet, "/api/v1/me", bearer(tok), "")
		ts.call(t, http.MethodGet, "/api/v1/agents", bearer(tok), "")
	}
	// Services: right and wrong tokens.
	ts.post(t, "/api/v1/events", testService, `{"orgId":"o1","type":"session.created","sessionId":"s1"}`)
	ts.post(t, "/api/v1/events", testService+"-wrong", `{"orgId":"o1","type":"session.created","sessionId":"s1"}`)
	secrets["wrong service token"] = testService + "-wrong"

	// Agents: registration with the bootstrap key issues a key; it is used, misused, and
	// presented for another agent.
	code, body := ts.call(t, http.MethodPost, "/api/v1/agents/register", agentKey(testBootstrap), registerBody("sec-1", "docker"))
	if code != http.StatusCreated {
		t.Fatalf("register: %d %s", code, body)
	}
	var reg struct{ APIKey string }
	if err := json.Unmarshal(body, &reg); err != nil || reg.APIKey == "" {
		t.Fatalf("register answer %s", body)
	}
	secrets["issued agent key"] = reg.APIKey
	ts.call(t, http.MethodPost, "/api/v1/agents/register", agentKey(testBootstrap), registerBody("sec-2", "docker"))
	code, body = ts.call(t, http.MethodPost, "/api/v1/admin/agents", bearer(good), `{"agentId":"sec-3","platform":"vm"}`)
	var created struct{ APIKey string }
	if err := json.Unmarshal(body, &created); err != nil || code != http.StatusCreated || created.APIKey == "" {
		t.Fatalf("admin create: %d %s", code, body)
	}
	secrets["admin-issued agent key"] = created.APIKey
	conn, status, _ := ts.connectAgent(t, "sec-1", reg.APIKey)
	if conn == nil {
		t.Fatalf("agent connect: %d", status)
	}
	ts.connectAgent(t, "sec-3", reg.APIKey)     // another agent's key
	ts.connectAgent(t, "sec-1", reg.APIKey+"0") // a wrong key
	ts.connectAgent(t, "sec-1", testBootstrap)  // the bootstrap key, no longer its
	ts.call(t, http.MethodPost, "/api/v1/agents/register", agentKey(created.APIKey), registerBody("sec-1", "docker"))

	// A connection whose token expires is closed with 4003, and says so in the logs.
	expiring, status, _ := ts.dialWS(t, "/api/v1/ws/sessions", bearer(short))
	if expiring == nil {
		t.Fatalf("short token refused: %d", status)
	}
	if code := closeCode(t, expiring, 5*time.Second); code != 4003 {
		t.Fatalf("expiring token closed with %d, want 4003", code)
	}

	logs := ts.logs.String()
	if !strings.Contains(logs, "level=DEBUG") && !strings.Contains(logs, "request refused") {
		t.Fatalf("the logs are empty: nothing was checked:\n%s", logs)
	}
	for name, secret := range secrets {
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the logs", name)
		}
	}
	if strings.Contains(logs, "token=") || strings.Contains(logs, "Bearer") {
		t.Error("a query string or an Authorization header reached the logs")
	}
}
