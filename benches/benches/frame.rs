//! Frame-level costs, duplex-core beside tungstenite and fastwebsockets on the same inputs:
//! receiving a masked frame, encoding a masked frame, masking alone (beside memcpy), UTF-8
//! validation, and the server side of the upgrade handshake.
//!
//! Benchmark IDs are `group/library/parameter`; `report.py` turns the results into a table.

mod common;

use std::hint::black_box;
use std::io::{Cursor, Write as _};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{
    DuplexReader, FRAME_SIZES, KEY, Replay, Sink, masked_frame, payload, random_source, ready,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_core::frame::{FrameHeader, OpCode};
use duplex_core::handshake::key::accept_key;
use duplex_core::handshake::server::{Request, write_accept_response};
use duplex_core::utf8::Utf8Validator;
use duplex_core::{Accept, Config, Connection, Event, Message, Role};
use tungstenite::handshake::machine::TryParse as _;

/// An upgrade request exactly as Chromium sends it (header order and values of Chrome 124 on
/// Linux, with the RFC 6455 sample key).
const CHROMIUM_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
Host: localhost:9001\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://localhost:9001\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

const CHROMIUM_KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
const CHROMIUM_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Server side: one masked binary frame arrives on the socket; the library reads it, parses the
/// header, unmasks the payload and hands it out.
fn decode_unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_unmask");
    for (size, label) in FRAME_SIZES {
        let payload = payload(size);
        let frame = masked_frame(OpCode::Binary, &payload);
        group.throughput(Throughput::Bytes(size as u64));

        let mut replay = Replay::new(frame.clone());
        let mut reader = DuplexReader::default();
        let mut conn = Connection::upgraded(Role::Server, Config::default(), None, Duration::ZERO);
        let mut receive = move || {
            replay.feed(&mut reader, &mut conn);
            match conn.poll_event() {
                Some(Event::Message(Message::Binary(data))) => data,
                other => panic!("duplex: {other:?}"),
            }
        };
        assert_eq!(receive(), payload);
        group.bench_function(BenchmarkId::new("duplex", label), |b| b.iter(&mut receive));

        let mut ws = tungstenite::WebSocket::from_raw_socket(
            Replay::new(frame.clone()),
            tungstenite::protocol::Role::Server,
            None,
        );
        let mut receive = move || match ws.read() {
            Ok(tungstenite::Message::Binary(data)) => data,
            other => panic!("tungstenite: {other:?}"),
        };
        assert_eq!(receive(), payload);
        group.bench_function(BenchmarkId::new("tungstenite", label), |b| {
            b.iter(&mut receive)
        });

        let mut ws = fastwebsockets::WebSocket::after_handshake(
            Replay::new(frame),
            fastwebsockets::Role::Server,
        );
        let mut receive = move || match ready(ws.read_frame()) {
            Ok(frame) if frame.opcode == fastwebsockets::OpCode::Binary => frame.payload,
            Ok(frame) => panic!("fastwebsockets: {:?}", frame.opcode),
            Err(e) => panic!("fastwebsockets: {e}"),
        };
        assert_eq!(&*receive(), &payload[..]);
        group.bench_function(BenchmarkId::new("fastwebsockets", label), |b| {
            b.iter(&mut receive)
        });
    }
    group.finish();
}

/// Header parsing alone, for the libraries that expose it (fastwebsockets does not).
fn header_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_decode");
    for (size, label) in FRAME_SIZES {
        let frame = masked_frame(OpCode::Binary, &payload(size));

        group.bench_function(BenchmarkId::new("duplex", label), |b| {
            b.iter(|| match FrameHeader::decode(black_box(&frame)) {
                Ok(Some((header, header_len))) => (header.payload_len, header.mask, header_len),
                other => panic!("duplex: {other:?}"),
            })
        });

        group.bench_function(BenchmarkId::new("tungstenite", label), |b| {
            b.iter(|| {
                let mut cursor = Cursor::new(black_box(&frame[..]));
                match tungstenite::protocol::frame::FrameHeader::parse(&mut cursor) {
                    Ok(Some((header, len))) => (len, header.mask, cursor.position()),
                    other => panic!("tungstenite: {other:?}"),
                }
            })
        });
    }
    group.finish();
}

/// Client side: send one binary message; the library writes the header, copies and masks the
/// payload, and hands the bytes to the socket.
fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (size, label) in FRAME_SIZES {
        let payload = payload(size);
        group.throughput(Throughput::Bytes(size as u64));

        let mut conn = Connection::upgraded(
            Role::Client,
            Config::default(),
            Some(random_source()),
            Duration::ZERO,
        );
        group.bench_function(BenchmarkId::new("duplex", label), |b| {
            b.iter(|| {
                conn.send_binary(&payload).unwrap();
                let written = Sink.write(conn.output()).unwrap();
                conn.consume(written);
            })
        });

        let data = Bytes::from(payload.clone());
        let mut ws = tungstenite::WebSocket::from_raw_socket(
            Sink,
            tungstenite::protocol::Role::Client,
            None,
        );
        group.bench_function(BenchmarkId::new("tungstenite", label), |b| {
            b.iter(|| ws.send(tungstenite::Message::Binary(data.clone())).unwrap())
        });

        let mut ws = fastwebsockets::WebSocket::after_handshake(Sink, fastwebsockets::Role::Client);
        group.bench_function(BenchmarkId::new("fastwebsockets", label), |b| {
            b.iter(|| {
                let frame =
                    fastwebsockets::Frame::binary(fastwebsockets::Payload::Borrowed(&payload));
                ready(ws.write_frame(frame)).unwrap()
            })
        });
    }
    group.finish();
}

/// Masking alone, in place, beside a plain copy of the same bytes (the floor any loop that
/// touches every byte is judged against). tungstenite keeps its masking function private.
fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for (size, label) in FRAME_SIZES {
        group.throughput(Throughput::Bytes(size as u64));

        let mut buf = payload(size);
        group.bench_function(BenchmarkId::new("duplex", label), |b| {
            b.iter(|| duplex_core::mask::apply_mask(black_box(&mut buf), KEY))
        });

        let mut buf = payload(size);
        group.bench_function(BenchmarkId::new("fastwebsockets", label), |b| {
            b.iter(|| fastwebsockets::unmask(black_box(&mut buf), KEY))
        });

        let src = payload(size);
        let mut dst = vec![0u8; size];
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| black_box(&mut dst).copy_from_slice(black_box(&src)))
        });
    }
    group.finish();
}

/// Text that exercises every UTF-8 sequence length: Latin, Greek, Cyrillic, Arabic, Devanagari,
/// CJK, emoji.
const MULTILINGUAL: &str = "Hello, world! Γειά σου Κόσμε! Привет, мир! مرحبا بالعالم! \
नमस्ते दुनिया! 你好，世界！こんにちは世界！안녕하세요 세계! 👋🌍🎉 ";

/// `len` bytes of `text` repeated, cut at a character boundary and padded with spaces.
fn text_of_len(text: &str, len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + text.len());
    while out.len() < len {
        out.push_str(text);
    }
    let mut end = len;
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    while out.len() < len {
        out.push(' ');
    }
    out.into_bytes()
}

/// UTF-8 validation of a whole text message: duplex's incremental validator against the standard
/// library and simdutf8 (which fastwebsockets uses).
fn utf8(c: &mut Criterion) {
    let ascii = "{\"type\":\"message\",\"room\":\"lobby\",\"text\":\"the quick brown fox\"} ";
    let mut group = c.benchmark_group("utf8");
    for (name, text) in [("ascii", ascii), ("multilingual", MULTILINGUAL)] {
        for (size, size_label) in [(1 << 10, "1KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")] {
            let input = text_of_len(text, size);
            assert!(std::str::from_utf8(&input).is_ok());
            let label = format!("{name}-{size_label}");
            group.throughput(Throughput::Bytes(size as u64));

            group.bench_function(BenchmarkId::new("duplex", &label), |b| {
                b.iter(|| {
                    let mut validator = Utf8Validator::new();
                    validator.feed(black_box(&input)).unwrap();
                    validator.finish().unwrap()
                })
            });
            group.bench_function(BenchmarkId::new("std", &label), |b| {
                b.iter(|| std::str::from_utf8(black_box(&input)).is_ok())
            });
            group.bench_function(BenchmarkId::new("simdutf8", &label), |b| {
                b.iter(|| simdutf8::basic::from_utf8(black_box(&input)).is_ok())
            });
        }
    }
    group.finish();
}

/// The server side of the upgrade. fastwebsockets only offers it through hyper, so it is left
/// out here.
fn handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake_parse");
    group.bench_function(BenchmarkId::new("duplex", "chromium"), |b| {
        b.iter(|| Request::parse(black_box(CHROMIUM_REQUEST)).unwrap())
    });
    group.bench_function(BenchmarkId::new("tungstenite", "chromium"), |b| {
        b.iter(|| {
            tungstenite::handshake::server::Request::try_parse(black_box(CHROMIUM_REQUEST))
                .unwrap()
                .unwrap()
        })
    });
    group.finish();

    // Parse, validate the upgrade, compute the accept key and write the 101 response.
    let mut group = c.benchmark_group("handshake_respond");
    group.bench_function(BenchmarkId::new("duplex", "chromium"), |b| {
        b.iter(|| {
            let request = Request::parse(black_box(CHROMIUM_REQUEST)).unwrap();
            let key = request.validate_upgrade().unwrap();
            let mut out = Vec::new();
            write_accept_response(key, &Accept::default(), &mut out);
            out
        })
    });
    group.bench_function(BenchmarkId::new("tungstenite", "chromium"), |b| {
        use tungstenite::handshake::server::{create_response, write_response};
        b.iter(|| {
            let (_, request) =
                tungstenite::handshake::server::Request::try_parse(black_box(CHROMIUM_REQUEST))
                    .unwrap()
                    .unwrap();
            let response = create_response(&request).unwrap();
            let mut out = Vec::new();
            write_response(&mut out, &response).unwrap();
            out
        })
    });
    group.finish();

    // A whole server connection, from the request bytes on the socket to the 101 on the wire.
    let mut group = c.benchmark_group("handshake_connection");
    let config = Arc::new(Config::default());
    let mut replay = Replay::new(CHROMIUM_REQUEST.to_vec());
    let mut reader = DuplexReader::default();
    group.bench_function(BenchmarkId::new("duplex", "chromium"), |b| {
        b.iter(|| {
            let mut conn = Connection::server(config.clone(), Duration::ZERO);
            replay.feed(&mut reader, &mut conn);
            let Some(Event::Request(_)) = conn.poll_event() else {
                panic!("duplex: no request");
            };
            conn.accept(Accept::default()).unwrap();
            let written = Sink.write(conn.output()).unwrap();
            conn.consume(written);
            conn
        })
    });
    let mut replay = Replay::new(CHROMIUM_REQUEST.to_vec());
    group.bench_function(BenchmarkId::new("tungstenite", "chromium"), |b| {
        b.iter(|| tungstenite::accept(&mut replay).map(drop).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("accept_key");
    assert_eq!(accept_key(CHROMIUM_KEY), CHROMIUM_ACCEPT);
    assert_eq!(
        tungstenite::handshake::derive_accept_key(CHROMIUM_KEY),
        CHROMIUM_ACCEPT
    );
    group.bench_function(BenchmarkId::new("duplex", "chromium"), |b| {
        b.iter(|| accept_key(black_box(CHROMIUM_KEY)))
    });
    group.bench_function(BenchmarkId::new("tungstenite", "chromium"), |b| {
        b.iter(|| tungstenite::handshake::derive_accept_key(black_box(CHROMIUM_KEY)))
    });
    group.finish();
}

criterion_group!(
    benches,
    decode_unmask,
    header_decode,
    encode,
    mask,
    utf8,
    handshake
);
criterion_main!(benches);
