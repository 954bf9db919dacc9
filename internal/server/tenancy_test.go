package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// createAgent creates an approved agent through the admin API and returns its key.
func (ts *testServer) createAgent(t *testing.T, token, id, org string) string {
	t.Helper()
	body := `{"agentId":"` + id + `","platform":"docker","orgId":"` + org + `"}`
	code, raw := ts.call(t, http.MethodPost, "/api/v1/admin/agents", bearer(token), body)
	if code != http.StatusCreated {
		t.Fatalf("create agent %s: %d %s", id, code, raw)
	}
	return decodeRegistration(t, raw).APIKey
}

// command posts a command and returns the status and the decoded answer.
func (ts *testServer) command(t *testing.T, token, agentID, body string) (int, map[string]any) {
	t.Helper()
	code, raw := ts.call(t, http.MethodPost, "/api/v1/admin/agents/"+agentID+"/command", bearer(token), body)
	var answer map[string]any
	if err := json.Unmarshal(raw, &answer); err != nil {
		t.Fatalf("command answer %q: %v", raw, err)
	}
	return code, answer
}

// readCommand reads frames until a command and returns its payload (commandId, action, payload).
func readCommand(t *testing.T, agent *gorilla.Conn) map[string]any {
	t.Helper()
	for {
		f := readWS(t, agent)
		if f.str("type") == models.MessageTypeCommand {
			payload, _ := f["payload"].(map[string]any)
			return payload
		}
	}
}

// TestCommandsActOnlyOnAuthorizedSessions: an organization's admin cannot have an agent act on
// another organization's session by naming it in the payload (sessionId or namespace), on a
// shared agent or its own; what the agent receives is what was authorized; and a command's
// result is read by the organization whose session it acted on, also after the session ended.
func TestCommandsActOnlyOnAuthorizedSessions(t *testing.T) {
	t.Parallel()
	forEachDialect(t, testCommandsActOnlyOnAuthorizedSessions)
}

func testCommandsActOnlyOnAuthorizedSessions(t *testing.T, dialect string) {
	ts := startServer(t, dialect)
	ctx := t.Context()
	d := ts.Database()
	for _, o := range []models.Organization{{ID: "org-a", Name: "A", K8sNamespace: "ns-a"}, {ID: "org-b", Name: "B", K8sNamespace: "ns-b"}} {
		if err := d.UpsertOrganization(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	sharedKey := ts.createAgent(t, testService, "shared", "")
	ts.createAgent(t, testService, "a-agent", "org-a")
	for _, s := range []models.Session{
		{ID: "s-a", OrgID: "org-a", UserID: "alice", Namespace: "ns-a", AgentID: "shared", State: "running"},
		{ID: "s-b", OrgID: "org-b", UserID: "bob", Namespace: "ns-b", AgentID: "shared", State: "running"},
	} {
		if err := d.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	adminA := mint(t, "root-a", "org-a", auth.RoleAdmin, time.Hour)

	// Another organization's session named in the payload is refused, never passed on.
	code, answer := ts.command(t, adminA, "shared", `{"action":"stop_session","sessionId":"s-a","payload":{"sessionId":"s-b"}}`)
	if code != http.StatusBadRequest || answer["error"] != "session_mismatch" {
		t.Errorf("payload.sessionId of another org: %d %v, want 400 session_mismatch", code, answer)
	}
	// Named only in the payload, on a shared agent and on the caller's own agent, it gets the
	// answer of a session that does not exist.
	for _, agent := range []string{"shared", "a-agent"} {
		for _, body := range []string{
			`{"action":"restart_session","payload":{"sessionId":"s-b"}}`,
			`{"action":"restart_session","sessionId":"s-b"}`,
		} {
			code, other := ts.command(t, adminA, agent, body)
			_, unknown := ts.command(t, adminA, agent, strings.ReplaceAll(body, "s-b", "s-none"))
			if code != http.StatusForbidden || other["error"] != "forbidden_session" || other["message"] != unknown["message"] {
				t.Errorf("%s %s: %d %v, want the 403 of an unknown session %v", agent, body, code, other, unknown)
			}
		}
	}
	if n, err := d.CountCommands(ctx, ""); err != nil || len(n) != 0 {
		t.Fatalf("refused commands were stored: %v %v", n, err)
	}

	// What the agent receives is the authorized session in its organization's namespace.
	agent, status, _ := ts.connectAgent(t, "shared", sharedKey)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("agent refused: %d", status)
	}
	code, stop := ts.command(t, adminA, "shared", `{"action":"stop_session","sessionId":"s-a","payload":{"sessionId":"s-a","namespace":"ns-b"}}`)
	if code != http.StatusAccepted {
		t.Fatalf("own session: %d %v", code, stop)
	}
	code, start := ts.command(t, adminA, "shared", `{"action":"start_session","sessionId":"s-a2","payload":{"user":"alice","namespace":"ns-b"}}`)
	if code != http.StatusAccepted || start["sessionId"] != "s-a2" {
		t.Fatalf("start_session: %d %v", code, start)
	}
	for _, want := range []struct{ id, session string }{{stop["commandId"].(string), "s-a"}, {start["commandId"].(string), "s-a2"}} {
		got := readCommand(t, agent)
		inner, _ := got["payload"].(map[string]any)
		if got["commandId"] != want.id || inner["sessionId"] != want.session || inner["namespace"] != "ns-a" {
			t.Errorf("agent received %v, want command %s on %s in ns-a", got, want.id, want.session)
		}
	}
	if s, err := d.GetSession(ctx, "s-a2"); err != nil || s.Namespace != "ns-a" || s.OrgID != "org-a" {
		t.Errorf("started session %+v, %v: want namespace ns-a", s, err)
	}

}

// TestCommandResultsReadByTheSessionsOrganization: a command's result is read by exactly the
// organization whose session it acted on: not by the organization of the agent that ran it,
// and still after the session ended.
func TestCommandResultsReadByTheSessionsOrganization(t *testing.T) {
	t.Parallel()
	forEachDialect(t, testCommandResultsReadByTheSessionsOrganization)
}

func testCommandResultsReadByTheSessionsOrganization(t *testing.T, dialect string) {
	ts := startServer(t, dialect)
	ctx := t.Context()
	d := ts.Database()
	sharedKey := ts.createAgent(t, testService, "shared", "")
	ts.createAgent(t, testService, "a-agent", "org-a")
	if err := d.CreateSession(ctx, models.Session{ID: "s-b", OrgID: "org-b", UserID: "bob", AgentID: "shared", State: "running"}); err != nil {
		t.Fatal(err)
	}
	adminA := mint(t, "root-a", "org-a", auth.RoleAdmin, time.Hour)
	adminB := mint(t, "root-b", "org-b", auth.RoleAdmin, time.Hour)
	agent, status, _ := ts.connectAgent(t, "shared", sharedKey)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("agent refused: %d", status)
	}

	// The service may send an organization's agent a command about another's session: the
	// session's organization reads it, the agent's does not.
	code, svc := ts.command(t, testService, "a-agent", `{"action":"inspect","sessionId":"s-b"}`)
	if code != http.StatusAccepted {
		t.Fatalf("service command: %d %v", code, svc)
	}
	readAs := func(token, id string) int {
		code, _ := ts.call(t, http.MethodGet, "/api/v1/admin/commands/"+id, bearer(token), "")
		return code
	}
	if b, a := readAs(adminB, svc["commandId"].(string)), readAs(adminA, svc["commandId"].(string)); b != http.StatusOK || a != http.StatusNotFound {
		t.Errorf("command on org-b's session through org-a's agent: org-b reads %d, org-a %d; want 200 and 404", b, a)
	}

	// B stops its session; the agent reports a result and the session deleted. B still reads
	// the result, A never.
	code, own := ts.command(t, adminB, "shared", `{"action":"stop_session","sessionId":"s-b"}`)
	if code != http.StatusAccepted {
		t.Fatalf("org-b's command: %d %v", code, own)
	}
	id := own["commandId"].(string)
	if got := readCommand(t, agent); got["commandId"] != id {
		t.Fatalf("agent received %v, want %s", got, id)
	}
	sendAgent(t, agent, "complete", map[string]any{"commandId": id, "result": map[string]any{"podName": "pod-b"}})
	sendAgent(t, agent, "status", map[string]any{"sessionId": "s-b", "state": "deleted"})
	testkit.Eventually(t, 5*time.Second, "command completed and session deleted", func() bool {
		c, err := d.GetCommand(ctx, id)
		_, gerr := d.GetSession(ctx, "s-b")
		return err == nil && c.Status == models.CommandStatusCompleted && errors.Is(gerr, db.ErrNotFound)
	})
	code, raw := ts.call(t, http.MethodGet, "/api/v1/admin/commands/"+id, bearer(adminB), "")
	if code != http.StatusOK || !strings.Contains(string(raw), `"podName":"pod-b"`) {
		t.Errorf("org-b reads its command after the session ended: %d %s", code, raw)
	}
	if a := readAs(adminA, id); a != http.StatusNotFound {
		t.Errorf("org-a reads org-b's command: %d", a)
	}
}

// TestOtherTenantsIDsAreNotConfirmed: a wrong key gets one answer whether the agent exists or
// not (connect and register, with a wrong key or the bootstrap key for an agent with its own),
// and an id taken in another organization gets the answer of an id taken in one's own.
func TestOtherTenantsIDsAreNotConfirmed(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, dialect string) {
		ts := startServer(t, dialect, withBootstrap(false))
		adminA := mint(t, "root-a", "org-a", auth.RoleAdmin, time.Hour)
		adminB := mint(t, "root-b", "org-b", auth.RoleAdmin, time.Hour)
		ts.createAgent(t, adminA, "a-agent", "org-a")
		ts.createAgent(t, adminB, "b-agent", "org-b")

		same := func(what string, method, path string, want int, reqs ...struct {
			header http.Header
			body   string
		}) {
			t.Helper()
			var first string
			for i, r := range reqs {
				code, raw := ts.call(t, method, path, r.header, r.body)
				if code != want {
					t.Errorf("%s #%d: %d %s, want %d", what, i, code, raw, want)
				}
				if i == 0 {
					first = string(raw)
				} else if string(raw) != first {
					t.Errorf("%s: answers differ:\n %s\n %s", what, first, raw)
				}
			}
		}
		type req = struct {
			header http.Header
			body   string
		}
		for _, key := range []string{"wrong-key", testBootstrap} {
			code1, existing := ts.call(t, http.MethodGet, "/api/v1/agents/connect?agent_id=b-agent", agentKey(key), "")
			code2, unknown := ts.call(t, http.MethodGet, "/api/v1/agents/connect?agent_id=nobody", agentKey(key), "")
			if code1 != http.StatusUnauthorized || code1 != code2 || string(existing) != string(unknown) {
				t.Errorf("connect with %s: existing agent %d %s, unknown %d %s; want one 401", key, code1, existing, code2, unknown)
			}
		}
		same("register with a wrong key or the bootstrap key for an agent with its own key",
			http.MethodPost, "/api/v1/agents/register", http.StatusUnauthorized,
			req{agentKey("wrong-key"), registerBody("nobody", "docker")},
			req{agentKey("wrong-key"), registerBody("b-agent", "docker")},
			req{agentKey(testBootstrap), registerBody("b-agent", "docker")})
		same("creating an agent whose id is taken, here or in another organization",
			http.MethodPost, "/api/v1/admin/agents", http.StatusConflict,
			req{bearer(adminA), registerBody("a-agent", "docker")},
			req{bearer(adminA), registerBody("b-agent", "docker")})

		ctx := t.Context()
		for _, s := range []models.Session{{ID: "s-a", OrgID: "org-a", UserID: "alice"}, {ID: "s-b", OrgID: "org-b", UserID: "bob"}} {
			if err := ts.Database().CreateSession(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		same("start_session with a session id taken, here or in another organization",
			http.MethodPost, "/api/v1/admin/agents/a-agent/command", http.StatusConflict,
			req{bearer(adminA), `{"action":"start_session","sessionId":"s-a","payload":{"user":"alice"}}`},
			req{bearer(adminA), `{"action":"start_session","sessionId":"s-b","payload":{"user":"alice"}}`})
	})
}

// TestIDsThatAreNotTextAreRefusedAtTheEdge sends ids with invalid UTF-8 or a NUL wherever an
// id arrives over HTTP: each is a client error (400 or 404), never 503, and nothing is logged
// at ERROR; a browser whose User-Agent is not UTF-8 still has its connection recorded.
func TestIDsThatAreNotTextAreRefusedAtTheEdge(t *testing.T) {
	t.Parallel()
	forEachDialect(t, testIDsThatAreNotText)
}

func testIDsThatAreNotText(t *testing.T, dialect string) {
	ts := startServer(t, dialect)
	admin := mint(t, "root", "org-a", auth.RoleAdmin, time.Hour)
	alice := mint(t, "alice", "org-a", auth.RoleUser, time.Hour)
	key := ts.createAgent(t, admin, "a1", "org-a")
	ctx := t.Context()
	if err := ts.Database().CreateSession(ctx, models.Session{ID: "s1", OrgID: "org-a", UserID: "alice", AgentID: "a1", State: "running"}); err != nil {
		t.Fatal(err)
	}

	ws := []struct {
		name, path string
		header     http.Header
		status     int
		code       string
	}{
		{"agent id not UTF-8", "/api/v1/agents/connect?agent_id=%ff", agentKey(key), 400, "invalid_agent_id"},
		{"agent id with NUL", "/api/v1/agents/connect?agent_id=a1%00", agentKey(key), 400, "invalid_agent_id"},
		{"session id not UTF-8", "/api/v1/ws/sessions?session_id=%ff&token=" + alice, nil, 400, "invalid_session_id"},
		{"session id with NUL", "/api/v1/ws/sessions?session_id=s1%00&token=" + alice, nil, 400, "invalid_session_id"},
		{"pod not UTF-8", "/api/v1/ws/logs/%ff?token=" + admin, nil, 404, "pod_not_found"},
		{"pod with NUL", "/api/v1/ws/logs/p%00?token=" + admin, nil, 404, "pod_not_found"},
	}
	for _, c := range ws {
		if _, status, code := ts.dialWS(t, c.path, c.header); status != c.status || code != c.code {
			t.Errorf("%s: %d %q, want %d %q", c.name, status, code, c.status, c.code)
		}
	}
	calls := []struct {
		name, method, path, body string
		header                   http.Header
		status                   int
		code                     string
	}{
		{"command id not UTF-8", http.MethodGet, "/api/v1/admin/commands/%ff", "", bearer(admin), 404, "unknown_command"},
		{"command id with NUL", http.MethodGet, "/api/v1/admin/commands/c%00", "", bearer(admin), 404, "unknown_command"},
		{"approve agent id not UTF-8", http.MethodPost, "/api/v1/admin/agents/%ff/approve", "", bearer(admin), 404, "unknown_agent"},
		{"reject agent id with NUL", http.MethodPost, "/api/v1/admin/agents/a1%00/reject", "", bearer(admin), 404, "unknown_agent"},
		{"command to agent id not UTF-8", http.MethodPost, "/api/v1/admin/agents/%ff/command", `{"action":"stop_session","sessionId":"s1"}`, bearer(admin), 404, "unknown_agent"},
		{"command session id with NUL", http.MethodPost, "/api/v1/admin/agents/a1/command", `{"action":"stop_session","sessionId":"s1\u0000"}`, bearer(admin), 400, "invalid_session_id"},
		{"payload session id with NUL", http.MethodPost, "/api/v1/admin/agents/a1/command", `{"action":"stop_session","payload":{"sessionId":"s1\u0000"}}`, bearer(admin), 400, "invalid_session_id"},
		{"action with NUL", http.MethodPost, "/api/v1/admin/agents/a1/command", `{"action":"stop\u0000","sessionId":"s1"}`, bearer(admin), 400, "invalid_action"},
		{"start_session owner with NUL", http.MethodPost, "/api/v1/admin/agents/a1/command", `{"action":"start_session","payload":{"user":"al\u0000ice"}}`, bearer(admin), 400, "invalid_payload"},
		{"start_session id with NUL, by the service", http.MethodPost, "/api/v1/admin/agents/a1/command", `{"action":"start_session","sessionId":"n\u0000","payload":{"user":"alice","orgId":"org-a"}}`, bearer(testService), 400, "invalid_session_id"},
		{"register region with NUL", http.MethodPost, "/api/v1/agents/register", `{"agentId":"a1","platform":"docker","region":"eu\u0000"}`, agentKey(key), 400, "invalid_region"},
		{"create agent region with NUL", http.MethodPost, "/api/v1/admin/agents", `{"agentId":"a2","platform":"docker","region":"eu\u0000"}`, bearer(admin), 400, "invalid_region"},
	}
	for _, c := range calls {
		code, raw := ts.call(t, c.method, c.path, c.header, c.body)
		var eb errorBody
		_ = json.Unmarshal(raw, &eb)
		if code != c.status || eb.Error != c.code {
			t.Errorf("%s: %d %s, want %d %q", c.name, code, raw, c.status, c.code)
		}
	}

	// A User-Agent that is not UTF-8 is the browser's business: the socket is served and its
	// connection to the session recorded.
	if _, status, _ := ts.dialWS(t, "/api/v1/ws/sessions?session_id=s1&token="+alice, http.Header{"User-Agent": {"Mozilla/5.0 \xff\xfe"}}); status != http.StatusSwitchingProtocols {
		t.Fatalf("browser with a User-Agent that is not UTF-8: %d", status)
	}
	testkit.Eventually(t, 5*time.Second, "connection recorded", func() bool {
		n, err := ts.Database().CountConnections(ctx, "s1")
		return err == nil && n == 1
	})

	logs := ts.logs.String()
	for _, bad := range []string{"level=ERROR", "status=503", "level=WARN"} {
		if strings.Contains(logs, bad) {
			t.Errorf("logs hold %q:\n%s", bad, logs)
		}
	}
}
