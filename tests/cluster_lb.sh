#!/usr/bin/env bash
# Three `duplex serve --broker redis://` nodes behind a real HAProxy (round-robin, no
# stickiness), with the demo page in headless Chromium on two pages through it, one node
# SIGKILLed mid-session (tests/browser/cluster_demo.mjs says what is checked).
#
#   tests/cluster_lb.sh [--no-broker]
#
# 1. redis-server (Debian's) on a free port, no persistence, 127.0.0.1 only;
# 2. three `duplex serve --broker redis://127.0.0.1:P` on free ports: $DUPLEX_BIN, the release
#    binary with the WASM client embedded (as tests/demo.sh: wasm/build.sh when wasm/js/dist is
#    missing, then `cargo build --release -p duplex`, unless DUPLEX_BIN is given);
# 3. HAProxy with docs/deploy/haproxy.cfg (tests/lib.sh haproxy_round_robin), its `bind :80`
#    moved to a free port and its one `server` line replaced by the three nodes, `balance
#    roundrobin` (the default, said explicitly), no stickiness;
# 4. node tests/browser/cluster_demo.mjs against HAProxy, with each node's port and pid.
# Everything started here is stopped on exit, however the run ends.
#
# --no-broker starts the nodes without --broker (three separate hubs): the run must then fail
# (the pages on different nodes do not see each other), which shows that the check can fail.
set -euo pipefail
given_bin=${DUPLEX_BIN:-}
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

WAIT=20           # seconds, for each process to listen
NODE_TIMEOUT=90   # seconds, the whole Chromium run (it stops itself earlier)
NODES=3
broker=1
case ${1:-} in
"") ;;
--no-broker) broker= ;;
*) die "usage: tests/cluster_lb.sh [--no-broker]" ;;
esac

TMP=$(mktemp -d)
trap 'cleanup_bg; rm -rf "$TMP"' EXIT

bash "$REPO_ROOT/tests/setup.sh" redis haproxy browser
command -v redis-server >/dev/null || die "redis-server not found (tests/setup.sh redis installs it)"
[[ -x $CHROMIUM ]] || die "$CHROMIUM not found (tests/setup.sh browser installs it)"
# As tests/demo.sh: the release binary with the WASM client embedded, unless DUPLEX_BIN is given.
if [[ -z $given_bin ]]; then
    if [[ ! -f $REPO_ROOT/wasm/js/dist/duplex_wasm_bg.wasm ]]; then
        log "wasm/js/dist missing: bash wasm/build.sh"
        bash "$REPO_ROOT/wasm/build.sh"
    fi
    log "cargo build --release -p duplex (embeds wasm/js with its dist/)"
    cargo build --release -p duplex
fi
[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not found"

# 1. Redis.
redis_port=$(free_port)
start_server "$TMP/redis.log" "$redis_port" "$WAIT" redis-server \
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
log "$(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$redis_port"

# 2. The nodes.
node_args=() servers=()
for ((i = 1; i <= NODES; i++)); do
    port=$(free_port)
    args=(serve --listen "127.0.0.1:$port" --threads 1)
    [[ -z $broker ]] || args+=(--broker "redis://127.0.0.1:$redis_port")
    start_server "$TMP/node$i.log" "$port" "$WAIT" "duplex serve (node $i)" "$DUPLEX_BIN" "${args[@]}"
    node_args+=("$port:$BG_PID")
    servers+=("    server node$i 127.0.0.1:$port check inter 2s")
    page=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/")
    [[ $page == *'data-source="embedded"'* ]] ||
        die "$DUPLEX_BIN does not embed the WASM client (bash wasm/build.sh, then cargo build --release -p duplex)"
done
if [[ -n $broker ]]; then
    health=$(curl -fsS --max-time 5 "http://127.0.0.1:${node_args[0]%%:*}/healthz")
    [[ $health == *"broker: redis up"* ]] || die "node 1 /healthz says '$health', expected 'broker: redis up'"
fi
if [[ -n $broker ]]; then how="on redis://127.0.0.1:$redis_port"; else how="WITHOUT --broker"; fi
log "$NODES nodes $how: ${node_args[*]} (port:pid)"

# 3. HAProxy: the documented configuration, with the three nodes (tests/lib.sh).
lb_port=$(free_port)
haproxy_round_robin "$TMP" "$lb_port" "$WAIT" "" "${servers[@]}"

# 4. The pages.
rc=0
timeout --kill-after=5 "$NODE_TIMEOUT" node "$BROWSER_DIR/cluster_demo.mjs" "http://127.0.0.1:$lb_port/" \
    --nodes "$(
        IFS=,
        echo "${node_args[*]}"
    )" --name "cluster_lb" </dev/null || rc=$?
if ((rc != 0)); then
    for ((i = 1; i <= NODES; i++)); do show_log "$TMP/node$i.log"; done
    show_log "$TMP/haproxy.log"
    die "cluster_demo.mjs failed (exit $rc)"
fi
log "ok"
