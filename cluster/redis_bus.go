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

// trimHistory is the Lua function shared by the scripts that trim an organization's history:
// it drops the oldest entries of the stream while it holds more than count entries or more
// than limit bytes, and returns the bytes left. The sizes list holds "<offset>:<bytes>" of
// each recorded entry, oldest first, and total their sum, so the script never reads a payload
// to trim. Trimming is exact (XTRIM MINID), so the list and the stream stay aligned.
const trimHistory = `
local function trim(stream, sizes, total, count, limit)
  local bytes = tonumber(redis.call('GET', total) or '0')
  local n = redis.call('LLEN', sizes)
  local last
  while n > 0 and (n > count or bytes > limit) do
    local e = redis.call('LPOP', sizes)
    local sep = string.find(e, ':', 1, true)
    last = tonumber(string.sub(e, 1, sep - 1))
    bytes = bytes - tonumber(string.sub(e, sep + 1))
    n = n - 1
  end
  if last then
    if n == 0 then bytes = 0 end
    redis.call('XTRIM', stream, 'MINID', '0-' .. (last + 1))
    redis.call('SET', total, bytes)
  end
  return bytes
end
`

// publishScript gives the next offset of an organization's stream, records the message in the
// stream's history (a Redis stream whose entry ids are 0-<offset>, trimmed to at most ARGV[4]
// entries and ARGV[5] bytes, each entry counting its payload plus ARGV[6]; none when ARGV[4] is
// negative) and publishes it, in one atomic step, so every subscriber sees one organization's
// messages in offset order and the history never misses one that was delivered. The stream's
// epoch is made on first use (ARGV[1] is a fresh candidate): a Redis that lost its data starts
// a new epoch with an empty history, and clients know their old positions mean nothing. With
// a history it returns the bytes it holds and the organization's history version, which
// orders the reports of its size to the total budget (budgetScript).
var publishScript = redis.NewScript(trimHistory + `
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
end
local offset = redis.call('INCR', KEYS[2])
local cap = tonumber(ARGV[4])
redis.call('PUBLISH', ARGV[2], epoch .. ':' .. offset .. ':' .. ARGV[3])
if cap < 0 then
  return {epoch, offset}
end
redis.call('XADD', KEYS[3], '0-' .. offset, 'p', ARGV[3])
local size = string.len(ARGV[3]) + tonumber(ARGV[6])
redis.call('RPUSH', KEYS[4], offset .. ':' .. size)
redis.call('INCRBY', KEYS[5], size)
local bytes = trim(KEYS[3], KEYS[4], KEYS[5], cap, tonumber(ARGV[5]))
return {epoch, offset, bytes, redis.call('INCR', KEYS[6])}
`)

// trimScript trims an organization's history to at most ARGV[1] entries and ARGV[2] bytes,
// and returns its epoch, the bytes left and the new history version.
var trimScript = redis.NewScript(trimHistory + `
local bytes = trim(KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2]))
return {redis.call('GET', KEYS[1]) or '', bytes, redis.call('INCR', KEYS[5])}
`)

// budgetScript records the size of an organization's history (ARGV[1]: organization, ARGV[2]
// epoch, ARGV[3] version, ARGV[4] bytes) in the total budget: a sorted set of the
// organizations holding history by their bytes, their total, and the epoch and version of each
// one's last report, so a report overtaken by a newer one changes nothing. When the total is
// over ARGV[5] it also returns each organization's share of it and up to ARGV[6] of those
// holding more, largest first. The budget lives under a hash tag of its own (Redis Cluster):
// it is kept beside the organizations' histories, in a second call after each change.
var budgetScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[2], ARGV[1])
local apply = true
if cur then
  local sep = string.find(cur, ' ', 1, true)
  apply = string.sub(cur, 1, sep - 1) ~= ARGV[2] or tonumber(string.sub(cur, sep + 1)) < tonumber(ARGV[3])
end
if apply then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
  local prev = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
  local bytes = tonumber(ARGV[4])
  if bytes > 0 then
    redis.call('ZADD', KEYS[1], bytes, ARGV[1])
  else
    redis.call('ZREM', KEYS[1], ARGV[1])
  end
  if bytes ~= prev then
    redis.call('INCRBY', KEYS[3], bytes - prev)
  end
end
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
local limit = tonumber(ARGV[5])
if total <= limit then
  return {total}
end
local share = math.floor(limit / math.max(redis.call('ZCARD', KEYS[1]), 1))
return {total, share, redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. share, 'LIMIT', 0, tonumber(ARGV[6]))}
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
		local:   NewMemoryBusWithHistory(r.opts.History),
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

// historyKeys are orgID's history stream, the list of its entries' sizes, their sum, and the
// history's version.
func (b *RedisBus) historyKeys(orgID string) (stream, sizes, bytes, version string) {
	base := b.r.opts.Prefix + ":org:{" + tag(orgID) + "}"
	return base + ":history", base + ":hsizes", base + ":hbytes", base + ":hversion"
}

// budgetKeys are the total budget's: the organizations by bytes held, the version of each
// one's last report, and the total.
func (b *RedisBus) budgetKeys() []string {
	base := b.r.opts.Prefix + ":{history}"
	return []string{base + ":orgs", base + ":versions", base + ":total"}
}

// historyCap is how many entries the history streams keep at most; -1 keeps none. Redis keeps
// no time window: the count and the byte bounds are the rule across replicas.
func (b *RedisBus) historyCap() int {
	h := b.r.opts.History
	if h.disabled() {
		return -1
	}
	return h.Size
}

// budgetTrims bounds how many organizations one publish trims to bring the total back within
// History.TotalBytes; the next publishes go on where it stopped.
const budgetTrims = 16

// enforceBudget reports orgID's history size to the total budget and, while the total is
// over, trims the organizations holding more than their share down to it. A failure leaves the
// total over until the next publish of any organization; it is counted, and the publish stands.
func (b *RedisBus) enforceBudget(ctx context.Context, orgID, epoch string, bytes, version int64) {
	h := b.r.opts.History
	keys := b.budgetKeys()
	for range budgetTrims {
		res, err := budgetScript.Run(ctx, b.r.client, keys, orgID, epoch, version, bytes, h.TotalBytes, budgetTrims).Slice()
		if err != nil {
			b.budgetFailed(ctx, err)
			return
		}
		if len(res) != 3 {
			return
		}
		share, _ := res[1].(int64)
		over, _ := res[2].([]any)
		if len(over) == 0 {
			return
		}
		orgID, _ = over[0].(string)
		stream, sizes, total, ver := b.historyKeys(orgID)
		epochKey, _, _ := b.keys(orgID)
		tr, err := trimScript.Run(ctx, b.r.client, []string{epochKey, stream, sizes, total, ver}, h.Size, share).Slice()
		if err != nil {
			b.budgetFailed(ctx, err)
			return
		}
		if len(tr) != 3 {
			b.budgetFailed(ctx, fmt.Errorf("cluster: unexpected trim reply %v", tr))
			return
		}
		epoch, _ = tr[0].(string)
		bytes, _ = tr[1].(int64)
		version, _ = tr[2].(int64)
	}
}

func (b *RedisBus) budgetFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	b.r.fail("publish")
	b.r.log.Debug("keeping the history's total budget failed", "err", err)
}

// Publish appends payload to orgID's stream in Redis. When Redis fails it delivers on this
// replica only and returns the local position with an error wrapping ErrLocalOnly.
func (b *RedisBus) Publish(ctx context.Context, orgID string, payload []byte) (Position, error) {
	if err := b.r.ctx.Err(); err != nil {
		return Position{}, ErrClosed
	}
	epochKey, seqKey, channel := b.keys(orgID)
	stream, sizes, bytesKey, version := b.historyKeys(orgID)
	h := b.r.opts.History
	res, err := publishScript.Run(ctx, b.r.client, []string{epochKey, seqKey, stream, sizes, bytesKey, version},
		randomID(8), channel, payload, b.historyCap(), h.OrgBytes, HistoryEntryOverhead).Slice()
	if err == nil {
		if len(res) != 4 {
			return parsePosition(res)
		}
		pos, err := parsePosition(res[:2])
		if err != nil {
			return Position{}, err
		}
		bytes, _ := res[2].(int64)
		ver, _ := res[3].(int64)
		b.enforceBudget(ctx, orgID, pos.Epoch, bytes, ver)
		return pos, nil
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
