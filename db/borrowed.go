package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/streamspace/streamspace-realtime/models"
)

// OpenDB builds the Database over a connection pool the caller already has, such as an API
// server's own *sql.DB, and applies the migrations this project's tables need (in their own
// namespace: see WithTablePrefix). The pool stays the caller's: Close releases what the
// Database started and leaves sqlDB open. dialect names the engine behind sqlDB.
func OpenDB(ctx context.Context, sqlDB *sql.DB, dialect Dialect, opts ...Option) (*Database, error) {
	if sqlDB == nil {
		return nil, errors.New("db: open: nil *sql.DB")
	}
	if dialect != SQLite && dialect != Postgres {
		return nil, fmt.Errorf("db: open: unsupported dialect %v", dialect)
	}
	o := newOptions(opts)
	if err := sqlDB.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("db: open %s: %w", dialect, err)
	}
	d := &Database{db: sqlDB, dialect: dialect, now: o.now, borrowed: true}
	return d.finishOpen(ctx)
}

// OpenPool is OpenDB over a pgx connection pool the caller already has. The pool stays the
// caller's: Close leaves it open.
func OpenPool(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Database, error) {
	if pool == nil {
		return nil, errors.New("db: open: nil *pgxpool.Pool")
	}
	return OpenDB(ctx, stdlib.OpenDBFromPool(pool), Postgres, opts...)
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
