// Package dbtest opens throwaway databases for tests of any package: a fresh SQLite file, or a
// fresh PostgreSQL schema that is dropped when the test ends. Tests of different packages run
// in parallel against the same PostgreSQL server, so every database gets its own uniquely
// named schema and nothing ever touches the public schema.
package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/streamspace/streamspace-realtime/db"
)

// EnvPostgresURL names the variable holding the PostgreSQL server used by tests.
const EnvPostgresURL = "STREAMSPACE_TEST_DATABASE_URL"

// DefaultPostgresURL is used when EnvPostgresURL is unset: the server scripts/services.sh
// starts.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// postgresConns caps each test database's pool: many packages' tests share one server.
const postgresConns = 8

// Dialects lists the dialects every storage test runs against.
func Dialects() []string { return []string{"sqlite", "postgres"} }

// ForEachDialect runs fn as one subtest per dialect, each with a fresh migrated Database that
// is closed (and, for PostgreSQL, dropped) when the subtest ends. fn may call t.Parallel.
func ForEachDialect(t *testing.T, fn func(t *testing.T, d *db.Database)) {
	t.Helper()
	for _, dialect := range Dialects() {
		t.Run(dialect, func(t *testing.T) {
			fn(t, Open(t, dialect))
		})
	}
}

// Open returns a fresh migrated Database of the dialect ("sqlite" or "postgres"), closed when
// the test ends. An unreachable PostgreSQL fails the test, never skips it: a missing service
// must turn CI red. Call it from the test's goroutine.
func Open(t testing.TB, dialect string) *db.Database {
	t.Helper()
	u := URL(t, dialect)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var opts []db.Option
	if dialect == "postgres" {
		opts = append(opts, db.WithMaxOpenConns(postgresConns))
	}
	d, err := db.Open(ctx, u, opts...)
	if err != nil {
		t.Fatalf("dbtest: open %s: %v", dialect, err)
	}
	// Registered after URL's cleanup, so it runs first: the schema is dropped after Close.
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("dbtest: close %s: %v", dialect, err)
		}
	})
	return d
}

// URL returns the URL of a fresh, empty, not yet migrated database of the dialect, removed
// when the test ends, for tests that open it themselves (several times, concurrently, with
// options). Close every Database opened on it before the test ends.
func URL(t testing.TB, dialect string) string {
	t.Helper()
	switch dialect {
	case "sqlite":
		return "sqlite://" + filepath.Join(t.TempDir(), "test.db")
	case "postgres":
		return postgresSchemaURL(t)
	}
	t.Fatalf("dbtest: unknown dialect %q (want one of %v)", dialect, Dialects())
	return ""
}

// postgresSchemaURL creates a uniquely named schema and returns the server URL with
// search_path set to it; pgx sends unknown URL parameters as runtime parameters.
func postgresSchemaURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgresURL)
	if base == "" {
		base = DefaultPostgresURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("dbtest: %s must be a postgres:// URL (err: %v)", EnvPostgresURL, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := sql.Open("pgx", base)
	if err == nil {
		err = admin.PingContext(ctx)
	}
	if err != nil {
		if admin != nil {
			_ = admin.Close()
		}
		t.Fatalf("dbtest: PostgreSQL is unreachable at %s: %v\n"+
			"Start it with scripts/services.sh, or point %s at a server.", u.Redacted(), err, EnvPostgresURL)
	}
	admin.SetMaxOpenConns(1)

	schema := schemaName(t.Name())
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+quoteIdent(schema)); err != nil {
		_ = admin.Close()
		t.Fatalf("dbtest: create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+quoteIdent(schema)+` CASCADE`); err != nil {
			t.Errorf("dbtest: drop schema %s: %v", schema, err)
		}
	})

	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// schemaName builds a schema name that is unique (random suffix) and still says which test
// made it, for whoever finds one left behind by a killed test run.
func schemaName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 32 {
			break
		}
	}
	id := strings.ReplaceAll(uuid.NewString(), "-", "")
	return fmt.Sprintf("t_%s_%s", b.String(), id[:16]) // at most 51 bytes, under the 63 limit
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
