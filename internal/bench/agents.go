package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/models"
)

// benchAction is the command the agents mode sends: the agents complete it at once, so what
// is measured is the control plane's path (accepted, stored, delivered, acknowledged,
// completed in the database), not an agent's work.
const benchAction = "bench_noop"

// AgentsConfig describes one run of the agents mode.
type AgentsConfig struct {
	// Server is the server's base URL; ServiceToken creates the agents and sends the commands.
	Server       string
	ServiceToken string
	// Agents connect through the reference agent SDK (agentclient) and heartbeat every
	// Heartbeat (default 30s).
	Agents    int
	Heartbeat time.Duration
	// Commands are submitted for Duration by Workers concurrent submitters (default 64),
	// round-robin over the agents, at most Rate a second (0: as fast as they go).
	Duration time.Duration
	Rate     float64
	Workers  int
	// Drain bounds the wait for the last completions after submitting stops (default 30s).
	Drain time.Duration
	// Batch is how many agents connect at once (default 200).
	Batch int
	// Progress receives progress lines; nil means none.
	Progress io.Writer
}

func (c AgentsConfig) withDefaults() AgentsConfig {
	if c.Heartbeat <= 0 {
		c.Heartbeat = agentclient.DefaultHeartbeatInterval
	}
	if c.Workers <= 0 {
		c.Workers = 64
	}
	if c.Drain <= 0 {
		c.Drain = 30 * time.Second
	}
	if c.Batch <= 0 {
		c.Batch = 200
	}
	return c
}

// AgentsReport is what one agents run measured.
type AgentsReport struct {
	Agents          int     `json:"agents"`
	Connected       int     `json:"connected"`
	ConnectSeconds  float64 `json:"connectSeconds"`
	Submitted       int     `json:"submitted"`
	SubmitErrors    int     `json:"submitErrors"`
	Completed       int     `json:"completed"`
	CommandsPerS    float64 `json:"commandsPerSecond"`
	SubmitP50Ms     float64 `json:"submitP50Ms"`
	SubmitP99Ms     float64 `json:"submitP99Ms"`
	DeliveryP50Ms   float64 `json:"deliveryP50Ms"`
	DeliveryP99Ms   float64 `json:"deliveryP99Ms"`
	RoundTripP50Ms  float64 `json:"roundTripP50Ms"`
	RoundTripP95Ms  float64 `json:"roundTripP95Ms"`
	RoundTripP99Ms  float64 `json:"roundTripP99Ms"`
	RoundTripMaxMs  float64 `json:"roundTripMaxMs"`
	NotCompleted    int     `json:"notCompleted"`
	Heartbeats      float64 `json:"heartbeats"`
	HeartbeatWrites float64 `json:"heartbeatWrites"`
	Seconds         float64 `json:"seconds"`
}

// RunAgents creates the agents through the admin API, connects them, submits commands for the
// duration and waits until the server has completed every accepted one in its database.
// commands/s is completions (streamspace_agent_commands_total{state="completed"}) over the time
// from the first submission to the last completion; the round trip of each command is read
// back from the server's own record (createdAt to completedAt).
func RunAgents(ctx context.Context, cfg AgentsConfig) (AgentsReport, error) {
	cfg = cfg.withDefaults()
	raiseFileLimit()
	base, err := url.Parse(cfg.Server)
	if err != nil {
		return AgentsReport{}, fmt.Errorf("bench: server %q: %w", cfg.Server, err)
	}
	api := &apiClient{base: base, token: cfg.ServiceToken, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Workers, MaxConnsPerHost: cfg.Workers + 4},
	}}
	rep := AgentsReport{Agents: cfg.Agents}
	runCtx, stopAgents := context.WithCancel(ctx)
	fleet := &agentFleet{}
	defer fleet.stop(stopAgents)

	initial, err := api.metrics(ctx)
	if err != nil {
		return rep, err
	}
	start := time.Now()
	if err := fleet.connect(runCtx, cfg, api); err != nil {
		return rep, err
	}
	rep.ConnectSeconds = time.Since(start).Seconds()
	rep.Connected = len(fleet.ids)
	// Each agent's first command proved it connected; the count starts once all are completed.
	before, err := api.awaitCompleted(ctx, initial.completed, cfg.Agents, 30*time.Second)
	if err != nil {
		return rep, err
	}
	sub := submitAll(ctx, cfg, api, fleet)
	rep.Submitted, rep.SubmitErrors = len(sub.ids), sub.errors
	// Wait for the server to complete every accepted command.
	deadline := time.Now().Add(cfg.Drain)
	var completed float64
	last := sub.start
	for {
		m, err := api.metrics(ctx)
		if err != nil {
			return rep, err
		}
		now := time.Now()
		if done := m.completed - before.completed; done > completed {
			completed, last = done, now
		}
		if int(completed) >= rep.Submitted || now.After(deadline) || ctx.Err() != nil {
			rep.Heartbeats = m.heartbeats - before.heartbeats
			rep.HeartbeatWrites = m.flushes - before.flushes
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rep.Completed = int(completed)
	rep.Seconds = last.Sub(sub.start).Seconds()
	if rep.Seconds > 0 {
		rep.CommandsPerS = completed / rep.Seconds
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rep.SubmitP50Ms, rep.SubmitP99Ms = ms(sub.latency.Percentile(50)), ms(sub.latency.Percentile(99))
	delivery := fleet.delivery()
	rep.DeliveryP50Ms, rep.DeliveryP99Ms = ms(delivery.Percentile(50)), ms(delivery.Percentile(99))
	rt, missing, err := roundTrips(ctx, api, sub.ids, cfg.Workers)
	if err != nil {
		return rep, err
	}
	rep.NotCompleted = missing
	rep.RoundTripP50Ms, rep.RoundTripP95Ms = ms(rt.Percentile(50)), ms(rt.Percentile(95))
	rep.RoundTripP99Ms, rep.RoundTripMaxMs = ms(rt.Percentile(99)), ms(rt.Max())
	return rep, nil
}

// agentFleet is the bench's agents, each an agentclient.Agent completing bench commands.
type agentFleet struct {
	ids  []string
	wg   sync.WaitGroup
	mu   sync.Mutex
	hist Histogram // submit → handler, from the submit time the payload carries
}

func (f *agentFleet) connect(ctx context.Context, cfg AgentsConfig, api *apiClient) error {
	prefix := "bench-" + randomHex(4) + "-"
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	connected := make(chan struct{}, cfg.Agents)
	for from := 0; from < cfg.Agents; from += cfg.Batch {
		var wg sync.WaitGroup
		errs := make(chan error, cfg.Batch)
		for i := from; i < min(from+cfg.Batch, cfg.Agents); i++ {
			id := fmt.Sprintf("%s%05d", prefix, i)
			f.ids = append(f.ids, id)
			wg.Go(func() {
				key, err := api.createAgent(ctx, id)
				if err != nil {
					errs <- err
					return
				}
				a, err := agentclient.New(agentclient.Config{
					ServerURL: cfg.Server, AgentID: id, APIKey: key, Platform: models.PlatformDocker,
					HeartbeatInterval: cfg.Heartbeat, MaxConcurrent: 64, Logger: quiet,
				})
				if err != nil {
					errs <- err
					return
				}
				var once sync.Once
				a.Handle(benchAction, func(_ context.Context, cmd agentclient.Command) (map[string]any, error) {
					once.Do(func() { connected <- struct{}{} })
					if sent, ok := cmd.Payload["sent"].(float64); ok && sent > 0 {
						f.record(time.Duration(time.Now().UnixNano() - int64(sent)))
					}
					return map[string]any{"ok": true}, nil
				})
				f.wg.Go(func() { _ = a.Run(ctx) })
				// A first command proves the agent is connected and served.
				if _, err := api.command(ctx, id, 0); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return fmt.Errorf("bench: agents: %w", err)
		}
		progress(cfg.Progress, "agents created", min(from+cfg.Batch, cfg.Agents), cfg.Agents)
	}
	for n := 0; n < cfg.Agents; n++ {
		select {
		case <-connected:
		case <-time.After(60 * time.Second):
			return fmt.Errorf("bench: agents: only %d of %d connected within 60s", n, cfg.Agents)
		case <-ctx.Done():
			return ctx.Err()
		}
		if (n+1)%cfg.Batch == 0 || n+1 == cfg.Agents {
			progress(cfg.Progress, "agents connected", n+1, cfg.Agents)
		}
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	f.mu.Lock()
	f.hist = Histogram{} // the warm-up commands do not count
	f.mu.Unlock()
	return nil
}

func (f *agentFleet) record(d time.Duration) {
	f.mu.Lock()
	f.hist.Record(d)
	f.mu.Unlock()
}

func (f *agentFleet) delivery() *Histogram {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.hist
	return &h
}

func (f *agentFleet) stop(cancel context.CancelFunc) {
	cancel()
	f.wg.Wait()
}

// submitted is what the submitters did.
type submitted struct {
	start   time.Time
	ids     []string
	errors  int
	latency Histogram
}

// submitAll sends commands for the duration, from cfg.Workers goroutines.
func submitAll(ctx context.Context, cfg AgentsConfig, api *apiClient, fleet *agentFleet) submitted {
	var (
		mu    sync.Mutex
		out   = submitted{start: time.Now()}
		next  atomic.Int64
		ticks <-chan time.Time
	)
	if cfg.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
		defer t.Stop()
		ticks = t.C
	}
	stop := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				if ticks != nil {
					select {
					case <-ticks:
					case <-ctx.Done():
						return
					}
				}
				n := next.Add(1)
				agent := fleet.ids[int(n)%len(fleet.ids)]
				t0 := time.Now()
				id, err := api.command(ctx, agent, t0.UnixNano())
				took := time.Since(t0)
				mu.Lock()
				if err != nil {
					out.errors++
				} else {
					out.ids = append(out.ids, id)
					out.latency.Record(took)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// roundTrips reads each command back and returns the distribution of createdAt → completedAt,
// and how many are not completed.
func roundTrips(ctx context.Context, api *apiClient, ids []string, workers int) (*Histogram, int, error) {
	var (
		mu      sync.Mutex
		hist    Histogram
		missing int
		first   error
		next    atomic.Int64
		wg      sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				cmd, err := api.getCommand(ctx, ids[i])
				mu.Lock()
				switch {
				case err != nil:
					first = cmp.Or(first, err)
				case cmd.Status != models.CommandStatusCompleted || cmd.CompletedAt == nil:
					missing++
				default:
					hist.Record(cmd.CompletedAt.Sub(cmd.CreatedAt))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return &hist, missing, first
}

// apiClient calls the server's admin API with the service token.
type apiClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

func (c *apiClient) do(ctx context.Context, method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.JoinPath(path).String(), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func (c *apiClient) createAgent(ctx context.Context, id string) (string, error) {
	var reply struct {
		APIKey string `json:"apiKey"`
	}
	err := c.do(ctx, http.MethodPost, "/api/v1/admin/agents",
		models.AgentRegistration{AgentID: id, Platform: models.PlatformDocker}, http.StatusCreated, &reply)
	if err == nil && reply.APIKey == "" {
		err = errors.New("the server created the agent without a key")
	}
	return reply.APIKey, err
}

func (c *apiClient) command(ctx context.Context, agentID string, sent int64) (string, error) {
	var reply struct {
		CommandID string `json:"commandId"`
	}
	body := map[string]any{"action": benchAction, "payload": map[string]any{"sent": sent}}
	err := c.do(ctx, http.MethodPost, "/api/v1/admin/agents/"+url.PathEscape(agentID)+"/command", body, http.StatusAccepted, &reply)
	return reply.CommandID, err
}

type commandRecord struct {
	Status      string     `json:"status"`
	CreatedAt   time.Time  `json:"createdAt"`
	CompletedAt *time.Time `json:"completedAt"`
}

func (c *apiClient) getCommand(ctx context.Context, id string) (commandRecord, error) {
	var rec commandRecord
	err := c.do(ctx, http.MethodGet, "/api/v1/admin/commands/"+url.PathEscape(id), nil, http.StatusOK, &rec)
	return rec, err
}

// awaitCompleted polls /metrics until n commands more than from are completed.
func (c *apiClient) awaitCompleted(ctx context.Context, from float64, n int, within time.Duration) (serverCounters, error) {
	deadline := time.Now().Add(within)
	for {
		m, err := c.metrics(ctx)
		if err != nil || m.completed-from >= float64(n) {
			return m, err
		}
		if time.Now().After(deadline) {
			return m, fmt.Errorf("bench: agents: %.0f of %d warm-up commands completed within %v", m.completed-from, n, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serverCounters are the counters the agents mode reads from /metrics.
type serverCounters struct{ completed, heartbeats, flushes float64 }

func (c *apiClient) metrics(ctx context.Context) (serverCounters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.JoinPath("/metrics").String(), nil)
	if err != nil {
		return serverCounters{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return serverCounters{}, fmt.Errorf("bench: read /metrics: %w", err)
	}
	defer resp.Body.Close()
	var out serverCounters
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch name {
		case `streamspace_agent_commands_total{state="completed"}`:
			out.completed = v
		case "streamspace_agent_heartbeats_total":
			out.heartbeats = v
		case "streamspace_agent_heartbeat_flushes_total":
			out.flushes = v
		}
	}
	return out, sc.Err()
}

// Table renders the report for people.
func (r AgentsReport) Table() string {
	var b strings.Builder
	row := func(k, format string, v ...any) { fmt.Fprintf(&b, "%-34s "+format+"\n", append([]any{k}, v...)...) }
	row("agents connected / asked", "%d / %d (in %.1fs)", r.Connected, r.Agents, r.ConnectSeconds)
	row("commands accepted (failed)", "%d (%d)", r.Submitted, r.SubmitErrors)
	row("completed in the database", "%d (%d not completed)", r.Completed, r.NotCompleted)
	row("commands per second", "%.0f (over %.1fs)", r.CommandsPerS, r.Seconds)
	row("submit (HTTP 202) p50 / p99", "%.2f / %.2f ms", r.SubmitP50Ms, r.SubmitP99Ms)
	row("submit → agent p50 / p99", "%.2f / %.2f ms", r.DeliveryP50Ms, r.DeliveryP99Ms)
	row("accepted → completed p50/p95/p99/max", "%.2f / %.2f / %.2f / %.2f ms", r.RoundTripP50Ms, r.RoundTripP95Ms, r.RoundTripP99Ms, r.RoundTripMaxMs)
	row("heartbeats (database writes)", "%.0f (%.0f)", r.Heartbeats, r.HeartbeatWrites)
	return b.String()
}

// progress draws a progress bar line.
func progress(w io.Writer, what string, done, total int) {
	if w == nil || total == 0 {
		return
	}
	bar := strings.Repeat("#", 30*done/total) + strings.Repeat("-", 30-30*done/total)
	fmt.Fprintf(w, "\r[%s] %s %d/%d", bar, what, done, total)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
