// Package testkit holds the helpers the project's tests share, so that each is written once:
// waiting on a condition instead of sleeping, a log sink safe for concurrent writers, and the
// static binary that deploy's and the browser tests run.
//
// It is imported by tests only; nothing a library user imports depends on it.
package testkit

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// PollInterval is how often Eventually checks its condition: short, so that a wait ends soon
// after the condition holds, yet long enough not to starve the code under test on a busy
// machine.
const PollInterval = 5 * time.Millisecond

// Eventually polls cond every PollInterval until it returns true, and fails the test with
// what when it has not within the given time. It waits on the condition itself, never on a
// fixed delay, so a slow machine only makes it slower, not flaky.
//
// Like t.Fatal, it must be called from the goroutine running the test.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(PollInterval)
	}
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
