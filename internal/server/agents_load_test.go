package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// executions counts how often agents ran each command.
type executions struct {
	mu   sync.Mutex
	byID map[string]int
}

func (e *executions) add(id string) {
	e.mu.Lock()
	e.byID[id]++
	e.mu.Unlock()
}

func (e *executions) check(t *testing.T, want int) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.byID) != want {
		t.Errorf("agents ran %d distinct commands, want %d", len(e.byID), want)
	}
	for id, n := range e.byID {
		if n != 1 {
			t.Errorf("command %s ran %d times", id, n)
		}
	}
}

// provisionAgents stores n approved agents with keys of their own and returns the keys.
func provisionAgents(t *testing.T, ts *testServer, prefix string, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range n {
		keys[i] = auth.NewAgentKey()
		err := ts.Database().CreateAgent(t.Context(), models.Agent{
			ID: fmt.Sprintf("%s-%04d", prefix, i), Platform: models.PlatformDocker,
			ApprovalStatus: models.ApprovalApproved, APIKeyHash: auth.HashAgentKey(keys[i]),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// runAgents starts one agentclient.Agent per key; each runs every command once and completes
// it. The returned stop cancels them all and waits for them.
func runAgents(t *testing.T, ts *testServer, prefix string, keys []string, ran *executions, dialer *gorilla.Dialer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i, key := range keys {
		a, err := agentclient.New(agentclient.Config{
			ServerURL: ts.base, AgentID: fmt.Sprintf("%s-%04d", prefix, i), APIKey: key,
			Platform: models.PlatformDocker, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
			Logger: quiet, Dialer: dialer,
		})
		if err != nil {
			t.Fatal(err)
		}
		a.Handle(models.ActionWakeSession, func(_ context.Context, cmd agentclient.Command) (map[string]any, error) {
			ran.add(cmd.ID)
			return map[string]any{"ran": cmd.ID}, nil
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil {
				t.Errorf("agent %s: %v", a.ID(), err)
			}
		}()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestThousandAgentsTenCommandsEach: 1,000 agents connect at once to one server, each gets 10
// commands through the admin API and completes them. All 10,000 end completed, each stored
// once and run once.
func TestThousandAgentsTenCommandsEach(t *testing.T) {
	t.Parallel()
	const agents, perAgent = 1000, 10
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ts := startServer(t, dialect, func(c *Config) { c.ShutdownTimeout = 30 * time.Second })
			keys := provisionAgents(t, ts, "load", agents)
			ran := &executions{byID: map[string]int{}}
			dialer := &gorilla.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
			stop := runAgents(t, ts, "load", keys, ran, dialer)
			testkit.Eventually(t, 2*time.Minute, "all agents connected", func() bool { return ts.Agents().ConnectedCount() == agents })

			start := time.Now()
			var posted atomic.Int64
			jobs := make(chan string)
			var wg sync.WaitGroup
			for range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for agentID := range jobs {
						code, raw := ts.call(t, "POST", "/api/v1/admin/agents/"+agentID+"/command", bearer(testService),
							`{"action":"wake_session","payload":{"sessionId":"s-`+agentID+`"}}`)
						if code != http.StatusAccepted {
							t.Errorf("command to %s: %d %s", agentID, code, raw)
							continue
						}
						posted.Add(1)
					}
				}()
			}
			for range perAgent {
				for i := range agents {
					jobs <- fmt.Sprintf("load-%04d", i)
				}
			}
			close(jobs)
			wg.Wait()
			testkit.Eventually(t, 3*time.Minute, "all commands completed", func() bool {
				counts, err := ts.Database().CountCommands(context.Background(), "")
				return err == nil && counts[models.CommandStatusCompleted] == agents*perAgent
			})
			t.Logf("%s: %d commands posted and completed by %d agents in %v", dialect, posted.Load(), agents, time.Since(start).Round(time.Millisecond))
			counts, _ := ts.Database().CountCommands(t.Context(), "")
			total := 0
			for _, n := range counts {
				total += n
			}
			if total != agents*perAgent {
				t.Errorf("database holds %d commands (%v), want %d", total, counts, agents*perAgent)
			}
			stop()
			ran.check(t, agents*perAgent)
		})
	}
}

// killableConn is a client connection the test can stall (reads wait) and cut without a close
// frame, like a network that drops an agent mid-stream.
type killableConn struct {
	net.Conn
	mu     sync.Mutex
	stall  chan struct{} // non-nil while reads are stalled; closed to resume
	killed atomic.Bool
}

// Read holds what arrives while the connection is stalled, so a frame in flight when the
// stall began is never seen if the connection is then killed.
func (k *killableConn) Read(p []byte) (int, error) {
	n, err := k.Conn.Read(p)
	k.mu.Lock()
	stall := k.stall
	k.mu.Unlock()
	if stall != nil {
		<-stall
		if k.killed.Load() {
			return 0, net.ErrClosed
		}
	}
	return n, err
}

func (k *killableConn) pause() {
	k.mu.Lock()
	k.stall = make(chan struct{})
	k.mu.Unlock()
}

// kill closes the TCP connection without a close frame and lets stalled reads fail.
func (k *killableConn) kill() {
	k.killed.Store(true)
	_ = k.Conn.Close()
	k.mu.Lock()
	if k.stall != nil {
		close(k.stall)
		k.stall = nil
	}
	k.mu.Unlock()
}

// TestAgentKilledWithUnacknowledgedCommands: the agent's TCP connection stalls while commands
// are sent to it (so none is acknowledged), then dies without a close frame. The agent
// reconnects; every command is delivered again and completes exactly once.
func TestAgentKilledWithUnacknowledgedCommands(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, dialect)
			keys := provisionAgents(t, ts, "kill", 1)
			var (
				mu    sync.Mutex
				conns []*killableConn
			)
			dialer := &gorilla.Dialer{
				HandshakeTimeout: 10 * time.Second,
				NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					kc := &killableConn{Conn: c}
					mu.Lock()
					conns = append(conns, kc)
					mu.Unlock()
					return kc, nil
				},
			}
			ran := &executions{byID: map[string]int{}}
			stop := runAgents(t, ts, "kill", keys, ran, dialer)
			t.Cleanup(func() { // runs before stop: a stalled read must not hold the agent
				mu.Lock()
				defer mu.Unlock()
				for _, c := range conns {
					c.kill()
				}
			})
			testkit.Eventually(t, 10*time.Second, "agent connected", func() bool { return ts.Agents().IsAgentConnected("kill-0000") })
			first := ts.Agents().GetConnection("kill-0000")
			mu.Lock()
			victim := conns[len(conns)-1]
			mu.Unlock()

			victim.pause()
			var ids []string
			for i := range 5 {
				code, raw := ts.call(t, "POST", "/api/v1/admin/agents/kill-0000/command", bearer(testService),
					fmt.Sprintf(`{"action":"wake_session","sessionId":"s%d"}`, i))
				if code != http.StatusAccepted {
					t.Fatalf("command: %d %s", code, raw)
				}
				var acc struct{ CommandID string }
				_ = json.Unmarshal(raw, &acc)
				ids = append(ids, acc.CommandID)
			}
			testkit.Eventually(t, 10*time.Second, "commands sent, none acknowledged", func() bool {
				for _, id := range ids {
					c, err := ts.Database().GetCommand(context.Background(), id)
					if err != nil || c.Status != models.CommandStatusSent {
						return false
					}
				}
				return true
			})
			victim.kill()

			testkit.Eventually(t, 30*time.Second, "every command completed", func() bool {
				for _, id := range ids {
					c, err := ts.Database().GetCommand(context.Background(), id)
					if err != nil || c.Status != models.CommandStatusCompleted {
						return false
					}
				}
				return true
			})
			if now := ts.Agents().GetConnection("kill-0000"); now == nil || now == first {
				t.Error("the agent did not reconnect")
			}
			for _, id := range ids {
				c, _ := ts.Database().GetCommand(t.Context(), id)
				if c.Attempts != 2 || c.Result["ran"] != id {
					t.Errorf("command %s: attempts %d result %v, want a second delivery and its own result", id, c.Attempts, c.Result)
				}
			}
			stop()
			ran.check(t, len(ids))
		})
	}
}
