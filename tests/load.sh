#!/usr/bin/env bash
# Drives `duplex echo` with the load generator (benches/load) for a few seconds per scenario.
# Not a benchmark (figures are printed, never judged): the load generator checks every echo byte
# for byte and fails on any loss, duplication, reordering or corruption, under concurrency the
# end-to-end tests do not reach (hundreds of connections, pipelining, reconnect churn).
#
#   tests/load.sh
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

LOAD_BIN="$REPO_ROOT/target/release/duplex-load"
[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
[[ -x $LOAD_BIN ]] || die "$LOAD_BIN not built (cargo build --release -p duplex-load)"

logdir="$REPO_ROOT/reports/logs"
mkdir -p "$logdir"
PORT=$(free_port)
slog="$logdir/load-echo-server.log"
start_server "$slog" "$PORT" 30 "duplex echo" "$DUPLEX_BIN" echo --listen "127.0.0.1:$PORT" --threads 2
SERVER_PID=$BG_PID
URL="ws://127.0.0.1:$PORT/"

scenario() {
    local name=$1 rc=0
    shift
    log "$name: duplex-load $*"
    timeout --kill-after=5 60 "$LOAD_BIN" --url "$URL" --server-pid "$SERVER_PID" "$@" || rc=$?
    if ((rc != 0)); then
        show_log "$slog"
        die "$name: duplex-load exited with status $rc"
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || {
        show_log "$slog"
        die "$name: the server died"
    }
}

scenario "200 connections x 1 KiB binary" --connections 200 --size 1024 --duration 3 --warmup 1
scenario "100 connections x 20 B text, 16 in flight" --connections 100 --size 20 --text --in-flight 16 --duration 3 --warmup 1
scenario "10 connections x 256 KiB binary" --connections 10 --size 262144 --duration 3 --warmup 1
scenario "handshake churn" --mode connect --connections 20 --duration 2 --warmup 0
echo "load: ok"
