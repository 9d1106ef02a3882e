#!/usr/bin/env python3
"""Summarise the criterion results of duplex-benches as markdown.

Reads every `<criterion dir>/**/new/estimates.json` (with the `benchmark.json` beside it) and
prints, per benchmark group, one row per parameter: duplex's time, each peer's time and the
ratio peer / duplex (above 1: duplex is faster). Then the masking throughput beside memcpy.

    python3 benches/report.py [CRITERION_DIR] [--stat typical|mean|median] [--runs a,b,c]

CRITERION_DIR defaults to $CRITERION_HOME, else $CARGO_TARGET_DIR/criterion, else
target/criterion at the workspace root. `typical` (the default) is the estimate criterion
prints as `time:` (the slope of the linear fit where there is one, else the mean).

On a busy machine, run the suite several times with `-- --save-baseline NAME` and pass the
names to `--runs`: each benchmark then reports its fastest run, the one least slowed down by
other work (the default, `new`, is the latest run).
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

BASELINE = "duplex"
# Libraries first, in this order; any other function (std, simdutf8, memcpy...) after them.
PEER_ORDER = ["tungstenite", "fastwebsockets"]
GROUP_ORDER = [
    "decode_unmask",
    "header_decode",
    "encode",
    "mask",
    "utf8",
    "handshake_parse",
    "handshake_respond",
    "handshake_connection",
    "accept_key",
    "echo",
]
SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def default_dir():
    if os.environ.get("CRITERION_HOME"):
        return Path(os.environ["CRITERION_HOME"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "criterion"
    return Path(__file__).resolve().parent.parent / "target" / "criterion"


def estimate(estimates, stat):
    if stat == "typical":
        chosen = estimates.get("slope") or estimates["mean"]
    else:
        chosen = estimates[stat]
    return chosen["point_estimate"]


def load(root, stat, runs):
    """{group: {parameter: {function: (nanoseconds, bytes or None)}}}"""
    results = {}
    for meta_path in sorted(root.glob("**/new/benchmark.json")):
        bench_dir = meta_path.parent.parent
        times = [
            estimate(json.loads(path.read_text()), stat)
            for path in (bench_dir / run / "estimates.json" for run in runs)
            if path.exists()
        ]
        if not times:
            continue
        meta = json.loads(meta_path.read_text())
        group = meta["group_id"]
        function = meta.get("function_id") or ""
        parameter = meta.get("value_str") or ""
        throughput = meta.get("throughput") or {}
        nbytes = throughput.get("Bytes") or throughput.get("BytesDecimal")
        results.setdefault(group, {}).setdefault(parameter, {})[function] = (min(times), nbytes)
    return results


def parameter_key(parameter):
    """Orders `2B` < `125B` < `1KiB` and `ascii-64KiB` < `multilingual-1KiB`."""
    match = re.search(r"(\d+)(B|KiB|MiB|GiB)$", parameter)
    if not match:
        return (parameter, 0)
    prefix = parameter[: match.start()]
    return (prefix, int(match.group(1)) * SIZE_UNITS[match.group(2)])


def group_key(group):
    return (GROUP_ORDER.index(group), "") if group in GROUP_ORDER else (len(GROUP_ORDER), group)


def peers_of(parameters):
    functions = {f for row in parameters.values() for f in row} - {BASELINE}
    known = [p for p in PEER_ORDER if p in functions]
    return known + sorted(functions - set(known))


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_ratio(peer_ns, base_ns):
    return f"{peer_ns / base_ns:.2f}×"


def time_tables(results, runs):
    fastest = f", fastest of {len(runs)} runs" if len(runs) > 1 else ""
    lines = [
        f"Times per operation (criterion's estimate{fastest}); each ratio is peer time ÷ "
        "duplex time, so above 1× duplex is faster.",
        "",
    ]
    for group in sorted(results, key=group_key):
        parameters = results[group]
        peers = peers_of(parameters)
        header = ["parameter", BASELINE]
        for peer in peers:
            header += [peer, "ratio"]
        lines.append(f"**{group}**")
        lines.append("")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|")
        for parameter in sorted(parameters, key=parameter_key):
            row = parameters[parameter]
            base = row.get(BASELINE)
            cells = [parameter, fmt_time(base[0]) if base else "—"]
            for peer in peers:
                if peer in row:
                    cells.append(fmt_time(row[peer][0]))
                    cells.append(fmt_ratio(row[peer][0], base[0]) if base else "—")
                else:
                    cells += ["—", "—"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def mask_table(results):
    parameters = results.get("mask")
    if not parameters:
        return []
    peers = [p for p in peers_of(parameters) if p != "memcpy"]
    header = ["size", f"{BASELINE} GB/s"] + [f"{p} GB/s" for p in peers]
    header += ["memcpy GB/s", f"{BASELINE} ÷ memcpy"]
    lines = [
        "Masking throughput beside a memcpy (`copy_from_slice`) of the same bytes, in GB/s "
        "(10⁹ bytes per second); the last column is duplex's masking speed as a fraction of "
        "memcpy's.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|",
    ]
    for parameter in sorted(parameters, key=parameter_key):
        row = parameters[parameter]

        def speed(function):
            if function not in row or not row[function][1]:
                return None
            ns, nbytes = row[function]
            return nbytes / ns

        cells = [parameter]
        for function in [BASELINE] + peers + ["memcpy"]:
            value = speed(function)
            cells.append(f"{value:.2f}" if value is not None else "—")
        base, memcpy = speed(BASELINE), speed("memcpy")
        cells.append(f"{base / memcpy:.2f}×" if base and memcpy else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", type=Path, default=None)
    parser.add_argument("--stat", choices=["typical", "mean", "median"], default="typical")
    parser.add_argument(
        "--runs",
        default="new",
        help="comma-separated criterion baselines; each benchmark reports its fastest",
    )
    args = parser.parse_args()
    root = args.dir or default_dir()
    runs = [run for run in args.runs.split(",") if run]
    results = load(root, args.stat, runs)
    if not results:
        sys.exit(f"no criterion results under {root}")
    print("\n".join(time_tables(results, runs) + mask_table(results)).rstrip())


if __name__ == "__main__":
    main()
