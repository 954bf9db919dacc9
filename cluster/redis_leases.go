package cluster

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Connection leases count what every replica holds against limits that span the cluster (the
// browser connections of one user, of one organization). Each counted thing is a sorted set
// under the "{conns}" hash tag, one member per lease, scored with its expiry in Redis's own
// milliseconds. A replica extends its leases with its agent claims, every third of the
// ownership TTL, so the leases of a replica that died expire with its claims.

// leaseScript takes lease ARGV[1] (for ARGV[2] ms) in each of the first ARGV[3] sets of KEYS
// unless one of them holds its limit (ARGV[3 + i], 0 for none) of live leases already: then it
// returns that set's index (from 1) and takes nothing. 0 means taken. First it removes the
// released leases still on their way (member ARGV[3 + j] from KEYS[j], past the first
// ARGV[3]), then the expired ones.
var leaseScript = redis.NewScript(nowMillis + `
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
for j = n + 1, #KEYS do
  redis.call('ZREM', KEYS[j], ARGV[3 + j])
end
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local limit = tonumber(ARGV[3 + i])
  if limit > 0 and redis.call('ZCARD', KEYS[i]) >= limit then return i end
end
for i = 1, n do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 0
`)

// extendScript extends lease ARGV[i + 1] in set KEYS[i], putting back those Redis lost: a
// connection that is open counts, even past the limit it was admitted under.
var extendScript = redis.NewScript(nowMillis + `
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 0
`)

// extendBatch bounds the leases of one extend script call.
const extendBatch = 500

// LeaseSlot is one limit a lease counts against: Key names what is counted (a user, an
// organization), Limit is how many live leases it may hold (0: count, but never refuse).
type LeaseSlot struct {
	Key   string
	Limit int
}

// Leases counts things held across replicas (a user's browser connections, an organization's)
// against limits that span the cluster: Acquire takes a lease when no limit is reached, and
// each lease lasts while its replica runs and it is not released. Releases are sent to
// Redis by a goroutine of their own, so a connection's teardown never waits on Redis; a take
// on this replica removes the releases of its sets still on their way in the same script, so
// a user who closes a connection and opens another at once is not refused for the one just
// closed.
type Leases struct {
	r        *Redis
	instance string // tells this process's leases from a previous run of the same replica
	seq      atomic.Uint64
	kick     chan struct{} // capacity 1: releases wait

	mu   sync.Mutex
	held map[string][]string // lease member → its sets
	gone []leaseRef          // released, until the releaser has sent them to Redis
}

// leaseRef is one lease: its member and the sets it is in.
type leaseRef struct {
	member string
	keys   []string
}

func newLeases(r *Redis) *Leases {
	return &Leases{r: r, instance: r.opts.Replica + "/" + randomID(4), held: map[string][]string{},
		kick: make(chan struct{}, 1)}
}

// Acquire takes a lease in every slot, or none. refused is the index in slots of the first
// slot at its limit (-1 when the lease was taken). release gives the lease back; call it once
// the counted thing is gone. An error (Redis unreachable) takes nothing: the caller decides
// whether to admit without the cluster's count.
func (l *Leases) Acquire(ctx context.Context, slots []LeaseSlot) (release func(), refused int, err error) {
	keys := make([]string, len(slots))
	args := make([]any, 0, 3+len(slots))
	member := l.instance + "/" + strconv.FormatUint(l.seq.Add(1), 10)
	args = append(args, member, l.r.opts.OwnershipTTL.Milliseconds(), len(slots))
	for i, s := range slots {
		keys[i] = l.r.opts.Prefix + ":{conns}:" + s.Key // the first {…} is the hash tag
		args = append(args, s.Limit)
	}
	// The releases in these sets still on their way go first, in the same script.
	all := keys
	l.mu.Lock()
	for _, g := range l.gone {
		for _, k := range g.keys {
			if slices.Contains(keys, k) {
				all = append(all, k)
				args = append(args, g.member)
			}
		}
	}
	l.mu.Unlock()
	idx, err := leaseScript.Run(ctx, l.r.client, all, args...).Int()
	if err != nil {
		l.r.fail("lease")
		return nil, -1, fmt.Errorf("cluster: take lease: %w", err)
	}
	if idx != 0 {
		return nil, idx - 1, nil
	}
	// Held from now on: a refresh that ran since the script missed it, and its TTL is fresh.
	l.mu.Lock()
	l.held[member] = keys
	l.mu.Unlock()
	return sync.OnceFunc(func() {
		l.mu.Lock()
		delete(l.held, member)
		l.gone = append(l.gone, leaseRef{member: member, keys: keys})
		l.mu.Unlock()
		l.kickReleaser()
	}), -1, nil
}

// releaseLoop removes released leases from Redis until the replica closes, then once more
// within healthPingTimeout: a replica shutting down gives its connections' leases back.
func (l *Leases) releaseLoop() {
	defer l.r.wg.Done()
	for {
		select {
		case <-l.kick:
			l.flush(l.r.ctx)
		case <-l.r.ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), healthPingTimeout)
			l.flush(ctx)
			cancel()
			return
		}
	}
}

// flush removes the released leases from Redis; only the releaser calls it. They stay in
// l.gone until then, for a take to remove first. Those it cannot remove expire instead, at
// most an ownership TTL later.
func (l *Leases) flush(ctx context.Context) {
	l.mu.Lock()
	gone := l.gone[:len(l.gone):len(l.gone)] // later releases are appended past it
	l.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	defer func() {
		l.mu.Lock()
		l.gone = slices.Clone(l.gone[len(gone):])
		l.mu.Unlock()
	}()
	_, err := l.r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, g := range gone {
			for _, k := range g.keys {
				p.ZRem(ctx, k, g.member)
			}
		}
		return nil
	})
	if err != nil {
		l.r.fail("lease")
		l.r.log.Debug("releasing connection leases failed; they will expire", "leases", len(gone), "err", err)
	}
}

// Held returns how many leases this replica holds.
func (l *Leases) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held)
}

// refresh extends every lease this replica holds. A lease released while the refresh was on
// its way to Redis may have been put back by it: it is released again.
func (l *Leases) refresh(ctx context.Context) error {
	l.mu.Lock()
	snapshot := make([]leaseRef, 0, len(l.held))
	for m, ks := range l.held {
		snapshot = append(snapshot, leaseRef{member: m, keys: ks})
	}
	l.mu.Unlock()
	var (
		keys    []string
		members []any
	)
	for _, h := range snapshot {
		for _, k := range h.keys {
			keys = append(keys, k)
			members = append(members, h.member)
		}
	}
	ttl := l.r.opts.OwnershipTTL.Milliseconds()
	var err error
	for start := 0; start < len(keys) && err == nil; start += extendBatch {
		end := min(len(keys), start+extendBatch)
		args := append([]any{ttl}, members[start:end]...)
		if err = extendScript.Run(ctx, l.r.client, keys[start:end], args...).Err(); err != nil {
			l.r.fail("lease")
			err = fmt.Errorf("cluster: extend connection leases: %w", err)
		}
	}
	l.mu.Lock()
	again := false
	for _, h := range snapshot {
		if _, still := l.held[h.member]; !still {
			l.gone = append(l.gone, h)
			again = true
		}
	}
	l.mu.Unlock()
	if again {
		l.kickReleaser()
	}
	return err
}

func (l *Leases) kickReleaser() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}
