#!/usr/bin/env bash
# The fault-injection tests, with their figures: a replica killed with SIGKILL under load and
# Redis restarted (TestThreeReplicas), the same faults and a replica stalled with SIGSTOP under
# VNC streaming across replicas (TestStreamingFaults, Linux), a graceful SIGTERM, PostgreSQL
# crashed and started again, an agent that stops reading, and a flood of malformed input.
# Loopback only; each test starts its own processes (replicas, a private redis-server, a private
# PostgreSQL; the streaming test also needs the test Xvnc of scripts/services.sh). They also run
# in `make test`; this script runs them alone and prints what each measured
# (docs/RELIABILITY.md).
#
#   scripts/chaos.sh             # once
#   COUNT=5 scripts/chaos.sh     # five times each, to see the spread
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export STREAMSPACE_TEST_DATABASE_URL="${STREAMSPACE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}"
export STREAMSPACE_TEST_REDIS_URL="${STREAMSPACE_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
bash scripts/services.sh

out="$(mktemp)"
trap 'rm -f "${out}"' EXIT
status=0
go test -race -count="${COUNT:-1}" -timeout 30m -v \
	-run '^(TestThreeReplicas|TestStreamingFaults|TestGracefulShutdownHandsAgentsOver|TestChaosPostgresCrash|TestChaosPausedAgentReads|TestChaosMalformedFlood)$' \
	./internal/server/ >"${out}" 2>&1 || status=$?
# The figures each test logs, then the verdicts.
grep -E '^\s+(replicas|streaming_faults|shutdown|chaos)_test\.go:[0-9]+: ' "${out}" | sed -E 's/^\s+//' || true
grep -E '^(--- |ok|FAIL)' "${out}" || true
if [[ ${status} -ne 0 ]]; then
	echo "chaos.sh: a test failed; its output:" >&2
	cat "${out}" >&2
fi
exit "${status}"
