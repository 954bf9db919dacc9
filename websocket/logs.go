package websocket

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/internal/promreg"
)

// PodLogs streams pods' logs to browsers' logs sockets, from the Kubernetes API or relayed by
// the agent that runs the session, wherever in the cluster that agent is connected.
//
// Build one per replica, before the Manager and the AgentHub, and hand the same one to both
// (Config.Logs and AgentHubConfig.Logs): the Manager serves its logs sockets with it; the hub
// tells it which agents are connected here and hands it their `log` and `log_end` frames and
// the cluster's messages about logs. Either makes its own when none is given, so a Manager
// alone still serves Kubernetes logs and a hub alone still answers AgentHub.OpenLogs.
//
// It starts no goroutine of its own. Those it runs belong to its users: Manager.Shutdown
// closes the logs sockets and waits for them, AgentHub.Shutdown stops relaying lines to other
// replicas and waits for that.
type PodLogs struct {
	dir        cluster.Directory // nil: this replica alone
	clock      clockwork.Clock
	log        *slog.Logger
	agentLines *prometheus.CounterVec // lines agents relayed, by outcome

	mu     sync.Mutex
	agents map[string]*AgentConnection // the agents connected to this replica, as the hub registered them
	routes map[string]*logRoute        // open streams by request id

	// Forwarders of lines to browsers on other replicas run on relays until stopRelays.
	relays        sync.WaitGroup
	relaysStopped bool // set under mu before relays is waited for
	relayCtx      context.Context
	stopRelayCtx  context.CancelFunc

	sockets *logSockets
}

// PodLogsConfig is what NewPodLogs needs. The zero value serves one replica.
type PodLogsConfig struct {
	// Directory reaches the agents held by other replicas: give the one the AgentHub uses
	// (AgentHubConfig.Directory). Nil means this replica alone.
	Directory cluster.Directory
	// Clock stamps the frames sent to agents; nil means the real clock.
	Clock clockwork.Clock
	// Logger receives the component's logs; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives its Prometheus collectors; nil means they are kept but not
	// registered.
	Registerer prometheus.Registerer
}

// NewPodLogs makes the pod logs component of one replica; see PodLogs for who uses it.
func NewPodLogs(cfg PodLogsConfig) *PodLogs {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &PodLogs{
		dir:   cfg.Directory,
		clock: cfg.Clock,
		log:   cfg.Logger,
		agentLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_agent_log_lines_total",
			Help: "Log lines agents relayed, by outcome (relayed, dropped: no open stream or overflow).",
		}, []string{"outcome"}),
		agents:  make(map[string]*AgentConnection),
		routes:  make(map[string]*logRoute),
		sockets: newLogSockets(),
	}
	if cfg.Registerer != nil {
		p.agentLines = promreg.Register(cfg.Registerer, p.agentLines)
	}
	p.relayCtx, p.stopRelayCtx = context.WithCancel(context.Background())
	return p
}

// hubLogs is the PodLogs of a hub that reaches other replicas through dir: the configured one,
// or one of the hub's own. A configured one must reach them through the same directory, or the
// streams of browsers on other replicas would never reach the hub's agents.
func hubLogs(cfg AgentHubConfig, dir cluster.Directory) *PodLogs {
	p := cfg.Logs
	if p == nil {
		return NewPodLogs(PodLogsConfig{Directory: dir, Clock: cfg.Clock, Logger: cfg.Logger, Registerer: cfg.Registerer})
	}
	_, alone := dir.(*cluster.MemoryDirectory)
	if (p.dir == nil && !alone) || (p.dir != nil && p.dir.Replica() != dir.Replica()) {
		panic("websocket: AgentHubConfig.Logs must be built with the hub's Directory")
	}
	return p
}

// agentConnected records c as its agent's connection on this replica. The hub calls it where
// it registers c, under its own lock, so both agree on which connection holds the agent.
func (p *PodLogs) agentConnected(c *AgentConnection) {
	p.mu.Lock()
	p.agents[c.AgentID] = c
	p.mu.Unlock()
}

// agentLeft forgets c unless a newer connection of its agent took over.
func (p *PodLogs) agentLeft(c *AgentConnection) {
	p.mu.Lock()
	if p.agents[c.AgentID] == c {
		delete(p.agents, c.AgentID)
	}
	p.mu.Unlock()
}

// agent returns the agent's connection on this replica, or nil.
func (p *PodLogs) agent(agentID string) *AgentConnection {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.agents[agentID]
}

// locate returns the holder of the agent's connection on another replica.
func (p *PodLogs) locate(ctx context.Context, agentID string) (cluster.Owner, bool) {
	if p.dir == nil {
		return cluster.Owner{}, false
	}
	owner, ok, err := p.dir.Lookup(ctx, agentID)
	if err != nil {
		// Debug: during an outage every lookup fails, and the cluster logs the outage once.
		p.log.Debug("locating agent in the cluster failed", "agent_id", agentID, "err", err)
		return cluster.Owner{}, false
	}
	return owner, ok && owner.Replica != p.dir.Replica()
}

func (p *PodLogs) addRoute(id string, r *logRoute) {
	p.mu.Lock()
	p.routes[id] = r
	p.mu.Unlock()
	if r.conn != nil {
		r.conn.logStreams.Add(1)
		if r.conn.closing() {
			// The connection may have been cleaned up before the route existed.
			p.endRoutes(r.conn)
		}
	}
}

func (p *PodLogs) dropRoute(id string) *logRoute {
	p.mu.Lock()
	r := p.routes[id]
	delete(p.routes, id)
	p.mu.Unlock()
	if r != nil && r.conn != nil {
		r.conn.logStreamEnd.Store(time.Now().UnixNano())
		r.conn.logStreams.Add(-1)
	}
	return r
}

func (p *PodLogs) route(id string) *logRoute {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.routes[id]
}

// endRoutes ends the log streams of a connection that closed. The hub calls it when it
// cleans the connection up.
func (p *PodLogs) endRoutes(c *AgentConnection) {
	p.mu.Lock()
	var ids []string
	for id, r := range p.routes {
		if r.conn == c {
			ids = append(ids, id)
		}
	}
	p.mu.Unlock()
	for _, id := range ids {
		if r := p.dropRoute(id); r != nil {
			r.end(errAgentGone)
		}
	}
}

// startForwarder runs f on relays, unless relaying stopped (then the stream just ends): no
// goroutine starts once stopRelays waits for them.
func (p *PodLogs) startForwarder(f *logForwarder) {
	p.mu.Lock()
	stopped := p.relaysStopped
	if !stopped {
		p.relays.Go(f.run)
	}
	p.mu.Unlock()
	if stopped {
		f.abandon()
	}
}

// stopRelays ends the forwarders of lines to other replicas and waits for them. The hub calls
// it at its shutdown, once its connections are cleaned up. It is idempotent.
func (p *PodLogs) stopRelays() {
	p.stopRelayCtx()
	p.mu.Lock()
	p.relaysStopped = true
	p.mu.Unlock()
	p.relays.Wait()
}

// Bounds of one log stream's queue between its source and the browser's writer.
const (
	defaultLogQueueLines = 16 << 10
	defaultLogQueueBytes = 4 << 20
)

// errLogOverflow ends a stream whose browser fell too far behind a source that cannot wait.
var errLogOverflow = errors.New("log stream overflow: the browser is not reading fast enough")

// logRecord is one log line and the time its source gave it (zero when it gave none).
type logRecord struct {
	Line string
	At   time.Time
}

// logQueue carries one log stream from its source to the browser's writer, in order. It is
// bounded in lines and bytes: a source that can wait (a Kubernetes log reader) waits for room,
// so a slow browser slows the API server's stream; one that cannot (an agent's read loop, shared
// with its heartbeats and commands) overflows it, which ends the stream.
type logQueue struct {
	maxLines, maxBytes int

	mu    sync.Mutex
	recs  []logRecord
	bytes int
	heard bool // the source sent something: a line or its end
	ended bool
	err   error

	ready chan struct{} // capacity 1: there is something to take
	room  chan struct{} // capacity 1: lines were taken
}

func newLogQueue(maxLines, maxBytes int) *logQueue {
	return &logQueue{
		maxLines: maxLines, maxBytes: maxBytes,
		ready: make(chan struct{}, 1), room: make(chan struct{}, 1),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// fits reports whether n more records of size more bytes fit; callers hold mu. An empty queue
// takes anything, so one huge line cannot wedge a stream.
func (q *logQueue) fits(n, size int) bool {
	return len(q.recs) == 0 || (len(q.recs)+n <= q.maxLines && q.bytes+size <= q.maxBytes)
}

// offer appends recs without waiting. When they do not fit, the stream ends with
// errLogOverflow and offer reports false; it also reports false once the stream ended.
func (q *logQueue) offer(recs ...logRecord) bool {
	size := 0
	for _, r := range recs {
		size += len(r.Line)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ended {
		return false
	}
	q.heard = true
	if !q.fits(len(recs), size) {
		q.endLocked(errLogOverflow)
		return false
	}
	q.recs = append(q.recs, recs...)
	q.bytes += size
	signal(q.ready)
	return true
}

// put appends r, waiting for room until ctx ends or the stream ended.
func (q *logQueue) put(ctx context.Context, r logRecord) error {
	for {
		q.mu.Lock()
		if q.ended {
			q.mu.Unlock()
			return context.Canceled
		}
		q.heard = true
		if q.fits(1, len(r.Line)) {
			q.recs = append(q.recs, r)
			q.bytes += len(r.Line)
			q.mu.Unlock()
			signal(q.ready)
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finish ends the stream after what is queued; err nil is a normal end. The first end wins.
func (q *logQueue) finish(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.ended {
		q.heard = true
		q.endLocked(err)
	}
}

func (q *logQueue) endLocked(err error) {
	q.ended, q.err = true, err
	signal(q.ready)
	signal(q.room)
}

// take returns what is queued and, once the queue is empty and the stream ended, done with
// the stream's error.
func (q *logQueue) take() (recs []logRecord, done bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	recs, q.recs, q.bytes = q.recs, nil, 0
	if len(recs) > 0 {
		signal(q.room)
	}
	return recs, q.ended && len(recs) == 0, q.err
}

// hasHeard reports whether the source sent anything yet.
func (q *logQueue) hasHeard() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.heard
}
