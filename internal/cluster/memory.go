package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// MemoryBus is the single-node Bus: offsets are counted in memory and
// handlers are called synchronously, under the organization's lock, so every
// handler sees one organization's messages in offset order. The epoch is new
// for every MemoryBus, so a client of a restarted process knows its old
// position means nothing here.
type MemoryBus struct {
	epoch   string
	history History

	mu       sync.RWMutex // guards handlers, orgs and closed
	handlers map[int]Handler
	nextID   int
	orgs     map[string]*memoryStream
	closed   bool
}

type memoryStream struct {
	mu     sync.Mutex // serializes offset assignment, history and delivery
	offset uint64
	// kept is the retained history, oldest first; kept[i] has offset first+i.
	kept  []keptMessage
	first uint64
}

type keptMessage struct {
	payload []byte
	at      time.Time
}

// keep appends the message of offset s.offset and trims what History no longer requires.
func (s *memoryStream) keep(h History, payload []byte, now time.Time) {
	if h.disabled() {
		return
	}
	if len(s.kept) == 0 {
		s.first = s.offset
	}
	s.kept = append(s.kept, keptMessage{payload: payload, at: now})
	drop := 0
	for n := len(s.kept) - drop; n > h.Size && (n > h.Max || now.Sub(s.kept[drop].at) > h.TTL); n-- {
		drop++
	}
	if drop > 0 {
		// Copy once most of the backing array is dead, so it does not grow without bound.
		s.kept = s.kept[drop:]
		s.first += uint64(drop)
		if cap(s.kept) > 2*len(s.kept)+64 {
			s.kept = append([]keptMessage(nil), s.kept...)
		}
	}
}

var _ Bus = (*MemoryBus)(nil)

// NewMemoryBus returns an in-process bus with a fresh random epoch and the default history.
func NewMemoryBus() *MemoryBus { return NewMemoryBusWithHistory(History{}) }

// NewMemoryBusWithHistory returns an in-process bus that retains history as h says.
func NewMemoryBusWithHistory(h History) *MemoryBus {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &MemoryBus{
		epoch:    hex.EncodeToString(b[:]),
		history:  h.withDefaults(),
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
	s.keep(b.history, payload, time.Now())
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

// History returns the retained messages of orgID after since, up to until.
func (b *MemoryBus) History(ctx context.Context, orgID string, since, until Position) ([]Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkReplay(since, until); err != nil {
		return nil, err
	}
	if since.Epoch != b.epoch {
		return nil, fmt.Errorf("replay of %s from %s: %w", orgID, since, ErrHistoryGone)
	}
	if since.Offset == until.Offset {
		return nil, nil
	}
	b.mu.RLock()
	s, ok := b.orgs[orgID]
	b.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("replay of %s from %s: %w", orgID, since, ErrHistoryGone)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if until.Offset > s.offset || len(s.kept) == 0 || since.Offset+1 < s.first {
		return nil, fmt.Errorf("replay of %s from %s: %w", orgID, since, ErrHistoryGone)
	}
	out := make([]Message, 0, until.Offset-since.Offset)
	for off := since.Offset + 1; off <= until.Offset; off++ {
		out = append(out, Message{OrgID: orgID, Position: Position{Epoch: b.epoch, Offset: off}, Payload: s.kept[off-s.first].payload})
	}
	return out, nil
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
