#!/usr/bin/env bash
# Installs the tools the conformance and interop steps need, idempotently.
#
#   tests/setup.sh [python] [node] [browser] [bundle] [wasm] [redis] [haproxy] [nginx]   (no
#   argument: the first three and redis)
#
# - python:  a venv at tests/.cache/venv with kosoku (Autobahn TestSuite
#   runner) and websockets, pinned below.
# - node:    `npm ci` in tests/interop/ from the committed package-lock.json
#   (ws 8.x).
# - browser: Debian's chromium at $CHROMIUM (default /usr/bin/chromium),
#   installed with apt-get when missing and we are root, and `npm ci` in
#   tests/browser/ (playwright-core, which drives it and downloads no
#   browser). Without root and without Chromium: a failure in CI (CI=true),
#   otherwise a SKIP line, and the Chromium interop cases skip too.
# - bundle:  `npm ci` in tests/bundle/ (esbuild and Vite, the bundlers
#   tests/bundle.sh builds a page importing duplex-ws with).
# - wasm:    `npm ci` in wasm/js/ (the duplex-ws package's devDependencies: the `eventsource`
#   package, a real EventSource over Node's fetch for the SSE transport's tests).
# - redis:   Debian's redis-server (the multi-node tests start their own on a free
#   port), installed with apt-get when missing and we are root; without root and
#   without it: a failure, since tests/cluster.sh cannot run.
# - haproxy: Debian's haproxy (tests/cluster_lb.sh runs its own in front of several nodes),
#   installed with apt-get when missing and we are root, without starting the package's own
#   service; without root and without it: a failure.
# - nginx:   Debian's nginx (tests/fallback.sh runs its own in front of `duplex serve`), the same
#   way as haproxy.
#
# Each part is skipped when its stamp file matches the pins (or, for
# Chromium, when the binary is there), so a second run costs nothing.
# tests/.cache is gitignored; delete it to force a reinstall.
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

# apt_install PACKAGE...: Debian packages, quietly (root only).
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

can_apt_install() {
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null
}

ensure_node() {
    command -v node >/dev/null && command -v npm >/dev/null && return 0
    # CI provides Node 20; this is a last resort for a bare Debian box.
    can_apt_install || die "node and npm are required (Node 20)"
    log "node/npm missing: installing Debian's nodejs and npm"
    apt_install nodejs npm
}

# npm_ci DIR MODULE: `npm ci` in DIR from its committed package-lock.json,
# unless the stamp says it was done for this lock file and Node version and
# node_modules/MODULE is there.
npm_ci() {
    local dir=$1 module=$2 stamp want
    stamp="$CACHE_DIR/$(basename "$dir")-npm.stamp"
    want="node $(node --version) lock $(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [[ -f $stamp && "$(cat "$stamp")" == "$want" && -f $dir/node_modules/$module/package.json ]]; then
        return 0
    fi
    log "npm ci in ${dir#"$REPO_ROOT"/}"
    mkdir -p "$CACHE_DIR"
    (cd "$dir" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error) >&2
    printf '%s\n' "$want" >"$stamp"
}

setup_node() {
    ensure_node
    npm_ci "$INTEROP_DIR" ws
}

setup_browser() {
    if [[ ! -x $CHROMIUM ]]; then
        if can_apt_install; then
            log "$CHROMIUM missing: installing Debian's chromium"
            apt_install chromium
            [[ -x $CHROMIUM ]] || die "chromium installed, but $CHROMIUM is still missing (set CHROMIUM to its path)"
        elif [[ ${CI:-} == true ]]; then
            die "$CHROMIUM not found and not root: install Chromium (apt-get install chromium) or set CHROMIUM"
        else
            log "SKIP: $CHROMIUM not found and not root: the Chromium interop cases will be skipped (install it: apt-get install chromium)"
        fi
    fi
    ensure_node
    npm_ci "$BROWSER_DIR" playwright-core
}

setup_wasm() {
    ensure_node
    npm_ci "$REPO_ROOT/wasm/js" eventsource
}

setup_redis() {
    command -v redis-server >/dev/null && return 0
    if can_apt_install; then
        log "redis-server missing: installing Debian's redis-server"
        apt_install redis-server
        command -v redis-server >/dev/null || die "redis-server installed, but not on PATH"
    else
        die "redis-server not found and not root: install it (apt-get install redis-server)"
    fi
}

setup_haproxy() {
    setup_proxy haproxy
}

setup_nginx() {
    setup_proxy nginx
}

# setup_proxy NAME: Debian's package NAME (haproxy, nginx), whose binary has the same name.
setup_proxy() {
    local name=$1
    command -v "$name" >/dev/null || [[ -x /usr/sbin/$name ]] && return 0
    can_apt_install || die "$name not found and not root: install it (apt-get install $name)"
    log "$name missing: installing Debian's $name"
    # Without starting the package's own service (it would take port 80).
    local policy=/usr/sbin/policy-rc.d added= rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added=1
    fi
    apt_install "$name" || rc=$?
    [[ -z $added ]] || rm -f "$policy"
    ((rc == 0)) || die "apt-get install $name failed (exit $rc)"
    command -v "$name" >/dev/null || [[ -x /usr/sbin/$name ]] || die "$name installed, but not found"
}

setup_bundle() {
    ensure_node
    npm_ci "$REPO_ROOT/tests/bundle" vite
}

main() {
    local parts=("$@")
    ((${#parts[@]})) || parts=(python node browser redis)
    local part
    for part in "${parts[@]}"; do
        case $part in
        python) setup_python ;;
        node) setup_node ;;
        browser) setup_browser ;;
        bundle) setup_bundle ;;
        wasm) setup_wasm ;;
        redis) setup_redis ;;
        haproxy) setup_haproxy ;;
        nginx) setup_nginx ;;
        *) die "unknown part '$part' (expected: python, node, browser, bundle, wasm, redis, haproxy, nginx)" ;;
        esac
    done
}

main "$@"
