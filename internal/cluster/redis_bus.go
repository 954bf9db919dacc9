package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// publishScript gives the next offset of an organization's stream, records the message in the
// stream's history (a Redis stream whose entry ids are 0-<offset>, capped at about ARGV[4]
// entries; none when it is negative) and publishes it, in one atomic step, so every subscriber
// sees one organization's messages in offset order and the history never misses one that was
// delivered. The stream's epoch is made on first use (ARGV[1] is a fresh candidate): a Redis
// that lost its data starts a new epoch with an empty history, and clients know their old
// positions mean nothing.
var publishScript = redis.NewScript(`
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[3])
end
local offset = redis.call('INCR', KEYS[2])
local cap = tonumber(ARGV[4])
if cap >= 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', cap, '0-' .. offset, 'p', ARGV[3])
end
redis.call('PUBLISH', ARGV[2], epoch .. ':' .. offset .. ':' .. ARGV[3])
return {epoch, offset}
`)

// historyScript returns the epoch and the history entries from ARGV[1] to ARGV[2] (offsets),
// read in one step.
var historyScript = redis.NewScript(`
local epoch = redis.call('GET', KEYS[1]) or ''
return {epoch, redis.call('XRANGE', KEYS[2], '0-' .. ARGV[1], '0-' .. ARGV[2])}
`)

// positionScript returns an organization's epoch (making it on first use) and last offset.
var positionScript = redis.NewScript(`
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
return {epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}
`)

// RedisBus is the organizations' event streams in Redis: offsets come from one counter per
// organization, and each organization has its own channel, to which a replica subscribes only
// while it has clients of that organization (Watch). Messages arrive on the subscription
// connection in offset order; a message at or before the last one seen is dropped, so each is
// delivered once even across resubscriptions.
//
// While Redis is unreachable, Publish still delivers on this replica, in a local epoch of its
// own, and returns ErrLocalOnly: browsers here keep their events, and a client that later
// resumes from such a position is told it was not recovered.
type RedisBus struct {
	r        *Redis
	handlers handlerSet[Message]

	mu      sync.Mutex          // guards watches and last
	watches map[string]int      // organization → Watch calls not yet withdrawn
	last    map[string]Position // organization → last position delivered

	local *MemoryBus // delivery while Redis is away
}

var _ Bus = (*RedisBus)(nil)

func newRedisBus(r *Redis) *RedisBus {
	b := &RedisBus{
		r:       r,
		watches: make(map[string]int),
		last:    make(map[string]Position),
		local:   NewMemoryBus(),
	}
	b.local.epoch = "local-" + b.local.epoch
	b.local.Subscribe(b.handlers.each)
	return b
}

func (b *RedisBus) keys(orgID string) (epochKey, seqKey, channel string) {
	base := b.r.opts.Prefix + ":org:{" + tag(orgID) + "}"
	return base + ":epoch", base + ":seq", base + ":events"
}

func (b *RedisBus) historyKey(orgID string) string {
	return b.r.opts.Prefix + ":org:{" + tag(orgID) + "}:history"
}

// historyCap is the approximate length the history streams are trimmed to: Redis trims only
// whole nodes, so at least History.Size entries stay; -1 keeps none. Redis keeps no time
// window: the count is the guarantee across replicas.
func (b *RedisBus) historyCap() int {
	h := b.r.opts.History
	if h.disabled() {
		return -1
	}
	return h.Size
}

// Publish appends payload to orgID's stream in Redis. When Redis fails it delivers on this
// replica only and returns the local position with an error wrapping ErrLocalOnly.
func (b *RedisBus) Publish(ctx context.Context, orgID string, payload []byte) (Position, error) {
	if err := b.r.ctx.Err(); err != nil {
		return Position{}, ErrClosed
	}
	epochKey, seqKey, channel := b.keys(orgID)
	res, err := publishScript.Run(ctx, b.r.client, []string{epochKey, seqKey, b.historyKey(orgID)},
		randomID(8), channel, payload, b.historyCap()).Slice()
	if err == nil {
		return parsePosition(res)
	}
	if ctx.Err() != nil {
		return Position{}, ctx.Err()
	}
	b.r.fail("publish")
	b.r.metrics.local.WithLabelValues("event").Inc()
	pos, lerr := b.local.Publish(context.WithoutCancel(ctx), orgID, payload)
	if lerr != nil {
		return Position{}, lerr
	}
	return pos, fmt.Errorf("publish to %s: %w (%w)", orgID, ErrLocalOnly, err)
}

// Position returns the last position of orgID's stream; while Redis fails, the local one with
// an error wrapping ErrLocalOnly.
func (b *RedisBus) Position(ctx context.Context, orgID string) (Position, error) {
	epochKey, seqKey, _ := b.keys(orgID)
	res, err := positionScript.Run(ctx, b.r.client, []string{epochKey, seqKey}, randomID(8)).Slice()
	if err == nil {
		return parsePosition(res)
	}
	if ctx.Err() != nil {
		return Position{}, ctx.Err()
	}
	b.r.fail("position")
	pos, lerr := b.local.Position(context.WithoutCancel(ctx), orgID)
	if lerr != nil {
		return Position{}, lerr
	}
	return pos, fmt.Errorf("position of %s: %w (%w)", orgID, ErrLocalOnly, err)
}

// History reads orgID's history from Redis; a position of this replica's local epoch (made
// while Redis was away) is replayed from this replica's memory.
func (b *RedisBus) History(ctx context.Context, orgID string, since, until Position) ([]Message, error) {
	if err := checkReplay(since, until); err != nil {
		return nil, err
	}
	if since.Epoch == b.local.Epoch() {
		return b.local.History(ctx, orgID, since, until)
	}
	if since.Offset == until.Offset {
		return nil, nil
	}
	epochKey, _, _ := b.keys(orgID)
	res, err := historyScript.Run(ctx, b.r.client, []string{epochKey, b.historyKey(orgID)},
		since.Offset+1, until.Offset).Slice()
	if err != nil {
		if ctx.Err() == nil {
			b.r.fail("history")
		}
		return nil, fmt.Errorf("replay of %s: %w", orgID, err)
	}
	gone := fmt.Errorf("replay of %s from %s: %w", orgID, since, ErrHistoryGone)
	if len(res) != 2 {
		return nil, fmt.Errorf("cluster: unexpected history reply %v", res)
	}
	if epoch, _ := res[0].(string); epoch != since.Epoch {
		return nil, gone
	}
	entries, _ := res[1].([]any)
	if uint64(len(entries)) != until.Offset-since.Offset {
		return nil, gone // trimmed (or never recorded): a gap
	}
	out := make([]Message, len(entries))
	for i, e := range entries {
		pair, _ := e.([]any)
		var fields []any
		if len(pair) == 2 {
			fields, _ = pair[1].([]any)
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("cluster: unexpected history entry %v", e)
		}
		payload, _ := fields[1].(string)
		out[i] = Message{OrgID: orgID, Position: Position{Epoch: since.Epoch, Offset: since.Offset + 1 + uint64(i)}, Payload: []byte(payload)}
	}
	return out, nil
}

func parsePosition(res []any) (Position, error) {
	if len(res) != 2 {
		return Position{}, fmt.Errorf("cluster: unexpected script reply %v", res)
	}
	epoch, ok1 := res[0].(string)
	offset, ok2 := res[1].(int64)
	if !ok1 || !ok2 || offset < 0 {
		return Position{}, fmt.Errorf("cluster: unexpected script reply %v", res)
	}
	return Position{Epoch: epoch, Offset: uint64(offset)}, nil
}

// Watch subscribes this replica to orgID's channel (once for any number of watchers) and
// waits until Redis confirmed it, so nothing published after Watch returns is missed. While
// the subscription connection is down it returns at once with an error wrapping ErrLocalOnly; the interest
// stays and is subscribed when Redis returns. Either way the returned func withdraws it.
func (b *RedisBus) Watch(ctx context.Context, orgID string) (func(), error) {
	if b.r.ctx.Err() != nil {
		return nil, ErrClosed
	}
	_, _, channel := b.keys(orgID)
	b.mu.Lock()
	b.watches[orgID]++
	b.mu.Unlock()
	var once sync.Once
	unwatch := func() { once.Do(func() { b.unwatch(orgID, channel) }) }
	wait := b.r.want(channel, orgID)
	if wait == nil {
		return unwatch, nil
	}
	// Waiting is pointless only while the subscription connection itself is down; a missed
	// health ping is no reason to serve a client before its subscription is live.
	if !b.r.subscribed.Load() {
		return unwatch, fmt.Errorf("watch %s: %w", orgID, ErrLocalOnly)
	}
	ctx, cancel := context.WithTimeout(ctx, watchWait)
	defer cancel()
	select {
	case <-wait:
		return unwatch, nil
	case <-ctx.Done():
		return unwatch, fmt.Errorf("watch %s: subscription not confirmed: %w (%w)", orgID, ErrLocalOnly, ctx.Err())
	}
}

func (b *RedisBus) unwatch(orgID, channel string) {
	b.mu.Lock()
	b.watches[orgID]--
	last := b.watches[orgID] <= 0
	if last {
		delete(b.watches, orgID)
		delete(b.last, orgID)
	}
	b.mu.Unlock()
	if last {
		b.r.unwant(channel)
	}
}

// receive decodes "epoch:offset:payload" from orgID's channel and delivers it, once.
func (b *RedisBus) receive(orgID, raw string) {
	msg, err := decodeMessage(orgID, raw)
	if err != nil {
		b.r.fail("decode")
		b.r.log.Error("dropping malformed stream message", "org_id", orgID, "err", err)
		return
	}
	b.r.metrics.received.WithLabelValues("event").Inc()
	b.mu.Lock()
	if b.watches[orgID] == 0 {
		b.mu.Unlock()
		return // withdrawn while it was on its way
	}
	last, seen := b.last[orgID]
	if seen && !msg.After(last) {
		b.mu.Unlock()
		return // delivered already
	}
	if seen && msg.Epoch == last.Epoch && msg.Offset > last.Offset+1 {
		b.r.metrics.gaps.Add(float64(msg.Offset - last.Offset - 1))
	}
	b.last[orgID] = msg.Position
	b.mu.Unlock()
	// The receiver is the only goroutine delivering Redis messages, so order holds.
	b.handlers.each(msg)
}

func decodeMessage(orgID, raw string) (Message, error) {
	data := []byte(raw)
	i := bytes.IndexByte(data, ':')
	if i <= 0 {
		return Message{}, errors.New("no epoch")
	}
	j := bytes.IndexByte(data[i+1:], ':')
	if j <= 0 {
		return Message{}, errors.New("no offset")
	}
	offset, err := strconv.ParseUint(string(data[i+1:i+1+j]), 10, 64)
	if err != nil {
		return Message{}, fmt.Errorf("offset: %w", err)
	}
	return Message{
		OrgID:    orgID,
		Position: Position{Epoch: string(data[:i]), Offset: offset},
		Payload:  data[i+2+j:],
	}, nil
}

// Subscribe adds a handler of the watched organizations' messages.
func (b *RedisBus) Subscribe(h Handler) func() { return b.handlers.add(h) }

// Close closes the Redis connection it belongs to (the Directory's too).
func (b *RedisBus) Close() error { return b.r.Close() }
