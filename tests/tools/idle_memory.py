#!/usr/bin/env python3
"""Measures a WebSocket server's memory per idle connection.

    python3 tests/tools/idle_memory.py PID HOST:PORT [N]

Opens N (default 10000) WebSocket connections to the server (upgrade requests
written raw, 101 checked), lets them sit idle, and reports the growth of the
server's resident set (VmRSS of PID) divided by N. Connections are closed when
the script ends. Needs N + ~100 file descriptors (ulimit -n).
"""
import base64
import os
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    pid = int(sys.argv[1])
    host, port = sys.argv[2].rsplit(":", 1)
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = []
    pending = []
    for i in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        pending.append(s)
        if len(pending) >= 200 or i == n - 1:
            for p in pending:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = p.recv(4096)
                    if not chunk:
                        raise SystemExit(f"connection {len(socks)} closed during the handshake")
                    head += chunk
                if not head.startswith(b"HTTP/1.1 101"):
                    raise SystemExit(f"connection {len(socks)}: {head[:60]!r}")
                socks.append(p)
            pending = []
    time.sleep(1.0)
    after = rss_kib(pid)
    per = (after - before) * 1024 / n
    print(f"idle connections: {n}")
    print(f"server RSS before: {before} KiB, after: {after} KiB")
    print(f"memory per idle connection: {per:.0f} bytes")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
