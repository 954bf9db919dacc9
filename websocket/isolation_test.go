package websocket

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// isoClient is one real WebSocket client of the isolation test and the
// model of what it is entitled to.
type isoClient struct {
	org, user string
	wholeOrg  bool
	sessions  map[string]bool
	conn      *websocket.Conn

	mu   sync.Mutex
	got  []string // "org/seq" ids in arrival order
	offs []uint64
	err  error
}

func (c *isoClient) entitled(org, user, session string, broadcast bool) bool {
	if org != c.org {
		return false
	}
	return broadcast || c.wholeOrg || user == c.user || c.sessions[session]
}

func (c *isoClient) read(done <-chan struct{}) {
	// The greeting reads left a deadline on the connection; this reader waits as long as the
	// test does.
	_ = c.conn.SetReadDeadline(time.Time{})
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			select {
			case <-done:
			default:
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
			return
		}
		var f struct {
			Type   string         `json:"type"`
			ID     string         `json:"id"`
			Data   map[string]any `json:"data"`
			Offset uint64         `json:"offset"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("bad frame %q: %w", data, err)
			c.mu.Unlock()
			return
		}
		id := f.ID
		if f.Data != nil {
			id, _ = f.Data["id"].(string)
		}
		if id == "" {
			continue // connected frame
		}
		c.mu.Lock()
		c.got = append(c.got, id)
		c.offs = append(c.offs, f.Offset)
		c.mu.Unlock()
	}
}

// TestOrgIsolationRandomized publishes 10,000 random events and broadcasts
// into 4 organizations (and 1 with no clients) with real clients of every
// role; every client must receive exactly the entries it is entitled to,
// once each, in publish order, and nothing of another organization.
func TestOrgIsolationRandomized(t *testing.T) {
	const (
		orgs, clientsPerOrg, users, sessions = 4, 12, 4, 8
		entries                              = 10_000
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 42))

	// Queues sized so that this test checks routing, not speed.
	m := startManager(t, nil, Config{QueueSize: entries})
	base := sessionsServer(t, m)

	var clients []*isoClient
	for o := 0; o < orgs; o++ {
		for i := 0; i < clientsPerOrg; i++ {
			c := &isoClient{
				org:      fmt.Sprintf("org-%d", o),
				user:     fmt.Sprintf("user-%d", rng.IntN(users)),
				wholeOrg: rng.IntN(4) == 0,
				sessions: map[string]bool{},
			}
			role := "user"
			if c.wholeOrg {
				role = []string{"operator", "admin"}[rng.IntN(2)]
			}
			c.conn = dial(t, base, params("org", c.org, "user", c.user, "role", role))
			first := readFrame(t, c.conn)
			if first.str("type") != "connected" {
				t.Fatalf("first frame %v", first)
			}
			readUntilType(t, c.conn, "sessions_update")
			clientID := first.str("clientId")
			for s := 0; s < 2; s++ {
				sess := fmt.Sprintf("sess-%d", rng.IntN(sessions))
				c.sessions[sess] = true
				m.GetNotifier().SubscribeSession(clientID, sess)
			}
			clients = append(clients, c)
		}
	}
	done := make(chan struct{})
	var readers sync.WaitGroup
	for _, c := range clients {
		readers.Add(1)
		go func() { defer readers.Done(); c.read(done) }()
	}

	// Publish from several goroutines; the per-org stream order is the
	// order of offsets, which the model reconstructs afterwards.
	type published struct {
		id, org, user, session string
		broadcast              bool
		offset                 uint64
	}
	var mu sync.Mutex
	var log []published
	var wg sync.WaitGroup
	ctx := context.Background()
	const publishers = 4
	for p := 0; p < publishers; p++ {
		prng := rand.New(rand.NewPCG(seed, uint64(p)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < entries/publishers; i++ {
				e := published{
					id:        fmt.Sprintf("p%d-%d", p, i),
					org:       fmt.Sprintf("org-%d", prng.IntN(orgs+1)), // org-4 has no clients
					user:      fmt.Sprintf("user-%d", prng.IntN(users)),
					session:   fmt.Sprintf("sess-%d", prng.IntN(sessions)),
					broadcast: prng.IntN(10) == 0,
				}
				var err error
				var pos = struct{ Offset uint64 }{}
				if e.broadcast {
					p, perr := m.GetNotifier().BroadcastToOrg(ctx, e.org, []byte(fmt.Sprintf(`{"type":"announcement","id":%q}`, e.id)))
					pos.Offset, err = p.Offset, perr
				} else {
					p, perr := m.GetNotifier().Publish(ctx, e.org, SessionEvent{
						Type: EventSessionStateChange, SessionID: e.session, UserID: e.user,
						Data: map[string]any{"id": e.id},
					})
					pos.Offset, err = p.Offset, perr
				}
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				e.offset = pos.Offset
				mu.Lock()
				log = append(log, e)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	// Order the log by (org, offset): that is publish order per org.
	byOrg := map[string][]published{}
	for _, e := range log {
		byOrg[e.org] = append(byOrg[e.org], e)
	}
	for org, es := range byOrg {
		ordered := make([]published, len(es))
		for _, e := range es {
			ordered[e.offset-1] = e // offsets are 1..n without gaps
		}
		byOrg[org] = ordered
	}

	for _, c := range clients {
		var want []string
		for _, e := range byOrg[c.org] {
			if c.entitled(e.org, e.user, e.session, e.broadcast) {
				want = append(want, e.id)
			}
		}
		testkit.Eventually(t, 2*time.Minute, "deliveries", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.err != nil {
				t.Fatalf("client %s/%s stopped after %d of %d entries: %v", c.org, c.user, len(c.got), len(want), c.err)
			}
			return len(c.got) >= len(want)
		})
		// A fence per org proves nothing more is in flight.
		if _, err := m.GetNotifier().BroadcastToOrg(ctx, c.org, []byte(`{"type":"fence","id":"fence-`+c.org+`"}`)); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 10*time.Second, "fence", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, id := range c.got {
				if id == "fence-"+c.org {
					return true
				}
			}
			return false
		})
		c.mu.Lock()
		got := c.got[:0:0]
		var prev uint64
		for i, id := range c.got {
			if c.offs[i] <= prev {
				t.Errorf("client of %s: offset %d after %d", c.org, c.offs[i], prev)
			}
			prev = c.offs[i]
			if len(id) < 6 || id[:6] != "fence-" {
				got = append(got, id)
			}
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			t.Fatalf("client of %s: %v", c.org, err)
		}
		if len(got) != len(want) {
			t.Fatalf("client %s/%s wholeOrg=%v got %d entries, want %d", c.org, c.user, c.wholeOrg, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("client %s/%s: entry %d is %s, want %s", c.org, c.user, i, got[i], want[i])
			}
		}
	}
	close(done)
	for _, c := range clients {
		_ = c.conn.Close()
	}
	readers.Wait()
}
