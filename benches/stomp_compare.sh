#!/usr/bin/env bash
# STOMP subscribers vs duplex.v1 members of one room of `duplex serve`, in the same run:
# server CPU per delivered message and deliveries/s (benches/peers/node/stomp-fanout.mjs).
#
#   benches/stomp_compare.sh [--subscribers 1000] [--messages 300] [--rounds 3] [--no-build]
#
# Each round starts a fresh `duplex serve --threads 1` pinned to CPU 0 (the Node subscribers
# on CPU 1 when there are two) and runs both kinds, in alternating order from round to round.
# Every subscriber must get every message once and in order. Prints a markdown table of the
# medians and the STOMP / duplex.v1 ratio.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

subscribers=1000 messages=300 rounds=3 build=1
while (($#)); do
    case $1 in
    --subscribers) subscribers=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "stomp_compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
((build)) && cargo build --release -q -p duplex
ensure_node_peers
BIN="$ROOT/target/release/duplex"
cpus=$(nproc)
pin_server=() pin_client=()
if ((cpus >= 2)); then pin_server=(taskset -c 0) pin_client=(taskset -c 1); fi

results=$(mktemp)
server_pid=
trap '[[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null; rm -f "$results"' EXIT
for round in $(seq "$rounds"); do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "${pin_server[@]}" "$BIN" serve --listen "127.0.0.1:$port" --threads 1 --presence-limit 10 \
        --max-connections 100000 >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
    kinds=(stomp v1)
    ((round % 2)) || kinds=(v1 stomp)
    for kind in "${kinds[@]}"; do
        timeout 300 "${pin_client[@]}" node benches/peers/node/stomp-fanout.mjs "$port" "$server_pid" \
            "$kind" "$subscribers" "$messages" | tee -a "$results"
    done
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
done
python3 - "$results" "$subscribers" "$messages" "$rounds" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda kind, key: statistics.median(r[key] for r in rows if r["kind"] == kind)
print(f"\n{sys.argv[2]} subscribers of one room, {sys.argv[3]} publishes one at a time, median of {sys.argv[4]} rounds:\n")
print("| | duplex.v1 members | STOMP subscribers | STOMP / duplex.v1 |")
print("|---|---:|---:|---:|")
for key, label in (("cpu_us_per_delivery", "server CPU per delivery (µs)"), ("deliveries_per_s", "deliveries/s")):
    a, b = med("v1", key), med("stomp", key)
    print(f"| {label} | {a:,} | {b:,} | {b / a:.2f} |")
PY
