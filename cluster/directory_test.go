package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// newTestRedis connects one replica to Redis under prefix and closes it when the test ends.
func newTestRedis(t *testing.T, client redis.UniversalClient, prefix, replica string, opts ...func(*RedisOptions)) *Redis {
	t.Helper()
	return newTestRedisTB(t, client, prefix, replica, opts...)
}

func newTestRedisTB(t testing.TB, client redis.UniversalClient, prefix, replica string, opts ...func(*RedisOptions)) *Redis {
	t.Helper()
	o := RedisOptions{Replica: replica, Prefix: prefix}
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := NewRedis(ctx, client, o)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

type dirFactory func(t *testing.T) Directory

func directoryImplementations() map[string]dirFactory {
	return map[string]dirFactory{
		"memory": func(t *testing.T) Directory {
			d := NewMemoryDirectory("r1")
			t.Cleanup(func() { _ = d.Close() })
			return d
		},
		"redis": func(t *testing.T) Directory {
			client, prefix := redistest.Client(t)
			return newTestRedis(t, client, prefix, "r1").Directory()
		},
	}
}

func TestDirectory(t *testing.T) {
	for name, newDir := range directoryImplementations() {
		t.Run(name, func(t *testing.T) {
			t.Run("ClaimLookupRelease", func(t *testing.T) { testClaimLookupRelease(t, newDir(t)) })
			t.Run("LateReleaseKeepsNewClaim", func(t *testing.T) { testLateRelease(t, newDir(t)) })
			t.Run("Lookups", func(t *testing.T) { testLookups(t, newDir(t)) })
			t.Run("Messages", func(t *testing.T) { testMessages(t, newDir(t)) })
		})
	}
}

func testClaimLookupRelease(t *testing.T, d Directory) {
	ctx := context.Background()
	if _, ok, err := d.Lookup(ctx, "a1"); ok || err != nil {
		t.Fatalf("lookup before claim = %v, %v", ok, err)
	}
	if err := d.Claim(ctx, "a1", "g1"); err != nil {
		t.Fatal(err)
	}
	o, ok, err := d.Lookup(ctx, "a1")
	if err != nil || !ok || o != (Owner{Replica: d.Replica(), Generation: "g1"}) {
		t.Fatalf("lookup = %+v, %v, %v", o, ok, err)
	}
	ids, err := d.Connected(ctx)
	if err != nil || !slices.Equal(ids, []string{"a1"}) {
		t.Fatalf("connected = %v, %v", ids, err)
	}
	if done, err := d.Release(ctx, "a1", "g0"); done || err != nil {
		t.Fatalf("release of another generation = %v, %v; want false", done, err)
	}
	if done, err := d.Release(ctx, "a1", "g1"); !done || err != nil {
		t.Fatalf("release = %v, %v; want true", done, err)
	}
	if _, ok, _ := d.Lookup(ctx, "a1"); ok {
		t.Fatal("agent still held after release")
	}
	if ids, _ := d.Connected(ctx); len(ids) != 0 {
		t.Fatalf("connected after release = %v", ids)
	}
}

// testLateRelease: the cleanup of a replaced connection runs after its successor claimed the
// agent; the successor's claim must survive it.
func testLateRelease(t *testing.T, d Directory) {
	ctx := context.Background()
	if err := d.Claim(ctx, "a1", "old"); err != nil {
		t.Fatal(err)
	}
	if err := d.Claim(ctx, "a1", "new"); err != nil {
		t.Fatal(err)
	}
	if done, _ := d.Release(ctx, "a1", "old"); done {
		t.Fatal("the old connection's release removed the new claim")
	}
	if o, ok, _ := d.Lookup(ctx, "a1"); !ok || o.Generation != "new" {
		t.Fatalf("lookup = %+v, %v; want generation new", o, ok)
	}
}

func testLookups(t *testing.T, d Directory) {
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if err := d.Claim(ctx, id, "g-"+id); err != nil {
			t.Fatal(err)
		}
	}
	got, err := d.Lookups(ctx, []string{"a", "c", "zz"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"].Generation != "g-a" || got["c"].Generation != "g-c" {
		t.Fatalf("lookups = %+v", got)
	}
}

func testMessages(t *testing.T, d Directory) {
	ctx := context.Background()
	var mu sync.Mutex
	var got []ReplicaMessage
	defer d.Subscribe(func(m ReplicaMessage) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	})()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	if err := d.Send(ctx, d.Replica(), ReplicaMessage{Kind: "wake", AgentID: "a1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Broadcast(ctx, ReplicaMessage{Kind: "all", Payload: []byte(`{"x":1}`)}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "two messages", func() bool { return count() >= 2 })
	if err := d.Send(ctx, "nobody", ReplicaMessage{Kind: "wake"}); !errors.Is(err, ErrUnknownReplica) {
		t.Fatalf("send to a missing replica: %v, want ErrUnknownReplica", err)
	}
	// One more round trip, so a duplicate of the broadcast would have arrived by now.
	if err := d.Broadcast(ctx, ReplicaMessage{Kind: "end"}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the last message", func() bool { return count() >= 3 })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[0].Kind != "wake" || got[0].AgentID != "a1" ||
		got[1].Kind != "all" || string(got[1].Payload) != `{"x":1}` || got[2].Kind != "end" {
		t.Fatalf("messages = %+v", got)
	}
}
