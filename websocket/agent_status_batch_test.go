package websocket

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// TestAgentStatusBurstThenExit: an agent sends a burst of status frames within its frame budget
// and exits. The reports are written in few transactions (coalesced per session), so nothing is
// left to apply once the socket ends: the agent is offline promptly, every session holds the
// state last reported, and each session's events form one unbroken chain of changes ending in
// that state.
func TestAgentStatusBurstThenExit(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{})
		h.addAgent("a1")
		ctx := t.Context()
		const sessions, rounds = 10, 180 // 1,800 frames: within the default burst of 2,000
		for i := range sessions {
			s := models.Session{ID: fmt.Sprintf("s%02d", i), OrgID: "o1", UserID: "u1", AgentID: "a1"}
			if err := d.CreateSession(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		a := h.connect("a1")
		batchesBefore := counterValue(t, h.hub.metrics.statusBatches)
		states := []string{"starting", "running", "hibernated"}
		for r := range rounds {
			for i := range sessions {
				a.send("status", map[string]any{"sessionId": fmt.Sprintf("s%02d", i), "state": states[r%len(states)]})
			}
		}
		// The last word on each session: running with its pod, one deleted, one stopped.
		want := map[string]string{}
		for i := range sessions {
			id := fmt.Sprintf("s%02d", i)
			switch i {
			case 8:
				a.send("status", map[string]any{"sessionId": id, "state": "deleted"})
				want[id] = sessionStateDeleted
			case 9:
				a.send("status", map[string]any{"sessionId": id, "state": "stopped"})
				want[id] = models.SessionStateStopped
			default:
				a.send("status", map[string]any{"sessionId": id, "state": "running", "platformMetadata": map[string]any{"podName": "pod-" + id}})
				want[id] = models.SessionStateRunning
			}
		}
		// The agent exits.
		_ = a.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = a.conn.Close()
		closed := time.Now()

		// Handled one transaction per frame, the burst took over half a minute to apply after
		// the exit here (under -race), the agent shown online meanwhile. Now what is left is
		// reading the frames the socket still holds, and one batch; the deadline leaves room
		// for a loaded machine, the transaction count below is the mechanism.
		testkit.Eventually(t, 15*time.Second, "agent offline after its socket ended", func() bool {
			return h.agentRow("a1").Status == models.AgentStatusOffline
		})
		t.Logf("offline %v after the close", time.Since(closed).Round(time.Millisecond))

		for id, state := range want {
			s, err := d.GetSession(ctx, id)
			if state == sessionStateDeleted {
				if !errors.Is(err, db.ErrNotFound) {
					t.Errorf("session %s: %+v %v, want deleted", id, s, err)
				}
				continue
			}
			if err != nil || s.State != state {
				t.Errorf("session %s: %q %v, want %q", id, s.State, err, state)
			}
			if state == models.SessionStateRunning && s.PodName != "pod-"+id {
				t.Errorf("session %s pod %q", id, s.PodName)
			}
		}
		// Events: per session a chain pending → … → the final state, each change once.
		last := map[string]string{}
		deleted := map[string]bool{}
		for _, e := range h.events.all() {
			id := e.ev.SessionID
			if deleted[id] {
				t.Errorf("session %s: event %s after its deletion", id, e.ev.Type)
			}
			switch e.ev.Type {
			case EventSessionDeleted:
				deleted[id] = true
			case EventSessionStateChange:
				prev, ok := last[id]
				if !ok {
					prev = models.SessionStatePending
				}
				oldState, newState := e.ev.Data["oldState"], e.ev.Data["newState"]
				if oldState != prev || newState == oldState {
					t.Errorf("session %s: event %v → %v after %q", id, oldState, newState, prev)
				}
				last[id], _ = newState.(string)
			}
		}
		for id, state := range want {
			if state == sessionStateDeleted {
				if !deleted[id] {
					t.Errorf("session %s: no session.deleted", id)
				}
			} else if last[id] != state {
				t.Errorf("session %s: last event says %q, want %q", id, last[id], state)
			}
		}
		// The mechanism: the reports were written in far fewer transactions than frames.
		frames := sessions * (rounds + 1)
		n := counterValue(t, h.hub.metrics.statusBatches) - batchesBefore
		if n < 1 || n > float64(frames)/10 {
			t.Errorf("%v status transactions for %d frames", n, frames)
		}
		t.Logf("%d frames written in %v transactions", frames, n)
	})
}

// BenchmarkAgentStatusFrames measures how fast one agent's status reports are handled, from
// the first frame sent to the last one's state stored: frames/s is what an agent may send
// without leaving a backlog.
func BenchmarkAgentStatusFrames(b *testing.B) {
	for _, dialect := range dbtest.Dialects() {
		b.Run("db="+dialect, func(b *testing.B) {
			d := dbtest.Open(b, dialect)
			h := newAgentHarness(b, d, AgentHubConfig{MessageRate: 1e9, MessageBurst: 1 << 30})
			h.addAgent("a1")
			const sessions = 10
			for i := range sessions + 1 {
				s := models.Session{ID: fmt.Sprintf("s%02d", i), OrgID: "o1", UserID: "u1", AgentID: "a1"}
				if err := d.CreateSession(b.Context(), s); err != nil {
					b.Fatal(err)
				}
			}
			a := h.connect("a1")
			frames := make([][]byte, 0, 2)
			for _, state := range []string{"starting", "running"} {
				f, _ := json.Marshal(map[string]any{"type": "status", "payload": map[string]any{"sessionId": "%s", "state": state}})
				frames = append(frames, f)
			}
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				id := fmt.Sprintf("s%02d", i%sessions)
				if err := a.conn.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(string(frames[(i/sessions)%2]), id))); err != nil {
					b.Fatal(err)
				}
			}
			// The last report, on a session of its own: once it is stored, so is every one before.
			a.send("status", map[string]any{"sessionId": fmt.Sprintf("s%02d", sessions), "state": "stopped"})
			testkit.Eventually(b, 5*time.Minute, "last report stored", func() bool {
				s, _ := d.GetSession(b.Context(), fmt.Sprintf("s%02d", sessions))
				return s.State == models.SessionStateStopped
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N+1)/time.Since(start).Seconds(), "frames/s")
		})
	}
}
