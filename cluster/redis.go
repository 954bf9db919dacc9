package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/streamspace/streamspace-realtime/internal/promreg"
)

// Defaults of RedisOptions.
const (
	DefaultRedisPrefix    = "streamspace"
	DefaultOwnershipTTL   = 30 * time.Second
	DefaultHealthInterval = time.Second
	// watchWait bounds how long Watch waits for Redis to confirm a subscription.
	watchWait = 5 * time.Second
	// receiveIdle is how long the subscription connection may stay silent before it is
	// probed with a PING; a probe unanswered for as long again means the connection is dead.
	receiveIdle = 15 * time.Second
	// healthPingTimeout is the least time a health ping is given.
	healthPingTimeout = 3 * time.Second
)

// RedisOptions configure NewRedis. Replica is required; zero fields take defaults.
type RedisOptions struct {
	// Replica names this replica: its channel, and the holder named in agent claims.
	Replica string
	// Prefix starts every key and channel name, so installs (or tests) can share a Redis.
	Prefix string
	// OwnershipTTL is how long an agent claim outlives the last refresh of its replica: a
	// replica that dies abruptly stops holding its agents this long after. Claims are
	// refreshed every third of it.
	OwnershipTTL time.Duration
	// HealthInterval is how often Redis is pinged for readiness and recovery.
	HealthInterval time.Duration
	// WaitForRedis makes NewRedis accept a Redis that does not answer yet: the replica then
	// starts as during an outage and joins when Redis answers. Servers leave it off and refuse
	// to start instead, so a misconfigured replica is noticed rather than serving alone.
	WaitForRedis bool
	// History bounds each organization's replayable history (Size entries in Redis).
	History History
	// PeerAddr is the address other replicas dial to reach this one directly (package peer),
	// published beside its agent claims; empty publishes none.
	PeerAddr string
	// Logger receives the package's logs; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the package's Prometheus collectors; nil registers none.
	Registerer prometheus.Registerer
}

func (o RedisOptions) withDefaults() RedisOptions {
	if o.Prefix == "" {
		o.Prefix = DefaultRedisPrefix
	}
	o.History = o.History.withDefaults()
	if o.OwnershipTTL <= 0 {
		o.OwnershipTTL = DefaultOwnershipTTL
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Redis shares a Bus and a Directory between replicas through one Redis (standalone, Sentinel
// or Cluster). It owns one subscription connection, which carries this replica's channel, the
// all-replicas channel and the channels of the organizations this replica watches, and five
// goroutines: the receiver, the subscription writer, the health check, the refresher of agent
// claims and connection leases, and the lease releaser. Close stops them.
//
// When Redis goes away, deliveries on this replica go on (ErrLocalOnly), Ready reports the
// fault, and when it returns the subscriptions are made again and this replica's agent claims
// are restored, without a restart.
type Redis struct {
	client  redis.UniversalClient
	opts    RedisOptions
	log     *slog.Logger
	metrics *redisMetrics
	bus     *RedisBus
	dir     *RedisDirectory
	leases  *Leases

	replicaChannel   string
	broadcastChannel string

	mu     sync.Mutex // guards ps, wanted, subs, dirty
	ps     *redis.PubSub
	wanted map[string]string // channel → organization ("" for the replica channels)
	subs   map[string]*subscription
	dirty  map[string]struct{} // channels whose wanted state the writer has not acted on
	kick   chan struct{}       // capacity 1: the writer has work

	healthy    atomic.Bool // the last PING was answered
	subscribed atomic.Bool // this replica's channel is confirmed on the current connection
	refreshNow chan struct{}

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewRedis connects this replica to the cluster through client. It refuses to start when Redis
// does not answer within ctx: a replica that fell back to serving alone would split the cluster.
// The caller keeps ownership of client and closes it after Close. Every replica of a deployment
// uses the same Redis and Prefix and its own Replica name; each passes Bus to
// websocket.Config.Bus and Directory to websocket.AgentHubConfig.Directory.
func NewRedis(ctx context.Context, client redis.UniversalClient, opts RedisOptions) (*Redis, error) {
	if client == nil {
		return nil, errors.New("cluster: redis client required")
	}
	opts = opts.withDefaults()
	if opts.Replica == "" {
		return nil, errors.New("cluster: replica name required")
	}
	pingErr := client.Ping(ctx).Err()
	if pingErr != nil && !opts.WaitForRedis {
		return nil, fmt.Errorf("cluster: redis unreachable: %w", pingErr)
	}
	r := &Redis{
		client:           client,
		opts:             opts,
		log:              opts.Logger.With("component", "cluster", "replica", opts.Replica),
		metrics:          newRedisMetrics(opts.Registerer),
		replicaChannel:   opts.Prefix + ":replica:" + opts.Replica,
		broadcastChannel: opts.Prefix + ":replicas",
		wanted:           make(map[string]string),
		subs:             make(map[string]*subscription),
		dirty:            make(map[string]struct{}),
		kick:             make(chan struct{}, 1),
		refreshNow:       make(chan struct{}, 1),
	}
	r.wanted[r.replicaChannel] = ""
	r.wanted[r.broadcastChannel] = ""
	r.bus = newRedisBus(r)
	r.dir = newRedisDirectory(r)
	r.leases = newLeases(r)
	if pingErr == nil {
		r.healthy.Store(true)
		r.metrics.up.Set(1)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	ready := make(chan struct{})
	r.wg.Add(5)
	go r.receiveLoop(ready)
	go r.subscriptionWriter()
	go r.healthLoop()
	go r.dir.refreshLoop()
	go r.leases.releaseLoop()
	if pingErr != nil {
		return r, nil
	}
	select {
	case <-ready:
		return r, nil
	case <-ctx.Done():
		_ = r.Close()
		return nil, fmt.Errorf("cluster: redis subscription not confirmed: %w", ctx.Err())
	}
}

// Bus returns the organizations' event streams.
func (r *Redis) Bus() *RedisBus { return r.bus }

// Directory returns the agents' directory and the replicas' messages.
func (r *Redis) Directory() *RedisDirectory { return r.dir }

// Leases returns the counts of what all replicas hold against cluster-wide limits.
func (r *Redis) Leases() *Leases { return r.leases }

// Ready reports whether Redis answers and this replica's subscriptions are in place.
func (r *Redis) Ready(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("cluster: redis unreachable: %w", err)
	}
	if !r.subscribed.Load() {
		return errors.New("cluster: redis subscriptions not restored yet")
	}
	return nil
}

// Close stops the goroutines and the subscription connection. Agent claims are left to expire:
// a replica that stops gracefully has released them with its connections. It is idempotent.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.mu.Lock()
		ps := r.ps
		r.ps = nil
		r.mu.Unlock()
		if ps != nil {
			_ = ps.Close()
		}
		r.wg.Wait()
		r.bus.handlers.clear()
		r.dir.handlers.clear()
	})
	return nil
}

// receiveLoop owns the subscription connection: it (re)creates it with every wanted channel,
// routes what arrives, and starts over with a new connection after any failure.
func (r *Redis) receiveLoop(ready chan struct{}) {
	defer r.wg.Done()
	backoff := 50 * time.Millisecond
	first := true
	for r.ctx.Err() == nil {
		ps := r.connect()
		if ps == nil {
			return
		}
		if r.receive(ps, &ready, first) {
			backoff = 50 * time.Millisecond
		}
		first = false
		_ = ps.Close()
		r.resetConfirmations(ps)
		if r.ctx.Err() != nil {
			return
		}
		r.metrics.errors.WithLabelValues("subscribe").Inc()
		select {
		case <-time.After(backoff):
		case <-r.ctx.Done():
			return
		}
		backoff = min(backoff*2, time.Second)
	}
}

// connect makes a new subscription connection and has the writer subscribe it to every wanted
// channel. Nil when closing. No I/O here: go-redis dials on first use.
func (r *Redis) connect() *redis.PubSub {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return nil
	}
	r.ps = r.client.Subscribe(r.ctx)
	for ch := range r.wanted {
		r.dirty[ch] = struct{}{}
	}
	r.kickWriter()
	return r.ps
}

// receive routes messages from ps until it fails. It reports whether anything arrived.
func (r *Redis) receive(ps *redis.PubSub, ready *chan struct{}, first bool) bool {
	got, probed := false, false
	for {
		msg, err := ps.ReceiveTimeout(r.ctx, receiveIdle)
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() && !probed && r.ctx.Err() == nil {
				probed = true
				if perr := ps.Ping(r.ctx); perr == nil {
					continue
				}
			}
			switch {
			case r.ctx.Err() != nil:
			case r.subscribed.Load():
				r.log.Warn("redis subscription lost; reconnecting", "err", err)
			default:
				r.log.Debug("redis subscription not restored yet", "err", err)
			}
			return got
		}
		got, probed = true, false
		switch m := msg.(type) {
		case *redis.Message:
			r.route(m)
		case *redis.Subscription:
			r.confirm(m, ready, first)
		}
	}
}

// confirm counts a reply to a SUBSCRIBE or UNSUBSCRIBE. Redis answers in the order of the
// writes, so once a channel has no reply outstanding and the last write subscribed it, it is
// subscribed for sure: its waiters are released.
func (r *Redis) confirm(m *redis.Subscription, ready *chan struct{}, first bool) {
	r.mu.Lock()
	if st := r.subs[m.Channel]; st != nil && st.inflight > 0 {
		st.inflight--
		if st.inflight == 0 {
			if st.subscribed {
				st.confirmed = true
				for _, w := range st.waiters {
					close(w)
				}
				st.waiters = nil
			} else if _, still := r.wanted[m.Channel]; !still && len(st.waiters) == 0 {
				delete(r.subs, m.Channel)
			}
		}
	}
	mine := r.isConfirmed(r.replicaChannel) && r.isConfirmed(r.broadcastChannel)
	r.mu.Unlock()
	if !mine || r.subscribed.Swap(true) {
		return
	}
	if *ready != nil {
		close(*ready)
		*ready = nil
	}
	if !first {
		r.log.Info("redis subscriptions restored")
		r.metrics.restores.Inc()
		r.dir.triggerRefresh()
	}
}

// isConfirmed reports whether channel is subscribed for sure. The caller holds r.mu.
func (r *Redis) isConfirmed(channel string) bool {
	st := r.subs[channel]
	return st != nil && st.confirmed
}

// resetConfirmations forgets what the connection ps had confirmed.
func (r *Redis) resetConfirmations(ps *redis.PubSub) {
	r.mu.Lock()
	if r.ps == ps {
		r.ps = nil
	}
	for _, st := range r.subs {
		st.subscribed, st.confirmed, st.inflight = false, false, 0 // waiters stay for the next one
	}
	r.mu.Unlock()
	r.subscribed.Store(false)
}

// route hands a message to the bus or the directory by its channel.
func (r *Redis) route(m *redis.Message) {
	switch m.Channel {
	case r.replicaChannel, r.broadcastChannel:
		r.dir.receive(m.Payload)
		return
	}
	r.mu.Lock()
	org, ok := r.wanted[m.Channel]
	r.mu.Unlock()
	if ok && org != "" {
		r.bus.receive(org, m.Payload)
	}
}

// want adds channel (of org) to the subscription and returns a channel closed once Redis
// confirmed it, or nil when it is confirmed already.
func (r *Redis) want(channel, org string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wanted[channel] = org
	st := r.subscription(channel)
	if st.confirmed {
		return nil
	}
	w := make(chan struct{})
	st.waiters = append(st.waiters, w)
	r.dirty[channel] = struct{}{}
	r.kickWriter()
	return w
}

// unwant removes channel from the subscription.
func (r *Redis) unwant(channel string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.wanted, channel)
	r.dirty[channel] = struct{}{}
	r.kickWriter()
}

// subscription is what this replica asked of Redis for one channel, and what Redis confirmed.
type subscription struct {
	subscribed bool // the last write for the channel was a SUBSCRIBE
	inflight   int  // replies still expected for the channel
	confirmed  bool // subscribed, and Redis answered every write
	waiters    []chan struct{}
}

// subscription returns channel's record, making it. The caller holds r.mu.
func (r *Redis) subscription(channel string) *subscription {
	st := r.subs[channel]
	if st == nil {
		st = &subscription{}
		r.subs[channel] = st
	}
	return st
}

// kickWriter wakes the subscription writer. The caller holds r.mu.
func (r *Redis) kickWriter() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// subscriptionWriter is the only goroutine that writes SUBSCRIBE and UNSUBSCRIBE. It decides
// from the wanted channels what to write under r.mu, then writes outside it; being alone, it
// writes in the order it decided, which is the order Redis answers in.
func (r *Redis) subscriptionWriter() {
	defer r.wg.Done()
	for {
		select {
		case <-r.kick:
		case <-r.ctx.Done():
			return
		}
		r.mu.Lock()
		ps := r.ps
		var sub, unsub []string
		if ps != nil {
			for ch := range r.dirty {
				st := r.subscription(ch)
				_, want := r.wanted[ch]
				switch {
				case want && !st.subscribed:
					sub = append(sub, ch)
					st.subscribed = true
					st.inflight++
				case !want && st.subscribed:
					unsub = append(unsub, ch)
					st.subscribed, st.confirmed = false, false
					st.inflight++
				}
			}
			clear(r.dirty)
		}
		r.mu.Unlock()
		// Failures show up in the receiver, which starts a new connection and marks every
		// wanted channel dirty again.
		if len(sub) > 0 {
			_ = ps.Subscribe(r.ctx, sub...)
		}
		if len(unsub) > 0 {
			_ = ps.Unsubscribe(r.ctx, unsub...)
		}
	}
}

// healthLoop pings Redis: it keeps the up gauge, logs each change once, and restores this
// replica's agent claims when Redis answers again.
func (r *Redis) healthLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-r.ctx.Done():
			return
		}
		// A loaded machine can take longer than one interval to answer; only a ping that fails
		// or takes healthPingTimeout counts as Redis being away.
		ctx, cancel := context.WithTimeout(r.ctx, max(r.opts.HealthInterval, healthPingTimeout))
		err := r.client.Ping(ctx).Err()
		cancel()
		switch {
		case err != nil && r.ctx.Err() == nil && r.healthy.Swap(false):
			r.metrics.up.Set(0)
			r.metrics.errors.WithLabelValues("ping").Inc()
			r.log.Error("redis unreachable: serving this replica's connections only", "err", err)
		case err == nil && !r.healthy.Swap(true):
			r.metrics.up.Set(1)
			r.log.Info("redis reachable again")
			r.dir.triggerRefresh()
		}
	}
}

// fail counts a failed Redis operation.
func (r *Redis) fail(op string) { r.metrics.errors.WithLabelValues(op).Inc() }

// randomID returns n random bytes in hex.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tag escapes s for use inside a Redis Cluster hash tag, which must not contain braces.
func tag(s string) string {
	if !strings.ContainsAny(s, "{}%") {
		return s
	}
	return url.QueryEscape(s)
}

type redisMetrics struct {
	up       prometheus.Gauge
	errors   *prometheus.CounterVec
	restores prometheus.Counter
	received *prometheus.CounterVec
	gaps     prometheus.Counter
	local    *prometheus.CounterVec
}

func newRedisMetrics(reg prometheus.Registerer) *redisMetrics {
	m := &redisMetrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamspace_cluster_redis_up", Help: "1 while Redis answers this replica's pings.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_cluster_errors_total", Help: "Failed Redis operations by operation.",
		}, []string{"op"}),
		restores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamspace_cluster_subscriptions_restored_total",
			Help: "Times the Redis subscriptions were made again after a failure.",
		}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_cluster_messages_received_total", Help: "Messages received from Redis by kind.",
		}, []string{"kind"}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamspace_cluster_event_gaps_total",
			Help: "Organization stream messages this replica missed (seen as offset gaps).",
		}),
		local: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamspace_cluster_local_only_total",
			Help: "Publishes and broadcasts served on this replica only because Redis failed.",
		}, []string{"kind"}),
	}
	if reg != nil {
		m.up = promreg.Register(reg, m.up)
		m.errors = promreg.Register(reg, m.errors)
		m.restores = promreg.Register(reg, m.restores)
		m.received = promreg.Register(reg, m.received)
		m.gaps = promreg.Register(reg, m.gaps)
		m.local = promreg.Register(reg, m.local)
	}
	return m
}

// SetRedisLogger sends go-redis's own log lines (pool dial retries, reconnects) to l at debug
// level: during an outage they repeat for every call, while this package logs each change of
// state once. go-redis keeps one logger per process.
func SetRedisLogger(l *slog.Logger) { redis.SetLogger(redisLogger{l}) }

type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
