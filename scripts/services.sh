#!/usr/bin/env bash
# Start/stop the throwaway Postgres and Redis servers the test suite talks to.
#
#   scripts/services.sh start    install (apt, if missing) and start both servers; idempotent
#   scripts/services.sh stop     stop only the servers this script started (PID files)
#   scripts/services.sh status   say what answers on the ports
#   scripts/services.sh clean    stop, then delete the servers' data and .run/services
#   scripts/services.sh env      print `export ...` lines for the test suite:
#                                  eval "$(scripts/services.sh env)"
#
# Environment: PG_PORT (default 5439), REDIS_PORT (default 6390),
#              SERVICES_TIMEOUT (seconds to wait for readiness, default 30),
#              PG_FAST (1 = fsync/synchronous_commit/full_page_writes off, the default;
#                       0 = durable defaults, e.g. for benchmarks; applies when we start it).
#
# Works as root (CI: initdb/pg_ctl run as the `postgres` user via runuser) and as a normal user.
# Never uses systemd. State lives in .run/services/ inside the repository.
set -euo pipefail

PG_PORT="${PG_PORT:-5439}"
REDIS_PORT="${REDIS_PORT:-6390}"
SERVICES_TIMEOUT="${SERVICES_TIMEOUT:-30}"
PG_FAST="${PG_FAST:-1}"
HOST=127.0.0.1

REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
STATE="$REPO/.run/services"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
    elif command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
    fi
}

# Run a Postgres server binary as the right user: `postgres` when we are root
# (initdb/pg_ctl/postgres refuse to run as root), ourselves otherwise.
as_pg() {
    if is_root; then
        # cd /: the postgres user may not be allowed into the caller's working directory
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

ensure_installed() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    [ -n "$(pg_bindir)" ] || missing+=(postgresql)
    if is_root && ! id -u postgres >/dev/null 2>&1; then
        missing+=(postgresql)
    fi
    [ "${#missing[@]}" -eq 0 ] && return 0

    is_root || die "missing ${missing[*]}; install them (apt-get install postgresql redis-server) or run as root"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql redis-server redis-tools >/dev/null
    [ -n "$(pg_bindir)" ] || die "postgresql installed but no initdb found under /usr/lib/postgresql/*/bin"
    command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
}

# mkdir -p with mode 755 for every directory we create (CI may run with umask 077, and the
# postgres user has to traverse these).
mkdir_755() {
    local d="$1"
    [ -d "$d" ] && return 0
    mkdir_755 "$(dirname "$d")"
    mkdir "$d"
    chmod 755 "$d"
}

tail_log() {
    local f="$1"
    if [ -f "$f" ]; then
        printf '[services] --- last lines of %s ---\n' "$f" >&2
        tail -n 30 "$f" >&2 || true
        printf '[services] ---\n' >&2
    fi
}

# True if the process exists and is not a zombie (an unreaped child still answers kill -0).
pid_alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [ "$state" != Z ]
}

# ------------------------------------------------------------------------------------ Redis

redis_up() { redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

start_redis() {
    local pidfile="$STATE/redis-$REDIS_PORT.pid" logfile="$STATE/redis-$REDIS_PORT.log"
    if redis_up; then
        if pid_alive "$(cat "$pidfile" 2>/dev/null || true)"; then
            log "redis: already running on $HOST:$REDIS_PORT (started by this script)"
        else
            log "redis: reusing the server already answering on $HOST:$REDIS_PORT"
        fi
        return 0
    fi
    rm -f "$pidfile"
    local t0=$SECONDS
    redis-server --port "$REDIS_PORT" --bind "$HOST" --daemonize yes \
        --save "" --appendonly no --dir "$STATE" \
        --pidfile "$pidfile" --logfile "$logfile" \
        || { tail_log "$logfile"; die "redis-server failed to start"; }
    until redis_up; do
        if (( SECONDS - t0 > SERVICES_TIMEOUT )); then
            tail_log "$logfile"
            die "redis did not answer PING on $HOST:$REDIS_PORT within ${SERVICES_TIMEOUT}s"
        fi
        sleep 0.05
    done
    # the pid file is written just after daemonizing; wait briefly so `stop` can find it
    for _ in $(seq 1 40); do [ -s "$pidfile" ] && break; sleep 0.05; done
    log "redis: started on $HOST:$REDIS_PORT (pid $(cat "$pidfile" 2>/dev/null || echo '?'))"
}

stop_redis_pidfile() {
    local pidfile="$1" pid
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if pid_alive "$pid" && grep -q redis "/proc/$pid/comm" 2>/dev/null; then
        log "redis: stopping pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        local t0=$SECONDS
        while pid_alive "$pid"; do
            if (( SECONDS - t0 > SERVICES_TIMEOUT )); then
                log "redis: pid $pid did not exit; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.05
        done
    fi
    rm -f "$pidfile"
}

# ------------------------------------------------------------------------------- Postgres

pg_up() { "$PGBIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -U postgres -d postgres; }

# Choose where the data directory goes. Preferred: inside the repo (.run/services/pg-<port>).
# As root, the `postgres` user must be able to traverse every ancestor of that directory;
# a checkout under /root (mode 700) is not traversable, so fall back to /tmp.
pg_base_dir() {
    local recorded="$STATE/pg-$PG_PORT.datadir"
    if [ -s "$recorded" ] && [ -d "$(dirname "$(cat "$recorded")")" ]; then
        dirname "$(cat "$recorded")"
        return 0
    fi
    local base="$STATE/pg-$PG_PORT"
    if is_root; then
        mkdir_755 "$base"
        chown postgres: "$base"
        if ! runuser -u postgres -- test -w "$base" 2>/dev/null; then
            rmdir "$base" 2>/dev/null || true
            base="/tmp/workflow-engine-pg-$(id -u)/pg-$PG_PORT"
            log "postgres: user 'postgres' cannot reach $STATE; using $base instead"
            mkdir_755 "$(dirname "$base")"
            mkdir_755 "$base"
            chown postgres: "$base"
        fi
    else
        mkdir_755 "$base"
    fi
    echo "$base"
}

start_postgres() {
    local pidfile="$STATE/pg-$PG_PORT.pid"
    if pg_up; then
        if pid_alive "$(cat "$pidfile" 2>/dev/null || true)"; then
            log "postgres: already running on $HOST:$PG_PORT (started by this script)"
        else
            log "postgres: reusing the server already answering on $HOST:$PG_PORT"
        fi
        check_pg_login
        return 0
    fi

    local base data logfile
    base="$(pg_base_dir)"
    data="$base/data"
    logfile="$base/postgres.log"
    echo "$data" >"$STATE/pg-$PG_PORT.datadir"

    if [ ! -s "$data/PG_VERSION" ]; then
        log "postgres: initdb $data"
        rm -rf "$data"
        as_pg "$PGBIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
            --no-sync >"$base/initdb.log" 2>&1 \
            || { tail_log "$base/initdb.log"; die "initdb failed"; }
        # Loopback TCP only; no Unix socket (its path could exceed the 107-byte limit).
        cat >>"$data/postgresql.conf" <<EOF

# --- written by scripts/services.sh ---
listen_addresses = '$HOST'
unix_socket_directories = ''
max_connections = 200
EOF
    fi

    local opts="-p $PG_PORT"
    if [ "$PG_FAST" = 1 ]; then
        opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    local t0=$SECONDS
    if ! as_pg "$PGBIN/pg_ctl" -D "$data" -l "$logfile" -w -t "$SERVICES_TIMEOUT" -o "$opts" start \
        >"$base/pg_ctl.log" 2>&1; then
        tail_log "$base/pg_ctl.log"
        tail_log "$logfile"
        die "postgres failed to start on $HOST:$PG_PORT"
    fi
    until pg_up; do
        if (( SECONDS - t0 > SERVICES_TIMEOUT )); then
            tail_log "$logfile"
            die "postgres did not become ready on $HOST:$PG_PORT within ${SERVICES_TIMEOUT}s"
        fi
        sleep 0.05
    done
    head -n1 "$data/postmaster.pid" >"$pidfile"
    log "postgres: started on $HOST:$PG_PORT (pid $(cat "$pidfile"), data $data)"
    check_pg_login
}

# A server that answers pg_isready may still refuse us (someone else's cluster with password
# auth): fail now with a clear message rather than in every test.
check_pg_login() {
    local out
    if ! out="$("$PGBIN/psql" -X -q -t -A -h "$HOST" -p "$PG_PORT" -U postgres -d postgres \
        -w -c 'select 1' 2>&1)"; then
        die "postgres on $HOST:$PG_PORT does not accept user 'postgres' without a password: $out
  (use another port: PG_PORT=... scripts/services.sh start)"
    fi
}

stop_pg_pidfile() {
    local pidfile="$1" port pid data
    port="$(basename "$pidfile" .pid)"; port="${port#pg-}"
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    data="$(cat "$STATE/pg-$port.datadir" 2>/dev/null || true)"
    if pid_alive "$pid" && [ -n "$data" ] && [ -f "$data/postmaster.pid" ] \
        && [ "$(head -n1 "$data/postmaster.pid")" = "$pid" ]; then
        log "postgres: stopping pid $pid ($data)"
        as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w -t "$SERVICES_TIMEOUT" stop >/dev/null \
            || { log "postgres: pg_ctl stop failed; sending SIGQUIT"; kill -QUIT "$pid" 2>/dev/null || true; }
    fi
    rm -f "$pidfile"
}

# ------------------------------------------------------------------------------------ main

cmd_start() {
    ensure_installed
    PGBIN="$(pg_bindir)"
    mkdir_755 "$STATE"
    start_redis
    start_postgres
}

cmd_stop() {
    [ -d "$STATE" ] || { log "nothing to stop"; return 0; }
    PGBIN="$(pg_bindir)"
    local f found=0
    for f in "$STATE"/redis-*.pid; do [ -e "$f" ] && { found=1; stop_redis_pidfile "$f"; }; done
    for f in "$STATE"/pg-*.pid; do [ -e "$f" ] && { found=1; stop_pg_pidfile "$f"; }; done
    [ "$found" = 1 ] || log "nothing to stop (no server was started by this script)"
}

# Stop our servers, then delete their data (including a /tmp fallback data dir) and .run/services.
cmd_clean() {
    cmd_stop
    local f data
    for f in "$STATE"/pg-*.datadir; do
        [ -e "$f" ] || continue
        data="$(cat "$f")"
        if [ -n "$data" ] && [ ! -e "$data/postmaster.pid" ]; then
            rm -rf "$(dirname "$data")"
        fi
    done
    rm -rf "$STATE"
}

cmd_status() {
    PGBIN="$(pg_bindir)"
    local rc=0
    if [ -n "$PGBIN" ] && pg_up; then log "postgres: up on $HOST:$PG_PORT"; else log "postgres: down on $HOST:$PG_PORT"; rc=1; fi
    if command -v redis-cli >/dev/null 2>&1 && redis_up; then log "redis: up on $HOST:$REDIS_PORT"; else log "redis: down on $HOST:$REDIS_PORT"; rc=1; fi
    return "$rc"
}

cmd_env() {
    echo "export WORKFLOW_ENGINE_TEST_DATABASE_URL=postgresql+psycopg://postgres@$HOST:$PG_PORT/postgres"
    echo "export WORKFLOW_ENGINE_TEST_REDIS_URL=redis://$HOST:$REDIS_PORT/0"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    clean) cmd_clean ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 {start|stop|restart|status|env|clean}" >&2; exit 2 ;;
esac
