package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Agent claims live in one hash (agent → "replica|generation") and one sorted set (agent →
// expiry in Redis's own milliseconds), both under the "{agents}" hash tag so that every script
// touches one Redis Cluster slot. Redis's clock decides expiry, so replicas' clocks may differ.
const nowMillis = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// claimScript makes ARGV[2] the holder of agent ARGV[1] and returns the previous live holder.
var claimScript = redis.NewScript(nowMillis + `
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local expiry = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
if prev and expiry > now and prev ~= ARGV[2] then return prev end
return false
`)

// releaseScript removes agent ARGV[1]'s claim only if it is still ARGV[2] (compare-and-delete).
var releaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
`)

// refreshScript extends this replica's claims (ARGV[2..] as agent, holder pairs), restoring
// those Redis lost, and returns the agents another holder took over meanwhile. It also sweeps
// claims that expired (their replica died), a bounded number per call.
var refreshScript = redis.NewScript(nowMillis + `
local lost = {}
for i = 2, #ARGV, 2 do
  local id, holder = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[1], id)
  local expiry = tonumber(redis.call('ZSCORE', KEYS[2], id) or '0')
  if (not cur) or cur == holder or expiry <= now then
    redis.call('HSET', KEYS[1], id, holder)
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), id)
  else
    table.insert(lost, id)
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return lost
`)

// lookupScript returns the live holder of each agent in ARGV (false where none).
var lookupScript = redis.NewScript(nowMillis + `
local out = {}
for i = 1, #ARGV do
  local expiry = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[i]) or '0')
  if expiry > now then
    out[i] = redis.call('HGET', KEYS[1], ARGV[i])
  else
    out[i] = false
  end
end
return out
`)

// connectedScript lists the agents with a live claim.
var connectedScript = redis.NewScript(nowMillis + `
return redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')
`)

// lookupBatch bounds the agents of one lookup script call.
const lookupBatch = 1000

// RedisDirectory is the agents' directory in Redis, with claims that expire OwnershipTTL after
// their replica last refreshed them, and replica channels for the messages between replicas.
type RedisDirectory struct {
	r        *Redis
	handlers handlerSet[ReplicaMessage]
	keys     []string // owners hash, live sorted set

	mu     sync.Mutex
	claims map[string]string // agent → generation held by this replica
	// claiming holds the claims whose script is still on its way to Redis. The refresh leaves
	// them alone: Redis may still name the agent's previous holder, and the refresh would take
	// that for a newer one and report the new connection lost.
	claiming map[string]string
}

var _ Directory = (*RedisDirectory)(nil)

func newRedisDirectory(r *Redis) *RedisDirectory {
	base := r.opts.Prefix + ":{agents}"
	return &RedisDirectory{r: r, keys: []string{base + ":owners", base + ":live"},
		claims: make(map[string]string), claiming: make(map[string]string)}
}

// Replica names this replica.
func (d *RedisDirectory) Replica() string { return d.r.opts.Replica }

func (d *RedisDirectory) holder(generation string) string {
	return d.r.opts.Replica + "|" + generation
}

// parseHolder splits "replica|generation" at the last bar: generations never contain one.
func parseHolder(v string) Owner {
	i := strings.LastIndexByte(v, '|')
	if i < 0 {
		return Owner{Replica: v}
	}
	return Owner{Replica: v[:i], Generation: v[i+1:]}
}

// Claim records the agent held here and tells the replica of an older connection, if any, that
// it lost the agent.
func (d *RedisDirectory) Claim(ctx context.Context, agentID, generation string) error {
	if d.r.ctx.Err() != nil {
		return ErrClosed
	}
	d.mu.Lock()
	d.claims[agentID] = generation
	d.claiming[agentID] = generation
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if d.claiming[agentID] == generation {
			delete(d.claiming, agentID)
		}
		d.mu.Unlock()
	}()
	ttl := d.r.opts.OwnershipTTL.Milliseconds()
	prev, err := claimScript.Run(ctx, d.r.client, d.keys, agentID, d.holder(generation), ttl).Text()
	if errors.Is(err, redis.Nil) {
		return nil // no previous holder
	}
	if err != nil {
		d.r.fail("claim")
		return fmt.Errorf("claim agent %s: %w", agentID, err)
	}
	old := parseHolder(prev)
	if old.Replica == d.r.opts.Replica {
		return nil // a local replacement; the hub closed the old connection itself
	}
	lost := ReplicaMessage{Kind: KindLost, AgentID: agentID, Generation: old.Generation}
	if err := d.Send(ctx, old.Replica, lost); err != nil {
		d.r.log.Debug("telling the previous replica failed", "agent_id", agentID, "replica", old.Replica, "err", err)
	}
	return nil
}

// Release removes the claim if it is still this replica's of this generation.
func (d *RedisDirectory) Release(ctx context.Context, agentID, generation string) (bool, error) {
	d.mu.Lock()
	if d.claims[agentID] == generation {
		delete(d.claims, agentID)
	}
	d.mu.Unlock()
	n, err := releaseScript.Run(ctx, d.r.client, d.keys, agentID, d.holder(generation)).Int()
	if err != nil {
		d.r.fail("release")
		return false, fmt.Errorf("release agent %s: %w", agentID, err)
	}
	return n == 1, nil
}

// Lookup returns the live holder of agentID's connection.
func (d *RedisDirectory) Lookup(ctx context.Context, agentID string) (Owner, bool, error) {
	owners, err := d.Lookups(ctx, []string{agentID})
	if err != nil {
		return Owner{}, false, err
	}
	o, ok := owners[agentID]
	return o, ok, nil
}

// Lookups returns the live holders of the agents that have one.
func (d *RedisDirectory) Lookups(ctx context.Context, agentIDs []string) (map[string]Owner, error) {
	out := make(map[string]Owner, len(agentIDs))
	for start := 0; start < len(agentIDs); start += lookupBatch {
		batch := agentIDs[start:min(start+lookupBatch, len(agentIDs))]
		args := make([]any, len(batch))
		for i, id := range batch {
			args[i] = id
		}
		res, err := lookupScript.Run(ctx, d.r.client, d.keys, args...).Slice()
		if err != nil {
			d.r.fail("lookup")
			return nil, fmt.Errorf("look up agents: %w", err)
		}
		for i, v := range res {
			if s, ok := v.(string); ok && i < len(batch) {
				out[batch[i]] = parseHolder(s)
			}
		}
	}
	return out, nil
}

// Connected lists the agents with a live claim.
func (d *RedisDirectory) Connected(ctx context.Context) ([]string, error) {
	ids, err := connectedScript.Run(ctx, d.r.client, d.keys).StringSlice()
	if err != nil {
		d.r.fail("connected")
		return nil, fmt.Errorf("list connected agents: %w", err)
	}
	return ids, nil
}

// Send publishes msg on replica's channel; a message to this replica is delivered directly.
// ErrUnknownReplica when no replica of that name listens.
func (d *RedisDirectory) Send(ctx context.Context, replica string, msg ReplicaMessage) error {
	if replica == d.r.opts.Replica {
		d.handlers.each(msg)
		return nil
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode replica message: %w", err)
	}
	n, err := d.r.client.Publish(ctx, d.r.opts.Prefix+":replica:"+replica, data).Result()
	if err != nil {
		d.r.fail("send")
		return fmt.Errorf("send to replica %s: %w", replica, err)
	}
	if n == 0 {
		return fmt.Errorf("send to %q: %w", replica, ErrUnknownReplica)
	}
	return nil
}

// Broadcast publishes msg to every replica. When Redis fails it is delivered here only, with an
// error wrapping ErrLocalOnly.
func (d *RedisDirectory) Broadcast(ctx context.Context, msg ReplicaMessage) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode replica message: %w", err)
	}
	if err := d.r.client.Publish(ctx, d.r.broadcastChannel, data).Err(); err != nil {
		d.r.fail("broadcast")
		d.r.metrics.local.WithLabelValues("broadcast").Inc()
		d.handlers.each(msg)
		return fmt.Errorf("broadcast: %w (%w)", ErrLocalOnly, err)
	}
	return nil
}

// Subscribe adds a handler of the messages sent to this replica.
func (d *RedisDirectory) Subscribe(h func(ReplicaMessage)) func() { return d.handlers.add(h) }

// Close closes the Redis connection it belongs to (the Bus's too).
func (d *RedisDirectory) Close() error { return d.r.Close() }

// receive decodes a message of this replica's channel or the all-replicas channel.
func (d *RedisDirectory) receive(raw string) {
	var msg ReplicaMessage
	if err := json.Unmarshal([]byte(raw), &msg); err != nil || msg.Kind == "" {
		d.r.fail("decode")
		d.r.log.Error("dropping malformed replica message", "err", err)
		return
	}
	d.r.metrics.received.WithLabelValues("replica").Inc()
	d.handlers.each(msg)
}

func (d *RedisDirectory) triggerRefresh() {
	select {
	case d.r.refreshNow <- struct{}{}:
	default:
	}
}

// refreshLoop keeps this replica's claims alive every third of the TTL, and at once when
// Redis comes back.
func (d *RedisDirectory) refreshLoop() {
	defer d.r.wg.Done()
	t := time.NewTicker(d.r.opts.OwnershipTTL / 3)
	defer t.Stop()
	if err := d.publishPeerAddr(d.r.ctx); err != nil && d.r.ctx.Err() == nil {
		d.r.log.Warn("publishing the peer address failed", "err", err)
	}
	for {
		select {
		case <-t.C:
		case <-d.r.refreshNow:
		case <-d.r.ctx.Done():
			return
		}
		if err := d.refresh(d.r.ctx); err != nil && d.r.ctx.Err() == nil {
			d.r.log.Warn("refreshing agent claims failed", "err", err)
		}
		if err := d.publishPeerAddr(d.r.ctx); err != nil && d.r.ctx.Err() == nil {
			d.r.log.Warn("publishing the peer address failed", "err", err)
		}
		// Connection leases live as long as claims, and are extended with them.
		if err := d.r.leases.refresh(d.r.ctx); err != nil && d.r.ctx.Err() == nil {
			d.r.log.Warn("extending connection leases failed", "err", err)
		}
	}
}

// refreshBatch bounds the claims of one refresh script call.
const refreshBatch = 500

// refresh extends every claim of this replica, and tells the hub about those another replica
// took over.
func (d *RedisDirectory) refresh(ctx context.Context) error {
	d.mu.Lock()
	claims := make(map[string]string, len(d.claims))
	for id, g := range d.claims {
		if d.claiming[id] != g { // one on its way is refreshed next time
			claims[id] = g
		}
	}
	d.mu.Unlock()
	ttl := d.r.opts.OwnershipTTL.Milliseconds()
	args := make([]any, 0, 1+2*refreshBatch)
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		lost, err := refreshScript.Run(ctx, d.r.client, d.keys, append([]any{ttl}, args...)...).StringSlice()
		args = args[:0]
		if err != nil {
			d.r.fail("refresh")
			return fmt.Errorf("refresh agent claims: %w", err)
		}
		for _, id := range lost {
			d.lose(id, claims[id])
		}
		return nil
	}
	for id, g := range claims {
		args = append(args, id, d.holder(g))
		if len(args) == 2*refreshBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if len(claims) == 0 {
		// Still sweep the claims of replicas that died.
		_, err := refreshScript.Run(ctx, d.r.client, d.keys, ttl).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			d.r.fail("refresh")
			return fmt.Errorf("sweep agent claims: %w", err)
		}
		return nil
	}
	return flush()
}

// lose forgets a claim another replica took over and tells this replica's handlers.
func (d *RedisDirectory) lose(agentID, generation string) {
	d.mu.Lock()
	if d.claims[agentID] != generation {
		d.mu.Unlock()
		return
	}
	delete(d.claims, agentID)
	d.mu.Unlock()
	d.handlers.each(ReplicaMessage{Kind: KindLost, AgentID: agentID, Generation: generation})
}
