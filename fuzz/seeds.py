#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/corpus/<target>/seed-*.

The byte formats are those of fuzz/src/checks.rs (see its module documentation). Run from
anywhere: `python3 fuzz/seeds.py`. Only seed-* files are rewritten; reproducers saved next to
them (regress-*) are left alone.
"""

import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
RFC_MASK = bytes([0x37, 0xFA, 0x21, 0x3D])

# RFC 6455 §1.3, the opening handshake.
RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

# What Chromium 124 sends for `new WebSocket("ws://localhost:9001/chat?room=lobby")`.
CHROMIUM_REQUEST = (
    b"GET /chat?room=lobby HTTP/1.1\r\n"
    b"Host: localhost:9001\r\n"
    b"Connection: Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"Cache-Control: no-cache\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0.0.0 Safari/537.36\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: http://localhost:9001\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"\r\n"
)


def response_101(accept=RFC_ACCEPT, extra=b""):
    return (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n" + extra + b"\r\n"
    )


# ---------------------------------------------------------------------------- frames


def frame(b0, payload=b"", mask=None, length_form=None):
    """A frame: first byte as on the wire, payload, optional masking key."""
    n = len(payload)
    bit = 0x80 if mask is not None else 0
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    if form == 7:
        out = bytes([b0, bit | n])
    elif form == 16:
        out = bytes([b0, bit | 126]) + struct.pack(">H", n)
    else:
        out = bytes([b0, bit | 127]) + struct.pack(">Q", n)
    if mask is not None:
        out += mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    else:
        out += payload
    return out


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


# ---------------------------------------------------------------------------- connection ops

HANDSHAKE, VARIANT, PING, IDLE, FRAGMENT, TINY, PROTOCOL, REJECT = (1 << i for i in range(8))


def feed(data, lending=False):
    return bytes([1 if lending else 0]) + struct.pack("<H", len(data)) + data


def peer_frame(b0, payload=b"", key=b"\x00\x00\x00\x00", flip_mask=False, long_form=False,
               lending=False):
    hi = (1 if flip_mask else 0) | (2 if long_form else 0) | (4 if lending else 0)
    return bytes([0x0F | hi << 4, b0, len(payload)]) + key + payload


def send_text(text, via_message=False):
    data = text.encode()
    return bytes([0x02 | (0x10 if via_message else 0), len(data)]) + data


def send_binary(data, repeat_hi=0, via_message=False):
    return bytes([0x03 | (repeat_hi | (8 if via_message else 0)) << 4, len(data)]) + data


def ping(data=b""):
    return bytes([0x04, len(data)]) + data


def pong(data=b""):
    return bytes([0x05, len(data)]) + data


def close(code, reason=b""):
    return bytes([0x06]) + struct.pack("<H", code) + bytes([len(reason)]) + reason


def begin(binary=False):
    return bytes([0x07 | (0x10 if binary else 0)])


def fragment(data):
    return bytes([0x08, len(data)]) + data


def finish(data):
    return bytes([0x09, len(data)]) + data


def advance(seconds):
    return bytes([0x0A]) + struct.pack("<H", int(seconds * 100))


TO_DEADLINE = bytes([0x0B])


def consume(n):
    return bytes([0x0C]) + struct.pack("<H", n)


TRANSMIT = bytes([0x0D])
EOF = bytes([0x0E])


# ---------------------------------------------------------------------------- the seeds


def seeds():
    K = b"\x12\x34\x56\x78"
    yield "frame_decode", {
        "text-unmasked": frame(0x81, b"Hello"),
        "text-masked": frame(0x81, b"Hello", RFC_MASK),
        "fragment-first": frame(0x01, b"Hel"),
        "fragment-last": frame(0x80, b"lo"),
        "ping": frame(0x89, b"Hello"),
        "pong-masked": frame(0x8A, b"Hello", RFC_MASK),
        "binary-16bit": frame(0x82, bytes(256))[:8],
        "binary-64bit": frame(0x82, b"", length_form=64)[:2] + struct.pack(">Q", 65536),
        "binary-64bit-masked": bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 20) + K,
        "close-normal": frame(0x88, close_payload(1000)),
        "non-minimal-length": frame(0x82, b"abc", length_form=16),
        "rsv-bits": frame(0xF1, b"x"),
        "reserved-opcode": bytes([0x83, 0x00]),
        "length-msb": bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        "control-too-long": bytes([0x89, 0x7E, 0x00, 0x7E]),
        "fragmented-control": bytes([0x09, 0x00]),
    }

    yield "server_request", {
        "rfc6455": b"\x00" + RFC_REQUEST,
        "chromium": b"\x00" + CHROMIUM_REQUEST,
        "chromium-bytewise": b"\x01" + CHROMIUM_REQUEST,
        "rfc6455-small-reads": b"\x2b" + RFC_REQUEST,
        "with-frame-after": b"\x06" + RFC_REQUEST + frame(0x81, b"Hello", RFC_MASK),
        "healthz": b"\x00GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "http10": b"\x00" + RFC_REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0"),
        "post": b"\x00" + RFC_REQUEST.replace(b"GET", b"POST"),
        "version-8": b"\x00" + RFC_REQUEST.replace(b"Version: 13", b"Version: 8"),
        "bad-key": b"\x00" + RFC_REQUEST.replace(RFC_KEY.encode(), b"dGhlIHNhbXBsZSBub25jZQ"),
        "two-hosts": b"\x00" + RFC_REQUEST.replace(b"Host:", b"Host: a\r\nHost:"),
        "extensions": b"\x00"
        + RFC_REQUEST.replace(
            b"Origin:",
            b'Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits="10", '
            b"x-webkit-deflate-frame\r\nOrigin:",
        ),
        "bare-lf": b"\x00GET / HTTP/1.1\nHost: a\n\n",
    }

    yield "client_response", {
        "rfc6455": response_101(),
        "protocol": response_101(extra=b"Sec-WebSocket-Protocol: chat\r\n"),
        "extension": response_101(
            extra=b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n"
        ),
        "frame-after": response_101() + frame(0x81, b"Hello"),
        "wrong-accept": response_101(accept="dGhlIHNhbXBsZSBub25jZQ=="),
        "unoffered-protocol": response_101(extra=b"Sec-WebSocket-Protocol: mqtt\r\n"),
        "forbidden": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        "lowercase-tokens": response_101().replace(b"Upgrade: websocket", b"upgrade: WebSocket"),
    }

    yield "utf8", {
        "ascii": b"\x00Hello, world",
        "kosme-bytewise": b"\x01" + "κόσμε".encode(),
        "mixed-small-reads": b"\x0b" + "a€𝄞\u07ff\U0010ffff z".encode(),
        "overlong": b"\x02\xc0\xaf",
        "surrogate": b"\x01ab\xed\xa0\x80",
        "beyond-max": b"\x03\xce\xba\xe1\xbd\xb9\xf4\x90\x80\x80",
        "truncated": b"\x00\xf0\x9f\x98",
        "lone-continuation": b"\x05abc\x80def",
    }

    yield "mask", {
        "rfc-hello": RFC_MASK + struct.pack("<Q", 0) + b"\x00" + struct.pack("<H", 0) + b"Hello",
        "unaligned-long": K + struct.pack("<Q", 3) + b"\x07" + struct.pack("<H", 17)
        + bytes(range(100)),
        "huge-offset": K + struct.pack("<Q", (1 << 64) - 1) + b"\x01" + struct.pack("<H", 5)
        + bytes(40),
    }

    masked = dict(key=RFC_MASK)
    yield "server_connection", {
        "echo-and-close": bytes([HANDSHAKE])
        + peer_frame(0x81, b"Hello", **masked)
        + send_text("Hello")
        + peer_frame(0x88, close_payload(1000, b"bye"), **masked)
        + TRANSMIT,
        "chromium-fragmented-with-ping": bytes([HANDSHAKE | VARIANT | PROTOCOL])
        + peer_frame(0x01, b"Hel", **masked)
        + peer_frame(0x89, b"p", **masked)
        + peer_frame(0x80, b"lo", **masked)
        + consume(100)
        + close(1000, b"done")
        + peer_frame(0x88, close_payload(1000), **masked)
        + TRANSMIT,
        "one-read-lending": bytes([0])
        + feed(RFC_REQUEST + frame(0x82, bytes(200), RFC_MASK) + frame(0x8A, b"", RFC_MASK),
               lending=True)
        + send_binary(b"ab", repeat_hi=1)
        + TRANSMIT,
        "heartbeat-dies": bytes([HANDSHAKE | PING])
        + feed(b"")
        + TO_DEADLINE
        + TO_DEADLINE
        + peer_frame(0x8A, b"\x00\x00\x00\x00\x00\x00\x00\x02", **masked)
        + TO_DEADLINE
        + TO_DEADLINE
        + TO_DEADLINE
        + TRANSMIT,
        "too-big": bytes([HANDSHAKE | TINY])
        + peer_frame(0x82, bytes(65), **masked)
        + TRANSMIT,
        "message-too-big": bytes([HANDSHAKE | TINY])
        + peer_frame(0x02, bytes(64), **masked)
        + peer_frame(0x00, bytes(64), **masked)
        + peer_frame(0x00, bytes(64), **masked)
        + peer_frame(0x80, bytes(64), **masked)
        + TRANSMIT,
        "streaming": bytes([HANDSHAKE])
        + feed(b"")
        + begin()
        + fragment("é".encode()[:1])
        + send_text("refused while streaming")
        + finish("é".encode()[1:] + b"!")
        + begin(binary=True)
        + fragment(b"\xff")
        + finish(b"")
        + fragment(b"no stream")
        + TRANSMIT,
        "healthz": bytes([0]) + feed(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n") + TRANSMIT,
        "rejected": bytes([HANDSHAKE | REJECT]) + feed(b"") + TRANSMIT,
        "bad-request": bytes([0]) + feed(RFC_REQUEST.replace(b"13", b"8")) + TRANSMIT,
        "invalid-utf8": bytes([HANDSHAKE])
        + peer_frame(0x01, b"ok\xed", **masked)
        + peer_frame(0x80, b"\xa0\x80", **masked)
        + TRANSMIT,
        "invalid-close-code": bytes([HANDSHAKE])
        + peer_frame(0x88, close_payload(1005), **masked)
        + TRANSMIT,
        "unmasked-frame": bytes([HANDSHAKE]) + peer_frame(0x81, b"x", flip_mask=True) + TRANSMIT,
        "fragmented-sends": bytes([HANDSHAKE | FRAGMENT])
        + feed(b"")
        + send_binary(b"0123456789", repeat_hi=1)
        + send_text("x" * 250, via_message=True)
        + ping(b"p")
        + pong()
        + TRANSMIT,
        "eof-mid-frame": bytes([HANDSHAKE])
        + feed(frame(0x82, bytes(100), RFC_MASK)[:50])
        + EOF
        + send_text("late"),
        "long-length-form": bytes([HANDSHAKE])
        + peer_frame(0x82, b"abc", long_form=True, lending=True, **masked)
        + TRANSMIT,
        "handshake-timeout": bytes([0]) + feed(RFC_REQUEST[:30]) + TO_DEADLINE + TRANSMIT,
        "close-timeout": bytes([HANDSHAKE])
        + feed(b"")
        + close(4000, b"app")
        + advance(1)
        + TO_DEADLINE
        + TRANSMIT,
    }

    yield "client_connection", {
        "echo-and-server-close": bytes([HANDSHAKE])
        + peer_frame(0x81, b"Hello")
        + send_text("Hello")
        + peer_frame(0x88, close_payload(1000))
        + TRANSMIT
        + TO_DEADLINE,
        "protocol-ping-client-close": bytes([HANDSHAKE | VARIANT])
        + peer_frame(0x89, b"hb")
        + close(1001, b"leaving")
        + peer_frame(0x88, close_payload(1001))
        + consume(1000),
        "handshake-timeout": bytes([0]) + TO_DEADLINE + TRANSMIT,
        "no-handshake-timeout": bytes([PROTOCOL]) + advance(600) + TO_DEADLINE,
        "masked-frame": bytes([HANDSHAKE]) + peer_frame(0x81, b"x", key=K, flip_mask=True),
        "heartbeat": bytes([HANDSHAKE | PING])
        + feed(b"")
        + TO_DEADLINE
        + peer_frame(0x8A, b"")
        + TO_DEADLINE
        + TO_DEADLINE
        + TO_DEADLINE,
        "fragmented-with-ping": bytes([HANDSHAKE | FRAGMENT])
        + peer_frame(0x02, b"ab")
        + peer_frame(0x89, b"")
        + peer_frame(0x80, b"cd", lending=True)
        + send_binary(bytes(150))
        + TRANSMIT,
        "wrong-accept": bytes([0]) + feed(response_101(accept=RFC_ACCEPT)) + TRANSMIT,
        "forbidden": bytes([0]) + feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
        "response-bytewise-then-text": bytes([HANDSHAKE])
        + peer_frame(0x81, "κόσμε".encode())
        + begin()
        + finish("done".encode())
        + TRANSMIT,
    }


def main():
    for target, files in seeds():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for name, data in files.items():
            assert len(data) < 4096, (target, name)
            (directory / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
