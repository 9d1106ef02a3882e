#!/usr/bin/env bash
# The demo page and the dashboard of `duplex serve` as people see them, in headless Chromium.
#
#   tests/demo.sh
#
# 1. The WASM client in the binary: wasm/js/dist (bash wasm/build.sh when missing), then
#    `cargo build --release -p duplex`, whose build script embeds it (native/build.rs), unless
#    DUPLEX_BIN is given (it must then embed the client).
# 2. `duplex serve` without --client-dir, checked with curl: it serves the package's browser
#    entry and the .wasm under /duplex-ws/ from the binary, the page names that entry
#    (<meta name="duplex-client" ... data-source="embedded">), and /dashboard is 404 (not
#    enabled).
# 3. tests/browser/demo_layout.mjs against it: two users at desktop (1280x800) and phone
#    (390x844) widths, 60 messages, layout checked by element positions (the document never
#    scrolls, #log does, nothing overlaps or leaves the viewport), "(you)", live renames,
#    connection state and transport; with the WASM client (--impl wasm), then with the
#    built-in fallback (--impl builtin, ?client=builtin). Screenshots in tests/.cache/demo/.
#    Then tests/browser/webrtc_file.mjs on the same server, with each client: ann sends ben a
#    1 MiB random file peer to peer (an RTCDataChannel negotiated with send/direct, loopback
#    host candidates); its SHA-256 on arrival must equal the one sent and the server's /metrics
#    byte counters must grow by less than 256 KiB.
# 4. `duplex serve --dashboard` (small --max-backlog and --socket-send-buffer, so that a stalled
#    member becomes a slow consumer at once): tests/browser/dashboard.mjs opens /dashboard,
#    makes traffic and checks that connections, messages/s, rooms and slow-consumer drops
#    change on it, and takes a screenshot.
#
# Needs Node, Chromium and playwright-core (tests/setup.sh browser, run here).
set -euo pipefail
given_bin=${DUPLEX_BIN:-}
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

CHROMIUM_TIMEOUT=120 # seconds, each Chromium run (it stops itself earlier)
SHOTS="$CACHE_DIR/demo"
logdir="$REPO_ROOT/reports/logs"
mkdir -p "$logdir" "$SHOTS"

bash "$REPO_ROOT/tests/setup.sh" browser
[[ -x $CHROMIUM ]] || die "$CHROMIUM not found: install Chromium (tests/setup.sh browser as root) or set CHROMIUM"
if [[ ! -f $REPO_ROOT/wasm/js/dist/duplex_wasm_bg.wasm ]]; then
    log "wasm/js/dist missing: bash wasm/build.sh"
    bash "$REPO_ROOT/wasm/build.sh"
fi
if [[ -z $given_bin ]]; then
    log "cargo build --release -p duplex (embeds wasm/js with its dist/)"
    cargo build --release -p duplex
fi
[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not found"

# status_of URL: the HTTP status of a GET.
status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1"; }

# --- 2. the embedded client, /dashboard off --------------------------------------------------
port=$(free_port)
slog="$logdir/demo-serve.log"
start_server "$slog" "$port" 30 "duplex serve" "$DUPLEX_BIN" serve --listen "127.0.0.1:$port" --threads 2
url="http://127.0.0.1:$port"
page=$(curl -fsS --max-time 5 "$url/")
meta='<meta name="duplex-client" content="/duplex-ws/browser.js" data-source="embedded">'
[[ $page == *"$meta"* ]] ||
    die "GET / does not name the embedded client ($meta): was the binary built with wasm/js/dist? $(grep -o '<meta name="duplex-client"[^>]*>' <<<"$page")"
code=$(status_of "$url/duplex-ws/browser.js")
[[ $code == 200 ]] || die "GET /duplex-ws/browser.js answered $code without --client-dir, expected 200 (embedded)"
# Every file of dist/ that a page may load, byte for byte as built (whatever the build names them).
served=()
while IFS= read -r file; do
    rel=${file#"$REPO_ROOT/wasm/js/"}
    cmp -s <(curl -fsS --max-time 5 "$url/duplex-ws/$rel") "$file" ||
        die "GET /duplex-ws/$rel is not wasm/js/$rel (rebuild: cargo build --release -p duplex)"
    if [[ $rel == *.wasm ]]; then
        type=$(curl -fsS -o /dev/null -w '%{content_type}' --max-time 5 "$url/duplex-ws/$rel")
        [[ $type == application/wasm ]] || die "$rel is served as '$type', expected application/wasm"
    fi
    served+=("$rel ($(wc -c <"$file") bytes)")
done < <(find "$REPO_ROOT/wasm/js/dist" -type f \( -name '*.js' -o -name '*.wasm' \) | sort)
((${#served[@]})) || die "wasm/js/dist holds no .js or .wasm"
code=$(status_of "$url/dashboard")
[[ $code == 404 ]] || die "GET /dashboard answered $code without --dashboard, expected 404"
log "embedded client served as built: ${served[*]}; /dashboard is 404 without --dashboard"

# --- 3. the page at two widths, WASM client then built-in fallback ----------------------------
for impl in wasm builtin; do
    timeout --kill-after=5 "$CHROMIUM_TIMEOUT" node "$BROWSER_DIR/demo_layout.mjs" "$url/" \
        --name "$impl" --impl "$impl" --shots "$SHOTS" </dev/null ||
        {
            show_log "$slog"
            die "demo_layout.mjs --impl $impl failed"
        }
done
for impl in wasm builtin; do
    timeout --kill-after=5 "$CHROMIUM_TIMEOUT" node "$BROWSER_DIR/webrtc_file.mjs" "$url/" \
        --name "webrtc-file($impl)" --impl "$impl" </dev/null ||
        {
            show_log "$slog"
            die "webrtc_file.mjs --impl $impl failed"
        }
done
stop_pid "$BG_PID"

# --- 4. the dashboard under traffic -------------------------------------------------------------
port=$(free_port)
slog="$logdir/demo-dashboard-serve.log"
start_server "$slog" "$port" 30 "duplex serve --dashboard" "$DUPLEX_BIN" serve --listen "127.0.0.1:$port" \
    --threads 2 --dashboard --max-backlog 65536 --socket-send-buffer 8192
code=$(status_of "http://127.0.0.1:$port/dashboard")
[[ $code == 200 ]] || die "GET /dashboard answered $code with --dashboard, expected 200"
timeout --kill-after=5 "$CHROMIUM_TIMEOUT" node "$BROWSER_DIR/dashboard.mjs" "http://127.0.0.1:$port/" \
    --shots "$SHOTS" </dev/null ||
    {
        show_log "$slog"
        die "dashboard.mjs failed"
    }
stop_pid "$BG_PID"
log "ok: screenshots in ${SHOTS#"$REPO_ROOT"/}: $(cd "$SHOTS" && echo *.png)"
