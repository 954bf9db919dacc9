package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

const (
	defaultSQLiteConns   = 8
	defaultPostgresConns = 16
	sqliteBusyTimeout    = 5 * time.Second
)

// sqliteDefaults are the modernc.org/sqlite DSN parameters applied to every connection unless
// the URL sets the same setting (under either of its names). IMMEDIATE transactions take the
// write lock at BEGIN, so a read-then-write transaction waits in the busy handler instead of
// failing with SQLITE_BUSY when another writer got there first.
var sqliteDefaults = []struct{ key, alias, value string }{
	{"_busy_timeout", "_timeout", fmt.Sprint(sqliteBusyTimeout.Milliseconds())},
	{"_journal_mode", "_journal", "WAL"},
	{"_foreign_keys", "_fk", "1"},
	{"_synchronous", "_sync", "NORMAL"},
	{"_txlock", "", "immediate"},
}

// openSQLite opens rest, the part of a sqlite:// URL after the scheme: a path and an optional
// query of driver parameters.
func openSQLite(ctx context.Context, rest string, o options) (*Database, error) {
	path, rawQuery, _ := strings.Cut(rest, "?")
	if path == "" {
		return nil, fmt.Errorf("db: open sqlite: URL has no file path (want sqlite://<file> or sqlite:///<absolute path>)")
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("db: open sqlite: bad URL query: %w", err)
	}
	for _, def := range sqliteDefaults {
		if !q.Has(def.key) && (def.alias == "" || !q.Has(def.alias)) {
			q.Set(def.key, def.value)
		}
	}
	memory := path == ":memory:" || q.Get("mode") == "memory"
	// A file: URI keeps SQLite's own URI parameters (mode, cache, ...) working; the driver
	// strips its underscore parameters before SQLite sees them.
	dsn := "file:" + escapeSQLitePath(path) + "?" + q.Encode()

	sqlDB, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("db: open sqlite: %w", err)
	}
	n := defaultSQLiteConns
	if o.maxOpenConns > 0 {
		n = o.maxOpenConns
	}
	if memory {
		n = 1
	}
	sqlDB.SetMaxOpenConns(n)
	// Keep every connection: a new one reruns the pragmas and reopens the file.
	sqlDB.SetMaxIdleConns(n)
	if err := pingSQLite(ctx, sqlDB); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("db: open sqlite: %w", err)
	}
	d, err := newDatabase(sqlDB, SQLite, o)
	if err != nil {
		_ = sqlDB.Close()
		return nil, err
	}
	return d, nil
}

// SQLiteDSN is the data source name to open the SQLite file at path with, as
// sql.Open("sqlite", SQLiteDSN(path)) (modernc.org/sqlite), for a caller that keeps its own
// *sql.DB and hands it to OpenDB: every connection then gets what this package relies on, as
// Open gives it — a 5 s busy timeout, foreign keys, WAL, synchronous=NORMAL and transactions
// that begin IMMEDIATE (so a read-then-write transaction waits for the write lock instead of
// failing with SQLITE_BUSY).
func SQLiteDSN(path string) string {
	q := url.Values{}
	for _, def := range sqliteDefaults {
		q.Set(def.key, def.value)
	}
	return "file:" + escapeSQLitePath(path) + "?" + q.Encode()
}

// pingSQLite opens the first connection. Turning a new file to WAL takes a lock SQLite does
// not always wait for (SQLITE_BUSY without calling the busy handler), so processes opening
// one file together try again, within the busy timeout.
func pingSQLite(ctx context.Context, sqlDB *sql.DB) error {
	deadline := time.Now().Add(sqliteBusyTimeout)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		err := sqlDB.PingContext(ctx)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// escapeSQLitePath escapes the characters that end or escape the path part of a file: URI.
func escapeSQLitePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// openPostgres opens a PostgreSQL database through pgx. Unknown URL parameters, such as
// search_path, are sent to the server as runtime parameters.
func openPostgres(ctx context.Context, rawURL string, o options) (*Database, error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("db: open postgres: %w", err)
	}
	sqlDB := stdlib.OpenDB(*cfg)
	n := defaultPostgresConns
	if o.maxOpenConns > 0 {
		n = o.maxOpenConns
	}
	sqlDB.SetMaxOpenConns(n)
	sqlDB.SetMaxIdleConns(min(n, 4))
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	if err := sqlDB.PingContext(ctx); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("db: open postgres: %w", err)
	}
	d, err := newDatabase(sqlDB, Postgres, o)
	if err != nil {
		_ = sqlDB.Close()
		return nil, err
	}
	return d, nil
}
