package server

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// ipRates limits how fast one address may open WebSockets (browsers and agents alike): a
// token bucket per address. Off when rate is zero.
//
// Off by default: behind a load balancer or an ingress every request comes from a handful of
// proxy addresses, and a per-address limit would throttle everyone together. Turn it on
// where the server sees its clients' own addresses.
type ipRates struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*ipBucket
	// pruneAt is the size at which idle buckets are next swept, so that a scan of
	// addresses costs memory for a while, never without bound.
	pruneAt int
}

type ipBucket struct {
	limiter  *rate.Limiter
	lastSeen time.Time
}

// ipBucketsFloor is the smallest map that is ever swept.
const ipBucketsFloor = 1024

func newIPRates(perSecond float64, burst int) *ipRates {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = int(math.Ceil(10 * perSecond)) // a page of reconnects after a restart
	}
	return &ipRates{limit: rate.Limit(perSecond), burst: burst, buckets: map[string]*ipBucket{}, pruneAt: ipBucketsFloor}
}

// allow takes one upgrade from ip's bucket; when it is empty it says how long until the
// next one is allowed.
func (l *ipRates) allow(ip string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[ip]
	if b == nil {
		if len(l.buckets) >= l.pruneAt {
			l.prune(now)
		}
		b = &ipBucket{limiter: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[ip] = b
	}
	b.lastSeen = now
	r := b.limiter.ReserveN(now, 1)
	if delay := r.DelayFrom(now); delay > 0 {
		r.CancelAt(now)
		return false, delay
	}
	return true, 0
}

// prune drops the buckets that have refilled: an address unseen for as long as a full bucket
// takes to refill is indistinguishable from a new one.
func (l *ipRates) prune(now time.Time) {
	full := time.Duration(float64(l.burst) / float64(l.limit) * float64(time.Second))
	for ip, b := range l.buckets {
		if now.Sub(b.lastSeen) >= full {
			delete(l.buckets, ip)
		}
	}
	l.pruneAt = max(ipBucketsFloor, 2*len(l.buckets))
}

// connCounts limits the browser connections (sessions, metrics and logs sockets) one user and
// one organization hold on this replica at once. Zero turns a limit off.
type connCounts struct {
	perUser, perOrg int

	mu    sync.Mutex
	users map[string]int // by org + "\x00" + user
	orgs  map[string]int
}

func newConnCounts(perUser, perOrg int) *connCounts {
	return &connCounts{perUser: perUser, perOrg: perOrg, users: map[string]int{}, orgs: map[string]int{}}
}

// acquire reserves a connection for user of org, returning the function that gives it back
// (call it exactly once), or which limit refused it ("user" or "org").
func (c *connCounts) acquire(org, user string) (release func(), refused string) {
	if c.perUser <= 0 && c.perOrg <= 0 {
		return func() {}, ""
	}
	key := org + "\x00" + user
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.perUser > 0 && c.users[key] >= c.perUser {
		return nil, "user"
	}
	if c.perOrg > 0 && c.orgs[org] >= c.perOrg {
		return nil, "org"
	}
	c.users[key]++
	c.orgs[org]++
	return sync.OnceFunc(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.users[key]--; c.users[key] <= 0 {
			delete(c.users, key)
		}
		if c.orgs[org]--; c.orgs[org] <= 0 {
			delete(c.orgs, org)
		}
	}), ""
}

// allowUpgrade applies the per-address upgrade rate; false means the request was answered
// with 429 and a Retry-After.
func (s *Server) allowUpgrade(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := s.upgradeRates.allow(clientIP(r), time.Now())
	if ok {
		return true
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	s.fail(w, r, http.StatusTooManyRequests, "too_many_upgrades", "too many connections opened from this address; retry later")
	return false
}

// admitBrowser reserves one of the caller's browser connections; false means the request was
// answered with 429. With several replicas the limits hold across all of them: the connection
// also takes a lease in Redis (cluster.Leases). Should Redis not answer, this replica's own
// count still applies.
func (s *Server) admitBrowser(w http.ResponseWriter, r *http.Request, org, user string) (release func(), ok bool) {
	release, refused := s.connCounts.acquire(org, user)
	if refused == "" && s.cluster != nil {
		release, refused = s.leaseBrowser(r, org, user, release)
	}
	switch refused {
	case "":
		return release, true
	case "user":
		s.fail(w, r, http.StatusTooManyRequests, "too_many_connections", "this user holds the most connections allowed; close one first")
	default:
		s.fail(w, r, http.StatusTooManyRequests, "too_many_connections", "this organization holds the most connections allowed")
	}
	return nil, false
}

// leaseBrowser adds the cluster's count to a connection this replica admitted (local is its
// local reservation): the release of both, or which limit refused it, local given back.
func (s *Server) leaseBrowser(r *http.Request, org, user string, local func()) (release func(), refused string) {
	var (
		slots []cluster.LeaseSlot
		names []string
	)
	if n := s.connCounts.perUser; n > 0 {
		slots = append(slots, cluster.LeaseSlot{Key: "user:" + org + "\x00" + user, Limit: n})
		names = append(names, "user")
	}
	if n := s.connCounts.perOrg; n > 0 {
		slots = append(slots, cluster.LeaseSlot{Key: "org:" + org, Limit: n})
		names = append(names, "org")
	}
	if len(slots) == 0 {
		return local, ""
	}
	ctx, cancel := context.WithTimeout(r.Context(), leaseTimeout)
	defer cancel()
	leased, idx, err := s.cluster.node.Leases().Acquire(ctx, slots)
	switch {
	case err != nil:
		s.log.Debug("connection limits counted on this replica alone", "err", err)
		return local, ""
	case idx >= 0:
		local()
		return nil, names[idx]
	}
	return func() { leased(); local() }, ""
}

// leaseTimeout bounds the wait for Redis's count of a connection: past it the connection is
// admitted on this replica's count.
const leaseTimeout = 2 * time.Second
