#!/usr/bin/env bash
# Ensure the services the test suite needs are up:
#
#   PostgreSQL at 127.0.0.1:5432, trust auth for user postgres, database "test"
#   Redis      at 127.0.0.1:6379, and the redis-server binary (fault tests start their own)
#   VNC        TigerVNC's Xvnc at 127.0.0.1:5951 (display :51, security None, RFB 3.8)
#
# Idempotent and quiet when everything already answers. Installs (apt-get) and
# starts local services only where missing. When STREAMSPACE_TEST_DATABASE_URL
# STREAMSPACE_TEST_REDIS_URL or STREAMSPACE_TEST_VNC_ADDR point somewhere other than the local default
# (127.0.0.1 / localhost / ::1 on the default port), that service is not
# managed here: the script only checks that it answers.
#
# Exits non-zero with a message on stderr when a service cannot be made ready.
#
# Tunables (environment):
#   STREAMSPACE_SERVICES_WAIT  seconds to wait for a service to come up (default 60)
set -euo pipefail

readonly DEFAULT_DB_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
readonly DEFAULT_REDIS_URL='redis://127.0.0.1:6379/0'
readonly DEFAULT_VNC_ADDR='127.0.0.1:5951'
readonly PG_DEFAULT_PORT=5432
readonly REDIS_DEFAULT_PORT=6379
readonly VNC_DEFAULT_PORT=5951
readonly VNC_DISPLAY=51
readonly PG_ADMIN_USER=postgres
readonly HBA_MARKER='# streamspace-realtime scripts/services.sh: trust local connections (test machines only)'
WAIT_SECS="${STREAMSPACE_SERVICES_WAIT:-60}"
[[ ${WAIT_SECS} =~ ^[0-9]+$ ]] || WAIT_SECS=60

DB_URL="${STREAMSPACE_TEST_DATABASE_URL:-$DEFAULT_DB_URL}"
REDIS_URL="${STREAMSPACE_TEST_REDIS_URL:-$DEFAULT_REDIS_URL}"
VNC_ADDR="${STREAMSPACE_TEST_VNC_ADDR:-$DEFAULT_VNC_ADDR}"

log() { printf 'services.sh: %s\n' "$*" >&2; }
die() { printf 'services.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers

# Run a command as root (directly, or through password-less sudo).
# Fd 9 (the lock, see main) is closed so daemons started here don't inherit it.
as_root() {
	if [[ ${EUID} -eq 0 ]]; then
		"$@" 9>&-
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo -n "$@" 9>&-
	else
		die "root privileges are needed to run: $* (re-run as root, or start the service yourself)"
	fi
}

APT_UPDATED=0
apt_install() {
	command -v apt-get >/dev/null 2>&1 ||
		die "cannot install $* : apt-get not found (install it manually, or point the STREAMSPACE_TEST_*_URL variables at a running instance)"
	local aptlog
	aptlog="$(mktemp)"
	if [[ ${APT_UPDATED} -eq 0 ]]; then
		log "apt-get update"
		if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"${aptlog}" 2>&1; then
			cat "${aptlog}" >&2
			rm -f "${aptlog}"
			die "apt-get update failed"
		fi
		APT_UPDATED=1
	fi
	log "apt-get install $*"
	if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"${aptlog}" 2>&1; then
		cat "${aptlog}" >&2
		rm -f "${aptlog}"
		die "apt-get install $* failed"
	fi
	rm -f "${aptlog}"
}

# tcp_open HOST PORT: true if a TCP connection can be opened (bash /dev/tcp).
tcp_open() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

is_local_host() {
	case "$1" in
	'' | 127.0.0.1 | localhost | ::1 | '[::1]') return 0 ;;
	*) return 1 ;;
	esac
}

# ---------------------------------------------------------------- PostgreSQL

PG_HOST='' PG_PORT='' PG_DB='' PG_USER=''

# Parse a postgres:// URL or a key=value DSN into PG_HOST/PG_PORT/PG_DB/PG_USER.
parse_pg_url() {
	local url="$1" rest authority query hostport userinfo kv
	PG_HOST='' PG_PORT='' PG_DB='' PG_USER=''
	case "${url}" in
	postgres://* | postgresql://*)
		rest="${url#*://}"
		authority="${rest%%[/?]*}"
		rest="${rest:${#authority}}"
		query=''
		[[ ${rest} == *\?* ]] && query="${rest#*\?}"
		rest="${rest%%\?*}"
		PG_DB="${rest#/}"
		hostport="${authority##*@}"
		if [[ ${authority} == *@* ]]; then
			userinfo="${authority%@*}"
			PG_USER="${userinfo%%:*}"
		fi
		if [[ ${hostport} == \[* ]]; then
			PG_HOST="${hostport#\[}"
			PG_HOST="${PG_HOST%%\]*}"
			[[ ${hostport} == *\]:* ]] && PG_PORT="${hostport##*\]:}"
		else
			PG_HOST="${hostport%%:*}"
			[[ ${hostport} == *:* ]] && PG_PORT="${hostport#*:}"
		fi
		# Query parameters may override the authority part.
		local -a parts=()
		[[ -n ${query} ]] && IFS='&' read -r -a parts <<<"${query}"
		for kv in "${parts[@]}"; do
			case "${kv}" in
			host=*) PG_HOST="${kv#host=}" ;;
			port=*) PG_PORT="${kv#port=}" ;;
			dbname=*) PG_DB="${kv#dbname=}" ;;
			user=*) PG_USER="${kv#user=}" ;;
			esac
		done
		;;
	*=*)
		local -a parts=()
		read -r -a parts <<<"${url}"
		for kv in "${parts[@]}"; do
			case "${kv}" in
			host=*) PG_HOST="${kv#host=}" ;;
			port=*) PG_PORT="${kv#port=}" ;;
			dbname=*) PG_DB="${kv#dbname=}" ;;
			user=*) PG_USER="${kv#user=}" ;;
			esac
		done
		;;
	*)
		die "STREAMSPACE_TEST_DATABASE_URL is neither a postgres:// URL nor a key=value DSN: ${url}"
		;;
	esac
	[[ -n ${PG_PORT} ]] || PG_PORT=${PG_DEFAULT_PORT}
	[[ -n ${PG_USER} ]] || PG_USER=${PG_ADMIN_USER}
	[[ -n ${PG_DB} ]] || PG_DB="${PG_USER}"
	[[ ${PG_PORT} =~ ^[0-9]+$ ]] || die "cannot parse a port out of STREAMSPACE_TEST_DATABASE_URL: ${url}"
}

# The address we talk to when the service is managed locally.
readonly PG_LOCAL_ADDR=127.0.0.1

pg_answers() { # HOST PORT
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h "$1" -p "$2" -t 3 >/dev/null 2>&1
	else
		tcp_open "$1" "$2"
	fi
}

pg_wait() { # HOST PORT
	local deadline=$((SECONDS + WAIT_SECS))
	until pg_answers "$1" "$2"; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

# psql as the admin user over TCP; never prompts for a password.
pg_psql() { # DB SQL
	PGCONNECT_TIMEOUT=5 psql -X -w -q -At -v ON_ERROR_STOP=1 \
		-h "${PG_LOCAL_ADDR}" -p "${PG_DEFAULT_PORT}" -U "${PG_ADMIN_USER}" -d "$1" -c "$2"
}

pg_server_installed() {
	compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# Cluster listening on the default port, as "VERSION NAME STATUS", from
# pg_lsclusters (postgresql-common). Empty if there is none.
pg_default_cluster() {
	command -v pg_lsclusters >/dev/null 2>&1 || return 0
	pg_lsclusters -h 2>/dev/null |
		awk -v port="${PG_DEFAULT_PORT}" '$3 == port && !found { print $1, $2, $4; found = 1 }' || true
}

# Prepend trust rules to the cluster's pg_hba.conf (once), then reload if running.
pg_trust_local() { # VERSION NAME
	local hba="/etc/postgresql/$1/$2/pg_hba.conf" tmp
	[[ -f ${hba} ]] || die "pg_hba.conf not found at ${hba}"
	if grep -qxF "${HBA_MARKER}" "${hba}"; then
		return 0
	fi
	log "configuring trust authentication for local connections in ${hba}"
	tmp="$(mktemp)"
	{
		printf '%s\n' "${HBA_MARKER}"
		printf '%-8s%-16s%-16s%-24s%s\n' \
			local all all '' trust \
			host all all 127.0.0.1/32 trust \
			host all all ::1/128 trust
		printf '\n'
		cat "${hba}"
	} >"${tmp}"
	as_root cp "${tmp}" "${hba}"
	rm -f "${tmp}"
	if [[ "$(pg_default_cluster | awk '{print $3}')" == online* ]]; then
		as_root pg_ctlcluster --skip-systemctl-redirect "$1" "$2" reload >/dev/null ||
			die "could not reload PostgreSQL cluster $1/$2 after editing ${hba}"
	fi
}

# Install (if needed) and start the local cluster on the default port.
pg_install_and_start() {
	local fresh=0 cluster ver name status out
	if ! pg_server_installed || ! command -v pg_ctlcluster >/dev/null 2>&1; then
		log "PostgreSQL server not installed; installing"
		apt_install postgresql
		fresh=1
		pg_server_installed || die "PostgreSQL server binaries missing after installing package postgresql"
	fi

	cluster="$(pg_default_cluster)"
	if [[ -z ${cluster} ]]; then
		if compgen -G '/etc/postgresql/*/*/postgresql.conf' >/dev/null; then
			log "existing PostgreSQL clusters:"
			pg_lsclusters >&2 || true
			die "no PostgreSQL cluster is configured on port ${PG_DEFAULT_PORT}; fix the clusters above or set STREAMSPACE_TEST_DATABASE_URL"
		fi
		ver="$(basename "$(dirname "$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1)")")")"
		log "creating PostgreSQL cluster ${ver}/main on port ${PG_DEFAULT_PORT}"
		as_root pg_createcluster --port "${PG_DEFAULT_PORT}" "${ver}" main >/dev/null ||
			die "pg_createcluster ${ver} main failed"
		fresh=1
		cluster="$(pg_default_cluster)"
		[[ -n ${cluster} ]] || die "PostgreSQL cluster ${ver}/main not visible in pg_lsclusters after creating it"
	fi
	read -r ver name status <<<"${cluster}"

	if [[ ${fresh} -eq 1 ]]; then
		pg_trust_local "${ver}" "${name}"
	fi

	if [[ ${status} != online* ]]; then
		log "starting PostgreSQL cluster ${ver}/${name}"
		if ! out="$(as_root pg_ctlcluster --skip-systemctl-redirect "${ver}" "${name}" start 2>&1)"; then
			printf '%s\n' "${out}" >&2
			tail -n 20 "/var/log/postgresql/postgresql-${ver}-${name}.log" >&2 2>/dev/null || true
			die "could not start PostgreSQL cluster ${ver}/${name}"
		fi
	fi

	if ! pg_wait "${PG_LOCAL_ADDR}" "${PG_DEFAULT_PORT}"; then
		tail -n 20 "/var/log/postgresql/postgresql-${ver}-${name}.log" >&2 2>/dev/null || true
		die "PostgreSQL cluster ${ver}/${name} is not accepting connections on ${PG_LOCAL_ADDR}:${PG_DEFAULT_PORT} after ${WAIT_SECS}s (check listen_addresses/port in /etc/postgresql/${ver}/${name}/postgresql.conf)"
	fi
}

# Make sure user postgres can log in without a password and the database exists.
pg_ensure_access_and_db() {
	local err cluster ver name status exists
	if ! command -v psql >/dev/null 2>&1; then
		# Only possible when the server answering isn't a local Debian install.
		log "warning: psql not found; cannot check trust auth or that database ${PG_DB} exists"
		return 0
	fi

	if ! err="$(pg_psql postgres 'SELECT 1' 2>&1 >/dev/null)"; then
		cluster="$(pg_default_cluster)"
		if [[ -z ${cluster} ]]; then
			die "cannot log in to PostgreSQL at ${PG_LOCAL_ADDR}:${PG_DEFAULT_PORT} as ${PG_ADMIN_USER} without a password, and no local cluster found to configure: ${err}"
		fi
		read -r ver name status <<<"${cluster}"
		pg_trust_local "${ver}" "${name}"
		err="$(pg_psql postgres 'SELECT 1' 2>&1 >/dev/null)" ||
			die "cannot log in to PostgreSQL at ${PG_LOCAL_ADDR}:${PG_DEFAULT_PORT} as ${PG_ADMIN_USER} without a password (trust auth): ${err}"
	fi

	exists="$(pg_psql postgres "SELECT 1 FROM pg_database WHERE datname = '${PG_DB//\'/\'\'}'")" ||
		die "could not query the database list"
	if [[ ${exists} != 1 ]]; then
		log "creating database ${PG_DB}"
		if ! err="$(pg_psql postgres "CREATE DATABASE \"${PG_DB//\"/\"\"}\"" 2>&1)"; then
			# Another run may have created it concurrently.
			[[ "$(pg_psql postgres "SELECT 1 FROM pg_database WHERE datname = '${PG_DB//\'/\'\'}'")" == 1 ]] ||
				die "could not create database ${PG_DB}: ${err}"
		fi
	fi
}

ensure_postgres() {
	parse_pg_url "${DB_URL}"

	if ! is_local_host "${PG_HOST}" || [[ ${PG_PORT} != "${PG_DEFAULT_PORT}" ]]; then
		# Not ours to manage: only check that it answers.
		pg_wait "${PG_HOST}" "${PG_PORT}" ||
			die "PostgreSQL at ${PG_HOST}:${PG_PORT} (from STREAMSPACE_TEST_DATABASE_URL) is not answering; this script only manages a local server on 127.0.0.1:${PG_DEFAULT_PORT}"
		return 0
	fi

	if ! pg_answers "${PG_LOCAL_ADDR}" "${PG_DEFAULT_PORT}"; then
		pg_install_and_start
	fi
	pg_ensure_access_and_db
}

# ---------------------------------------------------------------- Redis

REDIS_HOST='' REDIS_PORT='' REDIS_PASS='' REDIS_SCHEME=''

parse_redis_url() {
	local url="$1" rest authority userinfo
	case "${url}" in
	redis://* | rediss://*) ;;
	*) die "STREAMSPACE_TEST_REDIS_URL is not a redis:// or rediss:// URL: ${url}" ;;
	esac
	REDIS_SCHEME="${url%%://*}"
	rest="${url#*://}"
	authority="${rest%%[/?]*}"
	REDIS_PASS=''
	if [[ ${authority} == *@* ]]; then
		userinfo="${authority%@*}"
		[[ ${userinfo} == *:* ]] && REDIS_PASS="${userinfo#*:}"
	fi
	authority="${authority##*@}"
	REDIS_PORT=''
	if [[ ${authority} == \[* ]]; then
		REDIS_HOST="${authority#\[}"
		REDIS_HOST="${REDIS_HOST%%\]*}"
		[[ ${authority} == *\]:* ]] && REDIS_PORT="${authority##*\]:}"
	else
		REDIS_HOST="${authority%%:*}"
		[[ ${authority} == *:* ]] && REDIS_PORT="${authority#*:}"
	fi
	[[ -n ${REDIS_HOST} ]] || REDIS_HOST=127.0.0.1
	[[ -n ${REDIS_PORT} ]] || REDIS_PORT=${REDIS_DEFAULT_PORT}
	[[ ${REDIS_PORT} =~ ^[0-9]+$ ]] || die "cannot parse a port out of STREAMSPACE_TEST_REDIS_URL: ${url}"
}

# Print the server's reply to PING (empty if nothing answered).
redis_ping() { # HOST PORT
	if command -v redis-cli >/dev/null 2>&1; then
		if [[ -n ${REDIS_PASS} ]]; then
			REDISCLI_AUTH="${REDIS_PASS}" timeout 5 redis-cli -h "$1" -p "$2" ping 2>/dev/null || true
		else
			timeout 5 redis-cli -h "$1" -p "$2" ping 2>/dev/null || true
		fi
	else
		# No redis-cli: speak RESP over bash's /dev/tcp.
		# shellcheck disable=SC2016 # expanded by the inner bash
		timeout 5 bash -c '
			exec 3<>"/dev/tcp/$1/$2" || exit 0
			if [[ -n $3 ]]; then printf "AUTH %s\r\n" "$3" >&3; IFS= read -r -t 3 _ <&3 || true; fi
			printf "PING\r\n" >&3
			IFS= read -r -t 3 line <&3 || true
			line="${line%$'\''\r'\''}"
			printf "%s\n" "${line#+}"
		' _ "$1" "$2" "${REDIS_PASS}" 2>/dev/null || true
	fi
}

REDIS_LAST_REPLY=''
redis_answers() { # HOST PORT
	REDIS_LAST_REPLY="$(redis_ping "$1" "$2" | tr -d '\r' | sed -n 1p)" || true
	[[ ${REDIS_LAST_REPLY} == PONG ]]
}

redis_wait() { # HOST PORT
	local deadline=$((SECONDS + WAIT_SECS))
	until redis_answers "$1" "$2"; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

ensure_redis() {
	parse_redis_url "${REDIS_URL}"

	if [[ ${REDIS_SCHEME} != redis ]] || ! is_local_host "${REDIS_HOST}" || [[ ${REDIS_PORT} != "${REDIS_DEFAULT_PORT}" ]]; then
		if [[ ${REDIS_SCHEME} == rediss ]]; then
			tcp_open "${REDIS_HOST}" "${REDIS_PORT}" ||
				die "Redis at ${REDIS_HOST}:${REDIS_PORT} (from STREAMSPACE_TEST_REDIS_URL) is not reachable"
			return 0
		fi
		redis_wait "${REDIS_HOST}" "${REDIS_PORT}" ||
			die "Redis at ${REDIS_HOST}:${REDIS_PORT} (from STREAMSPACE_TEST_REDIS_URL) is not answering PING${REDIS_LAST_REPLY:+ (reply: ${REDIS_LAST_REPLY})}; this script only manages a local server on 127.0.0.1:${REDIS_DEFAULT_PORT}"
		return 0
	fi

	local addr=127.0.0.1 port=${REDIS_DEFAULT_PORT}
	redis_answers "${addr}" "${port}" && return 0
	if [[ -n ${REDIS_LAST_REPLY} ]]; then
		die "a server on ${addr}:${port} answered PING with '${REDIS_LAST_REPLY}' instead of PONG (password or protected mode?); fix it or set STREAMSPACE_TEST_REDIS_URL"
	fi

	if ! command -v redis-server >/dev/null 2>&1; then
		log "Redis not installed; installing"
		apt_install redis-server
		command -v redis-server >/dev/null 2>&1 || die "redis-server missing after installing package redis-server"
		# The package's init script may have started it already.
		redis_answers "${addr}" "${port}" && return 0
	fi

	if tcp_open "${addr}" "${port}"; then
		die "something is listening on ${addr}:${port} but does not answer Redis PING; free the port or set STREAMSPACE_TEST_REDIS_URL"
	fi

	log "starting redis-server on ${addr}:${port}"
	local logdir=/var/log/redis datadir=/var/lib/redis out
	as_root mkdir -p "${logdir}" "${datadir}"
	if ! out="$(as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "${port}" \
		--save '' --appendonly no --dir "${datadir}" --logfile "${logdir}/ci.log" 2>&1)"; then
		printf '%s\n' "${out}" >&2
		die "redis-server failed to start"
	fi
	if ! redis_wait "${addr}" "${port}"; then
		as_root tail -n 20 "${logdir}/ci.log" >&2 2>/dev/null || true
		die "redis-server started but is not answering PING on ${addr}:${port} after ${WAIT_SECS}s${REDIS_LAST_REPLY:+ (reply: ${REDIS_LAST_REPLY})}"
	fi
}

# Fault tests start private redis-server processes they can stop and restart, so the binary is
# needed even when the shared server is remote.
ensure_redis_binary() {
	command -v redis-server >/dev/null 2>&1 && return 0
	log "redis-server binary not installed (fault tests run private instances); installing"
	apt_install redis-server
	command -v redis-server >/dev/null 2>&1 || die "redis-server missing after installing package redis-server"
}

# ---------------------------------------------------------------- VNC (Xvnc)

# rfb_answers HOST PORT: true if the server there greets with an RFB ProtocolVersion.
rfb_answers() {
	local banner
	# shellcheck disable=SC2016 # expanded by the inner bash
	banner="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && head -c 12 <&3' _ "$1" "$2" 2>/dev/null)" || true
	[[ ${banner} == 'RFB 003.'* ]]
}

rfb_wait() { # HOST PORT
	local deadline=$((SECONDS + WAIT_SECS))
	until rfb_answers "$1" "$2"; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

ensure_vnc() {
	local host port
	host="${VNC_ADDR%:*}"
	port="${VNC_ADDR##*:}"
	host="${host#\[}"
	host="${host%\]}"
	[[ ${port} =~ ^[0-9]+$ ]] || die "cannot parse a port out of STREAMSPACE_TEST_VNC_ADDR: ${VNC_ADDR}"

	if ! is_local_host "${host}" || [[ ${port} != "${VNC_DEFAULT_PORT}" ]]; then
		# Not ours to manage: only check that it answers.
		rfb_wait "${host}" "${port}" ||
			die "no VNC server answers at ${host}:${port} (from STREAMSPACE_TEST_VNC_ADDR); this script only manages Xvnc on 127.0.0.1:${VNC_DEFAULT_PORT}"
		return 0
	fi

	local addr=127.0.0.1
	rfb_answers "${addr}" "${port}" && return 0
	if tcp_open "${addr}" "${port}"; then
		die "something is listening on ${addr}:${port} but does not speak RFB; free the port or set STREAMSPACE_TEST_VNC_ADDR"
	fi

	if ! command -v Xvnc >/dev/null 2>&1; then
		log "Xvnc not installed; installing"
		apt_install tigervnc-standalone-server
		command -v Xvnc >/dev/null 2>&1 || die "Xvnc missing after installing package tigervnc-standalone-server"
	fi

	# A lock left by an Xvnc that died would stop a new one taking the display.
	local lock="/tmp/.X${VNC_DISPLAY}-lock" pid
	if [[ -e ${lock} ]]; then
		pid="$(tr -dc '0-9' <"${lock}" 2>/dev/null || true)"
		if [[ -z ${pid} || ! -d /proc/${pid} ]]; then
			log "removing the stale lock of display :${VNC_DISPLAY}"
			rm -f "${lock}" "/tmp/.X11-unix/X${VNC_DISPLAY}" ||
				die "cannot remove the stale ${lock}; remove it as its owner"
		fi
	fi

	local logfile="${TMPDIR:-/tmp}/streamspace-realtime-xvnc.log"
	log "starting Xvnc :${VNC_DISPLAY} on ${addr}:${port} (log: ${logfile})"
	# Detached from this shell and its lock (fd 9), so it outlives the script. No blacklist:
	# tests end connections mid-handshake on purpose, and Xvnc would refuse 127.0.0.1 for a while.
	setsid nohup Xvnc ":${VNC_DISPLAY}" -rfbport "${port}" -localhost -SecurityTypes None -AlwaysShared \
		-UseBlacklist=0 -geometry 1024x768 -depth 24 </dev/null >"${logfile}" 2>&1 9>&- &
	disown
	if ! rfb_wait "${addr}" "${port}"; then
		tail -n 20 "${logfile}" >&2 2>/dev/null || true
		die "Xvnc started but is not answering with an RFB banner on ${addr}:${port} after ${WAIT_SECS}s"
	fi
}

# ---------------------------------------------------------------- main

main() {
	# Serialize concurrent runs (e.g. make -j) so they don't race to install/start.
	# Every command that may start a daemon goes through as_root, which closes fd 9.
	if command -v flock >/dev/null 2>&1; then
		if { exec 9>>"${TMPDIR:-/tmp}/streamspace-realtime-services.lock"; } 2>/dev/null; then
			flock -w 300 9 || die "timed out waiting for another services.sh run to finish"
		fi
	fi
	ensure_postgres
	ensure_redis
	ensure_redis_binary
	ensure_vnc
}

main "$@"
