package db_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
)

// Helpers for tests that play a caller with its own connection pool and its own tables in the
// database this package shares.

func dialectOf(t *testing.T, name string) db.Dialect {
	t.Helper()
	switch name {
	case "sqlite":
		return db.SQLite
	case "postgres":
		return db.Postgres
	}
	t.Fatalf("unknown dialect %q", name)
	return 0
}

// callerDB opens a fresh, empty database of the dialect the way a caller would: its own
// *sql.DB (SQLite through db.SQLiteDSN, PostgreSQL in a schema of its own), closed when the
// test ends.
func callerDB(t *testing.T, dialect string) *sql.DB {
	t.Helper()
	var (
		sqlDB *sql.DB
		err   error
	)
	switch dialect {
	case "sqlite":
		sqlDB, err = sql.Open("sqlite", db.SQLiteDSN(filepath.Join(t.TempDir(), "caller.db")))
	case "postgres":
		sqlDB, err = sql.Open("pgx", dbtest.URL(t, "postgres"))
	default:
		t.Fatalf("unknown dialect %q", dialect)
	}
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(4)
	t.Cleanup(func() { _ = sqlDB.Close() }) // before dbtest drops the schema
	return sqlDB
}

// mustExec runs the caller's own statements (no placeholders).
func mustExec(t *testing.T, sqlDB *sql.DB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := sqlDB.ExecContext(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// createCallerTables gives the caller its own agents and sessions, of another shape than this
// package's, with rows, as an embedding API server has them.
func createCallerTables(t *testing.T, sqlDB *sql.DB) {
	t.Helper()
	mustExec(t, sqlDB,
		`CREATE TABLE agents (agent_id TEXT PRIMARY KEY, hostname TEXT NOT NULL, cluster TEXT)`,
		`CREATE INDEX agents_hostname ON agents (hostname)`,
		`INSERT INTO agents (agent_id, hostname, cluster) VALUES ('a1', 'node-1', 'east'), ('a2', 'node-2', NULL)`,
		`CREATE TABLE sessions (session_key TEXT PRIMARY KEY, owner TEXT NOT NULL, seats INTEGER NOT NULL)`,
		`INSERT INTO sessions (session_key, owner, seats) VALUES ('k1', 'alice', 2), ('k2', 'bob', 5)`,
	)
}

// tableSnapshot describes a table's columns and rows, to compare before and after.
func tableSnapshot(t *testing.T, sqlDB *sql.DB, dialect, table string) string {
	t.Helper()
	ctx := t.Context()
	colsQuery := `SELECT name || ' ' || type FROM pragma_table_info(?) ORDER BY cid`
	if dialect == "postgres" {
		colsQuery = `SELECT column_name || ' ' || data_type FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`
	}
	rows, err := sqlDB.QueryContext(ctx, colsQuery, table)
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, c)
	}
	_ = rows.Close()
	if len(cols) == 0 {
		t.Fatalf("table %s has no columns (missing?)", table)
	}
	rows, err = sqlDB.QueryContext(ctx, `SELECT * FROM `+table+` ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprint(vals...))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(cols, ", ") + " | " + strings.Join(out, "; ")
}

// objectNames lists every table and index of the database (PostgreSQL: of the current
// schema) as "kind name", SQLite's own objects left out.
func objectNames(t *testing.T, sqlDB *sql.DB, dialect string) []string {
	t.Helper()
	q := `SELECT type || ' ' || name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name`
	if dialect == "postgres" {
		q = `SELECT CASE relkind WHEN 'r' THEN 'table' WHEN 'i' THEN 'index' ELSE relkind::text END || ' ' || relname
			FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
			ORDER BY relname`
	}
	rows, err := sqlDB.QueryContext(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// withPrefix keeps the names that begin with prefix ("kind name" entries).
func withPrefix(objects []string, prefix string) []string {
	var out []string
	for _, o := range objects {
		if _, name, _ := strings.Cut(o, " "); strings.HasPrefix(name, prefix) {
			out = append(out, o)
		}
	}
	return out
}
