#!/usr/bin/env bash
# The compression bench: permessage-deflate of duplex-core beside Node `ws`, on the same chat
# JSON messages, measured in the same run.
#
#   benches/deflate_compare.sh                          20,000 messages, 5 rounds × 2 passes
#   benches/deflate_compare.sh --messages 5000 --rounds 3 --passes 1
#
# Writes the payloads once (benches/deflate_payloads.py, deterministic) to
# reports/bench/deflate-payloads-N.jsonl, builds `deflate-bench` (benches/deflate_bench.rs,
# release), then runs it and benches/peers/node/deflate-bench.mjs in turn, each pass in the
# other order, so slow drifts of the machine's load touch both alike. Both compress every
# message in order with and without context takeover (window bits 15, zlib level 6, no
# threshold), decompress the results, check them against the input, and print one JSON line.
# The lines go to reports/bench/deflate-<date>.jsonl, the tables (also printed) beside them
# as .md: compressed size in % (all messages and by size), compress and decompress MB/s, and
# duplex-vs-ws ratio columns (above 1: duplex better). Each bench run is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'USAGE'

Options:
  --messages N    messages in the payload file (default 20000, about 8 MB)
  --rounds N      rounds per bench run, each on fresh state (default 5)
  --passes N      runs of each bench (default 2); every figure is the best round of all
  --no-build      use the deflate-bench binary and node_modules already built
  --timeout SECS  limit for each bench run (default 600)
USAGE
}

MESSAGES=20000
ROUNDS=5
PASSES=2
BUILD=1
RUN_TIMEOUT=600
while [[ $# -gt 0 ]]; do
    case "$1" in
        --messages) MESSAGES="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --passes) PASSES="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --timeout) RUN_TIMEOUT="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "deflate_compare.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
for n in "$MESSAGES" "$ROUNDS" "$PASSES" "$RUN_TIMEOUT"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "deflate_compare.sh: '$n' is not a positive number" >&2; exit 2; }
done

need cargo "Rust toolchain"
need python3 "payloads and tables"
need node "Node.js for the ws bench"
need npm "npm ci"
need timeout "coreutils"

if [[ $BUILD -eq 1 ]]; then
    echo "== building deflate-bench (release)" >&2
    cargo build --release -p duplex-benches --bin deflate-bench >&2
    ensure_node_peers
fi
[[ -x $BIN/deflate-bench ]] || { echo "deflate_compare.sh: $BIN/deflate-bench not built" >&2; exit 1; }

mkdir -p "$ROOT/reports/bench"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$ROOT/reports/bench/deflate-$STAMP.jsonl"
TABLES="${OUT%.jsonl}.md"
PAYLOADS="$ROOT/reports/bench/deflate-payloads-$MESSAGES.jsonl"
python3 benches/deflate_payloads.py "$PAYLOADS" --messages "$MESSAGES"
python3 benches/deflate_compare.py meta "$PAYLOADS" --passes "$PASSES" --rounds "$ROUNDS" >"$OUT"

# bench NAME CMD...: one bench run; its JSON line goes to $OUT, its summary to stderr.
bench() {
    local name=$1 line status=0
    shift
    echo "  $name" >&2
    line="$(timeout --kill-after=5 "$RUN_TIMEOUT" "$@" "$PAYLOADS" --rounds "$ROUNDS")" || status=$?
    if [[ $status -ne 0 || $line != "{"* ]]; then
        ((status != 124)) || echo "deflate_compare.sh: $name did not finish within ${RUN_TIMEOUT}s" >&2
        echo "deflate_compare.sh: $name failed (exit $status)" >&2
        exit 1
    fi
    echo "$line" >>"$OUT"
}

echo "== $PASSES passes × $ROUNDS rounds on $MESSAGES messages" >&2
for ((pass = 1; pass <= PASSES; pass++)); do
    echo "pass $pass" >&2
    if ((pass % 2)); then
        bench duplex "$BIN/deflate-bench"
        bench ws node "$NODE_DIR/deflate-bench.mjs"
    else
        bench ws node "$NODE_DIR/deflate-bench.mjs"
        bench duplex "$BIN/deflate-bench"
    fi
done

printf '{"loadavg_end": %s}\n' "$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT"
python3 benches/deflate_compare.py table "$OUT" "$PAYLOADS" | tee "$TABLES"
echo "raw results: $OUT" >&2
echo "tables: $TABLES" >&2
