package bench

import (
	"math/bits"
	"time"
)

// subBuckets per power of two: values are kept with a relative error under 1/64 (1.6 %), in the
// manner of an HDR histogram, from 1 µs to about 1 hour, in a fixed 2,600-slot array.
const (
	subBucketBits = 6
	subBuckets    = 1 << subBucketBits
	maxExponent   = 40
)

// Histogram records durations at microsecond resolution with bounded relative error. The zero
// value is ready to use; it is not safe for concurrent use (merge per-goroutine histograms).
type Histogram struct {
	counts [maxExponent * subBuckets]uint64
	total  uint64
	max    time.Duration
}

func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	exp := bits.Len64(us) - subBucketBits // ≥ 1
	sub := us >> uint(exp)                // in [subBuckets/2, subBuckets)
	i := exp*subBuckets + int(sub)
	if i >= len(Histogram{}.counts) {
		return len(Histogram{}.counts) - 1
	}
	return i
}

// lowest returns the smallest value (µs) that falls in bucket i.
func lowest(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	exp, sub := i/subBuckets, uint64(i%subBuckets)
	return sub << uint(exp)
}

// Record adds one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.counts[bucketOf(us)]++
	h.total++
	h.max = max(h.max, d)
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.max = max(h.max, o.max)
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total }

// Max is the largest recorded value, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Percentile returns the value at or below which p percent of the records fall (the bucket's
// lower bound, never above Max); 0 when nothing was recorded.
func (h *Histogram) Percentile(p float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(p / 100 * float64(h.total))
	if rank >= h.total {
		rank = h.total - 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen > rank {
			return min(time.Duration(lowest(i))*time.Microsecond, h.max)
		}
	}
	return h.max
}
