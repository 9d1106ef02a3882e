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
# 3. HAProxy with docs/deploy/haproxy.cfg, its `bind :80` moved to a free port and its one
#    `server` line replaced by the three nodes, `balance roundrobin` (the default, said
#    explicitly), no stickiness;
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
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[[ -x $HAPROXY ]] || die "haproxy not found (tests/setup.sh haproxy installs it)"
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

# 3. HAProxy: the documented configuration, with the three nodes.
lb_port=$(free_port)
cfg="$TMP/haproxy.cfg"
server_line='^\s*server duplex1 127\.0\.0\.1:9001 check inter 2s$'
grep -Eq '^\s*bind :80$' docs/deploy/haproxy.cfg || die "docs/deploy/haproxy.cfg: no 'bind :80' to move"
grep -q "$server_line" docs/deploy/haproxy.cfg || die "docs/deploy/haproxy.cfg: no 'server duplex1 127.0.0.1:9001 check inter 2s' to replace"
servers_text=$(printf '%s\n' "    balance roundrobin" "${servers[@]}")
python3 -c '
import re, sys
port, servers, src = sys.argv[1:]
text = open(src).read()
text = re.sub(r"(?m)^(\s*)bind :80$", rf"\1bind 127.0.0.1:{port}", text)
text = re.sub(r"(?m)^\s*server duplex1 127\.0\.0\.1:9001 check inter 2s$", lambda m: servers, text)
sys.stdout.write(text)
' "$lb_port" "$servers_text" docs/deploy/haproxy.cfg >"$cfg"
! grep -Eq 'stick|cookie|balance source|hash-type' "$cfg" || die "the HAProxy configuration has stickiness: $(grep -E 'stick|cookie|balance source|hash-type' "$cfg")"
"$HAPROXY" -c -q -f "$cfg" || {
    cat "$cfg" >&2
    die "haproxy -c refused the configuration above"
}
# `-n`: see tests/deploy.sh (a test machine's file limit may be lower than the production maxconn).
start_server "$TMP/haproxy.log" "$lb_port" "$WAIT" haproxy "$HAPROXY" -n 1000 -f "$cfg" -db
# Until HAProxy's first health checks passed: every node answers through it.
deadline=$((SECONDS + WAIT))
until [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$lb_port/healthz" 2>/dev/null | head -1) == ok ]]; do
    ((SECONDS < deadline)) || die "GET /healthz through HAProxy did not answer ok within ${WAIT}s"
    sleep 0.2
done
log "$("$HAPROXY" -v | head -1 | cut -d' ' -f1-3) on 127.0.0.1:$lb_port, round-robin over $NODES nodes"

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
