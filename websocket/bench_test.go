package websocket

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
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

// BenchmarkBroadcastToOrg measures one org stream entry (what Notifier.BroadcastToOrg
// publishes) fanned out to N clients' queues on this replica, with no sockets: the hub's own
// cost, which must not allocate per receiver. BenchmarkBroadcastToOrgSockets adds the writes.
func BenchmarkBroadcastToOrg(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			const batch = 64 // queues are drained, timer stopped, once per batch
			h := NewHubWithConfig(Config{QueueSize: batch})
			b.Cleanup(h.Stop) // its pinger
			for i := 0; i < n; i++ {
				c := newClient(h, nil, clientSpec{id: fmt.Sprint(i), org: OrgContext{OrgID: "o", Role: "admin"}})
				if !h.register(c, clientSpec{org: c.org}, nil, clusterPositionZero) {
					b.Fatal("register failed")
				}
				holdWriter(c)
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
						if queued(c) == 0 {
							b.Fatal("a client got nothing")
						}
						dropQueued(c)
					}
					b.StartTimer()
				}
			}
		})
	}
}

// BenchmarkBroadcastToOrgSockets measures Hub.BroadcastToOrg to N real clients on loopback
// sockets, each read by its own goroutine, until every client has every message: the cost of a
// delivery with its write. Broadcasts go in windows of 32 (then the clients catch up), so
// queues never overflow; ns/delivery is the elapsed time over the deliveries. Both ends share
// the process (and its open-file limit: 5,000 clients are 10,000 sockets).
func BenchmarkBroadcastToOrgSockets(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 5000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			m := startManager(b, nil, Config{})
			base := sessionsServer(b, m)
			dialer := &websocket.Dialer{ReadBufferSize: 4096, WriteBufferSize: 256}
			var received atomic.Int64
			conns := dialMany(b, dialer, base, n, func(i int) url.Values {
				return params("org", "o", "user", fmt.Sprint("u", i))
			}, func(c *websocket.Conn) error {
				return readUntilTypeErr(c, "sessions_update")
			})
			var wg sync.WaitGroup
			for _, c := range conns {
				wg.Go(func() {
					for {
						if _, _, err := c.NextReader(); err != nil {
							return
						}
						received.Add(1)
					}
				})
			}
			msg := []byte(`{"type":"bench","data":{"sessionId":"s-1","state":"running","note":"a broadcast of about two hundred bytes, as session events are"}}`)
			const window = 32
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.Hub().BroadcastToOrg("o", msg)
				if (i+1)%window == 0 || i == b.N-1 {
					want := int64(i+1) * int64(n)
					for received.Load() < want {
						runtime.Gosched()
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*int64(n)), "ns/delivery")
			for _, c := range conns {
				_ = c.Close()
			}
			wg.Wait()
		})
	}
}

// holdWriter makes c's writing side look busy, so what is delivered to it stays queued: the
// queue-only benchmarks measure the hub's own cost, without sockets.
func holdWriter(c *Client) {
	c.out.mu.Lock()
	c.out.writing = true
	c.out.mu.Unlock()
}

func queued(c *Client) int {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	return len(c.out.queue)
}

func dropQueued(c *Client) {
	c.out.mu.Lock()
	clear(c.out.queue)
	c.out.queue = c.out.queue[:0]
	c.out.mu.Unlock()
}

// BenchmarkRouteEvent measures routing one event in an organization of N user clients, each
// subscribed to its own user and session: only the event's user gets it, so the cost must not
// grow with N.
func BenchmarkRouteEvent(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			const batch = 64 // the one receiving queue is drained, timer stopped, once per batch
			h := NewHubWithConfig(Config{QueueSize: batch})
			b.Cleanup(h.Stop) // its pinger
			var target *Client
			for i := range n {
				spec := clientSpec{id: fmt.Sprint(i), org: OrgContext{OrgID: "o", Role: "user"},
					users: []string{fmt.Sprint("u", i)}, sessions: []string{fmt.Sprint("s", i)}}
				c := newClient(h, nil, spec)
				if !h.register(c, spec, nil, clusterPositionZero) {
					b.Fatal("register failed")
				}
				holdWriter(c)
				if i == 7 {
					target = c
				}
			}
			entry, err := encodeEventEntry(SessionEvent{Type: EventSessionUpdated, SessionID: "s7", UserID: "u7"})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				h.deliver(clusterMessage("o", uint64(i+1), entry))
				if (i+1)%batch == 0 {
					b.StopTimer()
					if queued(target) == 0 {
						b.Fatal("the event's user got nothing")
					}
					dropQueued(target)
					b.StartTimer()
				}
			}
		})
	}
}

// BenchmarkEncodeEvent measures what publishing an event costs before the bus: the stream
// entry, and the frame with its position that every receiver shares.
func BenchmarkEncodeEvent(b *testing.B) {
	ev := SessionEvent{Type: EventSessionStateChange, SessionID: "s1", UserID: "u1",
		Timestamp: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC), Data: map[string]any{"oldState": "pending", "newState": "running"}}
	b.Run("entry", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeEventEntry(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	entry, err := encodeEventEntry(ev)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("frame", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e streamEntry
			if err := json.Unmarshal(entry, &e); err != nil {
				b.Fatal(err)
			}
			_ = withPosition(e.Payload, clusterPositionZero)
		}
	})
}
