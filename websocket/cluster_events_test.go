package websocket

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
)

// Two managers on one Redis bus, as two replicas: events published on either reach the
// entitled browsers of both, in stream order, once each, and nothing crosses organizations.
func TestEventsAcrossReplicas(t *testing.T) {
	client, prefix := redistest.Client(t)
	managers := make([]*Manager, 2)
	urls := make([]string, 2)
	for i, name := range []string{"a", "b"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := cluster.NewRedis(ctx, client, cluster.RedisOptions{Replica: name, Prefix: prefix})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		managers[i] = startManager(t, nil, Config{Bus: r.Bus()})
		urls[i] = sessionsServer(t, managers[i])
	}
	type browser struct {
		org  string
		conn interface{ Close() error }
		read func() frame
	}
	var browsers []browser
	for _, u := range urls {
		for _, org := range []string{"org-1", "org-2"} {
			conn := dial(t, u, params("org", org, "user", "ops", "role", "admin"))
			readUntilType(t, conn, "connected")
			readUntilType(t, conn, "sessions_update")
			browsers = append(browsers, browser{org: org, conn: conn, read: func() frame { return readFrame(t, conn) }})
		}
	}

	const perReplica = 50
	var wg sync.WaitGroup
	for i, m := range managers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perReplica {
				ev := SessionEvent{Type: EventSessionUpdated, SessionID: fmt.Sprintf("s-%d-%d", i, n), UserID: "u"}
				if _, err := m.GetNotifier().Publish(context.Background(), "org-1", ev); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// One event for org-2 last: its browsers must see it and nothing before it.
	if _, err := managers[1].GetNotifier().Publish(context.Background(), "org-2", SessionEvent{Type: EventSessionIdle, SessionID: "other"}); err != nil {
		t.Fatal(err)
	}

	for _, b := range browsers {
		if b.org == "org-2" {
			f := b.read()
			if f.str("type") != string(EventSessionIdle) || f.str("sessionId") != "other" {
				t.Fatalf("org-2 browser got %v first, want only org-2's event", f)
			}
			continue
		}
		seen := map[string]bool{}
		var last float64
		for range 2 * perReplica {
			f := b.read()
			id := f.str("sessionId")
			off, _ := f["offset"].(float64)
			if seen[id] || off <= last || f.str("type") != string(EventSessionUpdated) {
				t.Fatalf("org-1 browser: %v after offset %v (duplicate, out of order or foreign)", f, last)
			}
			seen[id], last = true, off
		}
	}
	for _, b := range browsers {
		_ = b.conn.Close()
	}
}
