#!/usr/bin/env bash
# Fan-out side by side: one publish to 1,000 and to 10,000 subscribers on `duplex serve` (rooms,
# the duplex.v1 envelope) and on uWebSockets.js's own pub/sub (benches/peers/node/uws-pubsub.mjs:
# `ws.subscribe(topic)` when a connection opens, `app.publish(topic, msg)` for each message),
# driven by duplex-load (benches/load, `--mode fanout`) in one run.
#
#   benches/fanout.sh                       1,000 and 10,000 subscribers (3 to 6 minutes)
#   benches/fanout.sh --quick               1,000 subscribers only
#   benches/fanout.sh --members "1000 5000" --messages 200 --rounds 3
#
# Servers (--servers, in this order per cell):
#   duplex   `duplex serve --threads 1`: members `hello` and `join` one room (with presence), a
#            publisher that is also a member `publish`es; every member reads the duplex.v1
#            `message` envelope (`type`, `room`, `seq`, `from`, `data`), which users get.
#   duplex-raw  the transport alone: duplex-tokio's chat_server example (tokio/examples: tokio's
#            multi-thread runtime, one worker when pinned to one CPU; each text message relayed
#            to every connection through a `tokio::sync::broadcast` channel, one writer task per
#            connection): no rooms, no envelope, the same bytes as uws.
#   uws      uWebSockets.js pub/sub: no envelope, the members read the publisher's bytes as they
#            are (the same `data` object the duplex publisher sends, about 175 bytes of JSON).
# duplex-load checks that every member, the publisher included, reads every message exactly once
# and in order. The publisher sends one message at a time: the next publish waits until every
# member has read the previous one.
#
# Figures per cell: server CPU per delivered message (utime + stime of the server from /proc over
# the publishes, divided by (members + 1) × messages) and publish → last member's read (p50 and
# p99 over the publishes). Each server is pinned to CPU 0 and duplex-load to CPU 1 (taskset);
# every server is started fresh for every run, and the servers run in turn per cell (per round
# with --rounds, the table giving the median of the rounds).
#
# --profile: after the measured runs of each cell, one more duplex run with `perf record -g` on
# the server; `perf report --no-children --sort dso,symbol` is kept beside the results.
#
# Writes the raw JSON lines to reports/bench/fanout-<date>.jsonl and the markdown table (also
# printed) beside them as .md. Every process started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

usage() {
    sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

Usage: benches/fanout.sh [options]

Options:
  --quick            1,000 subscribers only
  --members LIST     subscriber counts, space- or comma-separated (default "1000 10000")
  --messages N       publishes per run (default: 500,000 deliveries per run, 50 to 1,000
                     publishes)
  --rounds R         run every cell R times, servers in turn each round; the median is shown
                     (default 1)
  --servers LIST     comma-separated subset of: duplex,duplex-raw,uws (default: all three)
  --settle SECS      pause between every member joined and the first publish (default 1)
  --profile          also profile `duplex serve` in one more run per cell (perf record -g)
  --timeout SECS     longest a duplex-load run may take (default 180)
  --no-build         use the binaries and node_modules already built
EOF
}

MEMBERS="1000 10000"
MESSAGES=""
ROUNDS=1
SERVERS="duplex,duplex-raw,uws"
SETTLE=1
PROFILE=0
RUN_TIMEOUT=180
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) MEMBERS="1000" ;;
        --members) MEMBERS="${2//,/ }"; shift ;;
        --messages) MESSAGES="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --servers) SERVERS="$2"; shift ;;
        --settle) SETTLE="$2"; shift ;;
        --profile) PROFILE=1 ;;
        --timeout) RUN_TIMEOUT="$2"; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "fanout.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
for m in $MEMBERS; do
    [[ $m =~ ^[1-9][0-9]*$ ]] || { echo "fanout.sh: --members wants numbers, got $m" >&2; exit 2; }
done
[[ -z $MESSAGES || $MESSAGES =~ ^[1-9][0-9]*$ ]] || { echo "fanout.sh: --messages wants a number" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "fanout.sh: --rounds wants a number" >&2; exit 2; }
IFS=',' read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    case "$s" in
        duplex|duplex-raw|uws) ;;
        *) echo "fanout.sh: unknown server $s (duplex, duplex-raw, uws)" >&2; exit 2 ;;
    esac
done

# --- processes: everything started here is stopped on exit ------------------------------------

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/duplex-fanout.XXXXXX")"
cleanup() {
    stop_started
    rm -rf -- "$WORKDIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools, build -------------------------------------------------------------------------------

need cargo "Rust toolchain"
need python3 "for the table"
need taskset "util-linux"
if [[ " ${SERVER_LIST[*]} " == *" uws "* ]]; then
    need node "Node.js for the uWebSockets.js peer"
    need npm "npm ci"
fi
if [[ $PROFILE -eq 1 ]]; then
    need perf "linux-perf, for --profile"
fi

pin_cpus "servers and load generator share it"

if [[ $BUILD -eq 1 ]]; then
    echo "== building (release)" >&2
    cargo build --release -p duplex -p duplex-load >&2
    if [[ " ${SERVER_LIST[*]} " == *" duplex-raw "* ]]; then
        cargo build --release -p duplex-tokio --example chat_server >&2
    fi
    if [[ " ${SERVER_LIST[*]} " == *" uws "* ]]; then
        ensure_node_peers
    fi
fi
for bin in duplex duplex-load; do
    [[ -x $BIN/$bin ]] || { echo "fanout.sh: $BIN/$bin not built (drop --no-build)" >&2; exit 1; }
done
if [[ " ${SERVER_LIST[*]} " == *" duplex-raw "* && ! -x $BIN/examples/chat_server ]]; then
    echo "fanout.sh: $BIN/examples/chat_server not built (drop --no-build)" >&2
    exit 1
fi

max_members=0
for m in $MEMBERS; do
    if ((m > max_members)); then max_members=$m; fi
done
want_files=$((max_members + 1024))
if [[ "$(ulimit -n)" != unlimited && "$(ulimit -n)" -lt $want_files ]]; then
    ulimit -n "$want_files" 2>/dev/null || {
        echo "fanout.sh: $max_members subscribers need ulimit -n $want_files (hard limit $(ulimit -Hn))" >&2
        exit 1
    }
fi

# --- servers ------------------------------------------------------------------------------------

# free_port: a port nothing listens on (duplex and uWS use SO_REUSEPORT: a stale server on the
# same port would silently take half the connections).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME: starts a fresh server NAME pinned to the server CPU; sets SERVER_PID and URL.
start() {
    local name="$1" port cmd
    port="$(free_port)"
    case "$name" in
        duplex)
            cmd=("$BIN/duplex" serve --listen "127.0.0.1:$port" --threads 1)
            URL="ws://127.0.0.1:$port/ws"
            ;;
        duplex-raw)
            cmd=("$BIN/examples/chat_server" "127.0.0.1:$port")
            URL="ws://127.0.0.1:$port/"
            ;;
        uws)
            cmd=(node "$NODE_DIR/uws-pubsub.mjs" "$port" fanout)
            URL="ws://127.0.0.1:$port/"
            ;;
    esac
    "${SERVER_CPU[@]}" "${cmd[@]}" >"$WORKDIR/$name.log" 2>&1 </dev/null &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_listening "$name" "$SERVER_PID" "$port" "$WORKDIR/$name.log" 150
}

stop() {
    stop_process "$SERVER_PID" 50
}

# messages_for MEMBERS: the publishes of a run.
messages_for() {
    if [[ -n $MESSAGES ]]; then
        echo "$MESSAGES"
    else
        local n=$((500000 / $1))
        echo $((n < 50 ? 50 : n > 1000 ? 1000 : n))
    fi
}

# --- runs ---------------------------------------------------------------------------------------

mkdir -p "$ROOT/reports/bench"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$ROOT/reports/bench/fanout-$STAMP.jsonl"
: >"$OUT"
python3 - "$OUT" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$ROUNDS" "$SETTLE" <<'EOF'
import json, sys
sys.path.insert(0, "benches")
from compare import machine
out, commit, rounds, settle = sys.argv[1:]
meta = {"mode": "meta", "commit": commit, **machine(), "rounds": int(rounds),
        "settle_s": float(settle)}
with open(out, "a") as f:
    f.write(json.dumps(meta) + "\n")
EOF

# load NAME MEMBERS ROUND [EXTRA...]: one duplex-load fanout run against the running server NAME;
# its JSON line (with the round) goes to $OUT unless EXTRA says it is a profiling run.
load() {
    local name="$1" members="$2" round="$3" protocol=duplex rc=0
    shift 3
    if [[ $name != duplex ]]; then protocol=uws; fi
    local args=(--mode fanout --url "$URL" --server-pid "$SERVER_PID" --protocol "$protocol"
        --members "$members" --messages "$(messages_for "$members")" --settle "$SETTLE"
        --label "$name" --json)
    timeout --kill-after=5 "$RUN_TIMEOUT" "${LOAD_CPU[@]}" "$BIN/duplex-load" "${args[@]}" \
        >"$WORKDIR/load.out" 2>"$WORKDIR/load.err" || rc=$?
    grep -E 'fan-out to the last|all nodes|node 0|% of one core' "$WORKDIR/load.err" | sed 's/^ */    /' >&2 || true
    if [[ $rc -ne 0 ]]; then
        cat "$WORKDIR/load.err" >&2
        echo "fanout.sh: $name, $members subscribers: duplex-load failed (status $rc)" >&2
        echo "--- last lines of the server's log ---" >&2
        tail -n 20 "$WORKDIR/$name.log" >&2
        exit 1
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "fanout.sh: $name died during the run" >&2
        tail -n 20 "$WORKDIR/$name.log" >&2
        exit 1
    fi
    if [[ $# -eq 0 ]]; then
        python3 - "$OUT" "$round" "$WORKDIR/load.out" <<'EOF'
import json, sys
out, rnd, result = sys.argv[1:]
line = open(result).read().strip().splitlines()[-1]
row = json.loads(line)
row["round"] = int(rnd)
with open(out, "a") as f:
    f.write(json.dumps(row) + "\n")
EOF
    fi
}

# profile MEMBERS: one more duplex run under perf record; the report goes beside $OUT.
profile() {
    local members="$1" report="${OUT%.jsonl}-perf-$1.txt" perf_pid
    start duplex
    perf record -g -o "$WORKDIR/perf.data" -p "$SERVER_PID" >"$WORKDIR/perf.log" 2>&1 &
    perf_pid=$!
    STARTED_PIDS+=("$perf_pid")
    load duplex "$members" 0 profiling
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    stop
    perf report -i "$WORKDIR/perf.data" --no-children --sort dso,symbol --stdio \
        >"$WORKDIR/perf-symbols.txt" 2>/dev/null || true
    perf report -i "$WORKDIR/perf.data" --no-children --sort dso --stdio \
        >"$WORKDIR/perf-dso.txt" 2>/dev/null || true
    {
        echo "# perf record -g -p PID of duplex serve over one fanout run of $members subscribers (joins included)"
        grep -E 'fan-out to the last|node 0' "$WORKDIR/load.err" || true
        echo "# by dso"
        grep -E '^ +[0-9]+\.[0-9]+%' "$WORKDIR/perf-dso.txt" | sed -E 's/ +$//' | head -n 10 || true
        echo "# perf report --no-children --sort dso,symbol (top 60)"
        grep -E '^ +[0-9]+\.[0-9]+%' "$WORKDIR/perf-symbols.txt" |
            sed -E 's/( +-)+ *$//; s/ +$//' | head -n 60 || true
    } >"$report"
    rm -f "$WORKDIR/perf.data"
    echo "  profile: $report" >&2
}

started=$SECONDS
for m in $MEMBERS; do
    echo "== $m subscribers, $(messages_for "$m") publishes one at a time, servers in turn" >&2
    for ((round = 1; round <= ROUNDS; round++)); do
        for name in "${SERVER_LIST[@]}"; do
            echo "  $name$([[ $ROUNDS -gt 1 ]] && echo " (round $round)")" >&2
            start "$name"
            load "$name" "$m" "$round"
            stop
        done
    done
    if [[ $PROFILE -eq 1 ]]; then
        profile "$m"
    fi
done

TABLE="${OUT%.jsonl}.md"
python3 - "$OUT" <<'EOF' | tee "$TABLE"
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = next((r for r in rows if r.get("mode") == "meta"), {})
runs = [r for r in rows if r.get("mode") == "fanout"]
servers = []
for r in runs:
    if r["label"] not in servers:
        servers.append(r["label"])
cells = sorted({r["members"] for r in runs})
names = {
    "duplex": "duplex serve (duplex.v1 envelope)",
    "duplex-raw": "duplex-tokio raw relay (raw payload)",
    "uws": "uWS.js pub/sub (raw payload)",
}

def med(label, members, get):
    values = [get(r) for r in runs if r["label"] == label and r["members"] == members]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def fmt(v, digits=2):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"

metrics = [
    ("Server CPU per delivered message (µs)", lambda r: r["cpu_us_per_delivery"]),
    ("Publish → last delivery, p50 (ms)", lambda r: r["fanout_ms"]["median"]),
    ("Publish → last delivery, p99 (ms)", lambda r: r["fanout_ms"]["p99"]),
]
print(f"Commit {meta.get('commit', '?')}, {meta.get('cpu', '?')}, Linux {meta.get('kernel', '?')}. "
      "Server on CPU 0, load generator on CPU 1; every server started fresh per run, servers in "
      f"turn per cell; {meta.get('rounds', 1)} round(s), median shown. One publish at a time; "
      "every member, the publisher included, reads every message once and in order.")
print()
# Each duplex server beside uWS.js: uws / duplex, above 1 = duplex better.
ours = [s for s in servers if s != "uws"] if "uws" in servers else []
ratio_note = "Ratio columns: uws / duplex; above 1 = duplex better." if ours else ""
for title, get in metrics:
    print(f"#### {title}")
    print()
    if ratio_note:
        print(ratio_note)
        print()
    head = ["subscribers"] + [names.get(s, s) for s in servers] + [f"{s} vs uws" for s in ours]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "|".join("---:" for _ in head[1:]) + "|")
    for m in cells:
        vals = [med(s, m, get) for s in servers]
        line = [f"{m:,}"] + [fmt(v) for v in vals]
        if ours:
            u = vals[servers.index("uws")]
            for s in ours:
                d = vals[servers.index(s)]
                line.append(f"{u / d:.2f}×" if u is not None and d else "—")
        print("| " + " | ".join(line) + " |")
    print()

print("| subscribers | server | publishes | data bytes | deliveries | server CPU s (kernel) | join s | load generator % | interference % |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for m in cells:
    for r in [r for r in runs if r["members"] == m]:
        node = r["nodes"][0] if r.get("nodes") else {}
        print(f"| {m:,} | {r['label']}{' #' + str(r['round']) if meta.get('rounds', 1) > 1 else ''} | "
              f"{r['messages']} | {r['data_bytes']:.0f} | {node.get('deliveries', 0):,} | "
              f"{fmt(r.get('server_cpu_s'))} ({fmt(node.get('cpu_system_s'))}) | {r['join_s']:.1f} | "
              f"{fmt(r.get('load_cpu_percent'), 0)} | {fmt(r.get('other_cpu_percent'), 0)} |")
print()
other = [r["other_cpu_percent"] for r in runs if r.get("other_cpu_percent") is not None]
if other:
    print(f"Interference: CPU used by other processes over the publishes, in % of one core "
          f"(200% = both cores): median {statistics.median(other):.0f}%, max {max(other):.0f}%.")
EOF
echo "raw results: $OUT" >&2
echo "table: $TABLE" >&2
echo "fanout.sh: done in $((SECONDS - started)) s" >&2
