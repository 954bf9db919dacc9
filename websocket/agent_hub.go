package websocket

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// AgentHub is the central manager for all agent WebSocket connections.
//
// Concurrency contract: every method is safe for concurrent use. Registration and lookups
// are synchronous under the hub's lock (the lock is never held across I/O); Run is the loop of
// periodic work: stale agents, ack timeouts with resends, command deadlines, and the coalesced
// heartbeat writes. Each registered connection owns its goroutines (see AgentConnection). Stop
// closes every connection with 1001, waits for their cleanup within DrainTimeout, writes the
// last heartbeats and ends Run; it is idempotent, and after it RegisterAgent refuses.
//
// Commands are durable: the database is their queue of record. SendCommandToAgent and
// SubmitCommand store a command before anything else, then wake the agent's dispatcher, which
// marks it sent (attempt+1) and queues it; an agent that is offline gets its waiting commands
// when it connects. Every state change is a guarded update, so commands never move backwards.
//
// Several replicas share agents through a cluster.Directory (NewAgentHubWithRedis, or
// AgentHubConfig.Directory): each connection is claimed for its replica, a command accepted
// anywhere wakes the dispatcher of the replica that holds the agent, broadcasts and disconnects
// reach every replica, and IsAgentConnected and GetConnectedAgents answer for the whole
// cluster. The database still records every command transition exactly once; the directory
// carries only wake-ups and control messages, so a lost one delays a command, never loses it.
// Without a directory the hub serves one replica.
type AgentHub struct {
	cfg     AgentHubConfig
	metrics *agentMetrics
	dir     cluster.Directory // the cluster directory; the log relay sends through it too
	link    *replicaLink      // claims, wake-ups and orders to the other replicas

	// The hub keeps the registry and the lifecycle; each other responsibility has its type.
	registry *agentRegistry  // this replica's connections, in agreement with the database and the directory
	commands *commandBook    // every command's life: submit to final state
	beats    *heartbeatBatch // heartbeats on their way to the database
	statuses *statusRecorder // agents' session status reports into session rows and events
	run      hubRun          // Run's loop and the stop
	ctx      context.Context // store calls; cancelled at the end of Stop
	checks   atomic.Uint64   // completed check passes, so tests can wait for one

	logs *PodLogs // relays the log streams of the agents held here (see OpenLogs)

	store    AgentStore  // also a SessionGetter for vnc_ready when it is one (*db.Database)
	vncUsers userTunnels // each user's VNC tunnels, for the per-user limit
}

// hubRun is the hub's periodic loop and its stop: Run runs once, until Stop.
type hubRun struct {
	cancel   context.CancelFunc // ends the hub's ctx
	stopCh   chan struct{}
	stopOnce sync.Once
	mu       sync.Mutex
	running  bool
	done     chan struct{} // closed when Run returns
}

// NewAgentHub creates a hub without Redis support, with the default configuration. database
// must not be nil: it keeps agent status and the command queue. Call Run to start the hub's
// periodic work.
func NewAgentHub(database *db.Database) *AgentHub {
	return NewAgentHubWithConfig(database, AgentHubConfig{})
}

// NewAgentHubWithConfig creates a single-replica hub; zero config fields take defaults.
func NewAgentHubWithConfig(database *db.Database, cfg AgentHubConfig) *AgentHub {
	if database == nil {
		panic("websocket: NewAgentHub needs a database")
	}
	return newAgentHub(database, cfg)
}

// NewAgentHubWithRedis creates a hub that shares agents with the other replicas through Redis
// (standalone, Sentinel or Cluster: any go-redis UniversalClient); a nil redisClient means a
// single node, as NewAgentHub. The replica is named after the host. Where Redis does not answer
// yet the hub starts as it would during an outage (its own agents only) and joins the cluster
// when Redis answers; a server should rather refuse to start (see cluster.NewRedis). The hub
// closes its Redis subscriptions at Stop; the client stays the caller's.
func NewAgentHubWithRedis(database *db.Database, redisClient redis.UniversalClient) *AgentHub {
	if redisClient == nil {
		return NewAgentHub(database)
	}
	cfg := AgentHubConfig{}.withDefaults()
	r, err := cluster.NewRedis(context.Background(), redisClient, cluster.RedisOptions{
		Replica: cfg.Replica, Logger: cfg.Logger, WaitForRedis: true,
	})
	if err != nil {
		// Unreachable: the client and the replica name are set, and WaitForRedis accepts an
		// outage. A panic beats a hub that silently serves one replica of a cluster.
		panic(fmt.Sprintf("websocket: NewAgentHubWithRedis: %v", err))
	}
	cfg.Directory = r.Directory()
	h := NewAgentHubWithConfig(database, cfg)
	h.link.owned = r
	return h
}

// NewAgentHubWithStore creates a hub over any AgentStore: this module's *db.Database (built
// with db.Open, or over a pool the caller has with db.OpenDB or db.OpenPool) or the caller's
// own implementation. store must not be nil. Zero config fields take defaults; a
// cfg.Directory shares agents with other replicas.
func NewAgentHubWithStore(store AgentStore, cfg AgentHubConfig) *AgentHub {
	if store == nil {
		panic("websocket: NewAgentHubWithStore needs a store")
	}
	return newAgentHub(store, cfg)
}

func newAgentHub(store AgentStore, cfg AgentHubConfig) *AgentHub {
	cfg = cfg.withDefaults()
	if cfg.Directory == nil {
		cfg.Directory = cluster.NewMemoryDirectory(cfg.Replica)
	}
	metrics := newAgentMetrics(cfg.Registerer)
	link := &replicaLink{dir: cfg.Directory, logger: cfg.Logger}
	registry := newAgentRegistry(store, link, cfg)
	h := &AgentHub{
		store:    store,
		cfg:      cfg,
		metrics:  metrics,
		dir:      cfg.Directory,
		link:     link,
		registry: registry,
		commands: newCommandBook(store, cfg, metrics, link, registry.dispatcher),
		beats:    newHeartbeatBatch(store, metrics, cfg.Logger),
		statuses: &statusRecorder{store: store, events: sessionEvents{pub: cfg.Events, logger: cfg.Logger}, metrics: metrics, logger: cfg.Logger},
		run:      hubRun{stopCh: make(chan struct{}), done: make(chan struct{})},
	}
	h.logs = hubLogs(cfg, cfg.Directory)
	h.ctx, h.run.cancel = context.WithCancel(context.Background())
	link.subscribe(h.onReplicaMessage)
	return h
}

// ServeAgent registers an upgraded connection of an authenticated agent and starts its
// goroutines. It returns once the connection is registered; the connection then lives until
// the agent leaves, is replaced, goes stale or the hub stops. From the call on the hub owns
// conn: it alone reads and writes it and closes it (see RegisterAgent); the caller must not
// have read from it. The connection it builds has no Receive channel: to be handed the frames
// the hub leaves to the embedder, build the AgentConnection and call RegisterAgent. On error
// (ErrUnusableSocket for a conn that is not an upgraded socket, ErrAgentHubStopped, a store
// error) nothing is registered and the caller closes conn.
func (h *AgentHub) ServeAgent(conn *websocket.Conn, agentID, platform string) (*AgentConnection, error) {
	return h.ServeAgentWithFeatures(conn, agentID, platform, nil)
}

// ServeAgentWithFeatures is ServeAgent for a socket whose upgrade negotiated features (see
// NegotiateAgentFeatures): with models.AgentFeatureTunnel each viewer gets a tunnel of its own
// (PROTOCOL.md 6.3); without, the agent's tunnels are StreamSpace's (6.2).
func (h *AgentHub) ServeAgentWithFeatures(conn *websocket.Conn, agentID, platform string, features []string) (*AgentConnection, error) {
	c := &AgentConnection{
		tunnel1:  slices.Contains(features, models.AgentFeatureTunnel),
		AgentID:  agentID,
		Conn:     conn,
		Platform: platform,
		LastPing: h.cfg.Clock.Now(),
		Send:     make(chan []byte, h.cfg.QueueSize),
	}
	if err := h.RegisterAgent(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Errors of RegisterAgent, checked with errors.Is. Neither records anything.
var (
	// ErrUnusableSocket: the connection's Conn is set but is no socket (a websocket.Conn built
	// as a value rather than returned by an upgrade), so the hub could neither read nor write
	// it. Leave Conn nil to read Send yourself instead.
	ErrUnusableSocket = errors.New("websocket: agent connection's Conn is not an upgraded socket")
	// ErrAlreadyRegistered: this *AgentConnection was registered before; every registration,
	// a reconnect included, takes a new one.
	ErrAlreadyRegistered = errors.New("websocket: agent connection already registered")
)

// RegisterAgent adds a new agent connection to the hub: it records the agent online in the
// database, replaces a previous connection of the same agent (closed with 4000; its late
// cleanup cannot touch this one), and starts the connection's goroutines.
//
// Ownership: with Conn set, the hub owns the socket from this call on. It runs the one reader
// and the one writer the socket has, answers pings, closes it when the connection ends, and
// handles every frame it knows; the frames it leaves go to Receive, when set. The caller must
// not run pumps of its own, nor read, write or close Conn: to reach the agent use
// SendCommandToAgent, SubmitCommand, OpenTunnel, AgentConnection.Enqueue (a frame of its
// own) or BroadcastToAllAgents; to end the connection, UnregisterAgent or DisconnectAgent. A
// Conn that is no socket gets ErrUnusableSocket. A connection without Conn gets only its
// command dispatcher: the caller then reads Send itself and writes to the agent as it likes,
// and nothing touches a socket. Set every exported field before the call; the hub owns them
// too from then on.
//
// Registering the same *AgentConnection twice gets ErrAlreadyRegistered (a failed
// registration may be tried again); an AgentID that is empty, too long or not valid text is
// refused. No error ever leaves anything recorded in the store.
func (h *AgentHub) RegisterAgent(conn *AgentConnection) error {
	if conn == nil || conn.AgentID == "" {
		return errors.New("websocket: register agent: connection without agent id")
	}
	if len(conn.AgentID) > maxIDLen || !models.ValidID(conn.AgentID) {
		return errors.New("websocket: register agent: agent id is too long or not valid UTF-8 text without control characters")
	}
	if conn.Conn != nil && conn.Conn.NetConn() == nil {
		return fmt.Errorf("websocket: register agent %q: %w", conn.AgentID, ErrUnusableSocket)
	}
	if !conn.registered.CompareAndSwap(false, true) {
		return fmt.Errorf("websocket: register agent %q: %w", conn.AgentID, ErrAlreadyRegistered)
	}
	h.prepare(conn)
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	old, err := h.registry.add(ctx, conn, func() { h.logs.agentConnected(conn) })
	if err != nil {
		conn.cmds.stop()
		conn.registered.Store(false)
		return err
	}
	if old != nil {
		old.closeWith(CloseReplaced, "replaced by a newer connection", "replaced")
	}
	h.metrics.connections.Inc()
	h.cfg.Logger.Info("agent connected", "agent_id", conn.AgentID, "platform", conn.Platform,
		"replaced", old != nil)
	conn.start()
	return nil
}

// prepare fills the unexported parts of a connection the caller built.
func (h *AgentHub) prepare(c *AgentConnection) {
	c.hub = h
	c.connID = uuid.NewString()
	c.status = models.AgentStatusOnline
	c.done = make(chan struct{})
	c.readDone = make(chan struct{})
	if c.Send == nil {
		c.Send = make(chan []byte, h.cfg.QueueSize)
	}
	c.cmds = newDeliveries(h.ctx, c.AgentID, c.Send, c.done)
	c.budget = frameBudget{limiter: rate.NewLimiter(rate.Limit(h.cfg.MessageRate), h.cfg.MessageBurst)}
	c.logLimiter = rate.NewLimiter(logStreamRate, logStreamRate)
	c.statuses = newStatusQueue()
	c.tunnels = newAgentTunnels(c, c.tunnel1)
	c.Mutex.Lock()
	if c.LastPing.IsZero() {
		c.LastPing = h.cfg.Clock.Now()
	}
	c.Mutex.Unlock()
}

// unregister forgets a connection whose goroutines have all ended and marks the agent offline,
// unless a newer connection took over (the database update is guarded by connection id).
func (h *AgentHub) unregister(c *AgentConnection) {
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	h.registry.remove(ctx, c, func() { h.logs.agentLeft(c) })
	h.logs.endRoutes(c)
	h.metrics.connections.Dec()
	h.cfg.Logger.Info("agent disconnected", "agent_id", c.AgentID, "code", c.closeCode, "reason", c.closeReason)
	h.registry.done()
}

// UnregisterAgent closes the agent's connection (1000). Its cleanup, which marks the agent
// offline, runs when the connection's goroutines end.
func (h *AgentHub) UnregisterAgent(agentID string) {
	if c := h.GetConnection(agentID); c != nil {
		c.closeWith(websocket.CloseNormalClosure, "unregistered", "unregistered")
	}
}

// DisconnectAgent closes the agent's connection, on whichever replica holds it, with code and
// reason, and reports whether some replica held one. With shutdown set the agent is first sent
// `shutdown`, which StreamSpace's agents obey by stopping for good: use it only to retire an
// agent.
func (h *AgentHub) DisconnectAgent(agentID string, code int, reason string, shutdown bool) bool {
	if h.disconnectLocal(agentID, code, reason, shutdown) {
		return true
	}
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	return h.link.disconnect(ctx, agentID, disconnectOrder{Code: code, Reason: reason, Shutdown: shutdown})
}

// disconnectLocal is DisconnectAgent for a connection of this replica.
func (h *AgentHub) disconnectLocal(agentID string, code int, reason string, shutdown bool) bool {
	c := h.GetConnection(agentID)
	if c == nil {
		return false
	}
	if shutdown {
		c.push(outbound(models.MessageTypeShutdown, h.cfg.Clock.Now(), models.ShutdownMessage{Reason: reason}))
		// A policy close drains the queue, so the shutdown frame goes out first.
		code = websocket.ClosePolicyViolation
	}
	c.closeWith(code, reason, "disconnected")
	return true
}

// GetConnectedAgents returns the ids of the agents connected to any replica, sorted. Should
// the cluster not answer, it returns this replica's agents.
func (h *AgentHub) GetConnectedAgents() []string {
	ids := h.registry.ids()
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	others, err := h.dir.Connected(ctx)
	if err != nil {
		h.cfg.Logger.Debug("listing the cluster's agents failed; listing this replica's", "err", err)
	}
	ids = append(ids, others...)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// AgentLocations returns, for each of agentIDs connected to some replica, the replica that
// holds it. Agents absent from the map are offline.
func (h *AgentHub) AgentLocations(ctx context.Context, agentIDs []string) (map[string]string, error) {
	owners, err := h.dir.Lookups(ctx, agentIDs)
	out := make(map[string]string, len(agentIDs))
	for id, o := range owners {
		out[id] = o.Replica
	}
	for _, id := range h.registry.holds(agentIDs) {
		out[id] = h.cfg.Replica
	}
	if err != nil {
		return out, fmt.Errorf("websocket: locating agents: %w", err)
	}
	return out, nil
}

// locate returns the holder of the agent's connection on another replica.
func (h *AgentHub) locate(ctx context.Context, agentID string) (cluster.Owner, bool) {
	return h.link.locate(ctx, agentID)
}

// GetConnection returns the AgentConnection of an agent, or nil when it is not connected.
// The returned connection must not be modified.
func (h *AgentHub) GetConnection(agentID string) *AgentConnection {
	return h.registry.get(agentID)
}

// IsAgentConnected reports whether the agent has a connection on this replica or, through the
// cluster directory, on another one.
func (h *AgentHub) IsAgentConnected(agentID string) bool {
	if h.GetConnection(agentID) != nil {
		return true
	}
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	_, ok := h.locate(ctx, agentID)
	return ok
}

// ConnectedCount returns how many agents are connected to this replica.
func (h *AgentHub) ConnectedCount() int {
	return h.registry.count()
}

// UpdateAgentHeartbeat records a heartbeat of a connected agent: LastPing now, and the
// database's last_heartbeat at the next flush. ErrAgentNotConnected when it has no connection.
func (h *AgentHub) UpdateAgentHeartbeat(agentID string) error {
	c := h.GetConnection(agentID)
	if c == nil {
		return fmt.Errorf("websocket: heartbeat of agent %q: %w", agentID, ErrAgentNotConnected)
	}
	now := h.cfg.Clock.Now()
	c.touch(now)
	h.beats.queue(c.AgentID, c.connID, now, c.Status(), nil)
	return nil
}

// BroadcastToAllAgents queues message, as it is, to every agent connected to any replica but
// excludeAgentID, without blocking; an agent whose queue is full is closed with 4001. A
// `shutdown` message makes StreamSpace's agents stop for good: do not broadcast one to end a
// replica. Should the cluster not answer, the agents of this replica still get it.
func (h *AgentHub) BroadcastToAllAgents(message []byte, excludeAgentID string) {
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	if err := h.link.broadcast(ctx, BroadcastMessage{Message: message, ExcludeAgentID: excludeAgentID}); err != nil {
		h.cfg.Logger.Warn("broadcasting to the cluster's agents failed", "err", err)
		if !errors.Is(err, cluster.ErrLocalOnly) {
			h.broadcastLocal(message, excludeAgentID)
		}
	}
}

// broadcastLocal queues message to this replica's agents but excludeAgentID.
func (h *AgentHub) broadcastLocal(message []byte, excludeAgentID string) {
	for _, c := range h.registry.all(excludeAgentID) {
		c.push(message)
	}
}

// Run starts the hub's periodic work and blocks until Stop: stale agents (4002), ack
// timeouts and resends, command deadlines, and heartbeat writes. A second call while one runs
// returns at once.
func (h *AgentHub) Run() {
	h.run.mu.Lock()
	if h.run.running || h.registry.isClosed() {
		h.run.mu.Unlock()
		return
	}
	h.run.running = true
	h.run.mu.Unlock()
	defer close(h.run.done)
	check := h.cfg.Clock.NewTicker(h.cfg.CheckInterval)
	defer check.Stop()
	flush := h.cfg.Clock.NewTicker(h.cfg.HeartbeatFlush)
	defer flush.Stop()
	for {
		select {
		case <-check.Chan():
			h.check(h.ctx)
		case <-flush.Chan():
			h.beats.flush(h.ctx)
		case <-h.run.stopCh:
			return
		}
	}
}

// check closes stale connections, queues resends of late acks and fails commands whose
// deliveries are used up, re-wakes dispatchers whose last pass failed, and expires commands
// past their deadline.
func (h *AgentHub) check(ctx context.Context) {
	now := h.cfg.Clock.Now()
	for _, c := range h.registry.all("") {
		if now.Sub(c.LastSeen()) > h.cfg.HeartbeatTimeout {
			c.closeWith(CloseHeartbeatTimeout, "heartbeat timeout", "heartbeat_timeout")
			continue
		}
		h.commands.sweep(ctx, c.cmds, now)
	}
	h.commands.wakeWaiting(ctx)
	h.commands.expire(ctx, now)
	h.checks.Add(1)
}

// Stop closes every agent connection with 1001 (agents reconnect to another replica; no
// `shutdown` is sent), waits up to DrainTimeout for their cleanup, writes the last heartbeats
// and ends Run. It is idempotent.
func (h *AgentHub) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.DrainTimeout)
	defer cancel()
	_ = h.Shutdown(ctx)
}

// Shutdown is Stop with the caller's deadline; it returns ctx's error when connections were
// still closing at the deadline.
func (h *AgentHub) Shutdown(ctx context.Context) error {
	var err error
	h.run.stopOnce.Do(func() {
		conns := h.registry.close()
		close(h.run.stopCh)
		for _, c := range conns {
			c.closeWith(websocket.CloseGoingAway, "server shutting down", "shutdown")
		}
		done := h.registry.wait()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("websocket: agent hub shutdown: %w", ctx.Err())
		}
		h.beats.flush(context.WithoutCancel(ctx))
		h.run.mu.Lock()
		running := h.run.running
		h.run.mu.Unlock()
		if running {
			<-h.run.done
		}
		h.run.cancel()
		h.logs.stopRelays()
		if err != nil {
			// Connections still closing give up their database calls now; wait for them
			// briefly so none outlives the caller's database.
			select {
			case <-done:
			case <-time.After(closeGrace):
			}
		}
		h.link.close()
	})
	return err
}
