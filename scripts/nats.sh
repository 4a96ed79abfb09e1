#!/usr/bin/env bash
# nats-server for the replication tests.
#   scripts/nats.sh install          installs nats-server from Debian's packages if it is missing,
#                                    and prints its path
#   scripts/nats.sh start PORT DIR   starts it on 127.0.0.1:PORT with JetStream, its store in DIR,
#                                    and prints "PID PORT" (stop it with `kill PID`). PORT 0: the
#                                    server picks a free port itself and reports it, so that no
#                                    other process can take the port between a choice and a bind
# The tests call `install` themselves and start and stop their own servers.
set -euo pipefail

find_server() {
    if [ -n "${NATS_SERVER:-}" ] && [ -x "${NATS_SERVER}" ]; then echo "${NATS_SERVER}"; return 0; fi
    command -v nats-server 2>/dev/null && return 0
    for p in /usr/sbin/nats-server /usr/bin/nats-server /usr/local/bin/nats-server; do
        if [ -x "$p" ]; then echo "$p"; return 0; fi
    done
    return 1
}

install_server() {
    if find_server >/dev/null; then return 0; fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
    export DEBIAN_FRONTEND=noninteractive
    # Try without refreshing the package lists first; refresh only if that fails.
    $sudo apt-get install -y -qq nats-server >/dev/null 2>&1 ||
        { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq nats-server >/dev/null; }
    find_server >/dev/null || { echo "nats-server could not be installed" >&2; exit 1; }
}

case "${1:-install}" in
    install)
        install_server
        find_server
        ;;
    start)
        port="${2:?usage: nats.sh start PORT DIR}"
        dir="${3:?usage: nats.sh start PORT DIR}"
        install_server
        mkdir -p "$dir"
        [ "$port" = 0 ] && port=-1
        "$(find_server)" -js -a 127.0.0.1 -p "$port" -sd "$dir" --ports_file_dir "$dir" \
            >"$dir/nats-server.log" 2>&1 &
        pid=$!
        # The server writes its ports file once it listens.
        for _ in $(seq 1 400); do
            if [ -s "$dir/nats-server_$pid.ports" ]; then
                bound="$(sed -n 's/.*nats:\/\/[^:]*:\([0-9][0-9]*\).*/\1/p' "$dir/nats-server_$pid.ports")"
                if [ -n "$bound" ]; then
                    echo "$pid $bound"
                    exit 0
                fi
            fi
            kill -0 "$pid" 2>/dev/null || { cat "$dir/nats-server.log" >&2; exit 1; }
            sleep 0.05
        done
        echo "nats-server did not report its port" >&2
        kill "$pid" 2>/dev/null || true
        exit 1
        ;;
    *)
        echo "usage: nats.sh install | start PORT DIR" >&2
        exit 2
        ;;
esac
