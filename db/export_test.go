package db

import (
	"context"
	"database/sql"
)

// Grouped exposes grouped writes to the package's tests: exec runs a statement in the write's
// transaction, its {names} prefixed.
func (d *Database) Grouped(ctx context.Context, fn func(exec func(query string) (sql.Result, error)) error) error {
	return d.grouped(ctx, func(ctx context.Context, on querier) error {
		return fn(func(query string) (sql.Result, error) {
			text, err := expandNames(query, d.prefix)
			if err != nil {
				return nil, err
			}
			return on.ExecContext(ctx, text)
		})
	})
}

// Expand writes s's {names} with the Database's table prefix, for tests that read tables
// directly.
func (d *Database) Expand(s string) string {
	text, err := expandNames(s, d.prefix)
	if err != nil {
		panic(err)
	}
	return text
}
