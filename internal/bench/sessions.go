// Package bench is the load generator behind `streamspace-realtime bench`: it connects many
// browser clients to a server (this project's, or the baseline hub), publishes broadcasts at a
// fixed rate through the publish API, and reports what arrived, how late, and what the server
// spent doing it. Every figure is measured end to end over real sockets.
package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// SessionsConfig describes one run of the sessions mode.
type SessionsConfig struct {
	// Server is the server's base URL (http://host:port).
	Server string
	// Token returns the browser token of client i ("" for a server without authentication).
	Token func(i int) string
	// ServiceToken authorizes the broadcasts.
	ServiceToken string
	// Org is the organization every client belongs to and every broadcast goes to.
	Org string
	// Clients, Rate (broadcasts per second) and Duration shape the run.
	Clients  int
	Rate     float64
	Duration time.Duration
	// Batch is how many clients connect at once (default 200); SourceIPs how many loopback
	// source addresses the connections are spread over (default 16), so that a large run
	// never runs out of ephemeral ports.
	Batch     int
	SourceIPs int
	// Drain is how long to wait for the last broadcasts after publishing stops (default 2s).
	Drain time.Duration
	// Publishers is how many broadcasts may be in flight at once (default 1). A server that
	// answers a broadcast only once it has handed it out would otherwise pace the run itself.
	Publishers int
	// PID, when set, is the server process whose memory and CPU are reported (Linux /proc).
	PID int
	// Progress receives a line as connections are made; nil means none.
	Progress io.Writer
}

func (c SessionsConfig) withDefaults() SessionsConfig {
	if c.Batch <= 0 {
		c.Batch = 200
	}
	if c.SourceIPs <= 0 {
		c.SourceIPs = 16
	}
	if c.Drain <= 0 {
		c.Drain = 2 * time.Second
	}
	if c.Publishers <= 0 {
		c.Publishers = 1
	}
	if c.Token == nil {
		c.Token = func(int) string { return "" }
	}
	return c
}

// Report is what one run measured.
type Report struct {
	Clients         int     `json:"clients"`
	Connected       int     `json:"connected"`
	Dropped         int     `json:"droppedClients"`
	Published       int     `json:"published"`
	PublishRate     float64 `json:"publishRate"` // broadcasts accepted per second
	PublishErrors   int     `json:"publishErrors"`
	Expected        uint64  `json:"expected"`
	Delivered       uint64  `json:"delivered"`
	Ratio           float64 `json:"deliveryRatio"`
	Lost            uint64  `json:"lost"`
	OutOfOrder      uint64  `json:"outOfOrder"`
	DeliveriesPerS  float64 `json:"deliveriesPerSecond"`
	LatencyP50Ms    float64 `json:"latencyP50Ms"`
	LatencyP95Ms    float64 `json:"latencyP95Ms"`
	LatencyP99Ms    float64 `json:"latencyP99Ms"`
	LatencyMaxMs    float64 `json:"latencyMaxMs"`
	ConnectSeconds  float64 `json:"connectSeconds"`
	ServerRSSIdleKB int64   `json:"serverRssIdleKiB,omitempty"`
	ServerRSSConnKB int64   `json:"serverRssConnectedKiB,omitempty"`
	ServerRSSPeakKB int64   `json:"serverRssPeakKiB,omitempty"`
	KiBPerIdleConn  float64 `json:"kibPerIdleConnection,omitempty"`
	CPUMicrosPerDel float64 `json:"serverCpuMicrosPerDelivery,omitempty"`
	// LiveHeapIdleKB and LiveHeapConnKB are the target's live heap (go_gc_heap_live_bytes on
	// its /metrics) before connecting and once connected, and LiveHeapKiBPerConn their
	// difference per connection: unlike RSS it leaves out memory freed but kept. It is the heap
	// the target's last GC marked, so it lags whatever was allocated since that GC. 0: the
	// target's /metrics could not be read, has no live heap, or its first GC has yet to run.
	LiveHeapIdleKB     int64   `json:"liveHeapIdleKiB,omitempty"`
	LiveHeapConnKB     int64   `json:"liveHeapConnectedKiB,omitempty"`
	LiveHeapKiBPerConn float64 `json:"liveHeapKiBPerConnection,omitempty"`
}

// benchMessage is the body of every broadcast: a sequence number unique in the run, the
// publisher and its own sequence number (order is checked per publisher: concurrent
// publishers' messages may legitimately cross), and the send time.
type benchMessage struct {
	Type string `json:"type"`
	Seq  int64  `json:"seq"`
	Pub  int    `json:"pub"`
	PSeq int64  `json:"pseq"`
	Sent int64  `json:"sent"`
}

// receiver is one client's reading side. Its counts cover the current step of a run; take
// hands them over and starts the next.
type receiver struct {
	conn   *websocket.Conn
	closed atomic.Bool
	done   chan struct{}

	mu        sync.Mutex
	hist      Histogram
	delivered uint64
	outOfOrd  uint64
	lastPSeq  []int64  // per publisher
	seen      []uint64 // a bit per sequence number received
}

// counts is what a receiver saw in one step.
type counts struct {
	hist      Histogram
	delivered uint64
	outOfOrd  uint64
}

func (r *receiver) take() counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := counts{hist: r.hist, delivered: r.delivered, outOfOrd: r.outOfOrd}
	r.hist, r.delivered, r.outOfOrd = Histogram{}, 0, 0
	return c
}

// RunSessions connects the clients, publishes for the duration, waits for the last messages
// and reports. It raises the open-file limit first.
func RunSessions(ctx context.Context, cfg SessionsConfig) (Report, error) {
	cfg = cfg.withDefaults()
	run, err := connectRun(ctx, cfg)
	defer run.close()
	if err != nil {
		return run.rep, err
	}
	return run.step(ctx, cfg.Rate, 0), nil
}

// sessionsRun is a set of connected clients, measured step by step.
type sessionsRun struct {
	cfg       SessionsConfig
	base      *url.URL
	receivers []*receiver
	mem       memorySampler
	rep       Report // what every step shares: the connection figures
	seq       publishSeq
	dropped   int
}

// connectRun connects the clients and reads the server's memory before and after.
func connectRun(ctx context.Context, cfg SessionsConfig) (*sessionsRun, error) {
	raiseFileLimit()
	run := &sessionsRun{cfg: cfg, rep: Report{Clients: cfg.Clients}}
	base, err := url.Parse(cfg.Server)
	if err != nil {
		return run, fmt.Errorf("bench: server %q: %w", cfg.Server, err)
	}
	run.base = base
	if cfg.PID > 0 {
		run.mem.pid = cfg.PID
		run.rep.ServerRSSIdleKB = run.mem.sample()
	}
	idleHeap, heapExported := liveHeapKiB(ctx, base)
	run.rep.LiveHeapIdleKB = idleHeap
	start := time.Now()
	run.receivers, err = connectAll(ctx, cfg, base)
	run.rep.ConnectSeconds = time.Since(start).Seconds()
	if err != nil {
		return run, err
	}
	run.rep.Connected = len(run.receivers)
	if cfg.PID > 0 {
		run.rep.ServerRSSConnKB = run.mem.settled(10 * time.Second)
		if run.rep.Connected > 0 {
			run.rep.KiBPerIdleConn = float64(run.rep.ServerRSSConnKB-run.rep.ServerRSSIdleKB) / float64(run.rep.Connected)
		}
	}
	// After the settle: by then the target has finished with the handshakes. An idle figure of
	// 0 (no GC had run) makes the per-connection figure an upper bound, by the idle heap over N.
	if heapExported {
		run.rep.LiveHeapConnKB, _ = liveHeapKiB(ctx, base)
		if run.rep.LiveHeapConnKB > 0 && run.rep.Connected > 0 {
			run.rep.LiveHeapKiBPerConn = float64(run.rep.LiveHeapConnKB-run.rep.LiveHeapIdleKB) / float64(run.rep.Connected)
		}
	}
	return run, nil
}

func (run *sessionsRun) close() { closeAll(run.receivers) }

// step publishes rate broadcasts a second for the duration (or d, when set), waits for the
// last ones and reports what the clients received in that time.
func (run *sessionsRun) step(ctx context.Context, rate float64, d time.Duration) Report {
	cfg := run.cfg
	cfg.Rate = rate
	if d > 0 {
		cfg.Duration = d
	}
	rep := run.rep
	for _, r := range run.receivers {
		r.take() // what arrived before this step is not this step's
	}
	cpu0 := processCPU(cfg.PID)
	stopSampling := run.mem.run(250 * time.Millisecond)
	published, errs := publish(ctx, cfg, run.base, &run.seq)
	time.Sleep(cfg.Drain)
	rep.ServerRSSPeakKB = stopSampling()
	cpu1 := processCPU(cfg.PID)
	rep.Published, rep.PublishErrors = published, errs
	rep.PublishRate = float64(published) / cfg.Duration.Seconds()

	alive := 0
	var all Histogram
	for _, r := range run.receivers {
		if r.closed.Load() {
			rep.Dropped++ // the server closed it during the run
		} else {
			alive++
		}
		c := r.take()
		all.Merge(&c.hist)
		rep.Delivered += c.delivered
		rep.OutOfOrder += c.outOfOrd
	}
	rep.Dropped -= run.dropped // only this step's
	run.dropped += rep.Dropped
	rep.Expected = uint64(published) * uint64(alive+rep.Dropped)
	if rep.Expected > rep.Delivered {
		rep.Lost = rep.Expected - rep.Delivered
	}
	if rep.Expected > 0 {
		rep.Ratio = float64(rep.Delivered) / float64(rep.Expected)
	}
	rep.DeliveriesPerS = float64(rep.Delivered) / cfg.Duration.Seconds()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rep.LatencyP50Ms, rep.LatencyP95Ms = ms(all.Percentile(50)), ms(all.Percentile(95))
	rep.LatencyP99Ms, rep.LatencyMaxMs = ms(all.Percentile(99)), ms(all.Max())
	if cfg.PID > 0 && rep.Delivered > 0 && cpu1 > cpu0 {
		rep.CPUMicrosPerDel = float64((cpu1 - cpu0).Microseconds()) / float64(rep.Delivered)
	}
	return rep
}

// closeAll closes the clients' connections and waits for their readers.
func closeAll(receivers []*receiver) {
	for _, r := range receivers {
		_ = r.conn.Close()
		<-r.done
	}
}

// connectAll dials the clients in parallel batches, spread over loopback source addresses.
func connectAll(ctx context.Context, cfg SessionsConfig, base *url.URL) ([]*receiver, error) {
	wsURL := *base
	wsURL.Scheme = strings.Replace(base.Scheme, "http", "ws", 1)
	wsURL.Path = "/api/v1/ws/sessions"
	loopback := isLoopback(base.Hostname())
	receivers := make([]*receiver, cfg.Clients)
	var firstErr error
	var mu sync.Mutex
	for from := 0; from < cfg.Clients; from += cfg.Batch {
		var wg sync.WaitGroup
		for i := from; i < min(from+cfg.Batch, cfg.Clients); i++ {
			wg.Go(func() {
				dialer := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 256}
				if loopback {
					local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%cfg.SourceIPs))}
					dialer.NetDialContext = (&net.Dialer{LocalAddr: local, Timeout: 30 * time.Second}).DialContext
				}
				u := wsURL
				if tok := cfg.Token(i); tok != "" {
					u.RawQuery = url.Values{"token": {tok}}.Encode()
				}
				conn, _, err := dialer.DialContext(ctx, u.String(), nil)
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, fmt.Errorf("bench: client %d: %w", i, err))
					mu.Unlock()
					return
				}
				r := &receiver{conn: conn, done: make(chan struct{})}
				go r.read()
				receivers[i] = r
			})
		}
		wg.Wait()
		progress(cfg.Progress, "connected", min(from+cfg.Batch, cfg.Clients), cfg.Clients)
		if firstErr != nil || ctx.Err() != nil {
			break
		}
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	out := receivers[:0]
	for _, r := range receivers {
		if r != nil {
			out = append(out, r)
		}
	}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return out, firstErr
}

// read counts the bench messages of one client. A frame may hold several messages joined by
// newlines (the baseline's way); each counts. The fields are found without a JSON decoder, so
// the load generator's own cost per message stays small beside the servers'.
func (r *receiver) read() {
	defer close(r.done)
	buf := make([]byte, 0, 512)
	for {
		_, rd, err := r.conn.NextReader()
		if err == nil {
			buf, err = readAllInto(buf[:0], rd)
		}
		if err != nil {
			r.closed.Store(true)
			return
		}
		now := time.Now().UnixNano()
		for part := range bytes.SplitSeq(buf, []byte{'\n'}) {
			if m, ok := parseBenchMessage(part); ok {
				r.record(m, time.Duration(now-m.Sent))
			}
		}
	}
}

func (r *receiver) record(m benchMessage, latency time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	word, bit := int(m.Seq/64), uint64(1)<<(m.Seq%64)
	if word >= len(r.seen) {
		r.seen = append(r.seen, make([]uint64, word+1-len(r.seen))...)
	}
	if r.seen[word]&bit != 0 {
		return // a duplicate is not a second delivery
	}
	r.seen[word] |= bit
	r.delivered++
	for m.Pub >= len(r.lastPSeq) {
		r.lastPSeq = append(r.lastPSeq, -1)
	}
	if m.PSeq < r.lastPSeq[m.Pub] {
		r.outOfOrd++
	}
	r.lastPSeq[m.Pub] = max(r.lastPSeq[m.Pub], m.PSeq)
	r.hist.Record(latency)
}

// readAllInto appends what rd holds to buf.
func readAllInto(buf []byte, rd io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// parseBenchMessage reads a bench message's numbers wherever its fields are, with the server's
// fields around them ({"type":"bench","seq":N,"pub":P,"pseq":K,"sent":T,...}).
func parseBenchMessage(m []byte) (benchMessage, bool) {
	if !bytes.Contains(m, []byte(`"type":"bench"`)) {
		return benchMessage{}, false
	}
	seq, ok1 := intField(m, `"seq":`)
	sent, ok2 := intField(m, `"sent":`)
	pub, ok3 := intField(m, `"pub":`)
	pseq, ok4 := intField(m, `"pseq":`)
	if !ok3 || !ok4 {
		pub, pseq = 0, seq // one publisher
	}
	const maxPublishers = 1024
	ok := ok1 && ok2 && seq >= 0 && pub >= 0 && pub < maxPublishers
	return benchMessage{Type: "bench", Seq: seq, Pub: int(pub), PSeq: pseq, Sent: sent}, ok
}

func intField(m []byte, key string) (int64, bool) {
	i := bytes.Index(m, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := m[i+len(key):]
	end := 0
	for end < len(rest) && (rest[end] == '-' || rest[end] >= '0' && rest[end] <= '9') {
		end++
	}
	v, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return v, err == nil
}

// publishSeq numbers a run's broadcasts, across its steps.
type publishSeq struct {
	next atomic.Int64
	pub  []int64 // each publisher's own count
}

// publish posts Rate broadcasts a second for Duration from cfg.Publishers goroutines (a tick
// finding them all busy is skipped: the rate reached is reported); it returns how many were
// accepted and how many failed.
func publish(ctx context.Context, cfg SessionsConfig, base *url.URL, seq *publishSeq) (ok, failed int) {
	target := base.JoinPath("/api/v1/orgs", cfg.Org, "broadcast").String()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Publishers}}
	defer client.CloseIdleConnections()
	for len(seq.pub) < cfg.Publishers {
		seq.pub = append(seq.pub, 0)
	}
	var accepted, refused atomic.Int64
	ticks := make(chan struct{})
	var wg sync.WaitGroup
	for p := range cfg.Publishers {
		wg.Go(func() {
			for range ticks {
				m := benchMessage{Type: "bench", Seq: seq.next.Add(1) - 1, Pub: p, PSeq: seq.pub[p], Sent: time.Now().UnixNano()}
				seq.pub[p]++
				if postBroadcast(ctx, client, target, cfg.ServiceToken, m) {
					accepted.Add(1)
				} else {
					refused.Add(1)
				}
			}
		})
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
	deadline := time.After(cfg.Duration)
loop:
	for {
		select {
		case <-tick.C:
			select {
			case ticks <- struct{}{}:
			default: // every publisher is busy: this broadcast is not made
			}
		case <-deadline:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	tick.Stop()
	close(ticks)
	wg.Wait()
	return int(accepted.Load()), int(refused.Load())
}

// postBroadcast posts one broadcast and reports whether the server accepted it.
func postBroadcast(ctx context.Context, client *http.Client, target, token string, m benchMessage) bool {
	body, _ := json.Marshal(m)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode/100 == 2
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() && ip.To4() != nil
}

// Table renders the report for people.
func (r Report) Table() string {
	var b strings.Builder
	row := func(k, format string, v ...any) { fmt.Fprintf(&b, "%-36s "+format+"\n", append([]any{k}, v...)...) }
	row("clients connected / asked", "%d / %d (in %.1fs)", r.Connected, r.Clients, r.ConnectSeconds)
	row("clients dropped", "%d", r.Dropped)
	row("broadcasts published (failed)", "%d (%d)", r.Published, r.PublishErrors)
	row("deliveries / expected", "%d / %d (%.2f%%)", r.Delivered, r.Expected, 100*r.Ratio)
	row("lost, out of order", "%d, %d", r.Lost, r.OutOfOrder)
	row("deliveries per second", "%.0f", r.DeliveriesPerS)
	row("latency p50 / p95 / p99 / max", "%.2f / %.2f / %.2f / %.2f ms", r.LatencyP50Ms, r.LatencyP95Ms, r.LatencyP99Ms, r.LatencyMaxMs)
	if r.ServerRSSIdleKB > 0 {
		row("server RSS idle / connected / peak", "%d / %d / %d KiB", r.ServerRSSIdleKB, r.ServerRSSConnKB, r.ServerRSSPeakKB)
		row("KiB per idle connection", "%.1f", r.KiBPerIdleConn)
		row("server CPU per delivery", "%.1f µs", r.CPUMicrosPerDel)
	}
	if r.LiveHeapIdleKB > 0 {
		row("live heap idle / connected (last GC)", "%d / %d KiB", r.LiveHeapIdleKB, r.LiveHeapConnKB)
		row("live heap KiB per connection", "%.1f", r.LiveHeapKiBPerConn)
	}
	return b.String()
}
