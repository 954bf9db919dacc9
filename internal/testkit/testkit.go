// Package testkit holds the helpers the project's tests share, so that each is written once:
// waiting on a condition instead of sleeping (Eventually, WaitFor), goroutine baselines and
// leak checks (SteadyGoroutines, GoroutinesBackTo), a log sink safe for concurrent writers
// (LockedBuffer), reading a value out of a command's output (Submatch), a live-heap figure kept
// fresh for tests that read it from /metrics (CollectGarbage), and the server's
// static binary for the tests that check or run it (StaticBinary). A Redis per test is
// internal/redistest's, a database per test db/dbtest's.
//
// It is imported by tests only; nothing a library user imports depends on it.
package testkit

import (
	"bytes"
	"fmt"
	"regexp"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Eventually and WaitFor check their condition at once, then after PollInterval, doubling the
// pause up to MaxPollInterval: a wait ends soon after the condition holds, and a long one (a
// database query, an HTTP request per check) does not take the CPU of a busy machine from the
// code under test.
const (
	PollInterval    = 5 * time.Millisecond
	MaxPollInterval = 50 * time.Millisecond
)

// Eventually polls cond (see PollInterval) until it returns true, and fails the test with
// what when it has not within the given time. It waits on the condition itself, never on a
// fixed delay, so a slow machine only makes it slower, not flaky.
//
// Like t.Fatal, it must be called from the goroutine running the test; elsewhere, or to fail
// with a report of one's own (logs, a goroutine dump), use WaitFor.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := WaitFor(within, cond); err != nil {
		t.Fatalf("%v waiting for %s", err, what)
	}
}

// WaitFor polls cond (see PollInterval) until it returns true, and returns an error when it
// has not within the given time. It never fails a test itself, so it may run on any goroutine.
func WaitFor(within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	pause := PollInterval
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", within)
		}
		time.Sleep(pause)
		pause = min(2*pause, MaxPollInterval)
	}
	return nil
}

// LockedBuffer is an io.Writer safe for concurrent use, for slog handlers and commands' output
// written by goroutines the test reads while they run. The zero value is ready to use.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// SteadyGoroutines waits until the number of goroutines has held still for 100 ms and returns
// it: a baseline taken before a test's work, once connections just made have started theirs.
func SteadyGoroutines() int {
	n := runtime.NumGoroutine()
	for still := 0; still < 10; still++ {
		// Kept: no event says "every goroutine has started"; only the count holding still does.
		time.Sleep(10 * time.Millisecond)
		if m := runtime.NumGoroutine(); m != n {
			n, still = m, 0
		}
	}
	return n
}

// GoroutinesBackTo waits until at most n goroutines run, as they should once a test's work is
// over, and fails the test with every goroutine's stack, to show what leaked, if not within the
// given time.
func GoroutinesBackTo(t testing.TB, within time.Duration, n int) {
	t.Helper()
	if err := WaitFor(within, func() bool { return runtime.NumGoroutine() <= n }); err != nil {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, want at most %d, %v:\n%s", runtime.NumGoroutine(), n, err, buf[:runtime.Stack(buf, true)])
	}
}

// Submatch returns the first submatch of pattern in s, failing the test, with s, when there is
// none: for reading a value (an address, a token) out of a command's output.
func Submatch(t testing.TB, s, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("nothing matches %s in:\n%s", pattern, s)
	}
	return m[1]
}

// CollectGarbage runs a GC now and every 100ms for the rest of the test, so that a live heap
// read from /metrics (the last GC's figure, 0 before the first) is never older than that.
func CollectGarbage(t testing.TB) {
	t.Helper()
	runtime.GC()
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				runtime.GC()
			case <-quit:
				return
			}
		}
	}()
	t.Cleanup(func() { close(quit); <-done })
}
