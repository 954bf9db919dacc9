package cluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/streamspace/streamspace-realtime/internal/redistest"
)

// BenchmarkRedisBusWatch is the price of subscribing per organization on demand: the first
// Watch of an org on a replica waits for Redis to confirm the SUBSCRIBE; later ones are free.
func BenchmarkRedisBusWatch(b *testing.B) {
	client, prefix := redistest.Client(b)
	bus := newTestRedisTB(b, client, prefix, "bench").Bus()
	ctx := context.Background()
	b.Run("first", func(b *testing.B) {
		for i := range b.N {
			unwatch, err := bus.Watch(ctx, fmt.Sprintf("org-%d", i))
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			unwatch()
			b.StartTimer()
		}
	})
	b.Run("again", func(b *testing.B) {
		keep, err := bus.Watch(ctx, "kept")
		if err != nil {
			b.Fatal(err)
		}
		defer keep()
		b.ResetTimer()
		for range b.N {
			unwatch, err := bus.Watch(ctx, "kept")
			if err != nil {
				b.Fatal(err)
			}
			unwatch()
		}
	})
}

// BenchmarkRedisBusDeliver measures Publish on one replica until the handler of another has the
// message, one at a time.
func BenchmarkRedisBusDeliver(b *testing.B) {
	client, prefix := redistest.Client(b)
	from := newTestRedisTB(b, client, prefix, "from").Bus()
	to := newTestRedisTB(b, client, prefix, "to").Bus()
	got := make(chan struct{}, 1)
	defer to.Subscribe(func(Message) { got <- struct{}{} })()
	unwatch, err := to.Watch(context.Background(), "o")
	if err != nil {
		b.Fatal(err)
	}
	defer unwatch()
	payload := []byte(`{"k":"e","p":{"type":"session.updated","sessionId":"s1"}}`)
	b.ResetTimer()
	for range b.N {
		if _, err := from.Publish(context.Background(), "o", payload); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}
