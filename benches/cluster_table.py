#!/usr/bin/env python3
"""The markdown table of benches/cluster.sh, from duplex-load's fanout JSON lines.

    python3 benches/cluster_table.py RESULTS.jsonl

Each line's label is KIND/NODES/MEMBERS/PHASE: KIND `single` (duplex serve without --broker),
`redis` (duplex serve --broker) or `socketio` (the Socket.IO peer); PHASE `paced-RATE` (latency
and CPU at a fixed publish rate), `max` (as fast as it goes: deliveries/s) or `peer` (the side by
side with Socket.IO).
"""
import json
import sys


def fmt(v, spec=".2f", unit=""):
    return "–" if v is None else f"{v:{spec}}{unit}"


def main(path):
    runs = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                kind, nodes, members, phase = r["label"].split("/")
                runs[(kind, int(nodes), int(members), phase)] = r

    def name(kind, nodes):
        if kind == "single":
            return "duplex, single node (no broker)"
        if kind == "redis":
            return f"duplex --broker redis, {nodes} node{'s' if nodes > 1 else ''}"
        return f"Socket.IO 4 + redis-adapter, {nodes} nodes"

    def rt(r, key, per):
        v = r.get(key)
        return None if v is None else v / per

    print("| server | members | publishes/s asked (sent) | p50 | p99 | deliveries/s"
          " | CPU µs per delivery, per node | all nodes | deliveries/s, 8 publishes outstanding"
          " | Redis round trips per connection (hello + join) | per publish |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    members_seen = sorted({k[2] for k in runs})
    for m in members_seen:
        configs = sorted({(k[0], k[1], k[3]) for k in runs if k[2] == m and k[3].startswith("paced-")},
                         key=lambda c: (float(c[2][6:]), c[0] != "single", c[1]))
        for kind, nodes, phase in configs:
            r = runs[(kind, nodes, m, phase)]
            top = runs.get((kind, nodes, m, "max"))
            per_node = " / ".join(fmt(n["cpu_us_per_delivery"]) for n in r["nodes"])
            print(
                f"| {name(kind, nodes)} | {m:,} | {r['rate']:.0f} ({r['publish_rate']:.0f})"
                f" | {fmt(r['fanout_ms']['median'], unit=' ms')} | {fmt(r['fanout_ms']['p99'], unit=' ms')}"
                f" | {fmt(r['deliveries_per_s_wall'], ',.0f')}"
                f" | {per_node} | {fmt(r['cpu_us_per_delivery'])}"
                f" | {fmt(top['deliveries_per_s_wall'] if top else None, ',.0f')}"
                f" | {fmt(rt(r, 'round_trips_join', r['members'] + 1))}"
                f" | {fmt(rt(r, 'round_trips_publish', r['messages']))} |"
            )
    print()
    for (kind0, _, m, phase0), single in sorted(runs.items(), key=lambda kv: (kv[0][2], kv[0][3])):
        if kind0 != "single" or not phase0.startswith("paced-") or not single.get("cpu_us_per_delivery"):
            continue
        parts = []
        for (kind, nodes, mm, phase), r in sorted(runs.items()):
            if kind == "redis" and mm == m and phase == phase0 and r.get("cpu_us_per_delivery"):
                parts.append(f"{nodes} node{'s' if nodes > 1 else ''} "
                             f"{r['cpu_us_per_delivery'] / single['cpu_us_per_delivery']:.2f}x")
        if parts:
            print(f"- {m:,} members at {phase0[6:]} publishes/s: CPU per delivery with Redis / single node:"
                  f" {', '.join(parts)} (goal ≤ 1.5x)")
    peers = [m for m in members_seen if ("socketio", 2, m, "peer") in runs and ("redis", 2, m, "peer") in runs]
    if not peers:
        return
    print()
    print("| side by side, 2 nodes on one redis-server | members | publishes/s asked (sent) | p50 | p99"
          " | CPU µs per delivery | deliveries per server CPU second |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m in peers:
        for kind in ("redis", "socketio"):
            r = runs[(kind, 2, m, "peer")]
            cpu = r["cpu_us_per_delivery"]
            per_s = None if not cpu else 1e6 / cpu
            print(
                f"| {name(kind, 2)} | {m:,} | {r['rate']:.1f} ({r['publish_rate']:.1f})"
                f" | {fmt(r['fanout_ms']['median'], unit=' ms')} | {fmt(r['fanout_ms']['p99'], unit=' ms')}"
                f" | {fmt(cpu)} | {fmt(per_s, ',.0f')} |"
            )
    print()
    for m in peers:
        d = runs[("redis", 2, m, "peer")]["cpu_us_per_delivery"]
        s = runs[("socketio", 2, m, "peer")]["cpu_us_per_delivery"]
        if d and s:
            print(f"- {m:,} members: duplex delivers {s / d:.1f}x as many messages per server CPU second"
                  " as Socket.IO (goal ≥ 5x)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: cluster_table.py RESULTS.jsonl")
    main(sys.argv[1])
