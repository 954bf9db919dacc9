package websocket

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// Hub maintains the browser WebSocket connections of one replica and
// delivers messages to them.
//
// Concurrency contract: every method is safe for concurrent use. Clients are
// indexed by organization, and within it by subscribed user and session and
// by role, so a delivery costs the number of its receivers, not the number
// of connections. Delivery never blocks the caller: each client has a
// bounded queue, and a client whose queue is full is closed with 4001. No
// socket I/O ever happens under the hub's lock. On Linux the clients' plain
// TCP sockets are read by one poller goroutine of the hub (epoll), elsewhere
// and on TLS each Client has a reader goroutine of its own; its frames are
// written without blocking by the goroutine that delivers them, and a writer
// goroutine exists only while the socket cannot take what is queued (see
// Client).
//
// Lifecycle: NewHub, then `go hub.Run()`. Clients may be served before Run
// starts. Stop (or Shutdown) closes every client with 1001 and refuses new
// ones; Run returns once all client goroutines have ended or DrainTimeout
// passed. After Stop nothing blocks: Broadcast and friends become no-ops.
type Hub struct {
	cfg     Config
	metrics kindMetrics

	mu      sync.RWMutex // guards byID, orgs, total, stopped and client subscription sets
	byID    map[string]*Client
	orgs    map[string]*orgIndex
	total   int
	live    int // clients whose goroutines have not ended yet
	stopped bool
	nextSeq uint64

	expiries expiryQueue
	pinging  bool // the pinger runs: from the first client's registration until none is left

	// positions records the last stream position delivered per org, so a
	// client registering now is told exactly where its stream starts.
	positions orgPositions
	stopping  hubStop
	// flushers are the goroutines that write a large delivery (handOut); shutdown waits for
	// them too.
	flushers sync.WaitGroup
	// poller reads the clients' raw sockets (inbound_poll_linux.go).
	poller poller
	// review, when set, is handed the clients held by a delivery that may have ended their
	// access to sessionID (see changesAccess); it must not block, and releases each once
	// checked. Set before the hub receives anything.
	review func(orgID, sessionID string, clients []*Client)
}

// orgPositions is the last stream position delivered per organization.
type orgPositions struct {
	mu   sync.Mutex
	last map[string]cluster.Position
}

// hubStop is the hub's stop: stop is closed once by Stop, drained when stopped and no client's
// goroutines are left.
type hubStop struct {
	once    sync.Once
	stop    chan struct{}
	drained chan struct{}
}

// orgIndex is one organization's clients. It exists while the org has any.
type orgIndex struct {
	namespace string
	clients   map[*Client]struct{}
	wholeOrg  map[*Client]struct{}
	users     map[string]*subscriberSet
	sessions  map[string]*subscriberSet
}

type clientSet = map[*Client]struct{}

// NewHub creates a hub with the default configuration.
func NewHub() *Hub { return NewHubWithConfig(Config{}) }

// NewHubWithConfig creates a hub; zero Config fields take their defaults.
func NewHubWithConfig(cfg Config) *Hub {
	cfg = cfg.withDefaults()
	return newHub(cfg, "browser", newHubMetrics(cfg.Registerer))
}

func newHub(cfg Config, kind string, m *hubMetrics) *Hub {
	return &Hub{
		cfg:       cfg,
		metrics:   m.forKind(kind),
		byID:      make(map[string]*Client),
		orgs:      make(map[string]*orgIndex),
		positions: orgPositions{last: make(map[string]cluster.Position)},
		stopping:  hubStop{stop: make(chan struct{}), drained: make(chan struct{})},
	}
}

// Run blocks until Stop is called, then waits up to DrainTimeout for every
// client to finish writing its queue and close.
func (h *Hub) Run() {
	<-h.stopping.stop
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.DrainTimeout)
	defer cancel()
	_ = h.wait(ctx)
}

// Stop closes every client with 1001 and makes the hub refuse new clients.
// It does not wait; it is idempotent.
func (h *Hub) Stop() {
	h.stopping.once.Do(func() {
		h.mu.Lock()
		h.stopped = true
		clients := make([]*Client, 0, h.total)
		for _, idx := range h.orgs {
			for c := range idx.clients {
				clients = append(clients, c)
			}
		}
		if h.live == 0 {
			close(h.stopping.drained)
		}
		h.mu.Unlock()
		close(h.stopping.stop)
		h.expiries.stop()
		for _, c := range clients {
			c.closeWith(websocket.CloseGoingAway, "server shutting down", "shutdown")
		}
	})
}

// Shutdown stops the hub and waits until every client's goroutines have
// ended or ctx is done.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.Stop()
	return h.wait(ctx)
}

func (h *Hub) wait(ctx context.Context) error {
	select {
	case <-h.stopping.drained:
		// No client is left to deliver to: the last flushers and the poller are ending.
		h.flushers.Wait()
		h.poller.wait()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ServeClient handles a new WebSocket connection.
//
// Deprecated: it has no organization. The client is placed in the configured
// default organization and receives only that organization's messages. The
// server never uses it; use ServeClientWithOrg.
func (h *Hub) ServeClient(conn *websocket.Conn, clientID string) {
	h.ServeClientWithOrg(conn, clientID, h.cfg.DefaultOrg, h.cfg.DefaultNamespace, "")
}

// ServeClientWithOrg registers conn as a client of orgID and starts reading
// and writing it (see Hub for which goroutines do); it returns at once. The client receives the
// organization's broadcasts, and session events once subscribed through the
// Notifier. An empty orgID is refused with close code 1008.
func (h *Hub) ServeClientWithOrg(conn *websocket.Conn, clientID, orgID, k8sNamespace, userID string) {
	if orgID == "" {
		closeConn(conn, h.cfg.WriteWait, websocket.ClosePolicyViolation, "organization required")
		return
	}
	h.serve(conn, clientSpec{id: clientID, org: OrgContext{OrgID: orgID, K8sNamespace: k8sNamespace, UserID: userID}}, nil, cluster.Position{})
}

// clientSpec is everything a client is registered with, atomically.
type clientSpec struct {
	id       string
	org      OrgContext
	users    []string
	sessions []string
	// held: deliveries wait until the caller releases the client with its
	// first frames (the greeting still goes first).
	held bool
	// onGone runs once the client is unregistered, outside the hub's locks: it ends the
	// client's watch of its org's stream and removes its connection record.
	onGone func()
}

// serve creates and registers a client. greet, when set, builds the first
// frame from the org's stream position at the instant of registration, so
// the client knows exactly which events it will and will not receive; a nil
// frame sends nothing (a held client's caller sends it with release).
// It returns nil when the hub is stopped (conn is then closed with 1001).
//
// fallback is the org's position as the bus reported it just before; the
// hub's own record wins when it has one, since it is updated under the same
// lock that registration takes.
func (h *Hub) serve(conn *websocket.Conn, spec clientSpec, greet func(cluster.Position) []byte, fallback cluster.Position) *Client {
	c := newClient(h, conn, spec)
	if !h.register(c, spec, greet, fallback) {
		closeConn(conn, h.cfg.WriteWait, websocket.CloseGoingAway, "server shutting down")
		return nil
	}
	c.start(conn)
	return c
}

func (h *Hub) register(c *Client, spec clientSpec, greet func(cluster.Position) []byte, fallback cluster.Position) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return false
	}
	idx := h.orgs[c.org.OrgID]
	if idx == nil {
		idx = &orgIndex{
			clients:  make(clientSet),
			wholeOrg: make(clientSet),
			users:    make(map[string]*subscriberSet),
			sessions: make(map[string]*subscriberSet),
		}
		h.orgs[c.org.OrgID] = idx
	}
	if idx.namespace == "" { // the first client that names one
		idx.namespace = c.org.K8sNamespace
	}
	idx.clients[c] = struct{}{}
	if c.org.seesWholeOrg() {
		idx.wholeOrg[c] = struct{}{}
	}
	for _, u := range spec.users {
		addSubscription(idx.users, &c.users, c, u)
	}
	for _, s := range spec.sessions {
		addSubscription(idx.sessions, &c.sessions, c, s)
	}
	h.byID[c.id] = c
	c.pingSlot = uint8(h.nextSeq % pingSlots)
	h.nextSeq++
	if !h.pinging {
		h.pinging = true
		go h.pingLoop()
	}
	h.total++
	h.live++
	h.metrics.connections.Inc()
	if greet != nil {
		h.positions.mu.Lock()
		pos, seen := h.positions.last[c.org.OrgID]
		// The later of the two wins: a message delivered since fallback was read is newer;
		// a record left from a time no client of the org was here (the bus stopped sending
		// it) is older, as is one of a previous epoch. Messages at or before the client's
		// start that are still on their way from the bus skip this client only: the org's
		// other clients have not had them yet.
		if !seen || fallback.Epoch != pos.Epoch || fallback.Offset > pos.Offset {
			pos = fallback
		}
		h.positions.mu.Unlock()
		c.gate.after = pos
		if frame := greet(pos); frame != nil {
			c.preload(textFrame(frame)) // written when the client starts, not under the lock
		}
	}
	return true
}

// pingSlots is how many groups the pinger splits clients into: each group is
// pinged at its own tick, so pings are spread over the interval instead of
// all written at once.
const pingSlots = 8

// pingLoop pings every client once per PingInterval, one slot of clients per
// tick. It is started by the registration that finds it not running and ends
// when the hub stops or has no client left, so an idle hub holds no
// goroutine. A ping goes through the client's queue like any frame, so it
// never interleaves with another frame's bytes.
func (h *Hub) pingLoop() {
	tick := time.NewTicker(max(h.cfg.PingInterval/pingSlots, time.Millisecond))
	defer tick.Stop()
	var due []*Client
	for slot := uint64(0); ; slot = (slot + 1) % pingSlots {
		select {
		case <-h.stopping.stop:
			h.mu.Lock()
			h.pinging = false
			h.mu.Unlock()
			return
		case <-tick.C:
		}
		now := monoNow()
		h.mu.RLock()
		for _, c := range h.byID {
			if uint64(c.pingSlot) == slot || c.pongOverdue(now) {
				due = append(due, c)
			}
		}
		empty := len(h.byID) == 0
		h.mu.RUnlock()
		if empty {
			h.mu.Lock()
			if len(h.byID) == 0 {
				h.pinging = false
				h.mu.Unlock()
				return
			}
			h.mu.Unlock()
		}
		for _, c := range due {
			if c.pongOverdue(now) {
				c.closePongOverdue()
				continue
			}
			c.out.offer(pingFrame)
		}
		clear(due)
		due = due[:0]
	}
}

// addSubscription indexes c under key, and records key on c for removal.
// The caller holds the hub's lock.
func addSubscription(index map[string]*subscriberSet, own *[]string, c *Client, key string) {
	if key == "" || slices.Contains(*own, key) {
		return
	}
	set := index[key]
	if set == nil {
		set = &subscriberSet{}
		index[key] = set
	}
	set.add(c)
	*own = append(*own, key)
}

// unregister removes c from every index, then runs its onGone. It is called once, by c's
// writer.
func (h *Hub) unregister(c *Client) {
	h.removeClient(c)
	if c.onGone != nil {
		c.onGone()
	}
}

func (h *Hub) removeClient(c *Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	idx := h.orgs[c.org.OrgID]
	if idx == nil {
		return
	}
	if _, ok := idx.clients[c]; !ok {
		return
	}
	delete(idx.clients, c)
	delete(idx.wholeOrg, c)
	idx.unsubscribe(c)
	if len(idx.clients) == 0 {
		delete(h.orgs, c.org.OrgID)
		// Nothing of the org reaches this replica any more (the bus watch ends), so the last
		// position would go stale. (A message still on its way may record it again; register
		// prefers the bus's fresher position then.)
		h.positions.mu.Lock()
		delete(h.positions.last, c.org.OrgID)
		h.positions.mu.Unlock()
	}
	if h.byID[c.id] == c {
		delete(h.byID, c.id)
	}
	h.total--
	h.metrics.connections.Dec()
}

// unsubscribe drops every user and session subscription of c; the caller
// holds the hub's lock.
func (idx *orgIndex) unsubscribe(c *Client) {
	for _, u := range c.users {
		removeFromSet(idx.users, u, c)
	}
	for _, s := range c.sessions {
		removeFromSet(idx.sessions, s, c)
	}
	c.users, c.sessions = nil, nil
}

func removeFromSet(index map[string]*subscriberSet, key string, c *Client) {
	if set := index[key]; set != nil {
		set.remove(c)
		if set.len() == 0 {
			delete(index, key)
		}
	}
}

// finished is called once when both of c's goroutines have returned.
func (h *Hub) finished() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.live--
	if h.stopped && h.live == 0 {
		close(h.stopping.drained)
	}
}

// subscribe adds a user or session subscription to a registered client.
func (h *Hub) subscribe(clientID, key string, session bool) bool {
	h.mu.Lock()
	c := h.byID[clientID]
	if c == nil {
		h.mu.Unlock()
		return false
	}
	idx := h.orgs[c.org.OrgID]
	if idx == nil {
		h.mu.Unlock()
		return false
	}
	if limit := h.cfg.MaxSubscriptions; limit > 0 && len(c.users)+len(c.sessions) >= limit &&
		!slices.Contains(c.users, key) && !slices.Contains(c.sessions, key) {
		h.mu.Unlock()
		// Closed rather than silently not subscribed: the browser would otherwise miss events
		// it believes it asked for.
		c.closeWith(websocket.ClosePolicyViolation, "too many subscriptions", "too_many_subscriptions")
		return false
	}
	defer h.mu.Unlock()
	if session {
		addSubscription(idx.sessions, &c.sessions, c, key)
	} else {
		addSubscription(idx.users, &c.users, c, key)
	}
	return true
}

// unsubscribeClient drops every subscription of the client with clientID;
// the connection stays open and keeps receiving org-wide messages.
func (h *Hub) unsubscribeClient(clientID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.byID[clientID]
	if c == nil {
		return
	}
	if idx := h.orgs[c.org.OrgID]; idx != nil {
		idx.unsubscribe(c)
	}
}

// clearSubscriptions drops every user and session subscription of every client.
func (h *Hub) clearSubscriptions() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, idx := range h.orgs {
		for c := range idx.clients {
			idx.unsubscribe(c)
		}
	}
}

// Broadcast sends message to every client of every organization on this
// replica. SECURITY: it crosses organizations; use it only for messages
// that carry no tenant data. Prefer BroadcastToOrg.
func (h *Hub) Broadcast(message []byte) {
	start := time.Now()
	targets := getTargets()
	defer putTargets(targets)
	h.mu.RLock()
	for _, idx := range h.orgs {
		for c := range idx.clients {
			*targets = append(*targets, c)
		}
	}
	h.mu.RUnlock()
	h.fanOut(*targets, message)
	h.metrics.fanout.Observe(time.Since(start).Seconds())
}

// fanOut encodes message once and queues the frame to every target.
func (h *Hub) fanOut(targets []*Client, message []byte) {
	if len(targets) == 0 {
		return
	}
	frame := textFrame(message)
	handOut(&h.flushers, targets, func(c *Client) bool { return c.enqueueFrameLater(frame) })
}

// BroadcastToOrg sends message to every client of orgID on this replica,
// at once. SECURITY: this is the preferred broadcast for org-scoped data.
// To reach the org's clients on every replica, in the org's ordered stream,
// use Notifier.BroadcastToOrg.
func (h *Hub) BroadcastToOrg(orgID string, message []byte) {
	start := time.Now()
	targets := getTargets()
	defer putTargets(targets)
	h.mu.RLock()
	if idx := h.orgs[orgID]; idx != nil {
		for c := range idx.clients {
			*targets = append(*targets, c)
		}
	}
	h.mu.RUnlock()
	h.fanOut(*targets, message)
	h.metrics.fanout.Observe(time.Since(start).Seconds())
}

// ClientCount returns the number of connected clients.
func (h *Hub) ClientCount() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.total
}

// GetClientsByOrg returns the clients of one organization.
// SECURITY: used for org-scoped work; never mixes organizations.
func (h *Hub) GetClientsByOrg(orgID string) []*Client {
	h.mu.RLock()
	defer h.mu.RUnlock()
	idx := h.orgs[orgID]
	if idx == nil {
		return nil
	}
	out := make([]*Client, 0, len(idx.clients))
	for c := range idx.clients {
		out = append(out, c)
	}
	return out
}

// GetK8sNamespaceForOrg returns the Kubernetes namespace of the first client
// of orgID that named one, or "" when the org has no such client.
func (h *Hub) GetK8sNamespaceForOrg(orgID string) string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if idx := h.orgs[orgID]; idx != nil {
		return idx.namespace
	}
	return ""
}

// GetUniqueOrgs returns the organizations that have connected clients.
func (h *Hub) GetUniqueOrgs() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.orgs))
	for org := range h.orgs {
		out = append(out, org)
	}
	return out
}
