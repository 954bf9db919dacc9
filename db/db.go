// Package db is the storage of StreamSpace Realtime: organizations, sessions, shares, browser
// connections, agents and the agent command queue, in SQLite (the embedded default) or
// PostgreSQL (for several replicas) behind database/sql. Every SQL statement of the project
// lives here, written once with ? placeholders and its table names in braces ({agents}).
//
// Every table and index is named with a table prefix (DefaultTablePrefix, "ssrt_", or
// WithTablePrefix), so the tables share a database, or a PostgreSQL schema, with an embedding
// server's own: Open makes its own pool, OpenDB and OpenPool work over the caller's. Each
// Database compiles the statements for its prefix and dialect when it opens. Opening applies
// the embedded migrations; a table or index of this project's name that is not recorded as its
// own stops it with ErrForeignObject, and is never adopted or altered. The tables of an earlier
// version, which had no prefix, are moved to the prefixed names on first open.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
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
// starts no goroutines of its own beyond database/sql's pool and its grouped writes' committers.
// Close releases what the Database started and is safe to call more than once.
type Database struct {
	db      *sql.DB
	dialect Dialect
	now     func() time.Time
	log     *slog.Logger
	// prefix begins every table and index name; stmts are the package's statements with it
	// applied, in the dialect, indexed by query id.
	prefix string
	stmts  []string
	group  *groupCommit // nil: every write is its own transaction
	// borrowed: the pool is the caller's (OpenDB), so Close leaves it open.
	borrowed bool
}

// Option changes how Open sets up a Database. The zero set of options gives the defaults.
type Option func(*options)

type options struct {
	now          func() time.Time
	maxOpenConns int
	tablePrefix  string
	logger       *slog.Logger
}

// DefaultTablePrefix begins the name of every table and index this project creates, so that
// they never meet the tables of a server whose database it shares.
const DefaultTablePrefix = "ssrt_"

// MaxTablePrefixLen bounds a table prefix, so that every prefixed name stays within
// PostgreSQL's 63-byte identifiers.
const MaxTablePrefixLen = 32

// WithTablePrefix sets the prefix of every table and index name (default DefaultTablePrefix):
// lower-case ASCII letters, digits and underscores, beginning with a letter, ending with "_",
// at most MaxTablePrefixLen bytes. Several Databases with different prefixes share one
// database (or PostgreSQL schema) without seeing each other's rows.
func WithTablePrefix(prefix string) Option {
	return func(o *options) { o.tablePrefix = prefix }
}

// WithLogger sets where the rare events of opening go, such as the one-time move of an older
// version's unprefixed tables to their prefixed names (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// ValidateTablePrefix reports why prefix cannot begin this project's table names, or nil.
func ValidateTablePrefix(prefix string) error {
	switch {
	case prefix == "":
		return errors.New("db: table prefix is required (the default is " + DefaultTablePrefix + ")")
	case len(prefix) > MaxTablePrefixLen:
		return fmt.Errorf("db: table prefix %.40q is longer than %d bytes", prefix, MaxTablePrefixLen)
	case !isObjectName(prefix) || !strings.HasSuffix(prefix, "_"):
		return fmt.Errorf("db: table prefix %q must be lower-case ASCII letters, digits and underscores, begin with a letter and end with \"_\"", prefix)
	}
	return nil
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
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		// Never echo the URL: it may carry a password.
		return nil, fmt.Errorf("db: open: database URL has no scheme (want sqlite://<path> or postgres://...)")
	}
	var d *Database
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

// newOptions applies opts over the defaults and validates the result.
func newOptions(opts []Option) (options, error) {
	o := options{now: time.Now, tablePrefix: DefaultTablePrefix}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	return o, ValidateTablePrefix(o.tablePrefix)
}

// newDatabase builds the Database over a pool that answers, with the package's statements
// compiled for its dialect and prefix; finishOpen then migrates it.
func newDatabase(sqlDB *sql.DB, dialect Dialect, o options) (*Database, error) {
	stmts, err := compileQueries(dialect, o.tablePrefix)
	if err != nil {
		return nil, fmt.Errorf("db: open %s: %w", dialect, err)
	}
	return &Database{db: sqlDB, dialect: dialect, now: o.now, log: o.logger, prefix: o.tablePrefix, stmts: stmts}, nil
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

// Close closes the connection pool Open made; a pool given to OpenDB stays open, and one
// given to OpenPool gets its connections back. Queries running at the time finish first;
// grouped writes waiting for a transaction are made first.
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

// TablePrefix reports the prefix of the Database's table and index names.
func (d *Database) TablePrefix() string { return d.prefix }

// SQL exposes the pool for health checks and pool statistics. Statements belong in this
// package: SQL written elsewhere would miss the dialect's timestamp encoding.
func (d *Database) SQL() *sql.DB { return d.db }
