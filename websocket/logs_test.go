package websocket

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// Wired as the server wires them (one PodLogs per replica, built first and handed to both the
// Manager and the hub, no Config.Agents), a browser on replica a gets the lines of an agent on
// replica b in order, the agent is told to stop when the browser leaves, the agent leaving ends
// the stream with log_error, and no route is left on either replica.
func TestPodLogsSharedAcrossReplicas(t *testing.T) {
	d := dbtest.Open(t, "postgres")
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
	da, db2 := node("a"), node("b")
	logsA := NewPodLogs(PodLogsConfig{Directory: da})
	a := newAgentHarness(t, d, AgentHubConfig{Replica: "a", Directory: da, Logs: logsA})
	b := newAgentHarness(t, d, AgentHubConfig{Replica: "b", Directory: db2, Logs: NewPodLogs(PodLogsConfig{Directory: db2})})
	b.addAgent("ag1")
	if err := d.CreateSession(t.Context(), models.Session{ID: "s1", OrgID: "o1", UserID: "u1", Namespace: "ns-o1",
		PodName: "pod-s1", AgentID: "ag1", State: models.SessionStateRunning}); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, d, Config{Logs: logsA})
	base := logsServer(t, m)
	agent := b.connect("ag1")
	testkit.Eventually(t, 5*time.Second, "replica a sees the agent on b", func() bool { return a.hub.IsAgentConnected("ag1") })

	browser := dial(t, base, params("org", "o1", "role", "operator", "ns", "ns-o1", "pod", "pod-s1"))
	req := agent.logsRequest()
	relayAndLeave(t, agent, browser, req, 2000)

	browser = dial(t, base, params("org", "o1", "role", "operator", "ns", "ns-o1", "pod", "pod-s1"))
	req = agent.logsRequest()
	agent.send(models.MessageTypeLog, models.LogLine{RequestID: req.RequestID, Line: "before"})
	if l := readLog(t, browser); l.Line != "before" {
		t.Fatalf("got %+v", l)
	}
	_ = agent.conn.Close()
	if l := readLog(t, browser); l.Type != "log_error" || !strings.Contains(l.Message, "disconnected") {
		t.Fatalf("after the agent left: %+v", l)
	}
	if code, _ := expectClose(t, browser, 5*time.Second); code != websocket.CloseInternalServerErr {
		t.Fatalf("close %d, want 1011", code)
	}
	testkit.Eventually(t, 5*time.Second, "no log routes left", func() bool {
		return openRoutes(a.hub.logs) == 0 && openRoutes(b.hub.logs) == 0
	})
}

// A hub refuses a PodLogs that reaches other replicas through another directory than its own:
// the streams of browsers elsewhere would never reach its agents.
func TestHubLogsNeedTheHubsDirectory(t *testing.T) {
	alone := cluster.NewMemoryDirectory("a")
	if p := NewPodLogs(PodLogsConfig{}); hubLogs(AgentHubConfig{Logs: p}, alone) != p {
		t.Fatal("a PodLogs without a directory is refused by a hub alone")
	}
	if p := NewPodLogs(PodLogsConfig{Directory: alone}); hubLogs(AgentHubConfig{Logs: p}, alone) != p {
		t.Fatal("a PodLogs of the hub's directory is refused")
	}
	if hubLogs(AgentHubConfig{}, alone) == nil {
		t.Fatal("no PodLogs made for a hub without one")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a PodLogs of another replica's directory is taken")
		}
	}()
	hubLogs(AgentHubConfig{Logs: NewPodLogs(PodLogsConfig{Directory: cluster.NewMemoryDirectory("b")})}, alone)
}

// openRoutes counts the log streams p still routes.
func openRoutes(p *PodLogs) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.routes)
}
