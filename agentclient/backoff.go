package agentclient

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jonboulle/clockwork"
)

// backoff draws reconnect waits with full jitter: uniformly between min and a cap that starts
// at min and doubles, up to max, with each draw. Not safe for concurrent use: Run owns it.
type backoff struct {
	min, max, cap time.Duration
	rand          func(n int64) int64 // [0, n)
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, cap: min, rand: rand.Int64N}
}

// next returns the next wait and doubles the cap.
func (b *backoff) next() time.Duration {
	d := b.min
	if span := b.cap - b.min; span > 0 {
		d += time.Duration(b.rand(int64(span) + 1))
	}
	b.cap = min(b.cap*2, b.max)
	return d
}

// quick returns a short wait in [0, min] for a reconnect the server asked for (1001).
func (b *backoff) quick() time.Duration {
	return time.Duration(b.rand(int64(b.min) + 1))
}

// reset starts the doubling over, after a connection that proved healthy.
func (b *backoff) reset() { b.cap = b.min }

// sleep waits d on clock, or until ctx ends; it reports whether the whole wait elapsed.
func sleep(ctx context.Context, clock clockwork.Clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.Chan():
		return true
	}
}
