package db_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
)

// wantTables are the tables other packages and operators rely on by name, after the prefix.
var wantTables = []string{"organizations", "sessions", "session_shares", "connections", "agents", "agent_commands", "schema_migrations"}

// migrationFiles is how many migrations each dialect has.
const migrationFiles = 6

func tableExists(t *testing.T, d *db.Database, name string) bool {
	t.Helper()
	q := "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
	if d.Dialect() == db.Postgres {
		q = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
	}
	var n int
	if err := d.SQL().QueryRowContext(t.Context(), q, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func migrationCount(t *testing.T, d *db.Database) int {
	t.Helper()
	var n int
	if err := d.SQL().QueryRowContext(t.Context(), d.Expand("SELECT COUNT(*) FROM {schema_migrations}")).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrationsIdempotentOnReopen(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			u := dbtest.URL(t, dialect)
			d1, err := db.Open(t.Context(), u)
			if err != nil {
				t.Fatal(err)
			}
			for _, tbl := range wantTables {
				if !tableExists(t, d1, db.DefaultTablePrefix+tbl) {
					t.Errorf("table %s%s missing after migration", db.DefaultTablePrefix, tbl)
				}
				if tableExists(t, d1, tbl) {
					t.Errorf("table %s exists without the prefix", tbl)
				}
			}
			applied := migrationCount(t, d1)
			if applied != migrationFiles {
				t.Fatalf("%d migrations recorded, want %d", applied, migrationFiles)
			}
			if err := d1.UpsertOrganization(t.Context(), orgRow("o1")); err != nil {
				t.Fatal(err)
			}
			if err := d1.Close(); err != nil {
				t.Fatal(err)
			}

			d2, err := db.Open(t.Context(), u)
			if err != nil {
				t.Fatalf("re-open: %v", err)
			}
			defer d2.Close()
			if n := migrationCount(t, d2); n != applied {
				t.Errorf("re-open recorded %d migrations, want %d", n, applied)
			}
			if _, err := d2.GetOrganization(t.Context(), "o1"); err != nil {
				t.Errorf("data lost on re-open: %v", err)
			}
		})
	}
}

// TestConcurrentMigration opens the same fresh database from several goroutines at once, as
// replicas starting together do: every Open must succeed and each migration apply once.
func TestConcurrentMigration(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			u := dbtest.URL(t, dialect)
			const n = 4
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			var (
				wg   sync.WaitGroup
				dbs  [n]*db.Database
				errs [n]error
			)
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					dbs[i], errs[i] = db.Open(ctx, u)
				})
			}
			close(start)
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Errorf("Open %d: %v", i, errs[i])
					continue
				}
				defer dbs[i].Close()
			}
			if t.Failed() {
				return
			}
			var total, distinct int
			if err := dbs[0].SQL().QueryRowContext(ctx, dbs[0].Expand("SELECT COUNT(*), COUNT(DISTINCT version) FROM {schema_migrations}")).Scan(&total, &distinct); err != nil {
				t.Fatal(err)
			}
			if total != migrationFiles || total != distinct {
				t.Errorf("schema_migrations has %d rows for %d versions", total, distinct)
			}
		})
	}
}
