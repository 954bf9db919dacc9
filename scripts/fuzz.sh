#!/usr/bin/env bash
# Runs every fuzz target for a short while, one after the other (go test -fuzz takes one
# target of one package at a time). The committed corpus (testdata/fuzz/<Target>/ beside each
# package) runs first; a failing input is written there and named in go test's output.
#
#   scripts/fuzz.sh                 # 10 s per target (make test: 5 s)
#   FUZZTIME=5m scripts/fuzz.sh     # longer, before a release or after touching a decoder
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }
die() { printf 'fuzz.sh: ERROR: %s\n' "$*" >&2; exit 1; }

fuzztime="${FUZZTIME:-10s}"

# package target: listed by hand, so a new target is a deliberate addition here.
targets=(
	"./websocket/ FuzzDecodeAgentFrame"
	"./websocket/ FuzzParseSince"
	"./websocket/ FuzzParseClientFrames"
	"./internal/server/ FuzzPublishEvent"
	"./internal/auth/ FuzzVerify"
	"./internal/auth/ FuzzRequest"
	"./internal/rfb/ FuzzClientStream"
)

out="$(mktemp)"
trap 'rm -f "${out}"' EXIT

# fuzz_once runs one target; its output is in ${out}.
fuzz_once() {
	# -run '^$': the package's other tests are scripts/test.sh's business.
	go test -run '^$' -fuzz "^$2\$" -fuzztime "${fuzztime}" "$1" 2>&1 | tee "${out}"
}

# deadline_race reports whether a failed run is Go's own fuzz coordinator racing its
# -fuzztime deadline (go.dev/issue/75804, fixed in Go 1.27): a bare "context deadline
# exceeded" at the end of the time, with no failing input written and nothing else failing.
deadline_race() {
	grep -q 'context deadline exceeded' "${out}" &&
		! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "${out}"
}

for entry in "${targets[@]}"; do
	read -r pkg target <<<"${entry}"
	step "fuzz ${target} (${pkg}) for ${fuzztime}"
	if ! fuzz_once "${pkg}" "${target}"; then
		if ! deadline_race; then
			die "${target} (${pkg}) failed, see above; a failing input is saved under ${pkg}testdata/fuzz/${target}/"
		fi
		# Once: the race needs a loaded machine, and a real finding writes its input.
		step "fuzz ${target}: the coordinator's deadline race (go.dev/issue/75804), not a finding; once more"
		if ! fuzz_once "${pkg}" "${target}"; then
			die "${target} (${pkg}) failed twice, see above; a failing input, if any, is saved under ${pkg}testdata/fuzz/${target}/"
		fi
	fi
	# go test passes when -fuzz matches nothing: a renamed target must not go quiet.
	if grep -q 'no fuzz tests to fuzz' "${out}"; then
		die "${target} is not a fuzz target of ${pkg}; update the list in scripts/fuzz.sh"
	fi
done
