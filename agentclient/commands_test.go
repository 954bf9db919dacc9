package agentclient

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestAckBeforeHandlerFinishes(t *testing.T) {
	cp, a, _ := setup(t, nil)
	release := make(chan struct{})
	var got atomic.Pointer[Command]
	a.Handle("work", func(ctx context.Context, cmd Command) (map[string]any, error) {
		got.Store(&cmd)
		<-release
		return map[string]any{"done": true}, nil
	})
	start(t, a)
	c := nextConn(t, cp)
	if err := c.SendCommand("c1", "work", map[string]any{"x": 1}, 2); err != nil {
		t.Fatal(err)
	}
	if ack := next[models.AckMessage](t, c, models.MessageTypeAck); ack.CommandID != "c1" {
		t.Fatalf("ack %+v", ack)
	}
	// The handler is still blocked: nothing but the ack (and a heartbeat) went out.
	for _, f := range c.Frames() {
		if f.Type == models.MessageTypeComplete {
			t.Fatal("complete before the handler returned")
		}
	}
	close(release)
	done := next[models.CompleteMessage](t, c, models.MessageTypeComplete)
	if done.CommandID != "c1" || done.Result["done"] != true {
		t.Fatalf("complete %+v", done)
	}
	cmd := got.Load()
	if cmd.ID != "c1" || cmd.Action != "work" || cmd.Payload["x"] != float64(1) || cmd.Attempt != 2 {
		t.Fatalf("handler got %+v", cmd)
	}
	if s := a.Stats(); s.CommandsReceived != 1 || s.Completed != 1 || s.Connects != 1 || !s.Connected {
		t.Fatalf("stats %+v", s)
	}
}

func TestHandlersRunConcurrentlyOffTheReadLoop(t *testing.T) {
	cp, a, _ := setup(t, func(c *Config) { c.MaxConcurrent = 3 })
	release := make(chan struct{})
	started := make(chan string, 4)
	var running, peak atomic.Int32
	a.Handle("work", func(ctx context.Context, cmd Command) (map[string]any, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		started <- cmd.ID
		<-release
		running.Add(-1)
		return nil, nil
	})
	start(t, a)
	c := nextConn(t, cp)
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		if err := c.SendCommand(id, "work", nil, 1); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		select {
		case <-started:
		case <-waitCtx(t).Done():
			t.Fatal("three handlers did not run at once")
		}
	}
	// All four are acknowledged and the reader still answers while every slot is busy.
	for range 4 {
		next[models.AckMessage](t, c, models.MessageTypeAck)
	}
	roundTrip(t, c)
	if n := running.Load(); n != 3 {
		t.Fatalf("%d handlers running, want MaxConcurrent=3", n)
	}
	close(release)
	seen := map[string]bool{}
	for range 4 {
		seen[next[models.CompleteMessage](t, c, models.MessageTypeComplete).CommandID] = true
	}
	if len(seen) != 4 || peak.Load() != 3 {
		t.Fatalf("completed %v, peak %d", seen, peak.Load())
	}
}

func TestDuplicateCommandIsAckedNotRunAgain(t *testing.T) {
	cp, a, logs := setup(t, nil)
	release := make(chan struct{})
	var calls atomic.Int32
	a.Handle("work", func(ctx context.Context, cmd Command) (map[string]any, error) {
		calls.Add(1)
		<-release
		return map[string]any{"n": 1}, nil
	})
	start(t, a)
	c := nextConn(t, cp)
	send := func(attempt int) {
		t.Helper()
		if err := c.SendCommand("c1", "work", nil, attempt); err != nil {
			t.Fatal(err)
		}
		if ack := next[models.AckMessage](t, c, models.MessageTypeAck); ack.CommandID != "c1" {
			t.Fatalf("ack %+v", ack)
		}
	}
	send(1)
	send(2) // redelivered while running: acknowledged, not run
	close(release)
	if done := next[models.CompleteMessage](t, c, models.MessageTypeComplete); done.CommandID != "c1" {
		t.Fatalf("complete %+v", done)
	}
	send(3) // redelivered once done: acknowledged, result sent again
	if done := next[models.CompleteMessage](t, c, models.MessageTypeComplete); done.CommandID != "c1" || done.Result["n"] != float64(1) {
		t.Fatalf("complete re-sent %+v", done)
	}
	// The control plane refuses the replayed result: expected, so not a warning.
	if err := c.Send(models.MessageTypeError, models.ErrorMessage{Message: "command is already completed", CommandID: "c1"}); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a refused replay was logged as a warning:\n%s", logs.String())
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want once", n)
	}
	if s := a.Stats(); s.Duplicates != 2 || s.CommandsReceived != 3 || s.Completed != 1 || s.ServerErrors != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestFailedCommands(t *testing.T) {
	cp, a, _ := setup(t, nil)
	a.Handle("broken", func(ctx context.Context, cmd Command) (map[string]any, error) {
		return nil, errors.New("disk full")
	})
	a.Handle("panics", func(ctx context.Context, cmd Command) (map[string]any, error) {
		panic("boom")
	})
	a.Handle("unencodable", func(ctx context.Context, cmd Command) (map[string]any, error) {
		return map[string]any{"ch": make(chan int)}, nil
	})
	start(t, a)
	c := nextConn(t, cp)
	want := map[string]string{
		"c1": "disk full",
		"c2": "handler panicked: boom",
		"c3": "unknown action: nope",
	}
	for id, action := range map[string]string{"c1": "broken", "c2": "panics", "c3": "nope", "c4": "unencodable"} {
		if err := c.SendCommand(id, action, nil, 1); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	for range 4 {
		f := next[models.FailedMessage](t, c, models.MessageTypeFailed)
		got[f.CommandID] = f.Error
	}
	for id, msg := range want {
		if got[id] != msg {
			t.Errorf("%s failed with %q, want %q", id, got[id], msg)
		}
	}
	if got["c4"] == "" {
		t.Error("an unencodable result did not fail")
	}
	if s := a.Stats(); s.Failed != 4 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMemoryIsBounded(t *testing.T) {
	m := newMemory(3)
	for _, id := range []string{"a", "b", "c"} {
		if _, fresh := m.add(id); !fresh {
			t.Fatalf("%s not fresh", id)
		}
	}
	m.finish("a", []byte("ra"))
	if e, fresh := m.add("a"); fresh || string(e.result) != "ra" {
		t.Fatal("a forgotten too early")
	}
	m.add("d") // evicts a, the oldest
	if _, fresh := m.add("a"); !fresh {
		t.Fatal("a still remembered past the limit")
	}
	if len(m.entries) != 3 {
		t.Fatalf("%d entries, want 3", len(m.entries))
	}
}

func TestConcurrentReportStatus(t *testing.T) {
	cp, a, _ := setup(t, nil)
	start(t, a)
	c := nextConn(t, cp)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if err := a.ReportStatus(context.Background(), models.StatusMessage{SessionID: "s", State: "running", VNCPort: i}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for range 50 {
		next[models.StatusMessage](t, c, models.MessageTypeStatus)
	}
	if err := a.ReportStatus(context.Background(), models.StatusMessage{}); err == nil {
		t.Fatal("a status without sessionId was accepted")
	}
}

// TestResultResentWhenControlPlaneAsksForRetry: an error frame with retry for a command whose
// result the agent knows makes it send that result again with the next heartbeat.
func TestResultResentWhenControlPlaneAsksForRetry(t *testing.T) {
	clock := clockwork.NewFakeClock()
	cp, a, _ := setup(t, func(c *Config) { c.Clock = clock; c.HeartbeatInterval = 30 * time.Second })
	a.Handle("work", func(ctx context.Context, cmd Command) (map[string]any, error) {
		return map[string]any{"n": 1}, nil
	})
	start(t, a)
	c := nextConn(t, cp)
	if err := c.SendCommand("c1", "work", nil, 1); err != nil {
		t.Fatal(err)
	}
	next[models.CompleteMessage](t, c, models.MessageTypeComplete)
	if err := c.Send(models.MessageTypeError, models.ErrorMessage{
		Message: "could not record complete now; send it again later", CommandID: "c1", Retry: true,
	}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, waitTimeout, "the retry is kept", func() bool {
		a.outMu.Lock()
		defer a.outMu.Unlock()
		return len(a.retry) == 1
	})
	clock.Advance(30 * time.Second)
	again := next[models.CompleteMessage](t, c, models.MessageTypeComplete)
	if again.CommandID != "c1" || again.Result["n"] != float64(1) {
		t.Fatalf("resent complete %+v", again)
	}
}
