// Package redistest gives tests a real Redis: a key prefix of their own on
// the shared test server, or a private redis-server process they may stop and
// restart to exercise failures.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// EnvRedisURL names the variable holding the Redis server used by tests;
// DefaultRedisURL is used when it is unset, matching scripts/services.sh.
const EnvRedisURL = "STREAMSPACE_TEST_REDIS_URL"

// DefaultRedisURL is the server scripts/services.sh provides.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

const (
	// readyTimeout bounds how long a started server may take to answer PING.
	readyTimeout = 10 * time.Second
	// rebindTimeout bounds how long Restart retries a port the kernel has
	// not released yet.
	rebindTimeout = 5 * time.Second
	// termGrace is how long cleanup lets the server exit on SIGTERM.
	termGrace = 5 * time.Second
	// reapTimeout bounds the wait for a killed process to be reaped.
	reapTimeout = 10 * time.Second
	// logTailBytes is how much of the server log failure messages quote.
	logTailBytes = 2048
)

// Client returns a client of the shared test Redis and a key prefix unique
// to this test ("sstest:" followed by random hex), so that tests of many
// packages can share one server. An unreachable server fails the test rather
// than skipping it: a missing service must turn CI red. At cleanup every key
// under the prefix is deleted and the client is closed.
func Client(t testing.TB) (redis.UniversalClient, string) {
	t.Helper()
	url := os.Getenv(EnvRedisURL)
	if url == "" {
		url = DefaultRedisURL
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		// The URL is not quoted: it may hold a password.
		t.Fatalf("redistest: parse %s: %v", EnvRedisURL, err)
	}
	c := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		t.Fatalf("redistest: Redis at %s (db %d) unreachable: %v; start it with scripts/services.sh or set %s",
			opts.Addr, opts.DB, err, EnvRedisURL)
	}
	prefix := "sstest:" + randomHex(6)
	t.Cleanup(func() {
		defer func() {
			if err := c.Close(); err != nil {
				t.Errorf("redistest: close client: %v", err)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := deletePrefix(ctx, c, prefix); err != nil {
			t.Errorf("redistest: delete keys under %q: %v", prefix, err)
		}
	})
	return c, prefix
}

// deletePrefix unlinks every key starting with prefix, in batches so that a
// test leaving many keys does not build one huge command.
func deletePrefix(ctx context.Context, c redis.UniversalClient, prefix string) error {
	const batch = 500
	keys := make([]string, 0, batch)
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		if err := c.Unlink(ctx, keys...).Err(); err != nil {
			return fmt.Errorf("unlink %d keys: %w", len(keys), err)
		}
		keys = keys[:0]
		return nil
	}
	it := c.Scan(ctx, 0, prefix+"*", batch).Iterator()
	for it.Next(ctx) {
		keys = append(keys, it.Val())
		if len(keys) == batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	return flush()
}

// randomHex returns 2n hex digits: safe in a SCAN pattern, unlikely to repeat.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails since Go 1.24
	return hex.EncodeToString(b)
}

// Server is a private redis-server process a test may stop and restart: real
// Redis on its own port, so fault tests never disturb the shared server that
// other packages' tests use.
type Server struct {
	bin     string
	dir     string
	logPath string

	mu   sync.Mutex
	port int
	proc *process // nil while stopped
}

// process is one run of redis-server; done closes once it has been reaped.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's result, set before done closes
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// errExited reports a server that quit before answering PING, most often
// because its port was taken.
var errExited = errors.New("redis-server exited before answering PING")

// Start launches redis-server on a free 127.0.0.1 port, keeping nothing on
// disk, and waits until it answers PING. Cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server not found (install it with scripts/services.sh): %v", err)
	}
	dir := t.TempDir()
	s := &Server{bin: bin, dir: dir, logPath: filepath.Join(dir, "redis.log")}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() { s.shutdown(t) })

	s.mu.Lock()
	defer s.mu.Unlock()
	// Another process may grab the free port before redis-server binds it:
	// try a few ports before giving up.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.port = port
		err = s.launch(time.Now().Add(readyTimeout))
		if err == nil {
			return s
		}
		if !errors.Is(err, errExited) || attempt == 3 {
			t.Fatalf("redistest: start redis-server: %v", err)
		}
	}
}

// Addr returns the server's address, "127.0.0.1:port".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr()
}

func (s *Server) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL returns the server's address as a redis:// URL, database 0.
func (s *Server) URL() string {
	return "redis://" + s.Addr() + "/0"
}

// Running reports whether the server process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}

// Stop kills the server with SIGKILL, an abrupt loss like a crash, and
// returns once its port refuses connections. Stopping a stopped server does
// nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	err := s.kill()
	if err == nil {
		err = s.waitRefused(time.Now().Add(5 * time.Second))
	}
	if err != nil {
		t.Fatalf("redistest: stop redis-server on %s: %v", s.addr(), err)
	}
}

// Restart starts the server again on the same port, stopping it first if it
// is running, and waits until it answers PING. Data does not survive.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.kill(); err != nil {
		t.Fatalf("redistest: restart redis-server on %s: %v", s.addr(), err)
	}
	// The port may stay briefly unavailable after the kill: retry binding
	// it until rebindTimeout.
	rebind := time.Now().Add(rebindTimeout)
	for {
		err := s.launch(time.Now().Add(readyTimeout))
		if err == nil {
			return
		}
		if !errors.Is(err, errExited) || time.Now().After(rebind) {
			t.Fatalf("redistest: restart redis-server on %s: %v", s.addr(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// launch starts a process on s.port and waits until deadline for it to
// answer PING. s.mu must be held.
func (s *Server) launch(deadline time.Time) error {
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", s.dir,
		"--logfile", "",
	)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	err = cmd.Start()
	// The child holds its own descriptor for the log.
	if cerr := logf.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close log: %w", cerr)
	}
	if err != nil {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		return fmt.Errorf("exec %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p

	if err := s.waitReady(p, deadline); err != nil {
		if kerr := s.kill(); kerr != nil {
			err = fmt.Errorf("%w (and %w)", err, kerr)
		}
		return fmt.Errorf("%w\n%s", err, s.logTail())
	}
	return nil
}

// waitReady polls PING until the server answers, exits or deadline passes.
func (s *Server) waitReady(p *process, deadline time.Time) error {
	c := redis.NewClient(&redis.Options{
		Addr:            s.addr(),
		DialTimeout:     250 * time.Millisecond,
		ReadTimeout:     250 * time.Millisecond,
		WriteTimeout:    250 * time.Millisecond,
		MaxRetries:      -1,
		PoolSize:        1,
		DisableIdentity: true,
	})
	defer func() { _ = c.Close() }()
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		last = c.Ping(ctx).Err()
		cancel()
		if last == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%w on %s: %v", errExited, s.addr(), p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer PING: %w", s.addr(), last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and reaps the process. s.mu must be held.
func (s *Server) kill() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	if !p.exited() {
		// An error here means the process is already gone; done says so.
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	select {
	case <-p.done:
	case <-time.After(reapTimeout):
		return fmt.Errorf("pid %d not reaped %s after SIGKILL", p.cmd.Process.Pid, reapTimeout)
	}
	return nil
}

// waitRefused returns once nothing accepts connections on the port, so a
// stopped server looks down to clients, not merely dying.
func (s *Server) waitRefused(deadline time.Time) error {
	for {
		conn, err := net.DialTimeout("tcp", s.addr(), 250*time.Millisecond)
		if err != nil {
			return nil
		}
		_ = conn.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("port %d still accepts connections after the server was killed", s.port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shutdown ends the server at cleanup: SIGTERM, then SIGKILL after termGrace.
func (s *Server) shutdown(t testing.TB) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		return
	}
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
		s.proc = nil
		return
	case <-time.After(termGrace):
	}
	if err := s.kill(); err != nil {
		t.Errorf("redistest: stop redis-server on %s: %v\n%s", s.addr(), err, s.logTail())
	}
}

// logTail returns the end of the server log, for failure messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no redis-server log: %v)", err)
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return "redis-server log tail:\n" + string(b)
}

// freePort asks the kernel for a port nobody listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("release port %d: %w", port, err)
	}
	return port, nil
}

// LeakOptions are the goleak options of packages whose tests use Redis: after a dial fails,
// go-redis probes the server from a goroutine of its own, which ends within a second of its
// client's Close rather than at it.
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial")}
}
