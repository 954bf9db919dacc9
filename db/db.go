// Package db is the storage of StreamSpace Realtime: organizations, sessions, shares, browser
// connections, agents and the agent command queue, in SQLite (the embedded default) or
// PostgreSQL (for several replicas) behind database/sql. Every SQL statement of the project
// lives here, written once with ? placeholders and rebound for PostgreSQL at package init.
package db

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Dialect names the SQL engine behind a Database.
type Dialect int

// The supported dialects. The zero Dialect is invalid.
const (
	SQLite Dialect = iota + 1
	Postgres
)

// String returns "sqlite" or "postgres", the names used in URLs, logs and test names.
func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// Database is the project's storage. It is safe for concurrent use by many goroutines; it
// starts no goroutines of its own beyond database/sql's pool. Close releases the pool and is
// safe to call more than once.
type Database struct {
	db      *sql.DB
	dialect Dialect
	now     func() time.Time
	group   *groupCommit // nil: every write is its own transaction
	// borrowed: the pool is the caller's (OpenDB, OpenPool), so Close leaves it open.
	borrowed bool
}

// Option changes how Open sets up a Database. The zero set of options gives the defaults.
type Option func(*options)

type options struct {
	now          func() time.Time
	maxOpenConns int
	tablePrefix  string
}

// DefaultTablePrefix begins the name of every table and index this project creates, so that
// they never meet the tables of a server whose database it shares.
const DefaultTablePrefix = "ssrt_"

// WithTablePrefix sets the prefix of every table and index name (default DefaultTablePrefix):
// lower-case letters, digits and underscores, beginning with a letter and ending with "_".
func WithTablePrefix(prefix string) Option {
	return func(o *options) { o.tablePrefix = prefix }
}

// WithClock sets the clock used for timestamps the caller leaves zero (default time.Now), so
// tests can pin created_at and updated_at.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithMaxOpenConns caps the connection pool (default 8 for SQLite, 16 for PostgreSQL; an
// in-memory SQLite database always uses 1 since every connection would see its own database).
func WithMaxOpenConns(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxOpenConns = n
		}
	}
}

// Open connects to the database named by url, configures the connection pool and applies the
// embedded migrations that are not applied yet.
//
//	sqlite://streamspace.db          a file relative to the working directory
//	sqlite:///var/lib/ss/ss.db       an absolute path
//	sqlite://ss.db?_pragma=...       extra parameters for modernc.org/sqlite
//	postgres://user@host:5432/db?... or postgresql://..., any pgx connection URL
//
// SQLite gets WAL journaling, a 5 s busy timeout, foreign keys, synchronous=NORMAL and
// BEGIN IMMEDIATE transactions unless the URL sets them.
func Open(ctx context.Context, url string, opts ...Option) (*Database, error) {
	o := newOptions(opts)
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		// Never echo the URL: it may carry a password.
		return nil, fmt.Errorf("db: open: database URL has no scheme (want sqlite://<path> or postgres://...)")
	}
	var (
		d   *Database
		err error
	)
	switch strings.ToLower(scheme) {
	case "sqlite":
		d, err = openSQLite(ctx, rest, o)
	case "postgres", "postgresql":
		d, err = openPostgres(ctx, url, o)
	default:
		return nil, fmt.Errorf("db: open: unsupported database URL scheme %q (want sqlite:// or postgres://)", scheme)
	}
	if err != nil {
		return nil, err
	}
	return d.finishOpen(ctx)
}

func newOptions(opts []Option) options {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// finishOpen migrates a Database whose pool answers and starts its grouped writes. On error
// the pool is closed unless it is the caller's.
func (d *Database) finishOpen(ctx context.Context) (*Database, error) {
	if err := d.migrate(ctx); err != nil {
		if !d.borrowed {
			_ = d.db.Close()
		}
		return nil, fmt.Errorf("db: migrate %s: %w", d.dialect, err)
	}
	if d.dialect == Postgres {
		d.startGroupCommit(4)
	} else {
		d.startGroupCommit(1)
	}
	return d, nil
}

// Close closes the connection pool. Queries running at the time finish first; grouped writes
// waiting for a transaction are made first.
func (d *Database) Close() error {
	if d.group != nil {
		d.group.close()
	}
	if d.borrowed {
		return nil
	}
	return d.db.Close()
}

// Ping checks that the database answers, for readiness probes.
func (d *Database) Ping(ctx context.Context) error {
	if err := d.db.PingContext(ctx); err != nil {
		return fmt.Errorf("db: ping %s: %w", d.dialect, err)
	}
	return nil
}

// Dialect reports which engine the Database talks to.
func (d *Database) Dialect() Dialect { return d.dialect }

// SQL exposes the pool for health checks and pool statistics. Statements belong in this
// package: SQL written elsewhere would miss the dialect's timestamp encoding.
func (d *Database) SQL() *sql.DB { return d.db }
