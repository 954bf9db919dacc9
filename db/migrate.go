package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// migrationsFS holds one directory of numbered migrations per dialect: NNNN_name.sql. A
// migration, once released, is never edited; changes go in a new file in both directories.
//
//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationsFS embed.FS

// migrationLockKey is the first half of the PostgreSQL advisory lock taken while migrating;
// the second half is the hash of the schema, so separate schemas migrate independently.
const migrationLockKey = 0x53535254 // "SSRT"

type migration struct {
	version int
	name    string
	sql     string
}

var (
	qCreateMigrationsTable = dialectQuery(
		`CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TEXT NOT NULL
		) STRICT`,
		`CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TIMESTAMPTZ NOT NULL
		)`)
	qMigrationApplied = newQuery(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`)
	qRecordMigration  = newQuery(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`)
	qMigrationLock    = newQuery(`SELECT pg_advisory_lock(?, hashtext(current_schema()))`)
	qMigrationUnlock  = newQuery(`SELECT pg_advisory_unlock(?, hashtext(current_schema()))`)
)

// loadMigrations reads the dialect's migrations in version order.
func loadMigrations(dialect Dialect) ([]migration, error) {
	dir := "migrations/" + dialect.String()
	entries, err := fs.ReadDir(migrationsFS, dir)
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".sql")
		if !ok {
			continue
		}
		num, name, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number", e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		body, err := fs.ReadFile(migrationsFS, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate applies the migrations not yet recorded in schema_migrations, each in its own
// transaction. On PostgreSQL a session advisory lock makes concurrent Opens of the same schema
// take turns; on SQLite each migration transaction begins IMMEDIATE and re-checks its version
// under the write lock, which serializes processes sharing the file.
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
		if _, err := d.exec(ctx, conn, qMigrationLock, migrationLockKey); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		defer func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, uerr := d.exec(uctx, conn, qMigrationUnlock, migrationLockKey); uerr != nil {
				// A session lock dies with its connection: drop the connection rather than
				// return it to the pool still holding the lock.
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
				err = errors.Join(err, fmt.Errorf("release migration lock: %w", uerr))
			}
		}()
	}

	if _, err := d.exec(ctx, conn, qCreateMigrationsTable); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for _, m := range ms {
		if err := d.applyMigration(ctx, conn, m); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
		}
	}
	return nil
}

func (d *Database) applyMigration(ctx context.Context, conn *sql.Conn, m migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit

	var n int
	if err := d.queryRow(ctx, tx, qMigrationApplied, m.version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	// Migration files are not rebound: they hold no placeholders, and multi-statement text
	// must go to the driver as is.
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := d.exec(ctx, tx, qRecordMigration, m.version, m.name, d.timeArg(d.now())); err != nil {
		return err
	}
	return tx.Commit()
}
