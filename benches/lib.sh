# shellcheck shell=bash
# Helpers shared by the bench scripts (sourced, never run): compare.sh, deflate_compare.sh.
#
#   ROOT=...; source "$ROOT/benches/lib.sh"
#
# Needs ROOT (the repository root). Sets TARGET_DIR (cargo's, honouring CARGO_TARGET_DIR),
# BIN (its release directory) and NODE_DIR (the Node peers).

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# shellcheck disable=SC2034 # used by the scripts that source this file
BIN="$TARGET_DIR/release"
NODE_DIR="$ROOT/benches/peers/node"

# need COMMAND WHY: exit with a message unless COMMAND is on the PATH.
need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "$(basename "$0"): $1 is required ($2)" >&2
        exit 1
    }
}

# ensure_node_peers: `npm ci` in benches/peers/node unless node_modules matches its lock file.
ensure_node_peers() {
    if [[ ! -f "$NODE_DIR/node_modules/.package-lock.json" ||
        "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules/.package-lock.json" ]]; then
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund >&2)
    fi
}
