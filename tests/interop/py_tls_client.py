#!/usr/bin/env python3
"""TLS checks with Python's `ssl` and `websockets` against `duplex echo --tls-cert ...`.

    py_tls_client.py echo     wss://127.0.0.1:PORT/ CA.pem
    py_tls_client.py garbage  wss://127.0.0.1:PORT/ CA.pem
    py_tls_client.py stall    wss://127.0.0.1:PORT/ CA.pem SECONDS
    py_tls_client.py sigterm  wss://127.0.0.1:PORT/ CA.pem READY_FILE

echo     `websockets` with an SSL context trusting CA.pem: text and binary echoes across the
         frame-length boundaries (and larger than a TLS record), a ping, a clean 1000 close.
garbage  a wss client opens; another connection sends plaintext HTTP to the TLS port and must
         be closed (with a TLS alert or nothing) while the first keeps echoing.
stall    a connection sends half a TLS record and stalls: the server must drop it after the
         handshake timeout (SECONDS), not before half of it nor long after.
sigterm  a raw TLS socket upgrades, writes READY_FILE and waits: after the server's SIGTERM it
         must receive a close frame with 1001, then a TLS close_notify (a clean TLS EOF; a TCP
         FIN without close_notify raises SSLEOFError here).

Prints `tls(MODE): ok`, or the failure and exits 1. Every wait is bounded.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import struct
import sys
import time
from urllib.parse import urlsplit

from websockets.sync.client import connect

STEP_TIMEOUT = 10.0


class Failure(Exception):
    pass


def context(ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def echo_checks(ws, name: str) -> None:
    for size in (0, 125, 126, 65535, 65536, 100_000, 1 << 20):
        text = "é" * (size // 2) + "x" * (size % 2)
        ws.send(text)
        got = ws.recv(timeout=STEP_TIMEOUT)
        if got != text:
            raise Failure(f"{name}: text of {size} bytes not echoed as sent")
        data = os.urandom(size)
        ws.send(data)
        got = ws.recv(timeout=STEP_TIMEOUT)
        if got != data:
            raise Failure(f"{name}: binary of {size} bytes not echoed as sent")
    if not ws.ping(b"tls").wait(STEP_TIMEOUT):
        raise Failure(f"{name}: no pong within {STEP_TIMEOUT}s")


def check_echo(url: str, ca: str) -> None:
    with connect(url, ssl=context(ca), open_timeout=STEP_TIMEOUT, max_size=None) as ws:
        alpn = ws.socket.selected_alpn_protocol()
        if alpn != "http/1.1":
            raise Failure(f"ALPN: expected http/1.1, got {alpn!r}")
        echo_checks(ws, "echo")
        ws.close(1000, "done")
        if ws.close_code != 1000:
            raise Failure(f"close: expected the server to echo 1000, got {ws.close_code}")


def read_until_closed(sock: socket.socket, limit: float) -> bytes:
    """Reads until EOF or reset within `limit` seconds; returns what arrived."""
    sock.settimeout(limit)
    got = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        except socket.timeout:
            break
        if not chunk:
            return got
        got += chunk
    raise Failure(f"connection still open after {limit}s (received {got[:40]!r})")


def check_garbage(url: str, ca: str) -> None:
    host, port = address(url)
    with connect(url, ssl=context(ca), open_timeout=STEP_TIMEOUT) as ws:
        ws.send("before")
        if ws.recv(timeout=STEP_TIMEOUT) != "before":
            raise Failure("garbage: first echo failed")
        with socket.create_connection((host, port), timeout=STEP_TIMEOUT) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            got = read_until_closed(raw, STEP_TIMEOUT)
            # Either nothing or a TLS alert record (content type 21); never an HTTP answer.
            if got and got[0] != 21:
                raise Failure(f"garbage: expected a TLS alert or nothing, got {got[:40]!r}")
        ws.send("after")
        if ws.recv(timeout=STEP_TIMEOUT) != "after":
            raise Failure("garbage: the other connection stopped echoing")
        ws.close()


def check_stall(url: str, seconds: float) -> None:
    host, port = address(url)
    with socket.create_connection((host, port), timeout=STEP_TIMEOUT) as raw:
        # A TLS handshake record header announcing 512 bytes, then nothing more.
        raw.sendall(b"\x16\x03\x01\x02\x00\x01")
        start = time.monotonic()
        read_until_closed(raw, seconds + STEP_TIMEOUT)
        waited = time.monotonic() - start
    if waited < seconds * 0.5:
        raise Failure(f"stall: dropped after {waited:.2f}s, before the {seconds}s timeout")
    print(f"stall: dropped after {waited:.2f}s (handshake timeout {seconds}s)")


def check_sigterm(url: str, ca: str, ready: str) -> None:
    host, port = address(url)
    ctx = context(ca)
    raw = socket.create_connection((host, port), timeout=STEP_TIMEOUT)
    sock = ctx.wrap_socket(raw, server_hostname=host, suppress_ragged_eofs=False)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise Failure("sigterm: connection closed during the upgrade")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise Failure(f"sigterm: upgrade answered {status!r}")
    buf = head.split(b"\r\n\r\n", 1)[1]
    with open(ready, "w") as f:
        f.write("ready\n")
    sock.settimeout(STEP_TIMEOUT * 2)
    while len(buf) < 4:
        chunk = sock.recv(4096)
        if not chunk:
            raise Failure("sigterm: closed without a close frame")
        buf += chunk
    if buf[0] != 0x88:
        raise Failure(f"sigterm: expected a close frame, got {buf[:8]!r}")
    code = struct.unpack("!H", buf[2:4])[0]
    if code != 1001:
        raise Failure(f"sigterm: expected close code 1001, got {code}")
    # Answer the close (masked, empty payload) like a browser would.
    sock.sendall(b"\x88\x80" + os.urandom(4))
    try:
        while sock.recv(4096):
            pass
    except ssl.SSLEOFError as e:
        raise Failure(f"sigterm: TCP closed without a TLS close_notify ({e})") from e
    sock.close()


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 443


def main() -> int:
    mode, url = sys.argv[1], sys.argv[2]
    try:
        if mode == "echo":
            check_echo(url, sys.argv[3])
        elif mode == "garbage":
            check_garbage(url, sys.argv[3])
        elif mode == "stall":
            check_stall(url, float(sys.argv[4]))
        elif mode == "sigterm":
            check_sigterm(url, sys.argv[3], sys.argv[4])
        else:
            raise Failure(f"unknown mode {mode!r}")
    except Failure as e:
        print(f"tls({mode}): FAIL: {e}", file=sys.stderr)
        return 1
    print(f"tls({mode}): ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
