package agentclient

import (
	"testing"
	"time"
)

func TestBackoffFullJitterDoublingToMax(t *testing.T) {
	b := newBackoff(time.Second, 8*time.Second)
	b.rand = func(n int64) int64 { return n - 1 } // always the top of the range
	var got []time.Duration
	for range 6 {
		got = append(got, b.next())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
	b.reset()
	if d := b.next(); d != time.Second {
		t.Fatalf("after reset %v", d)
	}
	if d := b.quick(); d != time.Second {
		t.Fatalf("quick %v, want at most BackoffMin", d)
	}
	b.rand = func(int64) int64 { return 0 } // the bottom
	b.cap = 8 * time.Second
	if d := b.next(); d != time.Second {
		t.Fatalf("bottom of the range %v, want BackoffMin", d)
	}
	if d := b.quick(); d != 0 {
		t.Fatalf("quick %v", d)
	}

	real := newBackoff(10*time.Millisecond, 80*time.Millisecond)
	for range 100 {
		if d := real.next(); d < 10*time.Millisecond || d > 80*time.Millisecond {
			t.Fatalf("wait %v out of [min, max]", d)
		}
	}
}
