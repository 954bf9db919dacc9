package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// Leases count across replicas: a user at its limit on one replica is refused on another, a
// released lease frees its slot at once on its replica and on the others once the releaser
// told Redis, and a dead replica's leases expire with its claims while a live replica's are
// kept by the refresh.
func TestLeasesAcrossReplicas(t *testing.T) {
	client, prefix := redistest.Client(t)
	short := func(o *RedisOptions) { o.OwnershipTTL = 600 * time.Millisecond }
	ctx := context.Background()
	a := newTestRedis(t, client, prefix, "a", short).Leases()
	b := newTestRedis(t, client, prefix, "b", short).Leases()
	slots := func(user string) []LeaseSlot {
		return []LeaseSlot{{Key: "user:o1\x00" + user, Limit: 2}, {Key: "org:o1", Limit: 3}}
	}
	take := func(l *Leases, user string) (func(), int) {
		t.Helper()
		release, refused, err := l.Acquire(ctx, slots(user))
		if err != nil {
			t.Fatal(err)
		}
		if (release == nil) != (refused >= 0) {
			t.Fatalf("release %v with refused %d", release != nil, refused)
		}
		return release, refused
	}

	alice1, _ := take(a, "alice")
	if _, refused := take(b, "alice"); refused != -1 {
		t.Fatalf("alice's second connection refused by slot %d", refused)
	}
	if _, refused := take(b, "alice"); refused != 0 {
		t.Fatalf("alice's third connection: refused %d, want 0 (the user slot)", refused)
	}
	if _, refused := take(a, "alice"); refused != 0 {
		t.Fatalf("alice's third connection on a: refused %d, want 0", refused)
	}
	// A refusal takes nothing: bob still fits under the org's 3.
	if _, refused := take(a, "bob"); refused != -1 {
		t.Fatalf("bob refused by slot %d", refused)
	}
	if _, refused := take(b, "carol"); refused != 1 {
		t.Fatalf("a fourth connection of o1: refused %d, want 1 (the org slot)", refused)
	}
	// Released on a, taken again on a at once: the take removes the release on its way.
	alice1()
	alice3, refused := take(a, "alice")
	if refused != -1 {
		t.Fatalf("after a release, refused %d on the same replica", refused)
	}
	// Released on a, free on b as soon as the releaser has told Redis.
	alice3()
	testkit.Eventually(t, 10*time.Second, "the release to reach Redis", func() bool {
		n, _ := client.ZCard(ctx, prefix+":{conns}:user:o1\x00alice").Result()
		return n == 1
	})
	if _, refused := take(b, "alice"); refused != -1 {
		t.Fatalf("after a release on a, refused %d on b", refused)
	}
	if a.Held() != 1 || b.Held() != 2 {
		t.Fatalf("held a=%d b=%d, want 1 and 2", a.Held(), b.Held())
	}

	// b dies without releasing; a lives on. After several TTLs b's two leases are gone and
	// a's one (bob) is still counted: a take sweeps the expired, then o1 holds bob and alice.
	_ = b.r.Close()
	// Kept: the leases expire by Redis's clock and stay in place until a take sweeps them, so
	// there is nothing to wait on but the TTLs passing, which is what this checks.
	time.Sleep(3 * 600 * time.Millisecond)
	if _, refused := take(a, "alice"); refused != -1 {
		t.Fatalf("alice after b died: refused %d", refused)
	}
	n, err := client.ZCard(ctx, prefix+":{conns}:org:o1").Result()
	if err != nil || n != 2 {
		t.Fatalf("o1's leases after b died: %d, %v; want 2 (bob's, kept by a's refresh, and alice's)", n, err)
	}
}

// While Redis is away a take fails (the server then counts on its replica alone); once Redis
// is back, empty, the leases still held are put back by the refresh, so open connections
// count again.
func TestLeasesThroughARedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = client.Close() })
	fast := func(o *RedisOptions) {
		o.HealthInterval = 50 * time.Millisecond
		o.OwnershipTTL = 600 * time.Millisecond
	}
	l := newTestRedis(t, client, "t", "a", fast).Leases()
	ctx := context.Background()
	slots := []LeaseSlot{{Key: "user:o1\x00alice", Limit: 1}}
	if _, refused, err := l.Acquire(ctx, slots); err != nil || refused != -1 {
		t.Fatalf("take: %d, %v", refused, err)
	}

	srv.Stop(t)
	if release, _, err := l.Acquire(ctx, slots); err == nil || release != nil {
		t.Fatalf("take during the outage: %v, want an error and nothing taken", err)
	}
	srv.Restart(t) // its data gone
	testkit.Eventually(t, 10*time.Second, "the held lease put back", func() bool {
		n, _ := client.ZCard(ctx, "t:{conns}:user:o1\x00alice").Result()
		return n == 1
	})
	if _, refused, err := l.Acquire(ctx, slots); err != nil || refused != 0 {
		t.Fatalf("a second take after the restart: %d, %v; want refused by slot 0", refused, err)
	}
}

// BenchmarkLeaseTakeAndRelease is the cost limits add to an upgrade with several replicas:
// one script call to take, and the release sent by the releaser.
func BenchmarkLeaseTakeAndRelease(b *testing.B) {
	client, prefix := redistest.Client(b)
	l := newTestRedisTB(b, client, prefix, "a").Leases()
	ctx := context.Background()
	slots := []LeaseSlot{{Key: "user:o1\x00alice", Limit: 1}, {Key: "org:o1", Limit: 1000}}
	for b.Loop() {
		release, refused, err := l.Acquire(ctx, slots)
		if err != nil || refused != -1 {
			b.Fatalf("take: %d, %v", refused, err)
		}
		release()
	}
}
