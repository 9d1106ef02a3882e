#!/usr/bin/env bash
# Installs the tools the conformance and interop steps need, idempotently.
#
#   tests/setup.sh [python] [node]     (no argument: both)
#
# - python: a venv at tests/.cache/venv with kosoku (Autobahn TestSuite
#   runner) and websockets, pinned below.
# - node:   `npm ci` in tests/interop/ from the committed package-lock.json
#   (ws 8.x).
#
# Each part is skipped when its stamp file matches the pins, so a second run
# costs nothing. tests/.cache is gitignored; delete it to force a reinstall.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

KOSOKU_VERSION=0.1.0
WEBSOCKETS_VERSION=17.4
PY_PINS=("kosoku==$KOSOKU_VERSION" "websockets==$WEBSOCKETS_VERSION")

setup_python() {
    command -v python3 >/dev/null || die "python3 not found (CI provides Python 3.11)"
    local stamp="$VENV/.duplex-stamp" want
    want="$(python3 --version 2>&1) ${PY_PINS[*]}"
    if [[ -x $VENV/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]] &&
        "$VENV/bin/python" -c 'import kosoku, websockets' 2>/dev/null; then
        return 0
    fi
    log "creating $VENV with ${PY_PINS[*]}"
    rm -rf "$VENV"
    mkdir -p "$CACHE_DIR"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-input "${PY_PINS[@]}"
    "$VENV/bin/python" -c 'import kosoku, websockets'
    printf '%s\n' "$want" >"$stamp"
}

setup_node() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        # CI provides Node 20; this is a last resort for a bare Debian box.
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            log "node/npm missing: installing Debian's nodejs and npm"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
        else
            die "node and npm are required (Node 20)"
        fi
    fi
    local stamp="$CACHE_DIR/interop-npm.stamp" want
    want="node $(node --version) lock $(sha256sum "$INTEROP_DIR/package-lock.json" | cut -d' ' -f1)"
    if [[ -f $stamp && "$(cat "$stamp")" == "$want" && -f $INTEROP_DIR/node_modules/ws/package.json ]]; then
        return 0
    fi
    log "npm ci in tests/interop"
    mkdir -p "$CACHE_DIR"
    (cd "$INTEROP_DIR" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error) >&2
    printf '%s\n' "$want" >"$stamp"
}

main() {
    local parts=("$@")
    ((${#parts[@]})) || parts=(python node)
    local part
    for part in "${parts[@]}"; do
        case $part in
        python) setup_python ;;
        node) setup_node ;;
        *) die "unknown part '$part' (expected: python, node)" ;;
        esac
    done
}

main "$@"
