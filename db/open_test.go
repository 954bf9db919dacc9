package db_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
)

func TestOpenBadURLs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		url, want string
	}{
		{"", "no scheme"},
		{"streamspace.db", "no scheme"},
		{"mysql://root:hunter2@localhost/x", `unsupported database URL scheme "mysql"`},
		{"sqlite://", "no file path"},
		{"sqlite://?_pragma=x", "no file path"},
		{"sqlite://x.db?a=%zz", "bad URL query"},
		{"sqlite://" + filepath.Join(t.TempDir(), "x.db") + "?_txlock=sometimes", "db: open sqlite"},
		{"postgres://user:hunter2@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", "db: open postgres"},
		{"postgres://user:hunter2@127.0.0.1:5432/x?sslmode=bogus", "db: open postgres"},
	}
	for _, c := range cases {
		d, err := db.Open(t.Context(), c.url)
		if err == nil {
			_ = d.Close()
			t.Errorf("Open(%q) succeeded, want error containing %q", c.url, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %v, want error containing %q", c.url, err, c.want)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) leaks the password: %v", c.url, err)
		}
	}
}

func TestOpenSQLiteURLForms(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, u := range []string{
		"sqlite://relative.db",
		"sqlite://sub/../relative2.db?_pragma=cache_size(-4000)",
		"sqlite://" + filepath.Join(dir, "abs.db"), // sqlite:///tmp/.../abs.db
		"SQLITE://upper.db",
	} {
		d, err := db.Open(t.Context(), u)
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		if d.Dialect() != db.SQLite || d.Dialect().String() != "sqlite" {
			t.Errorf("Open(%q).Dialect() = %v", u, d.Dialect())
		}
		if err := d.Ping(t.Context()); err != nil {
			t.Errorf("Ping: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	for _, f := range []string{"relative.db", "relative2.db", "abs.db", "upper.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("database file %s not created: %v", f, err)
		}
	}
}

func TestOpenSQLitePragmas(t *testing.T) {
	t.Parallel()
	d := dbtest.Open(t, "sqlite")
	// Check on several pooled connections: the pragmas must hold for each, not just the first.
	ctx := t.Context()
	for i := 0; i < 3; i++ {
		c, err := d.SQL().Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var mode string
		var fk, busy int
		if err := c.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || fk != 1 || busy < 1000 {
			t.Errorf("conn %d: journal_mode=%s foreign_keys=%d busy_timeout=%d, want wal, 1, >=1000", i, mode, fk, busy)
		}
	}
}

func TestOpenSQLiteMemory(t *testing.T) {
	t.Parallel()
	d, err := db.Open(t.Context(), "sqlite://:memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := d.SQL().Stats().MaxOpenConnections; got != 1 {
		t.Errorf("in-memory MaxOpenConnections = %d, want 1", got)
	}
	if err := d.UpsertOrganization(t.Context(), orgRow("o1")); err != nil {
		t.Fatal(err)
	}
}

func TestDialectString(t *testing.T) {
	t.Parallel()
	for d, want := range map[db.Dialect]string{db.SQLite: "sqlite", db.Postgres: "postgres", 0: "Dialect(0)"} {
		if got := d.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(d), got, want)
		}
	}
}

func TestOpenBothDialects(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		if d.Dialect().String() != strings.Split(t.Name(), "/")[1] {
			t.Errorf("Dialect() = %v in subtest %s", d.Dialect(), t.Name())
		}
		if err := d.Ping(t.Context()); err != nil {
			t.Errorf("Ping: %v", err)
		}
	})
}
