package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// migrationsFS holds one directory of numbered migrations per dialect: NNNN_name.sql. A
// migration, once released, is never edited; changes go in a new file in both directories.
// The one exception was made when this project's tables moved under a table prefix: the
// released files were edited only to write their table and index names in braces ({agents}),
// which the prefix replaces. With an empty prefix they are the SQL that was released
// (TestReleasedMigrationsUnchanged), which the move of an earlier version's unprefixed tables
// relies on (migrate_legacy.go).
//
//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationsFS embed.FS

// migrationLockKey is the first half of the PostgreSQL advisory lock taken while migrating;
// the second half is the hash of the schema and the table prefix, so separate schemas, and
// separate prefixes in one schema, migrate independently.
const migrationLockKey = 0x53535254 // "SSRT"

// bookkeepingTable records the applied migrations, under the prefix like every table.
const bookkeepingTable = "schema_migrations"

var (
	qCreateMigrationsTable = dialectQuery(
		`CREATE TABLE {schema_migrations} (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TEXT NOT NULL
		) STRICT`,
		`CREATE TABLE {schema_migrations} (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TIMESTAMPTZ NOT NULL
		)`)
	qAppliedMigrations = newQuery(`SELECT version, name FROM {schema_migrations} ORDER BY version`)
	qRecordMigration   = newQuery(`INSERT INTO {schema_migrations} (version, name, applied_at) VALUES (?, ?, ?)`)
	qMigrationLock     = newQuery(`SELECT pg_advisory_lock(?, hashtext(COALESCE(current_schema(), '') || '.' || ?))`)
	qMigrationUnlock   = newQuery(`SELECT pg_advisory_unlock(?, hashtext(COALESCE(current_schema(), '') || '.' || ?))`)
)

// migrate applies the migrations not yet recorded in the prefixed schema_migrations, all in
// one transaction, after checking that none of the tables and indexes they create exists
// already: a table of the same name belongs to someone else (an embedding server, another
// tool), and it is refused, never adopted or altered. An older version's unprefixed tables
// are first moved to their prefixed names (migrate_legacy.go).
//
// Concurrent Opens take turns: on PostgreSQL under a session advisory lock of the schema and
// prefix, on SQLite under the write lock of a transaction begun IMMEDIATE, which also covers
// the checks, so a process never mistakes the tables another is creating for foreign ones.
func (d *Database) migrate(ctx context.Context) (err error) {
	ms, err := loadMigrations(d.dialect)
	if err != nil {
		return err
	}
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()

	if d.dialect == Postgres {
		if _, err := d.exec(ctx, conn, qMigrationLock, migrationLockKey, d.prefix); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		defer func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, uerr := d.exec(uctx, conn, qMigrationUnlock, migrationLockKey, d.prefix); uerr != nil {
				// A session lock dies with its connection: drop the connection rather than
				// return it to the pool still holding the lock.
				dropConn(uctx, conn)
				err = errors.Join(err, fmt.Errorf("release migration lock: %w", uerr))
			}
		}()
	}
	var moved *legacyPlan
	err = d.inMigrationTx(ctx, conn, func(q querier) error {
		var err error
		moved, err = d.migrateIn(ctx, q, ms)
		return err
	})
	if err == nil && moved != nil {
		d.log.Info("db: moved the tables of an earlier version to their prefixed names",
			"dialect", d.dialect.String(), "prefix", d.prefix, "objects", len(moved.objects)+1,
			"migrations_carried", moved.applied)
	}
	return err
}

// dropConn closes conn's connection for good. A connection of a pgx pool (OpenPool) would
// only go back to the caller's pool when database/sql closes it, so its pgx connection is
// closed first.
func dropConn(ctx context.Context, conn *sql.Conn) {
	_ = conn.Raw(func(dc any) error {
		if c, ok := dc.(interface{ Conn() *pgx.Conn }); ok {
			_ = c.Conn().Close(ctx)
		}
		return driver.ErrBadConn
	})
}

// inMigrationTx runs fn in one transaction on conn. On SQLite it begins IMMEDIATE whatever the
// pool's DSN says (a borrowed pool may lack _txlock=immediate), so the checks fn makes first
// already hold the write lock.
func (d *Database) inMigrationTx(ctx context.Context, conn *sql.Conn, fn func(q querier) error) error {
	if d.dialect == Postgres {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		return commitUnlessFailed(tx, func(tx *sql.Tx) error { return fn(tx) })
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	err := fn(conn)
	if err == nil {
		if _, err = conn.ExecContext(ctx, "COMMIT"); err == nil {
			return nil
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, rerr := conn.ExecContext(rctx, "ROLLBACK"); rerr != nil {
		// Never hand the pool a connection still inside a transaction.
		dropConn(rctx, conn)
	}
	return err
}

// migrateIn plans and applies the migrations inside the migration transaction, and returns
// what it moved of an earlier version's unprefixed tables (nil: nothing).
func (d *Database) migrateIn(ctx context.Context, q querier, ms []migration) (moved *legacyPlan, err error) {
	book := d.prefix + bookkeepingTable
	exists, err := d.checkBookkeeping(ctx, q, book)
	if err != nil {
		return nil, err
	}
	if !exists {
		if moved, err = d.upgradeUnprefixed(ctx, q, ms); err != nil {
			return nil, err
		}
		exists = moved != nil
	}
	applied := map[int]bool{}
	if exists {
		if applied, err = d.appliedMigrations(ctx, q, ms); err != nil {
			return nil, err
		}
	}
	var pending []migration
	for _, m := range ms {
		if !applied[m.version] {
			pending = append(pending, m)
		}
	}
	if len(pending) == 0 {
		return moved, nil
	}
	// Every check before any change: a refused database is left exactly as it was.
	for _, m := range pending {
		for _, o := range m.creates() {
			if err := d.refuseExisting(ctx, q, o.kind, d.prefix+o.name, book); err != nil {
				return nil, err
			}
		}
	}
	if !exists {
		if _, err := d.exec(ctx, q, qCreateMigrationsTable); err != nil {
			return nil, fmt.Errorf("create %s: %w", book, err)
		}
	}
	for _, m := range pending {
		text, err := expandNames(m.sql, d.prefix)
		if err != nil {
			return nil, fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
		}
		// Not rebound: migrations hold no placeholders, and multi-statement text must go to
		// the driver as is.
		if _, err := q.ExecContext(ctx, text); err != nil {
			return nil, fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
		}
		if _, err := d.exec(ctx, q, qRecordMigration, m.version, m.name, d.timeArg(d.now())); err != nil {
			return nil, fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
		}
	}
	return moved, nil
}

// appliedMigrations reads the recorded migrations. A record of one of this project's versions
// under another name means the table is not this project's bookkeeping. Versions this
// release does not know (a newer release applied them) are left alone.
func (d *Database) appliedMigrations(ctx context.Context, q querier, ms []migration) (map[int]bool, error) {
	book := d.prefix + bookkeepingTable
	rows, err := d.queryRows(ctx, q, qAppliedMigrations)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", book, err)
	}
	defer rows.Close()
	applied := map[int]bool{}
	for rows.Next() {
		var (
			v    int64
			name string
		)
		if err := rows.Scan(&v, &name); err != nil {
			return nil, fmt.Errorf("read %s: %w", book, err)
		}
		if v >= 1 && v <= int64(len(ms)) && ms[v-1].name != name {
			return nil, fmt.Errorf("table %q records migration %d as %q, which this project names %q: it is not this project's; %s",
				book, v, truncateName(name), ms[v-1].name, choosePrefixHint)
		}
		applied[int(v)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", book, err)
	}
	return applied, nil
}

// truncateName bounds a name read from someone else's table before it goes into an error.
func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
