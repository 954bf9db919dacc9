package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// TestGracefulShutdownHandsAgentsOver sends SIGTERM to one of two replicas: its browsers and
// agents are closed with 1001 (agents get no `shutdown`, which would retire them), the process
// exits within its shutdown timeout, and its agents' claims in Redis are released at once (a
// replica killed with -9 keeps them until the ownership TTL, here 30 s): the other replica
// shows them offline immediately, and a command sent to an agent that reconnects there is
// delivered at once.
func TestGracefulShutdownHandsAgentsOver(t *testing.T) {
	ctx := context.Background()
	pgURL := dbtest.URL(t, "postgres")
	redisSrv := redistest.Start(t)
	args := []string{
		"--database-url", pgURL, "--redis-url", redisSrv.URL(),
		"--jwt-secret", testSecret, "--service-token", testService,
		"--agent-ownership-ttl", "30s", "--shutdown-timeout", "5s",
	}
	a, b := startReplica(t, "a", args...), startReplica(t, "b", args...)
	d, err := db.Open(ctx, pgURL, db.WithMaxOpenConns(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	keys := map[string]string{}
	for _, id := range []string{"grace-raw", "grace-sdk"} {
		keys[id] = auth.NewAgentKey()
		if err := d.CreateAgent(ctx, models.Agent{ID: id, Platform: models.PlatformDocker,
			ApprovalStatus: models.ApprovalApproved, APIKeyHash: auth.HashAgentKey(keys[id])}); err != nil {
			t.Fatal(err)
		}
	}
	wsBase := "ws" + strings.TrimPrefix(a.base, "http")

	// On a: a browser, an agent read frame by frame, and an agent of the SDK that reconnects
	// through a balancer to whichever replica answers.
	browser, _, err := gorilla.DefaultDialer.Dial(wsBase+"/api/v1/ws/sessions?token="+mint(t, "u1", "o1", auth.RoleUser, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()
	raw, _, err := gorilla.DefaultDialer.Dial(wsBase+"/api/v1/agents/connect?agent_id=grace-raw", http.Header{auth.AgentKeyHeader: {keys["grace-raw"]}})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	lb := startBalancer(t, a.base) // to b once a is stopping
	ran := make(chan string, 4)
	ag, err := agentclient.New(agentclient.Config{
		ServerURL: lb.base(), AgentID: "grace-sdk", APIKey: keys["grace-sdk"], Platform: models.PlatformDocker,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ag.Handle(models.ActionStopSession, func(_ context.Context, cmd agentclient.Command) (map[string]any, error) {
		ran <- cmd.ID
		return nil, nil
	})
	runCtx, stopAgent := context.WithCancel(ctx)
	var agentWG sync.WaitGroup
	agentWG.Add(1)
	go func() { defer agentWG.Done(); _ = ag.Run(runCtx) }()
	t.Cleanup(func() { stopAgent(); agentWG.Wait() })

	statuses := func(p *replicaProc) map[string][2]string { // agent → status, replica
		var out struct {
			Agents []struct{ AgentID, Status, Replica string } `json:"agents"`
		}
		if code, err := p.call(ctx, http.MethodGet, "/api/v1/agents", nil, &out); err != nil || code != http.StatusOK {
			return nil
		}
		m := map[string][2]string{}
		for _, x := range out.Agents {
			m[x.AgentID] = [2]string{x.Status, x.Replica}
		}
		return m
	}
	testkit.Eventually(t, 20*time.Second, "both agents online on a", func() bool {
		s := statuses(b)
		return s["grace-raw"] == [2]string{"online", "a"} && s["grace-sdk"] == [2]string{"online", "a"}
	})
	lb.setBackends(b.base)

	// Frames the raw agent and the browser receive until their close.
	closes := func(c *gorilla.Conn, sawShutdown *bool) chan int {
		out := make(chan int, 1)
		go func() {
			for {
				_, data, err := c.ReadMessage()
				if err != nil {
					code := -1
					if ce, ok := err.(*gorilla.CloseError); ok {
						code = ce.Code
					}
					out <- code
					return
				}
				if sawShutdown != nil && strings.Contains(string(data), `"type":"shutdown"`) {
					*sawShutdown = true
				}
			}
		}()
		return out
	}
	var rawSawShutdown bool
	browserClosed, rawClosed := closes(browser, nil), closes(raw, &rawSawShutdown)

	start := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan int{"browser": browserClosed, "agent": rawClosed} {
		select {
		case code := <-ch:
			if code != gorilla.CloseGoingAway {
				t.Errorf("%s closed with %d, want 1001", name, code)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not closed within 10 s of SIGTERM", name)
		}
	}
	if rawSawShutdown {
		t.Error("the agent was sent `shutdown`: it would never reconnect")
	}
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatal("replica a did not exit within 10 s of SIGTERM (shutdown timeout 5 s)")
	}
	exited := time.Since(start)

	// a's claims are gone: b shows grace-raw offline at once, not online on a for 30 s.
	if s := statuses(b)["grace-raw"]; s != [2]string{"offline", ""} {
		t.Fatalf("right after a exited, b shows grace-raw %v, want offline: its claim was not released", s)
	}
	testkit.Eventually(t, 10*time.Second, "grace-sdk back online on b", func() bool { return statuses(b)["grace-sdk"] == [2]string{"online", "b"} })
	back := time.Since(start)
	var answer struct{ CommandID string }
	if code, err := b.call(ctx, http.MethodPost, "/api/v1/admin/agents/grace-sdk/command",
		map[string]any{"action": models.ActionStopSession, "sessionId": "s-1"}, &answer); err != nil || code != http.StatusAccepted {
		t.Fatalf("command via b: %d %v", code, err)
	}
	sent := time.Now()
	select {
	case id := <-ran:
		if id != answer.CommandID {
			t.Fatalf("ran %s, want %s", id, answer.CommandID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the command did not reach grace-sdk on b within 5 s")
	}
	t.Logf("SIGTERM → a exited %v; grace-sdk online on b after %v; command delivered in %v",
		exited.Round(time.Millisecond), back.Round(time.Millisecond), time.Since(sent).Round(time.Millisecond))
}
