package websocket

import (
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// A command is late from when its frame reached the socket, and, past the last command the
// agent answered, from that answer: an agent reading a backlog is not sent it again, while a
// command it read and left unanswered is.
func TestOverdueCountsFromWhatTheAgentRead(t *testing.T) {
	const timeout = 10 * time.Second
	t0 := time.Unix(1_000_000, 0)
	c := &inflight{}
	for i, id := range []string{"c1", "c2", "c3", "c4"} {
		c.track(models.AgentCommand{CommandID: id}, 1, t0, uint64(i+1))
	}
	late := func(now time.Time) []string {
		c.resend = nil
		if exhausted := c.overdue(now, timeout, 5); len(exhausted) > 0 {
			t.Fatalf("exhausted %v", exhausted)
		}
		return c.resend
	}
	// Frames 1 and 2 written, 3 and 4 still queued.
	c.written.Store(2)
	if got := late(t0.Add(5 * time.Second)); len(got) != 0 {
		t.Fatalf("before the timeout: %v", got)
	}
	// The agent answered c2 at t0+8s: it read c1 (and left it), and is reading towards c3.
	c.answered("c2", t0.Add(8*time.Second))
	c.untrack("c2")
	c.written.Store(4) // c3 and c4 reach the socket now
	if got := late(t0.Add(11 * time.Second)); len(got) != 1 || got[0] != "c1" {
		t.Fatalf("at t0+11s: %v, want c1 alone (c3 and c4 count from the answer at t0+8s)", got)
	}
	c.untrack("c1") // answered after its resend
	// Ten seconds after the last answer, with nothing more answered: c3 and c4 are late too.
	if got := late(t0.Add(17 * time.Second)); len(got) != 0 {
		t.Fatalf("at t0+17s: %v, want none yet", got)
	}
	if got := late(t0.Add(22 * time.Second)); len(got) != 2 {
		t.Fatalf("at t0+22s: %v, want c3 and c4", got)
	}
}

// Time the reader spends on the agent's frames (a slow database) does not count against the
// agent: its answers were waiting in the socket. Time spent waiting for the agent does.
func TestOverdueLeavesOutTheReadersOwnDelay(t *testing.T) {
	const timeout = 10 * time.Second
	t0 := time.Unix(1_000_000, 0)
	c := &inflight{}
	c.track(models.AgentCommand{CommandID: "c1"}, 1, t0, 1)
	c.written.Store(1)
	late := func(now time.Time) []string {
		c.resend = nil
		c.overdue(now, timeout, 5)
		return c.resend
	}
	// A heartbeat took 4 s to handle (t0+1s to t0+5s), and another frame has been under way
	// since t0+8s.
	c.handled.Add(int64(4 * time.Second))
	c.handlingSince.Store(t0.Add(8 * time.Second).UnixNano())
	if got := late(t0.Add(12 * time.Second)); len(got) != 0 {
		t.Fatalf("at t0+12s, 8 s of it stalled: %v, want none", got)
	}
	// The frame under way ended at t0+13s: 9 s of stall in all, so c1 is late at t0+19s.
	c.handlingSince.Store(0)
	c.handled.Add(int64(5 * time.Second))
	if got := late(t0.Add(18 * time.Second)); len(got) != 0 {
		t.Fatalf("at t0+18s: %v, want none", got)
	}
	if got := late(t0.Add(19 * time.Second)); len(got) != 1 || got[0] != "c1" {
		t.Fatalf("at t0+19s: %v, want c1", got)
	}
}
