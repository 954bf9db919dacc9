package testkit

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeTB records a failure instead of ending the test, so that Eventually's timeout can be
// checked. Fatalf ends the calling goroutine as testing.T's does.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	failed string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// runFake runs fn with a fakeTB on a goroutine of its own, as Fatalf ends that goroutine.
func runFake(fn func(tb *fakeTB)) string {
	tb := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(tb)
	}()
	<-done
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.failed
}

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	Eventually(t, 5*time.Second, "the third call", func() bool { return calls.Add(1) >= 3 })
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3: Eventually stops polling once it holds", n)
	}
}

func TestEventuallyDoesNotWaitWhenTheConditionAlreadyHolds(t *testing.T) {
	start := time.Now()
	Eventually(t, time.Hour, "true", func() bool { return true })
	if d := time.Since(start); d >= PollInterval {
		t.Fatalf("took %v for a condition that held at once", d)
	}
}

func TestEventuallyFailsWithWhatOnTimeout(t *testing.T) {
	start := time.Now()
	failed := runFake(func(tb *fakeTB) {
		Eventually(tb, 50*time.Millisecond, "the impossible", func() bool { return false })
	})
	if !strings.Contains(failed, "the impossible") || !strings.Contains(failed, "50ms") {
		t.Fatalf("failure %q, want one naming what was awaited and for how long", failed)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("gave up after %v, before the 50ms it was given", d)
	}
}

func TestWaitForFromAnotherGoroutine(t *testing.T) {
	var ready atomic.Bool
	errc := make(chan error, 2)
	go func() { errc <- WaitFor(5*time.Second, ready.Load) }()
	go func() { errc <- WaitFor(20*time.Millisecond, func() bool { return false }) }()
	ready.Store(true)
	var errs []error
	for range 2 {
		errs = append(errs, <-errc)
	}
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("errors %v, want one nil (the condition held) and one timeout", errs)
	}
}

func TestLockedBufferConcurrentWriters(t *testing.T) {
	var buf LockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				logger.Info("line", "writer", i, "n", j)
				_ = buf.String() // a reader while writers run: the race detector checks it
			}
		})
	}
	wg.Wait()
	if n := strings.Count(buf.String(), "msg=line"); n != 8*50 {
		t.Fatalf("%d lines, want %d: a write was lost or torn", n, 8*50)
	}
}

func TestModuleRootHoldsTheBuildScript(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, BuildStaticScript)); err != nil {
		t.Fatalf("module root %s: %v", root, err)
	}
}

func TestStaticBinaryFromTheEnvironment(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(StaticBinaryEnv, exe)
	if got := StaticBinary(t); got != exe {
		t.Fatalf("StaticBinary %q, want %q from $%s", got, exe, StaticBinaryEnv)
	}
}

func TestSubmatch(t *testing.T) {
	if got := Submatch(t, "listening on http://127.0.0.1:8080/ now", `on http://(\S+)/`); got != "127.0.0.1:8080" {
		t.Fatalf("Submatch %q", got)
	}
	failed := runFake(func(tb *fakeTB) { Submatch(tb, "nothing here", `token: (\S+)`) })
	if !strings.Contains(failed, "token: ") || !strings.Contains(failed, "nothing here") {
		t.Fatalf("failure %q, want the pattern and the text", failed)
	}
}
