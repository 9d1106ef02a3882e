#!/usr/bin/env python3
"""Measures a WebSocket server's memory per idle connection.

    python3 tests/tools/idle_memory.py PID HOST:PORT [N] [--deflate [--no-context-takeover]]
                                       [--tls=CA.pem]

Opens N (default 10000) WebSocket connections to the server (upgrade requests
written raw, 101 checked), lets them sit idle, and reports the growth of the
server's resident set (VmRSS of PID) divided by N. Connections are closed when
the script ends. Needs N + ~100 file descriptors (ulimit -n).

--deflate offers permessage-deflate and exchanges one compressed 1 KiB JSON
message on each connection before it goes idle, so the figure includes the
compression state the server keeps (with --no-context-takeover, the offer asks
for no context takeover in both directions).

--tls=CA.pem speaks TLS (the server runs with --tls-cert/--tls-key; its certificate
must verify against CA.pem for HOST), so the figure includes the TLS session state.
"""
import base64
import os
import socket
import ssl
import struct
import sys
import time
import zlib

CHAT = (b'{"type":"message","room":"app/general","from":"alice","text":"hello"}' * 16)[:1024]


def compressed_frame(payload):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    data = data[:-4]
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert len(data) < 126
    return bytes([0xC1, 0x80 | len(data)]) + mask + masked


def read_frame(sock, buf):
    while len(buf) < 2:
        buf += sock.recv(65536)
    n = buf[1] & 0x7F
    head = 2
    if n == 126:
        while len(buf) < 4:
            buf += sock.recv(65536)
        n = struct.unpack(">H", buf[2:4])[0]
        head = 4
    while len(buf) < head + n:
        buf += sock.recv(65536)
    return buf[: head + n], buf[head + n :]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    flags = {a for a in sys.argv[1:] if a.startswith("--")}
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    pid = int(args[0])
    host, port = args[1].rsplit(":", 1)
    n = int(args[2]) if len(args) > 2 else 10000
    deflate = "--deflate" in flags
    offer = ""
    if deflate:
        offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
        if "--no-context-takeover" in flags:
            offer += "; server_no_context_takeover; client_no_context_takeover"
        offer += "\r\n"
    frame = compressed_frame(CHAT) if deflate else b""
    tls = None
    for flag in flags:
        if flag.startswith("--tls="):
            tls = ssl.create_default_context(cafile=flag.split("=", 1)[1])
            tls.set_alpn_protocols(["http/1.1"])
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = []
    pending = []
    for i in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        if tls is not None:
            s = tls.wrap_socket(s, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{offer}\r\n"
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
                if deflate:
                    if b"permessage-deflate" not in head:
                        raise SystemExit("the server declined permessage-deflate")
                    p.sendall(frame)
                    rest = head.split(b"\r\n\r\n", 1)[1]
                    echo, _ = read_frame(p, rest)
                    if echo[0] & 0x40 == 0:
                        raise SystemExit("the echo was not compressed")
                socks.append(p)
            pending = []
    time.sleep(1.0)
    after = rss_kib(pid)
    per = (after - before) * 1024 / n
    what = (" (one compressed message each)" if deflate else "") + (" over TLS" if tls else "")
    print(f"idle connections: {n}{what}")
    print(f"server RSS before: {before} KiB, after: {after} KiB")
    print(f"memory per idle connection: {per:.0f} bytes")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
