#!/usr/bin/env bash
# Measures this server against the floor side by side (one write per delivery from the
# publishing request, no queues: what a server that may not join messages cannot go below):
# builds the binary, starts `serve` (SQLite in a temporary directory) and `bench baseline --floor`
# on loopback ports, runs `bench --baseline` (alternated runs, medians, ratios; memory as RSS and
# as the live heap both serve on /metrics), and stops both.
# Settings: CLIENTS (5000), RATE (10 broadcasts/s), DURATION (10s), RUNS (3); extra arguments
# go to `bench` (for example --json). BASELINE=chat compares with gorilla's chat example instead
# (one hub goroutine, queued messages joined into one frame).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-5000}
RATE=${RATE:-10}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
case ${BASELINE:-floor} in
floor) baseline_args=(--floor) ;;
chat) baseline_args=() ;;
*) echo "BASELINE=${BASELINE}: floor or chat" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
# Built as `make build` builds it: pure Go (a cgo build maps the C library too: 1.5 MiB more idle).
CGO_ENABLED=0 go build -o "$tmp/ssr" ./cmd/streamspace-realtime
export STREAMSPACE_JWT_SECRET=${STREAMSPACE_JWT_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export STREAMSPACE_SERVICE_TOKEN=${STREAMSPACE_SERVICE_TOKEN:-bench-$RANDOM$RANDOM}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Every client is a user of one organization: the per-organization connection limit (5,000 by
# default) is turned off so that CLIENTS may exceed it.
"$tmp/ssr" serve --addr 127.0.0.1:18080 --database-url "sqlite://$tmp/bench.db" --log-level warn \
	--max-connections-per-org 0 >"$tmp/serve.log" 2>&1 &
pids+=($!)
server_pid=$!
"$tmp/ssr" bench baseline --addr 127.0.0.1:19090 "${baseline_args[@]}" >"$tmp/baseline.log" 2>&1 &
pids+=($!)
baseline_pid=$!
for _ in $(seq 50); do
	curl -fsS http://127.0.0.1:18080/healthz >/dev/null 2>&1 && grep -q http:// "$tmp/baseline.log" && break
	sleep 0.2
done
"$tmp/ssr" bench --server http://127.0.0.1:18080 --pid "$server_pid" \
	--baseline http://127.0.0.1:19090 --baseline-pid "$baseline_pid" \
	--clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" --runs "$RUNS" "$@"
