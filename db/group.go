package db

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Group commit: the writes of a command's life (stored, claimed, acknowledged, completed) are
// single-row statements made by many goroutines at once: HTTP handlers, agents' readers,
// dispatchers. Each alone is a transaction, and its commit (a WAL flush) costs more than the
// statement. Grouped, the writes that arrive while a transaction runs share the next one: one
// commit for many, no added wait when there is no crowd (a lone write runs alone), and the
// same durability, since every caller is answered after its commit.

const (
	// groupMaxBatch bounds a shared transaction, so one batch never holds locks for long.
	groupMaxBatch = 64
	// groupTimeout bounds one batch's transaction.
	groupTimeout = 30 * time.Second
)

// errGroupAborted ends a shared transaction one of whose writes failed; its writes are then
// made one by one, so one write's failure is never another's.
var errGroupAborted = errors.New("db: group commit aborted")

// groupCommit runs grouped writes on its committers: goroutines owned by the Database, ended
// by Close.
type groupCommit struct {
	reqs     chan *groupReq
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	// transactions and writes count the batches run and the writes in them.
	transactions, writes atomic.Uint64
}

// GroupCommits reports how many transactions the grouped writes took, and how many writes
// they were: the ratio is the writes that shared a commit.
func (d *Database) GroupCommits() (transactions, writes uint64) {
	if d.group == nil {
		return 0, 0
	}
	return d.group.transactions.Load(), d.group.writes.Load()
}

type groupReq struct {
	ctx  context.Context
	fn   func(ctx context.Context, on querier) error
	done chan error
	// atomic: fn makes several statements, so alone it still runs in a transaction.
	atomic bool
}

// alone makes r's write by itself.
func (d *Database) alone(r *groupReq) error {
	if !r.atomic {
		return r.fn(r.ctx, d.db)
	}
	return d.inTx(r.ctx, func(tx *sql.Tx) error { return r.fn(r.ctx, tx) })
}

// startGroupCommit starts n committers: one for SQLite (a single writer anyway), a few for
// PostgreSQL, so batches are built while others commit.
func (d *Database) startGroupCommit(n int) {
	g := &groupCommit{reqs: make(chan *groupReq), stop: make(chan struct{})}
	for range n {
		g.wg.Go(func() { d.commitLoop(g) })
	}
	d.group = g
}

func (g *groupCommit) close() {
	g.stopOnce.Do(func() { close(g.stop) })
	g.wg.Wait()
}

// grouped runs fn, a write that must be all or nothing on its own, in a transaction shared
// with the grouped writes that arrive meanwhile. fn may run twice (its shared transaction
// rolled back, then alone), so it must keep no state but its result. It waits for the
// outcome even when ctx ends while the write is under way: the caller learns what happened.
func (d *Database) grouped(ctx context.Context, fn func(ctx context.Context, on querier) error) error {
	return d.group.run(d, &groupReq{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// groupedTx is grouped for a write of several statements: alone, it has a transaction of its
// own. On SQLite every write of the agents' hub goes through the committer: a write waiting
// for SQLite's lock beside a committer that takes it again at once would starve.
func (d *Database) groupedTx(ctx context.Context, fn func(ctx context.Context, on querier) error) error {
	return d.group.run(d, &groupReq{ctx: ctx, fn: fn, done: make(chan error, 1), atomic: true})
}

func (g *groupCommit) run(d *Database, r *groupReq) error {
	if g == nil {
		return d.alone(r)
	}
	select {
	case g.reqs <- r:
	case <-r.ctx.Done():
		return r.ctx.Err()
	case <-g.stop:
		return d.alone(r) // closing: the pool answers "closed"
	}
	return <-r.done
}

// commitLoop takes a write and every other one waiting at that moment, and commits them
// together.
func (d *Database) commitLoop(g *groupCommit) {
	batch := make([]*groupReq, 0, groupMaxBatch)
	for {
		select {
		case r := <-g.reqs:
			batch = append(batch[:0], r)
		case <-g.stop:
			return
		}
	collect:
		for len(batch) < groupMaxBatch {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			default:
				break collect
			}
		}
		d.commitBatch(batch)
		clear(batch)
	}
}

// commitBatch commits the batch's writes in one transaction, or each alone when one of them
// fails or the commit does.
func (d *Database) commitBatch(batch []*groupReq) {
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- err // given up on before it ran: it never will
			continue
		}
		live = append(live, r)
	}
	if len(live) > 0 {
		d.group.transactions.Add(1)
		d.group.writes.Add(uint64(len(live)))
	}
	if len(live) == 1 {
		live[0].done <- d.alone(live[0])
		return
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	errs := make([]error, len(live))
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		for i, r := range live {
			if errs[i] = r.fn(ctx, tx); errs[i] != nil {
				return errGroupAborted
			}
		}
		return nil
	})
	if err != nil {
		for _, r := range live {
			r.done <- d.alone(r)
		}
		return
	}
	for i, r := range live {
		r.done <- errs[i]
	}
}
