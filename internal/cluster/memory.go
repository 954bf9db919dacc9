package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
)

// MemoryBus is the single-node Bus: offsets are counted in memory and
// handlers are called synchronously, under the organization's lock, so every
// handler sees one organization's messages in offset order. The epoch is new
// for every MemoryBus, so a client of a restarted process knows its old
// position means nothing here.
type MemoryBus struct {
	epoch string

	mu       sync.RWMutex // guards handlers, orgs and closed
	handlers map[int]Handler
	nextID   int
	orgs     map[string]*memoryStream
	closed   bool
}

type memoryStream struct {
	mu     sync.Mutex // serializes offset assignment and delivery
	offset uint64
}

var _ Bus = (*MemoryBus)(nil)

// NewMemoryBus returns an in-process bus with a fresh random epoch.
func NewMemoryBus() *MemoryBus {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &MemoryBus{
		epoch:    hex.EncodeToString(b[:]),
		handlers: make(map[int]Handler),
		orgs:     make(map[string]*memoryStream),
	}
}

// Epoch returns the bus's incarnation name.
func (b *MemoryBus) Epoch() string { return b.epoch }

// Publish assigns the next offset of orgID and delivers before returning.
func (b *MemoryBus) Publish(ctx context.Context, orgID string, payload []byte) (Position, error) {
	if err := ctx.Err(); err != nil {
		return Position{}, err
	}
	s, handlers, err := b.stream(orgID)
	if err != nil {
		return Position{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset++
	msg := Message{OrgID: orgID, Position: Position{Epoch: b.epoch, Offset: s.offset}, Payload: payload}
	for _, h := range handlers {
		h(msg)
	}
	return msg.Position, nil
}

// stream returns orgID's stream, creating it, and a snapshot of the handlers.
func (b *MemoryBus) stream(orgID string) (*memoryStream, []Handler, error) {
	b.mu.RLock()
	s, ok := b.orgs[orgID]
	closed := b.closed
	handlers := make([]Handler, 0, len(b.handlers))
	for _, h := range b.handlers {
		handlers = append(handlers, h)
	}
	b.mu.RUnlock()
	if closed {
		return nil, nil, ErrClosed
	}
	if ok {
		return s, handlers, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok = b.orgs[orgID]; !ok {
		s = &memoryStream{}
		b.orgs[orgID] = s
	}
	return s, handlers, nil
}

// Position returns the last offset given in orgID's stream (0 when none).
func (b *MemoryBus) Position(ctx context.Context, orgID string) (Position, error) {
	if err := ctx.Err(); err != nil {
		return Position{}, err
	}
	b.mu.RLock()
	s, ok := b.orgs[orgID]
	b.mu.RUnlock()
	if !ok {
		return Position{Epoch: b.epoch}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return Position{Epoch: b.epoch, Offset: s.offset}, nil
}

// Watch is free on a single node: every organization's messages reach the handlers.
func (b *MemoryBus) Watch(ctx context.Context, _ string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return func() {}, nil
}

// Subscribe adds h. A message being delivered while Subscribe runs may or
// may not reach h; every later one does.
func (b *MemoryBus) Subscribe(h Handler) func() {
	b.mu.Lock()
	id := b.nextID
	b.nextID++
	b.handlers[id] = h
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.handlers, id)
			b.mu.Unlock()
		})
	}
}

// Close stops deliveries. It is idempotent.
func (b *MemoryBus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.handlers = make(map[int]Handler)
	return nil
}
