package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/models"
)

// maxAgentTunnels is how many tunnels the agent SDK serves at once on one connection.
const maxAgentTunnels = 256

// The relays a streaming run measures. TargetWebsockifyHop is websockify behind one plain TCP
// relay (socat) in front of the source: two hops, as the server's path has (control plane,
// agent), with nothing in the second but a read and a write, so it is the floor of any two-hop
// relay on the machine the bench runs on.
const (
	TargetWebsockify    = "websockify"
	TargetServer        = "server"
	TargetWebsockifyHop = "websockify+hop"
)

// VNCConfig describes a run of the streaming mode.
type VNCConfig struct {
	// Server is the base URL the viewers and the admin API calls go to; AgentServer the one the
	// bench's agent connects to (default Server: another replica's makes the run cross two).
	Server      string
	AgentServer string
	// ServiceToken creates the agent, starts the session and sends the commands; Secret (the
	// server's STREAMSPACE_JWT_SECRET) signs the viewers' tokens, operators of Org.
	ServiceToken string
	Secret       []byte
	Org          string
	// Viewers pull the stream at Rate bytes a second each (0: as fast as it comes) for
	// Duration, Runs times against each relay, alternated.
	Viewers  int
	Rate     int64
	Duration time.Duration
	Runs     int
	// PIDs are the server's processes (two for two replicas): their CPU per MB and their
	// memory per idle tunnel are reported. IdleViewers is how many idle viewers that memory is
	// measured with (0: it is not).
	PIDs        []int
	IdleViewers int
	// WebsockifyBin is the websockify program (default "websockify" from PATH).
	WebsockifyBin string
	// HopBin is the plain TCP relay of the two-hop floor (default "socat" from PATH); NoHop
	// leaves the floor out.
	HopBin string
	NoHop  bool
	// RTTInterval is how often each viewer asks for a 1×1 update (default 50ms), InputInterval
	// how often it sends an input message (default 250ms), CommandInterval how often a command
	// is sent to the agent (default 50ms), one at a time.
	RTTInterval     time.Duration
	InputInterval   time.Duration
	CommandInterval time.Duration
	// NoCommands sends the agent no commands: the server's runs then measure the relay alone,
	// as websockify's do, and report no command round trip.
	NoCommands bool
	// Batch is how many viewers connect at once (default 50); SourceIPs how many loopback
	// source addresses they are spread over (default 16).
	Batch     int
	SourceIPs int
	// Progress receives progress lines; nil means none.
	Progress io.Writer
}

func (c VNCConfig) withDefaults() VNCConfig {
	c.AgentServer = cmp.Or(c.AgentServer, c.Server)
	c.Org = cmp.Or(c.Org, "bench-org")
	c.WebsockifyBin = cmp.Or(c.WebsockifyBin, "websockify")
	c.HopBin = cmp.Or(c.HopBin, "socat")
	c.RTTInterval = cmp.Or(c.RTTInterval, 50*time.Millisecond)
	c.InputInterval = cmp.Or(c.InputInterval, 250*time.Millisecond)
	c.CommandInterval = cmp.Or(c.CommandInterval, 50*time.Millisecond)
	c.Batch = cmp.Or(c.Batch, 50)
	c.SourceIPs = cmp.Or(c.SourceIPs, 16)
	c.Runs = cmp.Or(c.Runs, 3)
	return c
}

// VNCTargetReport is what one run against one relay measured.
type VNCTargetReport struct {
	Target         string  `json:"target"`
	Viewers        int     `json:"viewers"`
	ConnectSeconds float64 `json:"connectSeconds"`
	Seconds        float64 `json:"seconds"` // the measured window
	// Per-tunnel throughput (MB = 10^6 bytes) over the window, and all tunnels together.
	TunnelMinMBps    float64 `json:"tunnelMinMBps"`
	TunnelMedianMBps float64 `json:"tunnelMedianMBps"`
	TotalMBps        float64 `json:"totalMBps"`
	// TunnelsAtRate is how many tunnels kept at least 90% of the rate asked (0 when the rate
	// is unbounded).
	TunnelsAtRate int `json:"tunnelsAtRate"`
	// The round trip of a 10-byte FramebufferUpdateRequest and its 1×1 answer.
	RoundTrips     int     `json:"roundTrips"`
	RoundTripP50Ms float64 `json:"roundTripP50Ms"`
	RoundTripP99Ms float64 `json:"roundTripP99Ms"`
	RoundTripMaxMs float64 `json:"roundTripMaxMs"`
	// Dropped is how many viewers' sockets ended before the window did.
	Dropped int `json:"dropped"`
	// CPUMsPerMB is the relay's CPU time per MB delivered: the --pid processes for the server,
	// websockify and the processes it forked for websockify.
	CPUMsPerMB float64 `json:"cpuMsPerMB"`
	// Server only: memory per idle tunnel and the command round trip on the agent, idle and
	// while the tunnels are busy (createdAt → completedAt of the server's records).
	IdleTunnels      int     `json:"idleTunnels,omitempty"`
	KiBPerIdleTunnel float64 `json:"kibPerIdleTunnel,omitempty"`
	CommandsIdle     int     `json:"commandsIdle,omitempty"`
	CommandsBusy     int     `json:"commandsBusy,omitempty"`
	CommandIdleP50Ms float64 `json:"commandIdleP50Ms,omitempty"`
	CommandIdleP99Ms float64 `json:"commandIdleP99Ms,omitempty"`
	CommandBusyP50Ms float64 `json:"commandBusyP50Ms,omitempty"`
	CommandBusyP99Ms float64 `json:"commandBusyP99Ms,omitempty"`
}

// VNCReport is every run against every relay.
type VNCReport struct {
	Viewers        int               `json:"viewers"`
	Rate           int64             `json:"rateBytesPerSecond"`
	Seconds        float64           `json:"seconds"`
	AcrossReplicas bool              `json:"acrossReplicas"`
	Websockify     []VNCTargetReport `json:"websockify"`
	Server         []VNCTargetReport `json:"server"`
	// WebsockifyHop is the two-hop floor (TargetWebsockifyHop); empty with NoHop.
	WebsockifyHop []VNCTargetReport `json:"websockifyHop,omitempty"`
}

// RunVNC runs the streaming mode: a VNCSource on loopback, websockify relaying straight to it,
// this server relaying to it through an agent the bench creates and runs in-process, and
// (unless NoHop) a second websockify relaying to it through socat; the viewers pull the stream
// through each in turn, Runs times.
func RunVNC(ctx context.Context, cfg VNCConfig) (VNCReport, error) {
	cfg = cfg.withDefaults()
	rep := VNCReport{Viewers: cfg.Viewers, Rate: cfg.Rate, Seconds: cfg.Duration.Seconds(), AcrossReplicas: cfg.AgentServer != cfg.Server}
	switch {
	case cfg.Viewers < 1 || cfg.Duration <= 0 || cfg.Runs < 1 || cfg.Rate < 0 || cfg.IdleViewers < 0:
		return rep, errors.New("bench vnc: --viewers, --duration and --runs must be positive, --rate not negative")
	case cfg.Viewers > maxAgentTunnels || cfg.IdleViewers > maxAgentTunnels:
		return rep, fmt.Errorf("bench vnc: --viewers and --idle-viewers may be at most %d: every tunnel goes through the bench's one agent, and the agent SDK serves at most that many on a connection", maxAgentTunnels)
	case cfg.ServiceToken == "":
		return rep, errors.New("bench vnc: a service token is required (--service-token or STREAMSPACE_SERVICE_TOKEN)")
	case len(cfg.Secret) == 0:
		return rep, errors.New("bench vnc: the server's JWT secret is required to sign the viewers' tokens (--jwt-secret or STREAMSPACE_JWT_SECRET)")
	}
	raiseFileLimit()
	bin, err := exec.LookPath(cfg.WebsockifyBin)
	if err != nil {
		return rep, fmt.Errorf("bench vnc: websockify not found (%v): install Debian's package websockify or name it with --websockify-bin", err)
	}
	var hopBin string
	if !cfg.NoHop {
		if hopBin, err = exec.LookPath(cfg.HopBin); err != nil {
			return rep, fmt.Errorf("bench vnc: socat not found (%v): install Debian's package socat, name it with --hop-bin, or leave the two-hop floor out with --hop=false", err)
		}
	}

	src := NewVNCSource(VNCSourceConfig{Rate: cfg.Rate})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return rep, fmt.Errorf("bench vnc: source: %w", err)
	}
	var bg sync.WaitGroup
	defer bg.Wait()
	defer src.Close()
	bg.Go(func() { _ = src.Serve(ln) })

	wsfy, err := startWebsockify(ctx, bin, ln.Addr().String())
	if err != nil {
		return rep, err
	}
	defer wsfy.stop()
	var hop, hopWsfy *relayProcess
	if !cfg.NoHop {
		if hop, err = startHop(ctx, hopBin, ln.Addr().String()); err != nil {
			return rep, err
		}
		defer hop.stop()
		if hopWsfy, err = startWebsockify(ctx, bin, hop.addr); err != nil {
			return rep, err
		}
		defer hopWsfy.stop()
	}

	side, err := setupServerSide(ctx, cfg, ln.Addr().String())
	if err != nil {
		return rep, err
	}
	defer side.stop()

	targets := []vncTarget{
		{name: TargetWebsockify, url: func(int) string { return "ws://" + wsfy.addr + "/" }, cpu: func() time.Duration { return treeCPU(wsfy.pid()) }},
		{name: TargetServer, url: side.viewerURL, cpu: func() time.Duration { return pidsCPU(cfg.PIDs) }, server: side},
	}
	if hop != nil {
		targets = append(targets, vncTarget{name: TargetWebsockifyHop, url: func(int) string { return "ws://" + hopWsfy.addr + "/" },
			cpu: func() time.Duration { return treeCPU(hopWsfy.pid()) + treeCPU(hop.pid()) }})
	}
	for i := range cfg.Runs {
		// Each run starts with another relay, so that none is always measured first.
		order := append(slices.Clone(targets[i%len(targets):]), targets[:i%len(targets)]...)
		for _, t := range order {
			r, err := runVNCTarget(ctx, cfg, t)
			if err != nil {
				return rep, fmt.Errorf("bench vnc: run %d through %s: %w", i+1, t.name, err)
			}
			switch t.name {
			case TargetServer:
				rep.Server = append(rep.Server, r)
			case TargetWebsockifyHop:
				rep.WebsockifyHop = append(rep.WebsockifyHop, r)
			default:
				rep.Websockify = append(rep.Websockify, r)
			}
		}
	}
	return rep, nil
}

// vncTarget is one relay: where viewer i connects and how its CPU time is read.
type vncTarget struct {
	name   string
	url    func(i int) string
	cpu    func() time.Duration
	server *serverSide // this server's target only
}

// runVNCTarget measures one relay once: for the server, memory per idle tunnel and the idle
// command round trip first; then the viewers stream for the duration.
func runVNCTarget(ctx context.Context, cfg VNCConfig, t vncTarget) (VNCTargetReport, error) {
	rep := VNCTargetReport{Target: t.name, Viewers: cfg.Viewers}
	if t.server != nil && len(cfg.PIDs) > 0 && cfg.IdleViewers > 0 {
		kib, err := idleTunnelMemory(ctx, cfg, t)
		if err != nil {
			return rep, err
		}
		rep.IdleTunnels, rep.KiBPerIdleTunnel = cfg.IdleViewers, kib
	}
	commands := t.server != nil && !cfg.NoCommands
	if commands {
		idle := min(cfg.Duration, 5*time.Second)
		h, n, err := t.server.commandRoundTrips(ctx, cfg.CommandInterval, func() { sleepCtx(ctx, idle) })
		if err != nil {
			return rep, err
		}
		rep.CommandsIdle, rep.CommandIdleP50Ms, rep.CommandIdleP99Ms = n, ms(h.Percentile(50)), ms(h.Percentile(99))
	}

	start := time.Now()
	viewers, err := connectViewers(ctx, cfg, t, cfg.Viewers, "viewers connected through "+t.name)
	defer func() {
		for _, v := range viewers {
			v.close()
		}
	}()
	if err != nil {
		return rep, err
	}
	rep.ConnectSeconds = time.Since(start).Seconds()
	for _, v := range viewers {
		v.start(cfg.RTTInterval, cfg.InputInterval)
	}
	// The first second (at most a quarter of the duration) is the streams' start, not counted.
	sleepCtx(ctx, min(time.Second, cfg.Duration/4))

	measure := func() {
		before := make([]viewerCounts, len(viewers))
		for i, v := range viewers {
			before[i] = v.take()
		}
		cpu0, t0 := t.cpu(), time.Now()
		sleepCtx(ctx, cfg.Duration)
		cpu1, t1 := t.cpu(), time.Now()
		rep.Seconds = t1.Sub(t0).Seconds()
		var all Histogram
		perTunnel := make([]float64, len(viewers))
		var total int64
		for i, v := range viewers {
			c := v.take()
			all.Merge(&c.hist)
			n := c.bytes - before[i].bytes
			total += n
			perTunnel[i] = float64(n) / 1e6 / rep.Seconds
			if cfg.Rate > 0 && float64(n) >= 0.9*float64(cfg.Rate)*rep.Seconds {
				rep.TunnelsAtRate++
			}
			if v.closed.Load() {
				rep.Dropped++
			}
		}
		slices.Sort(perTunnel)
		rep.TunnelMinMBps, rep.TunnelMedianMBps = perTunnel[0], perTunnel[len(perTunnel)/2]
		rep.TotalMBps = float64(total) / 1e6 / rep.Seconds
		rep.RoundTrips = int(all.Count())
		rep.RoundTripP50Ms, rep.RoundTripP99Ms, rep.RoundTripMaxMs = ms(all.Percentile(50)), ms(all.Percentile(99)), ms(all.Max())
		if total > 0 && cpu1 > cpu0 {
			rep.CPUMsPerMB = ms(cpu1-cpu0) / (float64(total) / 1e6)
		}
	}
	if !commands {
		measure()
	} else {
		h, n, err := t.server.commandRoundTrips(ctx, cfg.CommandInterval, measure)
		if err != nil {
			return rep, err
		}
		rep.CommandsBusy, rep.CommandBusyP50Ms, rep.CommandBusyP99Ms = n, ms(h.Percentile(50)), ms(h.Percentile(99))
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if rep.Dropped == len(viewers) {
		return rep, fmt.Errorf("every viewer's socket ended during the run: %v", viewers[0].readErr())
	}
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// readErr is why the viewer's reader ended.
func (v *vncViewer) readErr() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// idleTunnelMemory opens cfg.IdleViewers viewers through the server that complete the
// handshake and then do nothing, and returns the growth of the server's resident set per
// viewer, in KiB.
func idleTunnelMemory(ctx context.Context, cfg VNCConfig, t vncTarget) (float64, error) {
	mem := memorySampler{pids: cfg.PIDs}
	before := mem.settled(5 * time.Second)
	viewers, err := connectViewers(ctx, cfg, t, cfg.IdleViewers, "idle viewers connected")
	defer func() {
		for _, v := range viewers {
			v.close()
		}
	}()
	if err != nil {
		return 0, err
	}
	after := mem.settled(10 * time.Second)
	return float64(after-before) / float64(len(viewers)), nil
}

// connectViewers opens n viewers of the target in parallel batches, with a progress line.
func connectViewers(ctx context.Context, cfg VNCConfig, t vncTarget, n int, what string) ([]*vncViewer, error) {
	viewers := make([]*vncViewer, n)
	var (
		mu       sync.Mutex
		firstErr error
	)
	for from := 0; from < n && firstErr == nil && ctx.Err() == nil; from += cfg.Batch {
		var wg sync.WaitGroup
		for i := from; i < min(from+cfg.Batch, n); i++ {
			wg.Go(func() {
				u := t.url(i)
				var local net.Addr
				if parsed, err := url.Parse(u); err == nil && isLoopback(parsed.Hostname()) {
					local = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%cfg.SourceIPs))}
				}
				v, err := dialVNCViewer(ctx, u, local)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					firstErr = cmp.Or(firstErr, fmt.Errorf("viewer %d through %s: %w", i, t.name, err))
					return
				}
				viewers[i] = v
			})
		}
		wg.Wait()
		progress(cfg.Progress, what, min(from+cfg.Batch, n), n)
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	out := slices.DeleteFunc(viewers, func(v *vncViewer) bool { return v == nil })
	return out, cmp.Or(firstErr, ctx.Err())
}

// relayProcess is a relay the bench started: websockify, or socat for the two-hop floor.
type relayProcess struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func (w *relayProcess) pid() int { return w.cmd.Process.Pid }

// stop kills the relay and the processes it forked, and waits for it.
func (w *relayProcess) stop() {
	stopGroup(w.cmd)
	<-w.done
}

// startWebsockify starts bin relaying a free loopback port to target and waits until it
// accepts connections.
func startWebsockify(ctx context.Context, bin, target string) (*relayProcess, error) {
	return startRelay(ctx, "websockify", func(addr string) *exec.Cmd { return exec.Command(bin, addr, target) })
}

// startHop starts socat relaying a free loopback port to target as plain TCP, a process per
// connection (fork), in chunks of 64 KiB as the server's tunnels carry and with Nagle's
// algorithm off on both sides as the other relays have it, and waits until it accepts
// connections.
func startHop(ctx context.Context, bin, target string) (*relayProcess, error) {
	return startRelay(ctx, "socat", func(addr string) *exec.Cmd {
		host, port, _ := net.SplitHostPort(addr)
		return exec.Command(bin, "-b", "65536", "TCP-LISTEN:"+port+",bind="+host+",reuseaddr,fork,nodelay", "TCP:"+target+",nodelay")
	})
}

// startRelay starts the command made for a free loopback address and waits until it accepts
// connections there.
func startRelay(ctx context.Context, name string, command func(addr string) *exec.Cmd) (*relayProcess, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench vnc: %s: %w", name, err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cmd := command(addr)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench vnc: start %s: %w", name, err)
	}
	w := &relayProcess{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(w.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			return w, nil
		}
		select {
		case <-w.done:
			return nil, fmt.Errorf("bench vnc: %s exited: %s", name, bytes.TrimSpace(out.Bytes()))
		case <-ctx.Done():
			w.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			w.stop()
			return nil, fmt.Errorf("bench vnc: %s did not listen on %s within 15s: %s", name, addr, bytes.TrimSpace(out.Bytes()))
		}
	}
}

// syncBuffer keeps the first 4 KiB a process writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p[:min(len(p), 4096-len(b.buf))]...)
	return len(p), nil
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.buf)
}

// serverSide is what the bench set up on the server: an agent (created through the admin
// API, run in-process with the agent SDK, relaying every tunnel to the source) and a running
// session placed on it.
type serverSide struct {
	cfg     VNCConfig
	api     *apiClient
	agentID string
	session string
	wsBase  string
	now     time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func (s *serverSide) stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	s.api.http.CloseIdleConnections()
}

// viewerURL is viewer i's socket: an operator of the organization of its own, so that no
// per-user limit is what a run measures.
func (s *serverSide) viewerURL(i int) string {
	tok, _ := auth.Mint(s.cfg.Secret, auth.Identity{UserID: "bench-viewer-" + strconv.Itoa(i), OrgID: s.cfg.Org, Role: auth.RoleOperator},
		time.Duration(s.cfg.Runs+2)*(2*s.cfg.Duration+time.Minute)+time.Hour, s.now)
	return s.wsBase + "/api/v1/vnc/" + url.PathEscape(s.session) + "?token=" + url.QueryEscape(tok)
}

// setupServerSide creates the agent, connects it to cfg.AgentServer, starts a session on it and
// waits until the server would let a viewer in.
func setupServerSide(ctx context.Context, cfg VNCConfig, source string) (*serverSide, error) {
	base, err := url.Parse(cfg.Server)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("bench vnc: --server %q is not a URL", cfg.Server)
	}
	if _, err := auth.Mint(cfg.Secret, auth.Identity{UserID: "x", OrgID: cfg.Org}, time.Minute, time.Now()); err != nil {
		return nil, fmt.Errorf("bench vnc: --jwt-secret: %w", err)
	}
	ws := *base
	ws.Scheme = strings.Replace(base.Scheme, "http", "ws", 1)
	s := &serverSide{
		cfg: cfg, agentID: "bench-vnc-" + randomHex(4), wsBase: strings.TrimSuffix(ws.String(), "/"), now: time.Now(),
		api: &apiClient{base: base, token: cfg.ServiceToken, http: &http.Client{
			Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8},
		}},
	}
	key, err := s.api.createAgent(ctx, s.agentID)
	if err != nil {
		return nil, fmt.Errorf("bench vnc: create the agent through %s: %w", cfg.Server, err)
	}
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", source)
	}
	a, err := agentclient.New(agentclient.Config{
		ServerURL: cfg.AgentServer, AgentID: s.agentID, APIKey: key, Platform: models.PlatformDocker,
		Tunnels: agentclient.ProxyTo(dial), MaxConcurrent: 16, Logger: agentLogger(cfg.Progress),
	})
	if err != nil {
		return nil, fmt.Errorf("bench vnc: agent: %w", err)
	}
	a.Handle(benchAction, func(context.Context, agentclient.Command) (map[string]any, error) {
		return map[string]any{"ok": true}, nil
	})
	a.Handle(models.ActionStartSession, func(ctx context.Context, cmd agentclient.Command) (map[string]any, error) {
		id, _ := cmd.Payload["sessionId"].(string)
		if err := a.OpenTunnel(ctx, id); err != nil {
			return nil, err
		}
		err := a.ReportStatus(ctx, models.StatusMessage{SessionID: id, State: models.SessionStateRunning, VNCReady: true, VNCPort: 5900})
		return map[string]any{"sessionId": id}, err
	})
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Go(func() { _ = a.Run(runCtx) })
	if s.session, err = s.api.startSession(ctx, s.agentID, cfg.Org); err != nil {
		s.stop()
		return nil, fmt.Errorf("bench vnc: start a session on the agent: %w", err)
	}
	if err := s.awaitViewable(ctx); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// agentLogger shows the bench agent's warnings with the progress lines: a tunnel the agent
// refuses is what a viewer's error then names.
func agentLogger(w io.Writer) *slog.Logger {
	if w == nil {
		w = io.Discard
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// awaitViewable asks for the viewer socket without upgrading until the server answers 400
// upgrade_required: every check before the upgrade passed (the session is running, its agent
// connected). Any other answer that lasts 30 s is the error.
func (s *serverSide) awaitViewable(ctx context.Context) error {
	u := strings.Replace(s.viewerURL(0), "ws", "http", 1)
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := s.api.http.Do(req)
		if err != nil {
			last = err.Error()
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusBadRequest && bytes.Contains(body, []byte("upgrade_required")) {
				return nil
			}
			last = resp.Status + ": " + string(bytes.TrimSpace(body))
		}
		sleepCtx(ctx, 100*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if strings.Contains(last, "agent_elsewhere") {
		last += " (--server relays to the replica holding the agent only over a peer link: start the replicas with --peer-addr)"
	}
	return fmt.Errorf("bench vnc: the session's viewer socket is not ready after 30s: %s", last)
}

// commandRoundTrips sends a command to the agent every interval, one at a time, while during
// runs, then reads each back and returns the distribution of createdAt → completedAt.
func (s *serverSide) commandRoundTrips(ctx context.Context, interval time.Duration, during func()) (*Histogram, int, error) {
	stop := make(chan struct{})
	var (
		ids  []string
		serr error
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			id, err := s.api.command(ctx, s.agentID, time.Now().UnixNano())
			if err != nil {
				serr = fmt.Errorf("submit a command to the agent: %w", err)
				return
			}
			ids = append(ids, id)
			select {
			case <-t.C:
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
		}
	})
	during()
	close(stop)
	wg.Wait()
	if serr != nil {
		return nil, 0, serr
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		h, missing, err := roundTrips(ctx, s.api, ids, 8)
		if err != nil {
			return nil, 0, fmt.Errorf("read the commands back: %w", err)
		}
		if missing == 0 {
			return h, len(ids), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, 0, fmt.Errorf("%d of %d commands to the agent not completed within 15s", missing, len(ids))
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

// startSession submits start_session for a bench user of org to the agent and returns the
// session's id.
func (c *apiClient) startSession(ctx context.Context, agentID, org string) (string, error) {
	var reply struct {
		SessionID string `json:"sessionId"`
	}
	body := map[string]any{"action": models.ActionStartSession, "payload": map[string]any{"user": "bench-owner", "orgId": org}}
	err := c.do(ctx, http.MethodPost, "/api/v1/admin/agents/"+url.PathEscape(agentID)+"/command", body, http.StatusAccepted, &reply)
	if err == nil && reply.SessionID == "" {
		err = errors.New("the server answered without a session id")
	}
	return reply.SessionID, err
}

// Table renders the medians of each figure through each relay, and the server's ratio to
// websockify and, when it was measured, to the two-hop floor.
func (r VNCReport) Table() string {
	if len(r.Server) == 0 || len(r.Websockify) == 0 {
		return "no runs\n"
	}
	var b strings.Builder
	where := "one replica"
	if r.AcrossReplicas {
		where = "across two replicas"
	}
	rate := "as fast as they go"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%.2f MB/s each", float64(r.Rate)/1e6)
	}
	hop := len(r.WebsockifyHop) > 0
	fmt.Fprintf(&b, "%d viewers, %s, %.0fs, %s; medians of %d runs\n", r.Viewers, rate, r.Seconds, where, len(r.Server))
	fmt.Fprintf(&b, "%-36s %12s %12s %8s", "", "websockify", "server", "ratio")
	if hop {
		fmt.Fprintf(&b, " %15s %8s", TargetWebsockifyHop, "ratio")
	}
	b.WriteString("\n")
	med := func(rs []VNCTargetReport, f func(VNCTargetReport) float64) float64 {
		v := make([]float64, len(rs))
		for i, x := range rs {
			v[i] = f(x)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	ratio := func(num, den float64) string {
		if den == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", num/den)
	}
	row := func(name string, f func(VNCTargetReport) float64) {
		w, s := med(r.Websockify, f), med(r.Server, f)
		fmt.Fprintf(&b, "%-36s %12.3f %12.3f %8s", name, w, s, ratio(s, w))
		if hop {
			h := med(r.WebsockifyHop, f)
			fmt.Fprintf(&b, " %15.3f %8s", h, ratio(s, h))
		}
		b.WriteString("\n")
	}
	row("per-tunnel MB/s, min", func(x VNCTargetReport) float64 { return x.TunnelMinMBps })
	row("per-tunnel MB/s, median", func(x VNCTargetReport) float64 { return x.TunnelMedianMBps })
	row("total MB/s", func(x VNCTargetReport) float64 { return x.TotalMBps })
	if r.Rate > 0 {
		row("tunnels at >= 90% of the rate", func(x VNCTargetReport) float64 { return float64(x.TunnelsAtRate) })
	}
	row("10-byte round trip p50 ms", func(x VNCTargetReport) float64 { return x.RoundTripP50Ms })
	row("10-byte round trip p99 ms", func(x VNCTargetReport) float64 { return x.RoundTripP99Ms })
	row("10-byte round trip max ms", func(x VNCTargetReport) float64 { return x.RoundTripMaxMs })
	row("relay CPU ms per MB", func(x VNCTargetReport) float64 { return x.CPUMsPerMB })
	row("viewers dropped", func(x VNCTargetReport) float64 { return float64(x.Dropped) })
	p99 := func(x VNCTargetReport) float64 { return x.RoundTripP99Ms }
	fmt.Fprintf(&b, "added p99 round trip over websockify   %.3f ms\n", med(r.Server, p99)-med(r.Websockify, p99))
	if hop {
		fmt.Fprintf(&b, "added p99 round trip over %s %.3f ms\n", TargetWebsockifyHop, med(r.Server, p99)-med(r.WebsockifyHop, p99))
	}
	if first := r.Server[0]; first.IdleTunnels > 0 {
		fmt.Fprintf(&b, "server KiB per idle tunnel           %.1f (run 1, %d idle viewers; median of runs %.1f)\n",
			first.KiBPerIdleTunnel, first.IdleTunnels, med(r.Server, func(x VNCTargetReport) float64 { return x.KiBPerIdleTunnel }))
	}
	idle50, idle99 := med(r.Server, func(x VNCTargetReport) float64 { return x.CommandIdleP50Ms }), med(r.Server, func(x VNCTargetReport) float64 { return x.CommandIdleP99Ms })
	busy50, busy99 := med(r.Server, func(x VNCTargetReport) float64 { return x.CommandBusyP50Ms }), med(r.Server, func(x VNCTargetReport) float64 { return x.CommandBusyP99Ms })
	if idle99+busy99 > 0 { // runs without commands (NoCommands) have none to show
		fmt.Fprintf(&b, "command round trip p50 idle / busy   %.2f / %.2f ms (%s)\n", idle50, busy50, ratio(busy50, idle50))
		fmt.Fprintf(&b, "command round trip p99 idle / busy   %.2f / %.2f ms (%s)\n", idle99, busy99, ratio(busy99, idle99))
	}
	return b.String()
}

// ParseByteRate reads a rate in bytes a second: a number with an optional unit, B, KB, MB, GB
// (powers of 1000) or KiB, MiB, GiB (powers of 1024), and an optional "/s": "1MB", "512KiB/s",
// "250000". 0 means as fast as the connection takes it.
func ParseByteRate(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	units := []struct {
		suffix string
		factor float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	factor := 1.0
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) { // longer units first
			t, factor = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.factor
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*factor > 1<<40 {
		return 0, fmt.Errorf("rate %q: want bytes a second, such as 1MB, 512KiB or 250000", s)
	}
	return int64(v * factor), nil
}
