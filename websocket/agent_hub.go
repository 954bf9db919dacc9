package websocket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
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
	store   AgentStore
	metrics *agentMetrics
	dir     cluster.Directory
	// owned is the Redis connection NewAgentHubWithRedis made; the hub closes it at Stop.
	owned    *cluster.Redis
	unsubDir func()

	mu      sync.RWMutex
	conns   map[string]*AgentConnection
	stopped bool
	live    sync.WaitGroup // registered connections not yet cleaned up

	// regLocks serialize the registrations of one agent (by a stripe of its id), so the
	// database names the same connection as the map: two connections racing in cannot leave
	// the row pointing at the one that was replaced. Held across that one write only.
	regLocks [64]sync.Mutex

	beatsMu sync.Mutex
	beats   map[string]db.AgentHeartbeat // latest beat per agent since the last flush

	ctx      context.Context // store calls; cancelled at the end of Stop
	cancel   context.CancelFunc
	stopCh   chan struct{}
	stopOnce sync.Once
	runMu    sync.Mutex
	running  bool
	runDone  chan struct{}

	checks atomic.Uint64 // completed check passes, so tests can wait for one

	// logs relays the log streams of the agents held here (see OpenLogs); Stop stops it.
	logs *PodLogs
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
	h.owned = r
	return h
}

func newAgentHub(store AgentStore, cfg AgentHubConfig) *AgentHub {
	cfg = cfg.withDefaults()
	h := &AgentHub{
		cfg:     cfg,
		store:   store,
		metrics: newAgentMetrics(cfg.Registerer),
		dir:     cfg.Directory,
		conns:   make(map[string]*AgentConnection),
		beats:   make(map[string]db.AgentHeartbeat),
		stopCh:  make(chan struct{}),
		runDone: make(chan struct{}),
	}
	if h.dir == nil {
		h.dir = cluster.NewMemoryDirectory(cfg.Replica)
	}
	h.logs = hubLogs(cfg, h.dir)
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.unsubDir = h.dir.Subscribe(h.onReplicaMessage)
	return h
}

// ServeAgent registers an upgraded connection of an authenticated agent and starts its
// goroutines. It returns once the connection is registered; the connection then lives until
// the agent leaves, is replaced, goes stale or the hub stops. On error the caller closes conn.
func (h *AgentHub) ServeAgent(conn *websocket.Conn, agentID, platform string) (*AgentConnection, error) {
	c := &AgentConnection{
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

// RegisterAgent adds a new agent connection to the hub: it records the agent online in the
// database, replaces a previous connection of the same agent (closed with 4000; its late
// cleanup cannot touch this one), and starts the connection's goroutines. A connection
// without Conn gets only its command dispatcher; the caller then reads Send itself.
func (h *AgentHub) RegisterAgent(conn *AgentConnection) error {
	if conn == nil || conn.AgentID == "" {
		return errors.New("websocket: register agent: connection without agent id")
	}
	h.prepare(conn)
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	if h.isStopped() {
		return ErrAgentHubStopped
	}
	reg := &h.regLocks[stripe(conn.AgentID, len(h.regLocks))]
	reg.Lock()
	if err := h.store.MarkAgentOnline(ctx, conn.AgentID, h.cfg.Replica, conn.connID, h.cfg.Clock.Now()); err != nil {
		reg.Unlock()
		return fmt.Errorf("websocket: register agent %q: %w", conn.AgentID, err)
	}
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		reg.Unlock()
		return ErrAgentHubStopped
	}
	old := h.conns[conn.AgentID]
	h.conns[conn.AgentID] = conn
	h.logs.agentConnected(conn)
	h.live.Add(1)
	h.mu.Unlock()
	// Claimed under the registration lock too, so the directory names the same connection as
	// the map. A claim Redis did not take is retried by the directory's refresh.
	if err := h.dir.Claim(ctx, conn.AgentID, conn.connID); err != nil {
		h.cfg.Logger.Warn("claiming agent in the cluster failed; retried in the background",
			"agent_id", conn.AgentID, "err", err)
	}
	reg.Unlock()
	if old != nil {
		old.closeWith(CloseReplaced, "replaced by a newer connection", "replaced")
	}
	h.metrics.connections.Inc()
	h.cfg.Logger.Info("agent connected", "agent_id", conn.AgentID, "platform", conn.Platform,
		"replaced", old != nil)
	conn.start()
	return nil
}

// regLockSeed seeds the hash that picks an agent's registration lock.
var regLockSeed = maphash.MakeSeed()

// stripe maps an agent id to one of n locks.
func stripe(id string, n int) int {
	return int(maphash.String(regLockSeed, id) % uint64(n))
}

// prepare fills the unexported parts of a connection the caller built.
func (h *AgentHub) prepare(c *AgentConnection) {
	c.hub = h
	c.connID = uuid.NewString()
	c.status = models.AgentStatusOnline
	c.done = make(chan struct{})
	c.readDone = make(chan struct{})
	c.wake = make(chan struct{}, 1)
	c.dispatchCtx, c.cancelDispatch = context.WithCancel(h.ctx)
	c.inflight = make(map[string]inflightCommand)
	c.limiter = rate.NewLimiter(rate.Limit(h.cfg.MessageRate), h.cfg.MessageBurst)
	c.logLimiter = rate.NewLimiter(logStreamRate, logStreamRate)
	c.statuses = make(map[string]*pendingStatus)
	c.statusTaken = make(chan struct{})
	c.statusWake = make(chan struct{}, 1)
	if c.Send == nil {
		c.Send = make(chan []byte, h.cfg.QueueSize)
	}
	c.Mutex.Lock()
	if c.LastPing.IsZero() {
		c.LastPing = h.cfg.Clock.Now()
	}
	c.Mutex.Unlock()
}

// unregister forgets a connection whose goroutines have all ended and marks the agent offline,
// unless a newer connection took over (the database update is guarded by connection id).
func (h *AgentHub) unregister(c *AgentConnection) {
	h.mu.Lock()
	if h.conns[c.AgentID] == c {
		delete(h.conns, c.AgentID)
	}
	h.logs.agentLeft(c)
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	if _, err := h.store.MarkAgentOffline(ctx, c.AgentID, c.connID, h.cfg.Clock.Now()); err != nil {
		h.cfg.Logger.Warn("marking agent offline failed", "agent_id", c.AgentID, "err", err)
	}
	// Compare-and-delete: when the agent already holds a newer connection, here or on another
	// replica, its claim stays.
	if _, err := h.dir.Release(ctx, c.AgentID, c.connID); err != nil {
		h.cfg.Logger.Warn("releasing agent in the cluster failed; its claim expires", "agent_id", c.AgentID, "err", err)
	}
	h.logs.endRoutes(c)
	h.metrics.connections.Dec()
	h.cfg.Logger.Info("agent disconnected", "agent_id", c.AgentID, "code", c.closeCode, "reason", c.closeReason)
	h.live.Done()
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
	owner, ok := h.locate(ctx, agentID)
	if !ok {
		return false
	}
	payload, _ := json.Marshal(disconnectOrder{Code: code, Reason: reason, Shutdown: shutdown})
	msg := cluster.ReplicaMessage{Kind: kindDisconnect, AgentID: agentID, Payload: payload}
	if err := h.dir.Send(ctx, owner.Replica, msg); err != nil {
		h.cfg.Logger.Warn("asking the agent's replica to disconnect it failed", "agent_id", agentID,
			"replica", owner.Replica, "err", err)
		return false
	}
	return true
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
	h.mu.RLock()
	ids := make([]string, 0, len(h.conns))
	for id := range h.conns {
		ids = append(ids, id)
	}
	h.mu.RUnlock()
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
	h.mu.RLock()
	for _, id := range agentIDs {
		if _, ok := h.conns[id]; ok {
			out[id] = h.cfg.Replica
		}
	}
	h.mu.RUnlock()
	if err != nil {
		return out, fmt.Errorf("websocket: locating agents: %w", err)
	}
	return out, nil
}

// locate returns the holder of the agent's connection on another replica.
func (h *AgentHub) locate(ctx context.Context, agentID string) (cluster.Owner, bool) {
	owner, ok, err := h.dir.Lookup(ctx, agentID)
	if err != nil {
		// Debug: during an outage every lookup fails, and the cluster logs the outage once.
		h.cfg.Logger.Debug("locating agent in the cluster failed", "agent_id", agentID, "err", err)
		return cluster.Owner{}, false
	}
	return owner, ok && owner.Replica != h.cfg.Replica
}

// GetConnection returns the AgentConnection of an agent, or nil when it is not connected.
// The returned connection must not be modified.
func (h *AgentHub) GetConnection(agentID string) *AgentConnection {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.conns[agentID]
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
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.conns)
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
	h.queueBeat(c, now, c.Status(), nil)
	return nil
}

// queueBeat keeps the agent's latest heartbeat for the next flush: however often agents beat,
// the database sees one transaction per HeartbeatFlush.
func (h *AgentHub) queueBeat(c *AgentConnection, at time.Time, status string, capacity map[string]any) {
	h.metrics.heartbeats.Inc()
	h.beatsMu.Lock()
	prev, ok := h.beats[c.AgentID]
	if ok && prev.ConnectionID == c.connID && capacity == nil {
		capacity = prev.Capacity
	}
	h.beats[c.AgentID] = db.AgentHeartbeat{
		AgentID: c.AgentID, ConnectionID: c.connID, At: at, Status: status, Capacity: capacity,
	}
	h.beatsMu.Unlock()
}

// flushBeats writes the heartbeats queued since the last flush in one transaction.
func (h *AgentHub) flushBeats(ctx context.Context) {
	h.beatsMu.Lock()
	if len(h.beats) == 0 {
		h.beatsMu.Unlock()
		return
	}
	batch := make([]db.AgentHeartbeat, 0, len(h.beats))
	for _, b := range h.beats {
		batch = append(batch, b)
	}
	clear(h.beats)
	h.beatsMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	if err := h.store.RecordAgentHeartbeats(ctx, batch); err != nil {
		h.cfg.Logger.Warn("writing heartbeats failed", "agents", len(batch), "err", err)
		return
	}
	h.metrics.flushes.Inc()
}

// BroadcastToAllAgents queues message, as it is, to every agent connected to any replica but
// excludeAgentID, without blocking; an agent whose queue is full is closed with 4001. A
// `shutdown` message makes StreamSpace's agents stop for good: do not broadcast one to end a
// replica. Should the cluster not answer, the agents of this replica still get it.
func (h *AgentHub) BroadcastToAllAgents(message []byte, excludeAgentID string) {
	payload, err := json.Marshal(BroadcastMessage{Message: message, ExcludeAgentID: excludeAgentID})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	if err := h.dir.Broadcast(ctx, cluster.ReplicaMessage{Kind: kindBroadcast, Payload: payload}); err != nil {
		h.cfg.Logger.Warn("broadcasting to the cluster's agents failed", "err", err)
		if !errors.Is(err, cluster.ErrLocalOnly) {
			h.broadcastLocal(message, excludeAgentID)
		}
	}
}

// broadcastLocal queues message to this replica's agents but excludeAgentID.
func (h *AgentHub) broadcastLocal(message []byte, excludeAgentID string) {
	h.mu.RLock()
	targets := make([]*AgentConnection, 0, len(h.conns))
	for id, c := range h.conns {
		if id != excludeAgentID {
			targets = append(targets, c)
		}
	}
	h.mu.RUnlock()
	for _, c := range targets {
		c.push(message)
	}
}

// SendCommandToAgent stores the command and delivers it to the agent as a "command" frame.
// An empty CommandID is filled in; resubmitting a CommandID already stored for the same agent
// and action is harmless. The command is never lost: when the agent is not connected the
// error wraps ErrAgentNotConnected, and the command waits for the agent's next connection.
func (h *AgentHub) SendCommandToAgent(agentID string, command *models.AgentCommand) error {
	if command == nil {
		return errors.New("websocket: send command: nil command")
	}
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	cmd := *command
	cmd.AgentID = agentID
	stored, connected, err := h.submit(ctx, cmd, nil)
	if err != nil {
		return err
	}
	*command = stored
	if !connected {
		return fmt.Errorf("websocket: command %s stored for agent %q: %w", stored.CommandID, agentID, ErrAgentNotConnected)
	}
	return nil
}

// SubmitCommand stores cmd (status pending) and wakes the agent's dispatcher if the agent is
// connected here. With session set, the session row is created in the same transaction (the
// start_session of the admin API) and session.created is published. Defaults: a new
// time-ordered "cmd-<uuid>" id, the payload's "sessionId" and cmd.SessionID filled from each other, the
// CommandTTL deadline. A CommandID already stored for the same agent and action returns that
// command; for anything else it is ErrCommandConflict.
func (h *AgentHub) SubmitCommand(ctx context.Context, cmd models.AgentCommand, session *models.Session) (models.AgentCommand, error) {
	stored, _, err := h.submit(ctx, cmd, session)
	return stored, err
}

// submit is SubmitCommand that also reports whether some replica holds the agent (the wake-up
// looked it up anyway).
func (h *AgentHub) submit(ctx context.Context, cmd models.AgentCommand, session *models.Session) (models.AgentCommand, bool, error) {
	if cmd.AgentID == "" || strings.TrimSpace(cmd.Action) == "" {
		return cmd, false, errors.New("websocket: submit command: agent id and action are required")
	}
	now := h.cfg.Clock.Now()
	if cmd.CommandID == "" {
		// Version 7 ids grow with time, so commands created in the same instant are still
		// delivered in the order they were submitted (ties on created_at sort by id).
		cmd.CommandID = "cmd-" + uuid.Must(uuid.NewV7()).String()
	}
	if cmd.Payload == nil {
		cmd.Payload = map[string]any{}
	}
	if cmd.SessionID == "" {
		if s, ok := cmd.Payload["sessionId"].(string); ok {
			cmd.SessionID = s
		}
	} else if _, ok := cmd.Payload["sessionId"]; !ok {
		cmd.Payload["sessionId"] = cmd.SessionID
	}
	cmd.Status, cmd.Attempts, cmd.CreatedAt = models.CommandStatusPending, 0, now
	if cmd.ExpiresAt == nil && h.cfg.CommandTTL > 0 {
		deadline := now.Add(h.cfg.CommandTTL)
		cmd.ExpiresAt = &deadline
	}
	var err error
	if session != nil {
		err = h.store.CreateSessionWithCommand(ctx, *session, cmd)
	} else {
		err = h.store.CreateCommand(ctx, cmd)
	}
	if errors.Is(err, db.ErrConflict) && session == nil {
		existing, gerr := h.store.GetCommand(ctx, cmd.CommandID)
		if gerr == nil && existing.AgentID == cmd.AgentID && existing.Action == cmd.Action {
			return existing, h.wakeAgent(ctx, cmd.AgentID), nil
		}
		return cmd, false, fmt.Errorf("websocket: submit command %q: %w", cmd.CommandID, ErrCommandConflict)
	}
	if err != nil {
		return cmd, false, fmt.Errorf("websocket: submit command %q: %w", cmd.CommandID, err)
	}
	h.metrics.commands.WithLabelValues(models.CommandStatusPending).Inc()
	if session != nil {
		h.publish(ctx, session.OrgID, SessionEvent{
			Type: EventSessionCreated, SessionID: session.ID, UserID: session.UserID, Timestamp: now,
			Data: map[string]any{"state": session.State, "template": session.Template, "agentId": cmd.AgentID},
		})
	}
	return cmd, h.wakeAgent(ctx, cmd.AgentID), nil
}

// wakeAgent starts a delivery pass for the agent on the replica that holds it, and reports
// whether some replica does. Nothing is lost when the wake-up is: the command waits in the
// database for the next pass or connection.
func (h *AgentHub) wakeAgent(ctx context.Context, agentID string) bool {
	if c := h.GetConnection(agentID); c != nil {
		c.wakeDispatcher()
		return true
	}
	owner, ok := h.locate(ctx, agentID)
	if !ok {
		return false
	}
	if err := h.dir.Send(ctx, owner.Replica, cluster.ReplicaMessage{Kind: kindWake, AgentID: agentID}); err != nil {
		h.cfg.Logger.Debug("waking the agent's replica failed; the command waits", "agent_id", agentID,
			"replica", owner.Replica, "err", err)
	}
	return true
}

// publish sends a session event through the configured publisher, if any.
func (h *AgentHub) publish(ctx context.Context, orgID string, ev SessionEvent) {
	if h.cfg.Events == nil {
		return
	}
	if _, err := h.cfg.Events.Publish(ctx, orgID, ev); err != nil {
		h.cfg.Logger.Warn("publishing session event failed", "org_id", orgID,
			"session_id", ev.SessionID, "type", string(ev.Type), "err", err)
	}
}

func (h *AgentHub) isStopped() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.stopped
}

// Run starts the hub's periodic work and blocks until Stop: stale agents (4002), ack
// timeouts and resends, command deadlines, and heartbeat writes. A second call while one runs
// returns at once.
func (h *AgentHub) Run() {
	h.runMu.Lock()
	if h.running || h.isStopped() {
		h.runMu.Unlock()
		return
	}
	h.running = true
	h.runMu.Unlock()
	defer close(h.runDone)
	check := h.cfg.Clock.NewTicker(h.cfg.CheckInterval)
	defer check.Stop()
	flush := h.cfg.Clock.NewTicker(h.cfg.HeartbeatFlush)
	defer flush.Stop()
	for {
		select {
		case <-check.Chan():
			h.check(h.ctx)
		case <-flush.Chan():
			h.flushBeats(h.ctx)
		case <-h.stopCh:
			return
		}
	}
}

// check closes stale connections, queues resends of late acks and fails commands whose
// deliveries are used up, re-wakes dispatchers whose last pass failed, and expires commands
// past their deadline.
func (h *AgentHub) check(ctx context.Context) {
	now := h.cfg.Clock.Now()
	h.mu.RLock()
	conns := make([]*AgentConnection, 0, len(h.conns))
	for _, c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.RUnlock()
	for _, c := range conns {
		if now.Sub(c.LastSeen()) > h.cfg.HeartbeatTimeout {
			c.closeWith(CloseHeartbeatTimeout, "heartbeat timeout", "heartbeat_timeout")
			continue
		}
		exhausted := c.overdue(now, h.cfg.AckTimeout, h.cfg.MaxAttempts)
		for _, f := range exhausted {
			h.failUnacknowledged(ctx, c, f, now)
		}
		if c.retry.Load() || c.hasResends() {
			c.wakeDispatcher()
		}
	}
	h.wakeWaiting(ctx)
	cctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	n, err := h.store.ExpireCommands(cctx, now)
	if err != nil {
		h.cfg.Logger.Warn("expiring commands failed", "err", err)
	} else if n > 0 {
		h.metrics.commands.WithLabelValues(models.CommandStatusExpired).Add(float64(n))
		h.cfg.Logger.Info("commands expired", "count", n)
	}
	h.checks.Add(1)
}

func (h *AgentHub) failUnacknowledged(ctx context.Context, c *AgentConnection, f inflightCommand, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	reason := fmt.Sprintf("not acknowledged after %d deliveries", f.attempt)
	tr, err := h.store.FailCommand(ctx, "", f.cmd.CommandID, reason, now)
	if err != nil {
		h.cfg.Logger.Warn("failing unacknowledged command failed", "agent_id", c.AgentID,
			"command_id", f.cmd.CommandID, "err", err)
		return
	}
	if tr.Applied {
		h.metrics.commands.WithLabelValues(models.CommandStatusFailed).Inc()
		h.cfg.Logger.Warn("command failed: no ack", "agent_id", c.AgentID,
			"command_id", f.cmd.CommandID, "attempts", f.attempt)
	}
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
	h.stopOnce.Do(func() {
		h.mu.Lock()
		h.stopped = true
		conns := make([]*AgentConnection, 0, len(h.conns))
		for _, c := range h.conns {
			conns = append(conns, c)
		}
		h.mu.Unlock()
		close(h.stopCh)
		for _, c := range conns {
			c.closeWith(websocket.CloseGoingAway, "server shutting down", "shutdown")
		}
		done := make(chan struct{})
		go func() {
			h.live.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("websocket: agent hub shutdown: %w", ctx.Err())
		}
		h.flushBeats(context.WithoutCancel(ctx))
		h.runMu.Lock()
		running := h.running
		h.runMu.Unlock()
		if running {
			<-h.runDone
		}
		h.cancel()
		h.logs.stopRelays()
		if err != nil {
			// Connections still closing give up their database calls now; wait for them
			// briefly so none outlives the caller's database.
			select {
			case <-done:
			case <-time.After(closeGrace):
			}
		}
		h.unsubDir()
		if h.owned != nil {
			_ = h.owned.Close()
		}
	})
	return err
}
