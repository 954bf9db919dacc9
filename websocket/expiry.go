package websocket

import (
	"container/heap"
	"sync"
	"time"
)

// expiryQueue closes clients whose token expires (4003), with one timer for the whole hub
// rather than one per client: a runtime timer and its closure cost more than the rest of an
// idle client's bookkeeping.
type expiryQueue struct {
	mu      sync.Mutex
	due     expiryHeap
	timer   *time.Timer
	stopped bool
}

// monoBase is the origin of the monotonic times in nanoseconds (monoNow) that a client keeps
// instead of a time.Time, three times its size: its token deadline and its last read.
var monoBase = time.Now()

// monoNow is the time since monoBase, read from the monotonic clock.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// monoAt is t (which must carry a monotonic reading, as time.Now's do) as monoNow would give it.
func monoAt(t time.Time) int64 { return int64(t.Sub(monoBase)) }

// expiryHeap orders clients by deadline; each client knows its index (-1: not queued).
type expiryHeap []*Client

func (e expiryHeap) Len() int           { return len(e) }
func (e expiryHeap) Less(i, j int) bool { return e[i].expiry.at < e[j].expiry.at }
func (e expiryHeap) Swap(i, j int) {
	e[i], e[j] = e[j], e[i]
	e[i].expiry.index, e[j].expiry.index = i, j
}
func (e *expiryHeap) Push(x any) {
	c := x.(*Client)
	c.expiry.index = len(*e)
	*e = append(*e, c)
}
func (e *expiryHeap) Pop() any {
	old := *e
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*e = old[:len(old)-1]
	c.expiry.index = -1
	return c
}

// add queues c to be closed at its deadline (monotonic time, so a test clock cannot stall it).
func (q *expiryQueue) add(c *Client, deadline time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	c.expiry.at = monoAt(deadline)
	heap.Push(&q.due, c)
	if q.due[0] == c {
		q.arm()
	}
}

// remove forgets c, which is gone.
func (q *expiryQueue) remove(c *Client) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if c.expiry.index >= 0 {
		heap.Remove(&q.due, c.expiry.index)
	}
}

// arm sets the timer for the earliest deadline; the caller holds mu.
func (q *expiryQueue) arm() {
	if len(q.due) == 0 {
		return
	}
	wait := time.Duration(q.due[0].expiry.at - monoNow())
	if q.timer == nil {
		q.timer = time.AfterFunc(wait, q.fire)
		return
	}
	q.timer.Reset(wait)
}

// fire closes every client past its deadline and re-arms for the next.
func (q *expiryQueue) fire() {
	var expired []*Client
	q.mu.Lock()
	now := monoNow()
	for len(q.due) > 0 && q.due[0].expiry.at <= now {
		expired = append(expired, heap.Pop(&q.due).(*Client))
	}
	if !q.stopped {
		q.arm()
	}
	q.mu.Unlock()
	for _, c := range expired {
		c.closeWith(CloseTokenExpired, "token expired", "token_expired")
	}
}

// stop ends the timer; clients are closed by the hub's stop anyway.
func (q *expiryQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	if q.timer != nil {
		q.timer.Stop()
	}
}
