package db

import (
	"context"
	"fmt"
)

// Versions of this project before table prefixes named their tables and indexes without one
// (agents, schema_migrations, ...). Opening such a database moves them, with their rows and
// migration records, to the prefixed names, inside the migration transaction; then the
// pending migrations run as on any database of this project. Only a database that is
// recognizably this project's is moved: an unprefixed schema_migrations of exactly this
// project's shape whose records are this project's first migrations, in order and by name,
// and every table and index those migrations create present under its old name and absent
// under its new one. Anything else is left alone, and the normal path applies (which refuses
// any prefixed name in its way).

var (
	qLegacyMigrations = newQuery(`SELECT version, name FROM schema_migrations ORDER BY version`)
	// The constraints of the table named ?, whose names PostgreSQL derived from the table's.
	qTableConstraints = newQuery(`SELECT con.conname FROM pg_constraint con
		WHERE con.conrelid = (SELECT c.oid FROM pg_class c
			WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
			AND c.relname = ?)
		ORDER BY con.conname`)
)

// maxPostgresName is the longest identifier PostgreSQL keeps whole.
const maxPostgresName = 63

// legacyPlan is an unprefixed database of this project found to be moved.
type legacyPlan struct {
	applied int        // its migrations 1..applied are recorded
	objects []dbObject // the tables and indexes those migrations created
}

// upgradeUnprefixed moves an older version's unprefixed tables to their prefixed names when
// the database is one (see above), and returns what it moved, or nil.
func (d *Database) upgradeUnprefixed(ctx context.Context, q querier, ms []migration) (*legacyPlan, error) {
	plan, err := d.findUnprefixed(ctx, q, ms)
	if err != nil || plan == nil {
		return nil, err
	}
	tables := []string{bookkeepingTable}
	for _, o := range plan.objects {
		if o.kind == "table" {
			tables = append(tables, o.name)
		}
	}
	for _, t := range tables {
		if _, err := q.ExecContext(ctx, `ALTER TABLE `+t+` RENAME TO `+d.prefix+t); err != nil {
			return nil, fmt.Errorf("move table %s to %s%s: %w", t, d.prefix, t, err)
		}
	}
	if d.dialect == Postgres {
		if err := d.renamePostgresIndexes(ctx, q, plan, tables); err != nil {
			return nil, err
		}
	} else if err := d.rebuildSQLiteIndexes(ctx, q, plan, ms); err != nil {
		return nil, err
	}
	return plan, nil
}

// findUnprefixed returns the plan of moving the database's unprefixed tables, or nil when it
// is not an older version's database of this project.
func (d *Database) findUnprefixed(ctx context.Context, q querier, ms []migration) (*legacyPlan, error) {
	if kind, err := d.objectKind(ctx, q, bookkeepingTable); err != nil || kind != "table" {
		return nil, err
	}
	if shape, err := d.tableShape(ctx, q, bookkeepingTable); err != nil || shape != bookkeepingShape[d.dialect] {
		return nil, err
	}
	rows, err := d.queryRows(ctx, q, qLegacyMigrations)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", bookkeepingTable, err)
	}
	defer rows.Close()
	plan := &legacyPlan{}
	for rows.Next() {
		var (
			v    int64
			name string
		)
		if rows.Scan(&v, &name) != nil || plan.applied >= len(ms) || v != int64(plan.applied+1) || name != ms[plan.applied].name {
			return nil, nil // records of something else
		}
		plan.applied++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", bookkeepingTable, err)
	}
	if plan.applied == 0 {
		return nil, nil
	}
	for _, m := range ms[:plan.applied] {
		for _, o := range m.creates() {
			kind, err := d.objectKind(ctx, q, o.name)
			if err != nil || kind != o.kind {
				return nil, err
			}
			if kind, err = d.objectKind(ctx, q, d.prefix+o.name); err != nil || kind != "" {
				return nil, err
			}
			plan.objects = append(plan.objects, o)
		}
	}
	return plan, nil
}

// renamePostgresIndexes renames the moved tables' indexes, and the constraints PostgreSQL
// named after the old table names (agents_pkey, session_shares_session_id_fkey, ...), so the
// moved tables read as freshly made ones. A constraint whose new name would be too long or is
// taken keeps its old name.
func (d *Database) renamePostgresIndexes(ctx context.Context, q querier, plan *legacyPlan, tables []string) error {
	for _, o := range plan.objects {
		if o.kind != "index" {
			continue
		}
		if _, err := q.ExecContext(ctx, `ALTER INDEX `+o.name+` RENAME TO `+d.prefix+o.name); err != nil {
			return fmt.Errorf("move index %s to %s%s: %w", o.name, d.prefix, o.name, err)
		}
	}
	for _, t := range tables {
		cons, err := d.tableConstraints(ctx, q, d.prefix+t)
		if err != nil {
			return err
		}
		for _, c := range cons {
			to := d.prefix + c
			if len(c) <= len(t) || c[:len(t)+1] != t+"_" || len(to) > maxPostgresName {
				continue
			}
			if kind, err := d.objectKind(ctx, q, to); err != nil || kind != "" {
				if err != nil {
					return err
				}
				continue
			}
			if _, err := q.ExecContext(ctx, `ALTER TABLE `+d.prefix+t+` RENAME CONSTRAINT `+quoteIdent(c)+` TO `+quoteIdent(to)); err != nil {
				return fmt.Errorf("rename constraint %s of %s%s: %w", c, d.prefix, t, err)
			}
		}
	}
	return nil
}

func (d *Database) tableConstraints(ctx context.Context, q querier, table string) ([]string, error) {
	rows, err := d.queryRows(ctx, q, qTableConstraints, table)
	if err != nil {
		return nil, fmt.Errorf("read the constraints of %s: %w", table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, fmt.Errorf("read the constraints of %s: %w", table, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the constraints of %s: %w", table, err)
	}
	return out, nil
}

// rebuildSQLiteIndexes replaces the moved tables' indexes by the same ones under their
// prefixed names (SQLite renames no index), each made by the statement of the migration that
// made the old one.
func (d *Database) rebuildSQLiteIndexes(ctx context.Context, q querier, plan *legacyPlan, ms []migration) error {
	for _, m := range ms[:plan.applied] {
		for _, s := range m.stmts {
			if s.creates == nil || s.creates.kind != "index" {
				continue
			}
			text, err := expandNames(s.sql, d.prefix)
			if err != nil {
				return err
			}
			if _, err := q.ExecContext(ctx, `DROP INDEX `+s.creates.name); err != nil {
				return fmt.Errorf("move index %s: %w", s.creates.name, err)
			}
			if _, err := q.ExecContext(ctx, text); err != nil {
				return fmt.Errorf("move index %s to %s%s: %w", s.creates.name, d.prefix, s.creates.name, err)
			}
		}
	}
	return nil
}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string {
	out := make([]byte, 0, len(s)+2)
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			out = append(out, '"')
		}
		out = append(out, s[i])
	}
	return string(append(out, '"'))
}
