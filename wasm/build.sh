#!/usr/bin/env bash
# Builds the WebAssembly of the duplex-ws npm package into wasm/js/dist/, in two builds:
#
# - full (dist/duplex_wasm.js + duplex_wasm_bg.wasm): `duplex-wasm` with its default features,
#   ChannelSession and WsConnection (the RFC 6455 engine with permessage-deflate that
#   DuplexSocket drives): the Node entry of the package;
# - browser (dist/duplex_browser.js + duplex_browser_bg.wasm): `--no-default-features`,
#   ChannelSession alone, for DuplexClient over the browser's own WebSocket: the browser entry.
#
#   wasm/build.sh
#
# 1. wasm-bindgen-cli of exactly the version of the wasm-bindgen crate in Cargo.lock, installed
#    once under tests/.cache/wasm-bindgen-VERSION/ (the two must match, or the CLI refuses the
#    .wasm);
# 2. the wasm32-unknown-unknown target (rustup);
# 3. for each build, `cargo build -p duplex-wasm` with a size-tuned profile (wasm-release for
#    the full build, wasm-browser for the browser one; see the root Cargo.toml) and
#    `wasm-bindgen --target web` into wasm/js/dist/ (an ES module loading the .wasm; see
#    wasm/js/README.md);
# 4. for the browser build, wasm-opt from binaryen, pinned in wasm/tools/package.json (`npm ci`
#    there once): `-Oz` and `-O1`, the output that is smallest gzipped kept if it is smaller
#    than the input and it loads and works (see optimise below). DUPLEX_WASM_OPT=0 skips it;
#    DUPLEX_WASM_OPT=PATH uses that wasm-opt instead. Without npm it is skipped with a note.
#    The full build is left as rustc made it: in Node its size hardly matters (wasm-opt saves
#    1% of it gzipped), and the RFC 6455 engine and deflate are tested as built.
# Prints the size of each .wasm, raw and gzipped.
#
# Honours CARGO_TARGET_DIR (default: target/ of the repository).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() {
    printf 'build.sh: FAIL: %s\n' "$*" >&2
    exit 1
}

TARGET=wasm32-unknown-unknown
CACHE_DIR="$REPO_ROOT/tests/.cache"
DIST="$REPO_ROOT/wasm/js/dist"
TOOLS_DIR="$REPO_ROOT/wasm/tools"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"

# The wasm-bindgen version the crate is locked to.
bindgen_version() {
    awk '
        $0 == "name = \"wasm-bindgen\"" { found = 1; next }
        found && /^version = / { gsub(/"/, "", $3); print $3; exit }
    ' Cargo.lock
}

ensure_bindgen() {
    local version=$1 root="$CACHE_DIR/wasm-bindgen-$1"
    WASM_BINDGEN="$root/bin/wasm-bindgen"
    if [[ -x $WASM_BINDGEN && "$("$WASM_BINDGEN" --version)" == "wasm-bindgen $version" ]]; then
        return 0
    fi
    log "installing wasm-bindgen-cli $version into $root (once; a few minutes)"
    mkdir -p "$CACHE_DIR"
    # No TLS features: they only serve the test runner's downloads. Built in cargo's own
    # temporary directory, not the workspace's target. The CLI's lockfile is tried first; if
    # the registry cannot satisfy it, the newest compatible dependencies are used.
    local args=(install wasm-bindgen-cli --version "$version" --no-default-features --root "$root")
    if ! env -u CARGO_TARGET_DIR cargo "${args[@]}" --locked; then
        log "wasm-bindgen-cli $version does not install with its lockfile; retrying without it"
        env -u CARGO_TARGET_DIR cargo "${args[@]}"
    fi
    [[ "$("$WASM_BINDGEN" --version)" == "wasm-bindgen $version" ]] ||
        die "$WASM_BINDGEN is not version $version"
}

ensure_target() {
    if command -v rustup >/dev/null; then
        if ! rustup target list --installed | grep -qx "$TARGET"; then
            log "installing rustup target $TARGET"
            rustup target add "$TARGET"
        fi
    fi
}

# The wasm-opt to use: DUPLEX_WASM_OPT when it is a path, else the one of binaryen pinned in
# wasm/tools/package.json (`npm ci` there when its lock changed). Debian's binaryen (108)
# rewrites wasm-bindgen's externref table into one the engine refuses ("function-typed object
# must be null"), so a system wasm-opt is not used. Prints nothing when there is none.
find_wasm_opt() {
    local setting=${DUPLEX_WASM_OPT:-1}
    [[ $setting != 0 ]] || return 0
    if [[ $setting != 1 ]]; then
        [[ -x $setting ]] || die "DUPLEX_WASM_OPT=$setting is not an executable"
        printf '%s\n' "$setting"
        return 0
    fi
    if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
        log "npm not found: the .wasm is not post-optimised with wasm-opt (optional)"
        return 0
    fi
    local stamp="$CACHE_DIR/wasm-tools-npm.stamp" want
    want="node $(node --version) lock $(sha256sum "$TOOLS_DIR/package-lock.json" | cut -d' ' -f1)"
    if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" || ! -x $TOOLS_DIR/node_modules/.bin/wasm-opt ]]; then
        log "npm ci in wasm/tools (binaryen's wasm-opt)"
        mkdir -p "$CACHE_DIR"
        (cd "$TOOLS_DIR" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error) >&2
        printf '%s\n' "$want" >"$stamp"
    fi
    printf '%s\n' "$TOOLS_DIR/node_modules/.bin/wasm-opt"
}

# gz FILE: its size gzipped (-9), what a page downloads.
gz() { gzip -9 -c "$1" | wc -c; }

# optimise WASM GLUE: post-optimises WASM with wasm-opt. -Oz gives the fewest bytes, but gzip
# compresses the output of lighter passes better (-O1 is the smallest gzipped for the browser
# build), so both are tried and the output that is smallest gzipped replaces WASM when it is
# smaller than WASM and it instantiates through GLUE and works (the check below).
optimise() {
    local wasm=$1 glue=$2 opt=$WASM_OPT level best="" best_gz
    [[ -n $opt ]] || return 0
    best_gz=$(gz "$wasm")
    for level in -Oz -O1; do
        # The features are the ones rustc enables for the target (reference types for
        # wasm-bindgen's externref table, multivalue, bulk memory, ...), read from the module.
        if ! "$opt" "$level" --detect-features --strip-debug --strip-producers "$wasm" -o "$wasm$level" >&2; then
            log "wasm-opt $level failed"
            rm -f "$wasm$level"
            continue
        fi
        local size
        size=$(gz "$wasm$level")
        log "wasm-opt $level: $(wc -c <"$wasm$level") bytes, $size gzipped (input: $(wc -c <"$wasm"), $(gz "$wasm"))"
        if ((size < best_gz)); then
            [[ -z $best ]] || rm -f "$wasm$best"
            best=$level best_gz=$size
        else
            rm -f "$wasm$level"
        fi
    done
    if [[ -z $best ]]; then
        log "wasm-opt does not make ${wasm##*/} smaller gzipped; keeping it as built"
        return 0
    fi
    mv "$wasm$best" "$wasm.opt"
    local check
    if check=$(node --input-type=module -e '
        import { readFile } from "node:fs/promises";
        try {
            const glue = await import(process.argv[1]);
            await glue.default({ module_or_path: await readFile(process.argv[2]) });
            // A channel session queues its hello once connected, and reads a welcome.
            const session = new glue.ChannelSession(undefined, undefined, 100, 1000, 2, 10, 1000);
            session.connected(0);
            const hello = JSON.parse(session.poll_transmit());
            if (hello.type !== "hello") throw new Error(`first frame ${JSON.stringify(hello)}`);
            session.receive(1, JSON.stringify({ type: "welcome", client: "c1", heartbeat_ms: 0 }));
            if (session.client_id() !== "c1") throw new Error("no welcome");
            session.free();
        } catch (error) {
            console.log(error.message);
            process.exit(1);
        }
    ' "$glue" "$wasm.opt" 2>&1); then
        log "keeping wasm-opt $best's output"
        mv "$wasm.opt" "$wasm"
    else
        log "wasm-opt's output does not load (${check:0:200}); keeping the .wasm as built"
        rm -f "$wasm.opt"
    fi
}

size_line() {
    local file=$1 raw gz
    raw=$(wc -c <"$file")
    gz=$(gzip -9 -c "$file" | wc -c)
    awk -v f="${file#"$REPO_ROOT"/}" -v raw="$raw" -v gz="$gz" 'BEGIN {
        printf "%s: %d bytes raw (%.1f KiB), %d bytes gzipped (%.1f KiB)\n", f, raw, raw / 1024, gz, gz / 1024
    }'
}

# build NAME PROFILE OPTIMISE CARGO_ARGS...: one build of duplex-wasm into dist/NAME.js +
# dist/NAME_bg.wasm, post-optimised when OPTIMISE is 1.
build() {
    local name=$1 profile=$2 optimise=$3
    shift 3
    log "cargo build -p duplex-wasm --target $TARGET --profile $profile $*"
    cargo build -p duplex-wasm --target "$TARGET" --profile "$profile" "$@"
    local wasm="$TARGET_DIR/$TARGET/$profile/duplex_wasm.wasm"
    [[ -f $wasm ]] || die "$wasm was not built"
    log "wasm-bindgen $BINDGEN_VERSION --target web -> ${DIST#"$REPO_ROOT"/}/$name.js"
    "$WASM_BINDGEN" --target web --out-dir "$DIST" --out-name "$name" \
        --remove-name-section --remove-producers-section "$wasm"
    ((optimise == 0)) || optimise "$DIST/${name}_bg.wasm" "$DIST/$name.js"
    size_line "$DIST/${name}_bg.wasm"
}

main() {
    BINDGEN_VERSION=$(bindgen_version)
    [[ -n $BINDGEN_VERSION ]] || die "no wasm-bindgen in Cargo.lock (is duplex-wasm a workspace member?)"
    ensure_bindgen "$BINDGEN_VERSION"
    ensure_target
    WASM_OPT=$(find_wasm_opt)
    [[ -z $WASM_OPT ]] || log "$("$WASM_OPT" --version) (for the browser build)"

    rm -rf "$DIST"
    mkdir -p "$DIST"
    build duplex_wasm wasm-release 0
    build duplex_browser wasm-browser 1 --no-default-features
}

main "$@"
