package baseline

import (
	"fmt"
	"net/http"
	"runtime/metrics"
)

// LiveHeapGauge is the gauge the server's /metrics carries for the heap that survived the last
// GC (runtime/metrics' /gc/heap/live:bytes, as the Prometheus Go collector names it).
const LiveHeapGauge = "go_gc_heap_live_bytes"

// serveLiveHeap answers GET /metrics with the live heap alone, under the server's name for it,
// so that bench reads the baseline's memory the way it reads the server's in the same run.
func serveLiveHeap(w http.ResponseWriter, _ *http.Request) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		http.Error(w, "the runtime has no /gc/heap/live:bytes", http.StatusNotImplemented)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP %[1]s Heap memory occupied by live objects that were marked by the previous GC.\n# TYPE %[1]s gauge\n%[1]s %[2]d\n",
		LiveHeapGauge, sample[0].Value.Uint64())
}
