package redistest

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// plainClient opens a client of the shared server that deletes nothing.
func plainClient(t *testing.T) *redis.Client {
	t.Helper()
	url := os.Getenv(EnvRedisURL)
	if url == "" {
		url = DefaultRedisURL
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvRedisURL, err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func scanAll(ctx context.Context, t *testing.T, c redis.UniversalClient, match string) []string {
	t.Helper()
	var keys []string
	it := c.Scan(ctx, 0, match, 1000).Iterator()
	for it.Next(ctx) {
		keys = append(keys, it.Val())
	}
	if err := it.Err(); err != nil {
		t.Fatalf("scan %q: %v", match, err)
	}
	return keys
}

func TestClientPrefixesAndCleanup(t *testing.T) {
	ctx := ctxT(t)
	check := plainClient(t)

	// A bystander's key, outside the subtest's prefixes, must survive it.
	other, otherPrefix := Client(t)
	if err := other.Set(ctx, otherPrefix+":keep", "1", 0).Err(); err != nil {
		t.Fatalf("set bystander key: %v", err)
	}

	const many = 1234 // more than one SCAN batch and one UNLINK batch
	var prefixes []string
	t.Run("use", func(t *testing.T) {
		ctx := ctxT(t)
		c1, p1 := Client(t)
		c2, p2 := Client(t)
		for _, p := range []string{p1, p2} {
			if !strings.HasPrefix(p, "sstest:") || len(p) <= len("sstest:") {
				t.Fatalf("prefix %q, want sstest:<hex>", p)
			}
			if p == otherPrefix {
				t.Fatalf("prefix %q handed out twice", p)
			}
		}
		if p1 == p2 {
			t.Fatalf("two clients got the same prefix %q", p1)
		}
		prefixes = []string{p1, p2}

		pipe := c1.Pipeline()
		for i := range many {
			pipe.Set(ctx, p1+":k"+strconv.Itoa(i), i, 0)
		}
		pipe.HSet(ctx, p1+":hash", "f", "v")
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("fill %s: %v", p1, err)
		}
		if err := c2.RPush(ctx, p2+":list", "a", "b").Err(); err != nil {
			t.Fatalf("rpush: %v", err)
		}
		if got := len(scanAll(ctx, t, check, p1+"*")); got != many+1 {
			t.Fatalf("%d keys under %s, want %d", got, p1, many+1)
		}
	})
	if len(prefixes) != 2 {
		t.Fatal("subtest did not record its prefixes")
	}
	for _, p := range prefixes {
		if keys := scanAll(ctx, t, check, p+"*"); len(keys) != 0 {
			t.Errorf("%d keys left under %s after cleanup, e.g. %q", len(keys), p, keys[0])
		}
	}
	if n, err := check.Exists(ctx, otherPrefix+":keep").Result(); err != nil || n != 1 {
		t.Errorf("bystander key: exists=%d err=%v, want 1 <nil>", n, err)
	}
}

func TestServerStopRestart(t *testing.T) {
	ctx := ctxT(t)
	s := Start(t)
	if !s.Running() {
		t.Fatal("Running() = false after Start")
	}
	if want := "redis://" + s.Addr() + "/0"; s.URL() != want {
		t.Fatalf("URL() = %q, want %q", s.URL(), want)
	}
	opts, err := redis.ParseURL(s.URL())
	if err != nil {
		t.Fatalf("parse URL(): %v", err)
	}
	c := redis.NewClient(opts) // default options: it must reconnect by itself
	defer func() { _ = c.Close() }()

	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	addr := s.Addr()
	s.Stop(t)
	s.Stop(t) // a no-op when stopped
	if s.Running() {
		t.Fatal("Running() = true after Stop")
	}
	if s.Addr() != addr {
		t.Fatalf("Addr() changed across Stop: %s, then %s", addr, s.Addr())
	}

	s.Restart(t)
	if !s.Running() {
		t.Fatal("Running() = false after Restart")
	}
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("get after restart: err=%v, want redis.Nil (nothing kept on disk)", err)
	}

	// Restart while running stops first; data goes with the old process.
	if err := c.Set(ctx, "k2", "v", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	s.Restart(t)
	if err := c.Get(ctx, "k2").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("get after second restart: err=%v, want redis.Nil", err)
	}
}

func TestServerStopRefusesPing(t *testing.T) {
	s := Start(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer func() { _ = c.Close() }()
	if err := c.Ping(ctxT(t)).Err(); err != nil {
		t.Fatalf("ping before stop: %v", err)
	}

	s.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping after Stop succeeded")
	}
	fresh := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer func() { _ = fresh.Close() }()
	if err := fresh.Ping(ctx).Err(); err == nil {
		t.Fatal("ping from a new client after Stop succeeded")
	}
}

func TestServerCleanupStopsProcess(t *testing.T) {
	var addr string
	t.Run("start", func(t *testing.T) {
		addr = Start(t).Addr()
	})
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = conn.Close()
		t.Fatalf("%s still accepts connections after the test's cleanup", addr)
	}
}

func TestServerRestartWaitsForPort(t *testing.T) {
	s := Start(t)
	s.Stop(t)
	// Hold the port for a while, as a lingering socket might.
	l, err := net.Listen("tcp", s.Addr())
	if err != nil {
		t.Fatalf("listen on the stopped server's port: %v", err)
	}
	released := make(chan error, 1)
	go func() {
		time.Sleep(700 * time.Millisecond) // kept: the busy port is the test; Restart must wait it out
		released <- l.Close()
	}()
	s.Restart(t)
	if err := <-released; err != nil {
		t.Fatalf("release port: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer func() { _ = c.Close() }()
	if err := c.Ping(ctxT(t)).Err(); err != nil {
		t.Fatalf("ping after Restart on a briefly busy port: %v", err)
	}
}
