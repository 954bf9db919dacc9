package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Percentiles of the histogram stay within 1.6 % of the exact ones, and Max is exact.
func TestHistogramPercentiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	values := make([]time.Duration, 100000)
	for i := range values {
		values[i] = time.Duration(rng.ExpFloat64()*5000) * time.Microsecond
		h.Record(values[i])
	}
	slices.Sort(values)
	for _, p := range []float64{50, 95, 99, 99.9} {
		exact := values[int(p/100*float64(len(values)))]
		got := h.Percentile(p)
		if diff := float64(exact-got) / float64(exact); diff < -0.001 || diff > 0.02 {
			t.Errorf("p%v = %v, exact %v", p, got, exact)
		}
	}
	if h.Max() != values[len(values)-1] || h.Count() != uint64(len(values)) {
		t.Errorf("max %v count %d", h.Max(), h.Count())
	}
	var merged Histogram
	merged.Merge(&h)
	merged.Merge(&h)
	if merged.Count() != 2*h.Count() || merged.Percentile(50) != h.Percentile(50) {
		t.Errorf("merge: count %d p50 %v", merged.Count(), merged.Percentile(50))
	}
	var empty Histogram
	if empty.Percentile(99) != 0 {
		t.Error("empty histogram has a percentile")
	}
}
