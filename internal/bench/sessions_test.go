package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/internal/bench/baseline"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startBaseline serves the baseline hub on a loopback port for the test.
func startBaseline(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- baseline.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("baseline: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// A run against the baseline delivers every broadcast to every client, in order, and reads
// the server's memory and CPU (this process's here), and its live heap from its /metrics.
func TestRunSessionsAgainstBaseline(t *testing.T) {
	server := startBaseline(t)
	testkit.CollectGarbage(t)
	var progress strings.Builder
	rep, err := RunSessions(context.Background(), SessionsConfig{
		Server: server, Org: "bench", Clients: 50, Rate: 40, Duration: time.Second,
		Batch: 20, SourceIPs: 4, Drain: 500 * time.Millisecond, PID: os.Getpid(), Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Published is only checked to be well under way: how close it comes to 40 in the second
	// is the machine's, not the generator's.
	if rep.Connected != 50 || rep.Published < 20 || rep.PublishErrors != 0 || rep.Dropped != 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.Delivered != rep.Expected || rep.Lost != 0 || rep.OutOfOrder != 0 || rep.Ratio != 1 {
		t.Fatalf("deliveries %d of %d, lost %d, out of order %d", rep.Delivered, rep.Expected, rep.Lost, rep.OutOfOrder)
	}
	if rep.LatencyP50Ms <= 0 || rep.LatencyMaxMs < rep.LatencyP99Ms || rep.ServerRSSIdleKB <= 0 || rep.ServerRSSPeakKB < rep.ServerRSSIdleKB {
		t.Fatalf("latency or memory figures %+v", rep)
	}
	if rep.LiveHeapIdleKB <= 0 || rep.LiveHeapConnKB <= rep.LiveHeapIdleKB || rep.LiveHeapKiBPerConn <= 0 {
		t.Fatalf("live heap figures %+v", rep)
	}
	table := rep.Table()
	if !strings.Contains(progress.String(), "connected 50/50") || !strings.Contains(table, "deliveries / expected") ||
		!strings.Contains(table, fmt.Sprintf("live heap idle / connected (last GC) %d / %d KiB", rep.LiveHeapIdleKB, rep.LiveHeapConnKB)) ||
		!strings.Contains(table, "live heap KiB per connection") {
		t.Fatalf("progress %q, table:\n%s", progress.String(), table)
	}
}

// A server that refuses the clients fails the run with the reason.
func TestRunSessionsRefused(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	_, err = RunSessions(context.Background(), SessionsConfig{Server: "http://" + ln.Addr().String(), Clients: 3, Rate: 1, Duration: time.Second})
	if err == nil || !strings.Contains(err.Error(), "bad handshake") {
		t.Fatalf("err %v, want the handshake refusal", err)
	}
}

// Compare alternates runs against two targets and reports the medians with ratios.
func TestCompare(t *testing.T) {
	a, b := startBaseline(t), startBaseline(t)
	cfg := SessionsConfig{Server: a, Org: "bench", Clients: 10, Rate: 20, Duration: 300 * time.Millisecond, Drain: 200 * time.Millisecond}
	c, err := Compare(context.Background(), cfg, b, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Server) != 3 || len(c.Baseline) != 3 {
		t.Fatalf("runs %d and %d", len(c.Server), len(c.Baseline))
	}
	table := c.Table()
	if !strings.Contains(table, "delivery ratio %") || !strings.Contains(table, "100.00         100.00    1.00×") {
		t.Fatalf("table:\n%s", table)
	}
}

// A ramp raises the rate on the same connections until a bound is crossed, here the number of
// steps, and reports the fastest step held. The rates (5, 10, 20 broadcasts/s) are far below
// what a loaded CI machine running the race detector publishes, so the steps hold on any
// machine: what is tested is the ramp, not the machine.
func TestRunRampAgainstBaseline(t *testing.T) {
	server := startBaseline(t)
	rep, err := RunRamp(context.Background(), RampConfig{
		SessionsConfig: SessionsConfig{Server: server, Org: "bench", Clients: 20, Rate: 5, Duration: time.Second,
			Batch: 10, SourceIPs: 2, Drain: 300 * time.Millisecond, Publishers: 3},
		MaxP99: 5 * time.Second, Factor: 2, MaxSteps: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Steps) != 3 || rep.Held != 2 || rep.StoppedBy != "the last step held" {
		t.Fatalf("steps %d, held %d, stopped by %q", len(rep.Steps), rep.Held, rep.StoppedBy)
	}
	for i, s := range rep.Steps {
		if s.Delivered != s.Expected || s.Lost != 0 || s.OutOfOrder != 0 || s.Published == 0 {
			t.Fatalf("step %d: %+v", i, s)
		}
	}
	if first, last := rep.Steps[0].PublishRate, rep.Steps[2].PublishRate; last < 2.5*first {
		t.Fatalf("rates %.0f then %.0f: the ramp did not raise them", first, last)
	}
	if rep.MaxSustainedDeliveriesPerS != rep.Steps[2].DeliveriesPerS || !strings.Contains(rep.Table(), "<- held") {
		t.Fatalf("max %.0f, table:\n%s", rep.MaxSustainedDeliveriesPerS, rep.Table())
	}
}

// Bench messages are read wherever their fields are, with the server's fields around them.
func TestParseBenchMessage(t *testing.T) {
	m, ok := parseBenchMessage([]byte(`{"type":"bench","seq":42,"pub":3,"pseq":9,"sent":1700000000123456789,"offset":7,"epoch":"e"}`))
	if !ok || m.Seq != 42 || m.Pub != 3 || m.PSeq != 9 || m.Sent != 1700000000123456789 {
		t.Fatalf("got %+v %v", m, ok)
	}
	for _, bad := range []string{`{"type":"other","seq":1,"sent":2}`, `{"type":"bench","sent":2}`, `{"type":"bench","seq":-1,"sent":2}`} {
		if _, ok := parseBenchMessage([]byte(bad)); ok {
			t.Fatalf("%s accepted", bad)
		}
	}
}

// CompareRamp alternates ramps against two targets and an unreachable one is an error naming it.
func TestCompareRamp(t *testing.T) {
	a, b := startBaseline(t), startBaseline(t)
	cfg := RampConfig{
		// 10 then 20 broadcasts/s: rates any loaded machine publishes, as in the ramp test.
		SessionsConfig: SessionsConfig{Server: a, Org: "bench", Clients: 10, Rate: 10, Duration: 500 * time.Millisecond,
			Drain: 200 * time.Millisecond},
		MaxP99: 5 * time.Second, Factor: 2, MaxSteps: 2,
	}
	c, err := CompareRamp(context.Background(), cfg, b, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Server) != 2 || len(c.Baseline) != 2 || c.Server[0].Held != 1 || c.Baseline[1].Held != 1 {
		t.Fatalf("ramps %+v", c)
	}
	if table := c.Table(); !strings.Contains(table, "max sustained deliveries/s") || !strings.Contains(table, "ramp 2 stopped") {
		t.Fatalf("table:\n%s", table)
	}
	if _, err := CompareRamp(context.Background(), cfg, "http://127.0.0.1:1", 0, 1); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("unreachable baseline: %v", err)
	}
}

// The floor delivers every broadcast to every client, in order, from the publishing request.
func TestRunSessionsAgainstFloor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- baseline.ServeFloor(ctx, ln) }()
	testkit.CollectGarbage(t)
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("floor: %v", err)
		}
	}()
	rep, err := RunSessions(context.Background(), SessionsConfig{
		Server: "http://" + ln.Addr().String(), Org: "bench", Clients: 30, Rate: 40, Duration: 500 * time.Millisecond,
		Batch: 10, SourceIPs: 2, Drain: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Connected != 30 || rep.Published < 10 || rep.Delivered != rep.Expected || rep.OutOfOrder != 0 || rep.Dropped != 0 {
		t.Fatalf("report %+v", rep)
	}
	// The floor serves its live heap too (no --pid here: no settle, so only the readings).
	if rep.LiveHeapIdleKB <= 0 || rep.LiveHeapConnKB <= 0 || rep.ServerRSSIdleKB != 0 {
		t.Fatalf("memory figures %+v", rep)
	}
}
