#!/usr/bin/env bash
# The server HTTP API (docs/API.md) with curl, as the README shows it, against a release
# `duplex serve` whose key comes from DUPLEX_API_KEY:
#   - a `duplex connect -s duplex.v1` member joins a room; `curl -d ... /api/publish` (the
#     README's command) answers {room, epoch, seq} and the member gets the message from "api";
#   - one curl run with several URLs reuses its connection (keep-alive) for /api/rooms and the
#     room's history, which holds the publish;
#   - no key and a wrong key get 401, GET on /api/publish 405 with `Allow: POST`;
#   - the key never appears in the server's log or in /metrics.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

WAIT=20
TMP=$(mktemp -d)
trap 'cleanup_bg; rm -rf "$TMP"' EXIT

[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
command -v curl >/dev/null || die "curl not found (Debian: apt-get install curl)"

KEY="api-sh-$RANDOM$RANDOM"
port=$(free_port)
base="http://127.0.0.1:$port"
DUPLEX_API_KEY="old-key,$KEY" RUST_LOG=debug start_server "$TMP/serve.log" "$port" "$WAIT" "duplex serve" \
    "$DUPLEX_BIN" serve --listen "127.0.0.1:$port" --threads 1

member_out="$TMP/member.out"
start_bg "$member_out" bash -c '
    { printf "%s\n" "{\"type\":\"hello\",\"client\":\"watcher\"}" \
          "{\"type\":\"join\",\"id\":1,\"room\":\"shop/orders\"}"; sleep 4; } |
        "$0" connect -s duplex.v1 --wait 1 "$1"' "$DUPLEX_BIN" "ws://127.0.0.1:$port/ws"
member=$BG_PID
for _ in $(seq 100); do
    grep -q '"type":"joined"' "$member_out" 2>/dev/null && break
    sleep 0.1
done
grep -q '"type":"joined"' "$member_out" || {
    show_log "$member_out"
    die "the member did not join"
}

# The README's example.
answer=$(curl -sS --max-time "$WAIT" -H "Authorization: Bearer $KEY" \
    -d '{"room": "shop/orders", "data": {"order": 42, "status": "shipped"}}' \
    "$base/api/publish")
[[ $answer =~ ^\{\"epoch\":\"[0-9a-f]{16}\",\"room\":\"shop/orders\",\"seq\":1\}$ ]] ||
    die "publish answered '$answer'"
log "POST /api/publish: $answer"

wait_pid "$member" "$WAIT" || die "the member's duplex connect failed"
want='"type":"message","room":"shop/orders","seq":1,"from":"api","data":{"order":42,"status":"shipped"}'
grep -qF "$want" "$member_out" || {
    show_log "$member_out"
    die "the member did not get $want"
}

# Two calls on one kept-alive connection.
curl -sS --max-time "$WAIT" -v -H "Authorization: Bearer $KEY" \
    "$base/api/rooms" "$base/api/rooms/shop/orders/history?limit=10" >"$TMP/reads.out" 2>"$TMP/reads.err"
grep -q "Re-using existing connection" "$TMP/reads.err" || {
    cat "$TMP/reads.err" >&2
    die "curl did not reuse its connection"
}
grep -qF '"room":"shop/orders","seq":1}' "$TMP/reads.out" || die "rooms: $(cat "$TMP/reads.out")"
grep -qF '"messages":[{"data":{"order":42,"status":"shipped"},"from":"api","seq":1}],"recovered":true' "$TMP/reads.out" ||
    die "history: $(cat "$TMP/reads.out")"

status() { curl -sS --max-time "$WAIT" -o /dev/null -w '%{http_code}' "$@"; }
[[ $(status -d '{}' "$base/api/publish") == 401 ]] || die "no key: not 401"
[[ $(status -H "Authorization: Bearer nope" -d '{}' "$base/api/publish") == 401 ]] || die "wrong key: not 401"
[[ $(status -H "Authorization: Bearer old-key" "$base/api/rooms") == 200 ]] || die "second key refused"
allow=$(curl -sS --max-time "$WAIT" -D - -o /dev/null -H "Authorization: Bearer $KEY" "$base/api/publish" | tr -d '\r')
grep -q '^HTTP/1.1 405' <<<"$allow" && grep -q '^Allow: POST$' <<<"$allow" || die "GET /api/publish: $allow"

curl -sS --max-time "$WAIT" "$base/metrics" >"$TMP/metrics"
if grep -qF "$KEY" "$TMP/serve.log" "$TMP/metrics"; then
    die "the API key appears in the log or /metrics"
fi
log "publish, keep-alive reads, 401, 405; the key is in neither the log nor /metrics"
