package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/streamspace/streamspace-realtime/models"
)

// OpenDB builds the Database over a connection pool the caller already has, such as an API
// server's own *sql.DB, and applies the migrations this project's tables need, each table and
// index named with the table prefix (WithTablePrefix) so that none meets the caller's own. A
// table of this project's name that the caller already has stops Open with ErrForeignObject:
// it is never adopted or altered. The pool stays the caller's: Close releases what the
// Database started and leaves sqlDB open. dialect names the engine behind sqlDB.
//
// A SQLite pool must be opened with sql.Open("sqlite", SQLiteDSN(path)) (modernc.org/sqlite),
// or give its connections the same settings: OpenDB refuses one whose connections do not
// enforce foreign keys, and logs a warning when they have no busy timeout or the file is not
// in WAL mode.
func OpenDB(ctx context.Context, sqlDB *sql.DB, dialect Dialect, opts ...Option) (*Database, error) {
	if sqlDB == nil {
		return nil, errors.New("db: open: nil *sql.DB")
	}
	return openOver(ctx, sqlDB, dialect, true, opts)
}

// OpenPool is OpenDB over a pgx connection pool the caller already has. The Database reaches
// the pool through a database/sql wrapper of its own (stdlib.OpenDBFromPool), which Close
// closes: that hands its connections back to the pool and leaves the pool open. The pool's
// search_path decides the schema the tables live in.
func OpenPool(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Database, error) {
	if pool == nil {
		return nil, errors.New("db: open: nil *pgxpool.Pool")
	}
	return openOver(ctx, stdlib.OpenDBFromPool(pool), Postgres, false, opts)
}

// openOver builds the Database over a pool that Open did not make. borrowed: the pool is the
// caller's, never closed here; otherwise it is closed when opening fails.
func openOver(ctx context.Context, sqlDB *sql.DB, dialect Dialect, borrowed bool, opts []Option) (*Database, error) {
	fail := func(err error) (*Database, error) {
		if !borrowed {
			_ = sqlDB.Close()
		}
		return nil, err
	}
	if dialect != SQLite && dialect != Postgres {
		return fail(fmt.Errorf("db: open: unsupported dialect %v", dialect))
	}
	o, err := newOptions(opts)
	if err != nil {
		return fail(err)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("db: open %s: %w", dialect, err))
	}
	if dialect == SQLite {
		if err := checkSQLitePool(ctx, sqlDB, o.logger); err != nil {
			return fail(err)
		}
	}
	d, err := newDatabase(sqlDB, dialect, o)
	if err != nil {
		return fail(err)
	}
	d.borrowed = borrowed
	return d.finishOpen(ctx)
}

// checkSQLitePool checks, on one of the caller's connections, the settings this package
// relies on that a connection can report. Foreign keys are required: without them deleting a
// session would leave its shares and connections behind. A missing busy timeout or WAL only
// costs SQLITE_BUSY errors under load, so they are logged. (Whether transactions begin
// IMMEDIATE cannot be read back; SQLiteDSN sets it.)
func checkSQLitePool(ctx context.Context, sqlDB *sql.DB, log *slog.Logger) error {
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("db: open sqlite: %w", err)
	}
	defer conn.Close()
	var (
		fk, busy int
		mode     string
	)
	if err := conn.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return fmt.Errorf("db: open sqlite: read PRAGMA foreign_keys (is this a SQLite pool?): %w", err)
	}
	if fk != 1 {
		return errors.New(`db: open sqlite: the pool's connections do not enforce foreign keys; open it with sql.Open("sqlite", db.SQLiteDSN(path)), or set foreign keys on every connection`)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
		return fmt.Errorf("db: open sqlite: read PRAGMA busy_timeout: %w", err)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("db: open sqlite: read PRAGMA journal_mode: %w", err)
	}
	if busy <= 0 || mode != "wal" {
		log.Warn("db: the SQLite pool given to OpenDB lacks settings this package relies on; open it with db.SQLiteDSN(path)",
			"busy_timeout_ms", busy, "journal_mode", mode, "want_journal_mode", "wal")
	}
	return nil
}

// EnsureAgent records the agent, approved, unless a row of that id exists already; an existing
// row is left as it is. It is for an embedding server that enrolls and authenticates agents
// in its own tables and hands this project only their connections.
func (d *Database) EnsureAgent(ctx context.Context, a models.Agent) error {
	if a.ApprovalStatus == "" {
		a.ApprovalStatus = models.ApprovalApproved
	}
	err := d.CreateAgent(ctx, a)
	if errors.Is(err, ErrConflict) {
		return nil
	}
	return err
}
