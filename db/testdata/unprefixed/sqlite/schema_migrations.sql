-- The bookkeeping table of versions before table prefixes (db/migrate.go at 1b39a02).
CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TEXT NOT NULL
		) STRICT;
