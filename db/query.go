package db

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
)

// query is one SQL statement in both dialects. Statements are package-level variables built
// by newQuery at init, so rebinding costs nothing on the hot path.
type query struct {
	sqlite, postgres string
}

// newQuery builds a statement written once with ? placeholders.
func newQuery(s string) query { return query{sqlite: s, postgres: rebind(s)} }

// dialectQuery builds a statement whose text differs between the dialects (locking clauses,
// JSON functions). Both are written with ? placeholders.
func dialectQuery(sqlite, postgres string) query {
	return query{sqlite: sqlite, postgres: rebind(postgres)}
}

// rebind turns ? placeholders into PostgreSQL's $1, $2, ... It leaves alone question marks
// inside quoted strings, quoted identifiers and comments.
func rebind(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			b.WriteString(s[i : i+end+2])
			i += end + 1
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			b.WriteString(s[i : i+end+1])
			i += end
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			b.WriteString(s[i : i+end+4])
			i += end + 3
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// querier is what *sql.DB, *sql.Tx and *sql.Conn have in common, so helpers run inside or
// outside a transaction.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

var (
	_ querier = (*sql.DB)(nil)
	_ querier = (*sql.Tx)(nil)
	_ querier = (*sql.Conn)(nil)
)

// text returns q in the Database's dialect.
func (d *Database) text(q query) string {
	if d.dialect == Postgres {
		return q.postgres
	}
	return q.sqlite
}

func (d *Database) exec(ctx context.Context, on querier, q query, args ...any) (sql.Result, error) {
	return on.ExecContext(ctx, d.text(q), args...)
}

func (d *Database) queryRow(ctx context.Context, on querier, q query, args ...any) *sql.Row {
	return on.QueryRowContext(ctx, d.text(q), args...)
}

func (d *Database) queryRows(ctx context.Context, on querier, q query, args ...any) (*sql.Rows, error) {
	return on.QueryContext(ctx, d.text(q), args...)
}

// execAffected runs q and returns how many rows it changed.
func (d *Database) execAffected(ctx context.Context, on querier, q query, args ...any) (int64, error) {
	res, err := d.exec(ctx, on, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// inTx runs fn in a transaction, committing when fn returns nil and rolling back otherwise.
// On SQLite the transaction begins IMMEDIATE (see sqliteDefaults), so it holds the write lock.
func (d *Database) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
