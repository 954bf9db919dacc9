package cluster

import (
	"context"
	"testing"

	"github.com/streamspace/streamspace-realtime/internal/redistest"
)

// BenchmarkPublishHistory is the per-event price of recording history: Publish with the
// default history against Publish with none, on the in-process bus and on Redis.
func BenchmarkPublishHistory(b *testing.B) {
	payload := []byte(`{"k":"e","u":"u1","s":"s1","p":{"type":"session.updated","sessionId":"s1","userId":"u1","timestamp":"2026-11-26T10:00:00Z","data":{"state":"running"}}}`)
	run := func(b *testing.B, bus Bus) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := bus.Publish(ctx, "o", payload); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name string
		h    History
	}{{"none", History{Size: -1}}, {"history", History{}}} {
		b.Run("memory/"+tc.name, func(b *testing.B) {
			bus := NewMemoryBusWithHistory(tc.h)
			defer bus.Close()
			run(b, bus)
		})
		b.Run("redis/"+tc.name, func(b *testing.B) {
			client, prefix := redistest.Client(b)
			run(b, newTestRedisTB(b, client, prefix, "bench", func(o *RedisOptions) { o.History = tc.h }).Bus())
		})
	}
}
