#!/usr/bin/env bash
# The HTTP transports (SSE, long polling) on three `duplex serve --broker redis://` nodes behind a
# real HAProxy (round-robin, no stickiness), pages in headless Chromium, the node holding a
# fallback session SIGKILLed (tests/browser/fallback_lb.mjs says what is checked).
#
#   tests/fallback_lb.sh [--no-broker]
#
# 1. redis-server (Debian's) on a free port, no persistence, 127.0.0.1 only;
# 2. three `duplex serve --broker redis://127.0.0.1:P --client-dir wasm/js` on free ports
#    ($DUPLEX_BIN; the pages import the WASM client from the nodes);
# 3. HAProxy with docs/deploy/haproxy.cfg as tests/cluster_lb.sh makes it (tests/lib.sh
#    haproxy_round_robin): `bind :80` moved to a free port, the three nodes, `balance
#    roundrobin`, no stickiness; plus `http-response set-header X-Served-By %s`, so that the
#    pages see which node answered each request;
# 4. node tests/browser/fallback_lb.mjs against HAProxy, with each node's name, port and pid.
# Everything started here is stopped on exit, however the run ends.
#
# --no-broker starts the nodes without --broker (three separate hubs, no relaying): the run must
# then fail (a session's requests reaching another node are refused), which shows that the
# check can fail.
#
# Needs redis-server, HAProxy, Node, Chromium and playwright-core (tests/setup.sh redis haproxy
# browser, run here) and wasm/js/dist (bash wasm/build.sh, run here when missing). Honours
# DUPLEX_BIN and CARGO_TARGET_DIR (without DUPLEX_BIN: cargo build --release -p duplex).
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
*) die "usage: tests/fallback_lb.sh [--no-broker]" ;;
esac

TMP=$(mktemp -d)
trap 'cleanup_bg; rm -rf "$TMP"' EXIT

bash "$REPO_ROOT/tests/setup.sh" redis haproxy browser
command -v redis-server >/dev/null || die "redis-server not found (tests/setup.sh redis installs it)"
[[ -x $CHROMIUM ]] || die "$CHROMIUM not found (tests/setup.sh browser installs it)"
if [[ ! -f $REPO_ROOT/wasm/js/dist/duplex_browser_bg.wasm ]]; then
    log "wasm/js/dist missing: bash wasm/build.sh"
    bash "$REPO_ROOT/wasm/build.sh"
fi
if [[ -z $given_bin ]]; then
    log "cargo build --release -p duplex"
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
    args=(serve --listen "127.0.0.1:$port" --threads 1 --client-dir "$REPO_ROOT/wasm/js")
    [[ -z $broker ]] || args+=(--broker "redis://127.0.0.1:$redis_port")
    start_server "$TMP/node$i.log" "$port" "$WAIT" "duplex serve (node $i)" "$DUPLEX_BIN" "${args[@]}"
    node_args+=("node$i:$port:$BG_PID")
    servers+=("    server node$i 127.0.0.1:$port check inter 2s")
done
if [[ -n $broker ]]; then
    health=$(curl -fsS --max-time 5 "http://127.0.0.1:$(cut -d: -f2 <<<"${node_args[0]}")/healthz")
    [[ $health == *"broker: redis up"* ]] || die "node 1 /healthz says '$health', expected 'broker: redis up'"
fi
if [[ -n $broker ]]; then how="on redis://127.0.0.1:$redis_port"; else how="WITHOUT --broker"; fi
log "$NODES nodes $how: ${node_args[*]} (name:port:pid)"

# 3. HAProxy, round-robin over the nodes, naming the node of each answer.
lb_port=$(free_port)
haproxy_round_robin "$TMP" "$lb_port" "$WAIT" "    http-response set-header X-Served-By %s" "${servers[@]}"

# 4. The pages.
rc=0
timeout --kill-after=5 "$NODE_TIMEOUT" node "$BROWSER_DIR/fallback_lb.mjs" "http://127.0.0.1:$lb_port/" \
    --nodes "$(
        IFS=,
        echo "${node_args[*]}"
    )" --name "fallback_lb" </dev/null || rc=$?
if ((rc != 0)); then
    for ((i = 1; i <= NODES; i++)); do show_log "$TMP/node$i.log"; done
    show_log "$TMP/haproxy.log"
    die "fallback_lb.mjs failed (exit $rc)"
fi
log "ok"
