#!/usr/bin/env bash
# Measures session streaming side by side with websockify, and with websockify behind one plain
# TCP hop (socat: the floor of a two-hop path such as the server's, control plane and agent):
# builds the binary, starts `serve` and runs `bench vnc` for each row of the streaming targets
# (docs/PERFORMANCE.md):
#   1. memory per idle open tunnel: IDLE (250; the agent SDK serves at most 256) viewers that
#      complete the handshake and wait, first, while the server is fresh (a process keeps
#      memory it has freed);
#   2. one tunnel at full speed: throughput, this server against websockify's direct relay;
#   3. the round trip of a 10-byte message: one viewer at 1 MB/s;
#   4. VIEWERS viewers (100) at RATE (1MB) each: every tunnel keeps its rate? command round trip
#      on the busy agent against the idle one.
# Rows 2 and 3 compare relays alone: the server's agent gets no commands during them, as
# websockify gets none (COMMANDS=true sends them, 20 a second, as row 4 does).
# One replica on SQLite (the default), or REPLICAS=2: two replicas on a fresh PostgreSQL
# database (PGURL names the server) and a Redis prefix of their own (REDIS_URL), the agent on
# replica 2 and the viewers on replica 1, so every tunnel crosses the peer link.
# Settings: DURATION (10s), RUNS (3), BATCH (viewers connecting at once, 50), ROWS (which rows,
# "1 2 3 4"), RTT_INTERVAL (row 3's 10-byte requests, one outstanding at a time: 5ms, about
# 2,000 round trips a run, so that a run's p99 is not its second-slowest sample), COMMANDS
# (rows 2 and 3: false), PORT (18090: the server's; two replicas take the next two, their peer
# links PORT+101 and PORT+102); extra arguments go to every `bench vnc` (for example --json).
# Everything the script starts is stopped when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
REPLICAS=${REPLICAS:-1}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
VIEWERS=${VIEWERS:-100}
RATE=${RATE:-1MB}
IDLE=${IDLE:-250}
BATCH=${BATCH:-50}
RTT_INTERVAL=${RTT_INTERVAL:-5ms}
COMMANDS=${COMMANDS:-false}
PORT=${PORT:-18090}
ROWS=${ROWS:-1 2 3 4}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
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
trap 'exit 130' INT TERM
command -v websockify >/dev/null || { echo "bench-vnc.sh: websockify is not installed (Debian's package websockify; scripts/tools.sh)" >&2; exit 2; }
command -v socat >/dev/null || { echo "bench-vnc.sh: socat is not installed (Debian's package socat; scripts/tools.sh), or pass --hop=false" >&2; exit 2; }
go build -o "$tmp/ssr" ./cmd/streamspace-realtime
export STREAMSPACE_JWT_SECRET=${STREAMSPACE_JWT_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export STREAMSPACE_SERVICE_TOKEN=${STREAMSPACE_SERVICE_TOKEN:-bench-$RANDOM$RANDOM}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Every viewer is an operator of one organization and every tunnel goes through one agent: the
# per-user and per-agent tunnel limits and the per-organization connection limit are lifted.
common=(--log-level warn --vnc-max-per-agent 0 --vnc-max-per-user 0 --max-connections-per-org 0)

# start NAME PORT ARGS...: starts `serve` and waits until it is ready.
start() {
	local name=$1 port=$2
	shift 2
	if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
		echo "bench-vnc.sh: port $port is in use (another server?): set PORT" >&2
		exit 1
	fi
	"$tmp/ssr" serve --addr "127.0.0.1:$port" "${common[@]}" "$@" >"$tmp/$name.log" 2>&1 &
	pids+=($!)
	local pid=$!
	for _ in $(seq 100); do
		curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	echo "bench-vnc.sh: $name did not start:" >&2
	cat "$tmp/$name.log" >&2
	exit 1
}

case "$REPLICAS" in
1)
	start serve "$PORT" --database-url "sqlite://$tmp/bench.db"
	target=(--server "http://127.0.0.1:$PORT" --pid "${pids[0]}")
	;;
2)
	pgdb="ssr_bench_vnc_$$"
	psql "$PGURL/postgres" -qc "CREATE DATABASE $pgdb" >/dev/null
	dburl="$PGURL/$pgdb?sslmode=disable"
	prefix="ssr-bench-vnc-$$"
	for i in 1 2; do
		start "r$i" $((PORT + i)) --database-url "$dburl" --redis-url "$REDIS_URL" --redis-prefix "$prefix" --replica "r$i" \
			--peer-addr "127.0.0.1:$((PORT + 100 + i))" --peer-advertise-addr "127.0.0.1:$((PORT + 100 + i))"
	done
	target=(--server "http://127.0.0.1:$((PORT + 1))" --agent-server "http://127.0.0.1:$((PORT + 2))" --pid "${pids[0]}" --pid "${pids[1]}")
	;;
*)
	echo "bench-vnc.sh: REPLICAS must be 1 or 2" >&2
	exit 2
	;;
esac

# bench ARGS...: one `bench vnc`, in the background so that a signal reaches the cleanup at once
# (which then stops the bench, and the bench its websockify).
bench() {
	"$tmp/ssr" bench vnc "${target[@]}" --duration "$DURATION" --runs "$RUNS" --batch "$BATCH" "$@" &
	pids+=($!)
	wait "$!"
}
for row in $ROWS; do
	case "$row" in
	1)
		echo "== 1. memory per idle tunnel, $IDLE idle viewers"
		bench --viewers 1 --rate 1MB --runs 1 --idle-viewers "$IDLE" "$@"
		;;
	2)
		echo "== 2. one tunnel at full speed"
		bench --viewers 1 --rate 0 --idle-viewers 0 --commands="$COMMANDS" "$@"
		;;
	3)
		echo "== 3. round trip of a 10-byte message, one viewer at 1 MB/s"
		bench --viewers 1 --rate 1MB --idle-viewers 0 --rtt-interval "$RTT_INTERVAL" --commands="$COMMANDS" "$@"
		;;
	4)
		echo "== 4. $VIEWERS viewers at $RATE each"
		bench --viewers "$VIEWERS" --rate "$RATE" --idle-viewers 0 "$@"
		;;
	*)
		echo "bench-vnc.sh: unknown row $row" >&2
		exit 2
		;;
	esac
done
