#!/usr/bin/env bash
# The duplex-ws npm package (wasm/js): builds the WebAssembly and its glue (wasm/build.sh),
# then runs the package's node --test suites against `duplex echo` (and a TLS terminator in
# front of it), `duplex serve` (the DuplexClient suites, over WebSocket, SSE and long polling)
# and scripted servers, all on 127.0.0.1.
#
#   tests/wasm.sh
#
# Needs Node >= 20, cargo with rustup (the wasm32 target is added when missing) and openssl
# (the wss:// test makes a throwaway certificate). The first run installs wasm-bindgen-cli
# under tests/.cache/ (a few minutes); later runs reuse it. Honours CARGO_TARGET_DIR and
# DUPLEX_BIN (the server binary; built with `cargo build --release -p duplex` when unset).
set -euo pipefail
given_bin=${DUPLEX_BIN:-}
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

TEST_TIMEOUT=${WASM_TEST_TIMEOUT:-300} # the whole node --test run, seconds

command -v node >/dev/null || die "node not found (Node >= 20)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || die "Node >= 20 required, found $(node --version)"

if [[ -z $given_bin ]]; then
    # Up to date after the suite's native-build step: then this costs nothing.
    log "cargo build --release -p duplex (the echo server the tests run)"
    cargo build --release -p duplex
fi
[[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not found"
export DUPLEX_BIN

bash "$REPO_ROOT/wasm/build.sh"
# The package's devDependencies (the eventsource package, for the SSE transport's tests).
bash "$REPO_ROOT/tests/setup.sh" wasm

log "node --test wasm/js/test/*.test.mjs (DUPLEX_BIN=$DUPLEX_BIN)"
tests=("$REPO_ROOT"/wasm/js/test/*.test.mjs)
timeout --kill-after=10 "$TEST_TIMEOUT" node --test "${tests[@]}"
