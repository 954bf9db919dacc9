package websocket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
)

// recoveryHistory retains the whole run, so every resume must be recovered: its bytes too (the
// slow-consumer burst is 300 entries of 64 KiB).
var recoveryHistory = cluster.History{Size: 20000, Max: 20000, OrgBytes: 64 << 20, TotalBytes: 64 << 20}

// published is one stream entry as the publisher made it.
type published struct {
	offset    uint64
	user      string // "" for a broadcast
	broadcast bool
}

// recoveryClient is one browser that drops its connection at random moments and resumes
// from the last position it received.
type recoveryClient struct {
	user     string
	operator bool
	// got lists the offsets received, in order; start is the offset the first connection
	// started after.
	got   []uint64
	start uint64
}

func (c *recoveryClient) entitled(p published) bool {
	return p.broadcast || c.operator || p.user == c.user
}

// run connects to random replicas until it has received the final broadcast, reading a
// random number of frames per connection; it returns the number of resumes.
func (c *recoveryClient) run(ctx context.Context, rng *rand.Rand, urls []string) (int, error) {
	var (
		since     string
		epoch     string
		last      uint64
		resumes   int
		connected bool
	)
	for {
		q := url.Values{"org": {"o"}, "user": {c.user}, "role": {"user"}}
		if c.operator {
			q.Set("role", "operator")
		}
		if since != "" {
			q.Set("since", since)
			resumes++
		}
		conn, _, err := websocket.DefaultDialer.DialContext(ctx, urls[rng.IntN(len(urls))]+"?"+q.Encode(), nil)
		if err != nil {
			return resumes, fmt.Errorf("dial: %w", err)
		}
		budget := 1 + rng.IntN(150) // frames to read before dropping the connection
		if c.operator {
			budget *= 10 // operators get every event: they drop about as often as users
		}
		var start uint64
		for {
			_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, data, err := conn.ReadMessage()
			if err != nil {
				_ = conn.Close()
				if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) && ce.Code == CloseSlowConsumer {
					break // fell behind: resume like any other drop
				}
				return resumes, fmt.Errorf("read after offset %d (connection started at %d, resumed from %q, %d received): %w", last, start, since, len(c.got), err)
			}
			var f struct {
				Type      string `json:"type"`
				Epoch     string `json:"epoch"`
				Offset    uint64 `json:"offset"`
				Recovered bool   `json:"recovered"`
			}
			if err := json.Unmarshal(data, &f); err != nil {
				return resumes, err
			}
			switch f.Type {
			case "connected":
				if since != "" && (!f.Recovered || f.Epoch != epoch) {
					return resumes, fmt.Errorf("resume from %s: %s, want recovered in the same epoch", since, data)
				}
				if !connected {
					epoch, last, c.start, connected = f.Epoch, f.Offset, f.Offset, true
				}
				start = f.Offset
				continue
			case "sessions_update":
				// Everything up to the start of this connection has been received.
				last = max(last, start)
				continue
			}
			if f.Offset <= last {
				return resumes, fmt.Errorf("offset %d after %d: duplicate or out of order", f.Offset, last)
			}
			c.got = append(c.got, f.Offset)
			last = f.Offset
			if f.Type == "end" {
				_ = conn.Close()
				return resumes, nil
			}
			if budget--; budget == 0 {
				break
			}
		}
		_ = conn.Close()
		since = fmt.Sprintf("%s:%d", epoch, last)
	}
}

// testRecovery runs 100 browsers against the replicas while 10,000 events and broadcasts are
// published: every browser drops and resumes at random (500 resumes at least, some of them
// after a slow-consumer close) and ends with every entry it is entitled to, once, in order.
func testRecovery(t *testing.T, managers []*Manager) {
	urls := make([]string, len(managers))
	for i, m := range managers {
		urls[i] = sessionsServer(t, m)
	}
	const events, clients = 10000, 100
	var (
		mu      sync.Mutex
		entries []published
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := make([]*recoveryClient, clients)
	for i := range cs {
		cs[i] = &recoveryClient{user: fmt.Sprintf("u%d", i%10), operator: i%10 == 0}
	}
	var wg sync.WaitGroup
	var resumes atomic.Int64
	errs := make(chan error, clients+1)
	started := make(chan struct{}, clients)
	for i, c := range cs {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			started <- struct{}{}
			n, err := c.run(ctx, rng, urls)
			resumes.Add(int64(n))
			if err != nil {
				errs <- fmt.Errorf("client %d (%s): %w", i, c.user, err)
			}
		})
	}
	for range clients {
		<-started
	}
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(7, 7))
		publish := func(p published, body func(n *Notifier) (cluster.Position, error)) bool {
			pos, err := body(managers[rng.IntN(len(managers))].GetNotifier())
			if err != nil {
				errs <- err
				return false
			}
			p.offset = pos.Offset
			mu.Lock()
			entries = append(entries, p)
			mu.Unlock()
			return true
		}
		for i := range events {
			user := fmt.Sprintf("u%d", rng.IntN(10))
			ok := publish(published{user: user}, func(n *Notifier) (cluster.Position, error) {
				return n.Publish(ctx, "o", SessionEvent{Type: EventSessionUpdated, SessionID: fmt.Sprintf("s%d", i), UserID: user})
			})
			if i%100 == 99 && ok {
				ok = publish(published{broadcast: true}, func(n *Notifier) (cluster.Position, error) {
					return n.BroadcastToOrg(ctx, "o", []byte(`{"type":"notice"}`))
				})
			}
			if !ok {
				return
			}
			if i%10 == 0 {
				time.Sleep(time.Millisecond) // a steady flow that resumes interleave with
			}
		}
		// The last entry, for everyone: clients stop once they have it.
		publish(published{broadcast: true}, func(n *Notifier) (cluster.Position, error) {
			return n.BroadcastToOrg(ctx, "o", []byte(`{"type":"end"}`))
		})
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if n := resumes.Load(); n < 500 {
		t.Fatalf("%d resumes, want at least 500", n)
	}
	for i, c := range cs {
		var want []uint64
		for _, p := range entries {
			if p.offset > c.start && c.entitled(p) {
				want = append(want, p.offset)
			}
		}
		if len(c.got) != len(want) {
			t.Fatalf("client %d received %d entries, want %d", i, len(c.got), len(want))
		}
		for j := range want {
			if c.got[j] != want[j] {
				t.Fatalf("client %d: entry %d is offset %d, want %d", i, j, c.got[j], want[j])
			}
		}
	}
	t.Logf("%d entries, %d clients, %d resumes", len(entries), clients, resumes.Load())
}

func TestRecoveryRandomized(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		m := startManager(t, nil, Config{Bus: newOwnedMemoryBus(t)})
		testRecovery(t, []*Manager{m})
	})
	t.Run("redis", func(t *testing.T) {
		client, prefix := redistest.Client(t)
		var managers []*Manager
		for _, name := range []string{"a", "b", "c"} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := cluster.NewRedis(ctx, client, cluster.RedisOptions{Replica: name, Prefix: prefix, History: recoveryHistory})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			managers = append(managers, startManager(t, nil, Config{Bus: r.Bus()}))
		}
		testRecovery(t, managers)
	})
}

func newOwnedMemoryBus(t *testing.T) cluster.Bus {
	b := cluster.NewMemoryBusWithHistory(recoveryHistory)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// readEntries reads frames until n stream entries arrived, skipping others, and returns
// their offsets.
func readEntries(t *testing.T, conn *websocket.Conn, n int) []uint64 {
	t.Helper()
	var got []uint64
	for len(got) < n {
		f := readFrame(t, conn)
		if off, ok := f["offset"].(float64); ok && f.str("type") != "connected" {
			got = append(got, uint64(off))
		}
	}
	return got
}

// A browser closed for falling behind (4001) or by a replica shutting down (1001) resumes
// from the last entry it read, on the same or another replica, and misses nothing: the
// replayed entries come after `connected` (recovered) and before the snapshot.
func TestRecoveryAfterSlowConsumerAndShutdown(t *testing.T) {
	bus := newOwnedMemoryBus(t)
	// The close frame for the slow consumer waits in the socket until the test reads again,
	// after the whole burst: on a loaded machine that takes longer than the default write
	// wait, which would then cut the socket with no close frame (1006).
	a := startManager(t, nil, Config{Bus: bus, QueueSize: 16, WriteWait: time.Minute})
	b := startManager(t, nil, Config{Bus: bus})
	urlA, urlB := sessionsServer(t, a), sessionsServer(t, b)
	ctx := t.Context()
	publish := func(n int, data map[string]any) {
		for range n {
			if _, err := a.GetNotifier().Publish(ctx, "o", SessionEvent{Type: EventSessionUpdated, SessionID: "s", UserID: "u", Data: data}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ops := params("org", "o", "user", "ops", "role", "operator")
	conn := dialSmallBuffer(t, urlA, ops)
	hello := readUntilType(t, conn, "connected")
	readUntilType(t, conn, "sessions_update")
	epoch := hello.str("epoch")
	publish(3, nil)
	last := readEntries(t, conn, 3)[2]
	// Far more than the socket's buffers (megabytes, on loopback) and the queue hold while
	// nobody reads.
	const burst = 300
	publish(burst, map[string]any{"blob": strings.Repeat("x", 64<<10)})
	if code, _ := expectClose(t, conn, 5*time.Second); code != CloseSlowConsumer {
		t.Fatalf("close %d, want 4001", code)
	}

	resume := func(base string, since uint64, want int) (*websocket.Conn, []uint64) {
		t.Helper()
		q := params("org", "o", "user", "ops", "role", "operator", "since", fmt.Sprintf("%s:%d", epoch, since))
		conn := dial(t, base, q)
		// The greeting follows the reading of the history it replays (here megabytes), which
		// takes as long as the machine makes it.
		var f frame
		readJSON(t, conn, time.Minute, &f)
		if f.str("type") != "connected" || f["recovered"] != true || f.str("epoch") != epoch {
			t.Fatalf("resume from %d: %v", since, f)
		}
		got := make([]uint64, 0, want)
		for len(got) < want {
			f := readFrame(t, conn)
			if f.str("type") == "sessions_update" {
				t.Fatalf("snapshot after %d of %d replayed entries", len(got), want)
			}
			got = append(got, uint64(f["offset"].(float64)))
		}
		if f := readFrame(t, conn); f.str("type") != "sessions_update" {
			t.Fatalf("after the replay: %v, want the snapshot", f)
		}
		return conn, got
	}
	conn, got := resume(urlA, last, burst)
	for i, off := range got {
		if off != last+1+uint64(i) {
			t.Fatalf("replayed entry %d is offset %d, want %d", i, off, last+1+uint64(i))
		}
	}
	last = got[len(got)-1]

	done := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- a.Shutdown(sctx)
	}()
	if code, _ := expectClose(t, conn, 5*time.Second); code != websocket.CloseGoingAway {
		t.Fatalf("close %d, want 1001", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := b.GetNotifier().Publish(ctx, "o", SessionEvent{Type: EventSessionUpdated, SessionID: "s", UserID: "u"}); err != nil {
			t.Fatal(err)
		}
	}
	conn, got = resume(urlB, last, 5)
	if got[0] != last+1 || got[4] != last+5 {
		t.Fatalf("replayed on b: %v after %d", got, last)
	}
	// Live entries follow the replay without a gap.
	if _, err := b.GetNotifier().Publish(ctx, "o", SessionEvent{Type: EventSessionUpdated, SessionID: "s", UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	if live := readEntries(t, conn, 1); live[0] != last+6 {
		t.Fatalf("live entry %d, want %d", live[0], last+6)
	}

	// Too old or of another epoch: not recovered, and the snapshot follows at once.
	for _, since := range []string{"other-epoch:3", epoch + ":999999"} {
		conn := dial(t, urlB, params("org", "o", "user", "ops", "role", "operator", "since", since))
		if f := readFrame(t, conn); f["recovered"] != false {
			t.Fatalf("since %s: %v, want recovered false", since, f)
		}
		if f := readFrame(t, conn); f.str("type") != "sessions_update" {
			t.Fatalf("since %s: %v, want the snapshot", since, f)
		}
	}
}
