#!/bin/sh
# Wait until host:port accepts TCP connections, then run the command (if any).
# The interface of the widely used wait-for-it.sh, so compose files written for it work unchanged:
#
#   wait-for-it.sh host:port [-s] [-t SECONDS] [-q] [-- command [args...]]
#   wait-for-it.sh -h HOST -p PORT [...]     (also --host=HOST --port=PORT --timeout=SECONDS --strict --quiet)
#
# -t/--timeout: seconds to wait (default 15; 0 waits forever). After a timeout the command still runs, unless
# -s/--strict is given; the exit status is then 124, as it is without a command. -q/--quiet: no messages.
set -eu

usage() {
    cat >&2 <<EOF
usage: $0 host:port [-s] [-t timeout] [-q] [-- command args]
    -h HOST | --host=HOST       host or IP under test
    -p PORT | --port=PORT       TCP port under test (or host:port as the first argument)
    -s | --strict               only run the command if the port opened
    -q | --quiet                do not print any status messages
    -t TIMEOUT | --timeout=TIMEOUT
                                timeout in seconds, zero for no timeout (default 15)
    -- COMMAND ARGS             command to run once the port is open
EOF
    exit 2
}

say() {
    [ "$quiet" -eq 1 ] || echo "wait-for-it: $*" >&2
}

host=""
port=""
timeout=15
strict=0
quiet=0

while [ $# -gt 0 ]; do
    case $1 in
        -h) [ $# -ge 2 ] || usage; host=$2; shift ;;
        --host=*) host=${1#--host=} ;;
        -p) [ $# -ge 2 ] || usage; port=$2; shift ;;
        --port=*) port=${1#--port=} ;;
        -t) [ $# -ge 2 ] || usage; timeout=$2; shift ;;
        --timeout=*) timeout=${1#--timeout=} ;;
        -s | --strict) strict=1 ;;
        -q | --quiet) quiet=1 ;;
        --help) usage ;;
        --) shift; break ;;
        *:*) host=${1%:*}; port=${1##*:} ;;
        *) usage ;;
    esac
    shift
done

[ -n "$host" ] && [ -n "$port" ] || usage
case $port$timeout in *[!0-9]*) usage ;; esac

is_open() {
    if command -v nc >/dev/null 2>&1; then
        nc -z "$host" "$port" >/dev/null 2>&1
    else
        python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()' \
            "$host" "$port" >/dev/null 2>&1
    fi
}

if [ "$timeout" -gt 0 ]; then
    say "waiting $timeout seconds for $host:$port"
else
    say "waiting for $host:$port without a timeout"
fi
start=$(date +%s)
result=0
until is_open; do
    if [ "$timeout" -gt 0 ] && [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
        say "timeout occurred after waiting $timeout seconds for $host:$port"
        result=124
        break
    fi
    sleep 1
done
[ "$result" -ne 0 ] || say "$host:$port is available after $(( $(date +%s) - start )) seconds"

if [ $# -gt 0 ]; then
    if [ "$result" -ne 0 ] && [ "$strict" -eq 1 ]; then
        say "strict mode, refusing to execute subprocess"
        exit "$result"
    fi
    exec "$@"
fi
exit "$result"
