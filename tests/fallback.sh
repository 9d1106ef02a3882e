#!/usr/bin/env bash
# The HTTP transports through real proxies that block WebSocket: nginx from Debian in front of
# `duplex serve`, pages in headless Chromium.
#
#   tests/fallback.sh
#
# One nginx, two servers in front of one `duplex serve` port:
#   - "proxy": `proxy_pass` alone, nginx's defaults otherwise: HTTP/1.0 to the server and no
#     `Upgrade` forwarded, so no WebSocket opens through it; responses are buffered unless the
#     server says `X-Accel-Buffering: no` (its SSE streams do);
#   - "buffering": the same plus `proxy_ignore_headers X-Accel-Buffering`: SSE streams are
#     buffered too, so their `open` event never comes through in time.
# curl checks what nginx does (a WebSocket handshake through it is not upgraded; POST /ws/open
# passes), then tests/browser/fallback.mjs runs the demo page's WASM client (--client-dir
# wasm/js) on three pages: directly (WebSocket), through "proxy" (falls back to SSE; the fallback
# time is printed and must be under 3 s) and through "buffering" (ends on long polling); messages
# between all three, then a server restart with messages sent while it is down, each delivered
# once. The node script owns `duplex serve` (it kills and restarts it on the same port).
# Then tests/fallback_lb.sh: the same transports on three nodes behind round-robin HAProxy.
#
# Needs nginx, Node, Chromium and playwright-core (tests/setup.sh browser nginx, run here) and
# wasm/js/dist (bash wasm/build.sh, run here when missing). Honours DUPLEX_BIN and
# CARGO_TARGET_DIR.
set -euo pipefail
given_bin=${DUPLEX_BIN:-}
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

WAIT=20               # seconds, for nginx to listen
CHROMIUM_TIMEOUT=120  # seconds, the whole Chromium run (it stops itself earlier)

TMP=$(mktemp -d)
trap 'cleanup_bg; rm -rf "$TMP"' EXIT

bash "$REPO_ROOT/tests/setup.sh" browser nginx
[[ -x $CHROMIUM ]] || die "$CHROMIUM not found: install Chromium (tests/setup.sh browser as root) or set CHROMIUM"
if [[ ! -f $REPO_ROOT/wasm/js/dist/duplex_browser_bg.wasm ]]; then
    log "wasm/js/dist missing: bash wasm/build.sh"
    bash "$REPO_ROOT/wasm/build.sh"
fi
if [[ -z $given_bin ]]; then
    log "cargo build --release -p duplex"
    cargo build --release -p duplex
fi
[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not found"

server_port=$(free_port)
proxy_port=$(free_port)
buffering_port=$(free_port)
dir="$TMP/nginx"
mkdir -p "$dir/logs" "$dir/tmp"
cat >"$dir/nginx.conf" <<EOF
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log info;
events { worker_connections 1024; }
http {
    access_log $dir/logs/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    # nginx's defaults: HTTP/1.0 to the server, no Upgrade forwarded, responses buffered unless
    # the server sends X-Accel-Buffering: no.
    server {
        listen 127.0.0.1:$proxy_port;
        location / {
            proxy_pass http://127.0.0.1:$server_port;
        }
    }
    # The same, but X-Accel-Buffering ignored: streams are buffered too.
    server {
        listen 127.0.0.1:$buffering_port;
        location / {
            proxy_pass http://127.0.0.1:$server_port;
            proxy_ignore_headers X-Accel-Buffering;
        }
    }
}
EOF
nginx=$(command -v nginx || echo /usr/sbin/nginx)
"$nginx" -t -q -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" || die "nginx -t refused the configuration"
start_server "$TMP/nginx.log" "$proxy_port" "$WAIT" nginx "$nginx" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf"

# What nginx does, checked with curl against a server started here (the browser run starts its
# own on the same port once this one is stopped).
start_server "$TMP/serve.log" "$server_port" "$WAIT" "duplex serve" \
    "$DUPLEX_BIN" serve --listen "127.0.0.1:$server_port" --threads 1
serve_pid=$BG_PID
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Sec-WebSocket-Protocol: duplex.v1' \
    "http://127.0.0.1:$proxy_port/ws") || true
[[ $status != 101 ]] || die "nginx upgraded a WebSocket with its default proxy settings"
log "a WebSocket handshake through nginx's defaults is answered $status (not upgraded)"
for port in "$proxy_port" "$buffering_port"; do
    body=$(curl -fsS --max-time 5 -X POST "http://127.0.0.1:$port/ws/open") ||
        die "POST /ws/open through nginx on $port failed"
    [[ $body == *'"session"'* ]] || die "POST /ws/open through nginx on $port answered '$body'"
done
log "POST /ws/open passes both nginx servers"
stop_pid "$serve_pid"

log "node tests/browser/fallback.mjs (nginx on $proxy_port and $buffering_port, duplex serve on $server_port)"
rc=0
timeout --kill-after=10 "$CHROMIUM_TIMEOUT" node "$BROWSER_DIR/fallback.mjs" --server-port "$server_port" \
    --proxy "http://127.0.0.1:$proxy_port/" --buffering "http://127.0.0.1:$buffering_port/" || rc=$?
if ((rc != 0)); then
    show_log "$dir/logs/error.log"
    die "tests/browser/fallback.mjs failed (exit $rc)"
fi

DUPLEX_BIN=$DUPLEX_BIN bash "$REPO_ROOT/tests/fallback_lb.sh"
