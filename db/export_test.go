package db

import (
	"context"
	"database/sql"
)

// Grouped exposes grouped writes to the package's tests: exec runs a statement in the write's
// transaction.
func (d *Database) Grouped(ctx context.Context, fn func(exec func(query string) (sql.Result, error)) error) error {
	return d.grouped(ctx, func(ctx context.Context, on querier) error {
		return fn(func(query string) (sql.Result, error) { return on.ExecContext(ctx, query) })
	})
}
