package agentadmin_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/agentadmin"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

const bootstrapKey = "bootstrap-key-for-tests"

// namespaceOf is every organization's namespace in these tests: "ns-<org>".
type namespaceOf struct{}

func (namespaceOf) NamespaceForOrg(_ context.Context, org string) string { return "ns-" + org }

// newService is the administration of a fresh database of the dialect, with a real agent hub
// (not running: no agent connects in these tests, commands wait in the queue).
func newService(t *testing.T, d *db.Database) *agentadmin.Service {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hub := websocket.NewAgentHubWithConfig(d, websocket.AgentHubConfig{Registerer: prometheus.NewRegistry(), Logger: log})
	return agentadmin.New(d, hub, namespaceOf{}, agentadmin.Config{DefaultOrg: "default", BootstrapKey: bootstrapKey, Logger: log})
}

func adminOf(org string) auth.Scope {
	return auth.Scope{Identity: auth.Identity{UserID: "admin-" + org, OrgID: org, Role: auth.RoleAdmin}}
}

// mustAgent creates an approved agent of org ("" for a shared one).
func mustAgent(t *testing.T, svc *agentadmin.Service, id, org string) {
	t.Helper()
	reg := models.AgentRegistration{AgentID: id, OrgID: org, Platform: models.PlatformKubernetes}
	if _, _, err := svc.CreateAgent(context.Background(), auth.ServiceScope(), reg); err != nil {
		t.Fatalf("create agent %s: %v", id, err)
	}
}

func mustSession(t *testing.T, d *db.Database, id, org string) {
	t.Helper()
	err := d.CreateSession(context.Background(), models.Session{ID: id, OrgID: org, UserID: "u-" + org, State: models.SessionStateRunning})
	if err != nil {
		t.Fatalf("create session %s: %v", id, err)
	}
}

// wantRefusal fails unless err is a refusal of kind.
func wantRefusal(t *testing.T, err, kind error) *agentadmin.Error {
	t.Helper()
	var refusal *agentadmin.Error
	if !errors.Is(err, kind) || !errors.As(err, &refusal) || refusal.Message == "" {
		t.Fatalf("err %v, want a refusal %v with a message", err, kind)
	}
	return refusal
}

func TestCommandsActOnlyOnTheCallersSessions(t *testing.T) {
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		ctx := context.Background()
		svc := newService(t, d)
		mustAgent(t, svc, "shared", "")
		mustAgent(t, svc, "agent-b", "org-b")
		mustSession(t, d, "s-a", "org-a")
		mustSession(t, d, "s-b", "org-b")
		stop := agentadmin.CommandRequest{Action: models.ActionStopSession}

		// Another organization's session and a session that does not exist: one answer.
		req := stop
		req.SessionID = "s-b"
		other := wantRefusal(t, errOf(svc.SubmitCommand(ctx, adminOf("org-a"), "shared", req)), agentadmin.ErrForbiddenSession)
		req.SessionID = "nope"
		unknown := wantRefusal(t, errOf(svc.SubmitCommand(ctx, adminOf("org-a"), "shared", req)), agentadmin.ErrForbiddenSession)
		if other.Message != unknown.Message {
			t.Fatalf("another org's session answered %q, an unknown one %q", other.Message, unknown.Message)
		}
		// An agent of another organization does not exist for the caller.
		req.SessionID = "s-a"
		wantRefusal(t, errOf(svc.SubmitCommand(ctx, adminOf("org-a"), "agent-b", req)), agentadmin.ErrUnknownAgent)
		// A shared agent's command must name a session.
		wantRefusal(t, errOf(svc.SubmitCommand(ctx, adminOf("org-a"), "shared", stop)), agentadmin.ErrForbiddenSession)
		// The payload may not name a second session.
		req.Payload = map[string]any{"sessionId": "s-b"}
		wantRefusal(t, errOf(svc.SubmitCommand(ctx, adminOf("org-a"), "shared", req)), agentadmin.ErrSessionMismatch)
		req.Payload = map[string]any{"sessionId": 7}
		wantRefusal(t, errOf(svc.SubmitCommand(ctx, adminOf("org-a"), "shared", req)), agentadmin.ErrInvalidSessionID)

		// The caller's own session: the server sets the session and namespace the agent reads.
		req.Payload = map[string]any{"namespace": "ns-org-b"}
		cmd, err := svc.SubmitCommand(ctx, adminOf("org-a"), "shared", req)
		if err != nil {
			t.Fatalf("own session: %v", err)
		}
		stored, err := d.GetCommand(ctx, cmd.CommandID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.OrgID != "org-a" || stored.Payload["sessionId"] != "s-a" || stored.Payload["namespace"] != "ns-org-a" {
			t.Fatalf("stored %+v: want org-a, payload sessionId s-a and namespace ns-org-a", stored)
		}
		// Only the session's organization reads the command.
		if _, err := svc.GetCommand(ctx, adminOf("org-b"), cmd.CommandID); !errors.Is(err, agentadmin.ErrUnknownCommand) {
			t.Fatalf("another org read the command: %v", err)
		}
		if _, err := svc.GetCommand(ctx, adminOf("org-a"), cmd.CommandID); err != nil {
			t.Fatalf("own command: %v", err)
		}

		// The service token may name any session, and two.
		req.SessionID, req.Payload = "s-b", map[string]any{"sessionId": "elsewhere"}
		if _, err := svc.SubmitCommand(ctx, auth.ServiceScope(), "shared", req); err != nil {
			t.Fatalf("service token: %v", err)
		}
	})
}

// errOf is the error of a call, for a check of the refusal alone.
func errOf[T any](_ T, err error) error { return err }

// errOf3 is errOf for calls that answer two values and an error.
func errOf3[T, U any](_ T, _ U, err error) error { return err }

func TestStartSessionCreatesTheSessionRow(t *testing.T) {
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		ctx := context.Background()
		svc := newService(t, d)
		mustAgent(t, svc, "agent-a", "org-a")
		start := func(scope auth.Scope, payload map[string]any) (models.AgentCommand, error) {
			return svc.SubmitCommand(ctx, scope, "agent-a", agentadmin.CommandRequest{Action: " " + models.ActionStartSession + " ", Payload: payload})
		}

		cmd, err := start(adminOf("org-a"), map[string]any{
			"user": "alice", "namespace": "kube-system", "template": "vscode",
			"resources": map[string]any{"cpu": "2", "memory": "4Gi"},
		})
		if err != nil {
			t.Fatalf("start_session: %v", err)
		}
		if !strings.HasPrefix(cmd.GetSessionID(), "sess-") || cmd.Payload["sessionId"] != cmd.GetSessionID() {
			t.Fatalf("command %+v: want a server-chosen sess- id, also in the payload", cmd)
		}
		sess, err := d.GetSession(ctx, cmd.GetSessionID())
		if err != nil {
			t.Fatalf("session row: %v", err)
		}
		want := models.Session{ID: cmd.GetSessionID(), OrgID: "org-a", UserID: "alice", Namespace: "ns-org-a", Template: "vscode",
			State: models.SessionStatePending, Platform: models.PlatformKubernetes, AgentID: "agent-a", CPU: "2", Memory: "4Gi"}
		if sess.ID != want.ID || sess.OrgID != want.OrgID || sess.UserID != want.UserID || sess.Namespace != want.Namespace ||
			sess.Template != want.Template || sess.State != want.State || sess.Platform != want.Platform ||
			sess.AgentID != want.AgentID || sess.CPU != want.CPU || sess.Memory != want.Memory {
			t.Fatalf("session row %+v, want %+v", sess, want)
		}
		if cmd.Payload["namespace"] != "ns-org-a" {
			t.Fatalf("payload namespace %v: the organization's, whatever the request said", cmd.Payload["namespace"])
		}

		// The service token chooses the namespace.
		cmd, err = start(auth.ServiceScope(), map[string]any{"user": "bob", "orgId": "org-a", "namespace": "custom"})
		if err != nil {
			t.Fatalf("service start_session: %v", err)
		}
		if sess, err = d.GetSession(ctx, cmd.GetSessionID()); err != nil || sess.Namespace != "custom" {
			t.Fatalf("service session %+v, %v: want namespace custom", sess, err)
		}

		wantRefusal(t, errOf(start(adminOf("org-a"), map[string]any{"user": "alice", "orgId": "org-b"})), agentadmin.ErrForbiddenOrg)
		wantRefusal(t, errOf(start(auth.ServiceScope(), map[string]any{"user": "alice", "orgId": "org-b"})), agentadmin.ErrForbiddenOrg)
		wantRefusal(t, errOf(start(adminOf("org-a"), map[string]any{})), agentadmin.ErrMissingUser)
		wantRefusal(t, errOf(start(adminOf("org-a"), map[string]any{"user": "a\x00"})), agentadmin.ErrInvalidPayload)
		taken := agentadmin.CommandRequest{Action: models.ActionStartSession, SessionID: sess.ID, Payload: map[string]any{"user": "alice"}}
		wantRefusal(t, errOf(svc.SubmitCommand(ctx, adminOf("org-a"), "agent-a", taken)), agentadmin.ErrSessionExists)
		wantRefusal(t, errOf(svc.SubmitCommand(ctx, adminOf("org-a"), "agent-a", agentadmin.CommandRequest{Action: " "})), agentadmin.ErrInvalidAction)
	})
}

func TestApproval(t *testing.T) {
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		ctx := context.Background()
		svc := newService(t, d)
		reg := models.AgentRegistration{AgentID: "self", Platform: models.PlatformDocker}
		agent, key, err := svc.Register(ctx, bootstrapKey, reg)
		if err != nil || key != "" || agent.ApprovalStatus != models.ApprovalPending || agent.OrgID != "" {
			t.Fatalf("register: %+v %q %v: want a shared pending agent, no key", agent, key, err)
		}
		wantRefusal(t, errOf3(svc.Register(ctx, "wrong", reg)), agentadmin.ErrInvalidAgentKey)
		wantRefusal(t, errOf(svc.SubmitCommand(ctx, auth.ServiceScope(), "self", agentadmin.CommandRequest{Action: "ping"})), agentadmin.ErrNotApproved)
		if _, err := svc.Admit(ctx, "self", bootstrapKey); !errors.Is(err, agentadmin.ErrNotApproved) {
			t.Fatalf("pending agent admitted: %v", err)
		}

		// A shared agent is the service token's to approve.
		_, _, err = svc.Approve(ctx, adminOf("org-a"), "self")
		wantRefusal(t, err, agentadmin.ErrSharedAgent)
		agent, key, err = svc.Approve(ctx, auth.ServiceScope(), "self")
		if err != nil || key == "" || agent.ApprovalStatus != models.ApprovalApproved {
			t.Fatalf("approve: %+v %q %v", agent, key, err)
		}
		_, _, err = svc.Approve(ctx, auth.ServiceScope(), "self")
		wantRefusal(t, err, agentadmin.ErrAlreadyApproved)
		if _, err := svc.Admit(ctx, "self", key); err != nil {
			t.Fatalf("approved agent with its key: %v", err)
		}
		// Its own key replaces the bootstrap key, and an unknown agent gets the same answer.
		wantRefusal(t, errOf(svc.Admit(ctx, "self", bootstrapKey)), agentadmin.ErrInvalidAgentKey)
		wantRefusal(t, errOf(svc.Admit(ctx, "nobody", key)), agentadmin.ErrInvalidAgentKey)

		// An organization's admin approves and rejects its own agents, and sees no other's.
		mustAgent(t, svc, "agent-b", "org-b")
		_, _, err = svc.Approve(ctx, adminOf("org-a"), "agent-b")
		wantRefusal(t, err, agentadmin.ErrUnknownAgent)
		if agent, err = svc.Reject(ctx, adminOf("org-b"), "agent-b"); err != nil || agent.ApprovalStatus != models.ApprovalRejected {
			t.Fatalf("reject own agent: %+v %v", agent, err)
		}
		wantRefusal(t, errOf3(svc.Register(ctx, bootstrapKey, models.AgentRegistration{AgentID: "agent-b", Platform: models.PlatformDocker})), agentadmin.ErrInvalidAgentKey)
		if agent, key, err = svc.Approve(ctx, adminOf("org-b"), "agent-b"); err != nil || key == "" {
			t.Fatalf("approve own rejected agent: %+v %v", agent, err)
		}

		list, err := svc.ListAgents(ctx, adminOf("org-a"))
		if err != nil || len(list) != 1 || list[0].ID != "self" || list[0].Status != models.AgentStatusOffline {
			t.Fatalf("org-a's list %+v %v: want the shared agent alone, offline", list, err)
		}
		if list, err = svc.ListAgents(ctx, auth.ServiceScope()); err != nil || len(list) != 2 {
			t.Fatalf("service list %+v %v: want both agents", list, err)
		}
		_, _, err = svc.CreateAgent(ctx, adminOf("org-a"), models.AgentRegistration{AgentID: "x", OrgID: "org-b", Platform: models.PlatformVM})
		wantRefusal(t, err, agentadmin.ErrForbiddenOrg)
		_, _, err = svc.CreateAgent(ctx, adminOf("org-a"), models.AgentRegistration{AgentID: "self", Platform: models.PlatformVM})
		wantRefusal(t, err, agentadmin.ErrAgentExists)
	})
}
