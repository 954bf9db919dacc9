package websocket

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkConnectIdle connects N real clients to the sessions socket and
// reports the cost of holding them idle. Client and server share this
// process, so heap and goroutines are reported for both ends together
// (the client side uses 1 KiB buffers to keep its share small).
func BenchmarkConnectIdle(b *testing.B) {
	for _, n := range []int{2000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchConnectIdle(b, n)
			}
		})
	}
}

func benchConnectIdle(b *testing.B, n int) {
	b.StopTimer()
	m := startManager(b, nil, Config{})
	base := sessionsServer(b, m)
	dialer := &websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()
	b.StartTimer()
	start := time.Now()
	conns := dialMany(b, dialer, base, n, func(i int) url.Values {
		return params("org", fmt.Sprintf("org-%d", i%10), "user", fmt.Sprintf("u%d", i))
	}, func(c *websocket.Conn) error {
		// The connected frame and the snapshot: the client is live.
		for k := 0; k < 2; k++ {
			if _, _, err := c.ReadMessage(); err != nil {
				return err
			}
		}
		return nil
	})
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(elapsed.Microseconds())/float64(n), "µs/connect")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/1024/float64(n), "heap-KiB/conn(both-ends)")
	b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/float64(n), "goroutines/conn")
	for _, c := range conns {
		_ = c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = m.Shutdown(ctx)
}

// BenchmarkDeliverToOrg measures one org stream entry fanned out to N
// clients' queues on this replica (no sockets: the hub's own cost).
func BenchmarkDeliverToOrg(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			const batch = 64 // queues are drained, timer stopped, once per batch
			h := NewHubWithConfig(Config{QueueSize: batch})
			for i := 0; i < n; i++ {
				c := newClient(h, nil, clientSpec{id: fmt.Sprint(i), org: OrgContext{OrgID: "o", Role: "admin"}})
				if !h.register(c, clientSpec{org: c.org}, nil, clusterPositionZero) {
					b.Fatal("register failed")
				}
			}
			entry, err := encodeEventEntry(SessionEvent{Type: EventSessionStateChange, SessionID: "s", UserID: "u",
				Data: map[string]any{"oldState": "pending", "newState": "running"}})
			if err != nil {
				b.Fatal(err)
			}
			clients := h.GetClientsByOrg("o")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.deliver(clusterMessage("o", uint64(i+1), entry))
				if (i+1)%batch == 0 || i == b.N-1 {
					b.StopTimer()
					for _, c := range clients {
						for len(c.send) > 0 {
							<-c.send
						}
					}
					b.StartTimer()
				}
			}
		})
	}
}
