#!/usr/bin/env bash
# Install pinned developer tools into $(go env GOPATH)/bin when missing (or
# when the installed version differs from the pin). Quiet when all is well.
#
#   staticcheck  honnef.co/go/tools/cmd/staticcheck
#   chromium     Debian's package, for the dashboard's browser tests (internal/browsertest);
#                skipped when STREAMSPACE_CHROMIUM names a browser that exists
#   novnc        Debian's package (/usr/share/novnc), the viewer the dashboard serves at /novnc/
#   websockify   Debian's package, the reference relay session streaming is measured against
#   socat        Debian's package, the plain TCP hop of bench vnc's two-hop floor
#
# Also checks that cgo has a C compiler, which `go test -race` needs, and
# installs gcc with apt-get when it is missing.
#
# Prints nothing on success unless something was installed.
set -euo pipefail

# staticcheck 2026.2.2 (module version v0.8.2): the newest release; its go.mod
# targets go 1.26.0, and it analyses Go 1.26 code (new(expr) etc.) correctly.
readonly STATICCHECK_VERSION=v0.8.2

log() { printf 'tools.sh: %s\n' "$*" >&2; }
die() { printf 'tools.sh: ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go not found in PATH"

gopath="$(go env GOPATH)"
gopath="${gopath%%:*}" # first entry if GOPATH is a list
[[ -n ${gopath} ]] || die "go env GOPATH is empty"
bindir="${gopath}/bin"
mkdir -p "${bindir}"

# install_tool NAME PACKAGE VERSION VERSION_REGEX: (re)install BIN unless
# `BIN -version` output matches VERSION_REGEX.
install_tool() {
	local name="$1" pkg="$2" version="$3" want="$4" bin have
	bin="${bindir}/${name}"
	if [[ -x ${bin} ]] && have="$("${bin}" -version 2>/dev/null)" && [[ ${have} =~ ${want} ]]; then
		return 0
	fi
	log "installing ${pkg}@${version} into ${bindir}"
	# GOBIN pins the destination; GOFLAGS=-mod=mod keeps a -mod=vendor
	# setting from leaking in. Running from / keeps the project's go.mod out of it.
	(cd / && GOBIN="${bindir}" GOFLAGS=-mod=mod go install "${pkg}@${version}") ||
		die "go install ${pkg}@${version} failed"
	have="$("${bin}" -version 2>&1)" || die "${bin} does not run after installing it: ${have}"
	[[ ${have} =~ ${want} ]] || die "${bin} reports '${have}', expected ${version}"
}

# `staticcheck -version` prints e.g. "staticcheck 2026.2.2 (0.8.2)".
install_tool staticcheck honnef.co/go/tools/cmd/staticcheck "${STATICCHECK_VERSION}" "\(v?${STATICCHECK_VERSION#v}\)"

# apt_install WHY PACKAGE...: install Debian packages as root, showing apt's output only when
# it fails.
apt_install() {
	local why="$1" aptlog
	shift
	command -v apt-get >/dev/null 2>&1 || die "${why}: install $* (no apt-get here)"
	[[ ${EUID} -eq 0 ]] || die "${why}: run 'apt-get install $*' as root"
	log "installing $* (${why})"
	aptlog="$(mktemp)"
	if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; } >"${aptlog}" 2>&1; then
		cat "${aptlog}" >&2
		rm -f "${aptlog}"
		die "apt-get install $* failed"
	fi
	rm -f "${aptlog}"
}

# go test -race requires cgo, hence a C compiler.
if [[ "$(go env CGO_ENABLED)" != 1 ]] || ! command -v "$(go env CC | awk '{print $1}')" >/dev/null 2>&1; then
	if command -v gcc >/dev/null 2>&1; then
		log "warning: go test -race needs cgo, but CGO_ENABLED=$(go env CGO_ENABLED) CC=$(go env CC); set CGO_ENABLED=1 CC=gcc"
	else
		apt_install "go test -race needs a C compiler" gcc libc6-dev
	fi
fi

# The dashboard's end-to-end tests drive a real headless Chromium (chromedp). Debian's package
# is the one this project is tested with; test tools' own browser downloads are not used.
chromium="${STREAMSPACE_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x ${chromium} ]]; then
	[[ -z ${STREAMSPACE_CHROMIUM:-} ]] || die "STREAMSPACE_CHROMIUM=${STREAMSPACE_CHROMIUM} is not an executable"
	apt_install "the dashboard's browser tests need Chromium (or set STREAMSPACE_CHROMIUM)" chromium fonts-dejavu-core
	"${chromium}" --version >/dev/null 2>&1 || die "${chromium} does not run after installing it"
fi

# Session streaming: the dashboard's viewer is noVNC, served from Debian's /usr/share/novnc by
# default; websockify is the relay the viewer socket is compared with, and socat the plain TCP
# hop put before it for the two-hop floor (bench vnc --hop).
missing=()
[[ -f /usr/share/novnc/core/rfb.js ]] || missing+=(novnc)
command -v websockify >/dev/null 2>&1 || missing+=(websockify)
command -v socat >/dev/null 2>&1 || missing+=(socat)
if ((${#missing[@]} > 0)); then
	apt_install "the dashboard's viewer and the streaming tests need noVNC, websockify and socat" "${missing[@]}"
	[[ -f /usr/share/novnc/core/rfb.js ]] || die "novnc installed but /usr/share/novnc/core/rfb.js is missing"
fi
