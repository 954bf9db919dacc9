package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// With the shipped defaults one user cannot hold more than DefaultMaxConnectionsPerUser
// browser sockets: the next one is answered 429 before the upgrade.
func TestDefaultConnectionLimitPerUser(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite")
	if ts.cfg.MaxConnectionsPerUser != DefaultMaxConnectionsPerUser || ts.cfg.MaxConnectionsPerOrg != DefaultMaxConnectionsPerOrg ||
		DefaultMaxConnectionsPerUser <= 0 || DefaultMaxConnectionsPerOrg < DefaultMaxConnectionsPerUser {
		t.Fatalf("default limits per user %d, per org %d", ts.cfg.MaxConnectionsPerUser, ts.cfg.MaxConnectionsPerOrg)
	}
	tok := mint(t, "greedy", "o1", auth.RoleUser, time.Hour)
	for i := range DefaultMaxConnectionsPerUser {
		if _, status, code := ts.dialWS(t, "/api/v1/ws/sessions?token="+tok, nil); status != http.StatusSwitchingProtocols {
			t.Fatalf("socket %d: %d %s", i+1, status, code)
		}
	}
	if _, status, code := ts.dialWS(t, "/api/v1/ws/sessions?token="+tok, nil); status != http.StatusTooManyRequests || code != "too_many_connections" {
		t.Fatalf("socket %d: %d %s, want 429 too_many_connections", DefaultMaxConnectionsPerUser+1, status, code)
	}
	// Another user of the organization is not held back by it.
	other := mint(t, "modest", "o1", auth.RoleUser, time.Hour)
	if _, status, code := ts.dialWS(t, "/api/v1/ws/sessions?token="+other, nil); status != http.StatusSwitchingProtocols {
		t.Fatalf("another user: %d %s", status, code)
	}
}

// A request whose headers exceed max-header-bytes is answered 431 before any handler runs;
// one within it is served.
func TestHugeRequestHeaderIs431(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite")
	tok := mint(t, "u1", "o1", auth.RoleUser, time.Hour)
	req, _ := http.NewRequest(http.MethodGet, ts.base+"/api/v1/ws/sessions?token="+tok, nil)
	req.Header.Set("User-Agent", strings.Repeat("a", 900<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("900 KB header: %d, want 431", resp.StatusCode)
	}
	if _, status, code := ts.dialWS(t, "/api/v1/ws/sessions?token="+tok, http.Header{"User-Agent": {strings.Repeat("a", 32<<10)}}); status != http.StatusSwitchingProtocols {
		t.Fatalf("32 KB header: %d %s", status, code)
	}
}

// What a browser or an agent says of itself is stored within bounds: a long User-Agent is
// stored cut at MaxUserAgentLen (never inside a character), and a registration whose metadata
// or capacity is larger than MaxAgentObjectBytes is refused 400 and stores nothing.
func TestClientStringsStoredWithinBounds(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		ts := startServer(t, dialect, withBootstrap(true))
		ctx := context.Background()
		if err := ts.Database().CreateSession(ctx, models.Session{ID: "s1", OrgID: "o1", UserID: "alice", State: "running"}); err != nil {
			t.Fatal(err)
		}
		ua := "x" + strings.Repeat("é", 30<<10) // 60 KiB: within the header limit, and cut mid-character at 512 bytes
		conn, status, code := ts.dialWS(t, "/api/v1/ws/sessions?session_id=s1&token="+mint(t, "alice", "o1", auth.RoleUser, time.Hour),
			http.Header{"User-Agent": {ua}})
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("session socket: %d %s", status, code)
		}
		if f := readWS(t, conn); f.str("type") != "connected" {
			t.Fatalf("first frame %v", f)
		}
		var stored string
		testkit.Eventually(t, 5*time.Second, "the connection recorded", func() bool {
			return ts.Database().SQL().QueryRowContext(ctx, "SELECT user_agent FROM "+ts.Database().TablePrefix()+"connections WHERE session_id = 's1'").Scan(&stored) == nil
		})
		if len(stored) > models.MaxUserAgentLen || len(stored) < models.MaxUserAgentLen-1 || !utf8.ValidString(stored) || !strings.HasPrefix(ua, stored) {
			t.Fatalf("stored User-Agent of %d bytes (valid UTF-8 %v), want its first %d bytes at most", len(stored), utf8.ValidString(stored), models.MaxUserAgentLen)
		}

		big := `{"blob":"` + strings.Repeat("m", models.MaxAgentObjectBytes) + `"}`
		for field, want := range map[string]string{"metadata": "invalid_metadata", "capacity": "invalid_capacity"} {
			body := `{"agentId":"big-` + field + `","platform":"docker","` + field + `":` + big + `}`
			code, raw := ts.call(t, http.MethodPost, "/api/v1/agents/register", agentKey(testBootstrap), body)
			var eb errorBody
			_ = json.Unmarshal(raw, &eb)
			if code != http.StatusBadRequest || eb.Error != want {
				t.Errorf("registration with a %d-byte %s: %d %s, want 400 %s", len(big), field, code, raw, want)
			}
			if _, err := ts.Database().GetAgent(ctx, "big-"+field); err == nil {
				t.Errorf("agent with a huge %s was stored", field)
			}
		}
		// An agent that registered within bounds cannot grow its row when it registers again.
		regCode, raw := ts.call(t, http.MethodPost, "/api/v1/agents/register", agentKey(testBootstrap), registerBody("a1", "docker"))
		if regCode != http.StatusCreated {
			t.Fatalf("registration: %d %s", regCode, raw)
		}
		key := decodeRegistration(t, raw).APIKey
		if code, raw := ts.call(t, http.MethodPost, "/api/v1/agents/register", agentKey(key),
			`{"agentId":"a1","platform":"docker","metadata":`+big+`}`); code != http.StatusBadRequest {
			t.Errorf("registering again with a huge metadata: %d %s", code, raw)
		}
		if a, err := ts.Database().GetAgent(ctx, "a1"); err != nil || a.Metadata["namespace"] != "ss" {
			t.Errorf("agent after the refused registration: %+v %v", a.Metadata, err)
		}
	})
}
