#!/usr/bin/env python3
"""Meta line and markdown tables of benches/deflate_compare.sh (the compression bench).

    python3 benches/deflate_compare.py meta PAYLOADS.jsonl --passes N --rounds N >> RUN.jsonl
    python3 benches/deflate_compare.py table RUN.jsonl PAYLOADS.jsonl [--baseline duplex]

`meta` prints the run's meta line (commit, machine, payload file digest, load average); the
script appends {"loadavg_end": X} after the benches. `table` reads the JSON lines the benches
printed (`deflate-bench` and `deflate-bench.mjs`, one per pass each) and prints three tables
through compare.py's `table`: compressed size in % of the raw bytes (all messages, then by
message size), compression and decompression throughput in MB/s (10⁶ bytes of uncompressed
message per second; the fastest round of all passes). Ratio columns are oriented as in
compare.py: above 1 means the baseline (duplex) is better. Standard library only.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import load, machine, size_label, table  # noqa: E402

MODES = [("context-takeover", "context takeover"), ("no-context-takeover", "no context takeover")]
# Message size classes of the ratio table: [low, high) in bytes.
CLASSES = [(0, 256), (256, 1024), (1024, None)]


def class_label(low, high):
    if high is None:
        return f"≥ {size_label(low)}"
    if low == 0:
        return f"< {size_label(high)}"
    return f"{size_label(low)} – {size_label(high)}"


def message_sizes(path):
    with open(path, "rb") as f:
        return [len(line) for line in f.read().split(b"\n") if line]


def cmd_meta(args):
    data = Path(args.payloads).read_bytes()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    print(json.dumps({
        "mode": "meta", "commit": commit or "unknown", **machine(),
        "payloads": Path(args.payloads).name,
        "payloads_sha256": hashlib.sha256(data).hexdigest(),
        "messages": len(message_sizes(args.payloads)), "raw_bytes": sum(message_sizes(args.payloads)),
        "passes": args.passes, "rounds": args.rounds, "loadavg_start": os.getloadavg()[0],
    }))


def merge(results):
    """{label: {mode: {"compress_s": best, "decompress_s": best, "sizes": [...]}}} over passes."""
    merged = OrderedDict()
    for r in results:
        label = r.get("label", "?")
        for mode, m in r["modes"].items():
            seen = merged.setdefault(label, {}).get(mode)
            if seen is None:
                merged[label][mode] = {"compress_s": min(m["compress_s"]),
                                       "decompress_s": min(m["decompress_s"]), "sizes": m["sizes"]}
                continue
            if seen["sizes"] != m["sizes"]:
                sys.exit(f"{label} {mode}: compressed sizes differ between passes")
            seen["compress_s"] = min(seen["compress_s"], *m["compress_s"])
            seen["decompress_s"] = min(seen["decompress_s"], *m["decompress_s"])
    return merged


def cmd_table(args):
    rows = load(args.jsonl)
    meta = next((r for r in rows if r.get("mode") == "meta"), {})
    results = [r for r in rows if "modes" in r]
    if not results:
        sys.exit(f"{args.jsonl}: no results")
    raw = message_sizes(args.payloads)
    total = sum(raw)
    for r in results:
        if r.get("messages") != len(raw) or r.get("raw_bytes") != total:
            sys.exit(f"{r.get('label')}: ran on other payloads than {args.payloads}")
    merged = merge(results)
    labels = list(merged)
    codecs = OrderedDict((r["label"], r.get("codec", "?")) for r in results)
    first = results[0]

    ratio_rows, compress_rows, decompress_rows = OrderedDict(), OrderedDict(), OrderedDict()
    for mode, mode_label in MODES:
        row = f"{mode_label}: all {len(raw):,} messages"
        ratio_rows[row] = {}
        for low, high in CLASSES:
            n = sum(1 for s in raw if s >= low and (high is None or s < high))
            ratio_rows[f"{mode_label}: {class_label(low, high)} ({n:,} messages)"] = {}
        compress_rows[mode_label] = {}
        decompress_rows[mode_label] = {}
        for label in labels:
            m = merged[label].get(mode)
            if m is None:
                continue
            sizes = m["sizes"]
            ratio_rows[row][label] = 100 * sum(sizes) / total
            for low, high in CLASSES:
                picked = [(s, c) for s, c in zip(raw, sizes) if s >= low and (high is None or s < high)]
                key = f"{mode_label}: {class_label(low, high)} ({len(picked):,} messages)"
                if picked:
                    ratio_rows[key][label] = 100 * sum(c for _, c in picked) / sum(s for s, _ in picked)
            compress_rows[mode_label][label] = total / m["compress_s"] / 1e6
            decompress_rows[mode_label][label] = total / m["decompress_s"] / 1e6

    out = []
    if meta:
        out.append(
            f"Commit {meta.get('commit')}, {meta.get('cpus')} × {meta.get('cpu')}, Linux "
            f"{meta.get('kernel')}. Payloads: {meta.get('messages'):,} chat JSON messages, "
            f"{meta.get('raw_bytes'):,} bytes ({meta.get('payloads')}, sha256 "
            f"{meta.get('payloads_sha256', '')[:12]}…), every message compressed (threshold 0), "
            f"zlib level {first.get('level')}, window bits {first.get('window_bits')}. Best of "
            f"{meta.get('rounds')} rounds × {meta.get('passes')} passes (the benches run in turn)."
        )
        end = next((r["loadavg_end"] for r in rows if "loadavg_end" in r), None)
        if "loadavg_start" in meta and end is not None:
            out[-1] += (
                f" Load average (1 min) {meta['loadavg_start']:.1f} at the start, {end:.1f} at "
                "the end: other work on the machine slows ws's thread-pool round trips more than "
                "duplex's inline calls."
            )
        out.append("")
    out.append("Codecs: " + "; ".join(f"{label}: {codec}" for label, codec in codecs.items()) + ".")
    out.append("")
    base = args.baseline
    out.append(table(
        "Compressed size",
        "Compressed payload bytes (RFC 7692 tail stripped, no frame headers) in % of the raw "
        "message bytes; smaller is better. Context takeover: the server keeps its compressor "
        "between messages (and ~300 KiB per connection); without it each message stands alone.",
        ratio_rows, labels, base, False, "%"))
    out.append(table(
        "Compression throughput",
        "Raw message bytes compressed per second, all messages in order on one connection. "
        "duplex: `send_binary` + `poll_transmit` on a duplex-core `Connection` (compression, "
        "framing, copy to the output). ws: `PerMessageDeflate#compress`, each call awaited "
        "before the next as on one ws socket (Node's zlib runs on libuv's thread pool).",
        compress_rows, labels, base, True, "MB/s"))
    out.append(table(
        "Decompression throughput",
        "Raw message bytes restored per second. duplex: `receive` + `poll_event` on the client "
        "`Connection` (frame parsing, inflation). ws: `PerMessageDeflate#decompress`.",
        decompress_rows, labels, base, True, "MB/s"))
    print("\n".join(out).rstrip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    meta = sub.add_parser("meta", help="print the meta line")
    meta.add_argument("payloads")
    meta.add_argument("--passes", type=int, required=True)
    meta.add_argument("--rounds", type=int, required=True)
    tables = sub.add_parser("table", help="print the markdown tables")
    tables.add_argument("jsonl")
    tables.add_argument("payloads")
    tables.add_argument("--baseline", default="duplex")
    args = parser.parse_args()
    if args.command == "meta":
        cmd_meta(args)
    else:
        cmd_table(args)


if __name__ == "__main__":
    main()
