//go:build linux

package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
)

const (
	// recoverWithin bounds how long a reconnecting viewer may wait for its desktop: a liveness
	// check on a loaded machine, not a timing assertion.
	recoverWithin = 20 * time.Second
	// goroutineSlack is how far above its baseline a replica's goroutine count may settle.
	goroutineSlack = 1
)

// brokenRelayCloses are the documented closes of a viewer whose tunnel runs through a replica
// that died or stalled (PROTOCOL.md 6.1): the link to the agent's replica was lost, or the
// agent's own socket was seen to end first.
var brokenRelayCloses = []string{"1011 agent unreachable", "1011 agent disconnected"}

// faultsFixture is three replicas, each holding one agent ("agent-a" on a...) of three running
// sessions of alice's.
type faultsFixture struct {
	replicas  []*faultReplica
	agents    map[string]*faultAgent // by home replica
	baselines map[string]int         // goroutines of each replica with no viewer open
	open      []*faultViewer         // viewers not closed yet
}

// session is session n of the agent at home on replica home.
func session(home string, n int) string { return fmt.Sprintf("agent-%s-s%d", home, n) }

// TestStreamingFaults runs three server processes on one PostgreSQL and one private Redis,
// each holding an SDK agent that relays its sessions to the test VNC server, and RFB viewers
// over WebSocket. Viewers reach every session through every replica (a replica relays to the
// one holding the session's agent over the peer link); then, under streaming traffic, the
// viewer's replica is killed, the agent's replica is killed, Redis is restarted, and a replica
// is stalled with SIGSTOP. After each fault the test checks what the viewers and agents saw,
// brings the cluster back (the killed replica started again, the agents home), checks that a
// viewer gets through every pair of replicas again, and that each replica's goroutines are back
// to their count before the fault.
func TestStreamingFaults(t *testing.T) {
	vnc := vnctest.Addr(t)
	ctx := context.Background()
	pgURL := dbtest.URL(t, "postgres")
	redisSrv := redistest.Start(t)
	bin := testkit.StaticBinary(t)
	args := []string{
		"--database-url", pgURL, "--redis-url", redisSrv.URL(),
		"--jwt-secret", testSecret, "--service-token", testService,
		"--agent-ownership-ttl", "10s", "--agent-check-interval", "500ms",
		"--vnc-max-per-user", "0", "--shutdown-timeout", "5s",
	}
	fx := &faultsFixture{agents: map[string]*faultAgent{}, baselines: map[string]int{}}
	for _, name := range []string{"a", "b", "c"} {
		fx.replicas = append(fx.replicas, newFaultReplica(t, bin, name, args))
	}
	a, b, c := fx.replicas[0], fx.replicas[1], fx.replicas[2]

	d, err := db.Open(ctx, pgURL, db.WithMaxOpenConns(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	agentLogs := &testkit.LockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agents' log tail:\n%s", tail(agentLogs.String(), 4000))
		}
	})
	for _, home := range fx.replicas {
		id := "agent-" + home.name
		key := auth.NewAgentKey()
		if err := d.CreateAgent(ctx, models.Agent{ID: id, Platform: models.PlatformDocker,
			ApprovalStatus: models.ApprovalApproved, APIKeyHash: auth.HashAgentKey(key)}); err != nil {
			t.Fatal(err)
		}
		var sessions []string
		for n := 1; n <= 3; n++ {
			s := models.Session{ID: session(home.name, n), OrgID: "org-a", UserID: "alice",
				State: models.SessionStateRunning, AgentID: id}
			if err := d.CreateSession(ctx, s); err != nil {
				t.Fatal(err)
			}
			sessions = append(sessions, s.ID)
		}
		order := []*faultReplica{home} // home first, then the others
		for _, r := range fx.replicas {
			if r != home {
				order = append(order, r)
			}
		}
		fx.agents[home.name] = startFaultAgent(t, id, key, vnc, order, sessions, agentLogs)
	}
	fx.waitHome(t)

	if !t.Run("every pair", func(t *testing.T) {
		took := fx.everyPair(t)
		for _, r := range fx.replicas {
			fx.baselines[r.name] = r.steadyGoroutines(t)
		}
		t.Logf("every pair: 9 viewers, one per (viewer replica, agent replica), each with its desktop and updates, in %v; goroutines with no viewer: %v",
			took.Round(time.Millisecond), fx.baselines)
	}) {
		return
	}

	if !t.Run("kill the viewer's replica", func(t *testing.T) {
		// Viewers on c of agent-a's and agent-b's sessions, and the same agents' other
		// tunnels from the survivors.
		doomedA := fx.streamer(t, c, session("a", 1))
		doomedB := fx.streamer(t, c, session("b", 1))
		others := []*faultViewer{fx.streamer(t, b, session("a", 2)), fx.streamer(t, a, session("b", 2)), fx.streamer(t, a, session("a", 3))}
		waitStreaming(t, append(others, doomedA, doomedB)...)
		_, dialsA := fx.agents["a"].connection()
		_, dialsB := fx.agents["b"].connection()

		killed := time.Now()
		c.kill(t)
		testkit.Eventually(t, recoverWithin, "the agents' tunnels of c's viewers closed", func() bool {
			openA, _ := fx.agents["a"].tunnels(session("a", 1))
			openB, _ := fx.agents["b"].tunnels(session("b", 1))
			return openA == 0 && openB == 0
		})
		tunnelsClosed := time.Since(killed)
		for _, v := range others {
			keepsStreaming(t, v, 10)
		}
		if _, n := fx.agents["a"].connection(); n != dialsA {
			t.Errorf("agent-a dialed again (%d sockets, %d before): its socket to a should be untouched", n, dialsA)
		}
		if _, n := fx.agents["b"].connection(); n != dialsB {
			t.Errorf("agent-b dialed again (%d sockets, %d before): its socket to b should be untouched", n, dialsB)
		}
		for _, v := range []*faultViewer{doomedA, doomedB} {
			testkit.Eventually(t, 10*time.Second, "the socket of a viewer on the killed replica ended", func() bool { _, _, _, ok := v.end(); return ok })
		}
		// Reconnecting, to a survivor that does not hold the agent.
		_, backA := fx.desktop(t, b, session("a", 1))
		_, backB := fx.desktop(t, a, session("b", 1))
		fx.closeViewers()
		counts := fx.restore(t, c)
		t.Logf("kill -9 of the viewer's replica: the agents' tunnels of its viewers closed %v after the kill, their other tunnels kept streaming; "+
			"reconnecting through another replica, the desktop was back in %v and %v; with the replica started again, goroutines %v (baseline %v)",
			tunnelsClosed.Round(time.Millisecond), backA.Round(time.Millisecond), backB.Round(time.Millisecond), counts, fx.baselines)
	}) {
		return
	}

	if !t.Run("kill the agent's replica", func(t *testing.T) {
		cut := []*faultViewer{fx.streamer(t, a, session("b", 1)), fx.streamer(t, c, session("b", 2))}
		others := []*faultViewer{fx.streamer(t, c, session("a", 1)), fx.streamer(t, a, session("c", 1))}
		waitStreaming(t, append(others, cut...)...)

		killed := time.Now()
		b.kill(t)
		var closes []string
		for _, v := range cut {
			testkit.Eventually(t, recoverWithin, "the viewer of "+v.session+" on "+v.via+" closed", func() bool { _, _, _, ok := v.end(); return ok })
			code, reason, at, _ := v.end()
			got := fmt.Sprintf("%d %s", code, reason)
			if !slices.Contains(brokenRelayCloses, got) {
				t.Errorf("viewer of %s on %s closed with %q, want one of %q", v.session, v.via, got, brokenRelayCloses)
			}
			closes = append(closes, fmt.Sprintf("%q after %v", got, at.Sub(killed).Round(time.Millisecond)))
		}
		for _, v := range others {
			keepsStreaming(t, v, 10)
		}
		testkit.Eventually(t, recoverWithin, "agent-b online on a", func() bool { return a.agentsOnline()["agent-b"] == "a" })
		moved := time.Since(killed)
		_, backA := fx.desktop(t, a, session("b", 1))
		_, backC := fx.desktop(t, c, session("b", 2))
		fx.closeViewers()
		counts := fx.restore(t, b)
		t.Logf("kill -9 of the agent's replica: its viewers on the other replicas closed with %s; the agent online on a %v after the kill; "+
			"reconnecting, the desktop was back in %v (on a, which holds the agent now) and %v (on c); with the replica started again, goroutines %v (baseline %v)",
			strings.Join(closes, " and "), moved.Round(time.Millisecond), backA.Round(time.Millisecond), backC.Round(time.Millisecond), counts, fx.baselines)
	}) {
		return
	}

	if !t.Run("restart Redis mid-stream", func(t *testing.T) {
		streams := []*faultViewer{fx.streamer(t, a, session("b", 1)), fx.streamer(t, b, session("c", 1)),
			fx.streamer(t, c, session("a", 1)), fx.streamer(t, a, session("a", 2))}
		waitStreaming(t, streams...)
		redisSrv.Stop(t)
		stopped := time.Now()
		for _, v := range streams {
			keepsStreaming(t, v, 10)
		}
		// A viewer whose agent is elsewhere cannot be placed while the directory is away.
		_, err := dialFaultViewer(t, a, session("c", 2))
		var ref *viewerRefusal
		if !errors.As(err, &ref) || ref.status != http.StatusServiceUnavailable {
			t.Errorf("a new viewer across replicas during the Redis outage: %v, want 503", err)
		}
		// One whose agent is on its own replica needs no directory.
		local, err := dialFaultViewer(t, a, session("a", 3))
		if err != nil {
			t.Errorf("a new viewer on the agent's own replica during the Redis outage: %v, want its desktop", err)
		} else {
			local.close()
		}
		time.Sleep(2*time.Second - time.Since(stopped)) // kept: the outage lasts 2 s, the scenario itself
		redisSrv.Restart(t)
		restarted := time.Now()
		for _, v := range streams {
			keepsStreaming(t, v, 10)
		}
		testkit.Eventually(t, time.Minute, "the replicas ready again", func() bool { return a.ready() && b.ready() && c.ready() })
		ready := time.Since(restarted)
		fx.closeViewers()
		fx.waitHome(t)
		took := fx.everyPair(t)
		counts := fx.checkGoroutines(t)
		t.Logf("Redis restarted mid-stream: 4 tunnels (3 across replicas) kept streaming through the outage; a new viewer across replicas during it: %v, one on the agent's replica got its desktop; "+
			"replicas ready %v after Redis came back; the nine pairs checked again in %v; goroutines %v (baseline %v)",
			ref, ready.Round(time.Millisecond), took.Round(time.Millisecond), counts, fx.baselines)
	}) {
		return
	}

	t.Run("stall a replica", func(t *testing.T) {
		healthy := []*faultViewer{fx.streamer(t, a, session("b", 1)), fx.streamer(t, b, session("a", 1))}
		stalledAC := fx.streamer(t, a, session("c", 1)) // viewer on a, agent on c
		stalledCA := fx.streamer(t, c, session("a", 2)) // viewer on c, agent on a
		pusher, _ := fx.desktop(t, a, session("c", 2))
		waitStreaming(t, append(healthy, stalledAC, stalledCA)...)
		stopped := time.Now()
		c.signal(t, syscall.SIGSTOP)
		t.Cleanup(c.resume)
		// The viewer on a of c's session pushes input as fast as a takes it: the stream's
		// window and the link's socket to c fill up, and a's writes to c block.
		pushed := pusher.push()
		// And a new viewer on a of c's session waits for c's answer on the stalled link.
		waiting := make(chan error, 1)
		var answeredAfter time.Duration // written before the send on waiting
		go func() {
			v, err := dialFaultViewerWithin(t, a, session("c", 3), time.Minute)
			answeredAfter = time.Since(stopped)
			if err == nil {
				v.close()
			}
			waiting <- err
		}()
		for _, v := range healthy {
			keepsStreaming(t, v, 10)
		}
		_, newAB := fx.desktop(t, a, session("b", 3))
		_, newBA := fx.desktop(t, b, session("a", 3))
		// a gives up on the stalled link: its viewers of c's sessions are closed.
		testkit.Eventually(t, 40*time.Second, "a's viewer of c's session closed while c is stopped", func() bool { _, _, _, ok := stalledAC.end(); return ok })
		code, reason, at, _ := stalledAC.end()
		if got := fmt.Sprintf("%d %s", code, reason); got != "1011 agent unreachable" {
			t.Errorf("a's viewer of c's session closed with %q during the stall, want \"1011 agent unreachable\"", got)
		}
		detected := at.Sub(stopped)
		select {
		case <-pushed:
		case <-time.After(recoverWithin):
			t.Fatal("the pushing viewer's socket on a was not closed with its link to c")
		}
		for _, v := range healthy {
			keepsStreaming(t, v, 10)
		}
		// c's link given up, a new viewer of c's session is refused plainly while c is still
		// stopped, and one between a and b still gets through meanwhile.
		refusedAC := make(chan error, 1)
		go func() { _, err := dialFaultViewer(t, a, session("c", 3)); refusedAC <- err }()
		_, newAB2 := fx.desktop(t, a, session("b", 3))
		var ref *viewerRefusal
		if err := <-refusedAC; !errors.As(err, &ref) || ref.status != http.StatusServiceUnavailable {
			t.Errorf("a viewer on a of c's session, with c stopped and its link given up: %v, want 503", err)
		}
		// The viewer that waited on the stalled link was answered when a gave the link up.
		waited := <-waiting
		if !errors.As(waited, &ref) || ref.status != http.StatusServiceUnavailable {
			t.Errorf("a viewer on a of c's session waiting on the stalled link: %v, want 503", waited)
		}
		c.signal(t, syscall.SIGCONT)
		resumed := time.Now()
		// c's own viewer: its link to a was closed meanwhile, or it goes on.
		from := stalledCA.updates.Load()
		testkit.Eventually(t, recoverWithin, "c's viewer streaming again or closed", func() bool {
			_, _, _, ended := stalledCA.end()
			return ended || stalledCA.updates.Load() >= from+10
		})
		outcome := fmt.Sprintf("streaming again %v after SIGCONT", time.Since(resumed).Round(time.Millisecond))
		if code, reason, _, ended := stalledCA.end(); ended {
			got := fmt.Sprintf("%d %s", code, reason)
			if !slices.Contains(brokenRelayCloses, got) {
				t.Errorf("c's viewer of a's session closed with %q after the stall, want one of %q", got, brokenRelayCloses)
			}
			outcome = fmt.Sprintf("closed with %q", got)
		}
		fx.closeViewers()
		fx.rehome(t)
		took := fx.everyPair(t)
		counts := fx.checkGoroutines(t)
		t.Logf("c stopped (SIGSTOP) for %v: tunnels between a and b kept streaming and new viewers a→b and b→a got their desktop in %v and %v "+
			"while a's writes to c were blocked; a closed its viewers of c's sessions with 1011 \"agent unreachable\" %v after the stop "+
			"(a new viewer of c's session waiting on the stalled link meanwhile: %v, %v after the stop); with the link given up, a viewer of c's session on a: %v, "+
			"a→b: desktop in %v; after SIGCONT, c's viewer of a's session %s; every pair working again in %v; goroutines %v (baseline %v)",
			resumed.Sub(stopped).Round(time.Millisecond), newAB.Round(time.Millisecond), newBA.Round(time.Millisecond),
			detected.Round(time.Millisecond), waited, answeredAfter.Round(time.Millisecond), ref, newAB2.Round(time.Millisecond), outcome, took.Round(time.Millisecond), counts, fx.baselines)
	})
}

// streamer opens a viewer (the desktop must answer within recoverWithin) and starts streaming.
func (fx *faultsFixture) streamer(t *testing.T, r *faultReplica, session string) *faultViewer {
	t.Helper()
	v, _ := fx.desktop(t, r, session)
	v.stream()
	return v
}

// waitStreaming waits until each viewer has had a few updates.
func waitStreaming(t *testing.T, vs ...*faultViewer) {
	t.Helper()
	for _, v := range vs {
		testkit.Eventually(t, recoverWithin, "the viewer of "+v.session+" on "+v.via+" streaming", func() bool { return v.updates.Load() >= 3 })
	}
}

// keepsStreaming checks that v gets n more updates and has not ended.
func keepsStreaming(t *testing.T, v *faultViewer, n int64) {
	t.Helper()
	from := v.updates.Load()
	if err := testkit.WaitFor(recoverWithin, func() bool { return v.updates.Load() >= from+n }); err != nil {
		code, reason, _, ended := v.end()
		t.Fatalf("the viewer of %s on %s stopped streaming (%d updates; ended %v: %d %s)", v.session, v.via, v.updates.Load(), ended, code, reason)
	}
}

// desktop is waitDesktop, with the viewer kept for closeViewers.
func (fx *faultsFixture) desktop(t *testing.T, r *faultReplica, session string) (*faultViewer, time.Duration) {
	t.Helper()
	v, took := waitDesktop(t, r, session, recoverWithin)
	fx.open = append(fx.open, v)
	return v, took
}

// closeViewers ends every viewer opened so far.
func (fx *faultsFixture) closeViewers() {
	for _, v := range fx.open {
		v.close()
	}
	fx.open = nil
}

// everyPair opens a viewer through each replica of a session of each agent, one after the
// other, and closes it once it has had a few framebuffer updates. It returns how long the
// nine took.
func (fx *faultsFixture) everyPair(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	for _, via := range fx.replicas {
		for _, home := range fx.replicas {
			v := fx.streamer(t, via, session(home.name, 3))
			waitStreaming(t, v)
			v.close()
		}
	}
	return time.Since(start)
}

// waitHome waits until every replica sees each agent online on its home replica.
func (fx *faultsFixture) waitHome(t *testing.T) {
	t.Helper()
	want := map[string]string{}
	for home := range fx.agents {
		want["agent-"+home] = home
	}
	var last map[string]string
	err := testkit.WaitFor(recoverWithin, func() bool {
		for _, r := range fx.replicas {
			if last = r.agentsOnline(); !maps.Equal(last, want) {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("agents not online at home within %v: a replica reports %v, want %v", recoverWithin, last, want)
	}
}

// rehome sends every agent that moved back to its home replica.
func (fx *faultsFixture) rehome(t *testing.T) {
	t.Helper()
	for _, ag := range fx.agents {
		if at, _ := ag.connection(); at != ag.home {
			ag.drop()
		}
	}
	fx.waitHome(t)
}

// restore starts the killed replica again, brings the agents home, checks every pair and the
// goroutines of every replica.
func (fx *faultsFixture) restore(t *testing.T, killed *faultReplica) map[string]int {
	t.Helper()
	killed.start(t)
	fx.rehome(t)
	fx.everyPair(t)
	return fx.checkGoroutines(t)
}

// checkGoroutines waits until each replica's goroutines are back within goroutineSlack of its
// baseline, with no viewer open and every agent home: nothing of a fault or a tunnel is left.
func (fx *faultsFixture) checkGoroutines(t *testing.T) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, r := range fx.replicas {
		want := fx.baselines[r.name] + goroutineSlack
		n := 0
		if err := testkit.WaitFor(recoverWithin, func() bool {
			var err error
			n, err = r.goroutines()
			return err == nil && n <= want
		}); err != nil {
			dump := r.goroutineDump() // most numerous stacks first
			t.Fatalf("replica %s: %d goroutines, baseline %d (+%d allowed); its goroutines:\n%s",
				r.name, n, fx.baselines[r.name], goroutineSlack, dump[:min(len(dump), 12000)])
		}
		counts[r.name] = n
	}
	return counts
}
