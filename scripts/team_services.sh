#!/usr/bin/env bash
# Team services on one host for a trial: PostgreSQL, an MLflow server (proxied artifacts), a Prefect server.
# Usage: scripts/team_services.sh start|stop|status [DIR]   (DIR default: ./team-services; all data lives there)
# Ports (override by env): COCONET_PG_PORT=55432, COCONET_MLFLOW_PORT=5000, COCONET_PREFECT_PORT=4200.
set -euo pipefail
cmd="${1:-}"
dir="$(realpath -m "${2:-team-services}")"
pg_port="${COCONET_PG_PORT:-55432}"
mlflow_port="${COCONET_MLFLOW_PORT:-5000}"
prefect_port="${COCONET_PREFECT_PORT:-4200}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "${pg_bin}/initdb" ] || { echo "error: PostgreSQL not installed (apt-get install -y postgresql)" >&2; exit 1; }

as_pg() {  # PostgreSQL refuses to run as root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    mkdir -p "$dir/pg" "$dir/pg-socket" "$dir/mlflow-artifacts" "$dir/logs"
    [ "$(id -u)" = 0 ] && chown postgres "$dir" "$dir/pg" "$dir/pg-socket" "$dir/logs"
    if [ ! -f "$dir/pg/PG_VERSION" ]; then
        as_pg "$pg_bin/initdb" -D "$dir/pg" -U coconet --auth=trust >/dev/null
    fi
    as_pg "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/logs/postgres.log" -w \
        -o "-p $pg_port -k $dir/pg-socket -c listen_addresses=127.0.0.1" start >/dev/null
    for db in mlflow prefect; do
        as_pg "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U coconet -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 \
            || as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U coconet "$db"
    done
    cd "$repo"
    setsid "$repo/.venv/bin/mlflow" server --host 127.0.0.1 --port "$mlflow_port" \
        --backend-store-uri "postgresql+psycopg://coconet@127.0.0.1:$pg_port/mlflow" \
        --artifacts-destination "$dir/mlflow-artifacts" \
        >"$dir/logs/mlflow.log" 2>&1 &
    echo $! >"$dir/mlflow.pid"
    PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://coconet@127.0.0.1:$pg_port/prefect" \
        PREFECT_HOME="$dir/prefect-home" \
        setsid "$repo/.venv/bin/prefect" server start --host 127.0.0.1 --port "$prefect_port" \
        >"$dir/logs/prefect.log" 2>&1 &
    echo $! >"$dir/prefect.pid"
    for url in "http://127.0.0.1:$mlflow_port/health" "http://127.0.0.1:$prefect_port/api/health"; do
        for _ in $(seq 120); do curl -fs "$url" >/dev/null 2>&1 && break; sleep 1; done
        curl -fs "$url" >/dev/null 2>&1 || { echo "error: $url not up; see $dir/logs" >&2; exit 1; }
    done
    echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port"
    echo "export PREFECT_API_URL=http://127.0.0.1:$prefect_port/api"
}

stop() {  # returns once the servers have ended (SIGTERM, then SIGKILL after 30 s)
    local groups=()
    for name in prefect mlflow; do
        if [ -f "$dir/$name.pid" ]; then
            groups+=("$(cat "$dir/$name.pid")")
            kill -- "-${groups[-1]}" 2>/dev/null || true
            rm -f "$dir/$name.pid"
        fi
    done
    for group in "${groups[@]}"; do
        for _ in $(seq 60); do kill -0 -- "-$group" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$group" 2>/dev/null || true
    done
    if [ -f "$dir/pg/postmaster.pid" ]; then as_pg "$pg_bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null; fi
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) as_pg "$pg_bin/pg_ctl" -D "$dir/pg" status || true ;;
    *) echo "error: usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
