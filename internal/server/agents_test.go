package server

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

const testBootstrap = "bootstrap-key-for-tests"

var hexKey = regexp.MustCompile(`^[0-9a-f]{64}$`)

// call sends a request with the given headers and returns the status and the raw body.
func (ts *testServer) call(t testing.TB, method, path string, header http.Header, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func agentKey(key string) http.Header { return http.Header{auth.AgentKeyHeader: {key}} }

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// k8sAgentReply is the shape StreamSpace's k8s-agent decodes a registration reply into; it
// exits when the decode fails.
type k8sAgentReply struct {
	ID        string    `json:"id"`
	AgentID   string    `json:"agentId"`
	Platform  string    `json:"platform"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"createdAt"`
}

// registration is the registration reply as this project's clients read it.
type registration struct {
	k8sAgentReply
	Region         string         `json:"region"`
	Agent          map[string]any `json:"agent"`
	ApprovalStatus string         `json:"approvalStatus"`
	APIKey         string         `json:"apiKey"`
}

func decodeRegistration(t *testing.T, raw []byte) registration {
	t.Helper()
	var k k8sAgentReply
	if err := json.Unmarshal(raw, &k); err != nil {
		t.Fatalf("StreamSpace's k8s-agent cannot decode %s: %v", raw, err)
	}
	var r registration
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if r.ID == "" || r.ID != r.AgentID || r.Agent["agentId"] != r.AgentID || r.CreatedAt.IsZero() {
		t.Fatalf("registration reply %s lacks id, agentId, agent or createdAt", raw)
	}
	for _, field := range []string{"createdAt", "updatedAt", "lastHeartbeat"} {
		if v, ok := r.Agent[field]; ok {
			if s, _ := v.(string); s == "" {
				t.Fatalf("agent.%s is %v: times are RFC 3339 strings or absent", field, v)
			}
		}
	}
	return r
}

func registerBody(id, platform string) string {
	return `{"agentId":"` + id + `","platform":"` + platform + `","region":"eu-1","capacity":{"maxSessions":10,"cpu":"8","memory":"16Gi"},"metadata":{"namespace":"ss"}}`
}

func withBootstrap(autoApprove bool) func(*Config) {
	return func(c *Config) {
		c.AgentBootstrapKey = testBootstrap
		c.AgentAutoApprove = autoApprove
	}
}

func (ts *testServer) connectAgent(t *testing.T, id, key string) (*gorilla.Conn, int, string) {
	t.Helper()
	return ts.dialWS(t, "/api/v1/agents/connect?agent_id="+id, agentKey(key))
}

func TestAgentRegistrationAndApproval(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, dialect, withBootstrap(false))
			reg := "/api/v1/agents/register"

			if code, _ := ts.call(t, "POST", reg, nil, registerBody("a1", "docker")); code != http.StatusUnauthorized {
				t.Fatalf("no key: %d", code)
			}
			if code, _ := ts.call(t, "POST", reg, agentKey("wrong"), registerBody("a1", "docker")); code != http.StatusUnauthorized {
				t.Fatalf("wrong bootstrap key: %d", code)
			}
			code, raw := ts.call(t, "POST", reg, agentKey(testBootstrap), registerBody("a1", "docker"))
			r := decodeRegistration(t, raw)
			if code != http.StatusAccepted || r.ApprovalStatus != models.ApprovalPending || r.APIKey != "" || r.Status != "offline" {
				t.Fatalf("new agent: %d %s", code, raw)
			}
			if code, _ := ts.call(t, "POST", reg, agentKey(testBootstrap), registerBody("a1", "docker")); code != http.StatusAccepted {
				t.Fatalf("pending agent again: %d", code)
			}
			if _, code, errCode := ts.connectAgent(t, "a1", testBootstrap); code != http.StatusForbidden || errCode != "agent_not_approved" {
				t.Fatalf("connect while pending: %d %s", code, errCode)
			}

			code, raw = ts.call(t, "POST", "/api/v1/admin/agents/a1/approve", bearer(testService), "")
			r = decodeRegistration(t, raw)
			if code != http.StatusOK || !hexKey.MatchString(r.APIKey) || r.ApprovalStatus != models.ApprovalApproved {
				t.Fatalf("approve: %d %s", code, raw)
			}
			key := r.APIKey
			if code, _ := ts.call(t, "POST", "/api/v1/admin/agents/a1/approve", bearer(testService), ""); code != http.StatusConflict {
				t.Fatalf("approve twice: %d", code)
			}

			// Re-registering with its own key (StreamSpace's agents do, on every reconnect).
			code, raw = ts.call(t, "POST", reg, agentKey(key), registerBody("a1", "docker"))
			if r = decodeRegistration(t, raw); code != http.StatusOK || r.APIKey != "" || r.Region != "eu-1" {
				t.Fatalf("re-register: %d %s", code, raw)
			}
			if code, _ := ts.call(t, "POST", reg, agentKey(testBootstrap), registerBody("a1", "docker")); code != http.StatusUnauthorized {
				t.Fatalf("bootstrap key for an agent with its own key: %d, want 401", code)
			}

			// Connect: 400, 401 (an unknown agent too), then the key must be this agent's.
			if _, code, _ := ts.dialWS(t, "/api/v1/agents/connect", agentKey(key)); code != http.StatusBadRequest {
				t.Fatalf("no agent_id: %d", code)
			}
			if _, code, _ := ts.connectAgent(t, "a1", ""); code != http.StatusUnauthorized {
				t.Fatalf("no key: %d", code)
			}
			if _, code, errCode := ts.connectAgent(t, "nobody", key); code != http.StatusUnauthorized || errCode != "invalid_agent_key" {
				t.Fatalf("unknown agent: %d %s, want 401 invalid_agent_key", code, errCode)
			}
			if _, code, _ := ts.connectAgent(t, "a1", testBootstrap); code != http.StatusUnauthorized {
				t.Fatalf("bootstrap key after approval: %d", code)
			}
			code, raw = ts.call(t, "POST", "/api/v1/admin/agents", bearer(testService), registerBody("a2", "vm"))
			other := decodeRegistration(t, raw)
			if code != http.StatusCreated || !hexKey.MatchString(other.APIKey) {
				t.Fatalf("admin create: %d %s", code, raw)
			}
			if _, code, _ := ts.connectAgent(t, "a1", other.APIKey); code != http.StatusUnauthorized {
				t.Fatalf("another agent's key: %d, want 401", code)
			}
			conn, code, _ := ts.dialWS(t, "/api/v1/agents/connect?agent_id=a1", bearer(key))
			if code != http.StatusSwitchingProtocols {
				t.Fatalf("connect with Bearer: %d", code)
			}

			// Rejecting a connected agent: `shutdown`, then a close.
			if code, raw := ts.call(t, "POST", "/api/v1/admin/agents/a1/reject", bearer(testService), ""); code != http.StatusOK {
				t.Fatalf("reject: %d %s", code, raw)
			}
			if f := readWS(t, conn); f.str("type") != models.MessageTypeShutdown {
				t.Fatalf("rejected agent got %v, want shutdown", f)
			}
			if c := closeCode(t, conn, 5*time.Second); c != gorilla.ClosePolicyViolation {
				t.Fatalf("rejected agent closed with %d", c)
			}
			if code, _ := ts.call(t, "POST", reg, agentKey(key), registerBody("a1", "docker")); code != http.StatusForbidden {
				t.Fatalf("register after reject: %d", code)
			}
			if _, code, _ := ts.connectAgent(t, "a1", key); code != http.StatusForbidden {
				t.Fatalf("connect after reject: %d", code)
			}
		})
	}
}

func TestAgentAutoApproval(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite", withBootstrap(true))
	code, raw := ts.call(t, "POST", "/api/v1/agents/register", agentKey(testBootstrap), registerBody("k8s-1", "kubernetes"))
	r := decodeRegistration(t, raw)
	if code != http.StatusCreated || r.ApprovalStatus != models.ApprovalApproved || !hexKey.MatchString(r.APIKey) {
		t.Fatalf("auto-approved registration: %d %s", code, raw)
	}
	if _, code, _ := ts.connectAgent(t, "k8s-1", r.APIKey); code != http.StatusSwitchingProtocols {
		t.Fatalf("connect with the issued key: %d", code)
	}
	for _, body := range []string{registerBody("bad id!", "docker"), registerBody("x", "mainframe"), `{"agentId":5}`, `nope`} {
		if code, _ := ts.call(t, "POST", "/api/v1/agents/register", agentKey(testBootstrap), body); code != http.StatusBadRequest {
			t.Errorf("register %s: %d, want 400", body, code)
		}
	}
}

func TestAgentEndpointsAuthorization(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite")
	admin1 := mint(t, "boss", "o1", auth.RoleAdmin, time.Hour)
	oper1 := mint(t, "op", "o1", auth.RoleOperator, time.Hour)
	user1 := mint(t, "u1", "o1", auth.RoleUser, time.Hour)
	admin2 := mint(t, "boss2", "o2", auth.RoleAdmin, time.Hour)

	mustCreate := func(token, body string) {
		t.Helper()
		if code, raw := ts.call(t, "POST", "/api/v1/admin/agents", bearer(token), body); code != http.StatusCreated {
			t.Fatalf("create %s: %d %s", body, code, raw)
		}
	}
	mustCreate(admin1, registerBody("o1-agent", "docker"))
	mustCreate(admin2, registerBody("o2-agent", "docker"))
	mustCreate(testService, registerBody("shared", "kubernetes"))
	if code, _ := ts.call(t, "POST", "/api/v1/admin/agents", bearer(admin1), `{"agentId":"x","platform":"vm","orgId":"o2"}`); code != http.StatusForbidden {
		t.Errorf("admin creating an agent of another org: %d", code)
	}

	list := func(token string) (int, []string) {
		code, raw := ts.call(t, "GET", "/api/v1/agents", bearer(token), "")
		var body struct {
			Agents []struct {
				AgentID string `json:"agentId"`
			} `json:"agents"`
		}
		_ = json.Unmarshal(raw, &body)
		var ids []string
		for _, a := range body.Agents {
			ids = append(ids, a.AgentID)
		}
		return code, ids
	}
	if code, ids := list(oper1); code != http.StatusOK || strings.Join(ids, ",") != "o1-agent,shared" {
		t.Errorf("operator of o1 lists %d %v, want o1-agent,shared", code, ids)
	}
	if code, ids := list(testService); code != http.StatusOK || len(ids) != 3 {
		t.Errorf("service lists %d %v", code, ids)
	}
	if code, _ := list(user1); code != http.StatusForbidden {
		t.Errorf("user lists agents: %d", code)
	}
	if code, _ := ts.call(t, "GET", "/api/v1/agents", nil, ""); code != http.StatusUnauthorized {
		t.Errorf("anonymous lists agents: %d", code)
	}

	cases := []struct {
		name, path, token string
		want              int
	}{
		{"operator approves", "/api/v1/admin/agents/o1-agent/approve", oper1, http.StatusForbidden},
		{"other org's admin rejects", "/api/v1/admin/agents/o1-agent/reject", admin2, http.StatusNotFound},
		{"org admin rejects a shared agent", "/api/v1/admin/agents/shared/reject", admin1, http.StatusForbidden},
		{"other org's admin commands", "/api/v1/admin/agents/o1-agent/command", admin2, http.StatusNotFound},
		{"command to a shared agent about no session of the org", "/api/v1/admin/agents/shared/command", admin1, http.StatusForbidden},
		{"user commands", "/api/v1/admin/agents/o1-agent/command", user1, http.StatusForbidden},
	}
	for _, c := range cases {
		if code, raw := ts.call(t, "POST", c.path, bearer(c.token), `{"action":"stop_session","sessionId":"s9"}`); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, raw, c.want)
		}
	}
	if err := ts.Database().CreateSession(t.Context(), models.Session{ID: "s9", OrgID: "o1", UserID: "u1", AgentID: "o1-agent"}); err != nil {
		t.Fatal(err)
	}
	code, raw := ts.call(t, "POST", "/api/v1/admin/agents/o1-agent/command", bearer(admin1), `{"action":"wake_session","sessionId":"s9"}`)
	var accepted struct{ CommandID, Status string }
	_ = json.Unmarshal(raw, &accepted)
	if code != http.StatusAccepted || accepted.CommandID == "" || accepted.Status != models.CommandStatusPending {
		t.Fatalf("org admin commands its agent: %d %s", code, raw)
	}
	if code, _ := ts.call(t, "GET", "/api/v1/admin/commands/"+accepted.CommandID, bearer(admin2), ""); code != http.StatusNotFound {
		t.Errorf("other org's admin reads the command: %d", code)
	}
	if code, _ := ts.call(t, "GET", "/api/v1/admin/commands/"+accepted.CommandID, bearer(admin1), ""); code != http.StatusOK {
		t.Errorf("own admin reads the command: %d", code)
	}
}
