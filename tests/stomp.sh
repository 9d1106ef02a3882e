#!/usr/bin/env bash
# STOMP over WebSocket against a release `duplex serve` (docs/PROTOCOL.md, STOMP):
#   - @stomp/stompjs 7.5.0 in Node over the `ws` package (tests/interop/stomp_node.mjs), beside
#     a duplex.v1 client: one sequence in a shared room both ways, bodies and content types,
#     message-id EPOCH:SEQ, receipts after the ack, SEND id dedup, DISCONNECT receipt, /ws with a
#     STOMP subprotocol and /stomp without one, SUBSCRIBE since with client acks, heart-beats
#     every second, ERROR then close on a bad destination, and with --jwt-secret the token in
#     `passcode` (a bad one gets ERROR);
#     Frames split over messages and batched in one, a bad frame answered with ERROR while
#     another client goes on, a bearer token on the upgrade; two `--broker` nodes over a real
#     redis-server (STOMP on one, duplex.v1 on the other, one sequence);
#   - @stomp/stompjs's browser bundle in headless Chromium (tests/browser/stomp_page.mjs) beside
#     the browser's own WebSocket speaking duplex.v1.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

WAIT=20
TMP=$(mktemp -d)
trap 'cleanup_bg; rm -rf "$TMP"' EXIT

[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
bash "$REPO_ROOT/tests/setup.sh" node browser redis
command -v redis-server >/dev/null || die "redis-server not found (tests/setup.sh redis installs it)"

SECRET="stomp-sh-$RANDOM$RANDOM"
port=$(free_port)
start_server "$TMP/serve.log" "$port" "$WAIT" "duplex serve" \
    "$DUPLEX_BIN" serve --listen "127.0.0.1:$port" --threads 2
jwt_port=$(free_port)
start_server "$TMP/serve-jwt.log" "$jwt_port" "$WAIT" "duplex serve --jwt-secret" \
    "$DUPLEX_BIN" serve --listen "127.0.0.1:$jwt_port" --threads 1 --jwt-secret "$SECRET"

redis_port=$(free_port)
start_server "$TMP/redis.log" "$redis_port" "$WAIT" redis-server \
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
node_ports=()
for n in a b; do
    p=$(free_port)
    start_server "$TMP/node-$n.log" "$p" "$WAIT" "duplex serve --broker (node $n)" \
        "$DUPLEX_BIN" serve --listen "127.0.0.1:$p" --threads 1 --broker "redis://127.0.0.1:$redis_port/0"
    node_ports+=("$p")
done

log "stompjs in Node"
timeout --kill-after=5 90 node "$REPO_ROOT/tests/interop/stomp_node.mjs" "$port" "$jwt_port" "$SECRET" "${node_ports[@]}" || {
    show_log "$TMP/serve.log"
    die "stompjs in Node failed"
}

log "stompjs in Chromium"
timeout --kill-after=5 90 node "$REPO_ROOT/tests/browser/stomp_page.mjs" "http://127.0.0.1:$port/" || {
    show_log "$TMP/serve.log"
    die "stompjs in Chromium failed"
}
