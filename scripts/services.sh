#!/usr/bin/env bash
# Private PostgreSQL 15 cluster + private Redis server for tests and benchmarks.
#
# Usage:
#   scripts/services.sh start         [DIR]   start both (idempotent), write DIR/env.sh, print its path
#   scripts/services.sh stop          [DIR]   stop both (no error if not running)
#   scripts/services.sh restart-pg    [DIR]   stop + start PostgreSQL, same port, same data
#   scripts/services.sh restart-redis [DIR]   stop + start Redis, same port
#   scripts/services.sh stop-redis    [DIR]   stop Redis only (a broker outage, for tests)
#   scripts/services.sh start-redis   [DIR]   start it again, same port
#   scripts/services.sh status        [DIR]   report; exit 0 only if both are running
#
# DIR defaults to <repo root>/var/services. PG_MAX_PREPARED_TRANSACTIONS (default 64; 0 turns
# two-phase commit off, for the test that shows the 400) is written on every start. Load the environment with:
#   . "$(scripts/services.sh start)"
#
# Layout of DIR:
#   pg/ pg_sock/ pg.log      PostgreSQL data dir, unix socket dir, server log
#                            (moved under /tmp/saga-pg.XXXXXX if the postgres
#                            user cannot traverse DIR; recorded in env.sh)
#   redis.pid redis.log      Redis pidfile and log (no persistence at all)
#   services.state           ports and paths, reused by restart-* and start
#   env.sh                   export lines for the project
#
# All progress messages go to stderr; stdout of `start` is only the env.sh path.

set -Eeuo pipefail
umask 022

PG_VERSION=15
PGBIN="/usr/lib/postgresql/${PG_VERSION}/bin"
PG_USER=postgres
APP_ROLE=saga
APP_PASSWORD=saga
DATABASES=(saga_default saga_orders saga_customers saga_sagas saga_eventlog saga_readmodels)
# Ports are picked below the Linux ephemeral range (32768-60999) so that a
# client's outgoing connection can never squat on our port between a stop and
# a start of restart-pg / restart-redis.
PORT_MIN=20000
PORT_MAX=32000

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; printf "[services] ERROR: unexpected failure (exit %s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2; exit "$rc"' ERR

usage() {
    sed -n '3,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ $(id -u) -eq 0 ]] || die "must run as root (uses apt-get and runuser -u $PG_USER)"

# ---------------------------------------------------------------- helpers --

# Run a command as the postgres user, from a directory it can read.
# fd 9 (our flock) is closed so daemons started here don't inherit the lock.
as_pg() {
    if command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u "$PG_USER" -- "$@" 9>&-)
    else
        (cd / && su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")" 9>&-)
    fi
}

APT_UPDATED=0
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        apt-get update -q >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    apt-get install -y -q "$@" >&2 || die "apt-get install $* failed"
}

ensure_packages() {
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
    fi
    command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after install"
    command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
    if [[ ! -x "$PGBIN/initdb" ]]; then
        apt_install "postgresql-${PG_VERSION}" || true
        [[ -x "$PGBIN/initdb" ]] || apt_install postgresql
    fi
    [[ -x "$PGBIN/initdb" ]] || die "$PGBIN/initdb not found after installing postgresql-${PG_VERSION}"
    id "$PG_USER" >/dev/null 2>&1 || die "user '$PG_USER' does not exist (should be created by the postgresql package)"
}

# 0 if nothing listens on 127.0.0.1:$1 and it can be bound.
port_is_free() {
    local p=$1
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        return 1
    fi
    if command -v ss >/dev/null 2>&1 && ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
        return 1
    fi
    return 0
}

pick_port() {
    local exclude=${1:-} p i
    for ((i = 0; i < 200; i++)); do
        p=$((PORT_MIN + (RANDOM * 32768 + RANDOM) % (PORT_MAX - PORT_MIN)))
        [[ $p == "$exclude" ]] && continue
        if port_is_free "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "could not find a free TCP port in $PORT_MIN-$PORT_MAX"
}

# First directory on the path to $1 that the postgres user cannot traverse.
first_blocking_dir() {
    local d="" part
    local IFS=/
    for part in $1; do
        [[ -z $part ]] && continue
        d="$d/$part"
        if ! as_pg test -x "$d" 2>/dev/null; then
            echo "$d"
            return 0
        fi
    done
    echo "$1"
}

sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# ------------------------------------------------------------------ state --

init_dir() {
    DIR=$(realpath -m "$1")
    STATE="$DIR/services.state"
    ENV_FILE="$DIR/env.sh"
    REDIS_PID="$DIR/redis.pid"
    REDIS_LOG="$DIR/redis.log"
    PG_PORT=""
    REDIS_PORT=""
    PG_DATA="$DIR/pg"
    PG_SOCK="$DIR/pg_sock"
    PG_LOG="$DIR/pg.log"
    PG_RELOCATED=0
    if [[ -f $STATE ]]; then
        # shellcheck disable=SC1090
        . "$STATE"
    fi
}

take_lock() {
    if command -v flock >/dev/null 2>&1 && [[ -d $DIR ]]; then
        exec 9>"$DIR/.services.lock"
        flock -w 120 9 || die "another services.sh is working on $DIR (lock $DIR/.services.lock)"
    fi
}

save_state() {
    local tmp="$STATE.tmp.$$"
    {
        echo "# written by scripts/services.sh; do not edit while services are running"
        printf 'PG_PORT=%q\n' "$PG_PORT"
        printf 'REDIS_PORT=%q\n' "$REDIS_PORT"
        printf 'PG_DATA=%q\n' "$PG_DATA"
        printf 'PG_SOCK=%q\n' "$PG_SOCK"
        printf 'PG_LOG=%q\n' "$PG_LOG"
        printf 'PG_RELOCATED=%q\n' "$PG_RELOCATED"
    } >"$tmp"
    mv -f "$tmp" "$STATE"
}

write_env() {
    local tmp="$ENV_FILE.tmp.$$" base="postgres://${APP_ROLE}:${APP_PASSWORD}@127.0.0.1:${PG_PORT}"
    {
        echo "# generated by scripts/services.sh start $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "export DATABASE_URL=$base/saga_default"
        echo "export ORDERS_DATABASE_URL=$base/saga_orders"
        echo "export CUSTOMERS_DATABASE_URL=$base/saga_customers"
        echo "export SAGAS_DATABASE_URL=$base/saga_sagas"
        echo "export EVENTLOG_DATABASE_URL=$base/saga_eventlog"
        echo "export READMODELS_DATABASE_URL=$base/saga_readmodels"
        echo "export CELERY_BROKER_URL=redis://127.0.0.1:${REDIS_PORT}/0"
        echo "export CACHE_URL=redis://127.0.0.1:${REDIS_PORT}/1"
        echo "export SERVICES_PG_PORT=${PG_PORT}"
        echo "export SERVICES_REDIS_PORT=${REDIS_PORT}"
        printf 'export SERVICES_DIR=%q\n' "$DIR"
        if [[ $PG_RELOCATED == 1 ]]; then
            echo "# NOTE: the postgres user cannot reach $DIR (a parent dir is not traversable), so the cluster lives under /tmp"
        fi
        printf 'export SERVICES_PG_DATA=%q\n' "$PG_DATA"
        printf 'export SERVICES_PG_SOCKET_DIR=%q\n' "$PG_SOCK"
        printf 'export SERVICES_PG_LOG=%q\n' "$PG_LOG"
    } >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$ENV_FILE"
}

# Create DIR and decide where the PostgreSQL files live (first start only).
prepare_layout() {
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    take_lock
    if [[ -f $STATE ]]; then
        . "$STATE"   # re-read under the lock
    fi
    if [[ ! -f $STATE || ! -d $PG_DATA ]]; then
        if as_pg test -x "$DIR"; then
            PG_DATA="$DIR/pg"; PG_SOCK="$DIR/pg_sock"; PG_LOG="$DIR/pg.log"; PG_RELOCATED=0
        else
            local blocker base
            blocker=$(first_blocking_dir "$DIR")
            base=$(mktemp -d /tmp/saga-pg.XXXXXX)
            chmod 755 "$base"
            log "WARNING: user $PG_USER cannot traverse $blocker (not changing its permissions);"
            log "         placing the PostgreSQL cluster under $base instead (see SERVICES_PG_DATA in env.sh)"
            PG_DATA="$base/pg"; PG_SOCK="$base/pg_sock"; PG_LOG="$base/pg.log"; PG_RELOCATED=1
        fi
    fi
    # unix socket path (…/.s.PGSQL.NNNNN) must fit in sun_path (107 bytes)
    if (( ${#PG_SOCK} + 18 > 107 )); then
        local s
        s=$(mktemp -d /tmp/saga-pgsock.XXXXXX)
        log "WARNING: $PG_SOCK is too long for a unix socket path; using $s"
        PG_SOCK=$s
    fi
    mkdir -p "$PG_DATA" "$PG_SOCK"
    chown "$PG_USER:" "$PG_DATA" "$PG_SOCK"
    chmod 700 "$PG_DATA"
    chmod 755 "$PG_SOCK"
    touch "$PG_LOG"
    chown "$PG_USER:" "$PG_LOG"
    chmod 644 "$PG_LOG"
    as_pg test -w "$PG_DATA" || die "user $PG_USER cannot write $PG_DATA (blocked at $(first_blocking_dir "$PG_DATA"))"
}

# ------------------------------------------------------------- postgresql --

pg_running() {
    [[ -f "$PG_DATA/PG_VERSION" && -f "$PG_DATA/postmaster.pid" ]] || return 1
    local pid
    pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null | tr -dc '0-9')
    # a crashed postmaster may linger as a zombie, which pg_ctl counts as running
    [[ -n $pid ]] && pid_alive "$pid" || return 1
    as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_fail() {
    log "$1"
    if [[ -f $PG_LOG ]]; then
        log "---- last 30 lines of $PG_LOG ----"
        tail -n 30 "$PG_LOG" >&2 || true
        log "----"
    fi
    exit 1
}

pg_initdb_if_needed() {
    if [[ -f "$PG_DATA/PG_VERSION" ]]; then
        local v
        v=$(cat "$PG_DATA/PG_VERSION")
        [[ $v == "$PG_VERSION" ]] || die "$PG_DATA holds a PostgreSQL $v cluster, expected $PG_VERSION"
        return 0
    fi
    if [[ -n $(ls -A "$PG_DATA") ]]; then
        die "$PG_DATA is not empty but has no PG_VERSION; refusing to initdb over it"
    fi
    log "initdb $PG_DATA (superuser postgres, auth=trust, UTF8)"
    as_pg "$PGBIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
        || { tail -n 30 "$DIR/initdb.log" >&2; die "initdb failed (full output in $DIR/initdb.log)"; }
    rm -f "$DIR/initdb.log"
    printf "\n# added by scripts/services.sh\ninclude_if_exists = 'saga_services.conf'\n" >>"$PG_DATA/postgresql.conf"
}

pg_write_conf() {
    local f="$PG_DATA/saga_services.conf"
    {
        echo "# generated by scripts/services.sh on every start; edit the script, not this file"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PG_PORT"
        echo "unix_socket_directories = $(sql_quote "$PG_SOCK")"
        echo "max_prepared_transactions = ${PG_MAX_PREPARED_TRANSACTIONS:-64}"
        echo "max_connections = 300"
        echo "shared_buffers = 128MB"
        echo "fsync = on"
        echo "synchronous_commit = on"
        echo "full_page_writes = on"
        # Statement counts per database for the benchmarks (bench/sagas.py); contrib ships in
        # Debian's postgresql-15 package. Costs a few MB of shared memory, nothing until a
        # database runs CREATE EXTENSION pg_stat_statements to read it.
        if [[ -f "$(dirname "$PGBIN")/lib/pg_stat_statements.so" ]]; then
            echo "shared_preload_libraries = 'pg_stat_statements'"
            # PostgreSQL 15 keeps one entry per distinct utility statement text (every
            # PREPARE TRANSACTION / COMMIT PREPARED gid, every savepoint name): room for a run.
            echo "pg_stat_statements.max = 20000"
        fi
    } >"$f"
    chown "$PG_USER:" "$f"
    chmod 600 "$f"
}

pg_start() {
    # $1 = "new-port-ok" allows picking another port if the saved one is taken
    if [[ -z $PG_PORT ]]; then
        PG_PORT=$(pick_port "$REDIS_PORT")
    elif ! port_is_free "$PG_PORT"; then
        if [[ ${1:-} == new-port-ok ]]; then
            local old=$PG_PORT
            PG_PORT=$(pick_port "$REDIS_PORT")
            log "port $old is taken by another process; PostgreSQL moves to port $PG_PORT"
        else
            die "cannot restart PostgreSQL: its port $PG_PORT is now in use by another process"
        fi
    fi
    pg_write_conf
    rm -f "$PG_SOCK"/.s.PGSQL.* 2>/dev/null || true
    log "starting PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT (data $PG_DATA, log $PG_LOG)"
    as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 90 start >&2 \
        || pg_fail "PostgreSQL failed to start"
    as_pg "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 30 \
        || pg_fail "PostgreSQL started but is not accepting TCP connections on 127.0.0.1:$PG_PORT"
}

pg_psql_admin() {
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres "$@"
}

pg_provision() {
    log "ensuring role '$APP_ROLE' (LOGIN CREATEDB) and databases: ${DATABASES[*]}"
    local dblist
    dblist=$(printf "'%s'," "${DATABASES[@]}")
    dblist=${dblist%,}
    pg_psql_admin >&2 <<SQL || pg_fail "creating role/databases failed"
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${APP_ROLE}') THEN
        CREATE ROLE ${APP_ROLE} LOGIN CREATEDB PASSWORD '${APP_PASSWORD}';
    ELSE
        ALTER ROLE ${APP_ROLE} LOGIN CREATEDB PASSWORD '${APP_PASSWORD}';
    END IF;
END
\$\$;
SELECT format('CREATE DATABASE %I OWNER ${APP_ROLE} ENCODING ''UTF8'' TEMPLATE template0', d)
  FROM unnest(ARRAY[${dblist}]) AS d
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d)
\gexec
SQL
}

pg_stop() {
    if pg_running; then
        log "stopping PostgreSQL (pg_ctl stop -m fast, port ${PG_PORT:-?})"
        as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >&2 \
            || { log "fast shutdown timed out; trying immediate"; \
                 as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >&2; } \
            || pg_fail "could not stop PostgreSQL"
    else
        log "PostgreSQL is not running${PG_DATA:+ (data $PG_DATA)}"
        # stale leftovers from a crash
        if [[ -f "$PG_DATA/postmaster.pid" ]]; then
            log "removing stale $PG_DATA/postmaster.pid"
            rm -f "$PG_DATA/postmaster.pid"
        fi
    fi
    if [[ -d $PG_SOCK ]]; then
        rm -f "$PG_SOCK"/.s.PGSQL.* 2>/dev/null || true
    fi
}

# ------------------------------------------------------------------ redis --

# 0 if pid $1 exists and is not a zombie. (PID 1 in this container does not
# always reap orphans, so a dead daemon can linger as <defunct>; kill -0 alone
# would call that alive.)
pid_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ -n $stat && ${stat:0:1} != Z && ${stat:0:1} != X ]]
}

# Prints the pid of our redis-server (from DIR/redis.pid) if it is alive.
redis_pid() {
    local pid
    [[ -f $REDIS_PID ]] || return 1
    pid=$(tr -dc '0-9' <"$REDIS_PID")
    [[ -n $pid ]] || return 1
    pid_alive "$pid" || return 1
    grep -q '^redis' "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

redis_running() { redis_pid >/dev/null; }

redis_start() {
    if [[ -z $REDIS_PORT ]]; then
        REDIS_PORT=$(pick_port "$PG_PORT")
    elif ! port_is_free "$REDIS_PORT"; then
        if [[ ${1:-} == new-port-ok ]]; then
            local old=$REDIS_PORT
            REDIS_PORT=$(pick_port "$PG_PORT")
            log "port $old is taken by another process; Redis moves to port $REDIS_PORT"
        else
            die "cannot restart Redis: its port $REDIS_PORT is now in use by another process"
        fi
    fi
    rm -f "$REDIS_PID"
    log "starting redis-server on 127.0.0.1:$REDIS_PORT (no persistence, log $REDIS_LOG)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --dir "$DIR" >&2 9>&- \
        || { tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true; die "redis-server failed to start"; }
    local i
    for ((i = 0; i < 100; i++)); do
        if [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then
            log "redis-server answers PONG (pid $(redis_pid || echo '?'))"
            return 0
        fi
        sleep 0.1
    done
    log "---- last 20 lines of $REDIS_LOG ----"
    tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true
    die "redis-server on port $REDIS_PORT did not answer PING within 10s"
}

redis_stop() {
    local pid i
    if ! pid=$(redis_pid); then
        log "Redis is not running"
        rm -f "$REDIS_PID"
        return 0
    fi
    log "stopping redis-server (pid $pid, port ${REDIS_PORT:-?})"
    if [[ -n $REDIS_PORT ]]; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    fi
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || break
        [[ $i -eq 30 ]] && kill -TERM "$pid" 2>/dev/null || true
        sleep 0.1
    done
    if pid_alive "$pid"; then
        log "redis-server (pid $pid) ignored SHUTDOWN and SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.3
    fi
    if pid_alive "$pid"; then die "could not stop redis-server pid $pid"; fi
    rm -f "$REDIS_PID"
}

# --------------------------------------------------------------- commands --

need_state() {
    [[ -f $STATE ]] || die "no services state in $DIR (run: $0 start $DIR)"
    take_lock
    . "$STATE"
}

cmd_start() {
    ensure_packages
    prepare_layout
    if pg_running && redis_running; then
        log "already running from $DIR (PostgreSQL :$PG_PORT, Redis :$REDIS_PORT); rewriting env file"
    else
        if pg_running; then
            log "PostgreSQL already running on port $PG_PORT"
        else
            pg_initdb_if_needed
            pg_start new-port-ok
            pg_provision
        fi
        save_state
        if redis_running; then
            log "Redis already running on port $REDIS_PORT"
        else
            redis_start new-port-ok
        fi
        save_state
    fi
    write_env
    log "environment written to $ENV_FILE"
    echo "$ENV_FILE"
}

cmd_stop() {
    if [[ ! -d $DIR ]]; then
        log "$DIR does not exist; nothing to stop"
        return 0
    fi
    take_lock
    [[ -f $STATE ]] && . "$STATE"
    pg_stop
    redis_stop
    log "stopped (data kept in $DIR)"
}

cmd_restart_pg() {
    command -v redis-server >/dev/null && [[ -x $PGBIN/pg_ctl ]] || die "packages missing; run start first"
    need_state
    pg_stop
    pg_start
    log "PostgreSQL restarted on port $PG_PORT"
}

cmd_restart_redis() {
    command -v redis-server >/dev/null || die "redis-server missing; run start first"
    need_state
    redis_stop
    redis_start
    log "Redis restarted on port $REDIS_PORT"
}

cmd_stop_redis() {
    need_state
    redis_stop
    log "Redis stopped (port $REDIS_PORT)"
}

cmd_start_redis() {
    command -v redis-server >/dev/null || die "redis-server missing; run start first"
    need_state
    redis_start
    log "Redis started on port $REDIS_PORT"
}

cmd_status() {
    local rc=0
    if pg_running; then
        log "PostgreSQL: running on 127.0.0.1:$PG_PORT (data $PG_DATA)"
    else
        log "PostgreSQL: stopped"; rc=1
    fi
    if redis_running; then
        log "Redis: running on 127.0.0.1:$REDIS_PORT (pid $(redis_pid))"
    else
        log "Redis: stopped"; rc=1
    fi
    exit "$rc"
}

[[ $# -ge 1 && $# -le 2 ]] || usage
CMD=$1
init_dir "${2:-$REPO_ROOT/var/services}"

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart-pg) cmd_restart_pg ;;
    restart-redis) cmd_restart_redis ;;
    stop-redis) cmd_stop_redis ;;
    start-redis) cmd_start_redis ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *) log "unknown command: $CMD"; usage ;;
esac
