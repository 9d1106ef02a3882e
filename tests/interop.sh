#!/usr/bin/env bash
# Interop with other WebSocket implementations over 127.0.0.1.
#
#   tests/interop.sh [python] [node] [connect] [chromium] [chromium-demo] [chromium-demo-wasm]
#                   (no argument: the first four; chromium includes both chromium-demo cases)
#
#   python   Python `websockets` client (tests/interop/py_client.py) -> duplex echo
#   node     Node `ws` client (tests/interop/node_client.mjs)         -> duplex echo
#   connect  `duplex connect` in pipe mode -> Node `ws` echo server
#            (tests/interop/ws_echo_server.mjs)
#   chromium headless Chromium's WebSocket (tests/browser/deflate_echo.mjs) -> duplex echo,
#            three servers: the default (chromium-deflate), --deflate-context-takeover
#            --deflate-threshold 0 (chromium-deflate-takeover), --deflate off (chromium-plain);
#            then chromium-demo and chromium-demo-wasm.
#   chromium-demo  the demo chat page of `duplex serve --threads 2` with the client it offers
#            (the WASM client when embedded in the binary, else the page's built-in one),
#            two users (ann, ben) in two browser contexts: members, typing indicator, messages
#            shown exactly once, window.duplex, leaving (tests/browser/demo_page.mjs).
#   chromium-demo-wasm  the same page running the WASM client (`--client-dir wasm/js`, which
#            needs wasm/js/dist: bash wasm/build.sh, the `wasm` step of tests/run.sh): the
#            same checks, then the server is killed and restarted; both pages reconnect within
#            the backoff schedule and show every message sent meanwhile exactly once
#            (tests/browser/demo_reconnect.mjs, which runs the server itself).
#            Without Chromium (see tests/setup.sh browser) or, for chromium-demo-wasm, without
#            wasm/js/dist: a failure in CI (CI=true), otherwise SKIP, not counted as passed.
#
# INTEROP_SERVER_CMD replaces `duplex echo` for the python and node checks
# (run by bash with PORT and DUPLEX_BIN exported), to validate the clients
# against a known-good server:
#   INTEROP_SERVER_CMD='node tests/interop/ws_echo_server.mjs $PORT' tests/interop.sh python node
#
# The last line counts the cases: `interop.sh: N cases ok, M skipped`.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

STEP_TIMEOUT=30     # seconds, for each client run
CHROMIUM_TIMEOUT=90 # seconds, for each Chromium run (launch included; the script stops itself at 60)

export DUPLEX_BIN
# shellcheck disable=SC2016 # expanded later, by the bash that runs the command
DEFAULT_SERVER_CMD='"$DUPLEX_BIN" echo --listen "127.0.0.1:$PORT"'

PASSED=0
SKIPPED=()

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

# run_client_against SERVER_PID SERVER_LOG NAME CMD... : run a client with a
# bounded time (CLIENT_TIMEOUT seconds, default STEP_TIMEOUT); on failure, say
# why and show the server's log. The server must outlive the client.
run_client_against() {
    local pid=$1 slog=$2 name=$3 limit=${CLIENT_TIMEOUT:-$STEP_TIMEOUT} rc=0
    shift 3
    timeout --kill-after=5 "$limit" "$@" </dev/null || rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "interop($name): FAIL: did not finish within ${limit}s" >&2
    fi
    if ((rc != 0)); then
        show_log "$slog"
        die "interop($name) failed (exit $rc)"
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        show_log "$slog"
        die "interop($name): the server under test died"
    fi
    PASSED=$((PASSED + 1))
}

# run_client NAME CMD... : run_client_against the shared echo server.
run_client() {
    run_client_against "$ECHO_PID" "$logdir/interop-echo-server.log" "$@"
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
    PASSED=$((PASSED + 1))
}

check_connect() {
    bash "$REPO_ROOT/tests/setup.sh" node
    [[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
    connect_against plain
    connect_against deflate
}

# chromium_against NAME CLIENT_ARGS -- SERVER_ARGS... : a `duplex echo SERVER_ARGS` of its own,
# and tests/browser/deflate_echo.mjs against it, expecting what CLIENT_ARGS say.
chromium_against() {
    local name=$1 client_args port slog="$logdir/interop-$1-server.log"
    [[ ${3:-} == -- ]] || die "chromium_against: expected NAME CLIENT_ARGS -- SERVER_ARGS..."
    read -r -a client_args <<<"$2"
    shift 3
    port=$(free_port)
    start_server "$slog" "$port" 30 "duplex echo $*" \
        "$DUPLEX_BIN" echo --listen "127.0.0.1:$port" "$@"
    CLIENT_TIMEOUT=$CHROMIUM_TIMEOUT run_client_against "$BG_PID" "$slog" "$name" \
        node "$BROWSER_DIR/deflate_echo.mjs" "ws://127.0.0.1:$port/" --name "$name" "${client_args[@]}"
    stop_pid "$BG_PID"
}

# chromium_ready CHECK CASES... : set up the browser tests; true if Chromium can run. Without
# Chromium: a failure in CI (CI=true), otherwise CASES are skipped (and false is returned).
chromium_ready() {
    local check=$1
    shift
    # Callers run this as `chromium_ready ... || return 0`, where bash turns errexit off inside
    # it: every failure here must be explicit.
    bash "$REPO_ROOT/tests/setup.sh" browser || die "interop($check): tests/setup.sh browser failed"
    if [[ ! -x $CHROMIUM ]]; then
        local how="install it (apt-get install chromium, or tests/setup.sh browser as root) or set CHROMIUM"
        [[ ${CI:-} != true ]] || die "interop($check): $CHROMIUM not found: $how"
        echo "interop($check): SKIP: $CHROMIUM not found: $how" >&2
        SKIPPED+=("$@")
        return 1
    fi
    [[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
}

# The demo chat page of `duplex serve`, two users in two browser contexts
# (tests/browser/demo_page.mjs).
chromium_demo() {
    local name=chromium-demo port slog="$logdir/interop-chromium-demo-server.log"
    port=$(free_port)
    start_server "$slog" "$port" 30 "duplex serve" \
        "$DUPLEX_BIN" serve --listen "127.0.0.1:$port" --threads 2
    # The page runs the WASM client when the binary embeds it (built with wasm/js/dist), the
    # built-in one otherwise: the page's <meta name="duplex-client"> says which it must be.
    local page impl=builtin
    page=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/")
    if [[ $page == *'<meta name="duplex-client" content="/duplex-ws/'* ]]; then
        impl=wasm
    fi
    log "interop($name): the server offers the $impl client"
    CLIENT_TIMEOUT=$CHROMIUM_TIMEOUT run_client_against "$BG_PID" "$slog" "$name" \
        node "$BROWSER_DIR/demo_page.mjs" "http://127.0.0.1:$port/" --name "$name" --impl "$impl"
    stop_pid "$BG_PID"
}

# The demo page with the WASM client across a server restart (tests/browser/demo_reconnect.mjs
# starts and restarts `duplex serve --client-dir wasm/js` itself). Needs wasm/js/dist.
chromium_demo_wasm() {
    local name=chromium-demo-wasm rc=0
    if [[ ! -f $REPO_ROOT/wasm/js/dist/duplex_wasm_bg.wasm ]]; then
        local how="wasm/js/dist not built (bash wasm/build.sh, the wasm step of tests/run.sh)"
        [[ ${CI:-} != true ]] || die "interop($name): $how"
        echo "interop($name): SKIP: $how" >&2
        SKIPPED+=("$name")
        return 0
    fi
    timeout --kill-after=5 "$CHROMIUM_TIMEOUT" node "$BROWSER_DIR/demo_reconnect.mjs" --name "$name" </dev/null || rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "interop($name): FAIL: did not finish within ${CHROMIUM_TIMEOUT}s" >&2
    fi
    ((rc == 0)) || die "interop($name) failed (exit $rc)"
    PASSED=$((PASSED + 1))
}

check_chromium() {
    chromium_ready chromium chromium-deflate chromium-deflate-takeover chromium-plain chromium-demo \
        chromium-demo-wasm || return 0
    chromium_against chromium-deflate "--expect deflate" --
    chromium_against chromium-deflate-takeover "--expect deflate --server-context-takeover" -- \
        --deflate-context-takeover --deflate-threshold 0
    chromium_against chromium-plain "--expect plain" -- --deflate off
    chromium_demo
    chromium_demo_wasm
}

# Only the demo page with the built-in client (also part of `chromium`).
check_chromium_demo() {
    chromium_ready chromium-demo chromium-demo || return 0
    chromium_demo
}

# Only the demo page with the WASM client (also part of `chromium`).
check_chromium_demo_wasm() {
    chromium_ready chromium-demo-wasm chromium-demo-wasm || return 0
    chromium_demo_wasm
}

main() {
    local checks=("$@") c
    ((${#checks[@]})) || checks=(python node connect chromium)
    for c in "${checks[@]}"; do
        case $c in
        python | node | connect | chromium | chromium-demo | chromium-demo-wasm) ;;
        *) die "unknown check '$c' (expected: python, node, connect, chromium, chromium-demo, chromium-demo-wasm)" ;;
        esac
    done
    for c in "${checks[@]}"; do
        "check_${c//-/_}"
    done
    echo "interop.sh: $PASSED cases ok, ${#SKIPPED[@]} skipped${SKIPPED[*]:+ (${SKIPPED[*]})}"
}

main "$@"
