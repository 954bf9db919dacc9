package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// A replica's peer address is readable by the others, comes back after Redis lost it, and
// expires with the replica's claims once it stops refreshing.
func TestRedisPeerAddr(t *testing.T) {
	client, prefix := redistest.Client(t)
	ctx := context.Background()
	short := func(o *RedisOptions) { o.OwnershipTTL = 900 * time.Millisecond }
	a := newTestRedis(t, client, prefix, "a", short, func(o *RedisOptions) { o.PeerAddr = "10.0.0.1:8090" })
	b := newTestRedis(t, client, prefix, "b", short).Directory()

	testkit.Eventually(t, 10*time.Second, "a's address published", func() bool {
		addr, ok, err := b.PeerAddr(ctx, "a")
		return err == nil && ok && addr == "10.0.0.1:8090"
	})
	if addr, ok, err := b.PeerAddr(ctx, "b"); err != nil || ok {
		t.Fatalf("b published no address, got %q, %v, %v", addr, ok, err)
	}
	if _, ok, err := b.PeerAddr(ctx, ""); err != nil || ok {
		t.Fatalf("empty replica name: ok=%v err=%v", ok, err)
	}

	if err := client.Del(ctx, a.Directory().peerKey("a")).Err(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "a's address published again", func() bool {
		_, ok, _ := b.PeerAddr(ctx, "a")
		return ok
	})

	_ = a.Close()
	testkit.Eventually(t, 10*time.Second, "a's address to expire", func() bool {
		_, ok, _ := b.PeerAddr(ctx, "a")
		return !ok
	})
}

func TestMemoryDirectoryHasNoPeers(t *testing.T) {
	d := NewMemoryDirectory("r1")
	defer func() { _ = d.Close() }()
	if _, ok, err := d.PeerAddr(context.Background(), "r1"); ok || err != nil {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
}
