#!/usr/bin/env python3
"""Turn the JSON lines of benches/compare.sh into markdown tables.

    python3 benches/compare.py reports/bench/compare-DATE.jsonl [--baseline duplex]

One table per metric (msg/s, p99 latency, server CPU per round trip, idle memory per
connection, handshakes/s), a column per server in the order they first appear, then one ratio
column per peer, oriented so that above 1 means the baseline (duplex) is better. Lines with an
"error" field (a cell that failed) show as "failed". A run with several rounds
(`compare.sh --rounds R`: every cell once per round) shows each figure's median over the rounds
that succeeded, and a table of paired ratios: per round, the peer's CPU per round trip over the
baseline's, as median (lowest–highest). Standard library only.

A run of `benches/compare.sh tls` (its meta line has "tls") also gets the TLS goals: duplex's
server CPU per round trip over TLS against uWebSockets.js's (goal: at most 1×) and against
duplex's own plaintext round trip (server "duplex-plain", goal: at most 1.5× at 1 KiB), and the
protocol each server negotiated. duplex-plain has no ratio columns in the other tables.
"""

import argparse
import json
import os
import platform
import statistics
import sys
from collections import OrderedDict


def machine():
    """What a meta line says about the machine: CPU model and count, kernel."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count()}


def fmt_number(v):
    if v is None:
        return "–"
    if v >= 100_000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}×"


def size_label(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


def load(path):
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                print(f"{path}:{number}: not JSON ({e}); skipped", file=sys.stderr)
    return rows


def measured(v):
    """A cell's value, or None when it was not measured or its run failed."""
    return None if v == "failed" else v


def ratio(base, peer, higher_is_better):
    if base is None or peer is None or base <= 0 or peer <= 0:
        return None
    return base / peer if higher_is_better else peer / base


# Servers shown in the tables without a ratio column (duplex itself, without TLS).
NO_RATIO = {"duplex-plain"}
PLAIN = "duplex-plain"
# The TLS goals: server CPU per round trip, duplex over TLS / uWebSockets.js over TLS, and
# duplex over TLS / duplex in plaintext (at 1 KiB).
GOAL_VS_UWS = 1.0
GOAL_VS_PLAIN = 1.5


def table(title, note, rows, servers, baseline, higher_is_better, unit):
    """rows: OrderedDict label -> {server: value or None or 'failed'}; none: no table."""
    if not rows:
        return ""
    peers = [s for s in servers if s != baseline and s not in NO_RATIO]
    direction = f"{baseline}/peer" if higher_is_better else f"peer/{baseline}"
    out = [f"### {title}", ""]
    if note:
        out += [note, ""]
    out.append(f"Ratio columns: {direction}; above 1 = {baseline} better.")
    out.append("")
    header = ["cell"] + [f"{s} ({unit})" if unit else s for s in servers]
    header += [f"vs {p}" for p in peers if baseline in servers]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for label, values in rows.items():
        cells = [label]
        for s in servers:
            v = values.get(s)
            cells.append("failed" if v == "failed" else fmt_number(v))
        if baseline in servers:
            base = measured(values.get(baseline))
            for p in peers:
                cells.append(fmt_ratio(ratio(base, measured(values.get(p)), higher_is_better)))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def echo_label(r):
    return (
        f"{r['connections']} conn × {size_label(r['size'])}"
        + (f" × {r['in_flight']} in flight" if r.get("in_flight", 1) != 1 else "")
    )


def collect_runs(rows, mode, key, label_of):
    """OrderedDict label -> {server: [value per run, in the order run]}: the k-th run of a cell
    on a server is its round k. A failed run is 'failed'."""
    table_rows = OrderedDict()
    for r in rows:
        if r.get("mode") != mode:
            continue
        label = label_of(r)
        server = r.get("label", "?")
        value = "failed" if "error" in r else key(r)
        table_rows.setdefault(label, {}).setdefault(server, []).append(value)
    return table_rows


def summarize(values):
    """The median of the runs that gave a value; 'failed' when none did and one failed."""
    values_measured = [v for v in values if measured(v) is not None]
    if values_measured:
        return statistics.median(values_measured)
    return "failed" if "failed" in values else None


def collect(rows, mode, key, label_of):
    """OrderedDict label -> {server: median over the rounds}; failed cells map to 'failed'."""
    return OrderedDict(
        (label, {server: summarize(values) for server, values in per_server.items()})
        for label, per_server in collect_runs(rows, mode, key, label_of).items()
    )


def paired_table(title, runs, servers, baseline):
    """Per cell and peer, the rounds' ratios peer/baseline (lower is better for both values),
    as median (lowest–highest) over the rounds where both runs gave a value."""
    peers = [s for s in servers if s != baseline and s not in NO_RATIO]
    if baseline not in servers or not peers or not runs:
        return ""
    out = [f"### {title}", "",
           f"Round by round: peer / {baseline}; above 1 = {baseline} better. Median "
           "(lowest–highest) over the rounds.", ""]
    out.append("| cell | rounds | " + " | ".join(f"vs {p}" for p in peers) + " |")
    out.append("|---|---:|" + "|".join(["---:"] * len(peers)) + "|")
    for label, per_server in runs.items():
        base = per_server.get(baseline, [])
        cells = [label, str(len(base))]
        for p in peers:
            ratios = [ratio(measured(b), measured(v), False)
                      for b, v in zip(base, per_server.get(p, []))]
            ratios = [r for r in ratios if r is not None]
            if not ratios:
                cells.append("–")
            else:
                cells.append(f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def tls_goals(rows, baseline):
    """The goal check of a tls run: one row per echo cell, from CPU per round trip."""
    cpu = collect(rows, "echo", lambda r: r.get("server_cpu_us_per_op"), echo_label)
    sizes = {echo_label(r): r["size"] for r in rows if r.get("mode") == "echo"}
    out = [
        "### TLS goals (server CPU per round trip)",
        "",
        f"{baseline} over TLS / uws over TLS: goal at most {GOAL_VS_UWS:g}×. {baseline} over TLS "
        f"/ {baseline} in plaintext ({PLAIN}): goal at most {GOAL_VS_PLAIN:g}× at 1 KiB (shown "
        "for 16 KiB too, without a goal). Below 1 = cheaper.",
        "",
        f"| cell | {baseline} TLS (µs) | uws TLS (µs) | {baseline}/uws | goal | "
        f"{PLAIN} (µs) | TLS/plain | goal |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]

    def verdict(r, limit):
        if r is None:
            return "–"
        if r <= limit:
            return "met"
        return f"missed by {(r / limit - 1) * 100:.0f}%"

    for label, values in cpu.items():
        base, uws, plain = (measured(values.get(k)) for k in (baseline, "uws", PLAIN))
        vs_uws = base / uws if base and uws else None
        vs_plain = base / plain if base and plain else None
        plain_goal = verdict(vs_plain, GOAL_VS_PLAIN) if sizes.get(label) == 1024 else "(none)"
        out.append(
            f"| {label} | {fmt_number(base)} | {fmt_number(uws)} | {fmt_ratio(vs_uws)} | "
            f"{verdict(vs_uws, GOAL_VS_UWS)} | {fmt_number(plain)} | {fmt_ratio(vs_plain)} | "
            f"{plain_goal} |"
        )
    out.append("")
    negotiated = OrderedDict()
    for r in rows:
        if r.get("tls"):
            negotiated.setdefault(r.get("label", "?"), r["tls"])
    if negotiated:
        out.append(
            "Negotiated: " + "; ".join(f"{k}: {v}" for k, v in negotiated.items()) + "."
        )
        out.append("")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("jsonl")
    parser.add_argument("--baseline", default="duplex")
    args = parser.parse_args()
    rows = load(args.jsonl)
    if not rows:
        sys.exit(f"{args.jsonl}: no results")
    meta = next((r for r in rows if r.get("mode") == "meta"), None)
    rows = [r for r in rows if r.get("mode") != "meta"]
    servers = list(OrderedDict.fromkeys(r.get("label", "?") for r in rows))
    base = args.baseline

    def lat(name):
        return lambda r: (r.get("latency_us") or {}).get(name)

    out = []
    if meta:
        out.append(
            f"Commit {meta.get('commit')}, {meta.get('cpus')} × {meta.get('cpu')}, Linux "
            f"{meta.get('kernel')}; {meta.get('duration_s')} s per cell after "
            f"{meta.get('warmup_s')} s of warm-up, {meta.get('kind')} messages. Server on CPU 0, "
            "load generator on CPU 1."
            + (f" wss:// ({meta['tls']}) except {PLAIN}." if meta.get("tls") else "")
            + (f" {meta['rounds']} rounds, servers in turn per cell each round; every figure is"
               " the median over the rounds." if meta.get("rounds", 1) > 1 else "")
        )
        out.append("")
    echo_note = (
        "Echo round trips: each connection keeps N messages outstanding (1 unless noted); "
        "every echo verified byte for byte. Rates and latencies depend on the CPU time the "
        "scheduler gives the two pinned processes: read them with the interference line at "
        "the end. CPU per round trip and memory per connection depend far less on it."
    )
    out.append(
        table(
            "Throughput (echoed messages per second)",
            echo_note,
            collect(rows, "echo", lambda r: r.get("msg_per_s"), echo_label),
            servers, base, True, "msg/s",
        )
    )
    out.append(
        table(
            "p99 round-trip latency",
            "Measured by the load generator (its own loop time included, the same for every server).",
            collect(rows, "echo", lat("p99"), echo_label),
            servers, base, False, "µs",
        )
    )
    out.append(
        table(
            "Server CPU per round trip",
            "utime + stime of the server process over the measured window (10 ms clock ticks), divided by round trips.",
            collect(rows, "echo", lambda r: r.get("server_cpu_us_per_op"), echo_label),
            servers, base, False, "µs",
        )
    )
    out.append(
        table(
            "Idle memory per connection",
            "Growth of the server's RSS from before opening to 1 s after all connections were open, divided by their number.",
            collect(rows, "idle", lambda r: r.get("idle_bytes_per_conn"),
                    lambda r: f"{r['connections']:,} idle connections"),
            servers, base, False, "bytes",
        )
    )
    connect_rows = collect(rows, "connect", lambda r: r.get("handshakes_per_s"),
                           lambda r: f"{r['connections']} concurrent: handshakes/s")
    out.append(
        table(
            "Handshake rate",
            "Each slot: TCP connect, upgrade, close handshake, the server closes TCP; repeat.",
            connect_rows, servers, base, True, "/s",
        )
    )
    out.append(
        table(
            "Handshake cost",
            None,
            OrderedDict(
                list(collect(rows, "connect", lat("p99"),
                             lambda r: "p99 connect→101 latency (µs)").items())
                + list(collect(rows, "connect", lambda r: r.get("server_cpu_us_per_op"),
                               lambda r: "server CPU per handshake (µs)").items())
            ),
            servers, base, False, "",
        )
    )
    if meta and meta.get("rounds", 1) > 1:
        runs = collect_runs(rows, "echo", lambda r: r.get("server_cpu_us_per_op"), echo_label)
        runs.update(collect_runs(rows, "connect", lambda r: r.get("server_cpu_us_per_op"),
                                 lambda r: "server CPU per handshake"))
        out.append(paired_table("Server CPU, paired ratios over the rounds", runs, servers, base))
    if meta and meta.get("tls"):
        out.append(tls_goals(rows, base))
    others = [r.get("other_cpu_pct") for r in rows if r.get("other_cpu_pct") is not None]
    clients = [r.get("client_cpu_pct") for r in rows
               if r.get("mode") == "echo" and r.get("client_cpu_pct") is not None]
    if others:
        out.append(
            "Interference: CPU used by other processes during the measured windows, in % of "
            f"one core (200% = both cores): median {statistics.median(others):.0f}%, max "
            f"{max(others):.0f}%. Load generator (echo cells): median "
            f"{statistics.median(clients) if clients else 0:.0f}%, max "
            f"{max(clients) if clients else 0:.0f}% of its core."
        )
        out.append("")
    failed = [r for r in rows if "error" in r]
    for r in failed:
        out.append(f"- failed: {r.get('label')} {r.get('mode')} {r.get('cell', '')}: {r['error']}")
    print("\n".join(part for part in out if part))


if __name__ == "__main__":
    main()
