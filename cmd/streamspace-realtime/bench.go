package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/bench"
	"github.com/streamspace/streamspace-realtime/internal/bench/baseline"
)

// benchCmd runs the load generator: browsers (`bench`), agents (`bench agents`), viewers of a
// session's desktop (`bench vnc`), or the baseline hub it compares against (`bench baseline`).
func benchCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "baseline" {
		return benchBaseline(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "agents" {
		return benchAgents(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "vnc" {
		return benchVNC(ctx, args[1:], getenv, stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "http://127.0.0.1:8080", "server base URL")
	secret := fs.String("jwt-secret", getenv("STREAMSPACE_JWT_SECRET"), "secret to mint the clients' tokens (env STREAMSPACE_JWT_SECRET; empty: no tokens, as the baseline wants)")
	service := fs.String("service-token", getenv("STREAMSPACE_SERVICE_TOKEN"), "service token for the broadcasts (env STREAMSPACE_SERVICE_TOKEN)")
	org := fs.String("org", "bench-org", "organization of every client and broadcast")
	clients := fs.Int("clients", 1000, "browser clients to connect, each a user of --org (beyond the server's per-organization connection limit, 5000 by default, start it with --max-connections-per-org 0)")
	rate := fs.Float64("rate", 10, "broadcasts per second")
	duration := fs.Duration("duration", 10*time.Second, "how long to publish")
	batch := fs.Int("batch", 200, "clients connecting at once")
	publishers := fs.Int("publishers", 1, "broadcasts in flight at once (raise it with --ramp: a server that answers once it has handed a broadcast out paces a single publisher)")
	sourceIPs := fs.Int("source-ips", 16, "loopback source addresses to spread connections over")
	pid := fs.Int("pid", 0, "server process id: report its memory and CPU (Linux)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	baseURL := fs.String("baseline", "", "baseline hub URL (bench baseline): alternate runs against both and print ratios")
	basePID := fs.Int("baseline-pid", 0, "the baseline's process id, for its memory and CPU")
	runs := fs.Int("runs", 3, "with --baseline: runs against each, alternated; the table shows medians")
	ramp := fs.Bool("ramp", false, "raise the rate step by step (each step --duration long) until delivery falls below 99%, p99 exceeds --max-p99 or a client is dropped; report the maximum sustained deliveries/s")
	maxP99 := fs.Duration("max-p99", 250*time.Millisecond, "with --ramp: the p99 latency a step must stay within")
	factor := fs.Float64("factor", 1.5, "with --ramp: how much each step raises the rate")
	steps := fs.Int("steps", 12, "with --ramp: at most this many steps")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *clients < 1 || *rate <= 0 || *duration <= 0 || *publishers < 1 {
		return errors.New("bench: --clients, --rate, --duration and --publishers must be positive")
	}
	cfg := bench.SessionsConfig{
		Server: *server, ServiceToken: *service, Org: *org, Clients: *clients, Rate: *rate,
		Duration: *duration, Batch: *batch, SourceIPs: *sourceIPs, PID: *pid, Progress: stderr, Publishers: *publishers,
	}
	if *secret != "" {
		now := time.Now()
		ttl := *duration + time.Hour
		cfg.Token = func(i int) string {
			tok, _ := auth.Mint([]byte(*secret), auth.Identity{UserID: "bench-" + strconv.Itoa(i), OrgID: *org, Role: auth.RoleUser}, ttl, now)
			return tok
		}
		if _, err := auth.Mint([]byte(*secret), auth.Identity{UserID: "x", OrgID: *org}, ttl, now); err != nil {
			return fmt.Errorf("bench: --jwt-secret: %w", err)
		}
	}
	var (
		result interface{ Table() string }
		err    error
	)
	if *baseURL != "" && *runs < 1 {
		return errors.New("bench: --runs must be at least 1")
	}
	if *ramp && (*factor <= 1 || *steps < 1 || *maxP99 <= 0) {
		return errors.New("bench: --factor must be above 1, --steps and --max-p99 positive")
	}
	rampCfg := bench.RampConfig{SessionsConfig: cfg, MaxP99: *maxP99, Factor: *factor, MaxSteps: *steps}
	switch {
	case *ramp && *baseURL != "":
		result, err = bench.CompareRamp(ctx, rampCfg, *baseURL, *basePID, *runs)
	case *ramp:
		result, err = bench.RunRamp(ctx, rampCfg)
	case *baseURL != "":
		result, err = bench.Compare(ctx, cfg, *baseURL, *basePID, *runs)
	default:
		result, err = bench.RunSessions(ctx, cfg)
	}
	if err != nil {
		return err
	}
	return printReport(stdout, result, *asJSON)
}

// printReport prints a report as a table, or as JSON.
func printReport(stdout io.Writer, result interface{ Table() string }, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(result)
	}
	_, err := io.WriteString(stdout, result.Table())
	return err
}

// benchAgents runs the agents mode: agents created through the admin API, connected with the
// agent SDK, and commands submitted to them as fast as the server completes them.
func benchAgents(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench agents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "http://127.0.0.1:8080", "server base URL")
	service := fs.String("service-token", getenv("STREAMSPACE_SERVICE_TOKEN"), "service token: creates the agents and sends the commands (env STREAMSPACE_SERVICE_TOKEN)")
	agents := fs.Int("agents", 100, "agents to create and connect")
	heartbeat := fs.Duration("heartbeat", 30*time.Second, "the agents' heartbeat interval")
	duration := fs.Duration("duration", 10*time.Second, "how long to submit commands")
	rate := fs.Float64("rate", 0, "commands per second (0: as fast as the submitters go)")
	workers := fs.Int("workers", 64, "concurrent submitters")
	drain := fs.Duration("drain", 30*time.Second, "how long to wait for the last completions")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *agents < 1 || *duration <= 0 || *workers < 1 || *heartbeat <= 0 || *rate < 0:
		return errors.New("bench agents: --agents, --duration, --workers and --heartbeat must be positive, --rate not negative")
	case *service == "":
		return errors.New("bench agents: a service token is required (--service-token or STREAMSPACE_SERVICE_TOKEN)")
	}
	rep, err := bench.RunAgents(ctx, bench.AgentsConfig{
		Server: *server, ServiceToken: *service, Agents: *agents, Heartbeat: *heartbeat,
		Duration: *duration, Rate: *rate, Workers: *workers, Drain: *drain, Progress: stderr,
	})
	if err != nil {
		return err
	}
	return printReport(stdout, rep, *asJSON)
}

// pidList is a repeatable --pid flag.
type pidList []int

func (p *pidList) String() string { return fmt.Sprint([]int(*p)) }

func (p *pidList) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a process id", v)
	}
	*p = append(*p, n)
	return nil
}

// benchVNC runs the streaming mode: viewers pulling a framebuffer stream from a VNC-like source
// through websockify, through this server (an agent of the bench's own) and through websockify
// behind a plain TCP relay (the two-hop floor), side by side.
func benchVNC(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench vnc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "http://127.0.0.1:8080", "server base URL: the viewers and the admin API")
	agentServer := fs.String("agent-server", "", "base URL the bench's agent connects to (default --server; another replica's measures the relay across two)")
	secret := fs.String("jwt-secret", getenv("STREAMSPACE_JWT_SECRET"), "the server's secret, to sign the viewers' tokens (env STREAMSPACE_JWT_SECRET)")
	service := fs.String("service-token", getenv("STREAMSPACE_SERVICE_TOKEN"), "service token: creates the agent, starts its session, sends the commands (env STREAMSPACE_SERVICE_TOKEN)")
	org := fs.String("org", "bench-org", "organization of the session and its viewers")
	viewers := fs.Int("viewers", 1, "viewers pulling the stream at once, through each relay")
	rate := fs.String("rate", "0", "each viewer's stream, bytes a second (1MB, 512KiB, ...; 0: as fast as it goes)")
	duration := fs.Duration("duration", 10*time.Second, "how long each run measures")
	runs := fs.Int("runs", 3, "runs through each relay, alternated; the table shows medians (at least 3 for a figure to quote)")
	var pids pidList
	fs.Var(&pids, "pid", "server process id, for CPU per MB and memory per idle tunnel (repeat it for two replicas)")
	websockify := fs.String("websockify-bin", "websockify", "websockify program (Debian's package websockify)")
	hop := fs.Bool("hop", true, "also measure websockify behind one plain TCP relay (socat): the floor of a two-hop path such as the server's")
	hopBin := fs.String("hop-bin", "socat", "the plain TCP relay of --hop (Debian's package socat)")
	idle := fs.Int("idle-viewers", 100, "with --pid: idle viewers the memory per open tunnel is measured with (0: not measured)")
	batch := fs.Int("batch", 50, "viewers connecting at once")
	commands := fs.Bool("commands", true, "send the agent a command every 50ms during the server's runs and report their round trip, idle and while the tunnels are busy (false: the relay alone, as websockify's runs)")
	rtt := fs.Duration("rtt-interval", 50*time.Millisecond, "how often each viewer asks for a 1×1 update, whose round trip is measured (one outstanding at a time)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bytesPerS, err := bench.ParseByteRate(*rate)
	if err != nil {
		return fmt.Errorf("bench vnc: --rate: %w", err)
	}
	if *viewers < 1 || *duration <= 0 || *runs < 1 || *idle < 0 || *batch < 1 || *rtt <= 0 {
		return errors.New("bench vnc: --viewers, --duration, --runs, --batch and --rtt-interval must be positive, --idle-viewers not negative")
	}
	rep, err := bench.RunVNC(ctx, bench.VNCConfig{
		Server: *server, AgentServer: *agentServer, ServiceToken: *service, Secret: []byte(*secret), Org: *org,
		Viewers: *viewers, Rate: bytesPerS, Duration: *duration, Runs: *runs, PIDs: pids, IdleViewers: *idle,
		WebsockifyBin: *websockify, HopBin: *hopBin, NoHop: !*hop, Batch: *batch, RTTInterval: *rtt, NoCommands: !*commands, Progress: stderr,
	})
	if err != nil {
		return err
	}
	return printReport(stdout, rep, *asJSON)
}

// benchBaseline serves the baseline hub until interrupted.
func benchBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9090", "listen address")
	floor := fs.Bool("floor", false, "serve the floor instead: one write per delivery from the publishing request, no queues (a yardstick, not a server)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("bench baseline: %w", err)
	}
	if *floor {
		fmt.Fprintf(stdout, "floor (one write per delivery, no queues) on http://%s\n", ln.Addr())
		return baseline.ServeFloor(ctx, ln)
	}
	fmt.Fprintf(stdout, "baseline hub (gorilla chat example) on http://%s\n", ln.Addr())
	return baseline.Serve(ctx, ln)
}
