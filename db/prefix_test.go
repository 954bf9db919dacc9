package db_test

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

// Every table and index this package creates carries the prefix, PostgreSQL's derived names
// (primary keys, unique and foreign key constraints) included.
func TestTablePrefixNamesEveryObject(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			sqlDB := callerDB(t, dialect)
			d, err := db.OpenDB(t.Context(), sqlDB, dialectOf(t, dialect), db.WithTablePrefix("rt2_"))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.TablePrefix() != "rt2_" {
				t.Errorf("TablePrefix() = %q", d.TablePrefix())
			}
			objects := objectNames(t, sqlDB, dialect)
			if len(objects) < len(wantTables) {
				t.Fatalf("objects: %v", objects)
			}
			for _, o := range objects {
				if _, name, _ := strings.Cut(o, " "); !strings.HasPrefix(name, "rt2_") {
					t.Errorf("%s does not carry the prefix", o)
				}
			}
			for _, tbl := range wantTables {
				if !tableExists(t, d, "rt2_"+tbl) {
					t.Errorf("table rt2_%s missing", tbl)
				}
			}
			// The statements use the prefix too.
			mustCreateCommand(t, d, commandRow("c1", "a1", base))
			if c := mustGetCommand(t, d, "c1"); c.CommandID != "c1" {
				t.Errorf("read back %+v", c)
			}
		})
	}
}

func TestInvalidTablePrefixRefused(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"", "ssrt", "Ssrt_", "1x_", "x-y_", `x";drop_`, strings.Repeat("x", 40) + "_"} {
		u := dbtest.URL(t, "sqlite")
		d, err := db.Open(t.Context(), u, db.WithTablePrefix(prefix))
		if err == nil {
			_ = d.Close()
			t.Errorf("Open with prefix %q succeeded", prefix)
			continue
		}
		if !strings.Contains(err.Error(), "table prefix") {
			t.Errorf("Open with prefix %q: %v, want an error about the table prefix", prefix, err)
		}
	}
	sqlDB := callerDB(t, "sqlite")
	createCallerTables(t, sqlDB)
	before := objectNames(t, sqlDB, "sqlite")
	if d, err := db.OpenDB(t.Context(), sqlDB, db.SQLite, db.WithTablePrefix("")); err == nil {
		_ = d.Close()
		t.Fatal("OpenDB with an empty prefix succeeded: it would adopt the caller's agents")
	} else if !strings.Contains(err.Error(), "table prefix is required") {
		t.Errorf("OpenDB with an empty prefix: %v", err)
	}
	if after := objectNames(t, sqlDB, "sqlite"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("refused OpenDB changed the database: %v, was %v", after, before)
	}
}

// A table of this package's name that is not recorded as its own stops Open with a clear
// error, and the database is left exactly as it was: the foreign table's columns and rows,
// and nothing else created.
func TestForeignTableRefused(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			sqlDB := callerDB(t, dialect)
			createCallerTables(t, sqlDB)
			mustExec(t, sqlDB,
				`CREATE TABLE ssrt_agents (id INTEGER PRIMARY KEY, secret TEXT)`,
				`INSERT INTO ssrt_agents (id, secret) VALUES (1, 'keep me')`)
			snap := tableSnapshot(t, sqlDB, dialect, "ssrt_agents")
			err := openRefused(t, sqlDB, dialect)
			want := fmt.Sprintf(`db: migrate %s: table "ssrt_agents" already exists and is not this project's (not recorded in ssrt_schema_migrations); choose another table prefix (db.WithTablePrefix, --db-table-prefix)`, dialect)
			if err.Error() != want {
				t.Errorf("error:\n%v\nwant:\n%s", err, want)
			}
			if !errors.Is(err, db.ErrForeignObject) {
				t.Errorf("errors.Is(%v, ErrForeignObject) = false", err)
			}
			if after := tableSnapshot(t, sqlDB, dialect, "ssrt_agents"); after != snap {
				t.Errorf("foreign table changed:\n%s\nwas\n%s", after, snap)
			}
			// The way out: another prefix.
			d, err := db.OpenDB(t.Context(), sqlDB, dialectOf(t, dialect), db.WithTablePrefix("realtime_"))
			if err != nil {
				t.Fatalf("with another prefix: %v", err)
			}
			defer d.Close()
			if after := tableSnapshot(t, sqlDB, dialect, "ssrt_agents"); after != snap {
				t.Errorf("foreign table changed by the other prefix's migrations")
			}
		})
	}
}

// An index in the way is refused like a table, and so is an object of the name whatever its
// kind; a migration added later (the database is this project's, one migration pending) is
// checked the same way.
func TestForeignIndexRefused(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			sqlDB := callerDB(t, dialect)
			createCallerTables(t, sqlDB)
			mustExec(t, sqlDB, `CREATE INDEX ssrt_sessions_agent ON sessions (owner)`)
			err := openRefused(t, sqlDB, dialect)
			if !errors.Is(err, db.ErrForeignObject) || !strings.Contains(err.Error(), `index "ssrt_sessions_agent" already exists and is not this project's`) {
				t.Errorf("error: %v", err)
			}
		})
	}
}

// A bookkeeping table of another shape, such as golang-migrate's, is not this project's.
func TestForeignBookkeepingRefused(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			sqlDB := callerDB(t, dialect)
			mustExec(t, sqlDB,
				`CREATE TABLE ssrt_schema_migrations (version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL)`,
				`INSERT INTO ssrt_schema_migrations (version, dirty) VALUES (20240101, false)`)
			snap := tableSnapshot(t, sqlDB, dialect, "ssrt_schema_migrations")
			err := openRefused(t, sqlDB, dialect)
			if !errors.Is(err, db.ErrForeignObject) || !strings.Contains(err.Error(), `table "ssrt_schema_migrations" already exists and is not this project's (its columns are version`) ||
				!strings.Contains(err.Error(), "--db-table-prefix") {
				t.Errorf("error: %v", err)
			}
			if after := tableSnapshot(t, sqlDB, dialect, "ssrt_schema_migrations"); after != snap {
				t.Errorf("bookkeeping changed:\n%s\nwas\n%s", after, snap)
			}
		})
	}
}

// A bookkeeping table of the right shape whose records name this project's versions
// otherwise is someone else's too.
func TestForeignBookkeepingRecordsRefused(t *testing.T) {
	t.Parallel()
	sqlDB := callerDB(t, "sqlite")
	mustExec(t, sqlDB,
		`CREATE TABLE ssrt_schema_migrations (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT`,
		`INSERT INTO ssrt_schema_migrations VALUES (1, 'create_users', '2024-01-01T00:00:00.000000Z')`)
	d, err := db.OpenDB(t.Context(), sqlDB, db.SQLite)
	if err == nil {
		_ = d.Close()
		t.Fatal("OpenDB trusted records of another project")
	}
	if !strings.Contains(err.Error(), `records migration 1 as "create_users"`) {
		t.Errorf("error: %v", err)
	}
	if got := withPrefix(objectNames(t, sqlDB, "sqlite"), "ssrt_"); fmt.Sprint(got) != "[table ssrt_schema_migrations]" {
		t.Errorf("objects after the refusal: %v", got)
	}
}

// Two Databases with different prefixes in one database (one PostgreSQL schema) are
// independent: the same ids hold different rows, and counts never mix.
func TestTwoPrefixesIndependent(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			sqlDB := callerDB(t, dialect)
			a, err := db.OpenDB(ctx, sqlDB, dialectOf(t, dialect))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := db.OpenDB(ctx, sqlDB, dialectOf(t, dialect), db.WithTablePrefix("tenant2_"))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for _, d := range []*db.Database{a, b} {
				if err := d.UpsertOrganization(ctx, models.Organization{ID: "o1", Name: "org of " + d.TablePrefix()}); err != nil {
					t.Fatal(err)
				}
				mustCreate(t, d, sessionRow("s1", "o1", "u-"+d.TablePrefix(), base))
			}
			mustCreate(t, b, sessionRow("s2", "o1", "u2", base))
			for _, d := range []*db.Database{a, b} {
				org, err := d.GetOrganization(ctx, "o1")
				if err != nil || org.Name != "org of "+d.TablePrefix() {
					t.Errorf("%s: org %+v, %v", d.TablePrefix(), org, err)
				}
				s, err := d.GetSession(ctx, "s1")
				if err != nil || s.UserID != "u-"+d.TablePrefix() {
					t.Errorf("%s: session %+v, %v", d.TablePrefix(), s, err)
				}
			}
			if m, err := a.OrgMetrics(ctx, "o1"); err != nil || m.SessionsTotal != 1 {
				t.Errorf("ssrt_ counts %+v, %v; want 1 session", m, err)
			}
			if m, err := b.OrgMetrics(ctx, "o1"); err != nil || m.SessionsTotal != 2 {
				t.Errorf("tenant2_ counts %+v, %v; want 2 sessions", m, err)
			}
			if err := a.DeleteSession(ctx, "s1"); err != nil {
				t.Fatal(err)
			}
			if _, err := b.GetSession(ctx, "s1"); err != nil {
				t.Errorf("deleting ssrt_'s s1 touched tenant2_'s: %v", err)
			}
			// Reopening migrates nothing again, for either.
			for _, prefix := range []string{db.DefaultTablePrefix, "tenant2_"} {
				d, err := db.OpenDB(ctx, sqlDB, dialectOf(t, dialect), db.WithTablePrefix(prefix))
				if err != nil {
					t.Fatalf("reopen %s: %v", prefix, err)
				}
				if n := migrationCount(t, d); n != migrationFiles {
					t.Errorf("%s: %d migrations recorded, want %d", prefix, n, migrationFiles)
				}
				_ = d.Close()
			}
		})
	}
}

// openRefused opens a Database over sqlDB, which must be refused, and checks that the refusal
// left the database's objects as they were; it returns the refusal.
func openRefused(t *testing.T, sqlDB *sql.DB, dialect string, opts ...db.Option) error {
	t.Helper()
	before := objectNames(t, sqlDB, dialect)
	d, err := db.OpenDB(t.Context(), sqlDB, dialectOf(t, dialect), opts...)
	if err == nil {
		_ = d.Close()
		t.Fatal("OpenDB went past an object that is not this project's")
	}
	if after := objectNames(t, sqlDB, dialect); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("refused Open changed the database:\n%v\nwas\n%v", after, before)
	}
	return err
}
