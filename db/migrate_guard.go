package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ErrForeignObject: a table or index this project would create already exists and is not
// this project's (an embedding server's own table, another tool's). Open refuses it rather
// than adopt or alter it; another table prefix avoids it. Check with errors.Is.
var ErrForeignObject = errors.New("db: a table or index of this project's name is not this project's")

// choosePrefixHint tells the operator the way out of a foreign object.
const choosePrefixHint = "choose another table prefix (db.WithTablePrefix, --db-table-prefix)"

// foreignObjectError names the object in the way.
type foreignObjectError struct {
	kind, name string
	why        string
}

func (e *foreignObjectError) Error() string {
	return fmt.Sprintf("%s %q already exists and is not this project's (%s); %s", e.kind, e.name, e.why, choosePrefixHint)
}

func (e *foreignObjectError) Is(target error) bool { return target == ErrForeignObject }

var (
	// The kind of the object named ?: in SQLite's main database (names are case-insensitive
	// there); in PostgreSQL's current schema, where tables, indexes, views and sequences
	// share one namespace.
	qObjectKind = dialectQuery(
		`SELECT type FROM sqlite_master WHERE name = ? COLLATE NOCASE ORDER BY type = 'table' DESC LIMIT 1`,
		`SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'i' THEN 'index'
			WHEN 'I' THEN 'index' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
			WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'relation' END
		FROM pg_class c
		WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
		AND c.relname = ?`)
	// A PostgreSQL table brings a row type of its name, so a type of that name is in its way.
	qTypeExists = newQuery(`SELECT COUNT(*) FROM pg_type t
		WHERE t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
		AND t.typname = ? AND t.typrelid = 0`)
	// The columns of the table named ?, in order, with their declared types.
	qTableColumns = dialectQuery(
		`SELECT name, lower(type) FROM pragma_table_info(?, 'main') ORDER BY cid`,
		`SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
		WHERE a.attrelid = (SELECT c.oid FROM pg_class c
			WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
			AND c.relname = ?)
		AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`)
)

// bookkeepingShape is the columns of this project's schema_migrations, with their types as
// qTableColumns reads them, in each dialect.
var bookkeepingShape = map[Dialect]string{
	SQLite:   "version integer, name text, applied_at text",
	Postgres: "version integer, name text, applied_at timestamp with time zone",
}

// objectKind returns the kind of the object named name ("table", "index", ...), or "" when
// there is none.
func (d *Database) objectKind(ctx context.Context, q querier, name string) (string, error) {
	var kind string
	err := d.queryRow(ctx, q, qObjectKind, name).Scan(&kind)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look for %q: %w", name, err)
	}
	return kind, nil
}

// tableShape returns the table's columns and their types, as "name type, name type".
func (d *Database) tableShape(ctx context.Context, q querier, table string) (string, error) {
	rows, err := d.queryRows(ctx, q, qTableColumns, table)
	if err != nil {
		return "", fmt.Errorf("read the columns of %q: %w", table, err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return "", fmt.Errorf("read the columns of %q: %w", table, err)
		}
		cols = append(cols, name+" "+typ)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("read the columns of %q: %w", table, err)
	}
	return strings.Join(cols, ", "), nil
}

// checkBookkeeping reports whether the bookkeeping table book exists. One that exists with
// another shape (golang-migrate's version and dirty, say), or an object of its name that is
// not a table, is someone else's: a foreignObjectError.
func (d *Database) checkBookkeeping(ctx context.Context, q querier, book string) (bool, error) {
	kind, err := d.objectKind(ctx, q, book)
	if err != nil || kind == "" {
		return false, err
	}
	if kind != "table" {
		return false, &foreignObjectError{kind: kind, name: book, why: "this project records its migrations in a table of that name"}
	}
	shape, err := d.tableShape(ctx, q, book)
	if err != nil {
		return false, err
	}
	if shape != bookkeepingShape[d.dialect] {
		return false, &foreignObjectError{kind: kind, name: book,
			why: fmt.Sprintf("its columns are %s, not this project's migration records", truncateName(shape))}
	}
	return true, nil
}

// refuseExisting returns a foreignObjectError when an object named name exists: a migration
// not yet recorded in book is about to create a kind of that name.
func (d *Database) refuseExisting(ctx context.Context, q querier, kind, name, book string) error {
	found, err := d.objectKind(ctx, q, name)
	if err != nil {
		return err
	}
	if found == "" && kind == "table" && d.dialect == Postgres {
		var n int
		if err := d.queryRow(ctx, q, qTypeExists, name).Scan(&n); err != nil {
			return fmt.Errorf("look for type %q: %w", name, err)
		}
		if n > 0 {
			found = "type"
		}
	}
	if found == "" {
		return nil
	}
	return &foreignObjectError{kind: found, name: name, why: "not recorded in " + book}
}
