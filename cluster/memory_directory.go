package cluster

import (
	"context"
	"fmt"
	"sync"
)

// MemoryDirectory is the single-node Directory: every agent is held here or nowhere.
type MemoryDirectory struct {
	replica  string
	handlers handlerSet[ReplicaMessage]

	mu     sync.RWMutex
	owners map[string]string // agent id → generation
	closed bool
}

var _ Directory = (*MemoryDirectory)(nil)

// NewMemoryDirectory returns an in-process directory of the replica named replica.
func NewMemoryDirectory(replica string) *MemoryDirectory {
	return &MemoryDirectory{replica: replica, owners: make(map[string]string)}
}

// Replica names this replica.
func (d *MemoryDirectory) Replica() string { return d.replica }

// Claim records the agent held here.
func (d *MemoryDirectory) Claim(ctx context.Context, agentID, generation string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	d.owners[agentID] = generation
	return nil
}

// Release removes the claim if it is of this generation.
func (d *MemoryDirectory) Release(ctx context.Context, agentID, generation string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if g, ok := d.owners[agentID]; ok && g == generation {
		delete(d.owners, agentID)
		return true, nil
	}
	return false, nil
}

// Lookup returns the holder of agentID's connection.
func (d *MemoryDirectory) Lookup(ctx context.Context, agentID string) (Owner, bool, error) {
	if err := ctx.Err(); err != nil {
		return Owner{}, false, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	g, ok := d.owners[agentID]
	if !ok {
		return Owner{}, false, nil
	}
	return Owner{Replica: d.replica, Generation: g}, true, nil
}

// Lookups returns the holders of the agents that have one.
func (d *MemoryDirectory) Lookups(ctx context.Context, agentIDs []string) (map[string]Owner, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make(map[string]Owner)
	for _, id := range agentIDs {
		if g, ok := d.owners[id]; ok {
			out[id] = Owner{Replica: d.replica, Generation: g}
		}
	}
	return out, nil
}

// Connected lists the agents held here.
func (d *MemoryDirectory) Connected(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	ids := make([]string, 0, len(d.owners))
	for id := range d.owners {
		ids = append(ids, id)
	}
	return ids, nil
}

// Send delivers msg here; there is no other replica.
func (d *MemoryDirectory) Send(ctx context.Context, replica string, msg ReplicaMessage) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if replica != d.replica {
		return fmt.Errorf("send to %q: %w", replica, ErrUnknownReplica)
	}
	d.handlers.each(msg)
	return nil
}

// Broadcast delivers msg here.
func (d *MemoryDirectory) Broadcast(ctx context.Context, msg ReplicaMessage) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.handlers.each(msg)
	return nil
}

// Subscribe adds a handler of this replica's messages.
func (d *MemoryDirectory) Subscribe(h func(ReplicaMessage)) func() { return d.handlers.add(h) }

// Close stops deliveries. It is idempotent.
func (d *MemoryDirectory) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.handlers.clear()
	return nil
}

// handlerSet is a set of handlers called in turn, safe for concurrent use.
type handlerSet[T any] struct {
	mu     sync.RWMutex
	nextID int
	byID   map[int]func(T)
}

func (s *handlerSet[T]) add(h func(T)) func() {
	s.mu.Lock()
	if s.byID == nil {
		s.byID = make(map[int]func(T))
	}
	id := s.nextID
	s.nextID++
	s.byID[id] = h
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.byID, id)
			s.mu.Unlock()
		})
	}
}

// each calls every handler with v, outside the lock, so a handler may add or remove handlers.
func (s *handlerSet[T]) each(v T) {
	s.mu.RLock()
	hs := make([]func(T), 0, len(s.byID))
	for _, h := range s.byID {
		hs = append(hs, h)
	}
	s.mu.RUnlock()
	for _, h := range hs {
		h(v)
	}
}

func (s *handlerSet[T]) clear() {
	s.mu.Lock()
	s.byID = nil
	s.mu.Unlock()
}
