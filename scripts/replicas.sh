#!/usr/bin/env bash
# Run three replicas of the server on one machine, as a production install runs them behind a
# load balancer: PostgreSQL as the database, Redis as the cluster bus, no sticky sessions.
#
#   scripts/replicas.sh            # replicas on :8081, :8082 and :8083 (peer links :8091-:8093); Ctrl-C stops them
#
# It makes sure PostgreSQL and Redis run (scripts/services.sh), creates the database
# "streamspace" if missing, builds the binary into bin/, and prints the secrets it used and what
# to try. Settings already in the environment (STREAMSPACE_*) win over the defaults here.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'replicas.sh: %s\n' "$*" >&2; }

scripts/services.sh

export STREAMSPACE_DATABASE_URL="${STREAMSPACE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/streamspace?sslmode=disable}"
export STREAMSPACE_REDIS_URL="${STREAMSPACE_REDIS_URL:-redis://127.0.0.1:6379/0}"
export STREAMSPACE_JWT_SECRET="${STREAMSPACE_JWT_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export STREAMSPACE_SERVICE_TOKEN="${STREAMSPACE_SERVICE_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export STREAMSPACE_AGENT_BOOTSTRAP_KEY="${STREAMSPACE_AGENT_BOOTSTRAP_KEY:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export STREAMSPACE_AGENT_AUTO_APPROVE="${STREAMSPACE_AGENT_AUTO_APPROVE:-true}"

if [[ ${STREAMSPACE_DATABASE_URL} == postgres://postgres@127.0.0.1:5432/streamspace* ]] &&
	[[ "$(psql -X -w -At -h 127.0.0.1 -U postgres -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'streamspace'")" != 1 ]]; then
	log "creating database streamspace"
	psql -X -w -q -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE streamspace'
fi

mkdir -p bin .replicas
log "building bin/streamspace-realtime"
CGO_ENABLED=0 go build -o bin/streamspace-realtime ./cmd/streamspace-realtime

pids=()
stop() {
	for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap stop EXIT INT TERM

for i in 1 2 3; do
	# Each replica's peer link (desktops relayed between replicas) on a port of its own.
	bin/streamspace-realtime serve --addr "127.0.0.1:808${i}" --peer-addr "127.0.0.1:809${i}" --replica "r${i}" >".replicas/r${i}.log" 2>&1 &
	pids+=($!)
done
for i in 1 2 3; do
	for _ in $(seq 1 100); do
		curl -fsS "http://127.0.0.1:808${i}/readyz" >/dev/null 2>&1 && break
		kill -0 "${pids[$((i - 1))]}" 2>/dev/null || { cat ".replicas/r${i}.log" >&2; exit 1; }
		sleep 0.1
	done
	curl -fsS "http://127.0.0.1:808${i}/readyz" >/dev/null || { log "replica r${i} is not ready; see .replicas/r${i}.log"; exit 1; }
done

cat <<MSG
Three replicas are ready: r1 http://127.0.0.1:8081, r2 http://127.0.0.1:8082, r3 http://127.0.0.1:8083
(logs in .replicas/). Ctrl-C stops them.

  export STREAMSPACE_JWT_SECRET=${STREAMSPACE_JWT_SECRET}
  export STREAMSPACE_SERVICE_TOKEN=${STREAMSPACE_SERVICE_TOKEN}

An agent on r1:
  bin/streamspace-realtime agent --server http://127.0.0.1:8081 --id demo-agent --key ${STREAMSPACE_AGENT_BOOTSTRAP_KEY}

A browser of org acme on r3 (any WebSocket client; here websocat):
  websocat -H "Authorization: Bearer \$(bin/streamspace-realtime token --user alice --org acme --role admin)" ws://127.0.0.1:8083/api/v1/ws/sessions

A command through r2, delivered by r1, seen on r3:
  curl -H "Authorization: Bearer ${STREAMSPACE_SERVICE_TOKEN}" -d '{"action":"start_session","payload":{"user":"alice","orgId":"acme"}}' http://127.0.0.1:8082/api/v1/admin/agents/demo-agent/command

Where every agent is, from any replica:
  curl -H "Authorization: Bearer ${STREAMSPACE_SERVICE_TOKEN}" http://127.0.0.1:8082/api/v1/agents
MSG
wait
