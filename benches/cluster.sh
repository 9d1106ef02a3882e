#!/usr/bin/env bash
# Cross-node fan-out of `duplex serve --broker redis://` against single-node mode and against
# Socket.IO 4 with @socket.io/redis-adapter, all driven by duplex-load (benches/load, `--mode
# fanout`) in one run; prints one markdown table.
#
#   benches/cluster.sh [--members "1000 10000"] [--nodes "1 3"] [--seconds S] [--rate "R..."]
#                      [--rate-large "R..."] [--window K] [--peer-deliveries D] [--timeout S]
#                      [--load-threads N] [--json FILE] [--quick] [--no-peer]
#
# For each member count M (one room, members spread round-robin over the nodes, the publisher on
# the first node; every delivery checked exactly once and in seq order by duplex-load):
#   single    one `duplex serve` without --broker
#   redis N   N `duplex serve --broker redis://...` nodes on one redis-server (one per --nodes)
# each paced at every rate of --rate publishes/s (M >= 5000: --rate-large) for --seconds, which
# gives the publish -> last delivery latency p50/p99 and the server CPU per delivered message per
# node (utime+stime from /proc over the publishes, divided by the messages the node delivered);
# then with --window publishes outstanding (each sent when one of them reached every member).
# deliveries/s: members x messages over the time from the first publish to the last delivery.
# The side by side: two duplex nodes and two Socket.IO nodes (benches/peers/node/socketio-room.mjs,
# each its own redis-server), same members, same publisher, same messages, paced at
# --peer-deliveries / M publishes/s (a rate both sustain), for deliveries per server CPU second.
# Redis round trips per connection (its hello and its join: one each) and per publish come
# from the nodes' /metrics (duplex_broker_round_trips_total less duplex_broker_heartbeats_total),
# in the same runs.
#
# --quick (tests/run.sh cluster-bench): 300 members, 1 vs 3 nodes and the Socket.IO pair, a
# second each, no throughput runs. It fails when a delivery is missing, repeated or out of order,
# or when any process fails; never on a figure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/lib.sh
source "$ROOT/tests/lib.sh"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

MEMBERS="1000 10000"
NODES="1 3"
SECONDS_PACED=3
RATE="100 1000"
RATE_LARGE="10"
WINDOW=8
PEER_DELIVERIES=30000
RUN_TIMEOUT=180
LOAD_THREADS=2
JSON_OUT=""
QUICK=0
PEER=1
THROUGHPUT=1
while (($#)); do
    case $1 in
    --members) MEMBERS=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --seconds) SECONDS_PACED=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --rate-large) RATE_LARGE=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --peer-deliveries) PEER_DELIVERIES=$2; shift 2 ;;
    --timeout) RUN_TIMEOUT=$2; shift 2 ;;
    --load-threads) LOAD_THREADS=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    --no-peer) PEER=0; shift ;;
    --quick)
        QUICK=1 MEMBERS=300 NODES="1 3" SECONDS_PACED=1 RATE=200 THROUGHPUT=0 RUN_TIMEOUT=60
        LOAD_THREADS=1
        PEER_DELIVERIES=15000
        shift
        ;;
    -h | --help)
        sed -n '2,27p' "$0"
        exit 0
        ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done

LOAD_BIN="$BIN/duplex-load"
[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
[[ -x $LOAD_BIN ]] || die "$LOAD_BIN not built (cargo build --release -p duplex-load)"
need redis-server "the broker (tests/setup.sh redis installs it)"
if ((PEER)); then
    need node "the Socket.IO peer"
    need npm "the Socket.IO peer's packages"
    ensure_node_peers
fi

max_members=0
for m in $MEMBERS; do
    if ((m > max_members)); then max_members=$m; fi
done
want_files=$((max_members + 1024))
if (($(ulimit -n) < want_files)); then
    ulimit -n "$want_files" 2>/dev/null || die "$max_members members need ulimit -n $want_files (hard limit $(ulimit -Hn))"
fi

workdir=$(mktemp -d "${TMPDIR:-/tmp}/duplex-cluster-bench.XXXXXX")
results="$workdir/results.jsonl"
: >"$results"
trap 'cleanup_bg; rm -rf -- "$workdir"' EXIT
log "logs in $workdir (removed at exit); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The servers of the current configuration.
SERVER_PIDS=()
SERVER_URLS=()
SERVER_LOGS=()

start_redis() { # sets REDIS_URL
    local port
    port=$(free_port)
    start_server "$workdir/redis-$port.log" "$port" 20 "redis-server" \
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no
    SERVER_PIDS+=("$BG_PID")
    SERVER_LOGS+=("$workdir/redis-$port.log")
    REDIS_URL="redis://127.0.0.1:$port"
}

start_duplex() { # start_duplex BROKER_URL|"" : one node
    local port log
    port=$(free_port)
    log="$workdir/duplex-$port.log"
    if [[ -n $1 ]]; then
        start_server "$log" "$port" 30 "duplex serve --broker" \
            "$DUPLEX_BIN" serve --listen "127.0.0.1:$port" --broker "$1/0"
    else
        start_server "$log" "$port" 30 "duplex serve" "$DUPLEX_BIN" serve --listen "127.0.0.1:$port"
    fi
    SERVER_PIDS+=("$BG_PID")
    SERVER_LOGS+=("$log")
    SERVER_URLS+=("ws://127.0.0.1:$port/ws")
    NODE_PIDS+=("$BG_PID")
}

start_socketio() { # start_socketio REDIS_URL : one node
    local port log
    port=$(free_port)
    log="$workdir/socketio-$port.log"
    start_server "$log" "$port" 30 "socket.io node" node "$NODE_DIR/socketio-room.mjs" "$port" "$1"
    SERVER_PIDS+=("$BG_PID")
    SERVER_LOGS+=("$log")
    SERVER_URLS+=("ws://127.0.0.1:$port/socket.io/?EIO=4&transport=websocket")
    NODE_PIDS+=("$BG_PID")
}

stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do stop_pid "$pid"; done
    SERVER_PIDS=() SERVER_URLS=() SERVER_LOGS=() NODE_PIDS=()
}

# Every server of the configuration must still run after each load run.
check_servers() {
    local i
    for i in "${!SERVER_PIDS[@]}"; do
        kill -0 "${SERVER_PIDS[$i]}" 2>/dev/null || {
            show_log "${SERVER_LOGS[$i]}"
            die "$1: a server died (${SERVER_LOGS[$i]##*/})"
        }
    done
}

# load LABEL ARGS... : one bounded duplex-load fanout run over the current nodes; its JSON line
# goes to the results.
load() {
    local label=$1 rc=0 out
    shift
    local args=(--mode fanout --label "$label" --threads "$LOAD_THREADS" --json)
    local i
    for i in "${!SERVER_URLS[@]}"; do
        args+=(--url "${SERVER_URLS[$i]}" --server-pid "${NODE_PIDS[$i]}")
    done
    log "$label: duplex-load ${args[*]} $*"
    out=$(timeout --kill-after=5 "$RUN_TIMEOUT" "$LOAD_BIN" "${args[@]}" "$@" 2>"$workdir/load.err") || rc=$?
    sed 's/^/    /' "$workdir/load.err" >&2
    if ((rc == 124 || rc == 137)); then log "$label: did not finish within ${RUN_TIMEOUT}s"; fi
    ((rc == 0)) || die "$label: duplex-load exited with status $rc"
    check_servers "$label"
    printf '%s\n' "$out" >>"$results"
}

# messages_for RATE : the paced run's message count (at least 20).
messages_for() {
    awk -v r="$1" -v s="$SECONDS_PACED" 'BEGIN { n = int(r * s); if (n < 20) n = 20; print n }'
}

# fresh KIND NODES : stops the servers of the previous run and starts NODES of KIND (`single`:
# one `duplex serve`; `redis`: `duplex serve --broker`; `socketio`: the Socket.IO peer; the
# last two on a redis-server of their own). Every run gets fresh servers, so that no run's
# figures (CPU, round trips) carry the previous run's disconnections.
fresh() {
    local kind=$1 n=$2 k
    stop_servers
    NODE_PIDS=()
    case $kind in
    single) start_duplex "" ;;
    redis)
        start_redis
        for ((k = 0; k < n; k++)); do start_duplex "$REDIS_URL"; done
        ;;
    socketio)
        start_redis
        for ((k = 0; k < n; k++)); do start_socketio "$REDIS_URL"; done
        ;;
    esac
}

for m in $MEMBERS; do
    rates=$RATE
    if ((m >= 5000)); then rates=$RATE_LARGE; fi
    thr_messages=$((2000000 / m))
    thr_messages=$((thr_messages < 20 ? 20 : thr_messages > 2000 ? 2000 : thr_messages))
    configs=("single 1")
    for n in $NODES; do configs+=("redis $n"); done
    for config in "${configs[@]}"; do
        read -r kind n <<<"$config"
        extra=()
        if [[ $kind == redis ]]; then extra=(--metrics); fi
        for rate in $rates; do
            fresh "$kind" "$n"
            load "$kind/$n/$m/paced-$rate" --members "$m" --rate "$rate" \
                --messages "$(messages_for "$rate")" --settle 1 "${extra[@]}"
        done
        if ((THROUGHPUT)); then
            fresh "$kind" "$n"
            load "$kind/$n/$m/max" --members "$m" --window "$WINDOW" --messages "$thr_messages" \
                --settle 1 "${extra[@]}"
        fi
    done

    if ((PEER)); then
        peer_rate=$(awk -v d="$PEER_DELIVERIES" -v m="$m" 'BEGIN { r = d / m; if (r < 1) r = 1; printf "%.3f", r }')
        peer=(--members "$m" --rate "$peer_rate" --messages "$(messages_for "$peer_rate")" --settle 1)
        fresh redis 2
        load "redis/2/$m/peer" "${peer[@]}" --metrics
        fresh socketio 2
        load "socketio/2/$m/peer" "${peer[@]}" --protocol socketio
    fi
done
stop_servers

if [[ -n $JSON_OUT ]]; then cp "$results" "$JSON_OUT"; fi
python3 "$ROOT/benches/cluster_table.py" "$results"
if ((QUICK)); then log "quick run: every delivery checked, figures not judged"; fi
log "ok"
