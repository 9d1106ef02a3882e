#!/usr/bin/env bash
# Drives the servers with the load generator (benches/load) for a few seconds per scenario.
# Not a benchmark (figures are printed, never judged): the load generator checks every echo byte
# for byte and every room message for loss, duplication and order, and fails on any of them,
# under concurrency the end-to-end tests do not reach (hundreds of connections, pipelining,
# reconnect churn, a room of thousands of members).
#
#   tests/load.sh [echo] [fanout]          (no argument: both)
#
#   echo     `duplex echo --threads 2`: round trips (binary, text pipelined, large) and
#            handshake churn
#   fanout   `duplex serve --threads 2`: LOAD_FANOUT_MEMBERS members (default 10000) join one
#            room, one publisher sends LOAD_FANOUT_MESSAGES messages (default 20) one at a time;
#            prints the fan-out time per broadcast (to the last and the median member)
#
# LOAD_TIMEOUT bounds each scenario (seconds, default 60).
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

LOAD_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/duplex-load"
LOAD_TIMEOUT=${LOAD_TIMEOUT:-60}
FANOUT_MEMBERS=${LOAD_FANOUT_MEMBERS:-10000}
FANOUT_MESSAGES=${LOAD_FANOUT_MESSAGES:-20}
[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
[[ -x $LOAD_BIN ]] || die "$LOAD_BIN not built (cargo build --release -p duplex-load)"

logdir="$REPO_ROOT/reports/logs"
mkdir -p "$logdir"

# scenario NAME SERVER_PID SERVER_LOG URL ARGS... : one bounded duplex-load run; fails if it
# fails or the server died meanwhile.
scenario() {
    local name=$1 pid=$2 slog=$3 url=$4 rc=0
    shift 4
    log "$name: duplex-load --url $url $*"
    timeout --kill-after=5 "$LOAD_TIMEOUT" "$LOAD_BIN" --url "$url" --server-pid "$pid" "$@" || rc=$?
    if ((rc == 124 || rc == 137)); then
        log "$name: did not finish within ${LOAD_TIMEOUT}s"
    fi
    if ((rc != 0)); then
        show_log "$slog"
        die "$name: duplex-load exited with status $rc"
    fi
    kill -0 "$pid" 2>/dev/null || {
        show_log "$slog"
        die "$name: the server died"
    }
}

check_echo() {
    local port slog="$logdir/load-echo-server.log" url
    port=$(free_port)
    start_server "$slog" "$port" 30 "duplex echo" "$DUPLEX_BIN" echo --listen "127.0.0.1:$port" --threads 2
    url="ws://127.0.0.1:$port/"
    scenario "200 connections x 1 KiB binary" "$BG_PID" "$slog" "$url" \
        --connections 200 --size 1024 --duration 3 --warmup 1
    scenario "100 connections x 20 B text, 16 in flight" "$BG_PID" "$slog" "$url" \
        --connections 100 --size 20 --text --in-flight 16 --duration 3 --warmup 1
    scenario "10 connections x 256 KiB binary" "$BG_PID" "$slog" "$url" \
        --connections 10 --size 262144 --duration 3 --warmup 1
    scenario "handshake churn" "$BG_PID" "$slog" "$url" --mode connect --connections 20 --duration 2 --warmup 0
    stop_pid "$BG_PID"
}

check_fanout() {
    local port slog="$logdir/load-serve-server.log" need
    [[ $FANOUT_MEMBERS =~ ^[1-9][0-9]*$ ]] || die "LOAD_FANOUT_MEMBERS must be a positive integer"
    [[ $FANOUT_MESSAGES =~ ^[1-9][0-9]*$ ]] || die "LOAD_FANOUT_MESSAGES must be a positive integer"
    # The server and the load generator each hold one socket per member (and a few more).
    need=$((FANOUT_MEMBERS + 256))
    if (($(ulimit -n) < need)); then
        ulimit -n "$need" 2>/dev/null ||
            die "fanout: $FANOUT_MEMBERS members need ulimit -n $need (it is $(ulimit -n), hard limit $(ulimit -Hn)); set LOAD_FANOUT_MEMBERS lower"
    fi
    port=$(free_port)
    start_server "$slog" "$port" 30 "duplex serve" "$DUPLEX_BIN" serve --listen "127.0.0.1:$port" --threads 2
    scenario "fanout: $FANOUT_MEMBERS members x $FANOUT_MESSAGES messages" "$BG_PID" "$slog" \
        "ws://127.0.0.1:$port/ws" --mode fanout --members "$FANOUT_MEMBERS" --messages "$FANOUT_MESSAGES" --threads 2
    stop_pid "$BG_PID"
}

main() {
    local checks=("$@") c
    ((${#checks[@]})) || checks=(echo fanout)
    for c in "${checks[@]}"; do
        case $c in
        echo | fanout) ;;
        *) die "unknown check '$c' (expected: echo, fanout)" ;;
        esac
    done
    for c in "${checks[@]}"; do
        "check_$c"
    done
    echo "load: ok"
}

main "$@"
