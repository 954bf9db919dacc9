package websocket

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

func TestHubAccessorsAndOrgScopedBroadcast(t *testing.T) {
	h := NewHubWithConfig(Config{DefaultOrg: "legacy-org"})
	go h.Run()
	defer h.Stop()
	base := hubServer(t, h)

	a1 := dial(t, base, params("org", "org-a", "id", "a1", "ns", "ns-a", "user", "u1"))
	// Registration happens after the handshake: wait, so a1 is the org's first client.
	testkit.Eventually(t, 5*time.Second, "a1 registered", func() bool { return h.ClientCount() == 1 })
	a2 := dial(t, base, params("org", "org-a", "id", "a2", "ns", "ns-a2", "user", "u2"))
	b1 := dial(t, base, params("org", "org-b", "id", "b1", "ns", "ns-b", "user", "u1"))
	legacy := dial(t, base, params("id", "old"))
	testkit.Eventually(t, 5*time.Second, "4 clients", func() bool { return h.ClientCount() == 4 })

	orgs := h.GetUniqueOrgs()
	slices.Sort(orgs)
	if want := []string{"legacy-org", "org-a", "org-b"}; !slices.Equal(orgs, want) {
		t.Fatalf("GetUniqueOrgs = %v, want %v", orgs, want)
	}
	if got := h.GetK8sNamespaceForOrg("org-a"); got != "ns-a" {
		t.Fatalf("namespace of org-a = %q, want the first client's ns-a", got)
	}
	var ids []string
	for _, c := range h.GetClientsByOrg("org-a") {
		ids = append(ids, c.ID())
		if c.OrgID() != "org-a" {
			t.Fatalf("client %s of org %s listed under org-a", c.ID(), c.OrgID())
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"a1", "a2"}) {
		t.Fatalf("GetClientsByOrg(org-a) = %v", ids)
	}
	if h.GetClientsByOrg("nobody") != nil || h.GetK8sNamespaceForOrg("nobody") != "" {
		t.Fatal("unknown org should have no clients and no namespace")
	}

	h.BroadcastToOrg("org-b", []byte(`{"type":"only-b"}`))
	h.BroadcastToOrg("org-a", []byte(`{"type":"only-a"}`))
	h.Broadcast([]byte(`{"type":"everyone"}`))
	for _, c := range []*websocket.Conn{a1, a2} {
		if got := readFrame(t, c).str("type"); got != "only-a" {
			t.Fatalf("org-a client got %q first", got)
		}
		if got := readFrame(t, c).str("type"); got != "everyone" {
			t.Fatalf("org-a client got %q second", got)
		}
	}
	if got := readFrame(t, b1).str("type"); got != "only-b" {
		t.Fatalf("org-b client got %q", got)
	}
	// The deprecated entry point lands in the default org only.
	if got := readFrame(t, legacy).str("type"); got != "everyone" {
		t.Fatalf("legacy client got %q, want only the cross-org broadcast", got)
	}
}

func TestServeClientWithOrgRefusesEmptyOrg(t *testing.T) {
	h := NewHub()
	defer h.Stop()
	conn := dial(t, hubServer(t, h), params("org", "", "id", "x"))
	if code, _ := expectClose(t, conn, 5*time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	if h.ClientCount() != 0 {
		t.Fatal("client without org was registered")
	}
}

// TestTwoThousandClients connects 2,000 real clients, delivers one
// broadcast to each, disconnects them and checks every goroutine ended.
func TestTwoThousandClients(t *testing.T) {
	const n = 2000
	m := startManager(t, nil, Config{})
	base := sessionsServer(t, m)
	baseline := runtime.NumGoroutine()

	conns := dialMany(t, websocket.DefaultDialer, base, n, func(i int) url.Values {
		return params("org", fmt.Sprintf("org-%d", i%5), "user", fmt.Sprintf("u%d", i))
	}, nil)
	testkit.Eventually(t, 30*time.Second, "all clients registered", func() bool { return m.Hub().ClientCount() == n })
	// On Linux one poller reads them all; elsewhere each has a reader. Writers exist only
	// while a client has a backlog (none here).
	want := 1.0
	if runtime.GOOS == "linux" {
		want = 0
	}
	if per := float64(runtime.NumGoroutine()-baseline) / n; per > want+0.01 {
		t.Fatalf("%.3f goroutines per connection, want %v", per, want)
	}

	for org := 0; org < 5; org++ {
		if _, err := m.GetNotifier().BroadcastToOrg(context.Background(), fmt.Sprintf("org-%d", org), []byte(`{"type":"hello"}`)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := readUntilTypeErr(c, "hello"); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
			_ = c.Close()
		}()
	}
	wg.Wait()
	testkit.Eventually(t, 30*time.Second, "all clients unregistered", func() bool { return m.Hub().ClientCount() == 0 })
	testkit.GoroutinesBackTo(t, 30*time.Second, baseline)
}

func readUntilTypeErr(c *websocket.Conn, typ string) error {
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			return err
		}
		if strings.Contains(string(data), `"type":"`+typ+`"`) {
			return nil
		}
	}
}

// TestSlowClientIsClosedAndNobodyWaits: one client stops reading; the
// publisher never blocks, every other client gets every message, and the
// slow one is closed with 4001.
func TestSlowClientIsClosedAndNobodyWaits(t *testing.T) {
	// A write wait longer than the test: on a loaded machine the slow client may stay silent
	// past the default 10 s, and the server would then drop it as dead (1006) before it could
	// be told 4001. A publisher blocked behind the slow client would wait that long, so the
	// publisher's deadline below (generous: under -race on a loaded machine 400 broadcasts of
	// 64 KiB take tens of seconds of CPU) still tells a block from slowness.
	m := startManager(t, nil, Config{QueueSize: 16, WriteWait: 5 * time.Minute})
	base := sessionsServer(t, m)
	slow := dial(t, base, params("org", "o", "user", "slow"))
	fast := make([]*websocket.Conn, 3)
	for i := range fast {
		fast[i] = dial(t, base, params("org", "o", "user", fmt.Sprintf("fast%d", i)))
	}
	testkit.Eventually(t, 5*time.Second, "4 clients", func() bool { return m.Hub().ClientCount() == 4 })

	// Readers for the fast clients.
	const total = 400
	big := strings.Repeat("x", 64<<10) // fills the slow client's socket buffers quickly
	var wg sync.WaitGroup
	counts := make([]int, len(fast))
	for i, c := range fast {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
			for counts[i] < total {
				_, data, err := c.ReadMessage()
				if err != nil {
					t.Errorf("fast client %d: %v after %d", i, err, counts[i])
					return
				}
				if strings.Contains(string(data), `"type":"bulk"`) {
					counts[i]++
				}
			}
		}()
	}

	published := make(chan error, 1)
	go func() {
		for i := 0; i < total; i++ {
			msg := fmt.Sprintf(`{"type":"bulk","n":%d,"pad":%q}`, i, big)
			if _, err := m.GetNotifier().BroadcastToOrg(context.Background(), "o", []byte(msg)); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	select {
	case err := <-published:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("publisher blocked behind a client that stopped reading")
	}
	wg.Wait()
	for i, n := range counts {
		if n != total {
			t.Fatalf("fast client %d got %d of %d", i, n, total)
		}
	}
	code, reason := expectClose(t, slow, 20*time.Second)
	if code != CloseSlowConsumer || reason == "" {
		t.Fatalf("slow client closed with %d %q, want 4001 with a reason", code, reason)
	}
}

func TestShutdownDrainsQueueThenCloses1001(t *testing.T) {
	m := newManager(nil, nil, Config{})
	m.Start()
	base := sessionsServer(t, m)
	conn := dial(t, base, params("org", "o", "user", "u"))
	readUntilType(t, conn, "sessions_update")
	for i := 0; i < 5; i++ {
		if _, err := m.GetNotifier().BroadcastToOrg(context.Background(), "o", []byte(fmt.Sprintf(`{"type":"n","i":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for i := 0; i < 5; i++ {
		if f := readFrame(t, conn); f["i"] != float64(i) {
			t.Fatalf("frame %d = %v", i, f)
		}
	}
	if code, _ := expectClose(t, conn, 5*time.Second); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	// After shutdown: new clients are refused with 1001, and publishing or
	// broadcasting returns at once.
	late := dial(t, base, params("org", "o", "user", "u"))
	if code, _ := expectClose(t, late, 5*time.Second); code != websocket.CloseGoingAway && code != websocket.CloseTryAgainLater {
		t.Fatalf("late client closed with %d", code)
	}
	m.Hub().Broadcast([]byte(`{}`))
	m.Hub().BroadcastToOrg("o", []byte(`{}`))
	m.GetNotifier().NotifySessionActive("s", "u")
	m.CloseAll() // idempotent
}

func TestHubRunReturnsAfterStop(t *testing.T) {
	h := NewHubWithConfig(Config{DrainTimeout: time.Second})
	done := make(chan struct{})
	go func() { h.Run(); close(done) }()
	h.Stop()
	h.Stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Stop")
	}
}

func TestTokenExpiryCloses4003(t *testing.T) {
	m := startManager(t, nil, Config{})
	conn := dial(t, sessionsServer(t, m), params("org", "o", "user", "u", "ttl", "300ms"))
	if code, reason := expectClose(t, conn, 5*time.Second); code != CloseTokenExpired || reason != "token expired" {
		t.Fatalf("closed with %d %q, want 4003 token expired", code, reason)
	}
}

// One timer serves every client's expiry: each is closed at its own deadline, in order, and a
// client that leaves first is forgotten.
func TestTokenExpiriesShareOneQueue(t *testing.T) {
	m := startManager(t, nil, Config{})
	base := sessionsServer(t, m)
	late := dial(t, base, params("org", "o", "user", "late", "ttl", "900ms"))
	early := dial(t, base, params("org", "o", "user", "early", "ttl", "300ms"))
	leaver := dial(t, base, params("org", "o", "user", "leaver", "ttl", "1h"))
	for _, c := range []*websocket.Conn{late, early, leaver} {
		readUntilType(t, c, "sessions_update")
	}
	queued := func() int {
		m.Hub().expiries.mu.Lock()
		defer m.Hub().expiries.mu.Unlock()
		return len(m.Hub().expiries.due)
	}
	if n := queued(); n != 3 {
		t.Fatalf("%d clients queued for expiry, want 3", n)
	}
	start := time.Now()
	if code, _ := expectClose(t, early, 5*time.Second); code != CloseTokenExpired {
		t.Fatalf("early: %d, want 4003", code)
	}
	if code, _ := expectClose(t, late, 5*time.Second); code != CloseTokenExpired {
		t.Fatalf("late: %d, want 4003", code)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Fatalf("the later deadline came after %v: it was not kept", took)
	}
	_ = leaver.Close()
	testkit.Eventually(t, 5*time.Second, "the leaver forgotten", func() bool { return queued() == 0 && m.Hub().ClientCount() == 0 })
}

func TestOversizedMessageCloses1009(t *testing.T) {
	m := startManager(t, nil, Config{MaxMessageSize: 1024})
	conn := dial(t, sessionsServer(t, m), params("org", "o", "user", "u"))
	readUntilType(t, conn, "sessions_update")
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"small":true}`)); err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, make([]byte, 2048)); err != nil {
		t.Fatal(err)
	}
	if code, reason := expectClose(t, conn, 5*time.Second); code != websocket.CloseMessageTooBig || reason == "" {
		t.Fatalf("closed with %d %q, want 1009 with a reason", code, reason)
	}
	testkit.Eventually(t, 5*time.Second, "client unregistered", func() bool { return m.Hub().ClientCount() == 0 })
}

// TestKeepalive: a client that answers pings stays; one that never reads
// (and so never answers) is dropped after the pong wait.
func TestKeepalive(t *testing.T) {
	m := startManager(t, nil, Config{PingInterval: 40 * time.Millisecond, PongWait: 150 * time.Millisecond})
	base := sessionsServer(t, m)
	alive := dial(t, base, params("org", "o", "user", "alive"))
	pings := make(chan struct{}, 100)
	alive.SetPingHandler(func(data string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		return alive.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go func() {
		for {
			if _, _, err := alive.ReadMessage(); err != nil {
				return
			}
		}
	}()
	_ = dial(t, base, params("org", "o", "user", "dead"))
	testkit.Eventually(t, 5*time.Second, "2 clients", func() bool { return m.Hub().ClientCount() == 2 })
	testkit.Eventually(t, 5*time.Second, "the silent client dropped", func() bool { return m.Hub().ClientCount() == 1 })
	for i := 0; i < 5; i++ {
		select {
		case <-pings:
		case <-time.After(5 * time.Second):
			t.Fatal("no ping received")
		}
	}
	if m.Hub().ClientCount() != 1 {
		t.Fatal("client answering pings was dropped")
	}
}

// A large delivery is split over the cores, and still reaches each client exactly once.
func TestHandOutReachesEachOnce(t *testing.T) {
	for _, n := range []int{0, 1, parallelFanOut - 1, parallelFanOut, 5000} {
		targets := make([]*Client, n)
		for i := range targets {
			targets[i] = &Client{id: fmt.Sprint(i)}
		}
		var mu sync.Mutex
		seen := make(map[*Client]int, n)
		var flushers sync.WaitGroup
		handOut(&flushers, targets, func(c *Client) bool {
			mu.Lock()
			seen[c]++
			mu.Unlock()
			return false
		})
		if len(seen) != n {
			t.Fatalf("n=%d: %d clients reached", n, len(seen))
		}
		for c, k := range seen {
			if k != 1 {
				t.Fatalf("n=%d: client %s reached %d times", n, c.id, k)
			}
		}
	}
}
