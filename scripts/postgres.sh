#!/usr/bin/env bash
# PostgreSQL for the framework benchmarks (disintegrate-postgres), from Debian's packages.
#   scripts/postgres.sh install          installs PostgreSQL if it is missing; prints its bin dir
#   scripts/postgres.sh start PORT DIR   creates a cluster in DIR (if there is none) and starts it
#                                        on 127.0.0.1:PORT, with its defaults: fsync on,
#                                        synchronous_commit on (every commit flushed, as VarveDB's);
#                                        user postgres, trust on loopback; prints the URL
#   scripts/postgres.sh stop DIR         stops it
# The server runs as the `postgres` user when the script runs as root (PostgreSQL refuses root).
set -euo pipefail

find_bin() {
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    done
    return 1
}

install_server() {
    if find_bin >/dev/null; then return 0; fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq postgresql >/dev/null 2>&1 ||
        { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq postgresql >/dev/null; }
    find_bin >/dev/null || { echo "PostgreSQL could not be installed" >&2; exit 1; }
}

# Runs a command as the postgres user when we are root.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-install}" in
    install)
        install_server
        find_bin
        ;;
    start)
        port="${2:?usage: postgres.sh start PORT DIR}"
        dir="${3:?usage: postgres.sh start PORT DIR}"
        install_server
        bin="$(find_bin)"
        mkdir -p "$dir"
        if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
        if [ ! -f "$dir/data/PG_VERSION" ]; then
            as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >"$dir/initdb.log" 2>&1
        fi
        as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >/dev/null
        echo "postgres://postgres@127.0.0.1:$port/postgres"
        ;;
    stop)
        dir="${2:?usage: postgres.sh stop DIR}"
        bin="$(find_bin)"
        as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
        ;;
    *)
        echo "usage: postgres.sh install | start PORT DIR | stop DIR" >&2
        exit 2
        ;;
esac
