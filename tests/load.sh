#!/usr/bin/env bash
# Drives the servers with the load generator (benches/load) for a few seconds per scenario.
# Not a benchmark (figures are printed, never judged): the load generator checks every echo byte
# for byte and every room message for loss, duplication and order, and fails on any of them,
# under concurrency the end-to-end tests do not reach (hundreds of connections, pipelining,
# reconnect churn, a room of thousands of members).
#
#   tests/load.sh [echo] [tls] [fanout]    (no argument: all three)
#
#   echo     `duplex echo --threads 2`: round trips (binary, text pipelined, large) and
#            handshake churn
#   tls      the same over wss:// (`duplex echo --tls-cert --tls-key`, a certificate made with
#            openssl here, trusted with --ca): round trips of 1 KiB and 64 KiB, handshake churn,
#            and a certificate duplex-load does not trust must fail the run
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

check_tls() {
    local port slog="$logdir/load-tls-server.log" url dir rc=0
    command -v openssl >/dev/null || die "tls: openssl is required"
    dir=$(mktemp -d)
    # Two self-signed certificates: the server's, and one duplex-load is told to trust instead.
    for name in server other; do
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=127.0.0.1 -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            -addext basicConstraints=critical,CA:FALSE \
            -keyout "$dir/$name.key" -out "$dir/$name.pem" 2>/dev/null ||
            die "tls: openssl cannot make a certificate"
    done
    port=$(free_port)
    start_server "$slog" "$port" 30 "duplex echo (TLS)" "$DUPLEX_BIN" echo --listen "127.0.0.1:$port" \
        --threads 2 --tls-cert "$dir/server.pem" --tls-key "$dir/server.key"
    url="wss://127.0.0.1:$port/"
    scenario "wss: 50 connections x 1 KiB binary" "$BG_PID" "$slog" "$url" --ca "$dir/server.pem" \
        --connections 50 --size 1024 --duration 2 --warmup 0.5
    scenario "wss: 10 connections x 64 KiB text, 4 in flight" "$BG_PID" "$slog" "$url" \
        --ca "$dir/server.pem" --connections 10 --size 65536 --text --in-flight 4 --duration 2 --warmup 0.5
    scenario "wss: handshake churn" "$BG_PID" "$slog" "$url" --ca "$dir/server.pem" \
        --mode connect --connections 10 --duration 2 --warmup 0
    log "wss: a certificate not trusted must fail the run"
    timeout --kill-after=5 "$LOAD_TIMEOUT" "$LOAD_BIN" --url "$url" --ca "$dir/other.pem" \
        --connections 1 --duration 1 --warmup 0 2>"$dir/untrusted.err" || rc=$?
    ((rc != 0)) || die "tls: duplex-load accepted a certificate it was not told to trust"
    grep -qi "UnknownIssuer\|certificate" "$dir/untrusted.err" || {
        cat "$dir/untrusted.err" >&2
        die "tls: the refused certificate is not named in duplex-load's error"
    }
    stop_pid "$BG_PID"
    rm -rf "$dir"
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
    ((${#checks[@]})) || checks=(echo tls fanout)
    for c in "${checks[@]}"; do
        case $c in
        echo | tls | fanout) ;;
        *) die "unknown check '$c' (expected: echo, tls, fanout)" ;;
        esac
    done
    for c in "${checks[@]}"; do
        "check_$c"
    done
    echo "load: ok"
}

main "$@"
