#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/corpus/<target>/seed-*.

The byte formats are those of fuzz/src/checks.rs (see its module documentation). Run from
anywhere: `python3 fuzz/seeds.py`. Only seed-* files are rewritten; reproducers saved next to
them (regress-*) are left alone.
"""

import base64
import hashlib
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


# ---------------------------------------------------------------------------- permessage-deflate

PMD = b"permessage-deflate"
CHROMIUM_OFFER = PMD + b"; client_max_window_bits"
FIREFOX_OFFER = PMD


def deflate_config(snct=False, cnct=False, level=0, threshold16=0, server_bits=15, client_bits=15):
    """deflate_negotiation's two configuration bytes (flags, windows)."""
    flags = (1 if snct else 0) | (2 if cnct else 0) | (level << 2) | (threshold16 << 6)
    return bytes([flags, server_bits | client_bits << 4])


DEFAULT_CONFIG = deflate_config(level=6, threshold16=2)

SERVER, CLIENT = 0, 1
LEVELS = {0: 0, 1: 1, 6: 2, 9: 3}
THRESHOLDS = {0: 0, 1: 1, 8: 2, 32: 3, 64: 4, 100: 5, 150: 6, 1000: 7}


def deflate_setup(role=SERVER, snct=False, cnct=False, level=6, threshold=32, server_bits=15,
                  client_bits=15, peer=0, peer_server_bits=15, peer_client_bits=15):
    """deflate_connection's 4 setup bytes: ours, then the peer's offer (server) or policy
    (client), whose window bits are 8..=15."""
    local = role | (2 if snct else 0) | (4 if cnct else 0) | LEVELS[level] << 3 \
        | THRESHOLDS[threshold] << 5
    return bytes([local, server_bits | client_bits << 4, peer,
                  (peer_server_bits - 8) | (peer_client_bits - 8) << 4])


# The offer bits of a server's peer (the policy bits of a client's: 1, 2 and NO_HEADER).
O_SNCT, O_CNCT, O_SMWB, O_CMWB, O_CMWB_VALUE, O_WEBKIT_FIRST, O_FALLBACK, NO_HEADER = (
    1 << i for i in range(8))

SYNC, FULL, FINAL, PLAIN = range(4)
REPEATS = {1: 0, 4: 1, 16: 2, 128: 3}


def compressed(data, binary=False, ending=SYNC, level=6, repeat=1, fresh=False, shape=0,
               key=b"\x00\x00\x00\x00", ping=False, lending=False):
    """deflate_connection's op: a message the peer compresses (see checks_deflate.rs)."""
    hi = 8 | (1 if ping else 0) | (4 if lending else 0)
    mode = (1 if binary else 0) | ending << 1 | LEVELS[level] << 3 | REPEATS[repeat] << 5 \
        | (0x80 if fresh else 0)
    return bytes([0x0F | hi << 4, mode, shape]) + key + bytes([len(data)]) + data


def client_accept():
    """The Sec-WebSocket-Accept for the key of the client connections of checks.rs: their
    random source (an LCG) gives the 16 bytes of the nonce."""
    state, nonce = 0x2545F491, bytearray()
    for _ in range(16):
        state = (state * 1664525 + 1013904223) % (1 << 32)
        nonce.append(state >> 24)
    key = base64.b64encode(bytes(nonce))
    digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest).decode()


def response_with_extensions(value):
    return response_101(accept=client_accept(), extra=b"Sec-WebSocket-Extensions: " + value
                        + b"\r\n")


# RFC 7692 §7.2.3: "Hello" compressed (sync flush), again with context takeover, stored, with
# a final block, as two blocks.
RFC_HELLO = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
RFC_HELLO_AGAIN = bytes([0xF2, 0x00, 0x11, 0x00, 0x00])
RFC_HELLO_STORED = bytes([0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00])
RFC_HELLO_FINAL = bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00])
RFC_HELLO_TWO_BLOCKS = bytes([0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9,
                              0x07, 0x00])

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


def deflate_seeds():
    yield "deflate_negotiation", {
        "chromium": DEFAULT_CONFIG + DEFAULT_CONFIG + CHROMIUM_OFFER,
        "firefox": DEFAULT_CONFIG + DEFAULT_CONFIG + FIREFOX_OFFER,
        "every-parameter": deflate_config(client_bits=12) + DEFAULT_CONFIG
        + PMD + b"; server_no_context_takeover; client_no_context_takeover; "
        b"server_max_window_bits=10; client_max_window_bits",
        "every-parameter-strict-policy": deflate_config(True, True, server_bits=9, client_bits=9)
        + deflate_config(True, False, server_bits=10, client_bits=11)
        + PMD + b"; server_no_context_takeover; client_no_context_takeover; "
        b"server_max_window_bits=12; client_max_window_bits=13",
        "quoted-values": DEFAULT_CONFIG + DEFAULT_CONFIG
        + PMD + b'; server_max_window_bits="10"; client_max_window_bits="8"',
        "window-8": deflate_config(server_bits=8, client_bits=8) + deflate_config(server_bits=8)
        + PMD + b"; server_max_window_bits=8; client_max_window_bits=8",
        "unclamped-zero-windows": deflate_config(server_bits=0, client_bits=0)
        + deflate_config(server_bits=0, client_bits=0) + CHROMIUM_OFFER,
        "webkit-then-pmd": DEFAULT_CONFIG + DEFAULT_CONFIG
        + b"x-webkit-deflate-frame, " + CHROMIUM_OFFER,
        "invalid-then-valid": DEFAULT_CONFIG + DEFAULT_CONFIG
        + PMD + b"; foo, " + PMD + b"; server_no_context_takeover; server_no_context_takeover, "
        + PMD + b"; server_max_window_bits=7, " + PMD + b"; server_max_window_bits=010, "
        + PMD + b"; client_max_window_bits=16, " + PMD + b"; server_max_window_bits, "
        + PMD + b"; client_no_context_takeover=1, " + PMD + b"; client_max_window_bits=9",
        "case": DEFAULT_CONFIG + DEFAULT_CONFIG + b"PerMessage-Deflate; Server_Max_Window_Bits=9",
        "response-without-value": DEFAULT_CONFIG + deflate_config(True, server_bits=10)
        + PMD + b"; client_max_window_bits, " + PMD + b"; server_no_context_takeover; "
        b"server_max_window_bits=11, " + PMD + b"; server_no_context_takeover; "
        b"server_max_window_bits=9; client_max_window_bits=15",
        "unparsable": DEFAULT_CONFIG + DEFAULT_CONFIG + PMD + b'; x="unterminated',
    }

    hello = b"Hello"
    chat = b'{"type":"message","room":"app/general","text":"hello everyone"}'
    masked = dict(key=RFC_MASK)
    yield "deflate_connection", {
        # RFC 7692 §7.2.3.1 and §7.2.3.2: zlib (level 6) writes the RFC's bytes.
        "rfc-hello-twice": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + compressed(hello, **masked)
        + compressed(hello, ping=True, **masked)
        + send_text("Hello")
        + TRANSMIT,
        "rfc-hello-raw-frames": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + peer_frame(0xC1, RFC_HELLO, **masked)
        + peer_frame(0xC1, RFC_HELLO_AGAIN, **masked)
        + peer_frame(0x41, RFC_HELLO[:3], **masked)
        + peer_frame(0x80, RFC_HELLO[3:], **masked)
        + peer_frame(0xC1, RFC_HELLO_STORED, **masked)
        + peer_frame(0xC1, RFC_HELLO_TWO_BLOCKS, **masked)
        + TRANSMIT,
        "rfc-hello-final-block-raw": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + peer_frame(0xC1, RFC_HELLO_FINAL, **masked)
        + peer_frame(0xC1, RFC_HELLO, **masked)
        + TRANSMIT,
        # §7.2.3.3 (stored); §7.2.3.4 (a final block, then 0x00) is
        # regress-rfc7692-final-block-refused.
        "rfc-hello-stored": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + compressed(hello, level=0, **masked) + TRANSMIT,
        "fragmented-bytewise": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + compressed(chat, shape=0x01, ping=True, **masked)
        + compressed(chat, binary=True, ending=FULL, shape=0x2B, lending=True, **masked)
        + compressed(chat, ending=PLAIN, shape=0x04, **masked)
        + TRANSMIT,
        "chromium": bytes([HANDSHAKE | VARIANT | PROTOCOL]) + deflate_setup(peer=O_CMWB)
        + compressed(chat, **masked)
        + send_text(chat.decode())
        + send_text(chat.decode(), via_message=True)
        + send_binary(bytes(range(200)))
        + TRANSMIT,
        "every-parameter": bytes([HANDSHAKE])
        + deflate_setup(level=9, threshold=0, server_bits=12, client_bits=10,
                        peer=O_SNCT | O_CNCT | O_SMWB | O_CMWB | O_CMWB_VALUE,
                        peer_server_bits=11, peer_client_bits=12)
        + compressed(chat, **masked)
        + compressed(chat, **masked)
        + send_text(chat.decode())
        + send_text(chat.decode())
        + TRANSMIT,
        "window-8": bytes([HANDSHAKE])
        + deflate_setup(peer=O_SMWB | O_CMWB | O_CMWB_VALUE, peer_server_bits=8,
                        peer_client_bits=8)
        + compressed(chat, level=9, **masked)
        + send_text(chat.decode())
        + TRANSMIT,
        "sends-streams-fragments": bytes([HANDSHAKE | FRAGMENT])
        + deflate_setup(level=1, threshold=0)
        + feed(b"")
        + send_text("")
        + send_binary(b"0123456789", repeat_hi=7)
        + send_binary(bytes(range(256))[1:], repeat_hi=3)
        + begin()
        + fragment(b"")
        + fragment("é".encode()[:1])
        + finish("é".encode()[1:])
        + begin(binary=True)
        + fragment(chat)
        + finish(b"")
        + ping(b"p")
        + close(1000, b"bye")
        + TRANSMIT,
        "bomb": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + compressed(bytes(255), binary=True, repeat=128, level=9, **masked) + TRANSMIT,
        "bomb-tiny": bytes([HANDSHAKE | TINY]) + deflate_setup(peer=0)
        + compressed(b"a" * 100, repeat=4, level=9, **masked)
        + TRANSMIT,
        "invalid-utf8": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + compressed(b"ok\xed\xa0\x80" * 10, **masked) + TRANSMIT,
        "garbage": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + peer_frame(0xC2, b"\xff\xff\xff\x00\x12", **masked) + TRANSMIT,
        "rsv1-on-continuation": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + peer_frame(0x41, RFC_HELLO[:3], **masked)
        + peer_frame(0xC0, RFC_HELLO[3:], **masked) + TRANSMIT,
        "rsv1-on-ping": bytes([HANDSHAKE]) + deflate_setup(peer=0)
        + peer_frame(0xC9, b"", **masked) + TRANSMIT,
        "declined": bytes([HANDSHAKE]) + deflate_setup(peer=NO_HEADER)
        + send_text(chat.decode())
        + peer_frame(0xC1, RFC_HELLO, **masked) + TRANSMIT,
        "webkit-then-fallback": bytes([HANDSHAKE])
        + deflate_setup(peer=O_WEBKIT_FIRST | O_FALLBACK | O_SMWB, peer_server_bits=9)
        + compressed(chat, **masked) + send_text(chat.decode() * 3) + TRANSMIT,
        "client-hello": bytes([HANDSHAKE]) + deflate_setup(role=CLIENT, peer=0)
        + compressed(hello)
        + compressed(hello, ending=FULL, level=9)
        + send_text("Hello")
        + send_text(chat.decode())
        + TRANSMIT,
        "client-strict-policy": bytes([HANDSHAKE])
        + deflate_setup(role=CLIENT, cnct=True, server_bits=10, client_bits=9, threshold=0,
                        peer=O_SNCT | O_CNCT, peer_server_bits=9, peer_client_bits=8)
        + compressed(chat)
        + compressed(chat, shape=0x03)
        + send_text(chat.decode())
        + send_text(chat.decode())
        + TRANSMIT,
        "client-declined": bytes([HANDSHAKE]) + deflate_setup(role=CLIENT, peer=NO_HEADER)
        + send_text(chat.decode()) + peer_frame(0xC1, RFC_HELLO) + TRANSMIT,
        # 101s of the input's own making, for the client to judge.
        "client-raw-101": bytes([0]) + deflate_setup(role=CLIENT, peer=0)
        + feed(response_with_extensions(PMD + b"; server_max_window_bits=10; "
                                        b"client_max_window_bits=9; server_no_context_takeover"))
        + peer_frame(0xC1, RFC_HELLO)
        + send_text(chat.decode())
        + TRANSMIT,
        "client-raw-101-invalid": bytes([0]) + deflate_setup(role=CLIENT, peer=0)
        + feed(response_with_extensions(PMD + b"; client_max_window_bits"))
        + TRANSMIT,
        "client-raw-101-twice": bytes([0]) + deflate_setup(role=CLIENT, peer=0)
        + feed(response_with_extensions(PMD + b", " + PMD))
        + TRANSMIT,
        "client-raw-101-unoffered-limit": bytes([0])
        + deflate_setup(role=CLIENT, server_bits=10, snct=True, peer=0)
        + feed(response_with_extensions(PMD + b"; server_max_window_bits=12"))
        + TRANSMIT,
        "client-bomb": bytes([HANDSHAKE]) + deflate_setup(role=CLIENT, peer=0)
        + compressed(bytes(255), repeat=128, level=1) + TRANSMIT,
    }


def channel_seeds():
    """channel_decode: two limit bytes (depth, values), then a duplex.v1 command."""
    roomy = bytes([15, 255])
    tight = bytes([2, 3])
    commands = {
        "hello": b'{"type":"hello","client":"ada"}',
        "hello-token": b'{"type":"hello","token":"eyJhbGciOiJIUzI1NiJ9.e30.x"}',
        "join": b'{"type":"join","id":1,"room":"app/chat","presence":{"name":"Ada"},'
                b'"since":{"epoch":"4d9b3f1ec9cf6b1b","seq":7}}',
        "publish": b'{"type":"publish","id":"p-1","room":"app/chat","data":{"text":"hi","n":[1,2.5,-3e2,true,null]}}',
        "presence": b'{"type":"presence","room":"app/chat","presence":"typing \\u00e9 \\"q\\""}',
        "leave": b'{"type":"leave","id":2,"room":"app/chat"}',
        "ping": b'{ "type" : "ping" , "id" : 3 }',
        "send": b'{"type":"send","id":9,"to":"fuzz","data":{"sdp":"v=0\\r\\n","n":[1]}}',
        "send-bad-to": b'{"type":"send","id":"s-1","to":"a b","data":1}',
        "unknown": b'{"type":"dance","id":4}',
        "bad-room": b'{"type":"join","id":5,"room":"no-namespace"}',
        "not-object": b'[1,2,3]',
        "deep": b'{"type":"publish","id":6,"room":"app/a","data":' + b"[" * 40 + b"]" * 40 + b"}",
        "bushy": b'{"type":"publish","id":7,"room":"app/a","data":[' + b"[]," * 300 + b"0]}",
        "brackets-in-strings": b'{"type":"publish","id":8,"room":"app/a","data":"[[[{{{\\\\"}',
    }
    files = {}
    for name, text in commands.items():
        files[name] = roomy + text
        files[name + "-tight"] = tight + text
    yield "channel_decode", files


def api_seeds():
    """api_request: a method byte (0 GET, 1 POST, 2 PUT, 3 DELETE), the target, `\\n`, the body."""
    GET, POST, PUT = 0, 1, 2
    requests = {
        "publish": (POST, b"/api/publish", b'{"room":"shop/orders","data":{"order":42},"from":"billing","id":"o-42"}'),
        "publish-number-id": (POST, b"/api/publish", b'{"room":"a/b","data":[1,2.5,null],"id":7}'),
        "publish-bad-json": (POST, b"/api/publish", b'{"room":"a/b","data":'),
        "publish-big": (POST, b"/api/publish", b'{"room":"a/b","data":"' + b"x" * 300 + b'"}'),
        "publish-get": (GET, b"/api/publish", b""),
        "broadcast": (POST, b"/api/broadcast", b'{"rooms":["a/b","c/d","e.f/g:h"],"data":true}'),
        "disconnect": (POST, b"/api/disconnect", b'{"client":"ada","code":4001,"reason":"bye"}'),
        "send": (POST, b"/api/send", b'{"client":"ada","data":{"sdp":"offer"}}'),
        "rooms": (GET, b"/api/rooms", b""),
        "rooms-put": (PUT, b"/api/rooms", b""),
        "presence": (GET, b"/api/rooms/app/chat/presence", b""),
        "history": (GET, b"/api/rooms/app/chat/history?since=4d9b3f1ec9cf6b1b:7&limit=20", b""),
        "history-bad-since": (GET, b"/api/rooms/app/chat/history?since=x&limit=0", b""),
        "unknown": (GET, b"/api/nope/../x", b""),
    }
    files = {}
    for name, (method, target, body) in requests.items():
        files[name] = bytes([method]) + target + b"\n" + body
    yield "api_request", files


def stomp_seeds():
    """stomp_decode: a version byte (0 none, 1 1.0, 2 1.1, 3 1.2), a chunking byte, a limits
    byte (1: small limits), then the bytes."""
    connect = b"CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\n\n\0"
    subscribe = b"SUBSCRIBE\nid:sub-0\ndestination:/topic/app/chat\nack:client-individual\n\n\0"
    send_json = (b"SEND\ndestination:/topic/app/chat\ncontent-type:application/json\n"
                 b"content-length:13\nreceipt:r-1\n\n{\"text\":\"hi\"}\0\n")
    frames = {
        "connect": (0, 0, 0, connect),
        "connect-crlf-split": (0, 0x0b, 0, connect.replace(b"\n", b"\r\n")),
        "session-12": (3, 0x1d, 0, subscribe + b"\n" + send_json + b"ACK\nid:e:1\n\n\0DISCONNECT\nreceipt:77\n\n\0"),
        "escapes-12": (3, 0, 0, b"SEND\ndestination:/topic/a/b\nk\\cx:v\\n\\r\\\\\n\n\0"),
        "escapes-11-cr": (2, 0, 0, b"SEND\ndestination:/topic/a/b\nk:v\\r\n\n\0SEND\nk:a\rb\n\n\0"),
        "plain-10": (1, 0x02, 0, b"SEND\ndestination:/topic/a/b\nk:a\\nb\n\nbody\0"),
        "nul-body": (3, 0x05, 0, b"SEND\ncontent-length:5\n\na\0b\0c\0"),
        "missing-nul": (3, 0, 0, b"SEND\ncontent-length:2\n\nabc\0"),
        "unknown-command": (3, 0, 0, b"PUBLISH\n\n\0"),
        "body-on-subscribe": (3, 0, 0, b"SUBSCRIBE\nid:1\n\nx\0"),
        "small-limits": (3, 0x03, 1, b"SEND\na:1\nb:2\nc:3\nd:4\n\n\0" + b"SEND\n\n" + b"x" * 120 + b"\0"),
        "long-header": (3, 0x01, 1, b"SEND\n" + b"h" * 40 + b":v\n\n\0"),
        "heartbeats": (3, 0x01, 0, b"\n\r\n\n" + connect),
    }
    files = {}
    for name, (version, chunking, limits, data) in frames.items():
        files[name] = bytes([version, chunking, limits]) + data
    yield "stomp_decode", files


def main():
    for target, files in list(seeds()) + list(deflate_seeds()) + list(channel_seeds()) + list(api_seeds()) + list(stomp_seeds()):
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for name, data in files.items():
            assert len(data) < 4096, (target, name)
            (directory / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
