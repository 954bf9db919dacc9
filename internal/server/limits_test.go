package server

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// Upgrades from one address beyond the rate are answered 429 with Retry-After, browsers and
// agents alike, counted and logged once each; other endpoints are not limited.
func TestUpgradeRatePerAddress(t *testing.T) {
	ts := startServer(t, "sqlite", func(c *Config) { c.UpgradeRate, c.UpgradeBurst = 0.5, 2 })
	tok := mint(t, "u1", "o1", auth.RoleUser, time.Hour)
	for i := range 2 {
		if _, status, code := ts.dialWS(t, "/api/v1/ws/sessions?token="+tok, nil); status != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade %d: %d %s", i, status, code)
		}
	}
	resp, err := http.Get(ts.base + "/api/v1/ws/sessions?token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || wait < 1 || wait > 2 {
		t.Fatalf("third upgrade: %d Retry-After %q, want 429 within 2 s", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Agents share the address's bucket, and are refused before their key is even read.
	if _, status, code := ts.dialWS(t, "/api/v1/agents/connect?agent_id=a1", http.Header{"X-Agent-API-Key": {"k"}}); status != http.StatusTooManyRequests || code != "too_many_upgrades" {
		t.Fatalf("agent upgrade: %d %s, want 429 too_many_upgrades", status, code)
	}
	if status, _ := ts.post(t, "/api/v1/events", testService, `{"orgId":"o1","type":"session.created","sessionId":"s1"}`); status != http.StatusAccepted {
		t.Fatalf("publish while upgrades are limited: %d", status)
	}
	if n := strings.Count(ts.logs.String(), "error=too_many_upgrades"); n != 2 {
		t.Fatalf("%d refusals logged, want 2:\n%s", n, ts.logs.String())
	}
}

// A user, then an organization, at its limit of browser connections is answered 429 before
// the upgrade; a connection that closes gives its place back, whatever socket it was.
func TestConnectionLimitsPerUserAndOrg(t *testing.T) {
	ts := startServer(t, "sqlite", func(c *Config) { c.MaxConnectionsPerUser, c.MaxConnectionsPerOrg = 2, 3 })
	alice := mint(t, "alice", "o1", auth.RoleOperator, time.Hour)
	bob := mint(t, "bob", "o1", auth.RoleUser, time.Hour)
	other := mint(t, "carol", "o2", auth.RoleUser, time.Hour)
	open := func(path string, want int, wantCode string) *gorilla.Conn {
		t.Helper()
		conn, status, code := ts.dialWS(t, path, nil)
		if status != want || code != wantCode {
			t.Fatalf("%s: %d %s, want %d %s", path[:strings.IndexByte(path, '?')], status, code, want, wantCode)
		}
		return conn
	}
	a1 := open("/api/v1/ws/sessions?token="+alice, http.StatusSwitchingProtocols, "")
	open("/api/v1/ws/cluster?token="+alice, http.StatusSwitchingProtocols, "") // metrics count too
	open("/api/v1/ws/sessions?token="+alice, http.StatusTooManyRequests, "too_many_connections")
	open("/api/v1/ws/sessions?token="+bob, http.StatusSwitchingProtocols, "")
	open("/api/v1/ws/sessions?token="+bob, http.StatusTooManyRequests, "too_many_connections") // the org's third is taken
	open("/api/v1/ws/sessions?token="+other, http.StatusSwitchingProtocols, "")                // another org is apart

	// Alice closes one: its place comes back once the server has seen it go.
	closeAndReopen(t, a1, ts, alice)
	// A failed upgrade holds nothing: carol's plain GETs (400) leave her second place free.
	for range 3 {
		resp, err := http.Get(ts.base + "/api/v1/ws/sessions?token=" + other)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain GET: %d, want 400", resp.StatusCode)
		}
	}
	open("/api/v1/ws/sessions?token="+other, http.StatusSwitchingProtocols, "")
	open("/api/v1/ws/sessions?token="+other, http.StatusTooManyRequests, "too_many_connections")
}

// With several replicas the limits hold across them: alice at her limit on r1 is refused on
// r2, and the place she gives back on r1 is hers again on r2.
func TestConnectionLimitsAcrossReplicas(t *testing.T) {
	url := dbtest.URL(t, "postgres")
	_, prefix := redistest.Client(t)
	var replicas []*testServer
	for _, name := range []string{"r1", "r2"} {
		replicas = append(replicas, startServer(t, "postgres", func(c *Config) {
			c.DatabaseURL, c.Replica, c.RedisURL, c.RedisPrefix = url, name, testRedisURL(), prefix
			c.MaxConnectionsPerUser, c.MaxConnectionsPerOrg = 2, 3
		}))
	}
	r1, r2 := replicas[0], replicas[1]
	alice := mint(t, "alice", "o1", auth.RoleOperator, time.Hour)
	bob := mint(t, "bob", "o1", auth.RoleUser, time.Hour)
	open := func(ts *testServer, token string, want int, wantCode string) *gorilla.Conn {
		t.Helper()
		conn, status, code := ts.dialWS(t, "/api/v1/ws/sessions?token="+token, nil)
		if status != want || code != wantCode {
			t.Fatalf("%s: %d %s, want %d %s", ts.base, status, code, want, wantCode)
		}
		return conn
	}
	a1 := open(r1, alice, http.StatusSwitchingProtocols, "")
	open(r2, alice, http.StatusSwitchingProtocols, "")
	open(r2, alice, http.StatusTooManyRequests, "too_many_connections")
	open(r1, alice, http.StatusTooManyRequests, "too_many_connections")
	open(r1, bob, http.StatusSwitchingProtocols, "")
	open(r2, bob, http.StatusTooManyRequests, "too_many_connections") // o1's fourth

	closeAndReopen(t, a1, r2, alice) // closed on r1, its place taken on r2
	open(r1, alice, http.StatusTooManyRequests, "too_many_connections")
}

// closeAndReopen closes conn and waits until the holder of token may open a sessions socket
// on ts again: the place comes back once the server has seen the connection go.
func closeAndReopen(t *testing.T, conn *gorilla.Conn, ts *testServer, token string) {
	t.Helper()
	_ = conn.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = conn.Close()
	var status int
	reopened := func() bool {
		again, code, _ := ts.dialWS(t, "/api/v1/ws/sessions?token="+token, nil)
		status = code
		return again != nil
	}
	if err := testkit.WaitFor(5*time.Second, reopened); err != nil {
		t.Fatalf("a closed connection never gave its place back: %d", status)
	}
}

// A scan of many addresses costs memory only while their buckets are not full again: the map
// of buckets stays bounded.
func TestUpgradeRateBucketsStayBounded(t *testing.T) {
	l := newIPRates(10, 10) // a bucket is full again after 1 s
	now := time.Unix(1_000_000, 0)
	for i := range 100_000 {
		now = now.Add(time.Millisecond)
		if ok, _ := l.allow("10.0."+strconv.Itoa(i/256%256)+"."+strconv.Itoa(i%256)+"-"+strconv.Itoa(i), now); !ok {
			t.Fatalf("a new address was refused")
		}
	}
	if n := len(l.buckets); n > 2*ipBucketsFloor+1000 {
		t.Fatalf("%d buckets kept for addresses seen once, long ago", n)
	}
	// One address, at once, beyond its burst.
	for i := range 10 {
		if ok, _ := l.allow("192.0.2.1", now); !ok {
			t.Fatalf("upgrade %d within the burst refused", i)
		}
	}
	if ok, wait := l.allow("192.0.2.1", now); ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("beyond the burst: %v, wait %v", ok, wait)
	}
}
