#!/usr/bin/env bash
# Autobahn TestSuite conformance (kosoku from PyPI), in either role.
#
#   tests/autobahn.sh server        kosoku (fuzzingclient) drives an echo server
#   tests/autobahn.sh client        an Autobahn client drives kosoku -m fuzzingserver
#   tests/autobahn.sh wasm-client   the same with the WASM client: DuplexSocket of the
#                                   duplex-ws package (wasm/js/examples/autobahn-client.mjs,
#                                   built first by wasm/build.sh or tests/wasm.sh)
#   tests/autobahn.sh tokio-server  kosoku drives the duplex-tokio echo server
#                                   (tokio/examples/autobahn_server.rs)
#   tests/autobahn.sh tokio-client  the duplex-tokio client (tokio/examples/tokio_autobahn_client.rs)
#                                   drives kosoku -m fuzzingserver
#   (wasm-client and the tokio roles leave out the large compression cases; see below)
#
# Reports land in reports/MODE/ (index.json plus one
# JSON and HTML file per case; open index.html in a browser). The verdict
# comes from tests/autobahn_check.py, not from kosoku's exit code: kosoku
# exits 1 whenever any case fails, including the tolerated 9.3.1 / 9.4.1.
#
# The peer under test is chosen by environment variables, so the harness can
# be validated against known-good implementations. They are run by bash with
# PORT, AUTOBAHN_URL (ws://127.0.0.1:PORT) and AUTOBAHN_AGENT exported:
#   AUTOBAHN_SERVER_CMD  default: $DUPLEX_BIN echo --listen 127.0.0.1:$PORT
#   AUTOBAHN_CLIENT_CMD  default: $AUTOBAHN_CLIENT_BIN $AUTOBAHN_URL $AUTOBAHN_AGENT
#                        (wasm-client: node wasm/js/examples/autobahn-client.mjs $AUTOBAHN_URL $AUTOBAHN_AGENT)
#   AUTOBAHN_AGENT       agent name the client reports (default: duplex; wasm-client: duplex-wasm)
# The native binaries default to ${CARGO_TARGET_DIR:-target}/release/ (duplex and
# examples/autobahn_client); DUPLEX_BIN and AUTOBAHN_CLIENT_BIN override them. The tokio
# modes run examples/autobahn_server and examples/tokio_autobahn_client of the same directory
# (tests/run.sh tokio-build); TOKIO_SERVER_BIN and TOKIO_CLIENT_BIN override them.
# e.g. the Node `ws` references:
#   AUTOBAHN_SERVER_CMD='node tests/interop/ws_echo_server.mjs $PORT' tests/autobahn.sh server
#   AUTOBAHN_CLIENT_CMD='node tests/interop/ws_autobahn_client.mjs $AUTOBAHN_URL $AUTOBAHN_AGENT' \
#     tests/autobahn.sh client
# AUTOBAHN_CASES='1.* 9.3.1' runs only those cases (the check then only
# counts what ran; for debugging).
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

# Every case, compression (12.*, 13.*) included, in the server and native client roles.
EXCLUDES=()
EXPECT_CASES=517
RUN_TIMEOUT=${AUTOBAHN_TIMEOUT:-2400} # whole kosoku run, seconds
# Server role: cases run this many at a time. Nearly all of the run is the runner compressing and
# inflating the large messages of 12.* and 13.*, which parallel cases spread over both cores.
PARALLELISM=${AUTOBAHN_PARALLELISM:-2}

# --deflate-threshold 0: the runner's Python side mishandles an uncompressed text message
# on a connection that negotiated permessage-deflate (it hands a str to hashlib and errors out
# in 12.*.1 and 13.*.1, whose 16-byte messages are below the default threshold), although
# RFC 7692 lets either side send any message uncompressed. Compressing everything avoids it.
# shellcheck disable=SC2016 # expanded later, by the bash that runs the command
DEFAULT_SERVER_CMD='"$DUPLEX_BIN" echo --listen "127.0.0.1:$PORT" --deflate-threshold 0'
# shellcheck disable=SC2016
DEFAULT_CLIENT_CMD='"$AUTOBAHN_CLIENT_BIN" "$AUTOBAHN_URL" "$AUTOBAHN_AGENT"'
# shellcheck disable=SC2016
WASM_CLIENT_CMD='node "$REPO_ROOT/wasm/js/examples/autobahn-client.mjs" "$AUTOBAHN_URL" "$AUTOBAHN_AGENT"'
AUTOBAHN_CLIENT_BIN="${AUTOBAHN_CLIENT_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/examples/autobahn_client}"
# duplex-tokio's examples (tests/run.sh tokio-build).
TOKIO_SERVER_BIN="${TOKIO_SERVER_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/examples/autobahn_server}"
TOKIO_CLIENT_BIN="${TOKIO_CLIENT_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/examples/tokio_autobahn_client}"
# shellcheck disable=SC2016
TOKIO_SERVER_CMD='"$TOKIO_SERVER_BIN" "127.0.0.1:$PORT"'
# shellcheck disable=SC2016
TOKIO_CLIENT_CMD='"$TOKIO_CLIENT_BIN" "$AUTOBAHN_URL" "$AUTOBAHN_AGENT"'
# The commands run in their own bash.
export DUPLEX_BIN AUTOBAHN_CLIENT_BIN TOKIO_SERVER_BIN TOKIO_CLIENT_BIN

mode=${1:-}
case $mode in
server | client | wasm-client | tokio-server | tokio-client) ;;
*)
    echo "usage: tests/autobahn.sh server|client|wasm-client|tokio-server|tokio-client" >&2
    exit 2
    ;;
esac

bash "$REPO_ROOT/tests/setup.sh" python

# The WASM client and both tokio roles: the RFC 6455 and 7692 engine inside them is the core the
# native roles pass every case with, so these roles are about their glue (bytes in and out,
# events, backpressure, close, compression negotiated and used). Compression cases 12.*/13.*
# with messages of up to 4 KiB (case numbers 1-8) cover that; the 64-256 KiB ones (9-18) only
# repeat the codec's work and take three quarters of a role's time. Large messages through the
# glue are still covered, uncompressed, by 9.* (up to 16 MiB). AUTOBAHN_CASES='*' runs all.
if [[ $mode =~ ^(wasm-client|tokio-server|tokio-client)$ && -z ${AUTOBAHN_CASES:-} ]]; then
    EXCLUDES=()
    for n in 9 10 11 12 13 14 15 16 17 18; do EXCLUDES+=("12.*.$n" "13.*.$n"); done
    EXPECT_CASES=397
fi

kosoku_args=()
for x in "${EXCLUDES[@]}"; do kosoku_args+=(-x "$x"); done
if [[ -n ${AUTOBAHN_CASES:-} ]]; then
    read -r -a only <<<"$AUTOBAHN_CASES"
    for x in "${only[@]}"; do kosoku_args+=(-i "$x"); done
fi

PORT=$(free_port)
AUTOBAHN_URL="ws://127.0.0.1:$PORT"
if [[ $mode == wasm-client ]]; then
    AUTOBAHN_AGENT=${AUTOBAHN_AGENT:-duplex-wasm}
elif [[ $mode == tokio-client ]]; then
    AUTOBAHN_AGENT=${AUTOBAHN_AGENT:-duplex-tokio}
else
    AUTOBAHN_AGENT=${AUTOBAHN_AGENT:-duplex}
fi
export PORT AUTOBAHN_URL AUTOBAHN_AGENT

outdir="$REPO_ROOT/reports/$mode"
rm -rf "$outdir"
mkdir -p "$outdir"
logdir="$REPO_ROOT/reports/logs"
mkdir -p "$logdir"

run_server_mode() {
    local cmd=${AUTOBAHN_SERVER_CMD:-$DEFAULT_SERVER_CMD}
    if [[ -z ${AUTOBAHN_SERVER_CMD:-} ]]; then
        if [[ $mode == tokio-server ]]; then
            cmd=$TOKIO_SERVER_CMD
            [[ -x $TOKIO_SERVER_BIN ]] ||
                die "$TOKIO_SERVER_BIN not built (cargo build --release -p duplex-tokio --example autobahn_server)"
        elif [[ ! -x $DUPLEX_BIN ]]; then
            die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
        fi
    fi
    local slog="$logdir/autobahn-$mode-peer.log" klog="$logdir/autobahn-$mode-kosoku.log"
    log "server under test: $cmd (PORT=$PORT)"
    start_server "$slog" "$PORT" 30 "server under test" bash -c "exec $cmd"
    local server_pid=$BG_PID

    log "kosoku 127.0.0.1:$PORT ${kosoku_args[*]} -o $outdir"
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$RUN_TIMEOUT" \
        "$VENV/bin/kosoku" "127.0.0.1:$PORT" -p "$PARALLELISM" "${kosoku_args[@]}" -o "$outdir" \
        >"$klog" 2>&1 || rc=$?
    log "kosoku finished in $((SECONDS - start))s (exit $rc; verdict below)"
    ((rc != 124 && rc != 137)) || {
        show_log "$klog"
        die "kosoku did not finish within ${RUN_TIMEOUT}s"
    }
    if ! kill -0 "$server_pid" 2>/dev/null; then
        show_log "$slog"
        die "server under test died during the run"
    fi
    stop_pid "$server_pid"
    [[ -f $outdir/index.json ]] || {
        show_log "$klog"
        die "kosoku wrote no $outdir/index.json"
    }
    check '*'
}

run_client_mode() {
    local cmd=${AUTOBAHN_CLIENT_CMD:-$DEFAULT_CLIENT_CMD}
    if [[ -z ${AUTOBAHN_CLIENT_CMD:-} ]]; then
        if [[ $mode == wasm-client ]]; then
            cmd=$WASM_CLIENT_CMD
            command -v node >/dev/null || die "node not found (Node >= 20)"
            [[ -f $REPO_ROOT/wasm/js/dist/duplex_wasm_bg.wasm ]] ||
                die "wasm/js/dist not built (bash wasm/build.sh)"
        elif [[ $mode == tokio-client ]]; then
            cmd=$TOKIO_CLIENT_CMD
            [[ -x $TOKIO_CLIENT_BIN ]] ||
                die "$TOKIO_CLIENT_BIN not built (tests/run.sh tokio-build)"
        elif [[ ! -x $AUTOBAHN_CLIENT_BIN ]]; then
            die "autobahn_client not built (cargo build --release -p duplex --example autobahn_client)"
        fi
    fi
    local klog="$logdir/autobahn-$mode-kosoku.log" clog="$logdir/autobahn-$mode-peer.log"
    log "kosoku -m fuzzingserver 127.0.0.1:$PORT ${kosoku_args[*]} -o $outdir"
    start_server "$klog" "$PORT" 60 "fuzzing server" timeout --kill-after=10 "$RUN_TIMEOUT" \
        "$VENV/bin/kosoku" -m fuzzingserver "127.0.0.1:$PORT" "${kosoku_args[@]}" -o "$outdir"
    local kosoku_pid=$BG_PID

    log "client under test: $cmd (AUTOBAHN_URL=$AUTOBAHN_URL AUTOBAHN_AGENT=$AUTOBAHN_AGENT)"
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$RUN_TIMEOUT" bash -c "exec $cmd" >"$clog" 2>&1 </dev/null || rc=$?
    log "client finished in $((SECONDS - start))s (exit $rc)"
    if ((rc != 0)); then
        show_log "$clog"
        die "client under test exited with status $rc"
    fi
    # kosoku writes its reports and exits once the client has called
    # /updateReports; its own exit status only says whether every case passed.
    rc=0
    wait_pid "$kosoku_pid" 60 || rc=$?
    if ((rc == 124)); then
        show_log "$klog"
        die "fuzzing server did not exit within 60s after the client finished"
    fi
    [[ -f $outdir/index.json ]] || {
        show_log "$klog"
        die "kosoku wrote no $outdir/index.json"
    }
    check "$AUTOBAHN_AGENT"
}

check() {
    local agent=$1 expect=$EXPECT_CASES
    local check_args=(--expect-cases "$expect" --mode "$mode")
    for x in "${EXCLUDES[@]}"; do check_args+=(--exclude "$x"); done
    if [[ -n ${AUTOBAHN_CASES:-} ]]; then
        log "AUTOBAHN_CASES set: checking only the cases that ran"
        check_args+=(--partial)
    fi
    "$VENV/bin/python" "$REPO_ROOT/tests/autobahn_check.py" \
        "$outdir/index.json" "$agent" "${check_args[@]}"
}

case $mode in
server | tokio-server) run_server_mode ;;
client | wasm-client | tokio-client) run_client_mode ;;
esac
