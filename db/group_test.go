package db_test

import (
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
)

// Writes made at once share transactions, and every one gets its own answer.
func TestGroupCommitSharesTransactions(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		const writers, each = 40, 5
		for i := range writers * each {
			mustCreateCommand(t, d, commandRow(fmt.Sprintf("g%03d", i), "a1", base.Add(time.Duration(i)*time.Millisecond)))
		}
		tx0, w0 := d.GroupCommits()
		var wg sync.WaitGroup
		start := make(chan struct{})
		var failed atomic.Int32
		for w := range writers {
			wg.Go(func() {
				<-start
				for i := range each {
					id := fmt.Sprintf("g%03d", w*each+i)
					tr, err := d.AckCommand(ctx, "a1", id, time.Time{})
					if err != nil || !tr.Applied || tr.Command.CommandID != id {
						failed.Add(1)
						t.Errorf("ack %s: %+v %v", id, tr, err)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		if failed.Load() > 0 {
			return
		}
		tx1, w1 := d.GroupCommits()
		if writes := w1 - w0; writes != writers*each {
			t.Fatalf("%d grouped writes, want %d", writes, writers*each)
		}
		if txs := tx1 - tx0; txs >= writers*each {
			t.Fatalf("%d transactions for %d writes: none shared", txs, writers*each)
		}
		for i := range writers * each {
			if c := mustGetCommand(t, d, fmt.Sprintf("g%03d", i)); c.Status != "ack" {
				t.Fatalf("command %s is %s after its ack", c.CommandID, c.Status)
			}
		}
		// An ack of an unknown command is its caller's ErrNotFound, not its neighbours'.
		if _, err := d.AckCommand(ctx, "a1", "nope", time.Time{}); err == nil {
			t.Fatal("ack of an unknown command succeeded")
		}
	})
}

// A write that fails rolls back its shared transaction; the others are then made alone, so
// they succeed, once each.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		ctx := t.Context()
		const n = 16
		for i := range n {
			mustCreateCommand(t, d, commandRow(fmt.Sprintf("f%02d", i), "a1", base))
		}
		rerun := false
		for round := 0; round < 50 && !rerun; round++ {
			var wg sync.WaitGroup
			start := make(chan struct{})
			runs := make([]atomic.Int32, n)
			errs := make([]error, n+1)
			for i := range n + 1 {
				wg.Go(func() {
					<-start
					errs[i] = d.Grouped(ctx, func(exec func(string) (sql.Result, error)) error {
						if i == n {
							_, err := exec("UPDATE no_such_table SET x = 1")
							return err
						}
						runs[i].Add(1)
						_, err := exec(fmt.Sprintf("UPDATE {agent_commands} SET attempts = attempts + 1 WHERE id = 'f%02d'", i))
						return err
					})
				})
			}
			close(start)
			wg.Wait()
			if errs[n] == nil {
				t.Fatal("the failing write succeeded")
			}
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("round %d: write %d failed beside the failing one: %v", round, i, errs[i])
				}
				rerun = rerun || runs[i].Load() > 1
			}
			for i := range n {
				if c := mustGetCommand(t, d, fmt.Sprintf("f%02d", i)); c.Attempts != round+1 {
					t.Fatalf("round %d: command f%02d has %d attempts, want %d: a rolled-back write counted", round, i, c.Attempts, round+1)
				}
			}
		}
		if !rerun {
			t.Fatal("in 50 rounds the failing write never shared a transaction: the path is untested")
		}
	})
}
