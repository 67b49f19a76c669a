#!/bin/sh
# Wait until host:port accepts TCP connections, then run the command (if any).
# Usage: wait-for-it.sh host:port [--timeout=SECONDS] [-- command [args...]]
# Exits 1 if the port is not open before the timeout (default 30 s; 0 waits forever).
set -eu

usage() {
    echo "usage: $0 host:port [--timeout=SECONDS] [-- command [args...]]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
target=$1
shift
host=${target%:*}
port=${target##*:}
[ -n "$host" ] && [ -n "$port" ] && [ "$host" != "$target" ] || usage
timeout=30

while [ $# -gt 0 ]; do
    case $1 in
        --timeout=*) timeout=${1#--timeout=} ;;
        --) shift; break ;;
        *) usage ;;
    esac
    shift
done

is_open() {
    if command -v nc >/dev/null 2>&1; then
        nc -z "$host" "$port" >/dev/null 2>&1
    else
        python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()' \
            "$host" "$port" >/dev/null 2>&1
    fi
}

start=$(date +%s)
until is_open; do
    if [ "$timeout" -gt 0 ] && [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
        echo "wait-for-it: $host:$port not open after ${timeout}s" >&2
        exit 1
    fi
    sleep 1
done
echo "wait-for-it: $host:$port is open" >&2

[ $# -gt 0 ] || exit 0
exec "$@"
