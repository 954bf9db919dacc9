package websocket_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // the embedder's PostgreSQL driver: "pgx"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
)

// embedderTables are the tables the embedding API server owns, named as StreamSpace names its
// own: the names this project's tables would have without their prefix. schema_migrations is
// the bookkeeping of golang-migrate, which many Go API servers run, in that tool's shape.
var embedderTables = []string{"organizations", "agents", "agent_commands", "sessions", "connections", "schema_migrations"}

// embedderDB is the embedding server's own database: its pool, opened by itself, and the
// engine behind it. Its statements are written with ? and rebound for PostgreSQL.
type embedderDB struct {
	sql     *sql.DB
	dialect db.Dialect
}

// openEmbedderDB opens the server's pool the way a server does, with its own driver: pgx's
// database/sql driver on a fresh PostgreSQL schema (dropped when the test ends), or
// modernc's SQLite on a file in the test's directory.
func openEmbedderDB(t *testing.T, dialect db.Dialect) *embedderDB {
	t.Helper()
	var (
		sqlDB *sql.DB
		err   error
	)
	switch dialect {
	case db.Postgres:
		sqlDB, err = sql.Open("pgx", dbtest.URL(t, "postgres"))
		if err == nil {
			sqlDB.SetMaxOpenConns(8)
		}
	case db.SQLite:
		sqlDB, err = sql.Open("sqlite", db.SQLiteDSN(filepath.Join(t.TempDir(), "api.db")))
		if err == nil {
			sqlDB.SetMaxOpenConns(4)
			sqlDB.SetMaxIdleConns(4)
		}
	default:
		t.Fatalf("embedder: unknown dialect %v", dialect)
	}
	if err != nil {
		t.Fatalf("embedder: open %s: %v", dialect, err)
	}
	// Registered after dbtest's cleanup, so it runs first: the pool closes before the schema
	// is dropped.
	t.Cleanup(func() { _ = sqlDB.Close() })
	return &embedderDB{sql: sqlDB, dialect: dialect}
}

// rebind turns the ? placeholders of q into PostgreSQL's $n.
func (e *embedderDB) rebind(q string) string {
	if e.dialect != db.Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (e *embedderDB) exec(ctx context.Context, q string, args ...any) error {
	_, err := e.sql.ExecContext(ctx, e.rebind(q), args...)
	return err
}

// createEmbedderSchema creates the server's tables in StreamSpace's shapes (its Migrate):
// UUID surrogate keys next to the agent_id and command_id business keys, JSON columns, the
// sessions columns accumulated over its migrations, and its own index names.
func createEmbedderSchema(t *testing.T, e *embedderDB) {
	t.Helper()
	uuidKey, jsonType := "UUID PRIMARY KEY DEFAULT gen_random_uuid()", "JSONB"
	if e.dialect == db.SQLite {
		uuidKey, jsonType = "TEXT PRIMARY KEY", "TEXT"
	}
	ddl := []string{
		`CREATE TABLE organizations (
			id            VARCHAR(255) PRIMARY KEY,
			name          VARCHAR(255) UNIQUE NOT NULL,
			display_name  VARCHAR(255) NOT NULL,
			k8s_namespace VARCHAR(255) NOT NULL DEFAULT 'streamspace',
			status        VARCHAR(50) DEFAULT 'active',
			created_at    TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
			updated_at    TIMESTAMP DEFAULT CURRENT_TIMESTAMP)`,
		`CREATE TABLE agents (
			id              ` + uuidKey + `,
			agent_id        VARCHAR(255) UNIQUE NOT NULL,
			platform        VARCHAR(50) NOT NULL,
			region          VARCHAR(100),
			status          VARCHAR(50) DEFAULT 'offline',
			capacity        ` + jsonType + `,
			last_heartbeat  TIMESTAMP,
			api_key_hash    VARCHAR(255),
			org_id          VARCHAR(255) REFERENCES organizations(id) ON DELETE CASCADE,
			approval_status VARCHAR(20) DEFAULT 'approved',
			created_at      TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
			updated_at      TIMESTAMP DEFAULT CURRENT_TIMESTAMP)`,
		`CREATE INDEX idx_agents_status ON agents(status)`,
		`CREATE TABLE agent_commands (
			id              ` + uuidKey + `,
			command_id      VARCHAR(255) UNIQUE NOT NULL,
			agent_id        VARCHAR(255) REFERENCES agents(agent_id) ON DELETE CASCADE,
			session_id      VARCHAR(255),
			action          VARCHAR(50) NOT NULL,
			payload         ` + jsonType + `,
			status          VARCHAR(50) DEFAULT 'pending',
			error_message   TEXT,
			created_at      TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
			sent_at         TIMESTAMP,
			acknowledged_at TIMESTAMP,
			completed_at    TIMESTAMP)`,
		`CREATE INDEX idx_agent_commands_agent_status ON agent_commands(agent_id, status)`,
		`CREATE TABLE sessions (
			id                 VARCHAR(255) PRIMARY KEY,
			user_id            VARCHAR(255) NOT NULL,
			org_id             VARCHAR(255) REFERENCES organizations(id) ON DELETE CASCADE,
			template_name      VARCHAR(255),
			state              VARCHAR(50),
			app_type           VARCHAR(50) DEFAULT 'desktop',
			active_connections INT DEFAULT 0,
			url                TEXT,
			namespace          VARCHAR(255) DEFAULT 'streamspace',
			platform           VARCHAR(50) DEFAULT 'kubernetes',
			pod_name           VARCHAR(255),
			memory             VARCHAR(50),
			cpu                VARCHAR(50),
			idle_timeout       VARCHAR(50),
			last_activity      TIMESTAMP,
			agent_id           VARCHAR(255) REFERENCES agents(agent_id),
			streaming_protocol VARCHAR(50) DEFAULT 'vnc',
			created_at         TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
			last_connection    TIMESTAMP,
			last_disconnect    TIMESTAMP,
			updated_at         TIMESTAMP DEFAULT CURRENT_TIMESTAMP)`,
		`CREATE INDEX idx_sessions_org_user ON sessions(org_id, user_id)`,
		`CREATE TABLE connections (
			id             VARCHAR(255) PRIMARY KEY,
			session_id     VARCHAR(255) REFERENCES sessions(id) ON DELETE CASCADE,
			user_id        VARCHAR(255),
			client_ip      VARCHAR(45),
			user_agent     TEXT,
			connected_at   TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
			last_heartbeat TIMESTAMP)`,
		`CREATE INDEX idx_connections_session ON connections(session_id)`,
		`CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL)`,
	}
	ctx := t.Context()
	for _, stmt := range ddl {
		if err := e.exec(ctx, stmt); err != nil {
			t.Fatalf("embedder schema: %v\n%s", err, stmt)
		}
	}
}

// The embedder's fixture: its organizations, its enrolled agent and that agent's key, the
// sessions of two users of one organization and one of another organization.
const (
	embedOrg       = "org-acme"
	embedOtherOrg  = "org-globex"
	embedAgentID   = "k8s-agent-eu-1"
	embedAgentKey  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	embedAlice     = "alice"
	embedBob       = "bob"
	embedAliceSess = "ss-alice-firefox"
	embedBobSess   = "ss-bob-gimp"
	embedOtherSess = "ss-globex-term"
	// embedPendingID is the surrogate key of the embedder's one pending command.
	embedPendingID = "5f0c9a52-8d1e-4f4e-9a59-3e1f0a7b2c11"
)

// embedderKeyHash is how the embedder stores an agent's key. StreamSpace keeps a bcrypt hash;
// SHA-256 stands in for it here, to stay within the module's dependencies.
func embedderKeyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// seedEmbedderRows fills the server's tables with the rows it holds before this project's
// package is added to it.
func seedEmbedderRows(t *testing.T, e *embedderDB, now time.Time) {
	t.Helper()
	ctx := t.Context()
	now = now.UTC().Truncate(time.Second)
	rows := []struct {
		q    string
		args []any
	}{
		{`INSERT INTO organizations (id, name, display_name, k8s_namespace, status, created_at, updated_at)
			VALUES (?, ?, ?, ?, 'active', ?, ?)`,
			[]any{embedOrg, "acme", "Acme Corp", "acme-sessions", now, now}},
		{`INSERT INTO organizations (id, name, display_name, k8s_namespace, status, created_at, updated_at)
			VALUES (?, ?, ?, ?, 'active', ?, ?)`,
			[]any{embedOtherOrg, "globex", "Globex", "globex-sessions", now, now}},
		{`INSERT INTO agents (id, agent_id, platform, region, status, capacity, api_key_hash, org_id, approval_status, created_at, updated_at)
			VALUES (?, ?, 'kubernetes', 'eu-west', 'offline', ?, ?, ?, 'approved', ?, ?)`,
			[]any{uuid.NewString(), embedAgentID, `{"maxSessions": 20}`, embedderKeyHash(embedAgentKey), embedOrg, now, now}},
		{`INSERT INTO agents (id, agent_id, platform, region, status, api_key_hash, org_id, approval_status, created_at, updated_at)
			VALUES (?, ?, 'docker', 'us-east', 'offline', ?, ?, 'approved', ?, ?)`,
			[]any{uuid.NewString(), "docker-agent-us-1", embedderKeyHash("another key"), embedOtherOrg, now, now}},
		// A command StreamSpace's own dispatcher finished before the package was embedded.
		{`INSERT INTO agent_commands (id, command_id, agent_id, session_id, action, payload, status, created_at, sent_at, acknowledged_at, completed_at)
			VALUES (?, 'cmd-legacy-1', ?, ?, 'start_session', ?, 'completed', ?, ?, ?, ?)`,
			[]any{uuid.NewString(), embedAgentID, embedAliceSess, `{"sessionId": "` + embedAliceSess + `"}`, now, now, now, now}},
		// One it had queued and not sent yet: handed over to the hub when the package comes in.
		{`INSERT INTO agent_commands (id, command_id, agent_id, session_id, action, payload, status, created_at)
			VALUES (?, 'cmd-legacy-2', ?, ?, 'hibernate_session', ?, 'pending', ?)`,
			[]any{embedPendingID, embedAgentID, embedBobSess, `{"sessionId": "` + embedBobSess + `", "reason": "idle"}`, now}},
		{`INSERT INTO sessions (id, user_id, org_id, template_name, state, active_connections, url, namespace, platform,
				pod_name, memory, cpu, idle_timeout, last_activity, agent_id, created_at, updated_at)
			VALUES (?, ?, ?, 'firefox', 'running', 2, '/api/v1/sessions/ss-alice-firefox/vnc', 'acme-sessions', 'kubernetes',
				'ss-alice-firefox-0', '2Gi', '1000m', '30m', ?, ?, ?, ?)`,
			[]any{embedAliceSess, embedAlice, embedOrg, now, embedAgentID, now.Add(-time.Hour), now}},
		{`INSERT INTO sessions (id, user_id, org_id, template_name, state, namespace, agent_id, created_at, updated_at)
			VALUES (?, ?, ?, 'gimp', 'pending', 'acme-sessions', ?, ?, ?)`,
			[]any{embedBobSess, embedBob, embedOrg, embedAgentID, now.Add(-time.Minute), now}},
		{`INSERT INTO sessions (id, user_id, org_id, template_name, state, namespace, created_at, updated_at)
			VALUES (?, 'carol', ?, 'xterm', 'running', 'globex-sessions', ?, ?)`,
			[]any{embedOtherSess, embedOtherOrg, now, now}},
		{`INSERT INTO schema_migrations (version, dirty) VALUES (8, ?)`, []any{false}},
		{`INSERT INTO connections (id, session_id, user_id, client_ip, user_agent, connected_at, last_heartbeat)
			VALUES ('conn-1', ?, ?, '203.0.113.7', 'Firefox/128', ?, ?)`,
			[]any{embedAliceSess, embedAlice, now, now}},
	}
	for _, r := range rows {
		if err := e.exec(ctx, r.q, r.args...); err != nil {
			t.Fatalf("embedder rows: %v\n%s", err, r.q)
		}
	}
}

// pendingCommands reads the commands the embedder's own table still has to send, into its
// own model: what its dispatcher did at startup, now handed to the hub instead.
func (e *embedderDB) pendingCommands(t *testing.T) []embedderCommand {
	t.Helper()
	rs, err := e.sql.QueryContext(t.Context(), e.rebind(`
		SELECT id, command_id, agent_id, session_id, action, payload, status, error_message,
			created_at, sent_at, acknowledged_at, completed_at
		FROM agent_commands WHERE status = 'pending' ORDER BY created_at`))
	if err != nil {
		t.Fatalf("embedder: pending commands: %v", err)
	}
	defer rs.Close()
	var out []embedderCommand
	for rs.Next() {
		var (
			c                   embedderCommand
			sessionID, errText  sql.NullString
			sent, acked, closed sql.NullTime
			payload             commandPayload
		)
		if err := rs.Scan(&c.ID, &c.CommandID, &c.AgentID, &sessionID, &c.Action, &payload, &c.Status,
			&errText, &c.CreatedAt, &sent, &acked, &closed); err != nil {
			t.Fatalf("embedder: scan command: %v", err)
		}
		if sessionID.Valid {
			c.SessionID = &sessionID.String
		}
		if errText.Valid {
			c.ErrorMessage = &errText.String
		}
		if payload != nil {
			c.Payload = &payload
		}
		c.SentAt, c.AcknowledgedAt, c.CompletedAt = nullTime(sent), nullTime(acked), nullTime(closed)
		out = append(out, c)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func nullTime(v sql.NullTime) *time.Time {
	if !v.Valid {
		return nil
	}
	return &v.Time
}

// embedderSnapshot is everything of one embedder table a migration could change: its
// columns, its indexes and its rows, each rendered as text.
type embedderSnapshot struct {
	Columns []string
	Indexes []string
	Rows    []string
}

// snapshotEmbedder reads every embedder table.
func snapshotEmbedder(t *testing.T, e *embedderDB) map[string]embedderSnapshot {
	t.Helper()
	out := make(map[string]embedderSnapshot, len(embedderTables))
	for _, table := range embedderTables {
		out[table] = embedderSnapshot{
			Columns: e.columns(t, table),
			Indexes: e.indexes(t, table),
			Rows:    e.rows(t, table),
		}
	}
	return out
}

// columns lists a table's columns with their type, nullability and default, in order.
func (e *embedderDB) columns(t *testing.T, table string) []string {
	t.Helper()
	q := `SELECT column_name, data_type, is_nullable, COALESCE(column_default, '')
		FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?
		ORDER BY ordinal_position`
	if e.dialect == db.SQLite {
		q = `SELECT name, type, "notnull", COALESCE(dflt_value, ''), pk FROM pragma_table_info(?) ORDER BY cid`
	}
	cols := e.texts(t, q, table)
	if len(cols) == 0 {
		t.Fatalf("embedder table %s has no columns: it is gone", table)
	}
	return cols
}

// indexes lists the definitions of a table's indexes.
func (e *embedderDB) indexes(t *testing.T, table string) []string {
	t.Helper()
	q := `SELECT indexname || ': ' || indexdef FROM pg_indexes
		WHERE schemaname = current_schema() AND tablename = ? ORDER BY indexname`
	if e.dialect == db.SQLite {
		q = `SELECT name || ': ' || COALESCE(sql, '') FROM sqlite_master
			WHERE type = 'index' AND tbl_name = ? ORDER BY name`
	}
	return e.texts(t, q, table)
}

// rows renders every row of a table, sorted.
func (e *embedderDB) rows(t *testing.T, table string) []string {
	t.Helper()
	rs, err := e.sql.QueryContext(t.Context(), `SELECT * FROM `+table)
	if err != nil {
		t.Fatalf("embedder: read %s: %v", table, err)
	}
	defer rs.Close()
	cols, err := rs.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatalf("embedder: scan %s: %v", table, err)
		}
		var b strings.Builder
		for i, v := range vals {
			if b.Len() > 0 {
				b.WriteString(" | ")
			}
			if raw, ok := v.([]byte); ok {
				v = string(raw)
			}
			fmt.Fprintf(&b, "%s=%v", cols[i], v)
		}
		out = append(out, b.String())
	}
	if err := rs.Err(); err != nil {
		t.Fatalf("embedder: read %s: %v", table, err)
	}
	slices.Sort(out)
	return out
}

// tables lists every table of the database (the PostgreSQL schema the pool uses).
func (e *embedderDB) tables(t *testing.T) []string {
	t.Helper()
	q := `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`
	if e.dialect == db.SQLite {
		q = `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`
	}
	return e.texts(t, q)
}

// texts runs a query and renders each row as one line of text.
func (e *embedderDB) texts(t *testing.T, q string, args ...any) []string {
	t.Helper()
	rs, err := e.sql.QueryContext(t.Context(), e.rebind(q), args...)
	if err != nil {
		t.Fatalf("embedder: %v\n%s", err, q)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		cols, err := rs.Columns()
		if err != nil {
			t.Fatal(err)
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			if raw, ok := v.([]byte); ok {
				v = string(raw)
			}
			parts[i] = fmt.Sprint(v)
		}
		out = append(out, strings.Join(parts, " "))
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
