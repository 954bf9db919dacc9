package server

import (
	"io"
	"net/http"
	"regexp"
	"testing"
)

// /metrics carries the live heap (what bench divides by the connections) beside the default Go
// and process metrics.
func TestMetricsLiveHeap(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite")
	resp, err := http.Get(ts.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	for _, want := range []string{
		`(?m)^# TYPE go_gc_heap_live_bytes gauge$`, `(?m)^go_gc_heap_live_bytes [0-9.e+]+$`,
		`(?m)^go_goroutines \d+$`, `(?m)^go_memstats_heap_alloc_bytes `, `(?m)^process_resident_memory_bytes `,
	} {
		if !regexp.MustCompile(want).Match(body) {
			t.Errorf("no %s in /metrics", want)
		}
	}
}
