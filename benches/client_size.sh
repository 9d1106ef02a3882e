#!/usr/bin/env bash
# What a page downloads: everything a page using DuplexClient (duplex-ws's browser entry) loads,
# beside centrifuge-js and socket.io-client doing the same job, each bundled and minified by
# esbuild in the same run, sizes raw and gzipped (gzip -9).
#
#   benches/client_size.sh                   build the package (wasm/build.sh), then measure
#   benches/client_size.sh --no-build        measure wasm/js/dist as it is
#   benches/client_size.sh --no-build --package DIR   measure another checkout's wasm/js (built)
#
# The pages are benches/client_size/entries/*.mjs (connect, join a room or channel with
# presence, receive, publish); esbuild, centrifuge and socket.io-client are pinned in
# benches/client_size/package.json (`npm ci` there when its lock changed), duplex-ws is the
# package in wasm/js, linked into that node_modules/. Each page is built with
# `esbuild --bundle --platform=browser --format=esm --minify --loader:.wasm=file`; every .js and
# .wasm of its output counts. The duplex-ws page must load the browser build
# (dist/duplex_browser_bg.wasm); a checkout from before that build existed (--package) is
# measured with the one .wasm it has.
#
# Prints a markdown table (ratios: the row's gzipped total over centrifuge-js's and
# socket.io-client's), also written to reports/bench/client-size-<date>.md, and checks the goal:
# the DuplexClient page at most 50 KB (50,000 bytes) gzipped; exit status 1 when over.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

DIR="$ROOT/benches/client_size"
GOAL=50000 # bytes gzipped (50 KB), everything the DuplexClient page loads
build=1
package="$ROOT/wasm/js"
while (($#)); do
    case $1 in
    --no-build) build=0 ;;
    --package)
        package=$(cd "${2:?--package needs a directory}" && pwd)
        shift
        ;;
    -h | --help)
        sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "client_size.sh: unknown argument $1 (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done

need node "esbuild and the npm packages measured"
need npm "the pinned packages of benches/client_size"
need gzip "the gzipped sizes"

if ((build)); then
    bash "$ROOT/wasm/build.sh"
fi
[[ -f $package/dist/duplex_wasm_bg.wasm ]] || {
    echo "client_size.sh: $package/dist/duplex_wasm_bg.wasm is missing (run wasm/build.sh)" >&2
    exit 1
}
# A checkout from before the browser build (one .wasm for both entries) is measured as it is.
split=0
[[ ! -f $package/dist/duplex_browser_bg.wasm ]] || split=1

# npm ci unless node_modules matches the lock; then link the package measured.
if [[ ! -f $DIR/node_modules/.package-lock.json || $DIR/package-lock.json -nt $DIR/node_modules/.package-lock.json ]]; then
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
rm -rf "$DIR/node_modules/duplex-ws"
ln -s "$package" "$DIR/node_modules/duplex-ws"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"; rm -f "$DIR/node_modules/duplex-ws"' EXIT
ESBUILD="$DIR/node_modules/.bin/esbuild"

# sizes FILES...: "raw gzipped" of the files concatenated (0 0 for none).
sizes() {
    if (($# == 0)); then
        echo "0 0"
        return
    fi
    echo "$(cat "$@" | wc -c) $(cat "$@" | gzip -9 | wc -c)"
}

version() { node -p "require('$DIR/node_modules/$1/package.json').version"; }

rows=() # "label js js_gz wasm wasm_gz"
measure() {
    local name=$1 label=$2 out="$TMP/$1"
    (cd "$DIR" && timeout 120 "$ESBUILD" "entries/$name.mjs" --bundle --platform=browser --format=esm \
        --minify --loader:.wasm=file --outdir="$out" --log-level=warning)
    local js wasm
    mapfile -t js < <(find "$out" -name '*.js' | sort)
    mapfile -t wasm < <(find "$out" -name '*.wasm' | sort)
    rows+=("$label|$(sizes "${js[@]}")|$(sizes "${wasm[@]}")")
    if [[ $name == duplex ]] && ((split)); then
        ((${#wasm[@]} == 1)) || {
            echo "client_size.sh: the duplex-ws page has ${#wasm[@]} .wasm files, expected 1" >&2
            exit 1
        }
        cmp -s "${wasm[0]}" "$package/dist/duplex_browser_bg.wasm" || {
            echo "client_size.sh: the duplex-ws page's .wasm is not dist/duplex_browser_bg.wasm" >&2
            exit 1
        }
    fi
}

if ((split)); then
    measure duplex "duplex-ws $(version duplex-ws) (DuplexClient, browser build)"
else
    measure duplex "duplex-ws $(version duplex-ws) (DuplexClient, one build for both entries)"
fi
measure centrifuge "centrifuge-js $(version centrifuge)"
measure socketio "socket.io-client $(version socket.io-client)"

total_gz() { IFS='|' read -r _ js wasm <<<"$1" && echo $((${js#* } + ${wasm#* })); }
centrifuge_gz=$(total_gz "${rows[-2]}")
socketio_gz=$(total_gz "${rows[-1]}")

table() {
    echo "| page (esbuild $("$ESBUILD" --version), --minify) | JS | JS gz | WASM | WASM gz | **total gz** | / centrifuge-js | / socket.io-client |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    local row label js wasm total
    for row in "${rows[@]}"; do
        IFS='|' read -r label js wasm <<<"$row"
        total=$(total_gz "$row")
        awk -v l="$label" -v j="$js" -v w="$wasm" -v t="$total" -v c="$centrifuge_gz" -v s="$socketio_gz" 'BEGIN {
            split(j, J, " "); split(w, W, " ");
            printf "| %s | %d | %d | %d | %d | **%d** | %.2f | %.2f |\n", l, J[1], J[2], W[1], W[2], t, t / c, t / s
        }'
    done
}

mkdir -p "$ROOT/reports/bench"
report="$ROOT/reports/bench/client-size-$(date -u +%Y%m%d-%H%M%S).md"
table | tee "$report"
duplex_gz=$(total_gz "${rows[0]}")
echo "(table also in ${report#"$ROOT"/})"
if ((duplex_gz <= GOAL)); then
    echo "goal met: the DuplexClient page loads $duplex_gz bytes gzipped (goal: at most $GOAL)"
else
    echo "goal NOT met: the DuplexClient page loads $duplex_gz bytes gzipped (goal: at most $GOAL)"
    exit 1
fi
