#!/usr/bin/env bash
# Connection figures past what one process may open: PROCESSES `serve` processes (SQLite each,
# on loopback ports from 18100), each loaded by its own `bench` with CLIENTS/PROCESSES browser
# clients at RATE broadcasts/s, all at once; then the sum of their RSS growth over the sum of
# their connections. One process and one bench hold at most the open-file limit (`ulimit -Hn`)
# in sockets, so 50,000 connections here take three of each.
# Settings: CLIENTS (50000), PROCESSES (3), RATE (1), DURATION (20s). Needs jq.
#
#   scripts/bench-scale.sh                          # 50,000 over 3 processes
#   CLIENTS=19500 PROCESSES=1 scripts/bench-scale.sh   # the most one process may open here
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-50000}
PROCESSES=${PROCESSES:-3}
RATE=${RATE:-1}
DURATION=${DURATION:-20s}
command -v jq >/dev/null || { echo "bench-scale.sh needs jq (apt-get install jq)" >&2; exit 2; }
per=$((CLIENTS / PROCESSES))
limit=$(ulimit -Hn)
ulimit -n "$limit" 2>/dev/null || true
if ((per + 500 > limit)); then
	echo "$per connections per process need more than the open-file limit ($limit): raise PROCESSES" >&2
	exit 2
fi
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
servers=()
for i in $(seq 0 $((PROCESSES - 1))); do
	port=$((18100 + i))
	"$tmp/ssr" serve --addr "127.0.0.1:$port" --database-url "sqlite://$tmp/bench-$i.db" \
		--log-level warn --max-connections-per-org 0 >"$tmp/serve-$i.log" 2>&1 &
	pids+=($!)
	servers+=("$port:$!")
done
for s in "${servers[@]}"; do
	for _ in $(seq 50); do
		curl -fsS "http://127.0.0.1:${s%%:*}/healthz" >/dev/null 2>&1 && break
		sleep 0.2
	done
done
benches=()
for i in "${!servers[@]}"; do
	s=${servers[$i]}
	"$tmp/ssr" bench --server "http://127.0.0.1:${s%%:*}" --pid "${s##*:}" --org "scale-$i" \
		--clients "$per" --rate "$RATE" --duration "$DURATION" --json >"$tmp/bench-$i.json" 2>"$tmp/bench-$i.log" &
	benches+=($!)
done
failed=0
for b in "${benches[@]}"; do wait "$b" || failed=1; done
if ((failed)); then
	tail -n 5 "$tmp"/bench-*.log >&2
	exit 1
fi
printf '%-8s %10s %12s %14s %12s %12s %10s\n' process connected "idle KiB" "connected KiB" "KiB/conn" "heap KiB/c" "p99 ms"
jq -r '[.connected, .serverRssIdleKiB, .serverRssConnectedKiB, .kibPerIdleConnection, .liveHeapKiBPerConnection, .latencyP99Ms] | @tsv' \
	"$tmp"/bench-*.json | awk -F'\t' '{
		printf "%-8d %10d %12d %14d %12.2f %12.2f %10.1f\n", NR, $1, $2, $3, $4, $5, $6
		conn += $1; idle += $2; rss += $3
	} END {
		printf "%-8s %10d %12d %14d %12.2f\n", "all", conn, idle, rss, (rss - idle) / conn
		printf "RSS of all %d processes connected: %.1f MiB for %d connections\n", NR, rss / 1024, conn
	}'
