package websocket

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// agentRowStore is where the registry records which connection of an agent is online.
type agentRowStore interface {
	MarkAgentOnline(ctx context.Context, id, replica, connectionID string, at time.Time) error
	MarkAgentOffline(ctx context.Context, id, connectionID string, at time.Time) (bool, error)
}

// agentRegistry is this replica's connections by agent, kept in agreement with the agent's
// database row (online, naming the connection) and its cluster claim. Lookups are synchronous
// under its lock, which is never held across I/O.
type agentRegistry struct {
	store   agentRowStore
	link    *replicaLink
	replica string
	clock   clockwork.Clock
	logger  *slog.Logger

	mu     sync.RWMutex
	conns  map[string]*AgentConnection
	closed bool           // set by close: registrations are refused
	live   sync.WaitGroup // registered connections not yet removed

	// locks serialize the registrations of one agent (by a stripe of its id), so the database
	// and the directory name the same connection as the map: two connections racing in cannot
	// leave the row pointing at the one that was replaced. Held across those writes only.
	locks [64]sync.Mutex
}

func newAgentRegistry(store agentRowStore, link *replicaLink, cfg AgentHubConfig) *agentRegistry {
	return &agentRegistry{store: store, link: link, replica: cfg.Replica, clock: cfg.Clock, logger: cfg.Logger,
		conns: make(map[string]*AgentConnection)}
}

// regLockSeed seeds the hash that picks an agent's registration lock.
var regLockSeed = maphash.MakeSeed()

// stripe maps an agent id to one of n locks.
func stripe(id string, n int) int {
	return int(maphash.String(regLockSeed, id) % uint64(n))
}

// add records c online in the database, puts it in the map and claims it in the cluster, and
// returns the connection of the same agent it replaced, if any. attach runs under the map's
// lock with c in place, for what must name the same connection as the map.
func (r *agentRegistry) add(ctx context.Context, c *AgentConnection, attach func()) (*AgentConnection, error) {
	if r.isClosed() {
		return nil, ErrAgentHubStopped
	}
	reg := &r.locks[stripe(c.AgentID, len(r.locks))]
	reg.Lock()
	defer reg.Unlock()
	if err := r.store.MarkAgentOnline(ctx, c.AgentID, r.replica, c.connID, r.clock.Now()); err != nil {
		return nil, fmt.Errorf("websocket: register agent %q: %w", c.AgentID, err)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrAgentHubStopped
	}
	old := r.conns[c.AgentID]
	r.conns[c.AgentID] = c
	attach()
	r.live.Add(1)
	r.mu.Unlock()
	// Claimed under the registration lock too, so the directory names the same connection as
	// the map.
	r.link.claim(ctx, c.AgentID, c.connID)
	return old, nil
}

// remove forgets a connection whose goroutines have all ended and marks the agent offline,
// unless a newer connection took over (the database update and the release are guarded by
// connection id). detach runs under the map's lock.
func (r *agentRegistry) remove(ctx context.Context, c *AgentConnection, detach func()) {
	r.mu.Lock()
	if r.conns[c.AgentID] == c {
		delete(r.conns, c.AgentID)
	}
	detach()
	r.mu.Unlock()
	if _, err := r.store.MarkAgentOffline(ctx, c.AgentID, c.connID, r.clock.Now()); err != nil {
		r.logger.Warn("marking agent offline failed", "agent_id", c.AgentID, "err", err)
	}
	r.link.release(ctx, c.AgentID, c.connID)
}

// done reports a removed connection's cleanup finished, for wait.
func (r *agentRegistry) done() { r.live.Done() }

// wait returns a channel closed once every registered connection was removed.
func (r *agentRegistry) wait() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		r.live.Wait()
		close(ch)
	}()
	return ch
}

func (r *agentRegistry) get(agentID string) *AgentConnection {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.conns[agentID]
}

// dispatcher returns the command dispatcher of the agent's connection here, or nil.
func (r *agentRegistry) dispatcher(agentID string) *deliveries {
	if c := r.get(agentID); c != nil {
		return c.cmds
	}
	return nil
}

// all returns the registered connections but except's.
func (r *agentRegistry) all(except string) []*AgentConnection {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*AgentConnection, 0, len(r.conns))
	for id, c := range r.conns {
		if id != except {
			out = append(out, c)
		}
	}
	return out
}

func (r *agentRegistry) ids() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(r.conns))
	for id := range r.conns {
		ids = append(ids, id)
	}
	return ids
}

// holds reports which of ids have a connection here.
func (r *agentRegistry) holds(ids []string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for _, id := range ids {
		if _, ok := r.conns[id]; ok {
			out = append(out, id)
		}
	}
	return out
}

func (r *agentRegistry) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.conns)
}

func (r *agentRegistry) isClosed() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.closed
}

// close refuses registrations from now on and returns the connections registered.
func (r *agentRegistry) close() []*AgentConnection {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	out := make([]*AgentConnection, 0, len(r.conns))
	for _, c := range r.conns {
		out = append(out, c)
	}
	return out
}
