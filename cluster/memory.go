package cluster

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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

	// total is what every organization's history counts for, holding how many organizations
	// hold any; both change under the streams' locks.
	total   atomic.Int64
	holding atomic.Int64
	// trimMu serializes the passes that bring the total back within History.TotalBytes. A pass
	// holds one stream's lock at a time, and a publisher starts one only after releasing its own.
	trimMu sync.Mutex
}

type memoryStream struct {
	mu     sync.Mutex // serializes offset assignment, history and delivery
	offset uint64
	// kept is the retained history, oldest first; kept[i] has offset first+i.
	kept  []keptMessage
	first uint64
	// bytes is what kept counts for (entryBytes); written under mu, read by trimming passes.
	bytes atomic.Int64
}

type keptMessage struct {
	payload []byte
	at      time.Time
}

// keep appends the message of offset s.offset and trims what History no longer requires,
// and what goes beyond the organization's byte bound.
func (s *memoryStream) keep(b *MemoryBus, payload []byte, now time.Time) {
	h := b.history
	if h.disabled() {
		return
	}
	if len(s.kept) == 0 {
		s.first = s.offset
	}
	s.kept = append(s.kept, keptMessage{payload: payload, at: now})
	s.account(b, entryBytes(payload))
	drop := 0
	bytes := s.bytes.Load()
	for n := len(s.kept); n > 0; n-- {
		old := s.kept[drop]
		if bytes <= h.OrgBytes && (n <= h.Size || (n <= h.Max && now.Sub(old.at) <= h.TTL)) {
			break
		}
		bytes -= entryBytes(old.payload)
		drop++
	}
	s.drop(b, drop)
}

// trimTo drops the oldest messages until the history counts for at most limit bytes.
func (s *memoryStream) trimTo(b *MemoryBus, limit int64) {
	drop := 0
	bytes := s.bytes.Load()
	for ; drop < len(s.kept) && bytes > limit; drop++ {
		bytes -= entryBytes(s.kept[drop].payload)
	}
	s.drop(b, drop)
}

// drop removes the n oldest messages of the history.
func (s *memoryStream) drop(b *MemoryBus, n int) {
	if n == 0 {
		return
	}
	var freed int64
	for _, m := range s.kept[:n] {
		freed += entryBytes(m.payload)
	}
	clear(s.kept[:n]) // the payloads are garbage now, even while the backing array lives on
	s.kept = s.kept[n:]
	s.first += uint64(n)
	s.account(b, -freed)
	// Copy once most of the backing array is dead, so it does not grow without bound.
	if cap(s.kept) > 2*len(s.kept)+64 {
		s.kept = append([]keptMessage(nil), s.kept...)
	}
}

// account adds delta to the stream's bytes and the bus's total.
func (s *memoryStream) account(b *MemoryBus, delta int64) {
	was := s.bytes.Add(delta) - delta
	switch now := was + delta; {
	case was == 0 && now > 0:
		b.holding.Add(1)
	case was > 0 && now == 0:
		b.holding.Add(-1)
	}
	b.total.Add(delta)
}

// enforceTotal brings the bus's history back within TotalBytes, trimming the organizations
// that hold more than their share, largest first, down to that share. The caller holds no
// stream's lock.
func (b *MemoryBus) enforceTotal() {
	if b.total.Load() <= b.history.TotalBytes {
		return
	}
	b.trimMu.Lock()
	defer b.trimMu.Unlock()
	type held struct {
		s     *memoryStream
		bytes int64
	}
	b.mu.RLock()
	streams := make([]held, 0, len(b.orgs))
	for _, s := range b.orgs {
		if n := s.bytes.Load(); n > 0 {
			streams = append(streams, held{s, n})
		}
	}
	b.mu.RUnlock()
	slices.SortFunc(streams, func(x, y held) int { return cmp.Compare(y.bytes, x.bytes) })
	for _, h := range streams {
		if b.total.Load() <= b.history.TotalBytes {
			return
		}
		share := b.history.fairShare(b.holding.Load())
		if h.s.bytes.Load() <= share {
			continue
		}
		h.s.mu.Lock()
		h.s.trimTo(b, share)
		h.s.mu.Unlock()
	}
}

// HistoryBytes returns what orgID's retained history counts for against the byte bounds, and
// what every organization's does together.
func (b *MemoryBus) HistoryBytes(orgID string) (org, total int64) {
	b.mu.RLock()
	s, ok := b.orgs[orgID]
	b.mu.RUnlock()
	if ok {
		org = s.bytes.Load()
	}
	return org, b.total.Load()
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
	pos := func() Position {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.offset++
		s.keep(b, payload, time.Now())
		msg := Message{OrgID: orgID, Position: Position{Epoch: b.epoch, Offset: s.offset}, Payload: payload}
		for _, h := range handlers {
			h(msg)
		}
		return msg.Position
	}()
	// Over the total, trimmed after the stream's lock is released: a pass takes other streams'.
	b.enforceTotal()
	return pos, nil
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
