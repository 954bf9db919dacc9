package websocket

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// replicaPair is two agent hubs, replicas "a" and "b", sharing one PostgreSQL database and one
// Redis, as two processes behind a load balancer would.
func replicaPair(t *testing.T) (a, b *agentHarness, d *db.Database) {
	t.Helper()
	return replicaPairWith(t, false)
}

// replicaPairWith is replicaPair; with podLogs each hub is given a PodLogs built on its own
// directory, as the server builds them (the Manager of a replica is then handed the same one).
func replicaPairWith(t *testing.T, podLogs bool) (a, b *agentHarness, d *db.Database) {
	t.Helper()
	d = dbtest.Open(t, "postgres")
	client, prefix := redistest.Client(t)
	node := func(replica string) cluster.Directory {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := cluster.NewRedis(ctx, client, cluster.RedisOptions{Replica: replica, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r.Directory()
	}
	// Cleanups run last-in first-out: the hubs stop before their Redis nodes close.
	da, db2 := node("a"), node("b")
	ca, cb := AgentHubConfig{Replica: "a", Directory: da}, AgentHubConfig{Replica: "b", Directory: db2}
	if podLogs {
		ca.Logs, cb.Logs = NewPodLogs(PodLogsConfig{Directory: da}), NewPodLogs(PodLogsConfig{Directory: db2})
	}
	a = newAgentHarness(t, d, ca)
	b = newAgentHarness(t, d, cb)
	return a, b, d
}

// A command accepted by replica b for an agent on replica a reaches the agent, once, and the
// database records its transitions; b sees the agent connected; broadcasts and disconnects
// from b reach agents on a.
func TestAgentsAcrossReplicas(t *testing.T) {
	a, b, _ := replicaPair(t)
	a.addAgent("on-a")
	b.addAgent("on-b")
	x := a.connect("on-a")
	y := b.connect("on-b")

	// connect returns once the local map has the connection; the cluster claim follows it.
	testkit.Eventually(t, 5*time.Second, "each replica sees the other's agent", func() bool {
		return b.hub.IsAgentConnected("on-a") && a.hub.IsAgentConnected("on-b")
	})
	if got := b.hub.GetConnectedAgents(); !slices.Equal(got, []string{"on-a", "on-b"}) {
		t.Fatalf("GetConnectedAgents from b = %v", got)
	}
	where, err := b.hub.AgentLocations(t.Context(), []string{"on-a", "on-b", "nowhere"})
	if err != nil || where["on-a"] != "a" || where["on-b"] != "b" || len(where) != 2 {
		t.Fatalf("locations = %v, %v", where, err)
	}

	cmd := b.submit("on-a", models.ActionStartSession, map[string]any{"sessionId": "s1"})
	got := x.command()
	if got.CommandID != cmd.CommandID || got.Attempt != 1 {
		t.Fatalf("agent on a got %+v, want %s attempt 1", got, cmd.CommandID)
	}
	x.send(models.MessageTypeAck, map[string]any{"commandId": cmd.CommandID})
	x.send(models.MessageTypeComplete, map[string]any{"commandId": cmd.CommandID, "result": map[string]any{"ok": true}})
	testkit.Eventually(t, 5*time.Second, "command completed", func() bool {
		return b.command(cmd.CommandID).Status == models.CommandStatusCompleted
	})
	if c := b.command(cmd.CommandID); c.Attempts != 1 {
		t.Fatalf("attempts = %d, want 1", c.Attempts)
	}

	// SendCommandToAgent from b for a's agent: stored, delivered through a, no error.
	direct := &models.AgentCommand{Action: "custom"}
	if err := b.hub.SendCommandToAgent("on-a", direct); err != nil {
		t.Fatalf("SendCommandToAgent across replicas: %v", err)
	}
	if got := x.command(); got.CommandID != direct.CommandID {
		t.Fatalf("agent on a got %s, want %s", got.CommandID, direct.CommandID)
	}

	b.hub.BroadcastToAllAgents([]byte(`{"type":"notice","timestamp":"2026-01-01T00:00:00Z","payload":{"n":1}}`), "on-b")
	if f := x.next(); f.Type != "notice" {
		t.Fatalf("agent on a got %s, want the broadcast", f.Type)
	}
	b.hub.BroadcastToAllAgents([]byte(`{"type":"notice","timestamp":"2026-01-01T00:00:00Z","payload":{"n":2}}`), "")
	if f := y.next(); f.Type != "notice" || string(f.Payload) != `{"n":2}` {
		t.Fatalf("agent on b got %s %s, want the second broadcast only", f.Type, f.Payload)
	}
	if f := x.next(); f.Type != "notice" || string(f.Payload) != `{"n":2}` {
		t.Fatalf("agent on a got %s %s, want the second broadcast", f.Type, f.Payload)
	}

	if !b.hub.DisconnectAgent("on-a", websocket.CloseNormalClosure, "maintenance", false) {
		t.Fatal("DisconnectAgent from b did not find the agent on a")
	}
	if code, _ := expectClose(t, x.conn, 5*time.Second); code != websocket.CloseNormalClosure {
		t.Fatalf("close code %d", code)
	}
	testkit.Eventually(t, 5*time.Second, "agent gone from the cluster", func() bool {
		return !b.hub.IsAgentConnected("on-a") && !a.hub.IsAgentConnected("on-a")
	})
}

// The agent reconnects to replica b while its connection to a lingers: a closes the old one
// with 4000, and a's late cleanup neither marks the agent offline nor erases b's claim.
func TestAgentMovesBetweenReplicas(t *testing.T) {
	a, b, _ := replicaPair(t)
	a.addAgent("mover")
	old := a.connect("mover")
	b.connect("mover")
	if code, _ := expectClose(t, old.conn, 5*time.Second); code != CloseReplaced {
		t.Fatalf("old connection closed with %d, want %d", code, CloseReplaced)
	}
	testkit.Eventually(t, 5*time.Second, "a's cleanup ran", func() bool { return a.hub.GetConnection("mover") == nil })
	where, err := a.hub.AgentLocations(t.Context(), []string{"mover"})
	if err != nil || where["mover"] != "b" {
		t.Fatalf("after the move, locations = %v, %v; want b", where, err)
	}
	row := a.agentRow("mover")
	if row.Status != models.AgentStatusOnline || row.Replica != "b" {
		t.Fatalf("agent row = %s on %q, want online on b", row.Status, row.Replica)
	}
	// A command from a now goes to b.
	cmd := a.submit("mover", "custom", nil)
	testkit.Eventually(t, 5*time.Second, "delivered through b", func() bool {
		return a.command(cmd.CommandID).Status == models.CommandStatusSent
	})
}

// NewAgentHubWithRedis: nil means a single node; a client joins the cluster, and Stop leaves it.
func TestNewAgentHubWithRedis(t *testing.T) {
	d := dbtest.Open(t, "sqlite")
	single := NewAgentHubWithRedis(d, nil)
	if _, ok := single.dir.(*cluster.MemoryDirectory); !ok {
		t.Fatalf("nil client: directory %T, want the in-process one", single.dir)
	}
	single.Stop()

	client, _ := redistest.Client(t)
	h := NewAgentHubWithRedis(d, client)
	if _, ok := h.dir.(*cluster.RedisDirectory); !ok || h.link.owned == nil {
		t.Fatalf("with a client: directory %T", h.dir)
	}
	go h.Run()
	h.Stop()
	if err := h.link.owned.Ready(t.Context()); err == nil {
		t.Fatal("the hub's Redis node still subscribed after Stop")
	}

	// An unreachable Redis: the hub starts anyway, serving its own agents.
	srv := redistest.Start(t)
	srv.Stop(t)
	dead := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer dead.Close()
	h2 := NewAgentHubWithRedis(d, dead)
	defer h2.Stop()
	if h2.IsAgentConnected("nobody") {
		t.Fatal("unknown agent connected")
	}
	msg, _ := json.Marshal(map[string]string{"type": "notice"})
	h2.BroadcastToAllAgents(msg, "") // must not block or panic without Redis
}
