#!/usr/bin/env bash
# Static checks: gofmt, go vet, staticcheck. Run from anywhere.
# Installs the pinned staticcheck via scripts/tools.sh when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }
die() { printf 'lint.sh: ERROR: %s\n' "$*" >&2; exit 1; }

bash scripts/tools.sh
gopath="$(go env GOPATH)"
staticcheck="${gopath%%:*}/bin/staticcheck"

# Go files to format-check: tracked plus untracked-but-not-ignored files when
# this is a git checkout, otherwise everything under the module; never
# vendor/ or testdata/ (nor dirs that the go tool ignores: .foo, _foo).
go_files() {
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git ls-files -z --cached --others --exclude-standard -- '*.go'
	else
		find . \( -name vendor -o -name testdata -o -name '.?*' -o -name '_*' \) -prune -o \
			-type f -name '*.go' -print0
	fi | while IFS= read -r -d '' f; do
		case "/${f#./}" in
		*/vendor/* | */testdata/* | */.* | */_*) continue ;;
		esac
		[[ -f ${f} ]] && printf '%s\0' "${f}"
	done
}

step "gofmt -l"
if ! unformatted="$(go_files | xargs -0 -r gofmt -l)"; then
	die "gofmt failed (see the errors above)"
fi
if [[ -n ${unformatted} ]]; then
	printf '%s\n' "${unformatted}"
	die "the files above are not gofmt-formatted; run: gofmt -w <file>"
fi

step "go vet ./..."
go vet ./...

step "staticcheck ./..."
"${staticcheck}" ./...

# Kubernetes support is behind -tags kubernetes (cmd/streamspace-realtime/kubernetes.go and its
# test): the command's tagged files are vetted and checked too.
step "go vet -tags kubernetes ./cmd/...; staticcheck -tags kubernetes ./cmd/..."
go vet -tags kubernetes ./cmd/...
"${staticcheck}" -tags kubernetes ./cmd/...

# The raw socket fast path is behind build tags (websocket/*_unix.go, *_other.go): the module,
# its tests included, must build for the systems without it too.
step "GOOS=windows go build ./... && go vet ./...; GOOS=darwin go build ./..."
GOOS=windows go build ./...
GOOS=windows go vet ./...
GOOS=darwin go build ./...
