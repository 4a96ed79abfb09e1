#!/usr/bin/env bash
# nats-server for the replication tests.
#   scripts/nats.sh install          installs nats-server from Debian's packages if it is missing,
#                                    and prints its path
#   scripts/nats.sh start PORT DIR   starts it on 127.0.0.1:PORT with JetStream, its store in DIR,
#                                    and prints its pid (stop it with `kill PID`)
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
        "$(find_server)" -js -a 127.0.0.1 -p "$port" -sd "$dir" >"$dir/nats-server.log" 2>&1 &
        echo $!
        ;;
    *)
        echo "usage: nats.sh install | start PORT DIR" >&2
        exit 2
        ;;
esac
