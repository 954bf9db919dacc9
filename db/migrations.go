package db

import (
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// migration is one numbered file, its names still in braces.
type migration struct {
	version int
	name    string
	sql     string
	stmts   []migrationStmt
}

// migrationStmt is one statement of a migration and the object it creates, if any.
type migrationStmt struct {
	sql     string
	creates *dbObject
}

// dbObject is a table or an index, by its unprefixed name.
type dbObject struct {
	kind string // "table" or "index"
	name string
}

// creates lists the tables and indexes the migration creates.
func (m migration) creates() []dbObject {
	var out []dbObject
	for _, s := range m.stmts {
		if s.creates != nil {
			out = append(out, *s.creates)
		}
	}
	return out
}

var (
	// reCreates matches a statement that creates a table or index named in braces.
	reCreates = regexp.MustCompile(`(?is)^\s*CREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?\{([a-z][a-z0-9_]*)\}`)
	// reNamesObject matches a statement that creates or alters an object: its name must be in
	// braces, or the prefix would miss it.
	reNamesObject = regexp.MustCompile(`(?is)^\s*(?:CREATE\s+(?:UNIQUE\s+)?(?:TEMP\s+|TEMPORARY\s+)?(?:TABLE|INDEX|VIEW|TRIGGER|SEQUENCE)|ALTER\s+(?:TABLE|INDEX)|DROP\s+(?:TABLE|INDEX|VIEW|TRIGGER|SEQUENCE))\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(\S)`)
)

// migrationSets reads each dialect's migrations once.
var migrationSets = map[Dialect]func() ([]migration, error){
	SQLite:   sync.OnceValues(func() ([]migration, error) { return readMigrations(SQLite) }),
	Postgres: sync.OnceValues(func() ([]migration, error) { return readMigrations(Postgres) }),
}

// loadMigrations returns the dialect's migrations in version order.
func loadMigrations(dialect Dialect) ([]migration, error) {
	load, ok := migrationSets[dialect]
	if !ok {
		return nil, fmt.Errorf("no migrations for %v", dialect)
	}
	return load()
}

// readMigrations reads the dialect's migrations from migrationsFS, in version order.
func readMigrations(dialect Dialect) ([]migration, error) {
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
		stmts, err := parseMigration(string(body))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", e.Name(), err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(body), stmts: stmts})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration versions must run 1, 2, 3...: %d is missing", i+1)
		}
	}
	return ms, nil
}

// parseMigration splits a migration into its statements and checks that every object it
// creates, alters or drops is named in braces.
func parseMigration(body string) ([]migrationStmt, error) {
	if _, err := expandNames(body, DefaultTablePrefix); err != nil {
		return nil, err
	}
	var out []migrationStmt
	for _, s := range splitStatements(body) {
		code := codeOnly(s)
		if strings.TrimSpace(code) == "" {
			continue
		}
		if m := reNamesObject.FindStringSubmatch(code); m != nil && m[1] != "{" {
			return nil, fmt.Errorf("statement %q names an object without braces: the table prefix would miss it", strings.TrimSpace(code))
		}
		st := migrationStmt{sql: s}
		if m := reCreates.FindStringSubmatch(code); m != nil {
			st.creates = &dbObject{kind: strings.ToLower(m[1]), name: m[2]}
		}
		out = append(out, st)
	}
	return out, nil
}

// splitStatements cuts s at the semicolons outside its strings and comments.
func splitStatements(s string) []string {
	var (
		out []string
		cur strings.Builder
	)
	walkSQL(s, func(code string) {
		for {
			i := strings.IndexByte(code, ';')
			if i < 0 {
				cur.WriteString(code)
				return
			}
			cur.WriteString(code[:i+1])
			out = append(out, cur.String())
			cur.Reset()
			code = code[i+1:]
		}
	}, func(other string) { cur.WriteString(other) })
	if strings.TrimSpace(codeOnly(cur.String())) != "" {
		out = append(out, cur.String())
	}
	return out
}

// codeOnly returns s with its strings and comments blanked out.
func codeOnly(s string) string {
	var b strings.Builder
	walkSQL(s, func(code string) { b.WriteString(code) }, func(string) { b.WriteByte(' ') })
	return b.String()
}
