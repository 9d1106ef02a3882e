#!/usr/bin/env python3
"""Interop client: Python `websockets` against an echo server.

    py_client.py ws://127.0.0.1:PORT/

Echoes text and binary messages of 0, 125, 126, 65535, 65536 and 1 MiB bytes
(the frame-length boundaries), a fragmented text message and a pipelined
burst, checks each echo byte for byte and type for type, sends a ping and
waits for its pong, then closes with 1000 and checks the peer echoed 1000.
Prints `interop(python): ok`, or the first failure and exits 1. Every wait is
bounded.
"""

from __future__ import annotations

import random
import sys
import time

from websockets.sync.client import connect

NAME = "interop(python)"
SIZES = [0, 125, 126, 65535, 65536, 1 << 20]
STEP_TIMEOUT = 10.0  # seconds, for each receive / pong
TOTAL_TIMEOUT = 30.0  # seconds, for the whole run


class Failure(Exception):
    pass


def text_of(size: int) -> str:
    """A str whose UTF-8 encoding is exactly `size` bytes, with 2-, 3- and
    4-byte sequences so a server that splits or re-validates UTF-8 is tested."""
    unit = "aé€😀"  # 1 + 2 + 3 + 4 = 10 bytes
    s = unit * (size // 10)
    s += "x" * (size - len(s.encode()))
    assert len(s.encode()) == size
    return s


def bytes_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def describe(msg: object) -> str:
    kind = "text" if isinstance(msg, str) else "binary"
    n = len(msg.encode()) if isinstance(msg, str) else len(msg)  # type: ignore[arg-type]
    return f"{kind} of {n} bytes"


def first_difference(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at byte {i}, lengths {len(a)} and {len(b)}"
    return f"lengths {len(a)} and {len(b)}"


def expect_echo(ws, sent: str | bytes, what: str) -> None:
    try:
        got = ws.recv(timeout=STEP_TIMEOUT)
    except TimeoutError:
        raise Failure(f"{what}: no echo within {STEP_TIMEOUT:.0f}s") from None
    if type(got) is not type(sent):
        raise Failure(f"{what}: sent {describe(sent)}, received {describe(got)}")
    if got != sent:
        a = sent.encode() if isinstance(sent, str) else sent
        b = got.encode() if isinstance(got, str) else got
        raise Failure(f"{what}: echo differs ({first_difference(a, b)})")


def run(url: str, deflate: bool) -> None:
    deadline = time.monotonic() + TOTAL_TIMEOUT
    with connect(
        url,
        compression="deflate" if deflate else None,
        max_size=4 << 20,
        open_timeout=STEP_TIMEOUT,
        close_timeout=STEP_TIMEOUT,
        ping_interval=None,
    ) as ws:
        accepted = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        if deflate != ("permessage-deflate" in accepted):
            raise Failure(f"negotiated extensions {accepted!r} (deflate offered: {deflate})")
        for size in SIZES:
            for msg in (text_of(size), bytes_of(size, size)):
                ws.send(msg)
                expect_echo(ws, msg, describe(msg))
                if time.monotonic() > deadline:
                    raise Failure(f"run exceeded {TOTAL_TIMEOUT:.0f}s")

        # One message in several frames: the echo must be the whole message.
        parts = ["frag", "ment", "é€😀", "ed"]
        ws.send(parts)
        expect_echo(ws, "".join(parts), "fragmented text of 4 frames")

        # Pipelined: many messages in flight, echoes in order.
        burst = [f"burst {i}" if i % 2 else bytes_of(i, i) for i in range(100)]
        for msg in burst:
            ws.send(msg)
        for i, msg in enumerate(burst):
            expect_echo(ws, msg, f"burst message {i}")

        pong = ws.ping(b"duplex-interop")
        if not pong.wait(STEP_TIMEOUT):
            raise Failure(f"no pong within {STEP_TIMEOUT:.0f}s of a ping")

        ws.close(code=1000, reason="interop done")
        if ws.close_code != 1000:
            raise Failure(
                f"closed with 1000, peer answered {ws.close_code} "
                f"{ws.close_reason!r} (1006 = no close frame)"
            )


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--deflate"]
    if len(args) != 1:
        print("usage: py_client.py ws://HOST:PORT/ [--deflate]", file=sys.stderr)
        return 2
    try:
        run(args[0], "--deflate" in sys.argv[1:])
    except Failure as e:
        print(f"{NAME}: FAIL: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - report any library error precisely
        print(f"{NAME}: FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"{NAME}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
