package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// historyBuses makes buses that keep at least 5 messages per organization.
func historyBuses() map[string]func(t *testing.T, h History) Bus {
	return map[string]func(t *testing.T, h History) Bus{
		"memory": func(t *testing.T, h History) Bus {
			b := NewMemoryBusWithHistory(h)
			t.Cleanup(func() { _ = b.Close() })
			return b
		},
		"redis": func(t *testing.T, h History) Bus {
			client, prefix := redistest.Client(t)
			return newTestRedis(t, client, prefix, "r1", func(o *RedisOptions) { o.History = h }).Bus()
		},
	}
}

// History replays exactly the messages after since up to until, in order; positions that are
// too old, of another epoch, or ahead of the stream are ErrHistoryGone.
func TestBusHistory(t *testing.T) {
	for name, newBus := range historyBuses() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			b := newBus(t, History{Size: 5, Max: 5})
			var last Position
			for i := 1; i <= 300; i++ {
				var err error
				if last, err = b.Publish(ctx, "o", fmt.Appendf(nil, "m%d", i)); err != nil {
					t.Fatal(err)
				}
				if _, err := b.Publish(ctx, "other", []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			got, err := b.History(ctx, "o", Position{Epoch: last.Epoch, Offset: 295}, last)
			if err != nil || len(got) != 5 {
				t.Fatalf("History(295..300) = %d messages, %v", len(got), err)
			}
			for i, m := range got {
				if m.Offset != uint64(296+i) || string(m.Payload) != fmt.Sprintf("m%d", 296+i) || m.Epoch != last.Epoch || m.OrgID != "o" {
					t.Fatalf("message %d = %+v %q", i, m.Position, m.Payload)
				}
			}
			until := Position{Epoch: last.Epoch, Offset: 297}
			if got, err := b.History(ctx, "o", Position{Epoch: last.Epoch, Offset: 296}, until); err != nil || len(got) != 1 || got[0].Offset != 297 {
				t.Fatalf("History(296..297) = %+v, %v", got, err)
			}
			if got, err := b.History(ctx, "o", last, last); err != nil || len(got) != 0 {
				t.Fatalf("History at the head = %+v, %v", got, err)
			}
			for what, since := range map[string]Position{
				"trimmed":     {Epoch: last.Epoch, Offset: 0},
				"other epoch": {Epoch: "elsewhere", Offset: 299},
				"ahead":       {Epoch: last.Epoch, Offset: 301},
				"other org's": {Epoch: last.Epoch, Offset: 10},
			} {
				if _, err := b.History(ctx, "o", since, last); !errors.Is(err, ErrHistoryGone) {
					t.Errorf("%s: err %v, want ErrHistoryGone", what, err)
				}
			}
			if _, err := b.History(ctx, "never", Position{Epoch: last.Epoch, Offset: 0}, Position{Epoch: last.Epoch, Offset: 1}); !errors.Is(err, ErrHistoryGone) {
				t.Errorf("unknown org: %v", err)
			}
		})
	}
}

// A bus that keeps no history replays nothing but the empty range.
func TestBusWithoutHistory(t *testing.T) {
	for name, newBus := range historyBuses() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			b := newBus(t, History{Size: -1})
			last, err := b.Publish(ctx, "o", []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.History(ctx, "o", Position{Epoch: last.Epoch}, last); !errors.Is(err, ErrHistoryGone) {
				t.Fatalf("err %v, want ErrHistoryGone", err)
			}
		})
	}
}

// A Redis that restarts without its data starts a new epoch: a position of the old one is not
// replayed, and the new epoch's history starts empty.
func TestRedisHistoryAfterRestart(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = client.Close() })
	b := newTestRedis(t, client, "h", "r1").Bus()
	ctx := context.Background()
	old, err := b.Publish(ctx, "o", []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	var now Position
	testkit.Eventually(t, 10*time.Second, "publishing after the restart", func() bool {
		now, err = b.Publish(ctx, "o", []byte("after"))
		return err == nil
	})
	if now.Epoch == old.Epoch {
		t.Fatalf("epoch %q survived a restart without data", now.Epoch)
	}
	if _, err := b.History(ctx, "o", old, now); !errors.Is(err, ErrHistoryGone) {
		t.Fatalf("old position: %v, want ErrHistoryGone", err)
	}
	got, err := b.History(ctx, "o", Position{Epoch: now.Epoch}, now)
	if err != nil || len(got) != 1 || string(got[0].Payload) != "after" {
		t.Fatalf("new epoch's history = %+v, %v", got, err)
	}
}
