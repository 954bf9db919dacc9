package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/bench"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// `bench` against `serve --dev` in the same process: its clients authenticate with tokens
// minted from the server's secret, every broadcast reaches every client, and --json prints
// the report; the server's memory and CPU are read from --pid, its live heap from /metrics.
func TestBenchCommandAgainstServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	secret, service := strings.Repeat("b", 40), "bench-service-token"
	var out, errs testkit.LockedBuffer
	environ := map[string]string{"STREAMSPACE_JWT_SECRET": secret, "STREAMSPACE_SERVICE_TOKEN": service}
	banner, done := startServeDev(ctx, t, "sqlite://"+filepath.Join(t.TempDir(), "bench.db"), environ, &out, &errs)
	host := testkit.Submatch(t, banner, `on http://(\S+)`)
	testkit.CollectGarbage(t)

	var report, progress testkit.LockedBuffer
	err := run(ctx, []string{"bench", "--server", "http://" + host, "--clients", "40", "--rate", "20", "--duration", "1s",
		"--batch", "10", "--json", "--pid", strconv.Itoa(os.Getpid())}, env(environ), &report, &progress)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, progress.String())
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(report.String()), &rep); err != nil {
		t.Fatalf("report %q: %v", report.String(), err)
	}
	if rep.Connected != 40 || rep.Published < 15 || rep.PublishErrors != 0 || rep.Delivered != rep.Expected || rep.OutOfOrder != 0 ||
		rep.ServerRSSConnKB <= 0 || rep.LatencyP99Ms <= 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.LiveHeapIdleKB <= 0 || rep.LiveHeapConnKB <= rep.LiveHeapIdleKB || rep.LiveHeapKiBPerConn <= 0 {
		t.Fatalf("live heap figures %+v", rep)
	}
	if !strings.Contains(progress.String(), "connected 40/40") {
		t.Fatalf("progress %q", progress.String())
	}
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}

// `bench agents` against `serve --dev`: agents created through the admin API and connected with
// the SDK complete every command accepted, and the report reads the round trips back from the
// server's records.
func TestBenchAgentsCommandAgainstServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	service := "bench-agents-service-token"
	var out, errs testkit.LockedBuffer
	environ := map[string]string{"STREAMSPACE_JWT_SECRET": strings.Repeat("c", 40), "STREAMSPACE_SERVICE_TOKEN": service,
		"STREAMSPACE_AGENT_HEARTBEAT_FLUSH": "100ms"}
	banner, done := startServeDev(ctx, t, "sqlite://"+filepath.Join(t.TempDir(), "agents.db"), environ, &out, &errs)
	host := testkit.Submatch(t, banner, `on http://(\S+)`)

	var report, progress testkit.LockedBuffer
	err := run(ctx, []string{"bench", "agents", "--server", "http://" + host, "--agents", "6", "--duration", "1s",
		"--workers", "4", "--heartbeat", "200ms", "--json"}, env(environ), &report, &progress)
	if err != nil {
		t.Fatalf("bench agents: %v\n%s", err, progress.String())
	}
	var rep bench.AgentsReport
	if err := json.Unmarshal([]byte(report.String()), &rep); err != nil {
		t.Fatalf("report %q: %v", report.String(), err)
	}
	if rep.Connected != 6 || rep.Submitted < 10 || rep.SubmitErrors != 0 || rep.Completed != rep.Submitted || rep.NotCompleted != 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.CommandsPerS <= 0 || rep.RoundTripP50Ms <= 0 || rep.RoundTripMaxMs < rep.RoundTripP99Ms || rep.DeliveryP50Ms <= 0 ||
		rep.Heartbeats < 6 || rep.HeartbeatWrites < 1 || rep.HeartbeatWrites > rep.Heartbeats {
		t.Fatalf("figures %+v\nserver log:\n%s", rep, errs.String())
	}
	if !strings.Contains(progress.String(), "agents connected 6/6") {
		t.Fatalf("progress %q", progress.String())
	}
	if err := run(ctx, []string{"bench", "agents", "--server", "http://" + host, "--agents", "0"}, env(environ), &report, &progress); err == nil {
		t.Fatal("--agents 0 accepted")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}

// `bench baseline` serves the baseline hub until interrupted, and bench measures it.
func TestBenchBaselineCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errs testkit.LockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"bench", "baseline", "--addr", "127.0.0.1:0"}, env(nil), &out, &errs)
	}()
	if err := testkit.WaitFor(5*time.Second, func() bool { return strings.Contains(out.String(), "http://") }); err != nil {
		t.Fatalf("no address printed: %q %q", out.String(), errs.String())
	}
	url := testkit.Submatch(t, out.String(), `on (http://\S+)`)
	testkit.CollectGarbage(t)
	var report, progress testkit.LockedBuffer
	if err := run(ctx, []string{"bench", "--server", url, "--clients", "20", "--rate", "20", "--duration", "500ms"}, env(nil), &report, &progress); err != nil {
		t.Fatalf("bench: %v", err)
	}
	// The baseline's /metrics carries its live heap: the table shows it without --pid.
	if !strings.Contains(report.String(), "deliveries / expected") || !strings.Contains(report.String(), "(100.00%)") ||
		!strings.Contains(report.String(), "live heap idle / connected (last GC)") || strings.Contains(report.String(), "server RSS") {
		t.Fatalf("report:\n%s", report.String())
	}
	if err := run(ctx, []string{"bench", "--clients", "0"}, env(nil), &report, &progress); err == nil {
		t.Fatal("--clients 0 accepted")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("baseline: %v", err)
	}
}

// --debug-addr serves the profiler on its own listener, never on the API's.
func TestServeDebugAddr(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errs testkit.LockedBuffer
	environ := map[string]string{"STREAMSPACE_DEBUG_ADDR": "127.0.0.1:0"}
	banner, done := startServeDev(ctx, t, "sqlite://"+filepath.Join(t.TempDir(), "debug.db"), environ, &out, &errs)
	api := testkit.Submatch(t, banner, `on http://(\S+)`)
	debug := testkit.Submatch(t, errs.String(), `profiler listening" addr=(\S+)`)
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + debug + "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("profiler: %d %.200s", code, body)
	}
	if code, _ := get("http://" + api + "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("the API's listener answered the profiler's path with %d", code)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := net.DialTimeout("tcp", debug, time.Second); err == nil {
		t.Fatal("the profiler's listener outlived the server")
	}
}

// `bench vnc` against `serve --dev`: the bench's source, websockify and the server (an agent of
// the bench's own, a session started through the admin API, viewers with minted tokens) all
// run, and every figure of the report is filled for both relays, in the runs asked for.
func TestBenchVNCCommandAgainstServe(t *testing.T) {
	if _, err := exec.LookPath("websockify"); err != nil {
		t.Fatal("websockify is not installed: run scripts/tools.sh")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	service := "bench-vnc-service-token"
	var out, errs testkit.LockedBuffer
	environ := map[string]string{"STREAMSPACE_JWT_SECRET": strings.Repeat("v", 40), "STREAMSPACE_SERVICE_TOKEN": service}
	banner, done := startServeDev(ctx, t, "sqlite://"+filepath.Join(t.TempDir(), "vnc.db"), environ, &out, &errs)
	host := testkit.Submatch(t, banner, `on http://(\S+)`)

	var report, progress testkit.LockedBuffer
	args := []string{"bench", "vnc", "--server", "http://" + host, "--viewers", "2", "--rate", "2MB", "--duration", "1s",
		"--runs", "2", "--idle-viewers", "3", "--batch", "5", "--pid", strconv.Itoa(os.Getpid()), "--json"}
	if err := run(ctx, args, env(environ), &report, &progress); err != nil {
		t.Fatalf("bench vnc: %v\n%s\nserver log:\n%s", err, progress.String(), errs.String())
	}
	var rep bench.VNCReport
	if err := json.Unmarshal([]byte(report.String()), &rep); err != nil {
		t.Fatalf("report %q: %v", report.String(), err)
	}
	if rep.Viewers != 2 || rep.Rate != 2e6 || rep.AcrossReplicas || len(rep.Websockify) != 2 || len(rep.Server) != 2 || len(rep.WebsockifyHop) != 2 {
		t.Fatalf("report %+v", rep)
	}
	for _, r := range slices.Concat(rep.Websockify, rep.Server, rep.WebsockifyHop) {
		if r.Viewers != 2 || r.Dropped != 0 || r.Seconds <= 0 || r.TunnelMinMBps <= 0 || r.TunnelMedianMBps < r.TunnelMinMBps ||
			r.TotalMBps < 2*r.TunnelMinMBps || r.RoundTrips < 2 || r.RoundTripMaxMs < r.RoundTripP99Ms || r.RoundTripP99Ms < r.RoundTripP50Ms ||
			r.CPUMsPerMB <= 0 {
			t.Fatalf("%s: %+v", r.Target, r)
		}
	}
	for _, r := range rep.Server {
		if r.Target != bench.TargetServer || r.IdleTunnels != 3 || r.CommandsIdle < 1 || r.CommandsBusy < 1 ||
			r.CommandIdleP50Ms <= 0 || r.CommandBusyP50Ms <= 0 || r.CommandIdleP99Ms < r.CommandIdleP50Ms {
			t.Fatalf("server figures %+v", r)
		}
	}
	if rep.Websockify[0].IdleTunnels != 0 || rep.Websockify[0].CommandsIdle != 0 || rep.WebsockifyHop[0].CommandsIdle != 0 {
		t.Fatalf("websockify has server-only figures: %+v", rep.Websockify[0])
	}
	if rep.Websockify[0].Target != bench.TargetWebsockify || rep.WebsockifyHop[0].Target != bench.TargetWebsockifyHop {
		t.Fatalf("targets %q %q", rep.Websockify[0].Target, rep.WebsockifyHop[0].Target)
	}
	if !strings.Contains(progress.String(), "viewers connected through server 2/2") || !strings.Contains(progress.String(), "idle viewers connected 3/3") {
		t.Fatalf("progress %q", progress.String())
	}

	// The relays alone: no commands, no two-hop floor.
	var alone testkit.LockedBuffer
	args = []string{"bench", "vnc", "--server", "http://" + host, "--viewers", "1", "--rate", "1MB", "--duration", "1s",
		"--runs", "1", "--idle-viewers", "0", "--rtt-interval", "5ms", "--commands=false", "--hop=false", "--json"}
	if err := run(ctx, args, env(environ), &alone, &progress); err != nil {
		t.Fatalf("bench vnc --commands=false --hop=false: %v", err)
	}
	rep = bench.VNCReport{}
	if err := json.Unmarshal([]byte(alone.String()), &rep); err != nil {
		t.Fatalf("report %q: %v", alone.String(), err)
	}
	if len(rep.Server) != 1 || len(rep.Websockify) != 1 || len(rep.WebsockifyHop) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if r := rep.Server[0]; r.CommandsIdle != 0 || r.CommandsBusy != 0 || r.RoundTrips < 50 {
		t.Fatalf("server without commands, 5ms round trips for 1s: %+v", r)
	}

	// Prerequisites missing or refused: clear errors.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--websockify-bin", filepath.Join(t.TempDir(), "none")}, "websockify not found"},
		{[]string{"--hop-bin", filepath.Join(t.TempDir(), "none")}, "socat not found"},
		{[]string{"--service-token", "wrong"}, "create the agent"},
		{[]string{"--rate", "fast"}, "--rate"},
		{[]string{"--viewers", "0"}, "must be positive"},
		{[]string{"--idle-viewers", "300"}, "at most 256"},
	} {
		err := run(ctx, append([]string{"bench", "vnc", "--server", "http://" + host, "--duration", "1s"}, c.args...), env(environ), &report, &progress)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.want)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}
