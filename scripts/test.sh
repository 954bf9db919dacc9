#!/usr/bin/env bash
# The whole test suite: services, tools, lint (gofmt/vet/staticcheck),
# go.mod tidiness, a short fuzz run (scripts/fuzz.sh), the static binary
# (scripts/build-static.sh, as the Dockerfile builds it), the command's test
# built with -tags kubernetes, then go test -race.
#
#   scripts/test.sh                       # everything, go test ./...
#   scripts/test.sh -run Foo ./websocket/ # extra args replace ./... (give packages too) and skip fuzzing
#
# STREAMSPACE_TEST_DATABASE_URL and STREAMSPACE_TEST_REDIS_URL default to the
# local services that scripts/services.sh manages.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }
die() { printf 'test.sh: ERROR: %s\n' "$*" >&2; exit 1; }

export STREAMSPACE_TEST_DATABASE_URL="${STREAMSPACE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}"
export STREAMSPACE_TEST_REDIS_URL="${STREAMSPACE_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"

step "services (PostgreSQL, Redis)"
bash scripts/services.sh

step "tools"
bash scripts/tools.sh

bash scripts/lint.sh

step "go mod tidy -diff"
if ! go mod tidy -diff; then
	die "go.mod/go.sum are not tidy (diff above); run: go mod tidy"
fi

if [[ $# -gt 0 ]]; then
	args=("$@")
else
	args=(./...)
	# The full run only; 5 s per target, with the instrumented builds, is about a minute.
	step "fuzz (scripts/fuzz.sh, FUZZTIME=${FUZZTIME:-5s} per target)"
	FUZZTIME="${FUZZTIME:-5s}" bash scripts/fuzz.sh
fi
# The image's binary, built here rather than inside a test, so that no test's time depends on
# how fast a cold build is: deploy's TestStaticBinary and internal/apicheck's function-table
# check read it, internal/browsertest and the replica tests of internal/server run it (see testkit.StaticBinary, which builds it when it
# is not given). Only when those packages are among the ones tested.
for arg in "${args[@]}"; do
	case "${arg}" in
	*...* | *deploy* | *browsertest* | *internal/server* | *apicheck*)
		static="${PWD}/bin/streamspace-realtime-static"
		step "static binary (scripts/build-static.sh ${static})"
		bash scripts/build-static.sh "${static}"
		export STREAMSPACE_STATIC_BINARY="${static}"
		break
		;;
	esac
done
# The command's Kubernetes support is behind -tags kubernetes, which the run below does not set:
# its test runs here with the tag (the run below has the untagged build's test of that name).
# Only when the command is among the packages tested.
for arg in "${args[@]}"; do
	case "${arg}" in
	*...* | *cmd/streamspace-realtime*)
		step "go test -race -count=1 -tags kubernetes -run TestServeKubernetesSource ./cmd/streamspace-realtime"
		go test -race -count=1 -tags kubernetes -run TestServeKubernetesSource ./cmd/streamspace-realtime
		break
		;;
	esac
done
step "go test -race -count=1 -timeout 30m ${args[*]}"
# exec: go test's own output and exit status are the last thing we produce.
exec go test -race -count=1 -timeout 30m "${args[@]}"
