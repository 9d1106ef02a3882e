#!/usr/bin/env bash
# The three transports of `duplex serve` side by side: subscribers of one room over WebSocket
# (`ws`, duplex.v1), Server-Sent Events + POST (`sse`) and long polling + POST (`longpoll`, a
# poll loop per subscriber on Node's keep-alive `http.Agent`; `longpoll-socket`, the same polls
# written by hand on one keep-alive socket per subscriber, several times cheaper for the load
# process); server CPU per delivered message, deliveries/s, delivery latency (benches/peers/node/
# transport-fanout.mjs).
#
#   benches/transports.sh [--subscribers 1000] [--messages 300] [--rate 50] [--rounds 3]
#                         [--quick] [--no-build]
#
# Each round starts a fresh `duplex serve --threads 1` pinned to CPU 0 (the Node subscribers
# and the publisher on CPU 1 when there are two) and runs the four kinds, in an order that
# rotates from round to round. One WebSocket publisher sends --messages publishes at --rate per
# second (50: the most one Node process keeps up with for 1,000 WebSocket subscribers on one
# core); every subscriber must get every message once and in order, or the run fails. Prints
# a markdown table of the medians, the SSE / WS and long-poll / WS CPU ratios, and the goals
# (SSE <= 2x WebSocket CPU per delivery; long-poll p50 <= 50 ms). --quick (tests/run.sh
# transports-bench): 200 subscribers, 100 messages, 1 round; figures printed, not judged.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

subscribers=1000 messages=300 rate=50 rounds=3 build=1 quick=0
while (($#)); do
    case $1 in
    --subscribers) subscribers=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --quick) quick=1 subscribers=200 messages=100 rounds=1; shift ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "transports.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
need node "the subscribers and the publisher"
((build)) && cargo build --release -q -p duplex
ensure_node_peers
SERVER="$BIN/duplex"
cpus=$(nproc)
pin_server=() pin_client=()
if ((cpus >= 2)); then pin_server=(taskset -c 0) pin_client=(taskset -c 1); fi

results=$(mktemp)
server_pid=
trap '[[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null; rm -f "$results"' EXIT
kinds=(ws sse longpoll longpoll-socket)
for round in $(seq "$rounds"); do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "${pin_server[@]}" "$SERVER" serve --listen "127.0.0.1:$port" --threads 1 --presence-limit 10 \
        --max-connections 100000 >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
    # ws sse longpoll longpoll-socket, then sse longpoll longpoll-socket ws, ...
    shift_by=$(((round - 1) % ${#kinds[@]}))
    order=("${kinds[@]:shift_by}" "${kinds[@]:0:shift_by}")
    for kind in "${order[@]}"; do
        CLK_TCK=$(getconf CLK_TCK) timeout 300 "${pin_client[@]}" node benches/peers/node/transport-fanout.mjs \
            "$port" "$server_pid" "$kind" "$subscribers" "$messages" "$rate" | tee -a "$results"
    done
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
done
python3 - "$results" "$subscribers" "$messages" "$rate" "$rounds" "$quick" <<'PY'
import json, statistics, sys
path, subscribers, messages, rate, rounds, quick = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
kinds = ("ws", "sse", "longpoll", "longpoll-socket")
for kind in kinds:
    got = [r for r in rows if r["kind"] == kind]
    assert len(got) == int(rounds), f"{kind}: {len(got)} runs of {rounds}"
    for r in got:
        assert r["deliveries"] == int(subscribers) * int(messages), r
med = lambda kind, key: statistics.median(r[key] for r in rows if r["kind"] == kind)
print(f"\n{int(subscribers):,} subscribers of one room per transport, {messages} publishes at "
      f"{rate}/s by one WebSocket publisher, median of {rounds} round(s):\n")
print("| | WebSocket | SSE + POST | long polling + POST (http.Agent) | long polling + POST (socket) "
      "| SSE / WS | long-poll / WS (Agent, socket) |")
print("|---|---:|---:|---:|---:|---:|---:|")
lines = (
    ("cpu_us_per_delivery", "server CPU per delivery (µs)", "{:,.2f}"),
    ("deliveries_per_s", "deliveries/s", "{:,.0f}"),
    ("p50_ms", "latency p50 (ms)", "{:,.1f}"),
    ("p99_ms", "latency p99 (ms)", "{:,.1f}"),
    ("load_cpu", "load process CPU (share of a core)", "{:.2f}"),
)
for key, label, fmt in lines:
    ws, sse, lp, lps = (med(k, key) for k in kinds)
    ratios = f"{sse / ws:.2f} | {lp / ws:.2f}, {lps / ws:.2f}" if key != "load_cpu" else " | "
    print(f"| {label} | {fmt.format(ws)} | {fmt.format(sse)} | {fmt.format(lp)} | {fmt.format(lps)} | {ratios} |")
print(f"| messages per answered poll | | | {med('longpoll', 'messages_per_poll'):.2f} "
      f"| {med('longpoll-socket', 'messages_per_poll'):.2f} | | |")
print()
sse_ratio = med("sse", "cpu_us_per_delivery") / med("ws", "cpu_us_per_delivery")
verdict = lambda ok: "met" if ok else "MISSED"
note = " (quick run: not judged)" if quick == "1" else ""
print(f"- SSE CPU per delivery {sse_ratio:.2f}x WebSocket (goal <= 2x): {verdict(sse_ratio <= 2)}{note}")
for kind, how in (("longpoll", "http.Agent"), ("longpoll-socket", "socket")):
    p50 = med(kind, "p50_ms")
    print(f"- long-poll ({how}) p50 latency {p50:.1f} ms (goal <= 50 ms): {verdict(p50 <= 50)}{note}")
PY
