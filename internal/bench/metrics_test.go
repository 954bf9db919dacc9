package bench

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// The gauge is found among other samples, labelled ones of the same name are not it, and a
// page without it or with a malformed sample is an error.
func TestGaugeValue(t *testing.T) {
	page := `# HELP go_gc_heap_live_bytes Heap memory occupied by live objects.
# TYPE go_gc_heap_live_bytes gauge
go_gc_heap_goal_bytes 4.194304e+06
go_gc_heap_live_bytes{kind="other"} 7
go_gc_heap_live_bytes 1.879936e+06
go_goroutines 15
`
	if v, err := gaugeValue(strings.NewReader(page), "go_gc_heap_live_bytes"); err != nil || v != 1879936 {
		t.Fatalf("got %v, %v; want 1879936", v, err)
	}
	if v, err := gaugeValue(strings.NewReader("go_gc_heap_live_bytes 2048 1700000000000\n"), "go_gc_heap_live_bytes"); err != nil || v != 2048 {
		t.Fatalf("with a timestamp: got %v, %v", v, err)
	}
	if _, err := gaugeValue(strings.NewReader("go_goroutines 15\n# go_gc_heap_live_bytes 1\n"), "go_gc_heap_live_bytes"); !errors.Is(err, errNoGauge) {
		t.Fatalf("missing: err %v, want errNoGauge", err)
	}
	for _, bad := range []string{"go_gc_heap_live_bytes many\n", "go_gc_heap_live_bytes\n", "go_gc_heap_live_bytes 1 2 3\n",
		"go_gc_heap_live_bytes -5\n", "go_gc_heap_live_bytes NaN\n", "go_gc_heap_live_bytes +Inf\n"} {
		if v, err := gaugeValue(strings.NewReader(bad), "go_gc_heap_live_bytes"); err == nil || errors.Is(err, errNoGauge) ||
			!strings.Contains(err.Error(), "malformed") {
			t.Errorf("%q: got %v, %v; want a malformed sample", bad, v, err)
		}
	}
}

// The live heap is read from the target's /metrics in KiB, 0 before the target's first GC; a
// target that has no /metrics, no gauge or no listener gives not ok.
func TestLiveHeapKiB(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok/metrics", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("go_goroutines 3\ngo_gc_heap_live_bytes 3.1457280e+06\n"))
	})
	mux.HandleFunc("GET /fresh/metrics", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("go_gc_heap_live_bytes 0\n"))
	})
	mux.HandleFunc("GET /without/metrics", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("go_goroutines 3\n"))
	})
	mux.HandleFunc("GET /refused/metrics", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "go_gc_heap_live_bytes 1048576", http.StatusForbidden)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]struct {
		kib int64
		ok  bool
	}{"/ok": {3072, true}, "/fresh": {0, true}, "/without": {0, false}, "/refused": {0, false}, "/missing": {0, false}} {
		u, _ := url.Parse(srv.URL + path)
		if got, ok := liveHeapKiB(context.Background(), u); got != want.kib || ok != want.ok {
			t.Errorf("%s: %d KiB ok=%v, want %d ok=%v", path, got, ok, want.kib, want.ok)
		}
	}
	gone := httptest.NewServer(mux)
	u, _ := url.Parse(gone.URL + "/ok")
	gone.Close()
	if got, ok := liveHeapKiB(context.Background(), u); got != 0 || ok {
		t.Errorf("no listener: %d KiB ok=%v, want 0, not ok", got, ok)
	}
}

// The comparison shows the idle RSS and the live heap beside the RSS per connection, run 1's
// with ratios, and leaves out the rows neither side measured.
func TestComparisonTableMemoryRows(t *testing.T) {
	server := []Report{
		{Ratio: 1, ServerRSSIdleKB: 30000, KiBPerIdleConn: 12, LiveHeapIdleKB: 4000, LiveHeapConnKB: 14000, LiveHeapKiBPerConn: 10},
		{Ratio: 1, ServerRSSIdleKB: 90000, KiBPerIdleConn: 1, LiveHeapIdleKB: 9000, LiveHeapKiBPerConn: 1},
	}
	base := []Report{
		{Ratio: 1, ServerRSSIdleKB: 10000, KiBPerIdleConn: 6, LiveHeapIdleKB: 1000, LiveHeapConnKB: 6000, LiveHeapKiBPerConn: 5},
		{Ratio: 1, ServerRSSIdleKB: 50000, KiBPerIdleConn: 1, LiveHeapIdleKB: 5000, LiveHeapKiBPerConn: 1},
	}
	table := Comparison{Server: server, Baseline: base}.Table()
	for _, want := range []string{
		"server RSS before any connection, KiB        30000.00       10000.00    3.00×",
		"KiB per idle connection (run 1)                 12.00           6.00    2.00×",
		"live heap before any connection, KiB          4000.00        1000.00    4.00×",
		"live heap KiB per connection (run 1)            10.00           5.00    2.00×",
	} {
		if !strings.Contains(table, want+"\n") {
			t.Errorf("no row %q in:\n%s", want, table)
		}
	}
	// A server that had not collected when idle reads 0 there: the row stays, without a ratio.
	server[0].LiveHeapIdleKB = 0
	table = Comparison{Server: server, Baseline: base}.Table()
	if want := "live heap before any connection, KiB             0.00        1000.00        -\n"; !strings.Contains(table, want) {
		t.Errorf("no row %q in:\n%s", want, table)
	}
	// Without --pid and without a live heap on either side: the rows are left out.
	for i := range server {
		server[i].ServerRSSIdleKB, server[i].LiveHeapIdleKB, server[i].LiveHeapConnKB, server[i].LiveHeapKiBPerConn = 0, 0, 0, 0
		base[i].ServerRSSIdleKB, base[i].LiveHeapIdleKB, base[i].LiveHeapConnKB, base[i].LiveHeapKiBPerConn = 0, 0, 0, 0
	}
	table = Comparison{Server: server, Baseline: base}.Table()
	if strings.Contains(table, "server RSS before") || strings.Contains(table, "live heap") || !strings.Contains(table, "KiB per idle connection") {
		t.Fatalf("rows without figures, or the RSS per connection missing:\n%s", table)
	}
}
