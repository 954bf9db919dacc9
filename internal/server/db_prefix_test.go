package server

import "testing"

// The table prefix of the configuration reaches the database: the server's tables carry it.
func TestServerTablePrefix(t *testing.T) {
	t.Parallel()
	ts := startServer(t, "sqlite", func(c *Config) { c.DBTablePrefix = "rt_" })
	if got := ts.Database().TablePrefix(); got != "rt_" {
		t.Fatalf("TablePrefix() = %q, want rt_", got)
	}
	var n int
	if err := ts.Database().SQL().QueryRowContext(t.Context(),
		`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('rt_sessions', 'sessions')`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("tables named rt_sessions or sessions: %d, %v; want rt_sessions alone", n, err)
	}
	def := startServer(t, "sqlite")
	if got := def.Database().TablePrefix(); got != "ssrt_" {
		t.Errorf("default TablePrefix() = %q", got)
	}
}
