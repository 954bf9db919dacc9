package db_test

import (
	"bytes"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/models"
)

// The migrations as released before table prefixes, in testdata/unprefixed.
var unprefixedMigrations = []string{"0001_init", "0002_agent_connections", "0003_session_presence", "0004_session_pods", "0005_command_org"}

// oldAppliedAt is the time the old version recorded its migrations at.
const oldAppliedAt = "2025-06-01T12:00:00.000000Z"

// buildUnprefixed makes the database an earlier version of this project left: its first n
// migrations applied under unprefixed names, recorded in its schema_migrations.
func buildUnprefixed(t *testing.T, sqlDB *sql.DB, dialect string, n int) {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", "unprefixed", dialect, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	mustExec(t, sqlDB, read("schema_migrations.sql"))
	for i, m := range unprefixedMigrations[:n] {
		_, name, _ := strings.Cut(m, "_")
		mustExec(t, sqlDB, read(m+".sql"),
			fmt.Sprintf(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (%d, '%s', '%s')`, i+1, name, oldAppliedAt))
	}
}

// fillUnprefixed stores one row of each kind through the old tables, as the old version did.
func fillUnprefixed(t *testing.T, sqlDB *sql.DB) {
	t.Helper()
	const at = "'2025-06-02T08:00:00.000000Z'"
	mustExec(t, sqlDB,
		`INSERT INTO organizations (id, name, k8s_namespace, created_at) VALUES ('o1', 'Old Org', 'ns-o1', `+at+`)`,
		`INSERT INTO sessions (id, org_id, user_id, state, created_at, updated_at) VALUES ('s1', 'o1', 'u1', 'running', `+at+`, `+at+`)`,
		`INSERT INTO session_shares (session_id, user_id, permissions, created_at) VALUES ('s1', 'u2', '["view"]', `+at+`)`,
		`INSERT INTO connections (id, session_id, user_id, org_id, connected_at, last_heartbeat) VALUES ('c1', 's1', 'u1', 'o1', `+at+`, `+at+`)`,
		`INSERT INTO agents (id, org_id, platform, status, approval_status, created_at, updated_at) VALUES ('a1', 'o1', 'kubernetes', 'offline', 'approved', `+at+`, `+at+`)`,
		`INSERT INTO agent_commands (id, agent_id, session_id, action, payload, status, created_at, updated_at) VALUES ('cmd1', 'a1', 's1', 'start_session', '{"x":1}', 'pending', `+at+`, `+at+`)`,
	)
}

// syncBuffer is a log destination the test reads after Open.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An earlier version's database (unprefixed tables) is moved to the prefixed names with its
// rows and migration records, in one transaction, and then reads like a fresh one.
func TestUpgradeUnprefixedTables(t *testing.T) {
	t.Parallel()
	for _, dialect := range dbtest.Dialects() {
		for _, applied := range []int{len(unprefixedMigrations), 3} {
			t.Run(fmt.Sprintf("%s/%d_applied", dialect, applied), func(t *testing.T) {
				t.Parallel()
				ctx := t.Context()
				sqlDB := callerDB(t, dialect)
				buildUnprefixed(t, sqlDB, dialect, applied)
				fillUnprefixed(t, sqlDB)

				var logs syncBuffer
				log := slog.New(slog.NewTextHandler(&logs, nil))
				d, err := db.OpenDB(ctx, sqlDB, dialectOf(t, dialect), db.WithLogger(log))
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()

				// The rows, under the new names.
				if org, err := d.GetOrganization(ctx, "o1"); err != nil || org.Name != "Old Org" {
					t.Errorf("organization: %+v, %v", org, err)
				}
				if s, err := d.GetSession(ctx, "s1"); err != nil || s.UserID != "u1" || s.ActiveConnections != 1 {
					t.Errorf("session: %+v, %v", s, err)
				}
				if ok, err := d.IsSessionSharedWith(ctx, "s1", "u2"); err != nil || !ok {
					t.Errorf("share: %v, %v", ok, err)
				}
				if a, err := d.GetAgent(ctx, "a1"); err != nil || a.ApprovalStatus != models.ApprovalApproved {
					t.Errorf("agent: %+v, %v", a, err)
				}
				if c, err := d.GetCommand(ctx, "cmd1"); err != nil || c.GetSessionID() != "s1" || c.Payload["x"] != float64(1) || c.ID != "" {
					t.Errorf("command: %+v, %v", c, err)
				}
				// The old names are gone, and the objects are a fresh database's.
				objects := objectNames(t, sqlDB, dialect)
				if rest := len(objects) - len(withPrefix(objects, db.DefaultTablePrefix)); rest != 0 {
					t.Errorf("objects left without the prefix: %v", objects)
				}
				fresh := callerDB(t, dialect)
				fd, err := db.OpenDB(ctx, fresh, dialectOf(t, dialect))
				if err != nil {
					t.Fatal(err)
				}
				_ = fd.Close()
				if want := objectNames(t, fresh, dialect); fmt.Sprint(objects) != fmt.Sprint(want) {
					t.Errorf("moved database's objects:\n%v\nfresh database's:\n%v", objects, want)
				}
				for _, tbl := range wantTables {
					got := strings.Split(tableSnapshot(t, sqlDB, dialect, "ssrt_"+tbl), " | ")[0]
					want := strings.Split(tableSnapshot(t, fresh, dialect, "ssrt_"+tbl), " | ")[0]
					if got != want {
						t.Errorf("ssrt_%s columns %s, fresh %s", tbl, got, want)
					}
				}
				// The old records carried over, the new migrations recorded after them.
				rows, err := sqlDB.QueryContext(ctx, `SELECT version, name, CAST(applied_at AS TEXT) FROM ssrt_schema_migrations ORDER BY version`)
				if err != nil {
					t.Fatal(err)
				}
				var versions []string
				for rows.Next() {
					var (
						v          int
						name, when string
					)
					if err := rows.Scan(&v, &name, &when); err != nil {
						t.Fatal(err)
					}
					old := strings.HasPrefix(when, "2025-06-01")
					if old != (v <= applied) {
						t.Errorf("migration %d %s applied at %s", v, name, when)
					}
					versions = append(versions, fmt.Sprintf("%d %s", v, name))
				}
				_ = rows.Close()
				if got := fmt.Sprint(versions); got != "[1 init 2 agent_connections 3 session_presence 4 session_pods 5 command_org 6 command_record_id]" {
					t.Errorf("ssrt_schema_migrations: %s", got)
				}
				if n := strings.Count(logs.String(), "moved the tables of an earlier version"); n != 1 {
					t.Errorf("logged the move %d times: %s", n, logs.String())
				}
				// Foreign keys follow the moved tables: deleting the session cascades.
				if err := d.DeleteSession(ctx, "s1"); err != nil {
					t.Fatal(err)
				}
				if n, err := d.CountConnections(ctx, "s1"); err != nil || n != 0 {
					t.Errorf("connections after the session's deletion: %d, %v", n, err)
				}
				if ok, _ := d.IsSessionSharedWith(ctx, "s1", "u2"); ok {
					t.Error("share outlived its session")
				}
				// Opening again moves nothing.
				d2, err := db.OpenDB(ctx, sqlDB, dialectOf(t, dialect), db.WithLogger(log))
				if err != nil {
					t.Fatal(err)
				}
				_ = d2.Close()
				if n := strings.Count(logs.String(), "moved the tables"); n != 1 {
					t.Errorf("logged the move %d times after reopening", n)
				}
			})
		}
	}
}

// What is not exactly an earlier version's database of this project is left alone: its
// unprefixed tables untouched, this project's made beside them under the prefix.
func TestUnprefixedLookalikesLeftAlone(t *testing.T) {
	t.Parallel()
	cases := map[string]func(t *testing.T, sqlDB *sql.DB, dialect string){
		"other names": func(t *testing.T, sqlDB *sql.DB, dialect string) {
			buildUnprefixed(t, sqlDB, dialect, 2)
			mustExec(t, sqlDB, `UPDATE schema_migrations SET name = 'create_users' WHERE version = 2`)
		},
		"a gap": func(t *testing.T, sqlDB *sql.DB, dialect string) {
			buildUnprefixed(t, sqlDB, dialect, 3)
			mustExec(t, sqlDB, `DELETE FROM schema_migrations WHERE version = 2`)
		},
		"a table missing": func(t *testing.T, sqlDB *sql.DB, dialect string) {
			buildUnprefixed(t, sqlDB, dialect, 5)
			mustExec(t, sqlDB, `DROP TABLE connections`)
		},
		"golang-migrate's bookkeeping": func(t *testing.T, sqlDB *sql.DB, dialect string) {
			createCallerTables(t, sqlDB)
			mustExec(t, sqlDB,
				`CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL)`,
				`INSERT INTO schema_migrations (version, dirty) VALUES (1, false)`)
		},
		"no records": func(t *testing.T, sqlDB *sql.DB, dialect string) {
			buildUnprefixed(t, sqlDB, dialect, 0)
			createCallerTables(t, sqlDB)
		},
	}
	for _, dialect := range dbtest.Dialects() {
		for name, build := range cases {
			t.Run(dialect+"/"+name, func(t *testing.T) {
				t.Parallel()
				sqlDB := callerDB(t, dialect)
				build(t, sqlDB, dialect)
				before := objectNames(t, sqlDB, dialect)
				snaps := map[string]string{}
				for _, o := range before {
					if kind, tbl, _ := strings.Cut(o, " "); kind == "table" {
						snaps[tbl] = tableSnapshot(t, sqlDB, dialect, tbl)
					}
				}
				var logs syncBuffer
				d, err := db.OpenDB(t.Context(), sqlDB, dialectOf(t, dialect), db.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				var unprefixed []string
				for _, o := range objectNames(t, sqlDB, dialect) {
					if _, n, _ := strings.Cut(o, " "); !strings.HasPrefix(n, db.DefaultTablePrefix) {
						unprefixed = append(unprefixed, o)
					}
				}
				if fmt.Sprint(unprefixed) != fmt.Sprint(before) {
					t.Errorf("unprefixed objects changed:\n%v\nwere\n%v", unprefixed, before)
				}
				for tbl, snap := range snaps {
					if now := tableSnapshot(t, sqlDB, dialect, tbl); now != snap {
						t.Errorf("table %s changed:\n%s\nwas\n%s", tbl, now, snap)
					}
				}
				if n := migrationCount(t, d); n != migrationFiles {
					t.Errorf("%d migrations recorded in ssrt_schema_migrations, want %d", n, migrationFiles)
				}
				if strings.Contains(logs.String(), "moved") {
					t.Errorf("logged a move: %s", logs.String())
				}
			})
		}
	}
}
