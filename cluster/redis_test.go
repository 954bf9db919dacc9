package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// messages collects a directory's messages.
type messages struct {
	mu  sync.Mutex
	got []ReplicaMessage
}

func (m *messages) handle(msg ReplicaMessage) {
	m.mu.Lock()
	m.got = append(m.got, msg)
	m.mu.Unlock()
}

func (m *messages) all() []ReplicaMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]ReplicaMessage(nil), m.got...)
}

// Two replicas publishing to one org concurrently: each replica watching it sees every message
// once, in one order, the same on both.
func TestRedisBusAcrossReplicas(t *testing.T) {
	client, prefix := redistest.Client(t)
	a := newTestRedis(t, client, prefix, "a").Bus()
	b := newTestRedis(t, client, prefix, "b").Bus()
	var ra, rb recorder
	defer a.Subscribe(ra.handle)()
	defer b.Subscribe(rb.handle)()
	watch(t, a, "o")
	watch(t, b, "o")
	const per = 200
	var wg sync.WaitGroup
	for _, bus := range []Bus{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := bus.Publish(context.Background(), "o", []byte(fmt.Sprint(i))); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	testkit.Eventually(t, 10*time.Second, "every message on both replicas", func() bool {
		return len(ra.get("o")) == 2*per && len(rb.get("o")) == 2*per
	})
	ga, gb := ra.get("o"), rb.get("o")
	for i := range ga {
		if ga[i].Offset != uint64(i+1) || gb[i].Position != ga[i].Position || string(gb[i].Payload) != string(ga[i].Payload) {
			t.Fatalf("replicas disagree at %d: %+v vs %+v", i, ga[i], gb[i])
		}
	}
}

// An organization nobody watches on a replica never travels to it: Redis has no subscriber of
// its channel, and the replica's handlers see nothing of it.
func TestRedisBusCarriesOnlyWatchedOrgs(t *testing.T) {
	client, prefix := redistest.Client(t)
	a := newTestRedis(t, client, prefix, "a").Bus()
	b := newTestRedis(t, client, prefix, "b").Bus()
	var rb recorder
	defer b.Subscribe(rb.handle)()
	watch(t, b, "mine")
	ctx := context.Background()
	_, _, secret := a.keys("secret")
	_, _, mine := a.keys("mine")
	subs, err := client.PubSubNumSub(ctx, secret, mine).Result()
	if err != nil {
		t.Fatal(err)
	}
	if subs[secret] != 0 || subs[mine] != 1 {
		t.Fatalf("subscribers = %v; want none of the unwatched org and one of the watched", subs)
	}
	if _, err := a.Publish(ctx, "secret", []byte("s")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctx, "mine", []byte("m")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the watched org's message", func() bool { return len(rb.get("mine")) == 1 })
	if got := rb.get("secret"); len(got) != 0 {
		t.Fatalf("an unwatched org's message reached the replica: %v", got)
	}
	// Withdrawing the last watch unsubscribes.
	b.mu.Lock()
	n := b.watches["mine"]
	b.mu.Unlock()
	if n != 1 {
		t.Fatalf("watches = %d", n)
	}
}

// The agent moves from replica a to replica b: a is told it lost the agent, a's late cleanup
// leaves b's claim alone, and both see b as the holder.
func TestRedisDirectoryHandover(t *testing.T) {
	client, prefix := redistest.Client(t)
	a := newTestRedis(t, client, prefix, "a").Directory()
	b := newTestRedis(t, client, prefix, "b").Directory()
	var ma messages
	defer a.Subscribe(ma.handle)()
	ctx := context.Background()
	if err := a.Claim(ctx, "agent", "ga"); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, "agent", "gb"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "a told it lost the agent", func() bool { return len(ma.all()) == 1 })
	if got := ma.all()[0]; got.Kind != KindLost || got.AgentID != "agent" || got.Generation != "ga" {
		t.Fatalf("a got %+v", got)
	}
	if done, err := a.Release(ctx, "agent", "ga"); done || err != nil {
		t.Fatalf("a's late release = %v, %v; want false", done, err)
	}
	for _, d := range []*RedisDirectory{a, b} {
		if o, ok, err := d.Lookup(ctx, "agent"); err != nil || !ok || o != (Owner{"b", "gb"}) {
			t.Fatalf("lookup from %s = %+v, %v, %v", d.Replica(), o, ok, err)
		}
	}
	// a's refresh must not take the agent back.
	if err := a.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if o, _, _ := a.Lookup(ctx, "agent"); o.Replica != "b" {
		t.Fatalf("after a's refresh the holder is %+v", o)
	}
}

// A replica that dies without releasing stops holding its agents one TTL later; one that lost
// its claims in Redis (data loss) restores them at its next refresh, and a claim another holder
// took is reported lost.
func TestRedisDirectoryExpiryAndRefresh(t *testing.T) {
	client, prefix := redistest.Client(t)
	short := func(o *RedisOptions) { o.OwnershipTTL = 600 * time.Millisecond }
	ctx := context.Background()

	dead := newTestRedis(t, client, prefix, "dead", short)
	if err := dead.Directory().Claim(ctx, "orphan", "g"); err != nil {
		t.Fatal(err)
	}
	_ = dead.Close() // an abrupt end: no release
	live := newTestRedis(t, client, prefix, "live", short).Directory()
	if _, ok, _ := live.Lookup(ctx, "orphan"); !ok {
		t.Fatal("claim gone before its TTL")
	}
	testkit.Eventually(t, 10*time.Second, "the dead replica's claim to expire", func() bool {
		_, ok, _ := live.Lookup(ctx, "orphan")
		return !ok
	})
	if ids, _ := live.Connected(ctx); len(ids) != 0 {
		t.Fatalf("connected = %v", ids)
	}

	var ml messages
	defer live.Subscribe(ml.handle)()
	if err := live.Claim(ctx, "kept", "g1"); err != nil {
		t.Fatal(err)
	}
	if err := live.Claim(ctx, "taken", "g2"); err != nil {
		t.Fatal(err)
	}
	// Redis lost everything, and another holder took "taken" meanwhile, as a replica that never
	// heard of live would. In one transaction: the background refresh must not see half of it
	// (a holder without its expiry is swept and taken back).
	other := "elsewhere|gx"
	_, err := client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, live.keys...)
		p.HSet(ctx, live.keys[0], "taken", other)
		p.ZAdd(ctx, live.keys[1], redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: "taken"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := live.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if o, ok, _ := live.Lookup(ctx, "kept"); !ok || o.Generation != "g1" {
		t.Fatalf("kept after refresh = %+v, %v", o, ok)
	}
	testkit.Eventually(t, 10*time.Second, "taken reported lost", func() bool { return len(ml.all()) == 1 })
	if got := ml.all()[0]; got.Kind != KindLost || got.AgentID != "taken" || got.Generation != "g2" {
		t.Fatalf("got %+v", got)
	}
}

// NewRedis refuses a Redis that does not answer: a replica must not serve alone.
func TestNewRedisRefusesUnreachable(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := NewRedis(ctx, client, RedisOptions{Replica: "r"})
	if err == nil {
		_ = r.Close()
		t.Fatal("NewRedis succeeded without Redis")
	}
}

// Redis stops and comes back: meanwhile a replica's own publishes still reach its handlers
// (ErrLocalOnly) and Ready fails; afterwards, without a restart, messages flow between replicas
// again and claims are restored.
func TestRedisOutageAndRecovery(t *testing.T) {
	srv := redistest.Start(t)
	newClient := func() redis.UniversalClient {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	fast := func(o *RedisOptions) { o.HealthInterval = 50 * time.Millisecond; o.OwnershipTTL = 3 * time.Second }
	a := newTestRedis(t, newClient(), "t", "a", fast)
	b := newTestRedis(t, newClient(), "t", "b", fast)
	var ra, rb recorder
	defer a.Bus().Subscribe(ra.handle)()
	defer b.Bus().Subscribe(rb.handle)()
	watch(t, a.Bus(), "o")
	watch(t, b.Bus(), "o")
	ctx := context.Background()
	if err := a.Directory().Claim(ctx, "agent", "g"); err != nil {
		t.Fatal(err)
	}

	srv.Stop(t)
	if _, err := a.Bus().Publish(ctx, "o", []byte("during")); !errors.Is(err, ErrLocalOnly) {
		t.Fatalf("publish during the outage: %v, want ErrLocalOnly", err)
	}
	if got := ra.get("o"); len(got) != 1 || string(got[0].Payload) != "during" {
		t.Fatalf("local delivery during the outage: %v", got)
	}
	testkit.Eventually(t, 10*time.Second, "not ready", func() bool { return a.Ready(ctx) != nil })

	srv.Restart(t)
	restarted := time.Now()
	testkit.Eventually(t, 10*time.Second, "ready again", func() bool { return a.Ready(ctx) == nil && b.Ready(ctx) == nil })
	testkit.Eventually(t, 10*time.Second, "the claim restored", func() bool {
		o, ok, _ := b.Directory().Lookup(ctx, "agent")
		return ok && o.Replica == "a"
	})
	if _, err := a.Bus().Publish(ctx, "o", []byte("after")); err != nil {
		t.Fatalf("publish after the outage: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "b receives a's message", func() bool {
		got := rb.get("o")
		return len(got) == 1 && string(got[0].Payload) == "after"
	})
	t.Logf("delivery resumed %v after Redis restarted", time.Since(restarted).Round(time.Millisecond))
}

// A browser leaves and another of the same org arrives at once, over and over: each Watch that
// returns must be a live subscription, even when it follows the last unwatch before Redis
// answered that UNSUBSCRIBE.
func TestRedisBusRewatch(t *testing.T) {
	client, prefix := redistest.Client(t)
	pub := newTestRedis(t, client, prefix, "pub").Bus()
	sub := newTestRedis(t, client, prefix, "sub").Bus()
	var r recorder
	defer sub.Subscribe(r.handle)()
	ctx := context.Background()
	for i := range 200 {
		first, err := sub.Watch(ctx, "o")
		if err != nil {
			t.Fatal(err)
		}
		first()
		again, err := sub.Watch(ctx, "o")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(ctx, "o", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 10*time.Second, fmt.Sprintf("message %d after a re-watch", i), func() bool {
			got := r.get("o")
			return len(got) > 0 && string(got[len(got)-1].Payload) == fmt.Sprint(i)
		})
		again()
	}
}

// A refresh that runs while a claim is on its way to Redis leaves that claim alone: Redis
// still names the agent's previous holder (a replica that died), and taking it for a newer one
// would report the new connection lost and close it.
func TestRedisDirectoryRefreshDuringClaim(t *testing.T) {
	client, prefix := redistest.Client(t)
	ctx := context.Background()
	d := newTestRedis(t, client, prefix, "new").Directory()
	var msgs messages
	defer d.Subscribe(msgs.handle)()
	// The previous holder died a moment ago: its claim has not expired.
	_, err := client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, d.keys[0], "agent", "dead|g1")
		p.ZAdd(ctx, d.keys[1], redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: "agent"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The claim of the new connection, as Claim makes it before its script reaches Redis.
	d.mu.Lock()
	d.claims["agent"], d.claiming["agent"] = "g2", "g2"
	d.mu.Unlock()
	if err := d.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := msgs.all(); len(got) != 0 { // refresh reports what it lost before returning
		t.Fatalf("the claim on its way was reported lost: %+v", got)
	}
	// The claim lands; from then on it is refreshed, and kept.
	d.mu.Lock()
	delete(d.claiming, "agent")
	d.mu.Unlock()
	if err := d.Claim(ctx, "agent", "g2"); err != nil {
		t.Fatal(err)
	}
	if err := d.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if o, ok, _ := d.Lookup(ctx, "agent"); !ok || o.Replica != "new" || o.Generation != "g2" {
		t.Fatalf("after the claim: %+v %v", o, ok)
	}
	if got := msgs.all(); len(got) != 0 {
		t.Fatalf("messages to the new holder: %+v", got)
	}
}
