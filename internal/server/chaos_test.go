package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// The chaos tests inject one fault each, on loopback, into a server under traffic, and log
// what was lost and how long service took to come back (docs/RELIABILITY.md records their
// figures; scripts/chaos.sh runs them). Killing a replica and restarting Redis are in
// TestThreeReplicas.

// chaosAgent runs an SDK agent whose stop_session takes work, recording each run.
func chaosAgent(t *testing.T, ts *testServer, id, key string, work time.Duration, ran *executions) {
	t.Helper()
	ag, err := agentclient.New(agentclient.Config{
		ServerURL: ts.base, AgentID: id, APIKey: key, Platform: models.PlatformDocker,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ag.Handle(models.ActionStopSession, func(ctx context.Context, cmd agentclient.Command) (map[string]any, error) {
		select {
		case <-time.After(work):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ran.add(cmd.ID)
		return map[string]any{"stopped": true}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ag.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// submit sends a command to agentID through the admin API: its id, or "" with the status of a
// refusal.
func (ts *testServer) submit(t *testing.T, agentID, sessionID string) (string, int) {
	t.Helper()
	code, body := ts.call(t, http.MethodPost, "/api/v1/admin/agents/"+agentID+"/command", bearer(testService),
		fmt.Sprintf(`{"action":"stop_session","sessionId":%q}`, sessionID))
	if code != http.StatusAccepted {
		return "", code
	}
	var answer struct{ CommandID string }
	if err := json.Unmarshal(body, &answer); err != nil {
		t.Fatalf("command answer %s: %v", body, err)
	}
	return answer.CommandID, code
}

// allCompleted reports whether every command of ids is completed in the database.
func (ts *testServer) allCompleted(t *testing.T, ids []string) bool {
	for _, id := range ids {
		if c, err := ts.Database().GetCommand(t.Context(), id); err != nil || c.Status != models.CommandStatusCompleted {
			return false
		}
	}
	return true
}

// TestChaosPostgresCrash crashes the database (an immediate stop: connections cut, no
// checkpoint) while commands are in flight and browsers are connected, keeps it down for 3 s,
// then starts it again. Nothing stored may be lost: every command accepted before or after
// the outage completes, and commands refused during it were answered 503, never accepted and
// dropped. Browsers keep their sockets and their events throughout.
func TestChaosPostgresCrash(t *testing.T) {
	pg := dbtest.StartPostgres(t)
	ts := startServer(t, "postgres", func(c *Config) {
		c.DatabaseURL = pg.URL()
		c.AgentCheckInterval = 200 * time.Millisecond
		c.CommandAckTimeout = time.Second
		c.AgentHeartbeatFlush = 200 * time.Millisecond
	})
	keys := provisionAgents(t, ts, "pgc", 1)
	ran := &executions{byID: map[string]int{}}
	chaosAgent(t, ts, "pgc-0000", keys[0], 300*time.Millisecond, ran)
	testkit.Eventually(t, 10*time.Second, "the agent connected", func() bool { return ts.Agents().IsAgentConnected("pgc-0000") })
	browser, status, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+mint(t, "ops", "o1", auth.RoleOperator, time.Hour), nil)
	if browser == nil {
		t.Fatalf("browser: %d", status)
	}
	var events atomic.Int64
	go func() {
		for {
			var f wsFrame
			if err := browser.ReadJSON(&f); err != nil {
				return
			}
			if f.str("type") == "session.updated" {
				events.Add(1)
			}
		}
	}()

	var accepted []string
	for i := range 10 { // in flight when the database goes: the agent takes 300 ms each
		id, code := ts.submit(t, "pgc-0000", fmt.Sprintf("before-%d", i))
		if id == "" {
			t.Fatalf("command before the crash: %d", code)
		}
		accepted = append(accepted, id)
	}
	// Crash once the agent is at work on the first, with the others still to come.
	testkit.Eventually(t, 10*time.Second, "the agent working on the first command", func() bool {
		c, err := ts.Database().GetCommand(t.Context(), accepted[0])
		return err == nil && c.Status != models.CommandStatusPending && c.Status != models.CommandStatusSent
	})
	pg.Crash(t)
	crashed := time.Now()

	// During the outage: readiness says so, commands are refused plainly, events still flow.
	testkit.Eventually(t, 10*time.Second, "/readyz 503", func() bool { code, _ := ts.call(t, http.MethodGet, "/readyz", nil, ""); return code == 503 })
	notReady := time.Since(crashed)
	refused := 0
	for i := range 5 {
		id, code := ts.submit(t, "pgc-0000", fmt.Sprintf("during-%d", i))
		switch {
		case id != "":
			accepted = append(accepted, id) // taken before the pool noticed: must complete too
		case code == http.StatusServiceUnavailable:
			refused++
		default:
			t.Fatalf("command during the outage: %d, want 202 or 503", code)
		}
	}
	for i := range 5 {
		if code, _ := ts.post(t, "/api/v1/events", testService, fmt.Sprintf(`{"orgId":"o1","type":"session.updated","sessionId":"ev-%d"}`, i)); code != http.StatusAccepted {
			t.Fatalf("event during the outage: %d", code)
		}
	}
	testkit.Eventually(t, 5*time.Second, "events delivered during the outage", func() bool { return events.Load() == 5 })
	time.Sleep(3*time.Second - time.Since(crashed)) // kept: the outage lasts 3 s, the scenario itself

	pg.Start(t)
	started := time.Now()
	testkit.Eventually(t, 30*time.Second, "/readyz 200", func() bool { code, _ := ts.call(t, http.MethodGet, "/readyz", nil, ""); return code == 200 })
	readyAfter := time.Since(started)
	var after string
	testkit.Eventually(t, 30*time.Second, "a command accepted again", func() bool {
		after, _ = ts.submit(t, "pgc-0000", "after")
		return after != ""
	})
	accepted = append(accepted, after)
	testkit.Eventually(t, 60*time.Second, "every accepted command completed", func() bool { return ts.allCompleted(t, accepted) })
	t.Logf("postgres crash: /readyz 503 after %v; %d commands refused with 503 during the outage; after the restart ready in %v, "+
		"all %d accepted commands completed %v after it; %d events delivered during the outage",
		notReady.Round(time.Millisecond), refused, readyAfter.Round(time.Millisecond), len(accepted),
		time.Since(started).Round(time.Millisecond), events.Load())
}

// TestChaosPausedAgentReads connects an agent that keeps sending heartbeats but stops reading,
// as an agent whose read loop is stuck does, and sends it 10 MiB of commands. The server's
// writes to it time out and it is disconnected; another agent's commands are not slowed
// meanwhile; when the agent comes back (reading again) every command is delivered and
// completes. Nothing is lost.
func TestChaosPausedAgentReads(t *testing.T) {
	ts := startServer(t, "sqlite", func(c *Config) {
		c.WriteWait = time.Second
		c.AgentCheckInterval = 200 * time.Millisecond
		c.CommandAckTimeout = 2 * time.Second
		c.MaxBodyBytes = 1 << 20
	})
	keys := provisionAgents(t, ts, "pause", 2)
	ranHealthy := &executions{byID: map[string]int{}}
	chaosAgent(t, ts, "pause-0001", keys[1], 0, ranHealthy)

	// The stuck agent: a receive window of 4 KiB that is never read, and a heartbeat every
	// 200 ms.
	small := &net.Dialer{Control: func(_, _ string, raw syscall.RawConn) error {
		var serr error
		err := raw.Control(func(fd uintptr) {
			serr = setReceiveBuffer(fd, 4096)
		})
		return cmp.Or(err, serr)
	}}
	d := gorilla.Dialer{NetDialContext: small.DialContext}
	stuck, _, err := d.Dial("ws"+strings.TrimPrefix(ts.base, "http")+"/api/v1/agents/connect?agent_id=pause-0000", agentKey(keys[0]))
	if err != nil {
		t.Fatal(err)
	}
	beating := make(chan struct{})
	var beatWG sync.WaitGroup
	beatWG.Add(1)
	go func() {
		defer beatWG.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-beating:
				return
			case <-tick.C:
				b, _ := json.Marshal(map[string]any{"type": "heartbeat", "payload": map[string]any{"status": "online"}})
				_ = stuck.SetWriteDeadline(time.Now().Add(time.Second))
				if stuck.WriteMessage(gorilla.TextMessage, b) != nil {
					return
				}
			}
		}
	}()
	stopBeating := sync.OnceFunc(func() { close(beating); beatWG.Wait(); _ = stuck.Close() })
	t.Cleanup(stopBeating)
	testkit.Eventually(t, 5*time.Second, "both agents connected", func() bool {
		return ts.Agents().IsAgentConnected("pause-0000") && ts.Agents().IsAgentConnected("pause-0001")
	})

	blob := strings.Repeat("x", 256<<10)
	var stuckCmds []string
	start := time.Now()
	for i := range 40 {
		code, body := ts.call(t, http.MethodPost, "/api/v1/admin/agents/pause-0000/command", bearer(testService),
			fmt.Sprintf(`{"action":"stop_session","sessionId":"big-%d","payload":{"blob":%q}}`, i, blob))
		var answer struct{ CommandID string }
		if code != http.StatusAccepted || json.Unmarshal(body, &answer) != nil {
			t.Fatalf("command %d: %d %s", i, code, body)
		}
		stuckCmds = append(stuckCmds, answer.CommandID)
	}
	// The other agent, meanwhile: its commands complete as usual.
	var healthy []string
	for i := range 10 {
		id, code := ts.submit(t, "pause-0001", fmt.Sprintf("healthy-%d", i))
		if id == "" {
			t.Fatalf("healthy command: %d", code)
		}
		healthy = append(healthy, id)
	}
	testkit.Eventually(t, 10*time.Second, "the healthy agent's commands completed", func() bool { return ts.allCompleted(t, healthy) })
	healthyIn := time.Since(start)
	testkit.Eventually(t, 30*time.Second, "the stuck agent disconnected", func() bool { return !ts.Agents().IsAgentConnected("pause-0000") })
	detected := time.Since(start)
	stopBeating()

	// The agent reads again (a fresh connection): every command arrives and completes.
	back := time.Now()
	ran := &executions{byID: map[string]int{}}
	chaosAgent(t, ts, "pause-0000", keys[0], 0, ran)
	// Counted by status, not read command by command: 40 payloads of 256 KiB read 20 times a
	// second would take the server's CPU.
	allDone := func() bool {
		n, _ := ts.Database().CountCommands(t.Context(), "pause-0000")
		return n[models.CommandStatusCompleted] == len(stuckCmds)
	}
	if err := testkit.WaitFor(60*time.Second, allDone); err != nil {
		statuses := map[string]int{}
		for _, id := range stuckCmds {
			c, _ := ts.Database().GetCommand(t.Context(), id)
			statuses[fmt.Sprintf("%s/attempts=%d", c.Status, c.Attempts)]++
		}
		t.Fatalf("the stuck agent's commands did not all complete within 60 s of its return: %v\nserver log tail:\n%s", statuses, tail(ts.logs.String(), 4000))
	}
	ran.check(t, len(stuckCmds)) // each once: the agent drops a command id it already ran
	deliveries := 0
	for _, id := range stuckCmds {
		c, _ := ts.Database().GetCommand(t.Context(), id)
		deliveries += c.Attempts
	}
	t.Logf("paused agent reads: 40 commands of 256 KiB queued; the other agent's 10 commands completed in %v; "+
		"the stuck agent disconnected %v after the first command; back reading, all 40 completed in %v (%d deliveries in all)",
		healthyIn.Round(time.Millisecond), detected.Round(time.Millisecond), time.Since(back).Round(time.Millisecond), deliveries)
}

// TestChaosMalformedFlood floods the server with hostile input from 60 connections at once:
// browsers sending random bytes, agents (with valid keys) sending malformed frames, services
// posting garbage, and peers speaking no HTTP at all. Meanwhile a browser and an agent go on
// as usual: the browser receives every event, the agent completes every command, each
// attacker is refused with its code, and the server ends with the goroutines it started with.
func TestChaosMalformedFlood(t *testing.T) {
	ts := startServer(t, "sqlite")
	keys := provisionAgents(t, ts, "flood", 21)
	ran := &executions{byID: map[string]int{}}
	chaosAgent(t, ts, "flood-0000", keys[0], 0, ran)
	testkit.Eventually(t, 10*time.Second, "the agent connected", func() bool { return ts.Agents().IsAgentConnected("flood-0000") })
	browser, status, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+mint(t, "ops", "o1", auth.RoleOperator, time.Hour), nil)
	if browser == nil {
		t.Fatalf("browser: %d", status)
	}
	readUntil(t, browser, "sessions_update")
	var received atomic.Int64
	go func() {
		for {
			var f wsFrame
			if browser.ReadJSON(&f) != nil {
				return
			}
			if f.str("type") == "session.updated" {
				received.Add(1)
			}
		}
	}()
	baseline := testkit.SteadyGoroutines()

	host := strings.TrimPrefix(ts.base, "http://")
	wsBase := "ws://" + host
	var attackers sync.WaitGroup
	var closes sync.Map // code → count
	countClose := func(code int) {
		n, _ := closes.LoadOrStore(code, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	start := time.Now()
	for i := range 20 { // browsers: random bytes after the handshake
		attackers.Add(1)
		go func() {
			defer attackers.Done()
			conn, _, err := gorilla.DefaultDialer.Dial(wsBase+"/api/v1/ws/sessions?token="+mint(t, fmt.Sprint("b", i), "o1", auth.RoleUser, time.Hour), nil)
			if err != nil {
				return
			}
			defer conn.Close()
			raw := conn.NetConn()
			junk := make([]byte, 1024)
			for j := range junk {
				junk[j] = byte(j*7 + i)
			}
			for range 100 {
				if _, err := raw.Write(junk); err != nil {
					break
				}
			}
			countClose(closeCodeOf(conn))
		}()
	}
	for i := 1; i <= 20; i++ { // agents with valid keys: malformed frames
		attackers.Add(1)
		go func() {
			defer attackers.Done()
			conn, _, err := gorilla.DefaultDialer.Dial(fmt.Sprintf("%s/api/v1/agents/connect?agent_id=flood-%04d", wsBase, i), agentKey(keys[i]))
			if err != nil {
				return
			}
			defer conn.Close()
			for _, frame := range []string{`{`, `[]`, `{"type":7}`, `{"type":"ack","payload":{"commandId":5}}`, `null`, "\xff\xfe", `{"type":"status","payload":"x"}`,
				`{"type":"ack","payload":{}}`, `{"type":"heartbeat","payload":{"status":"asleep"}}`, `{"type":"complete","timestamp":12}`, `{"type":"x","payload":[1]}`, `{`} {
				if conn.WriteMessage(gorilla.TextMessage, []byte(frame)) != nil {
					break
				}
			}
			countClose(closeCodeOf(conn))
		}()
	}
	var badHTTP atomic.Int64
	for range 10 { // services posting garbage, and peers speaking no HTTP
		attackers.Add(2)
		go func() {
			defer attackers.Done()
			for range 20 {
				if code, _ := ts.post(t, "/api/v1/events", testService, `{"orgId":`); code == http.StatusBadRequest {
					badHTTP.Add(1)
				}
			}
		}()
		go func() {
			defer attackers.Done()
			c, err := net.Dial("tcp", host)
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = c.Write([]byte("\x16\x03\x01garbage that is not HTTP\r\n\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(io.Discard, c)
		}()
	}
	// The honest traffic, during the flood.
	var ids []string
	for i := range 100 {
		if code, _ := ts.post(t, "/api/v1/events", testService, fmt.Sprintf(`{"orgId":"o1","type":"session.updated","sessionId":"flood-%d"}`, i)); code != http.StatusAccepted {
			t.Fatalf("event during the flood: %d", code)
		}
		if i%5 == 0 {
			id, code := ts.submit(t, "flood-0000", fmt.Sprint("s-", i))
			if id == "" {
				t.Fatalf("command during the flood: %d", code)
			}
			ids = append(ids, id)
		}
	}
	attackers.Wait()
	floodTook := time.Since(start)
	testkit.Eventually(t, 10*time.Second, "every event received", func() bool { return received.Load() == 100 })
	testkit.Eventually(t, 10*time.Second, "every command completed", func() bool { return ts.allCompleted(t, ids) })
	got := map[int]int64{}
	closes.Range(func(k, v any) bool { got[k.(int)] = v.(*atomic.Int64).Load(); return true })
	if got[gorilla.CloseProtocolError] != 20 || got[gorilla.ClosePolicyViolation] != 20 || badHTTP.Load() != 200 {
		t.Fatalf("refusals: closes %v, 400s %d; want 20 × 1002 (browsers), 20 × 1008 (agents), 200 × 400", got, badHTTP.Load())
	}
	if code, _ := ts.call(t, http.MethodGet, "/readyz", nil, ""); code != http.StatusOK {
		t.Fatalf("/readyz after the flood: %d", code)
	}
	// The test's own idle keep-alive connections hold goroutines on both sides: close them.
	http.DefaultClient.CloseIdleConnections()
	testkit.GoroutinesBackTo(t, 15*time.Second, baseline+2)
	t.Logf("malformed flood: 20 browsers × 100 KiB of junk (1002 each), 20 agents × 12 malformed frames (1008 each), "+
		"200 garbage bodies (400 each), 10 non-HTTP peers, over %v; the honest browser got 100/100 events and the agent "+
		"completed %d/%d commands; goroutines %d before, %d after", floodTook.Round(time.Millisecond), len(ids), len(ids), baseline, runtime.NumGoroutine())
}

// readUntil reads frames until one of type typ.
func readUntil(t *testing.T, conn *gorilla.Conn, typ string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	for {
		var f wsFrame
		if err := conn.ReadJSON(&f); err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if f.str("type") == typ {
			return
		}
	}
}

// closeCodeOf reads until the connection ends and returns the close code received (-1: none).
func closeCodeOf(conn *gorilla.Conn) int {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			var ce *gorilla.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			return -1
		}
	}
}
