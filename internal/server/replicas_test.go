package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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

var clusterOrgs = []string{"org-1", "org-2", "org-3"}

// browserLog is what one browser received: how often each event (type and session) arrived,
// events of other organizations, and offsets that went backwards within an epoch.
type browserLog struct {
	replica, org string

	mu       sync.Mutex
	seen     map[string]int    // "type/sessionId" → deliveries
	at       map[string]string // "type/sessionId" → "epoch:offset" it came at
	foreign  []string
	disorder []string
	epoch    string
	offset   float64
}

func (b *browserLog) count(typ, sid string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen[typ+"/"+sid]
}

func (b *browserLog) record(f map[string]any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	typ, _ := f["type"].(string)
	sid, _ := f["sessionId"].(string)
	if !strings.HasPrefix(typ, "session.") {
		return
	}
	if !strings.HasPrefix(sid, b.org+"-") {
		b.foreign = append(b.foreign, typ+"/"+sid)
	}
	b.seen[typ+"/"+sid]++
	epoch, _ := f["epoch"].(string)
	off, _ := f["offset"].(float64)
	b.at[typ+"/"+sid] = fmt.Sprintf("%s:%v", epoch, off)
	if epoch == b.epoch && off <= b.offset {
		b.disorder = append(b.disorder, fmt.Sprintf("%s/%s at %s:%v after %v", typ, sid, epoch, off, b.offset))
	}
	b.epoch, b.offset = epoch, off
}

// watchBrowser connects an admin browser of org to a replica and records what it receives
// until the connection ends.
func watchBrowser(t *testing.T, p *replicaProc, org string, wg *sync.WaitGroup) *browserLog {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + mint(t, "ops-"+org, org, auth.RoleAdmin, time.Hour)}}
	conn, _, err := gorilla.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.base, "http")+"/api/v1/ws/sessions", h)
	if err != nil {
		t.Fatalf("browser on %s: %v", p.name, err)
	}
	// The upgrade answers before the server has subscribed the browser; its stream starts at
	// the `connected` offset, and everything before is in the snapshot that follows. Wait for
	// both, so every event counted below is one the browser is entitled to receive.
	for _, want := range []string{"connected", "sessions_update"} {
		if f := readWS(t, conn); f.str("type") != want {
			t.Fatalf("browser on %s: got %v, want %s", p.name, f, want)
		}
	}
	_ = conn.SetReadDeadline(time.Time{}) // readWS's deadline must not end the reader below
	b := &browserLog{replica: p.name, org: org, seen: map[string]int{}, at: map[string]string{}}
	t.Cleanup(func() { _ = conn.Close() }) // runs before the wait on wg, registered earlier
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var f map[string]any
			if json.Unmarshal(data, &f) == nil {
				b.record(f)
			}
		}
	}()
	return b
}

// TestThreeReplicas runs three server processes on one PostgreSQL and one Redis behind a
// round-robin load balancer: 300 agents spread over them, 3,000 start_session commands
// submitted through random replicas, one replica killed abruptly and Redis stopped and
// restarted along the way. Every command ends completed exactly once, run once; every browser
// receives each event of its organization once, in order, and nothing of another.
func TestThreeReplicas(t *testing.T) {
	// Not parallel: it runs before the parallel 1,000-agent test rather than beside it, so
	// neither starves the other on a small machine.
	const agents, total = 300, 3000
	const phase1, outage = 1500, 100 // commands before the Redis outage, and during it
	ctx := context.Background()

	pgURL := dbtest.URL(t, "postgres")
	redisSrv := redistest.Start(t)
	args := []string{
		"--database-url", pgURL, "--redis-url", redisSrv.URL(),
		"--jwt-secret", testSecret, "--service-token", testService,
		"--agent-ownership-ttl", "5s", "--agent-check-interval", "500ms", "--agent-heartbeat-flush", "1s",
		"--command-ack-timeout", "5s", "--shutdown-timeout", "5s",
	}
	replicas := []*replicaProc{
		startReplica(t, "a", args...), startReplica(t, "b", args...), startReplica(t, "c", args...),
	}
	a, b, c := replicas[0], replicas[1], replicas[2]
	d, err := db.Open(ctx, pgURL, db.WithMaxOpenConns(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })

	// Agents: keys of their own, connected through the balancer.
	lb := startBalancer(t, a.base, b.base, c.base)
	ids := make([]string, agents)
	ran := &executions{byID: map[string]int{}}
	runCtx, stopAgents := context.WithCancel(ctx)
	var agentsWG sync.WaitGroup
	// The agents' own logs, shown for the agents a failed wait names.
	agentLogs := &testkit.LockedBuffer{}
	quiet := slog.New(slog.NewTextHandler(agentLogs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	for i := range agents {
		ids[i] = fmt.Sprintf("rep-%03d", i)
		key := auth.NewAgentKey()
		if err := d.CreateAgent(ctx, models.Agent{ID: ids[i], Platform: models.PlatformKubernetes,
			ApprovalStatus: models.ApprovalApproved, APIKeyHash: auth.HashAgentKey(key)}); err != nil {
			t.Fatal(err)
		}
		ag, err := agentclient.New(agentclient.Config{
			ServerURL: lb.base(), AgentID: ids[i], APIKey: key, Platform: models.PlatformKubernetes,
			BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, Logger: quiet,
		})
		if err != nil {
			t.Fatal(err)
		}
		ag.Handle(models.ActionStartSession, func(_ context.Context, cmd agentclient.Command) (map[string]any, error) {
			ran.add(cmd.ID)
			return map[string]any{"started": cmd.Payload["sessionId"]}, nil
		})
		agentsWG.Add(1)
		go func() {
			defer agentsWG.Done()
			_ = ag.Run(runCtx)
		}()
	}
	t.Cleanup(func() { stopAgents(); agentsWG.Wait() })

	listAgents := func(p *replicaProc) map[string]string { // agent → replica of the online ones
		var out struct {
			Agents []struct{ AgentID, Status, Replica string } `json:"agents"`
		}
		if code, err := p.call(ctx, http.MethodGet, "/api/v1/agents", nil, &out); err != nil || code != http.StatusOK {
			return nil
		}
		m := map[string]string{}
		for _, ag := range out.Agents {
			if ag.Status == models.AgentStatusOnline {
				m[ag.AgentID] = ag.Replica
			}
		}
		return m
	}
	testkit.Eventually(t, 2*time.Minute, "300 agents online", func() bool { return len(listAgents(b)) == agents })
	spread := map[string]int{}
	for _, r := range listAgents(a) {
		spread[r]++
	}
	if spread["a"] == 0 || spread["b"] == 0 || spread["c"] == 0 {
		t.Fatalf("agents not spread over the replicas: %v", spread)
	}
	t.Logf("agents per replica: %v", spread)

	var browsersWG sync.WaitGroup
	t.Cleanup(browsersWG.Wait) // runs after the browsers' connections are closed
	var browsers []*browserLog
	for _, p := range replicas {
		for _, org := range clusterOrgs {
			browsers = append(browsers, watchBrowser(t, p, org, &browsersWG))
		}
	}

	// Submission through random live replicas. A request whose outcome is unknown (its replica
	// died under it) is checked in the database and retried only if nothing was stored.
	var (
		live      atomic.Value // []*replicaProc
		mu        sync.Mutex
		accepted  = map[string]bool{} // sessions whose command got 202
		uncertain = map[string]bool{} // stored, but the answer was lost
		during    = map[string]bool{} // submitted during the Redis outage
	)
	live.Store(replicas)
	var submitted atomic.Int64
	submit := func(i int, inOutage bool) {
		org := clusterOrgs[i%len(clusterOrgs)]
		sid := fmt.Sprintf("%s-s%04d", org, i)
		body := map[string]any{"action": models.ActionStartSession, "sessionId": sid,
			"payload": map[string]any{"orgId": org, "user": "u" + fmt.Sprint(i%7)}}
		agent := ids[rand.IntN(agents)]
		for attempt := 0; ; attempt++ {
			ps := live.Load().([]*replicaProc)
			p := ps[rand.IntN(len(ps))]
			code, err := p.call(ctx, http.MethodPost, "/api/v1/admin/agents/"+agent+"/command", body, nil)
			mu.Lock()
			switch {
			case code == http.StatusAccepted && inOutage:
				during[sid] = true
			case code == http.StatusAccepted:
				accepted[sid] = true
			}
			mu.Unlock()
			if code == http.StatusAccepted {
				submitted.Add(1)
				return
			}
			if _, gerr := d.GetSession(ctx, sid); gerr == nil {
				mu.Lock()
				uncertain[sid] = true
				mu.Unlock()
				submitted.Add(1)
				return
			}
			if attempt > 20 {
				t.Errorf("command for %s not accepted: %d %v", sid, code, err)
				return
			}
			time.Sleep(50 * time.Millisecond) // kept: a retry's pause while no replica takes the command
		}
	}
	runPhase := func(from, to int, inOutage bool, during func(n int)) {
		work := make(chan int)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					submit(i, inOutage)
				}
			}()
		}
		for i := from; i < to; i++ {
			if during != nil {
				during(i - from)
			}
			work <- i
		}
		close(work)
		wg.Wait()
	}
	completed := func() int {
		n, err := d.CountCommands(ctx, "")
		if err != nil {
			return -1
		}
		return n[models.CommandStatusCompleted]
	}

	// Phase 1, with replica c killed abruptly halfway.
	var killedAt time.Time
	runPhase(0, phase1, false, func(n int) {
		if n == phase1/2 {
			live.Store([]*replicaProc{a, b})
			c.kill()
			killedAt = time.Now()
		}
	})
	backOnAB := func() (bool, string) {
		m := listAgents(a)
		var astray []string
		for _, id := range ids {
			if r, ok := m[id]; !ok || r == "c" {
				astray = append(astray, id+"@"+r)
			}
		}
		return len(astray) == 0, fmt.Sprintf("%d online; not online on a or b: %v", len(m), astray[:min(10, len(astray))])
	}
	if err := testkit.WaitFor(2*time.Minute, func() bool { ok, _ := backOnAB(); return ok }); err != nil {
		_, state := backOnAB()
		var lines []string
		for _, l := range strings.Split(agentLogs.String(), "\n") {
			if strings.Contains(state, agentOf(l)+"@") && agentOf(l) != "" {
				lines = append(lines, l)
			}
		}
		t.Fatalf("c's agents not back on a and b within 2 min: %s\nthose agents' logs:\n%s", state, tail(strings.Join(lines, "\n"), 4000))
	}
	t.Logf("all agents online on a and b %v after c was killed", time.Since(killedAt).Round(time.Millisecond))
	testkit.Eventually(t, 2*time.Minute, "phase 1 completed", func() bool { return completed() == int(submitted.Load()) })

	// Phase 2: Redis stops; replicas keep taking commands; Redis comes back.
	redisSrv.Stop(t)
	testkit.Eventually(t, 30*time.Second, "replicas report not ready", func() bool { return !a.ready() && !b.ready() })
	runPhase(phase1, phase1+outage, true, nil)
	redisSrv.Restart(t)
	restarted := time.Now()
	testkit.Eventually(t, time.Minute, "replicas ready again", func() bool { return a.ready() && b.ready() })
	readyAfter := time.Since(restarted)
	// Delivery across replicas: an event published on a reaches b's browser, and the commands
	// of the outage complete.
	var probeB *browserLog
	for _, br := range browsers {
		if br.replica == "b" && br.org == "org-1" {
			probeB = br
		}
	}
	for n := 0; ; n++ {
		ev := map[string]any{"type": "session.updated", "sessionId": fmt.Sprintf("org-1-probe-%d", n), "userId": "u", "orgId": "org-1"}
		if code, err := a.call(ctx, http.MethodPost, "/api/v1/events", ev, nil); code != http.StatusAccepted {
			t.Fatalf("probe event: %d %v", code, err)
		}
		if testkit.WaitFor(500*time.Millisecond, func() bool { return probeB.count("session.updated", fmt.Sprintf("org-1-probe-%d", n)) == 1 }) == nil {
			break
		}
		if time.Since(restarted) > time.Minute {
			t.Fatal("events did not cross replicas again within a minute of Redis's restart")
		}
	}
	eventsAfter := time.Since(restarted)
	testkit.Eventually(t, time.Minute, "the outage's commands completed", func() bool { return completed() == int(submitted.Load()) })
	t.Logf("after Redis restarted: ready in %v, events crossing replicas in %v, outage commands completed in %v",
		readyAfter.Round(time.Millisecond), eventsAfter.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))

	// Phase 3: the rest, on a healthy cluster of two.
	runPhase(phase1+outage, total, false, nil)
	testkit.Eventually(t, 2*time.Minute, "all commands completed", func() bool { return completed() == total })

	counts, err := d.CountCommands(ctx, "")
	if err != nil || len(counts) != 1 || counts[models.CommandStatusCompleted] != total {
		t.Fatalf("commands by status = %v, %v; want all %d completed", counts, err, total)
	}
	ran.check(t, total)

	// A fence per org, published last: each org's stream is ordered, so once every live
	// browser has it, everything before it (duplicates included) has arrived.
	for _, org := range clusterOrgs {
		fence := map[string]any{"type": "session.updated", "sessionId": org + "-fence", "userId": "u", "orgId": org}
		if code, err := a.call(ctx, http.MethodPost, "/api/v1/events", fence, nil); code != http.StatusAccepted {
			t.Fatalf("fence: %d %v", code, err)
		}
	}
	testkit.Eventually(t, 30*time.Second, "the fences on a and b", func() bool {
		for _, br := range browsers {
			if br.replica != "c" && br.count("session.updated", br.org+"-fence") == 0 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	if len(accepted)+len(uncertain)+len(during) != total {
		t.Fatalf("accepted %d + uncertain %d + during the outage %d != %d", len(accepted), len(uncertain), len(during), total)
	}
	for _, br := range browsers {
		br.mu.Lock()
		if len(br.foreign) > 0 {
			t.Errorf("browser of %s on %s got other organizations' events: %v", br.org, br.replica, br.foreign[:min(5, len(br.foreign))])
		}
		if len(br.disorder) > 0 {
			t.Errorf("browser of %s on %s got events out of order: %v", br.org, br.replica, br.disorder[:min(5, len(br.disorder))])
		}
		var missing []string
		for key, n := range br.seen {
			if n > 1 {
				t.Errorf("browser of %s on %s got %s %d times", br.org, br.replica, key, n)
			}
		}
		if br.replica != "c" {
			for sid := range accepted {
				if strings.HasPrefix(sid, br.org+"-") && br.seen["session.created/"+sid] != 1 {
					missing = append(missing, sid+" (seen by "+seenAt(browsers, br, "session.created/"+sid)+")")
				}
			}
		}
		if len(missing) > 0 {
			t.Errorf("browser of %s on %s missed %d session.created events: %v", br.org, br.replica, len(missing), missing[:min(5, len(missing))])
		}
		br.mu.Unlock()
	}
	t.Logf("accepted %d, uncertain %d (replica killed under the request), during the Redis outage %d",
		len(accepted), len(uncertain), len(during))
}

// agentOf is the agent a log line of the SDK names ("" when none).
func agentOf(line string) string {
	_, rest, ok := strings.Cut(line, "agent_id=")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, " ")
	return id
}

// seenAt says where another live browser of br's org saw key, for failure messages. The caller
// holds br.mu; the other is locked on its own.
func seenAt(browsers []*browserLog, br *browserLog, key string) string {
	for _, o := range browsers {
		if o == br || o.org != br.org || o.replica == "c" {
			continue
		}
		o.mu.Lock()
		at := o.at[key]
		o.mu.Unlock()
		return o.replica + " at " + at
	}
	return "nobody"
}
