#!/usr/bin/env bash
# Interop with other WebSocket implementations over 127.0.0.1.
#
#   tests/interop.sh [python] [node] [connect]     (no argument: all three)
#
#   python   Python `websockets` client (tests/interop/py_client.py) -> duplex echo
#   node     Node `ws` client (tests/interop/node_client.mjs)         -> duplex echo
#   connect  `duplex connect` in pipe mode -> Node `ws` echo server
#            (tests/interop/ws_echo_server.mjs)
#
# INTEROP_SERVER_CMD replaces `duplex echo` for the python and node checks
# (run by bash with PORT exported), to validate the clients against a
# known-good server:
#   INTEROP_SERVER_CMD='node tests/interop/ws_echo_server.mjs $PORT' tests/interop.sh python node
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

STEP_TIMEOUT=30 # seconds, for each client run

# shellcheck disable=SC2016 # expanded later, by the bash that runs the command
DEFAULT_SERVER_CMD='"$REPO_ROOT/target/release/duplex" echo --listen "127.0.0.1:$PORT"'

logdir="$REPO_ROOT/reports/logs"
mkdir -p "$logdir"

# Starts the echo server under test; leaves its url in ECHO_URL.
ECHO_URL=
start_echo_server() {
    [[ -z $ECHO_URL ]] || return 0
    local cmd=${INTEROP_SERVER_CMD:-$DEFAULT_SERVER_CMD}
    if [[ -z ${INTEROP_SERVER_CMD:-} && ! -x $DUPLEX_BIN ]]; then
        die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
    fi
    PORT=$(free_port)
    export PORT
    local slog="$logdir/interop-echo-server.log"
    log "echo server: $cmd (PORT=$PORT)"
    start_server "$slog" "$PORT" 30 "echo server" bash -c "exec $cmd"
    ECHO_PID=$BG_PID
    ECHO_URL="ws://127.0.0.1:$PORT/"
}

# run_client NAME CMD... : run a client with a bounded time; on failure, say
# why and show the server's log.
run_client() {
    local name=$1 rc=0
    shift
    timeout --kill-after=5 "$STEP_TIMEOUT" "$@" </dev/null || rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "interop($name): FAIL: did not finish within ${STEP_TIMEOUT}s" >&2
    fi
    if ((rc != 0)); then
        show_log "$logdir/interop-echo-server.log"
        die "interop($name) failed (exit $rc)"
    fi
    if ! kill -0 "$ECHO_PID" 2>/dev/null; then
        show_log "$logdir/interop-echo-server.log"
        die "interop($name): the echo server died"
    fi
}

check_python() {
    bash "$REPO_ROOT/tests/setup.sh" python
    start_echo_server
    run_client python "$VENV/bin/python" "$INTEROP_DIR/py_client.py" "$ECHO_URL"
    run_client python-deflate "$VENV/bin/python" "$INTEROP_DIR/py_client.py" "$ECHO_URL" --deflate
}

check_node() {
    bash "$REPO_ROOT/tests/setup.sh" node
    start_echo_server
    run_client node node "$INTEROP_DIR/node_client.mjs" "$ECHO_URL"
    run_client node-deflate node "$INTEROP_DIR/node_client.mjs" "$ECHO_URL" --deflate
}

# connect_against MODE: `duplex connect` against a Node `ws` echo server, with
# permessage-deflate off (MODE=plain) or on (MODE=deflate, which must be negotiated).
connect_against() {
    local mode=$1 port slog="$logdir/interop-ws-echo-server-$1.log" out rc=0
    local server_args=()
    [[ $mode == deflate ]] && server_args=(--deflate)
    port=$(free_port)
    start_server "$slog" "$port" 30 "Node ws echo server" \
        node "$INTEROP_DIR/ws_echo_server.mjs" "$port" "${server_args[@]}"
    out=$(printf 'hello\nworld\n' |
        timeout --kill-after=5 "$STEP_TIMEOUT" "$DUPLEX_BIN" connect "ws://127.0.0.1:$port/" \
            2>"$logdir/interop-connect.stderr") || rc=$?
    if ((rc != 0)); then
        show_log "$logdir/interop-connect.stderr"
        ((rc != 124 && rc != 137)) || die "interop(connect-$mode): did not exit within ${STEP_TIMEOUT}s of stdin EOF"
        die "interop(connect-$mode): duplex connect exited with status $rc"
    fi
    if [[ $out != $'hello\nworld' ]]; then
        show_log "$logdir/interop-connect.stderr"
        die "interop(connect-$mode): expected stdout 'hello\\nworld', got $(printf '%q' "$out")"
    fi
    if [[ $mode == deflate ]] && ! grep -q 'permessage-deflate' "$slog"; then
        show_log "$slog"
        die "interop(connect-deflate): permessage-deflate was not negotiated"
    fi
    echo "interop(connect-$mode): ok"
}

check_connect() {
    bash "$REPO_ROOT/tests/setup.sh" node
    [[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
    connect_against plain
    connect_against deflate
}

main() {
    local checks=("$@") c
    ((${#checks[@]})) || checks=(python node connect)
    for c in "${checks[@]}"; do
        case $c in
        python | node | connect) ;;
        *) die "unknown check '$c' (expected: python, node, connect)" ;;
        esac
    done
    for c in "${checks[@]}"; do
        "check_$c"
    done
}

main "$@"
