#!/usr/bin/env bash
# Runs every fuzz target for a short while, one after the other (go test -fuzz takes one
# target of one package at a time). The committed corpus (testdata/fuzz/<Target>/ beside each
# package) runs first; a failing input is written there and named in go test's output.
#
#   scripts/fuzz.sh                 # 10 s per target
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
)

out="$(mktemp)"
trap 'rm -f "${out}"' EXIT

for entry in "${targets[@]}"; do
	read -r pkg target <<<"${entry}"
	step "fuzz ${target} (${pkg}) for ${fuzztime}"
	# -run '^$': the package's other tests are scripts/test.sh's business.
	if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "${fuzztime}" "${pkg}" 2>&1 | tee "${out}"; then
		die "${target} (${pkg}) failed, see above; a failing input is saved under ${pkg}testdata/fuzz/${target}/"
	fi
	# go test passes when -fuzz matches nothing: a renamed target must not go quiet.
	if grep -q 'no fuzz tests to fuzz' "${out}"; then
		die "${target} is not a fuzz target of ${pkg}; update the list in scripts/fuzz.sh"
	fi
done
