package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/streamspace/streamspace-realtime/internal/redistest"
)

// budgetBus is a bus under test with a way to read what each organization's history holds,
// computed from the retained entries themselves.
type budgetBus struct {
	replicas []Bus // publishes alternate between them
	held     func(t *testing.T, org string) int64
	// total is what the bus's own accounting says all organizations hold together.
	total func(t *testing.T) int64
}

func budgetBuses() map[string]func(t *testing.T, h History) budgetBus {
	return map[string]func(t *testing.T, h History) budgetBus{
		"memory": func(t *testing.T, h History) budgetBus {
			b := NewMemoryBusWithHistory(h)
			t.Cleanup(func() { _ = b.Close() })
			return budgetBus{
				replicas: []Bus{b},
				held: func(t *testing.T, org string) int64 {
					b.mu.RLock()
					s, ok := b.orgs[org]
					b.mu.RUnlock()
					if !ok {
						return 0
					}
					var n int64
					s.mu.Lock()
					for _, m := range s.kept {
						n += entryBytes(m.payload)
					}
					s.mu.Unlock()
					if got, _ := b.HistoryBytes(org); got != n {
						t.Fatalf("%s: accounted %d bytes, holds %d", org, got, n)
					}
					return n
				},
				total: func(*testing.T) int64 { _, total := b.HistoryBytes(""); return total },
			}
		},
		"redis": func(t *testing.T, h History) budgetBus {
			client, prefix := redistest.Client(t)
			a := newTestRedis(t, client, prefix, "a", func(o *RedisOptions) { o.History = h }).Bus()
			b := newTestRedis(t, client, prefix, "b", func(o *RedisOptions) { o.History = h }).Bus()
			ctx := context.Background()
			return budgetBus{
				replicas: []Bus{a, b},
				held: func(t *testing.T, org string) int64 {
					entries, err := client.XRange(ctx, a.historyKey(org), "-", "+").Result()
					if err != nil {
						t.Fatal(err)
					}
					var n int64
					for _, e := range entries {
						p, _ := e.Values["p"].(string)
						n += entryBytes([]byte(p))
					}
					return n
				},
				total: func(t *testing.T) int64 {
					v, err := client.Get(ctx, a.budgetKeys()[2]).Result()
					if err != nil && err != redis.Nil {
						t.Fatal(err)
					}
					n, _ := strconv.ParseInt(v, 10, 64)
					return n
				},
			}
		},
	}
}

// One organization publishing large entries keeps at most its byte bound of history; many
// doing so keep at most the total between them, trimmed from the largest; an organization
// holding less than its share loses nothing, and a browser of it resuming still recovers.
func TestHistoryByteBudget(t *testing.T) {
	const (
		orgBytes   = 64 << 10
		totalBytes = 256 << 10
		big        = 6
	)
	for name, newBus := range budgetBuses() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			bb := newBus(t, History{Size: 1000, OrgBytes: orgBytes, TotalBytes: totalBytes})
			pub := func(i int, org string, payload []byte) Position {
				t.Helper()
				pos, err := bb.replicas[i%len(bb.replicas)].Publish(ctx, org, payload)
				if err != nil {
					t.Fatalf("publish to %s: %v", org, err)
				}
				return pos
			}
			orgs := []string{"small"}
			for i := range big {
				orgs = append(orgs, fmt.Sprintf("big%d", i))
			}
			since := pub(0, "small", []byte("first"))
			var want [][]byte
			for i := range 10 {
				want = append(want, fmt.Appendf(nil, "small %d", i))
				pub(i, "small", want[i])
			}
			until := since
			until.Offset += uint64(len(want))
			entry := bytes.Repeat([]byte("x"), 16<<10)
			for i := range 40 * big {
				org := fmt.Sprintf("big%d", i%big)
				pub(i, org, entry)
				var sum int64
				for _, o := range orgs {
					held := bb.held(t, o)
					if held > orgBytes {
						t.Fatalf("after %d publishes %s holds %d bytes of history, over its bound %d", i+1, o, held, orgBytes)
					}
					sum += held
				}
				if sum > totalBytes {
					t.Fatalf("after %d publishes the organizations hold %d bytes of history, over the total %d", i+1, sum, totalBytes)
				}
				if got := bb.total(t); got != sum {
					t.Fatalf("after %d publishes the total is accounted as %d, held %d", i+1, got, sum)
				}
			}
			share := int64(totalBytes / (big + 1))
			for _, o := range orgs[1:] {
				if held := bb.held(t, o); held == 0 || held > orgBytes {
					t.Errorf("%s holds %d bytes, want some, at most %d", o, held, orgBytes)
				}
			}
			if held := bb.held(t, "small"); held >= share {
				t.Fatalf("small holds %d bytes, the test needs it under its share %d", held, share)
			}
			for i, b := range bb.replicas {
				got, err := b.History(ctx, "small", since, until)
				if err != nil || len(got) != len(want) {
					t.Fatalf("replica %d: small's replay = %d entries, %v; want %d", i, len(got), err, len(want))
				}
				for j, m := range got {
					if !bytes.Equal(m.Payload, want[j]) {
						t.Fatalf("replica %d: small's entry %d = %q, want %q", i, j, m.Payload, want[j])
					}
				}
			}
		})
	}
}

// An entry larger than the organization's bound is delivered but not kept: resuming from
// before it is not recovered, and the history holds nothing.
func TestHistoryEntryOverOrgBytes(t *testing.T) {
	for name, newBus := range budgetBuses() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			bb := newBus(t, History{Size: 10, OrgBytes: 1 << 10, TotalBytes: 1 << 20})
			b := bb.replicas[0]
			first, err := b.Publish(ctx, "o", []byte("small"))
			if err != nil {
				t.Fatal(err)
			}
			last, err := b.Publish(ctx, "o", bytes.Repeat([]byte("x"), 2<<10))
			if err != nil {
				t.Fatal(err)
			}
			if held := bb.held(t, "o"); held != 0 {
				t.Fatalf("history holds %d bytes, want none", held)
			}
			if _, err := b.History(ctx, "o", first, last); !errors.Is(err, ErrHistoryGone) {
				t.Fatalf("replay over an entry that was not kept: %v, want ErrHistoryGone", err)
			}
		})
	}
}
