package server

import (
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

// TestBadInput sends every kind of bad request PROTOCOL.md names and
// checks the answer, that each refusal is logged exactly once, and that the
// server is still healthy afterwards.
func TestBadInput(t *testing.T) {
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) { testBadInput(t, dialect) })
	}
}

func testBadInput(t *testing.T, dialect string) {
	ts := startServer(t, dialect)
	ctx := context.Background()
	if err := ts.Database().CreateSession(ctx, models.Session{ID: "s-b", OrgID: "org-b", UserID: "bob", State: "running"}); err != nil {
		t.Fatal(err)
	}
	if err := ts.Database().CreateSession(ctx, models.Session{ID: "s-a2", OrgID: "org-a", UserID: "carol", State: "running"}); err != nil {
		t.Fatal(err)
	}
	good := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	admin := mint(t, "root", "org-a", auth.RoleAdmin, time.Hour)
	otherAdmin := mint(t, "root", "org-b", auth.RoleAdmin, time.Hour)
	expired := signed(t, jwt.SigningMethodHS256, jwt.MapClaims{"user_id": "alice", "org_id": "org-a", "exp": time.Now().Add(-time.Hour).Unix()})
	noOrg := signed(t, jwt.SigningMethodHS256, jwt.MapClaims{"user_id": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	hs384 := signed(t, jwt.SigningMethodHS384, jwt.MapClaims{"user_id": "alice", "org_id": "org-a", "exp": time.Now().Add(time.Hour).Unix()})
	unsigned := unsignedToken(`{"user_id":"alice","org_id":"org-a","exp":` + itoa(time.Now().Add(time.Hour).Unix()) + `}`)

	ws := []struct {
		name, path string
		header     http.Header
		status     int
		code       string
	}{
		{"no token", "/api/v1/ws/sessions", nil, 401, "missing_token"},
		{"garbage token", "/api/v1/ws/sessions?token=not.a.jwt", nil, 401, "invalid_token"},
		{"expired token", "/api/v1/ws/sessions?token=" + expired, nil, 401, "token_expired"},
		{"unsigned token", "/api/v1/ws/sessions?token=" + unsigned, nil, 401, "invalid_token"},
		{"wrong algorithm", "/api/v1/ws/sessions?token=" + hs384, nil, 401, "invalid_token"},
		{"token without org", "/ws/sessions?token=" + noOrg, nil, 401, "missing_org"},
		{"foreign origin", "/api/v1/ws/sessions?token=" + good, http.Header{"Origin": {"https://evil.example"}}, 403, "forbidden_origin"},
		{"session of another org", "/api/v1/ws/sessions?session_id=s-b&token=" + good, nil, 403, "forbidden_session"},
		{"session of another user", "/api/v1/ws/sessions?session_id=s-a2&token=" + good, nil, 403, "forbidden_session"},
		{"unknown session", "/api/v1/ws/sessions?session_id=nope&token=" + good, nil, 403, "forbidden_session"},
		{"malformed since", "/api/v1/ws/sessions?since=zzz&token=" + good, nil, 400, "invalid_since"},
	}
	refusals := 0
	for _, tc := range ws {
		t.Run("ws/"+tc.name, func(t *testing.T) {
			_, status, code := ts.dialWS(t, tc.path, tc.header)
			if status != tc.status || code != tc.code {
				t.Fatalf("got %d %q, want %d %q", status, code, tc.status, tc.code)
			}
		})
		refusals++
	}

	postCases := []struct {
		name, path, bearer, body string
		status                   int
		code                     string
	}{
		{"publish without token", "/api/v1/events", "", `{}`, 401, "unauthorized"},
		{"publish with a browser token", "/api/v1/events", good, `{}`, 401, "unauthorized"},
		{"publish garbage", "/api/v1/events", testService, `{"orgId":`, 400, "invalid_json"},
		{"publish not an object", "/api/v1/events", testService, `[1,2]`, 400, "invalid_json"},
		{"publish unknown type", "/api/v1/events", testService, `{"orgId":"org-a","type":"session.exploded","sessionId":"s"}`, 400, "unknown_event_type"},
		{"publish without org", "/api/v1/events", testService, `{"type":"session.created","sessionId":"s"}`, 400, "missing_org"},
		{"publish without target", "/api/v1/events", testService, `{"orgId":"org-a","type":"session.created"}`, 400, "missing_target"},
		{"publish numeric timestamp", "/api/v1/events", testService, `{"orgId":"org-a","type":"session.created","sessionId":"s","timestamp":12}`, 400, "invalid_json"},
		{"publish huge body", "/api/v1/events", testService, `{"orgId":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "body_too_large"},
		{"broadcast without token", "/api/v1/orgs/org-a/broadcast", "", `{}`, 401, "unauthorized"},
		{"broadcast by a user", "/api/v1/orgs/org-a/broadcast", good, `{}`, 403, "forbidden"},
		{"broadcast by another org's admin", "/api/v1/orgs/org-a/broadcast", otherAdmin, `{}`, 403, "forbidden"},
		{"broadcast an array", "/api/v1/orgs/org-a/broadcast", admin, `[1]`, 400, "invalid_body"},
		{"broadcast garbage", "/api/v1/orgs/org-a/broadcast", testService, `nope`, 400, "invalid_body"},
		{"broadcast reserved field", "/api/v1/orgs/org-a/broadcast", testService, `{"offset":3}`, 400, "invalid_body"},
	}
	for _, tc := range postCases {
		t.Run("http/"+tc.name, func(t *testing.T) {
			status, body := ts.post(t, tc.path, tc.bearer, tc.body)
			if status != tc.status || body.Error != tc.code || body.Message == "" {
				t.Fatalf("got %d %+v, want %d %q with a message", status, body, tc.status, tc.code)
			}
		})
		refusals++
	}

	other := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"wrong method", http.MethodDelete, "/api/v1/events", 405, "method_not_allowed"},
		{"unknown path", http.MethodGet, "/api/v2/nothing", 404, "not_found"},
		{"plain GET on the socket", http.MethodGet, "/api/v1/ws/sessions?token=" + good, 400, "upgrade_required"},
	}
	for _, tc := range other {
		t.Run("http/"+tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, ts.base+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("got %d, want %d", resp.StatusCode, tc.status)
			}
		})
		refusals++
	}

	// An authenticated browser that sends an oversized frame is closed 1009.
	conn, status, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+good, nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("good token refused: %d", status)
	}
	if err := conn.WriteMessage(gorilla.TextMessage, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(t, conn, 5*time.Second); code != gorilla.CloseMessageTooBig {
		t.Fatalf("oversized frame closed with %d, want 1009", code)
	}

	if got := strings.Count(ts.logs.String(), "msg=\"request refused\""); got != refusals {
		t.Fatalf("%d refusals logged, want exactly %d (one each)", got, refusals)
	}
	if strings.Contains(ts.logs.String(), good) || strings.Contains(ts.logs.String(), "token=") {
		t.Fatal("a token or query string reached the logs")
	}
	resp, err := http.Get(ts.base + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("server unhealthy after bad input: %v %v", resp, err)
	}
	resp.Body.Close()
}

func signed(t *testing.T, m jwt.SigningMethod, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func unsignedToken(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(claims)) + "."
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
