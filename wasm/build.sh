#!/usr/bin/env bash
# Builds the WebAssembly of the duplex-ws npm package into wasm/js/dist/.
#
#   wasm/build.sh
#
# 1. wasm-bindgen-cli of exactly the version of the wasm-bindgen crate in Cargo.lock, installed
#    once under tests/.cache/wasm-bindgen-VERSION/ (the two must match, or the CLI refuses the
#    .wasm);
# 2. the wasm32-unknown-unknown target (rustup);
# 3. `cargo build -p duplex-wasm --profile wasm-release` (size-tuned, see the root Cargo.toml);
# 4. `wasm-bindgen --target web` into wasm/js/dist/ (an ES module loading the .wasm, for Node
#    and browsers alike; see wasm/js/README.md);
# 5. `wasm-opt -Oz` when binaryen is installed and its output loads (see optimise below);
#    DUPLEX_WASM_OPT=0 skips it. It is optional: it saves about 10% raw, under 1% gzipped.
# Prints the size of the .wasm, raw and gzipped.
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
PROFILE="wasm-release"
CACHE_DIR="$REPO_ROOT/tests/.cache"
DIST="$REPO_ROOT/wasm/js/dist"
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

# Post-optimises the .wasm with wasm-opt when one is installed and its output still loads.
# Debian's binaryen (108) rewrites wasm-bindgen's externref table into one the engine refuses
# ("function-typed object must be null"), so the output is instantiated through the glue
# before it replaces the original; newer binaryen releases (from their own packages) pass.
optimise() {
    local wasm=$1 opt
    [[ ${DUPLEX_WASM_OPT:-1} != 0 ]] || return 0
    if ! opt=$(command -v wasm-opt); then
        log "wasm-opt not found: the .wasm is not post-optimised (optional)"
        return 0
    fi
    if ! command -v node >/dev/null; then
        log "node not found: cannot check wasm-opt's output, keeping the .wasm as built"
        return 0
    fi
    log "$("$opt" --version) -Oz"
    # Features come from the module's target_features section.
    if ! "$opt" -Oz --detect-features "$wasm" -o "$wasm.opt"; then
        log "wasm-opt failed; keeping the .wasm as built"
        rm -f "$wasm.opt"
        return 0
    fi
    local check
    if check=$(node --input-type=module -e '
        import { readFile } from "node:fs/promises";
        try {
            const glue = await import(process.argv[1]);
            await glue.default({ module_or_path: await readFile(process.argv[2]) });
            new glue.WsOptions().free();
        } catch (error) {
            console.log(error.message);
            process.exit(1);
        }
    ' "$DIST/duplex_wasm.js" "$wasm.opt" 2>&1); then
        mv "$wasm.opt" "$wasm"
    else
        log "wasm-opt's output does not load (${check:0:100}); keeping the .wasm as built"
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

main() {
    local version
    version=$(bindgen_version)
    [[ -n $version ]] || die "no wasm-bindgen in Cargo.lock (is duplex-wasm a workspace member?)"
    ensure_bindgen "$version"
    ensure_target

    log "cargo build -p duplex-wasm --target $TARGET --profile $PROFILE"
    cargo build -p duplex-wasm --target "$TARGET" --profile "$PROFILE"
    local wasm="$TARGET_DIR/$TARGET/$PROFILE/duplex_wasm.wasm"
    [[ -f $wasm ]] || die "$wasm was not built"

    log "wasm-bindgen $version --target web -> ${DIST#"$REPO_ROOT"/}"
    rm -rf "$DIST"
    mkdir -p "$DIST"
    "$WASM_BINDGEN" --target web --out-dir "$DIST" --out-name duplex_wasm \
        --remove-name-section --remove-producers-section "$wasm"

    local out="$DIST/duplex_wasm_bg.wasm"
    optimise "$out"
    size_line "$out"
}

main "$@"
