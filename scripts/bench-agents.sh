#!/usr/bin/env bash
# Measures the agents path: builds the binary, starts `serve` on SQLite (DB=sqlite, the default)
# or on a fresh PostgreSQL database (DB=postgres, PGURL names the server), and runs
# `bench agents`: AGENTS agents (100) connected with the agent SDK, commands submitted for
# DURATION (10s) by WORKERS (64) submitters, each completed in the database.
# Extra arguments go to `bench agents` (for example --json or --heartbeat 30s). PGSET is applied
# to the fresh PostgreSQL database (ALTER DATABASE … SET $PGSET), for experiments such as
# PGSET="synchronous_commit = off".
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${DB:-sqlite}
AGENTS=${AGENTS:-100}
DURATION=${DURATION:-10s}
WORKERS=${WORKERS:-64}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
tmp=$(mktemp -d)
pids=()
pgdb=""
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -n "$pgdb" ]; then psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)" >/dev/null 2>&1 || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/ssr" ./cmd/streamspace-realtime
case "$DB" in
sqlite) dburl="sqlite://$tmp/bench.db" ;;
postgres)
	pgdb="ssr_bench_$$"
	psql "$PGURL/postgres" -qc "CREATE DATABASE $pgdb" >/dev/null
	[ -n "${PGSET:-}" ] && psql "$PGURL/postgres" -qc "ALTER DATABASE $pgdb SET $PGSET" >/dev/null
	dburl="$PGURL/$pgdb?sslmode=disable"
	;;
*) echo "DB must be sqlite or postgres" >&2; exit 2 ;;
esac
export STREAMSPACE_JWT_SECRET=${STREAMSPACE_JWT_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export STREAMSPACE_SERVICE_TOKEN=${STREAMSPACE_SERVICE_TOKEN:-bench-$RANDOM$RANDOM}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$tmp/ssr" serve --addr 127.0.0.1:18081 --database-url "$dburl" --log-level warn >"$tmp/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	curl -fsS http://127.0.0.1:18081/healthz >/dev/null 2>&1 && break
	sleep 0.2
done
"$tmp/ssr" bench agents --server http://127.0.0.1:18081 --agents "$AGENTS" --duration "$DURATION" \
	--workers "$WORKERS" "$@"
