#!/usr/bin/env bash
# Side-by-side load runs: `duplex echo --threads 1` against echo servers on other WebSocket
# stacks (tokio-tungstenite, fastwebsockets, Node ws, uWebSockets.js) and duplex-tokio (the
# core on a current-thread tokio runtime, heartbeat on), all driven by
# duplex-load on loopback.
#
#   benches/compare.sh                 the full matrix (about 10 minutes with 5 servers)
#   benches/compare.sh --quick         a reduced matrix (1 and 100 connections × 20 B and 1 KiB, 2 s each)
#   benches/compare.sh --duration 10 --warmup 2 --servers duplex,uws --text
#   benches/compare.sh --rounds 5 --servers duplex-tokio,fastwebsockets --cells 100:20:1
#   benches/compare.sh tls             wss:// (see below; about 2 minutes)
#
# Matrix: connections 1, 10, 100, 500 × sizes 20 B, 1 KiB, 16 KiB with one message in flight,
# plus 100 connections × 20 B with 16 in flight; then 10,000 idle connections (server memory
# per connection) and the handshake rate, for every server. Each server is pinned to CPU 0 and
# the load generator to CPU 1 (taskset). All servers run side by side and every cell is run
# against each of them in turn, so slow drifts of the machine's load touch them alike. With
# --rounds R the echo matrix and the handshake runs are repeated R times (the servers stay up);
# the tables give each figure's median over the rounds, and a table of paired ratios (round by
# round, the baseline against each peer) shows how far a difference stands above the noise.
#
# `tls` mode: the same machinery over wss://. duplex (`duplex echo --tls-cert --tls-key`),
# uWebSockets.js `SSLApp` (uws) and Node `ws` on an `https` server (ws) share one certificate,
# made with openssl in a temporary directory (ECDSA P-256, self-signed, IP 127.0.0.1), which
# duplex-load trusts with --ca; duplex-plain is `duplex echo` without TLS, the plaintext
# reference. Matrix: connections 10, 100 × sizes 1 KiB, 16 KiB, one message in flight (--quick:
# 1 KiB only, 2 s), then the handshake rate and CPU per handshake (a full TLS 1.3 handshake each:
# duplex-load does not resume sessions); no idle-memory test.
#
# Writes the raw JSON lines to reports/bench/compare-<date>.jsonl (tls mode:
# compare-tls-<date>.jsonl) and the markdown tables (also printed) beside them as .md. Every
# process started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

usage() {
    sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

Usage: benches/compare.sh [tls] [options]

Options:
  --quick               reduced matrix, 2 s per cell
  --duration SECS       measured window per cell (default 5; --quick: 2)
  --warmup SECS         load before each window (default 1; --quick: 0.5)
  --servers LIST        comma-separated subset of: duplex,duplex-tokio,tungstenite,fastwebsockets,ws,uws
                        (tls mode: duplex,uws,ws,duplex-plain)
  --text                send text messages instead of binary
  --cells LIST          only these echo cells, CONNECTIONS:SIZE:IN_FLIGHT comma-separated
                        (e.g. 100:20:1,100:1024:1,100:16384:1,100:20:16)
  --rounds R            repeat the echo cells and the handshake runs R times; medians shown (default 1)
  --idle-connections N  idle connections for the memory test (default 10000)
  --connect-slots N     concurrent connect cycles for the handshake rate (default 10)
  --no-build            use the binaries and node_modules already built
  --port-base PORT      first port to try for the servers (default 19100)
EOF
}

TLS=0
if [[ ${1:-} == tls ]]; then
    TLS=1
    shift
fi
QUICK=0
DURATION=""
WARMUP=""
if [[ $TLS -eq 1 ]]; then
    SERVERS="duplex,uws,ws,duplex-plain"
else
    SERVERS="duplex,duplex-tokio,tungstenite,fastwebsockets,ws,uws"
fi
KIND="--binary"
IDLE_CONNECTIONS=10000
CONNECT_SLOTS=10
BUILD=1
PORT_BASE=19100
CELLS_ONLY=""
ROUNDS=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --duration) DURATION="$2"; shift ;;
        --warmup) WARMUP="$2"; shift ;;
        --servers) SERVERS="$2"; shift ;;
        --text) KIND="--text" ;;
        --cells) CELLS_ONLY="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --idle-connections) IDLE_CONNECTIONS="$2"; shift ;;
        --connect-slots) CONNECT_SLOTS="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --port-base) PORT_BASE="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || {
    echo "compare.sh: --rounds wants a whole number of at least 1, got $ROUNDS" >&2
    exit 2
}

if [[ $QUICK -eq 1 ]]; then
    DURATION="${DURATION:-2}"
    WARMUP="${WARMUP:-0.5}"
    CONNECTIONS=(1 100)
    SIZES=(20 1024)
    EXTRA_CELLS=()
else
    DURATION="${DURATION:-5}"
    WARMUP="${WARMUP:-1}"
    CONNECTIONS=(1 10 100 500)
    SIZES=(20 1024 16384)
    # connections:size:in-flight
    EXTRA_CELLS=("100:20:16")
fi
if [[ $TLS -eq 1 ]]; then
    CONNECTIONS=(10 100)
    if [[ $QUICK -eq 1 ]]; then SIZES=(1024); else SIZES=(1024 16384); fi
    EXTRA_CELLS=()
fi
if [[ -n $CELLS_ONLY ]]; then
    CONNECTIONS=()
    SIZES=()
    IFS=',' read -r -a EXTRA_CELLS <<<"$CELLS_ONLY"
    for cell in "${EXTRA_CELLS[@]}"; do
        [[ $cell =~ ^[0-9]+:[0-9]+:[0-9]+$ ]] || {
            echo "compare.sh: --cells wants CONNECTIONS:SIZE:IN_FLIGHT, got $cell" >&2
            exit 2
        }
    done
fi
IFS=',' read -r -a SERVER_LIST <<<"$SERVERS"

# --- processes: everything started here is stopped on exit ------------------------------------

cleanup() {
    stop_started
    if [[ -n ${CERT_DIR:-} ]]; then
        rm -rf "$CERT_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools, build -------------------------------------------------------------------------------

need cargo "Rust toolchain"
need python3 "for the tables"
need taskset "util-linux"
for s in "${SERVER_LIST[@]}"; do
    case "$TLS:$s" in
        [01]:ws|[01]:uws) need node "Node.js for the ws and uWebSockets.js peers"; need npm "npm ci" ;;
        0:duplex|0:duplex-tokio|0:tungstenite|0:fastwebsockets|1:duplex|1:duplex-plain) ;;
        *) echo "compare.sh: unknown server $s$([[ $TLS -eq 1 ]] && echo " in tls mode")" >&2; exit 2 ;;
    esac
done
if [[ $TLS -eq 1 ]]; then
    need openssl "the test certificate of tls mode"
fi

pin_cpus "server and load generator share it (results are not comparable with a 2-CPU run)"

if [[ $BUILD -eq 1 ]]; then
    echo "== building (release)" >&2
    cargo build --release -p duplex -p duplex-load -p duplex-peers >&2
    if [[ " ${SERVER_LIST[*]} " == *" ws "* || " ${SERVER_LIST[*]} " == *" uws "* ]]; then
        ensure_node_peers
    fi
fi

# Idle connections need one descriptor each here, and one each in the server.
if [[ $TLS -eq 0 && "$(ulimit -n)" != unlimited && "$(ulimit -n)" -lt $((IDLE_CONNECTIONS + 200)) ]]; then
    ulimit -n $((IDLE_CONNECTIONS + 200)) 2>/dev/null || {
        echo "compare.sh: ulimit -n is $(ulimit -n); $IDLE_CONNECTIONS idle connections need $((IDLE_CONNECTIONS + 200))" >&2
        exit 1
    }
fi

# --- servers ------------------------------------------------------------------------------------

server_command() { # NAME PORT
    if [[ $TLS -eq 1 ]]; then
        case "$1" in
            duplex) echo "$BIN/duplex echo --listen 127.0.0.1:$2 --threads 1 --tls-cert $CERT --tls-key $KEY" ;;
            duplex-plain) echo "$BIN/duplex echo --listen 127.0.0.1:$2 --threads 1" ;;
            ws) echo "node $NODE_DIR/ws-echo.mjs $2 $CERT $KEY" ;;
            uws) echo "node $NODE_DIR/uws-echo.mjs $2 $CERT $KEY" ;;
        esac
        return
    fi
    case "$1" in
        duplex) echo "$BIN/duplex echo --listen 127.0.0.1:$2 --threads 1" ;;
        duplex-tokio) echo "$BIN/duplex-tokio-echo $2" ;;
        tungstenite) echo "$BIN/tungstenite-echo --runtime current $2" ;;
        fastwebsockets) echo "$BIN/fastwebsockets-echo $2" ;;
        ws) echo "node $NODE_DIR/ws-echo.mjs $2" ;;
        uws) echo "node $NODE_DIR/uws-echo.mjs $2" ;;
    esac
}

# Each server gets a port nothing listens on (duplex and uWS use SO_REUSEPORT: a stale server
# on the same port would silently take half the load).
declare -A PORT PID
NEXT_PORT=$PORT_BASE
FREE_PORT=""
next_free_port() { # sets FREE_PORT
    while port_in_use "$NEXT_PORT"; do
        NEXT_PORT=$((NEXT_PORT + 1))
    done
    FREE_PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
}

LOG_DIR="$(mktemp -d)"
CERT_DIR=""
if [[ $TLS -eq 1 ]]; then
    # One certificate for every server; duplex-load trusts it with --ca.
    CERT_DIR="$(mktemp -d)"
    CERT="$CERT_DIR/cert.pem"
    KEY="$CERT_DIR/key.pem"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$KEY" -out "$CERT" >"$LOG_DIR/openssl.log" 2>&1 || {
        cat "$LOG_DIR/openssl.log" >&2
        exit 1
    }
fi
# url_args NAME: the URL duplex-load is given for server NAME, then the --ca option if it needs one.
url_args() {
    if [[ $TLS -eq 1 && $1 != duplex-plain ]]; then
        echo "--url wss://127.0.0.1:${PORT[$1]}/ --ca $CERT"
    else
        echo "--url ws://127.0.0.1:${PORT[$1]}/"
    fi
}
start_server() { # NAME
    local name="$1" port pid
    next_free_port
    port=$FREE_PORT
    # Word splitting of the command line is intended (paths have no spaces in this tree).
    # shellcheck disable=SC2046
    "${SERVER_CPU[@]}" $(server_command "$name" "$port") >"$LOG_DIR/$name.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_listening "$name" "$pid" "$port" "$LOG_DIR/$name.log" 100
    PORT[$name]=$port
    PID[$name]=$pid
}

stop_server() { # NAME
    stop_process "${PID[$1]}" 30
}

# --- runs ---------------------------------------------------------------------------------------

mkdir -p "$ROOT/reports/bench"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
PREFIX=compare
if [[ $TLS -eq 1 ]]; then
    PREFIX=compare-tls
fi
OUT="$ROOT/reports/bench/$PREFIX-$STAMP.jsonl"
: >"$OUT"
FAILED=0
python3 - "$OUT" "$DURATION" "$WARMUP" "$KIND" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" "$TLS" "$ROUNDS" <<'EOF'
import json, sys
sys.path.insert(0, "benches")
from compare import machine
out, duration, warmup, kind, commit, tls, rounds = sys.argv[1:]
meta = {"mode": "meta", "commit": commit, **machine(), "duration_s": float(duration),
        "warmup_s": float(warmup), "kind": kind.lstrip("-"), "rounds": int(rounds)}
if tls == "1":
    meta["tls"] = "self-signed ECDSA P-256 certificate, full handshakes (no session resumption)"
with open(out, "a") as f:
    f.write(json.dumps(meta) + "\n")
EOF

# run NAME MODE ARGS...: one duplex-load run against server NAME; its JSON line goes to $OUT.
run() {
    local name="$1" mode="$2" pid line status
    shift 2
    local target
    read -r -a target <<<"$(url_args "$name")"
    local args=(--mode "$mode" "${target[@]}" --server-pid "${PID[$name]}"
        --label "$name" --json "$@")
    "${LOAD_CPU[@]}" "$BIN/duplex-load" "${args[@]}" >"$LOG_DIR/load.out" 2>"$LOG_DIR/load.err" &
    pid=$!
    STARTED_PIDS+=("$pid")
    status=0
    wait "$pid" || status=$?
    if [[ $status -eq 0 ]] && line="$(tail -n 1 "$LOG_DIR/load.out")" && [[ "$line" == "{"* ]]; then
        echo "$line" >>"$OUT"
        sed -n '2,3p' "$LOG_DIR/load.err" | sed "s/^/    /" >&2
    else
        FAILED=$((FAILED + 1))
        local error
        error="$(grep -m1 'duplex-load:' "$LOG_DIR/load.err" || tail -n 1 "$LOG_DIR/load.err")"
        echo "    FAILED: $error" >&2
        python3 - "$OUT" "$name" "$mode" "$error" "$@" <<'EOF'
import json, sys
out, name, mode, error, *args = sys.argv[1:]
opts = dict(zip(args[::2], args[1::2]))
with open(out, "a") as f:
    f.write(json.dumps({"label": name, "mode": mode, "error": error,
                        "connections": int(opts.get("--connections", 1)),
                        "size": int(opts.get("--size", 20)),
                        "in_flight": int(opts.get("--in-flight", 1))}) + "\n")
EOF
        if ! kill -0 "${PID[$name]}" 2>/dev/null; then
            echo "    $name died; restarting it" >&2
            start_server "$name"
        fi
    fi
}

if [[ $TLS -eq 0 ]]; then
    echo "== idle memory: $IDLE_CONNECTIONS connections per server, each server freshly started" >&2
    for name in "${SERVER_LIST[@]}"; do
        start_server "$name"
        sleep 0.5
        echo "  $name (port ${PORT[$name]})" >&2
        run "$name" idle --connections "$IDLE_CONNECTIONS" --duration "$DURATION"
        stop_server "$name"
    done
fi

echo "== echo matrix: ${DURATION} s per cell after ${WARMUP} s of warm-up" >&2
for name in "${SERVER_LIST[@]}"; do
    start_server "$name"
done
CELLS=()
for c in "${CONNECTIONS[@]}"; do
    for s in "${SIZES[@]}"; do
        CELLS+=("$c:$s:1")
    done
done
CELLS+=("${EXTRA_CELLS[@]}")
for round in $(seq "$ROUNDS"); do
    if [[ $ROUNDS -gt 1 ]]; then
        echo "== round $round of $ROUNDS" >&2
    fi
    for cell in "${CELLS[@]}"; do
        IFS=: read -r c s k <<<"$cell"
        for name in "${SERVER_LIST[@]}"; do
            echo "  $name: $c connections × $s B × $k in flight" >&2
            run "$name" echo --connections "$c" --size "$s" --in-flight "$k" $KIND \
                --duration "$DURATION" --warmup "$WARMUP"
        done
    done
done

echo "== handshake rate: $CONNECT_SLOTS concurrent connect cycles" >&2
for round in $(seq "$ROUNDS"); do
    for name in "${SERVER_LIST[@]}"; do
        echo "  $name" >&2
        run "$name" connect --connections "$CONNECT_SLOTS" --duration "$DURATION" --warmup "$WARMUP"
    done
done

TABLES="${OUT%.jsonl}.md"
python3 "$ROOT/benches/compare.py" "$OUT" | tee "$TABLES"
echo "raw results: $OUT" >&2
echo "tables: $TABLES" >&2
if [[ $FAILED -gt 0 ]]; then
    echo "compare.sh: $FAILED run(s) failed" >&2
    exit 1
fi
