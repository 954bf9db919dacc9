package dbtest_test

import (
	"database/sql"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestForEachDialectRunsBoth(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		mu.Lock()
		seen = append(seen, d.Dialect().String())
		mu.Unlock()
		if err := d.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	if fmt.Sprint(seen) != fmt.Sprint(dbtest.Dialects()) {
		t.Errorf("ran %v, want %v", seen, dbtest.Dialects())
	}
}

// TestPostgresSchemaIsolated checks that each database is its own schema (never public) and
// that the schema is gone once its test ends.
func TestPostgresSchemaIsolated(t *testing.T) {
	var schemas []string
	for i := range 2 {
		t.Run(fmt.Sprint("open", i), func(t *testing.T) {
			d := dbtest.Open(t, "postgres")
			var s string
			if err := d.SQL().QueryRowContext(t.Context(), "SELECT current_schema()").Scan(&s); err != nil {
				t.Fatal(err)
			}
			if s == "" || s == "public" || !strings.HasPrefix(s, "t_testpostgresschemaisolated") {
				t.Errorf("current_schema() = %q", s)
			}
			schemas = append(schemas, s)
		})
	}
	if len(schemas) != 2 || schemas[0] == schemas[1] {
		t.Fatalf("schemas %v are not distinct", schemas)
	}
	admin, err := sql.Open("pgx", postgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, s := range schemas {
		var n int
		if err := admin.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1", s).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("schema %s still exists after its test", s)
		}
	}
}

func postgresURL() string {
	if u := os.Getenv(dbtest.EnvPostgresURL); u != "" {
		return u
	}
	return dbtest.DefaultPostgresURL
}

// fatalTB records Fatalf instead of failing the real test, to check the message dbtest gives
// when PostgreSQL is missing.
type fatalTB struct {
	*testing.T
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestUnreachablePostgresFailsClearly(t *testing.T) {
	t.Setenv(dbtest.EnvPostgresURL, "postgres://postgres:secret@127.0.0.1:1/test?sslmode=disable&connect_timeout=2")
	f := &fatalTB{T: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dbtest.Open(f, "postgres")
	}()
	<-done
	for _, want := range []string{"unreachable", dbtest.EnvPostgresURL, "scripts/services.sh"} {
		if !strings.Contains(f.msg, want) {
			t.Errorf("failure message %q does not mention %q", f.msg, want)
		}
	}
	if strings.Contains(f.msg, "secret") {
		t.Errorf("failure message leaks the password: %q", f.msg)
	}
}

func TestUnknownDialectFails(t *testing.T) {
	f := &fatalTB{T: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dbtest.Open(f, "mysql")
	}()
	<-done
	if !strings.Contains(f.msg, `unknown dialect "mysql"`) {
		t.Errorf("message = %q", f.msg)
	}
}

// A private server keeps what was committed across a crash, refuses connections while down,
// and serves again once started.
func TestPrivatePostgresCrashAndStart(t *testing.T) {
	pg := dbtest.StartPostgres(t)
	d, err := db.Open(t.Context(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.UpsertOrganization(t.Context(), models.Organization{ID: "o-crash", Name: "kept"}); err != nil {
		t.Fatal(err)
	}
	pg.Crash(t)
	if err := d.Ping(t.Context()); err == nil {
		t.Fatal("ping answered while the server was down")
	}
	pg.Start(t)
	org, err := d.GetOrganization(t.Context(), "o-crash")
	if err != nil || org.Name != "kept" {
		t.Fatalf("after the crash: %+v %v", org, err)
	}
}
