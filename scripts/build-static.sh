#!/usr/bin/env bash
# The server as the image ships it: a static binary (no cgo, so no libc; modernc.org/sqlite is
# pure Go) with no local paths or debug tables, and with Kubernetes as a session source
# (-tags kubernetes: the image runs in Kubernetes; a build without the tag links no client-go
# and refuses --session-source kubernetes). The one definition of that build: the
# Dockerfile's build stage runs this script, and scripts/test.sh runs it before go test, so that
# the tests check (deploy's TestStaticBinary) and drive (internal/browsertest) the very binary
# the image holds, without a go build of their own bounded by the suite's deadline.
#
#   scripts/build-static.sh OUTPUT    # e.g. scripts/build-static.sh bin/streamspace-realtime-static
set -euo pipefail

[[ $# -eq 1 ]] || { printf 'usage: %s OUTPUT\n' "$0" >&2; exit 2; }
out="$(realpath -m -- "$1")" # before the cd: relative to where it was called from

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CGO_ENABLED=0 go build -trimpath -tags kubernetes -ldflags='-s -w' -o "${out}" ./cmd/streamspace-realtime
