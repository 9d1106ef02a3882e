#!/usr/bin/env bash
# The duplex-ws npm package as its users get it, on 127.0.0.1:
#
# 1. unbuilt: importing a checkout without dist/ (the Node entry, and init() of the browser
#    entry) fails with an error that says to run wasm/build.sh, and so does `npm pack`;
# 2. packed: `npm pack` in wasm/js includes the built dist/; the tarball installs into a fresh
#    folder, where tests/bundle/packed.mjs imports `duplex-ws` and runs a DuplexSocket echo
#    against `duplex echo` and two DuplexClients against `duplex serve`;
# 3. bundled: esbuild (`--bundle --platform=browser --loader:.wasm=file`) and Vite
#    (`vite build --base ./`, no configuration file), pinned in tests/bundle/package.json, each
#    build the page of tests/bundle/page/ from that installed package; the bundles must hold no
#    Node module, and their one .wasm must be the package's browser build
#    (dist/duplex_browser_bg.wasm: the channel session without the RFC 6455 engine);
#    tests/bundle/check.mjs opens each page in headless Chromium, where it joins a room of the
#    `duplex serve`, publishes, and must get its message back with the .wasm loaded from the
#    bundle; the same page from the Vite dev server too.
#
#   tests/bundle.sh
#
# Needs Node >= 20.19 (Vite 8) with npm, Chromium (tests/setup.sh browser) and the built
# package (wasm/build.sh; run here when dist/ is missing). Installs its bundlers with
# `tests/setup.sh bundle`. Honours DUPLEX_BIN (built with `cargo build --release -p duplex`
# when unset).
set -euo pipefail
given_bin=${DUPLEX_BIN:-}
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

PKG_DIR="$REPO_ROOT/wasm/js"
BUNDLE_DIR="$REPO_ROOT/tests/bundle"
NODE_TIMEOUT=60   # seconds, each node check
BUILD_TIMEOUT=300 # seconds, each bundler run

command -v node >/dev/null || die "node not found (Node >= 20.19)"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' ||
    die "Node >= 20.19 required (Vite 8), found $(node --version)"
[[ -x $CHROMIUM ]] || die "$CHROMIUM not found: install Chromium (tests/setup.sh browser as root) or set CHROMIUM"

if [[ -z $given_bin ]]; then
    log "cargo build --release -p duplex (the servers the pages talk to)"
    cargo build --release -p duplex
fi
[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not found"
if [[ ! -f $PKG_DIR/dist/duplex_wasm_bg.wasm || ! -f $PKG_DIR/dist/duplex_browser_bg.wasm ]]; then
    bash "$REPO_ROOT/wasm/build.sh"
fi
bash "$REPO_ROOT/tests/setup.sh" browser bundle

TMP=$(mktemp -d)
trap 'cleanup_bg; rm -rf "$TMP"' EXIT

# --- 1. an unbuilt checkout -------------------------------------------------------------------
log "unbuilt: importing wasm/js without dist/ must say to run wasm/build.sh"
mkdir "$TMP/unbuilt"
cp -r "$PKG_DIR/package.json" "$PKG_DIR/index.js" "$PKG_DIR/browser.js" "$PKG_DIR/src" "$TMP/unbuilt/"
check_unbuilt() {
    local what=$1 script=$2 out rc=0
    out=$(cd "$TMP/unbuilt" && timeout "$NODE_TIMEOUT" node --input-type=module -e "$script" 2>&1) || rc=$?
    ((rc != 0)) || die "unbuilt: $what succeeded without dist/: $out"
    ((rc != 124)) || die "unbuilt: $what timed out"
    grep -qF 'Run `bash wasm/build.sh`' <<<"$out" || die "unbuilt: $what did not say to run wasm/build.sh: $out"
    log "unbuilt: $what: $(grep -m1 -o 'duplex-ws is not built[^.]*' <<<"$out")"
}
check_unbuilt "import of the Node entry" "await import('./index.js');"
check_unbuilt "init() of the browser entry" "const m = await import('./browser.js'); await m.init(new Uint8Array(8));"
rc=0
out=$(cd "$TMP/unbuilt" && npm pack --dry-run 2>&1) || rc=$?
((rc != 0)) || die "unbuilt: npm pack succeeded without dist/"
grep -qF 'run bash wasm/build.sh first' <<<"$out" || die "unbuilt: npm pack did not say to run wasm/build.sh: $out"
log "unbuilt: npm pack refuses: $(grep -m1 -o 'duplex-ws: dist/[^ ]* is missing' <<<"$out")"

# --- 2. npm pack, installed into a fresh folder -----------------------------------------------
log "packed: npm pack in wasm/js"
tarball=$(cd "$PKG_DIR" && npm pack --silent --pack-destination "$TMP")
tarball="$TMP/$tarball"
[[ -f $tarball ]] || die "npm pack did not produce $tarball"
listing=$(tar -tzf "$tarball")
for file in package.json index.js index.d.ts browser.js browser.d.ts src/init.js src/client.js \
    src/socket.js dist/duplex_wasm.js dist/duplex_wasm.d.ts dist/duplex_wasm_bg.wasm \
    dist/duplex_browser.js dist/duplex_browser.d.ts dist/duplex_browser_bg.wasm README.md; do
    grep -qx "package/$file" <<<"$listing" || die "packed: $file is not in $(basename "$tarball")"
done
if grep -q '^package/test/' <<<"$listing"; then
    die "packed: the tarball holds the package's tests"
fi
log "packed: $(basename "$tarball"), $(wc -c <"$tarball") bytes, $(wc -l <<<"$listing") files"

APP="$TMP/app"
mkdir "$APP"
printf '{ "name": "duplex-ws-user", "private": true, "type": "module" }\n' >"$APP/package.json"
(cd "$APP" && npm install --no-audit --no-fund --loglevel=error "$tarball") >&2
[[ -f $APP/node_modules/duplex-ws/dist/duplex_wasm_bg.wasm && ! -L $APP/node_modules/duplex-ws ]] ||
    die "packed: npm install did not put the package (with dist/) into node_modules/duplex-ws"

echo_port=$(free_port)
start_server "$TMP/echo.log" "$echo_port" 10 "duplex echo" \
    "$DUPLEX_BIN" echo --listen "127.0.0.1:$echo_port"
serve_port=$(free_port)
start_server "$TMP/serve.log" "$serve_port" 10 "duplex serve" \
    "$DUPLEX_BIN" serve --listen "127.0.0.1:$serve_port" --threads 2
ws_url="ws://127.0.0.1:$serve_port/ws"

cp "$BUNDLE_DIR/packed.mjs" "$APP/"
log "packed: node packed.mjs in the fresh folder"
(cd "$APP" && timeout "$NODE_TIMEOUT" node packed.mjs "ws://127.0.0.1:$echo_port/" "$ws_url") || {
    show_log "$TMP/echo.log"
    show_log "$TMP/serve.log"
    die "packed: the installed package failed"
}

# --- 3. bundled for a browser -----------------------------------------------------------------
cp -r "$BUNDLE_DIR/page" "$APP/page"
OUT="$TMP/out"
mkdir -p "$OUT/esbuild"
log "bundled: esbuild $("$BUNDLE_DIR/node_modules/.bin/esbuild" --version)"
(cd "$APP" && timeout "$BUILD_TIMEOUT" "$BUNDLE_DIR/node_modules/.bin/esbuild" page/esbuild/main.mjs \
    --bundle --platform=browser --format=esm --loader:.wasm=file --minify \
    --outdir="$OUT/esbuild" --log-level=warning)
cp "$APP/page/esbuild/index.html" "$OUT/esbuild/"
log "bundled: vite $("$BUNDLE_DIR/node_modules/.bin/vite" --version)"
(cd "$APP" && timeout "$BUILD_TIMEOUT" "$BUNDLE_DIR/node_modules/.bin/vite" build page/vite \
    --base ./ --outDir "$OUT/vite" --emptyOutDir --logLevel warn)

for bundler in esbuild vite; do
    mapfile -t wasm_files < <(find "$OUT/$bundler" -name '*.wasm')
    ((${#wasm_files[@]} == 1)) || die "bundled: $bundler: expected one .wasm in its output, found ${#wasm_files[@]}"
    # The browser build (the channel session alone), not the full one of the Node entry.
    cmp -s "${wasm_files[0]}" "$PKG_DIR/dist/duplex_browser_bg.wasm" ||
        die "bundled: $bundler: ${wasm_files[0]} is not the package's browser build (dist/duplex_browser_bg.wasm)"
    # A browser bundle must not need Node: no node: module, nothing a bundler stubbed out, and
    # none of the RFC 6455 engine's glue.
    if grep -rlE 'node:(net|tls|fs)|__vite-browser-external|DuplexSocket|WsConnection' --include='*.js' "$OUT/$bundler"; then
        die "bundled: $bundler: the bundle refers to Node modules, DuplexSocket or WsConnection (files above)"
    fi
    js_bytes=$(find "$OUT/$bundler" -name '*.js' -exec cat {} + | wc -c)
    js_gz=$(find "$OUT/$bundler" -name '*.js' -exec cat {} + | gzip -9 | wc -c)
    log "bundled: $bundler: JS $js_bytes bytes ($js_gz gzipped), $(basename "${wasm_files[0]}") $(wc -c <"${wasm_files[0]}") bytes"
done

serve_pid=$BG_PID
# What developers run first: the Vite dev server, which pre-bundles dependencies (the .wasm URL
# of the package must survive that too).
dev_port=$(free_port)
start_server "$TMP/vite-dev.log" "$dev_port" 60 "the Vite dev server" \
    "$BUNDLE_DIR/node_modules/.bin/vite" "$APP/page/vite" --host 127.0.0.1 --port "$dev_port" --strictPort
dev_pid=$BG_PID

log "bundled: the pages in headless Chromium against duplex serve ($ws_url)"
timeout --kill-after=10 200 node "$BUNDLE_DIR/check.mjs" "$OUT" "$ws_url" esbuild vite \
    "vite-dev=http://127.0.0.1:$dev_port/" || {
    show_log "$TMP/serve.log"
    show_log "$TMP/vite-dev.log"
    die "bundled: a page did not work in Chromium"
}
kill -0 "$serve_pid" 2>/dev/null || die "duplex serve exited during the test"
kill -0 "$dev_pid" 2>/dev/null || die "the Vite dev server exited during the test"
log "ok: unbuilt error, packed install, esbuild and Vite builds and the Vite dev server in Chromium"
