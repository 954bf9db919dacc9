package db

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
)

// query names one SQL statement of the package. A statement is written once with ?
// placeholders and its table and index names in braces ({agents}, {sessions_org_user}); it is
// registered at package init and compiled for each Database when it opens (names prefixed,
// placeholders rebound for PostgreSQL), so running it costs one slice index.
type query struct{ id int }

// queryText is a registered statement in both dialects, names still in braces.
type queryText struct{ sqlite, postgres string }

var (
	// queries holds every statement of the package, in registration order; read-only once
	// package initialization is over.
	queries []queryText
	// queriesCompiled is set by the first compileQueries: a statement registered later would
	// be missing from the Databases already open.
	queriesCompiled atomic.Bool
)

// newQuery registers a statement written once for both dialects. Call it only to initialize a
// package-level variable.
func newQuery(s string) query { return registerQuery(s, s) }

// dialectQuery registers a statement whose text differs between the dialects (locking
// clauses, JSON functions). Call it only to initialize a package-level variable.
func dialectQuery(sqlite, postgres string) query { return registerQuery(sqlite, postgres) }

func registerQuery(sqlite, postgres string) query {
	if queriesCompiled.Load() {
		panic("db: a statement was registered after a Database opened; statements must be package-level variables")
	}
	// A malformed name is a bug in this package: fail at init, not at the first Open.
	for _, s := range []string{sqlite, postgres} {
		if _, err := expandNames(s, DefaultTablePrefix); err != nil {
			panic(fmt.Sprintf("db: statement %q: %v", s, err))
		}
	}
	queries = append(queries, queryText{sqlite: sqlite, postgres: postgres})
	return query{id: len(queries) - 1}
}

// compileQueries returns every registered statement as the dialect runs it with the prefix,
// indexed by query id.
func compileQueries(dialect Dialect, prefix string) ([]string, error) {
	queriesCompiled.Store(true)
	out := make([]string, len(queries))
	for i, q := range queries {
		s := q.sqlite
		if dialect == Postgres {
			s = q.postgres
		}
		s, err := expandNames(s, prefix)
		if err != nil {
			return nil, err
		}
		if dialect == Postgres {
			s = rebind(s)
		}
		out[i] = s
	}
	return out, nil
}

// walkSQL splits s into the stretches that are SQL code and those that are not (quoted
// strings, quoted identifiers and comments), calling code or verbatim for each in order. An
// unterminated quote or comment runs to the end of s.
func walkSQL(s string, code, verbatim func(string)) {
	start := 0 // beginning of the current code stretch
	for i := 0; i < len(s); {
		var end int
		switch {
		case s[i] == '\'' || s[i] == '"':
			// A doubled quote inside a string reads as two adjacent strings: same stretches.
			end = len(s)
			if j := strings.IndexByte(s[i+1:], s[i]); j >= 0 {
				end = i + 1 + j + 1
			}
		case strings.HasPrefix(s[i:], "--"):
			end = len(s)
			if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
				end = i + j + 1
			}
		case strings.HasPrefix(s[i:], "/*"):
			end = len(s)
			if j := strings.Index(s[i+2:], "*/"); j >= 0 {
				end = i + 2 + j + 2
			}
		default:
			i++
			continue
		}
		if i > start {
			code(s[start:i])
		}
		verbatim(s[i:end])
		i, start = end, end
	}
	if start < len(s) {
		code(s[start:])
	}
}

// rebind turns ? placeholders into PostgreSQL's $1, $2, ... It leaves alone question marks
// inside quoted strings, quoted identifiers and comments.
func rebind(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	n := 0
	walkSQL(s, func(code string) {
		for {
			i := strings.IndexByte(code, '?')
			if i < 0 {
				b.WriteString(code)
				return
			}
			n++
			b.WriteString(code[:i])
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			code = code[i+1:]
		}
	}, func(other string) { b.WriteString(other) })
	return b.String()
}

// expandNames replaces every {name} in s's code (not in its strings or comments, where braces
// are JSON: DEFAULT '{}') with prefix+name. A name is lower-case letters, digits and
// underscores beginning with a letter; a brace that does not enclose one is an error.
func expandNames(s, prefix string) (string, error) {
	var (
		b   strings.Builder
		err error
	)
	b.Grow(len(s) + 8*len(prefix))
	walkSQL(s, func(code string) {
		for err == nil {
			open := strings.IndexByte(code, '{')
			if c := strings.IndexByte(code, '}'); c >= 0 && (open < 0 || c < open) {
				err = fmt.Errorf("unmatched } in %q", code)
				return
			}
			if open < 0 {
				b.WriteString(code)
				return
			}
			end := strings.IndexByte(code[open:], '}')
			if end < 0 {
				err = fmt.Errorf("unclosed { in %q", code)
				return
			}
			name := code[open+1 : open+end]
			if !isObjectName(name) {
				err = fmt.Errorf("{%s} is not a table or index name", name)
				return
			}
			b.WriteString(code[:open])
			b.WriteString(prefix)
			b.WriteString(name)
			code = code[open+end+1:]
		}
	}, func(other string) { b.WriteString(other) })
	if err != nil {
		return "", err
	}
	return b.String(), nil
}

// isObjectName reports whether s is lower-case letters, digits and underscores beginning with
// a letter: the names of this project's tables and indexes, and of their prefixes.
func isObjectName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
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

// text returns q as this Database runs it: its names prefixed, in its dialect.
func (d *Database) text(q query) string { return d.stmts[q.id] }

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
	return commitUnlessFailed(tx, fn)
}

// commitUnlessFailed runs fn in the begun transaction tx, committing when fn returns nil and
// rolling back otherwise.
func commitUnlessFailed(tx *sql.Tx, fn func(tx *sql.Tx) error) error {
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
