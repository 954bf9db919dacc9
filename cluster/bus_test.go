package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

func TestMain(m *testing.M) {
	SetRedisLogger(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m, redistest.LeakOptions()...)
}

// busFactory makes a fresh Bus for one test. Every implementation runs the
// same suite, so single node and scale-out behave alike.
type busFactory func(t *testing.T) Bus

func busImplementations() map[string]busFactory {
	return map[string]busFactory{
		"memory": func(t *testing.T) Bus {
			b := NewMemoryBus()
			t.Cleanup(func() { _ = b.Close() })
			return b
		},
		"redis": func(t *testing.T) Bus {
			client, prefix := redistest.Client(t)
			return newTestRedis(t, client, prefix, "r1").Bus()
		},
	}
}

// watch makes b deliver org's messages for the rest of the test.
func watch(t *testing.T, b Bus, orgs ...string) {
	t.Helper()
	for _, org := range orgs {
		unwatch, err := b.Watch(context.Background(), org)
		if err != nil {
			t.Fatalf("watch %s: %v", org, err)
		}
		t.Cleanup(unwatch)
	}
}

func TestBus(t *testing.T) {
	for name, newBus := range busImplementations() {
		t.Run(name, func(t *testing.T) {
			t.Run("OrderPerOrg", func(t *testing.T) { testOrderPerOrg(t, newBus(t)) })
			t.Run("Position", func(t *testing.T) { testPosition(t, newBus(t)) })
			t.Run("Unsubscribe", func(t *testing.T) { testUnsubscribe(t, newBus(t)) })
			t.Run("Close", func(t *testing.T) { testClose(t, newBus(t)) })
			t.Run("Watch", func(t *testing.T) { testWatch(t, newBus(t)) })
		})
	}
}

// recorder collects what a handler receives, per org.
type recorder struct {
	mu   sync.Mutex
	msgs map[string][]Message
}

func (r *recorder) handle(m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.msgs == nil {
		r.msgs = make(map[string][]Message)
	}
	r.msgs[m.OrgID] = append(r.msgs[m.OrgID], m)
}

func (r *recorder) get(org string) []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs[org]...)
}

func testOrderPerOrg(t *testing.T, b Bus) {
	ctx := context.Background()
	var r1, r2 recorder
	defer b.Subscribe(r1.handle)()
	defer b.Subscribe(r2.handle)()

	const orgs, publishers, perPublisher = 3, 4, 250
	watch(t, b, "org-0", "org-1", "org-2")
	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perPublisher; i++ {
				org := fmt.Sprintf("org-%d", i%orgs)
				if _, err := b.Publish(ctx, org, []byte(fmt.Sprintf("%d-%d", p, i))); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	testkit.Eventually(t, 10*time.Second, "every message delivered", func() bool {
		n := 0
		for o := 0; o < orgs; o++ {
			n += len(r2.get(fmt.Sprintf("org-%d", o)))
		}
		return n == publishers*perPublisher
	})

	total := 0
	for o := 0; o < orgs; o++ {
		org := fmt.Sprintf("org-%d", o)
		got1, got2 := r1.get(org), r2.get(org)
		if len(got1) != len(got2) {
			t.Fatalf("%s: handlers saw %d and %d messages", org, len(got1), len(got2))
		}
		for i, m := range got1 {
			if m.Offset != uint64(i+1) {
				t.Fatalf("%s: message %d has offset %d, want %d", org, i, m.Offset, i+1)
			}
			if string(got2[i].Payload) != string(m.Payload) || m.OrgID != org {
				t.Fatalf("%s: handlers disagree at %d", org, i)
			}
		}
		total += len(got1)
	}
	if total != publishers*perPublisher {
		t.Fatalf("delivered %d messages, want %d", total, publishers*perPublisher)
	}
}

func testPosition(t *testing.T, b Bus) {
	ctx := context.Background()
	p0, err := b.Position(ctx, "empty-org")
	if err != nil || p0.Offset != 0 || p0.Epoch == "" {
		t.Fatalf("position of an empty org = %+v, %v; want offset 0 and an epoch", p0, err)
	}
	var last Position
	for i := 0; i < 5; i++ {
		if last, err = b.Publish(ctx, "o", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.Position(ctx, "o")
	if err != nil || got != last || got.Offset != 5 {
		t.Fatalf("position = %+v, %v; want %+v", got, err, last)
	}
	if got.String() != fmt.Sprintf("%s:5", got.Epoch) {
		t.Fatalf("String() = %q", got.String())
	}
}

func testUnsubscribe(t *testing.T, b Bus) {
	ctx := context.Background()
	var r recorder
	watch(t, b, "o")
	unsub := b.Subscribe(r.handle)
	if _, err := b.Publish(ctx, "o", []byte("1")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the first message", func() bool { return len(r.get("o")) == 1 })
	unsub()
	unsub() // idempotent
	if _, err := b.Publish(ctx, "o", []byte("2")); err != nil {
		t.Fatal(err)
	}
	// A later handler that sees the third message proves the second was delivered (in order).
	var probe recorder
	defer b.Subscribe(probe.handle)()
	if _, err := b.Publish(ctx, "o", []byte("3")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the third message", func() bool {
		got := probe.get("o")
		return len(got) > 0 && string(got[len(got)-1].Payload) == "3"
	})
	if got := r.get("o"); len(got) != 1 {
		t.Fatalf("after unsubscribe got %d messages, want 1", len(got))
	}
}

func testClose(t *testing.T, b Bus) {
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b.Publish(context.Background(), "o", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v, want ErrClosed", err)
	}
}

// testWatch: a watched organization's messages arrive once each, also when several watch it,
// and still arrive while one of several watchers is left.
func testWatch(t *testing.T, b Bus) {
	ctx := context.Background()
	var r recorder
	defer b.Subscribe(r.handle)()
	u1, err := b.Watch(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	u2, err := b.Watch(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, "w", []byte("1")); err != nil {
		t.Fatal(err)
	}
	u1()
	u1() // idempotent: must not withdraw the second watcher's interest
	if _, err := b.Publish(ctx, "w", []byte("2")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "both messages", func() bool { return len(r.get("w")) >= 2 })
	u2()
	got := r.get("w")
	if len(got) != 2 || string(got[0].Payload) != "1" || string(got[1].Payload) != "2" {
		t.Fatalf("got %d messages %v, want 1 then 2 once each", len(got), got)
	}
}

func TestMemoryBusEpochsDiffer(t *testing.T) {
	a, b := NewMemoryBus(), NewMemoryBus()
	if a.Epoch() == b.Epoch() {
		t.Fatal("two buses share an epoch")
	}
}

func TestPublishHonoursContext(t *testing.T) {
	b := NewMemoryBus()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Publish(ctx, "o", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("publish with cancelled ctx: %v", err)
	}
}
