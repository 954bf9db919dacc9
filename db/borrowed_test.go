package db_test

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

// OpenDB over a caller's pool, in a database where the caller has its own agents and sessions
// (of another shape): this package's tables live beside them under the prefix, the caller's
// columns and rows are untouched, and Close leaves the caller's pool working.
func TestOpenDBOverCallersPool(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			sqlDB := callerDB(t, dialect)
			createCallerTables(t, sqlDB)
			agentsBefore := tableSnapshot(t, sqlDB, dialect, "agents")
			sessionsBefore := tableSnapshot(t, sqlDB, dialect, "sessions")

			d, err := db.OpenDB(ctx, sqlDB, dialectOf(t, dialect))
			if err != nil {
				t.Fatal(err)
			}
			if d.SQL() != sqlDB || d.Dialect() != dialectOf(t, dialect) {
				t.Errorf("SQL() or Dialect() is not the caller's")
			}
			if err := d.UpsertOrganization(ctx, models.Organization{ID: "o1"}); err != nil {
				t.Fatal(err)
			}
			mustCreate(t, d, sessionRow("k1", "o1", "u1", base)) // the caller's session key, another table
			if err := d.EnsureAgent(ctx, models.Agent{ID: "a1", OrgID: "o1"}); err != nil {
				t.Fatal(err)
			}
			if err := d.EnsureAgent(ctx, models.Agent{ID: "a1", OrgID: "other"}); err != nil {
				t.Fatalf("EnsureAgent of an existing agent: %v", err)
			}
			if a, err := d.GetAgent(ctx, "a1"); err != nil || a.OrgID != "o1" || a.ApprovalStatus != models.ApprovalApproved {
				t.Errorf("agent %+v, %v", a, err)
			}
			mustCreateCommand(t, d, commandRow("c1", "a1", base))
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}

			// The caller's pool still works, and its tables are as they were.
			if err := sqlDB.PingContext(ctx); err != nil {
				t.Fatalf("the caller's pool after Close: %v", err)
			}
			if got := tableSnapshot(t, sqlDB, dialect, "agents"); got != agentsBefore {
				t.Errorf("caller's agents changed:\n%s\nwas\n%s", got, agentsBefore)
			}
			if got := tableSnapshot(t, sqlDB, dialect, "sessions"); got != sessionsBefore {
				t.Errorf("caller's sessions changed:\n%s\nwas\n%s", got, sessionsBefore)
			}
			var n int
			if err := sqlDB.QueryRowContext(ctx, `SELECT COUNT(*) FROM ssrt_agent_commands`).Scan(&n); err != nil || n != 1 {
				t.Errorf("ssrt_agent_commands: %d rows, %v", n, err)
			}
		})
	}
}

// A SQLite pool whose connections do not enforce foreign keys is refused before anything is
// created; SQLiteDSN gives one that passes, whatever the path holds.
func TestOpenDBSQLiteSettings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "plain.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if d, err := db.OpenDB(t.Context(), plain, db.SQLite); err == nil {
		_ = d.Close()
		t.Fatal("OpenDB accepted connections without foreign keys")
	} else if !strings.Contains(err.Error(), "foreign keys") || !strings.Contains(err.Error(), "SQLiteDSN") {
		t.Errorf("error: %v", err)
	}
	if got := objectNames(t, plain, "sqlite"); len(got) != 0 {
		t.Errorf("refused OpenDB created %v", got)
	}

	path := filepath.Join(dir, "odd #name?.db")
	good, err := sql.Open("sqlite", db.SQLiteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	d, err := db.OpenDB(t.Context(), good, db.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var mode string
	var fk, busy int
	if err := good.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if err := good.QueryRowContext(t.Context(), "PRAGMA foreign_keys").Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if err := good.QueryRowContext(t.Context(), "PRAGMA busy_timeout").Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || fk != 1 || busy < 1000 {
		t.Errorf("SQLiteDSN connection: journal_mode=%s foreign_keys=%d busy_timeout=%d", mode, fk, busy)
	}
	if !fileExists(path) {
		t.Errorf("SQLiteDSN(%q) did not open that file", path)
	}
}

func TestOpenDBBadArguments(t *testing.T) {
	t.Parallel()
	if _, err := db.OpenDB(t.Context(), nil, db.SQLite); err == nil {
		t.Error("OpenDB(nil) succeeded")
	}
	if _, err := db.OpenPool(t.Context(), nil); err == nil {
		t.Error("OpenPool(nil) succeeded")
	}
	sqlDB := callerDB(t, "sqlite")
	if _, err := db.OpenDB(t.Context(), sqlDB, db.Dialect(0)); err == nil || !strings.Contains(err.Error(), "unsupported dialect") {
		t.Errorf("OpenDB with dialect 0: %v", err)
	}
	if err := sqlDB.PingContext(t.Context()); err != nil {
		t.Errorf("a refused OpenDB closed the caller's pool: %v", err)
	}
}

// OpenPool over a real pgxpool: its connections go back to the pool when the Database closes,
// and the pool stays open and usable.
func TestOpenPool(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, dbtest.URL(t, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE agent_commands (id BIGSERIAL PRIMARY KEY, body JSONB)`); err != nil {
		t.Fatal(err)
	}
	d, err := db.OpenPool(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.EnsureAgent(ctx, models.Agent{ID: "a1"}); err != nil {
		t.Fatal(err)
	}
	c := commandRow("c1", "a1", base)
	c.ID = "api-cmd-42"
	mustCreateCommand(t, d, c)
	if got := mustGetCommand(t, d, "c1"); got.ID != "api-cmd-42" {
		t.Errorf("record id read back as %q", got.ID)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if n := pool.Stat().AcquiredConns(); n != 0 {
		t.Errorf("%d pool connections still held after Close", n)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("the pool after Close: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT COUNT(*) FROM agent_commands`).Scan(&n); err != nil || n != 0 {
		t.Errorf("the caller's agent_commands: %d rows, %v", n, err)
	}
	// The pool's foreign table in the way of another prefix is refused through OpenPool too.
	if _, err := pool.Exec(ctx, `CREATE TABLE other_agents (id INT)`); err != nil {
		t.Fatal(err)
	}
	if d, err := db.OpenPool(ctx, pool, db.WithTablePrefix("other_")); err == nil {
		_ = d.Close()
		t.Error("OpenPool adopted other_agents")
	} else if !errors.Is(err, db.ErrForeignObject) {
		t.Errorf("OpenPool: %v", err)
	}
	if n := pool.Stat().AcquiredConns(); n != 0 {
		t.Errorf("%d pool connections held after a refused OpenPool", n)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
