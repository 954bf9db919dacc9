package db

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestExpandNames(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"SELECT 1": "SELECT 1",
		"UPDATE {agents} SET x = '{}' WHERE id = ?":   "UPDATE p_agents SET x = '{}' WHERE id = ?",
		"{sessions}.org_id = excluded.org_id":         "p_sessions.org_id = excluded.org_id",
		"-- {not} a name\nFROM {a1_b}":                "-- {not} a name\nFROM p_a1_b",
		`/* {x} */ "{quoted}" {t}`:                    `/* {x} */ "{quoted}" p_t`,
		"DEFAULT '{}', meta TEXT DEFAULT '{\"a\":1}'": "DEFAULT '{}', meta TEXT DEFAULT '{\"a\":1}'",
	}
	for in, want := range cases {
		got, err := expandNames(in, "p_")
		if err != nil || got != want {
			t.Errorf("expandNames(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"FROM {Agents}", "FROM {agents", "FROM agents}", "FROM {}", "FROM {1a}", "FROM {a-b}", "{a b}"} {
		if got, err := expandNames(bad, "p_"); err == nil {
			t.Errorf("expandNames(%q) = %q, want an error", bad, got)
		}
	}
}

func TestValidateTablePrefix(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"ssrt_", "a_", "x1_", "realtime_v2_", strings.Repeat("a", 31) + "_"} {
		if err := ValidateTablePrefix(ok); err != nil {
			t.Errorf("ValidateTablePrefix(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "_", "ssrt", "1ssrt_", "_ssrt_", "SSRT_", "ss-rt_", "ss rt_", "ssrt_;drop", "ssrt\"_", "é_", strings.Repeat("a", 32) + "_"} {
		if err := ValidateTablePrefix(bad); err == nil {
			t.Errorf("ValidateTablePrefix(%q) = nil, want an error", bad)
		}
	}
}

// TestEveryStatementNamesKnownObjects checks that each name a statement writes in braces is a
// table or index the migrations create, and that no statement names one of them bare: a bare
// name would miss the prefix. It reads every registered statement in both dialects.
func TestEveryStatementNamesKnownObjects(t *testing.T) {
	t.Parallel()
	for _, dialect := range []Dialect{SQLite, Postgres} {
		ms, err := loadMigrations(dialect)
		if err != nil {
			t.Fatal(err)
		}
		known := map[string]bool{bookkeepingTable: true}
		for _, m := range ms {
			for _, o := range m.creates() {
				known[o.name] = true
			}
		}
		var names []string
		for n := range known {
			names = append(names, n)
		}
		bare := regexp.MustCompile(`(?:^|[^{\w.])(` + strings.Join(names, "|") + `)(?:[^}\w]|$)`)
		braced := regexp.MustCompile(`\{([a-z0-9_]+)\}`)
		for i, q := range queries {
			text := q.sqlite
			if dialect == Postgres {
				text = q.postgres
			}
			code := codeOnly(text)
			for _, m := range braced.FindAllStringSubmatch(code, -1) {
				if !known[m[1]] {
					t.Errorf("%v statement %d names {%s}, which no migration creates: %s", dialect, i, m[1], text)
				}
			}
			// The legacy upgrade reads the unprefixed bookkeeping table on purpose.
			if q := qLegacyMigrations; i == q.id {
				continue
			}
			if m := bare.FindStringSubmatch(code); m != nil {
				t.Errorf("%v statement %d names %s without braces: %s", dialect, i, m[1], text)
			}
		}
	}
}

func TestParseMigrationRefusesBareNames(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"CREATE TABLE agents (id TEXT);",
		"-- fine\nCREATE INDEX x ON {agents} (id);",
		"ALTER TABLE agents ADD COLUMN x TEXT;",
		"CREATE TABLE IF NOT EXISTS agents (id TEXT);",
		"CREATE VIEW v AS SELECT 1;",
	} {
		if _, err := parseMigration(bad); err == nil {
			t.Errorf("parseMigration(%q) accepted a bare name", bad)
		}
	}
	stmts, err := parseMigration("-- CREATE TABLE bare in a comment;\nCREATE TABLE {a} (x TEXT DEFAULT ';');\nCREATE UNIQUE INDEX {a_x} ON {a} (x);\nALTER TABLE {a} ADD COLUMN y TEXT;")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range stmts {
		if s.creates != nil {
			got = append(got, s.creates.kind+" "+s.creates.name)
		}
	}
	if fmt.Sprint(got) != "[table a index a_x]" || len(stmts) != 3 {
		t.Errorf("parsed %d statements creating %v", len(stmts), got)
	}
}

func TestMigrationsMatchAcrossDialects(t *testing.T) {
	t.Parallel()
	lite, err := loadMigrations(SQLite)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := loadMigrations(Postgres)
	if err != nil {
		t.Fatal(err)
	}
	if len(lite) != len(pg) {
		t.Fatalf("%d SQLite migrations, %d PostgreSQL ones", len(lite), len(pg))
	}
	for i := range lite {
		if lite[i].name != pg[i].name || fmt.Sprint(lite[i].creates()) != fmt.Sprint(pg[i].creates()) {
			t.Errorf("migration %d: SQLite %s creates %v, PostgreSQL %s creates %v", i+1, lite[i].name, lite[i].creates(), pg[i].name, pg[i].creates())
		}
	}
}

// The released migrations were edited only to put their names in braces: without a prefix
// they are, byte for byte, the files released before the prefix (testdata/unprefixed).
func TestReleasedMigrationsUnchanged(t *testing.T) {
	t.Parallel()
	for _, dialect := range []Dialect{SQLite, Postgres} {
		ms, err := loadMigrations(dialect)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms[:5] {
			file := fmt.Sprintf("%04d_%s.sql", m.version, m.name)
			released, err := os.ReadFile(filepath.Join("testdata", "unprefixed", dialect.String(), file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := expandNames(m.sql, "")
			if err != nil {
				t.Fatal(err)
			}
			if got != string(released) {
				t.Errorf("%v %s without a prefix differs from the released file:\n%s", dialect, file, got)
			}
		}
	}
}
