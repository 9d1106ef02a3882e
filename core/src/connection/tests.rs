use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::close::CloseCode;
use crate::error::{Error, ProtocolError, SendError};
use crate::handshake::client::ClientRequest;
use crate::handshake::server::Accept;
use crate::message::{Closed, Event, Message, MessageKind};

const T0: Duration = Duration::ZERO;
const SEC: Duration = Duration::from_secs(1);

/// Deterministic "randomness": tests must be reproducible.
fn counter_random() -> RandomSource {
    let mut n = 0u8;
    Box::new(move |buf: &mut [u8]| {
        for b in buf {
            n = n.wrapping_add(37);
            *b = n;
        }
    })
}

fn drain(conn: &mut Connection) -> Vec<Event> {
    core::iter::from_fn(|| conn.poll_event()).collect()
}

fn take_output(conn: &mut Connection) -> Vec<u8> {
    let out = conn.output().to_vec();
    conn.consume(out.len());
    out
}

/// Every piece of the output, in order.
fn take_all_output(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.buffered_amount() > 0 {
        out.extend(take_output(conn));
    }
    out
}

fn pump(from: &mut Connection, to: &mut Connection, now: Duration) {
    let out = take_output(from);
    if !out.is_empty() {
        to.receive(now, &out);
    }
}

fn request() -> ClientRequest {
    ClientRequest::from_url("ws://example.com/chat?room=1").unwrap()
}

/// A client and a server with the handshake done and no events pending.
fn open_pair(client_cfg: Config, server_cfg: Config) -> (Connection, Connection) {
    let mut client = Connection::client(request(), client_cfg, counter_random(), T0);
    let mut server = Connection::server(server_cfg, T0);
    pump(&mut client, &mut server, T0);
    match drain(&mut server).as_slice() {
        [Event::Request(req)] => {
            assert!(req.is_websocket_upgrade());
            assert_eq!(req.path(), "/chat");
        }
        other => panic!("unexpected server events {other:?}"),
    }
    server.accept(Accept::default()).unwrap();
    assert!(matches!(drain(&mut server).as_slice(), [Event::Open]));
    pump(&mut server, &mut client, T0);
    assert!(matches!(drain(&mut client).as_slice(), [Event::Open]));
    assert!(client.is_open() && server.is_open());
    (client, server)
}

fn open_server(cfg: Config) -> Connection {
    let (_, server) = open_pair(Config::default(), cfg);
    server
}

fn open_client(cfg: Config) -> Connection {
    let (client, _) = open_pair(cfg, Config::default());
    client
}

/// Builds a frame by hand so tests do not trust the encoder under test.
fn raw_frame(first_byte: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(first_byte, payload, Some(KEY))
}

/// Asserts the connection failed with `code`: an error event, a Closed event, and (when the
/// code may go on the wire) a close frame carrying it as the last output.
fn assert_failed(conn: &mut Connection, code: CloseCode) -> Error {
    let events = drain(conn);
    let error = events
        .iter()
        .find_map(|e| match e {
            Event::Error(err) => Some(err.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no error event in {events:?}"));
    assert_eq!(error.close_code(), code, "{error}");
    match events.last() {
        Some(Event::Closed(Closed { code: c, clean, .. })) => {
            assert_eq!(*c, code);
            assert!(!clean);
        }
        other => panic!("expected Closed last, got {other:?}"),
    }
    let out = take_output(conn);
    if conn.role() == Role::Server {
        assert_eq!(sent_close(&out).0, code.as_u16(), "close frame on the wire");
    } else {
        assert!(
            out.len() >= 6 && out[0] == 0x88,
            "masked close frame expected: {out:?}"
        );
    }
    assert!(conn.is_terminated());
    assert!(conn.send_text("after").is_err());
    error
}

/// The close frame a server sent (unmasked), as (code, reason).
fn sent_close(out: &[u8]) -> (u16, String) {
    // The close frame is the last frame in `out`; scan frames from the start.
    let mut i = 0;
    let mut last = None;
    while i + 2 <= out.len() {
        let len = (out[i + 1] & 0x7f) as usize;
        assert!(len < 126, "test helper handles short frames only");
        if out[i] & 0x0f == 0x8 {
            last = Some(&out[i + 2..i + 2 + len]);
        }
        i += 2 + len;
    }
    let payload = last.expect("no close frame");
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    (code, String::from_utf8(payload[2..].to_vec()).unwrap())
}

#[test]
fn server_frames_around_the_two_byte_header_limit_are_encoded_exactly() {
    // Short frames take a path of their own (`write_frame_rsv`); `raw_frame` is the reference.
    let plain = Config::default();
    let mut server = open_server(plain.clone());
    for len in 0..=130usize {
        let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        server.send_binary(&payload).unwrap();
        assert_eq!(
            take_output(&mut server),
            raw_frame(0x82, &payload, None),
            "binary {len}"
        );
        server
            .send_text(core::str::from_utf8(&payload).unwrap())
            .unwrap();
        assert_eq!(
            take_output(&mut server),
            raw_frame(0x81, &payload, None),
            "text {len}"
        );
        server
            .send_owned(Message::Binary(payload.clone().into()))
            .unwrap();
        assert_eq!(
            take_output(&mut server),
            raw_frame(0x82, &payload, None),
            "owned binary {len}"
        );
        if len <= 125 {
            server.send_ping(&payload).unwrap();
            assert_eq!(
                take_output(&mut server),
                raw_frame(0x89, &payload, None),
                "ping {len}"
            );
        }
    }
    // Fragments: a first frame without FIN, continuations, FIN on the last only.
    let mut server = open_server(plain.with_fragment_size(Some(100)));
    let payload = vec![7u8; 250];
    server.send_binary(&payload).unwrap();
    let mut expected = raw_frame(0x02, &payload[..100], None);
    expected.extend(raw_frame(0x00, &payload[100..200], None));
    expected.extend(raw_frame(0x80, &payload[200..], None));
    assert_eq!(take_output(&mut server), expected);
    server.send_binary(&payload[..100]).unwrap();
    assert_eq!(
        take_output(&mut server),
        raw_frame(0x82, &payload[..100], None)
    );
    // Around the 16-bit length's limits and the size from which owned payloads are queued
    // without a copy (their output then comes in pieces).
    let mut server = open_server(Config::default());
    for len in [1024, OWNED_MIN - 1, OWNED_MIN, 65_535, 65_536] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        server.send_binary(&payload).unwrap();
        assert_eq!(
            take_all_output(&mut server),
            raw_frame(0x82, &payload, None),
            "{len}"
        );
        server
            .send_owned(Message::Binary(payload.clone().into()))
            .unwrap();
        assert_eq!(
            take_all_output(&mut server),
            raw_frame(0x82, &payload, None),
            "owned {len}"
        );
    }
    // Short messages are fragmented too when the fragment size says so.
    let mut server = open_server(Config::default().with_fragment_size(Some(8)));
    let mut expected = raw_frame(0x01, b"abcdefgh", None);
    expected.extend(raw_frame(0x80, b"ij", None));
    server.send_text("abcdefghij").unwrap();
    assert_eq!(take_output(&mut server), expected);
    server
        .send_owned(Message::Text("abcdefghij".into()))
        .unwrap();
    assert_eq!(take_output(&mut server), expected);
}

#[test]
fn echo_both_ways_ping_pong_and_close_handshake() {
    let (mut client, mut server) = open_pair(Config::default(), Config::default());
    client.send_text("hello").unwrap();
    client.send_binary(&[1, 2, 3]).unwrap();
    pump(&mut client, &mut server, T0);
    assert_eq!(
        drain(&mut server),
        vec![
            Event::Message(Message::Text("hello".into())),
            Event::Message(Message::Binary(Bytes::from_static(&[1, 2, 3]))),
        ]
    );
    server.send_text("world").unwrap();
    server.send_ping(b"p").unwrap();
    pump(&mut server, &mut client, T0);
    assert_eq!(
        drain(&mut client),
        vec![
            Event::Message(Message::Text("world".into())),
            Event::Ping(Bytes::from_static(b"p")),
        ]
    );
    pump(&mut client, &mut server, T0);
    assert_eq!(
        drain(&mut server),
        vec![Event::Pong(Bytes::from_static(b"p"))]
    );

    client.close(CloseCode::Normal, "bye").unwrap();
    assert_eq!(client.state(), ConnectionState::Closing);
    pump(&mut client, &mut server, T0);
    let server_events = drain(&mut server);
    assert_eq!(
        server_events,
        vec![Event::Closed(Closed {
            code: CloseCode::Normal,
            reason: "bye".into(),
            clean: true,
            initiated_by_peer: true,
        })]
    );
    assert!(server.is_terminated(), "the server closes TCP first");
    pump(&mut server, &mut client, T0);
    assert_eq!(
        drain(&mut client),
        vec![Event::Closed(Closed {
            code: CloseCode::Normal,
            reason: String::new(),
            clean: true,
            initiated_by_peer: false,
        })]
    );
    assert!(
        !client.is_terminated(),
        "the client waits for the server's TCP close"
    );
    client.receive_eof(T0);
    assert!(client.is_terminated());
    assert_eq!(client.send_text("late"), Err(SendError::NotOpen));
    assert!(client.output().is_empty());
}

#[test]
fn client_lingers_at_most_the_close_timeout() {
    let cfg = Config::default().with_close_timeout(2 * SEC);
    let (mut client, mut server) = open_pair(cfg, Config::default());
    server.close(CloseCode::GoingAway, "").unwrap();
    pump(&mut server, &mut client, T0);
    assert!(!client.is_terminated());
    assert_eq!(client.poll_timeout(), Some(2 * SEC));
    client.handle_timeout(2 * SEC);
    assert!(client.is_terminated());
    // The client echoed the code.
    let echoed = take_output(&mut client);
    server.receive(T0, &echoed);
    assert!(matches!(
        drain(&mut server).as_slice(),
        [Event::Closed(Closed {
            code: CloseCode::GoingAway,
            clean: true,
            ..
        })]
    ));
}

#[test]
fn server_close_frame_without_code_is_echoed_empty() {
    let mut server = open_server(Config::default());
    server.receive(T0, &client_frame(0x88, &[]));
    assert!(matches!(
        drain(&mut server).as_slice(),
        [Event::Closed(Closed {
            code: CloseCode::NoStatus,
            clean: true,
            ..
        })]
    ));
    assert_eq!(take_output(&mut server), vec![0x88, 0x00]);
}

#[test]
fn rfc_example_masked_hello_is_decoded() {
    let mut server = open_server(Config::default());
    // RFC 6455 §5.7: a single-frame masked text message "Hello".
    server.receive(
        T0,
        &[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ],
    );
    assert_eq!(
        drain(&mut server),
        vec![Event::Message(Message::Text("Hello".into()))]
    );
    // And the server's unmasked "Hello" is byte for byte the RFC's.
    server.send_text("Hello").unwrap();
    assert_eq!(
        take_output(&mut server),
        vec![0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
    );
}

#[test]
fn fragmented_message_with_interleaved_ping() {
    let mut server = open_server(Config::default());
    let mut bytes = client_frame(0x01, b"Hel");
    bytes.extend(client_frame(0x89, b"ping"));
    bytes.extend(client_frame(0x80, b"lo"));
    server.receive(T0, &bytes);
    assert_eq!(
        drain(&mut server),
        vec![
            Event::Ping(Bytes::from_static(b"ping")),
            Event::Message(Message::Text("Hello".into())),
        ]
    );
    assert_eq!(take_output(&mut server), raw_frame(0x8A, b"ping", None));
}

#[test]
fn unmasked_client_frame_fails_with_1002() {
    let mut server = open_server(Config::default());
    server.receive(T0, &raw_frame(0x81, b"hi", None));
    let err = assert_failed(&mut server, CloseCode::Protocol);
    assert_eq!(err, Error::Protocol(ProtocolError::UnmaskedClientFrame));
}

#[test]
fn masked_server_frame_fails_with_1002() {
    let mut client = open_client(Config::default());
    client.receive(T0, &raw_frame(0x81, b"hi", Some(KEY)));
    let err = assert_failed(&mut client, CloseCode::Protocol);
    assert_eq!(err, Error::Protocol(ProtocolError::MaskedServerFrame));
}

#[test]
fn protocol_violations_fail_with_1002() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (client_frame(0xC1, b"x"), "rsv1 without extension"),
        (client_frame(0xA1, b"x"), "rsv2"),
        (client_frame(0x91, b"x"), "rsv3"),
        (client_frame(0x80, b"x"), "continuation without start"),
        (client_frame(0x83, b"x"), "reserved data opcode"),
        (client_frame(0x8B, b"x"), "reserved control opcode"),
        (client_frame(0x09, b"x"), "fragmented ping"),
        (client_frame(0x89, &[0u8; 126]), "ping longer than 125"),
        (client_frame(0x88, &[3]), "one-byte close payload"),
        (client_frame(0x88, &999u16.to_be_bytes()), "close code 999"),
        (
            client_frame(0x88, &1005u16.to_be_bytes()),
            "close code 1005",
        ),
        (
            client_frame(0x88, &2999u16.to_be_bytes()),
            "close code 2999",
        ),
        (
            {
                let mut b = client_frame(0x01, b"a");
                b.extend(client_frame(0x81, b"b"));
                b
            },
            "new message inside a fragmented one",
        ),
        (
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
            "64-bit length with MSB set",
        ),
    ];
    for (bytes, what) in cases {
        let mut server = open_server(Config::default());
        server.receive(T0, &bytes);
        let events = drain(&mut server);
        let closed = events.iter().find_map(|e| match e {
            Event::Closed(c) => Some(c.clone()),
            _ => None,
        });
        assert_eq!(
            closed.map(|c| c.code),
            Some(CloseCode::Protocol),
            "{what}: {events:?}"
        );
        let (code, _) = sent_close(&take_output(&mut server));
        assert_eq!(code, 1002, "{what}");
        assert!(server.is_terminated(), "{what}");
    }
}

#[test]
fn invalid_utf8_fails_fast_before_the_message_ends() {
    let mut server = open_server(Config::default());
    // A 100-byte text frame whose 3rd byte can never start valid UTF-8; only 10 bytes arrive.
    let mut payload = vec![b'a'; 100];
    payload[2] = 0xF8;
    let frame = client_frame(0x81, &payload);
    server.receive(T0, &frame[..2 + 4 + 10]);
    let err = assert_failed(&mut server, CloseCode::InvalidPayload);
    assert!(matches!(err, Error::InvalidUtf8(_)));
}

#[test]
fn invalid_utf8_split_across_fragments_fails() {
    let mut server = open_server(Config::default());
    // U+10FFFF+1 would be F4 90 80 80: split F4 | 90 across two fragments.
    let mut bytes = client_frame(0x01, &[b'a', 0xF4]);
    bytes.extend(client_frame(0x80, &[0x90, 0x80, 0x80]));
    server.receive(T0, &bytes);
    assert_failed(&mut server, CloseCode::InvalidPayload);
}

#[test]
fn truncated_utf8_at_message_end_fails() {
    let mut server = open_server(Config::default());
    server.receive(T0, &client_frame(0x81, &[b'a', 0xE2, 0x82]));
    assert_failed(&mut server, CloseCode::InvalidPayload);
}

#[test]
fn close_reason_must_be_utf8() {
    let mut server = open_server(Config::default());
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[
        0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80,
    ]);
    server.receive(T0, &client_frame(0x88, &payload));
    assert_failed(&mut server, CloseCode::InvalidPayload);
}

#[test]
fn every_valid_close_code_is_echoed() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ] {
        let mut server = open_server(Config::default());
        server.receive(T0, &client_frame(0x88, &code.to_be_bytes()));
        assert!(matches!(
            drain(&mut server).as_slice(),
            [Event::Closed(Closed {
                clean: true,
                initiated_by_peer: true,
                ..
            })]
        ));
        assert_eq!(sent_close(&take_output(&mut server)).0, code);
    }
}

#[test]
fn oversized_frame_is_refused_from_its_header_alone() {
    let cfg = Config::default().with_max_frame_size(1000);
    let mut server = open_server(cfg);
    // Only the header of a 1 MiB frame arrives: nothing of the payload is buffered.
    let frame = client_frame(0x82, &vec![0u8; 1 << 20]);
    server.receive(T0, &frame[..14]);
    let err = assert_failed(&mut server, CloseCode::TooBig);
    assert!(matches!(
        err,
        Error::FrameTooLarge {
            size: 1048576,
            max: 1000
        }
    ));
}

#[test]
fn oversized_message_is_refused_while_it_arrives() {
    let cfg = Config::default().with_max_message_size(100);
    let mut server = open_server(cfg);
    let mut bytes = client_frame(0x02, &[0u8; 60]);
    server.receive(T0, &bytes);
    assert!(drain(&mut server).is_empty());
    bytes = client_frame(0x80, &[0u8; 60]);
    server.receive(T0, &bytes[..8]);
    let err = assert_failed(&mut server, CloseCode::TooBig);
    assert!(matches!(
        err,
        Error::MessageTooLarge {
            size: 120,
            max: 100
        }
    ));
}

#[test]
fn message_exactly_at_the_limit_is_accepted() {
    let cfg = Config::default().with_max_message_size(100);
    let mut server = open_server(cfg);
    let mut bytes = client_frame(0x02, &[7u8; 50]);
    bytes.extend(client_frame(0x80, &[7u8; 50]));
    server.receive(T0, &bytes);
    assert_eq!(
        drain(&mut server),
        vec![Event::Message(Message::Binary(vec![7u8; 100].into()))]
    );
}

#[test]
fn heartbeat_pings_and_gives_up_after_missed_pongs() {
    let cfg = Config::default()
        .with_ping_interval(Some(30 * SEC))
        .with_max_missed_pongs(3);
    let mut server = open_server(cfg);
    for i in 1..=3u64 {
        assert_eq!(server.poll_timeout(), Some(30 * SEC * i as u32));
        server.handle_timeout(30 * SEC * i as u32);
        assert_eq!(
            take_output(&mut server),
            raw_frame(0x89, &i.to_be_bytes(), None),
            "ping {i}"
        );
    }
    server.handle_timeout(120 * SEC);
    let err = assert_failed(&mut server, CloseCode::GoingAway);
    assert_eq!(err, Error::HeartbeatTimeout { missed: 3 });
}

#[test]
fn heartbeat_stays_alive_while_pongs_arrive() {
    let cfg = Config::default()
        .with_ping_interval(Some(10 * SEC))
        .with_max_missed_pongs(1);
    let (mut client, mut server) = open_pair(Config::default(), cfg);
    for i in 1..=10u32 {
        server.handle_timeout(10 * SEC * i);
        pump(&mut server, &mut client, 10 * SEC * i);
        // Frames are parsed as the driver takes events: the ping is answered on poll.
        assert!(matches!(drain(&mut client).as_slice(), [Event::Ping(_)]));
        pump(&mut client, &mut server, 10 * SEC * i);
        assert!(server.is_open(), "round {i}");
        assert!(matches!(drain(&mut server).as_slice(), [Event::Pong(_)]));
    }
}

#[test]
fn idle_timeout_fails_the_connection_with_1001() {
    let cfg = Config::default().with_idle_timeout(Some(60 * SEC));
    let mut server = open_server(cfg);
    server.receive(50 * SEC, &client_frame(0x8A, b""));
    drain(&mut server);
    // First the release of the buffers kept after that frame, then the idle timeout.
    assert_eq!(server.poll_timeout(), Some(51 * SEC));
    server.handle_timeout(51 * SEC);
    assert!(server.is_open());
    assert_eq!(server.poll_timeout(), Some(110 * SEC));
    server.handle_timeout(110 * SEC);
    // One Error, then Closed: nothing the silent peer might still send is reported after it.
    let err = assert_failed(&mut server, CloseCode::GoingAway);
    assert_eq!(err, Error::IdleTimeout);
    assert!(server.is_terminated());
    server.receive(111 * SEC, &client_frame(0x81, b"late"));
    assert_eq!(drain(&mut server), vec![]);
    assert!(server.is_terminated());
}

#[test]
fn handshake_timeout_drops_a_silent_client() {
    let cfg = Config::default().with_handshake_timeout(Some(5 * SEC));
    let mut server = Connection::server(cfg, T0);
    server.receive(T0, b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(server.poll_timeout(), Some(5 * SEC));
    server.handle_timeout(4 * SEC);
    assert!(!server.is_terminated());
    server.handle_timeout(5 * SEC);
    assert!(server.is_terminated());
    assert!(matches!(
        drain(&mut server).as_slice(),
        [Event::Error(Error::HandshakeTimeout), Event::Closed(_)]
    ));
}

#[test]
fn oversized_head_gets_431() {
    let cfg = Config::default().with_max_head_size(256);
    let mut server = Connection::server(cfg, T0);
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    head.extend(core::iter::repeat_n(b'a', 300));
    server.receive(T0, &head);
    assert!(server.is_terminated());
    assert!(take_output(&mut server).starts_with(b"HTTP/1.1 431"));
}

#[test]
fn bad_version_gets_426_with_the_supported_version() {
    let mut server = Connection::server(Config::default(), T0);
    server.receive(
        T0,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    );
    let out = String::from_utf8(take_output(&mut server)).unwrap();
    assert!(out.starts_with("HTTP/1.1 426"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{out}"
    );
    assert!(server.is_terminated());
}

#[test]
fn plain_http_request_is_reported_and_answered() {
    let mut server = Connection::server(Config::default(), T0);
    server.receive(T0, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    match drain(&mut server).as_slice() {
        [Event::Request(req)] => {
            assert!(!req.is_websocket_upgrade());
            assert_eq!(req.path(), "/healthz");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.accept(Accept::default()), Err(SendError::NotOpen));
    server.respond(200, &[], b"ok").unwrap();
    assert!(take_output(&mut server).starts_with(b"HTTP/1.1 200"));
    assert!(server.is_terminated());
}

#[test]
fn a_request_answered_with_keep_alive_lets_the_next_pipelined_one_through() {
    let mut server = Connection::server(Config::default(), T0);
    server.receive(
        T0,
        b"POST /api/a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /api/b HTTP/1.1\r\n\r\nGET /c",
    );
    let events = drain(&mut server);
    let [Event::Request(first)] = events.as_slice() else {
        panic!("one request: {events:?}");
    };
    assert_eq!(first.path(), "/api/a");
    assert!(server.request_body().starts_with(b"helloGET /api/b"));
    server.continue_request().unwrap();
    server.respond_and_continue(200, &[], b"{}", 5).unwrap();
    let out = take_output(&mut server);
    let out = core::str::from_utf8(&out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{out}"
    );
    assert!(out.contains("Connection: keep-alive\r\n") && out.ends_with("\r\n\r\n{}"));
    let events = drain(&mut server);
    let [Event::Request(second)] = events.as_slice() else {
        panic!("the pipelined request: {events:?}");
    };
    assert_eq!(second.path(), "/api/b");
    assert_eq!(server.request_body(), b"GET /c");
    // Once answered, the third (incomplete) one waits; an idle wait ends quietly, a partial
    // request by the handshake timeout.
    server.respond_and_continue(404, &[], b"", 0).unwrap();
    take_output(&mut server);
    assert!(drain(&mut server).is_empty());
    server.handle_timeout(T0 + 60 * SEC);
    assert!(matches!(
        drain(&mut server).as_slice(),
        [Event::Error(Error::HandshakeTimeout), Event::Closed(_)]
    ));

    let mut idle = Connection::server(Config::default(), T0);
    idle.receive(T0, b"GET /x HTTP/1.1\r\n\r\n");
    drain(&mut idle);
    idle.respond_and_continue(200, &[], b"", 0).unwrap();
    assert_eq!(idle.accept(Accept::default()), Err(SendError::NotOpen));
    idle.handle_timeout(T0 + 60 * SEC);
    assert!(matches!(drain(&mut idle).as_slice(), [Event::Closed(c)] if c.clean));
    assert!(idle.is_terminated());
}

#[test]
fn a_streamed_response_has_no_length_no_timeout_and_ends_with_either_side() {
    let mut server = Connection::server(Config::default(), T0);
    server.receive(T0, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(drain(&mut server).as_slice(), [Event::Request(_)]));
    assert_eq!(server.send_body(b"early"), Err(SendError::NotOpen));
    server
        .respond_streaming(
            200,
            &[
                ("Content-Type", "text/event-stream"),
                ("Content-Length", "9"),
                ("Transfer-Encoding", "chunked"),
            ],
        )
        .unwrap();
    assert!(server.is_streaming());
    assert_eq!(server.state(), ConnectionState::Open);
    assert_eq!(server.respond(200, &[], b""), Err(SendError::NotOpen));
    server.send_body(b"data: 1\n\n").unwrap();
    let out = String::from_utf8(take_output(&mut server)).unwrap();
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n\
         data: 1\n\n"
    );
    // No deadline: a stream lasts as long as the application wants; what the reader sends is
    // ignored.
    assert_eq!(server.poll_timeout(), None);
    server.handle_timeout(T0 + 3600 * SEC);
    server.receive(T0, b"GET /more HTTP/1.1\r\n\r\n");
    assert!(drain(&mut server).is_empty());
    assert_eq!(server.received_len(), 0);
    server.send_body(b"data: 2\n\n").unwrap();
    assert_eq!(take_output(&mut server), b"data: 2\n\n");
    // The server ends it: closed once the output is written.
    server.end_body().unwrap();
    assert!(
        matches!(drain(&mut server).as_slice(), [Event::Closed(c)] if c.clean && !c.initiated_by_peer)
    );
    assert!(server.is_terminated());
    assert_eq!(server.send_body(b"late"), Err(SendError::NotOpen));

    // The reader leaves.
    let mut server = Connection::server(Config::default(), T0);
    server.receive(T0, b"GET /events HTTP/1.1\r\n\r\n");
    drain(&mut server);
    server.respond_streaming(200, &[]).unwrap();
    server.receive_eof(T0 + SEC);
    assert!(matches!(
        drain(&mut server).as_slice(),
        [Event::Closed(c)] if c.initiated_by_peer && c.code == CloseCode::Normal
    ));
    assert!(!server.is_streaming());

    // An upgrade request cannot be streamed to.
    let mut server = Connection::server(Config::default(), T0);
    let mut client = Connection::client(request(), Config::default(), counter_random(), T0);
    server.receive(T0, &take_output(&mut client));
    drain(&mut server);
    assert_eq!(server.respond_streaming(200, &[]), Err(SendError::NotOpen));
}

#[test]
fn a_held_request_waits_past_the_handshake_timeout_until_its_own() {
    let mut server = Connection::server(Config::default(), T0);
    server.receive(T0, b"GET /poll HTTP/1.1\r\n\r\n");
    drain(&mut server);
    let handshake = server.poll_timeout().unwrap();
    server.hold_request(120 * SEC).unwrap();
    assert_eq!(server.poll_timeout(), Some(T0 + 120 * SEC));
    assert!(handshake < T0 + 120 * SEC);
    server.handle_timeout(handshake);
    assert!(drain(&mut server).is_empty());
    server.respond_and_continue(200, &[], b"[]", 0).unwrap();
    assert!(take_output(&mut server).starts_with(b"HTTP/1.1 200"));
    assert_eq!(server.hold_request(SEC), Err(SendError::NotOpen));
}

#[test]
fn frames_pipelined_after_the_request_are_processed_on_accept() {
    let mut client = Connection::client(request(), Config::default(), counter_random(), T0);
    let mut server = Connection::server(Config::default(), T0);
    let mut bytes = take_output(&mut client);
    bytes.extend(client_frame(0x81, b"early"));
    server.receive(T0, &bytes);
    assert!(matches!(drain(&mut server).as_slice(), [Event::Request(_)]));
    server.accept(Accept::default()).unwrap();
    assert_eq!(
        drain(&mut server),
        vec![Event::Open, Event::Message(Message::Text("early".into()))]
    );
}

#[test]
fn client_rejects_a_bad_accept_key() {
    let mut client = Connection::client(request(), Config::default(), counter_random(), T0);
    take_output(&mut client);
    client.receive(
        T0,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    );
    let events = drain(&mut client);
    assert!(
        matches!(
            events.as_slice(),
            [Event::Error(Error::Handshake(_)), Event::Closed(_)]
        ),
        "{events:?}"
    );
    assert!(client.is_terminated());
}

#[test]
fn subprotocol_is_negotiated() {
    let req = request().with_protocol("duplex.v1").with_protocol("chat");
    let mut client = Connection::client(req, Config::default(), counter_random(), T0);
    let mut server = Connection::server(Config::default(), T0);
    pump(&mut client, &mut server, T0);
    let Some(Event::Request(r)) = server.poll_event() else {
        panic!()
    };
    assert_eq!(
        r.subprotocols(),
        vec![String::from("duplex.v1"), String::from("chat")]
    );
    server
        .accept(Accept {
            protocol: Some("chat".into()),
            ..Accept::default()
        })
        .unwrap();
    pump(&mut server, &mut client, T0);
    assert_eq!(client.protocol(), Some("chat"));
    assert_eq!(server.protocol(), Some("chat"));
}

#[test]
fn fragment_size_splits_outgoing_messages() {
    let cfg = Config::default().with_fragment_size(Some(4));
    let (mut client, mut server) = open_pair(Config::default(), cfg);
    server.send_text("0123456789").unwrap();
    let out = take_output(&mut server);
    let mut expected = raw_frame(0x01, b"0123", None);
    expected.extend(raw_frame(0x00, b"4567", None));
    expected.extend(raw_frame(0x80, b"89", None));
    assert_eq!(out, expected);
    client.receive(T0, &out);
    assert_eq!(
        drain(&mut client),
        vec![Event::Message(Message::Text("0123456789".into()))]
    );
}

#[test]
fn streaming_send_validates_text_across_pieces() {
    let (mut client, mut server) = open_pair(Config::default(), Config::default());
    let text = "héllo wörld".as_bytes();
    client.begin_message(MessageKind::Text).unwrap();
    assert_eq!(client.send_text("x"), Err(SendError::StreamInProgress));
    client.send_fragment(&text[..2]).unwrap(); // splits the 'é'
    assert_eq!(client.send_fragment(&[0xFF]), Err(SendError::InvalidUtf8));
    client.send_ping(b"mid").unwrap();
    client.send_fragment(&text[2..7]).unwrap();
    client.finish_message(&text[7..]).unwrap();
    assert_eq!(
        client.finish_message(b""),
        Err(SendError::NoStreamInProgress)
    );
    pump(&mut client, &mut server, T0);
    assert_eq!(
        drain(&mut server),
        vec![
            Event::Ping(Bytes::from_static(b"mid")),
            Event::Message(Message::Text("héllo wörld".into())),
        ]
    );
}

#[test]
fn send_errors_never_queue_anything() {
    let mut server = open_server(Config::default());
    assert_eq!(
        server.send_ping(&[0; 126]),
        Err(SendError::ControlPayloadTooLong(126))
    );
    // Codes that exist only to report what happened locally are refused, and so is 1005
    // with a reason: 1005 means "no status", so there is nowhere to put one.
    assert!(server.close(CloseCode::Abnormal, "").is_err());
    assert!(server.close(CloseCode::TlsHandshake, "").is_err());
    assert!(server.close(CloseCode::NoStatus, "why").is_err());
    assert!(server.close(CloseCode::Normal, &"r".repeat(124)).is_err());
    assert_eq!(server.buffered_amount(), 0);
    assert!(server.is_open());
    server.close(CloseCode::Normal, "").unwrap();
    assert_eq!(server.send_binary(b"x"), Err(SendError::NotOpen));
    assert_eq!(server.close(CloseCode::Normal, ""), Err(SendError::NotOpen));
    assert_eq!(server.buffered_amount(), 4);
}

#[test]
fn close_without_status_sends_an_empty_close_frame() {
    // `close(NoStatus, "")` is what a browser's `close()` without arguments does: a close
    // frame with no payload, which the peer reports as 1005.
    let mut server = open_server(Config::default());
    server.close(CloseCode::NoStatus, "").unwrap();
    assert_eq!(server.output(), &[0x88, 0x00]);
    assert_eq!(
        server.close(CloseCode::NoStatus, ""),
        Err(SendError::NotOpen)
    );
}

#[test]
fn buffered_amount_tracks_output() {
    let mut server = open_server(Config::default());
    server.send_binary(&[0; 200]).unwrap();
    assert_eq!(server.buffered_amount(), 204);
    server.consume(100);
    assert_eq!(server.buffered_amount(), 104);
    let rest = server.poll_transmit().unwrap();
    assert_eq!(rest.len(), 104);
    assert_eq!(server.buffered_amount(), 0);
}

/// Fifty client frames of 0 to 4,753 bytes, and the events a server copying them in reports.
fn fifty_frames_and_their_events() -> (Vec<u8>, Vec<Event>) {
    let mut bytes = Vec::new();
    for i in 0..50u32 {
        bytes.extend(client_frame(0x82, &vec![i as u8; (i as usize) * 97]));
    }
    let mut reference = open_server(Config::default());
    reference.receive(T0, &bytes);
    let events = drain(&mut reference);
    assert_eq!(events.len(), 50);
    (bytes, events)
}

#[test]
fn lending_receive_matches_copying_receive() {
    let (bytes, expected) = fifty_frames_and_their_events();
    let mut b = open_server(Config::default());
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let buf = b.recv_buf();
        let n = buf.len().min(rest.len()).min(1000);
        buf[..n].copy_from_slice(&rest[..n]);
        b.commit(T0, n);
        rest = &rest[n..];
    }
    assert_eq!(expected, drain(&mut b));
}

#[test]
fn appending_receive_matches_copying_receive() {
    let (bytes, expected) = fifty_frames_and_their_events();
    let mut b = open_server(Config::default());
    // An idle connection holds no buffer: its first read goes through the driver's.
    assert!(!b.reads_in_place());
    let mut rest = &bytes[..];
    let mut first = true;
    let mut events = Vec::new();
    while !rest.is_empty() {
        // Reads of 1 to 1,000 bytes, each taken to the end before the next.
        let n = rest.len().min(1 + (rest.len() * 7919) % 1000);
        if first {
            b.receive(T0, &rest[..n]);
            first = false;
        } else {
            // Frames arrive: the connection keeps its buffer and lends it.
            assert!(b.reads_in_place());
            let buf = b.append_buf();
            let before = buf.len();
            assert!(
                buf.capacity() - before >= 4096,
                "room for a read is reserved"
            );
            buf.extend_from_slice(&rest[..n]);
            b.commit_appended(T0);
        }
        rest = &rest[n..];
        events.extend(drain(&mut b));
    }
    assert_eq!(expected, events);
    // A second after the last frame the buffer goes, and reads go through the driver's again.
    b.handle_timeout(T0 + SEC);
    assert!(!b.reads_in_place());
    assert_eq!(b.rx.capacity(), 0);
}

#[test]
fn appending_a_frame_in_pieces_keeps_the_partial_frame() {
    let keep_none = Config::default().with_buffer_keep(None);
    let mut server = open_server(keep_none);
    let frame = client_frame(0x81, "héllo wörld".repeat(400).as_bytes());
    server.receive(T0, &frame[..100]);
    // A frame in progress is read in place even without buffer keeping.
    assert!(server.reads_in_place());
    assert!(server.frame_remaining() > 0);
    for piece in frame[100..].chunks(333) {
        server.append_buf().extend_from_slice(piece);
        server.commit_appended(T0);
    }
    assert_eq!(
        drain(&mut server),
        vec![Event::Message(Message::Text(
            "héllo wörld".repeat(400).into()
        ))]
    );
    // Without buffer keeping the emptied buffer goes at once.
    assert!(!server.reads_in_place());
    assert_eq!(server.rx.capacity(), 0);
}

#[test]
fn eof_before_close_is_abnormal() {
    let mut server = open_server(Config::default());
    server.receive_eof(T0);
    assert!(matches!(
        drain(&mut server).as_slice(),
        [
            Event::Error(Error::ConnectionReset),
            Event::Closed(Closed {
                code: CloseCode::Abnormal,
                clean: false,
                ..
            })
        ]
    ));
    assert!(server.is_terminated());
}

#[test]
fn idle_connection_holds_no_buffers() {
    let keep_none = Config::default().with_buffer_keep(None);
    let (mut client, mut server) = open_pair(keep_none.clone(), keep_none);
    client.send_binary(&[1; 5000]).unwrap();
    pump(&mut client, &mut server, T0);
    drain(&mut server);
    assert_eq!(server.rx.capacity(), 0);
    assert_eq!(server.tx.capacity(), 0);
    assert_eq!(client.tx.capacity(), 0);
    assert_eq!(server.poll_timeout(), None);
}

/// One echo on the server: a client frame in, the message sent back, the output taken into
/// `wire` (which has room, so that only the server's own allocations are counted).
fn server_echo(server: &mut Connection, now: Duration, frame: &[u8], wire: &mut Vec<u8>) -> u64 {
    allocation_counter::measure(|| {
        server.receive(now, frame);
        while let Some(event) = server.poll_event() {
            if let Event::Message(Message::Binary(data)) = event {
                server.send_binary(&data).unwrap();
            }
        }
        wire.clear();
        wire.extend_from_slice(server.output());
        server.consume(wire.len());
    })
    .count_total
}

#[test]
fn buffers_are_kept_while_frames_arrive_then_released() {
    let (_, mut server) = open_pair(Config::default(), Config::default());
    // The handshake leaves nothing behind, and nothing is armed.
    assert_eq!(server.tx.capacity(), 0);
    assert_eq!(server.poll_timeout(), None);
    let frame = client_frame(0x82, &[7; 1000]);
    let mut wire = Vec::with_capacity(4096);
    assert!(server_echo(&mut server, T0, &frame, &mut wire) > 0);
    assert_eq!(wire, raw_frame(0x82, &[7; 1000], None));
    // While frames arrive, the emptied buffers serve the next message: no allocation.
    for i in 1..5u32 {
        let now = T0 + Duration::from_millis(100) * i;
        assert_eq!(server_echo(&mut server, now, &frame, &mut wire), 0);
        assert_eq!(wire, raw_frame(0x82, &[7; 1000], None));
    }
    let last = Duration::from_millis(400);
    assert_eq!(server.poll_timeout(), Some(last + SEC));
    server.handle_timeout(last + SEC - Duration::from_millis(1));
    assert_eq!(server.poll_timeout(), Some(last + SEC), "kept until then");
    server.handle_timeout(last + SEC);
    // Released a second after the last frame (so the next echo allocates again): the
    // connection is idle again.
    assert!(!server.warm);
    assert_eq!(server.rx.capacity(), 0);
    assert_eq!(server.tx.capacity(), 0);
    assert_eq!(server.poll_timeout(), None);
    assert!(server.is_open());
    assert!(server_echo(&mut server, 2 * SEC, &frame, &mut wire) > 0);
    // A large message's buffers are not kept.
    let big = client_frame(0x82, &[9; 100_000]);
    let mut wire = Vec::with_capacity(200_000);
    server_echo(&mut server, 3 * SEC, &big, &mut wire);
    assert!(server_echo(&mut server, 3 * SEC, &big, &mut wire) > 0);
    assert_eq!(server.tx.capacity(), 0);
}

// ---------------------------------------------------------------- properties

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ".{0,300}".prop_map(|s: String| Message::Text(s.into())),
        proptest::collection::vec(any::<u8>(), 0..3000).prop_map(|v| Message::Binary(v.into())),
    ]
}

/// Splits `bytes` at the given cut points and feeds the pieces.
fn feed_split(conn: &mut Connection, bytes: &[u8], cuts: &[usize]) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut start = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        conn.receive(T0, &bytes[start..p]);
        start = p;
    }
}

#[test]
fn the_first_frames_arm_the_buffer_keep_deadline_with_a_new_timers_version() {
    let cfg = Config::default()
        .with_ping_interval(Some(30 * SEC))
        .with_buffer_keep(Some(SEC));
    let (mut client, mut server) = open_pair(Config::default(), cfg);
    let before = server.timers_version();
    assert_eq!(server.poll_timeout(), Some(30 * SEC));
    client.send_text("hi").unwrap();
    pump(&mut client, &mut server, SEC / 2);
    assert!(matches!(drain(&mut server).as_slice(), [Event::Message(_)]));
    assert_eq!(server.poll_timeout(), Some(SEC + SEC / 2));
    assert_ne!(server.timers_version(), before);
    // More frames only move it later: same version.
    let warm = server.timers_version();
    client.send_text("again").unwrap();
    pump(&mut client, &mut server, SEC);
    drain(&mut server);
    assert_eq!(server.poll_timeout(), Some(2 * SEC));
    assert_eq!(server.timers_version(), warm);
}

proptest! {
    #[test]
    fn messages_round_trip_in_both_roles(
        messages in proptest::collection::vec(arb_message(), 0..12),
        fragment in proptest::option::of(1usize..200),
    ) {
        let cfg = Config::default().with_fragment_size(fragment);
        let (mut client, mut server) = open_pair(cfg.clone(), cfg);
        for m in &messages {
            client.send(m).unwrap();
            server.send(m).unwrap();
        }
        pump(&mut client, &mut server, T0);
        pump(&mut server, &mut client, T0);
        let expected: Vec<Event> = messages.iter().cloned().map(Event::Message).collect();
        prop_assert_eq!(drain(&mut server), expected.clone());
        prop_assert_eq!(drain(&mut client), expected);
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_events_and_output(
        messages in proptest::collection::vec(arb_message(), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        fragment in proptest::option::of(1usize..100),
    ) {
        let cfg = Config::default().with_fragment_size(fragment);
        let mut client = Connection::client(request(), cfg.clone(), counter_random(), T0);
        let mut stream = take_output(&mut client);
        let mut whole = Connection::server(Config::default(), T0);
        whole.receive(T0, &stream);
        let Some(Event::Request(_)) = whole.poll_event() else { panic!() };
        whole.accept(Accept::default()).unwrap();
        pump(&mut whole, &mut client, T0);
        drain(&mut client);
        for m in &messages {
            client.send(m).unwrap();
        }
        client.send_ping(b"hb").unwrap();
        client.close(CloseCode::Normal, "done").unwrap();
        let frames = take_output(&mut client);
        stream.extend_from_slice(&frames);

        let mut one = Connection::server(Config::default(), T0);
        let mut split = Connection::server(Config::default(), T0);
        let mut bytewise = Connection::server(Config::default(), T0);
        for (conn, how) in [(&mut one, 0), (&mut split, 1), (&mut bytewise, 2)] {
            // Feed the request, accept, then the frames, the way `how` says.
            let (head, body) = stream.split_at(stream.len() - frames.len());
            conn.receive(T0, head);
            let Some(Event::Request(_)) = conn.poll_event() else { panic!() };
            conn.accept(Accept::default()).unwrap();
            match how {
                0 => conn.receive(T0, body),
                1 => feed_split(conn, body, &cuts),
                _ => for b in body { conn.receive(T0, core::slice::from_ref(b)) },
            }
        }
        let (e1, e2, e3) = (drain(&mut one), drain(&mut split), drain(&mut bytewise));
        prop_assert_eq!(&e1, &e2);
        prop_assert_eq!(&e1, &e3);
        prop_assert_eq!(e1.len(), messages.len() + 3); // Open, messages, ping, Closed
        let (o1, o2, o3) = (take_output(&mut one), take_output(&mut split), take_output(&mut bytewise));
        prop_assert_eq!(&o1, &o2);
        prop_assert_eq!(&o1, &o3);
    }

    /// Short frames that arrive whole take a path of their own; fed byte by byte they take
    /// the general one. Both must report the same events and write the same output, for
    /// valid and invalid frames alike (opcodes, RSV bits, masking, UTF-8, size limits), in
    /// both roles, and for a frame after a fragment.
    #[test]
    fn a_short_frame_whole_or_byte_by_byte_gives_the_same_events_and_output(
        first in prop_oneof![
            3 => Just(0x81u8),
            3 => Just(0x82),
            1 => Just(0xC1),
            1 => Just(0x01),
            1 => any::<u8>(),
        ],
        payload in prop_oneof![
            ".{0,40}".prop_map(String::into_bytes),
            ".{120,200}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..300),
            // Every 16-bit length, as runs of one byte (valid text too).
            (126usize..=65_535, any::<u8>()).prop_map(|(n, b)| vec![b & 0x7F; n]),
        ],
        masked in any::<bool>(),
        client in any::<bool>(),
        after_fragment in any::<bool>(),
        frame_limit in prop_oneof![1usize..900, Just(1 << 20)],
        message_limit in prop_oneof![1usize..900, Just(1 << 20)],
    ) {
        let cfg = Config::default()
            .with_max_frame_size(frame_limit)
            .with_max_message_size(message_limit);
        let mut stream = Vec::new();
        if after_fragment {
            stream.extend(raw_frame(0x02, b"12345", masked.then_some(KEY)));
        }
        stream.extend(raw_frame(first, &payload, masked.then_some(KEY)));
        let open = |cfg: Config| if client { open_client(cfg) } else { open_server(cfg) };
        let (mut whole, mut bytewise) = (open(cfg.clone()), open(cfg));
        whole.receive(T0, &stream);
        for b in &stream {
            bytewise.receive(T0, core::slice::from_ref(b));
        }
        prop_assert_eq!(drain(&mut whole), drain(&mut bytewise));
        prop_assert_eq!(take_output(&mut whole), take_output(&mut bytewise));
        prop_assert_eq!(whole.state(), bytewise.state());
    }

    /// A driver that keeps its timer armed while `timers_version` stays the same must never
    /// miss a deadline: with the version unchanged, `poll_timeout` may only move later (or
    /// vanish), across handshakes, keep-alive requests, traffic, pings, closes, EOFs and
    /// timeouts in any order.
    #[test]
    fn the_next_deadline_moves_earlier_only_with_a_new_timers_version(
        ops in proptest::collection::vec((0u8..40, 0u64..400), 1..80),
        keep in proptest::option::of(1u64..3000),
        idle in proptest::option::of(1u64..8000),
        ping in proptest::option::of(1u64..5000),
    ) {
        let ms = Duration::from_millis;
        let cfg = Config::default()
            .with_handshake_timeout(Some(ms(2000)))
            .with_close_timeout(ms(1200))
            .with_buffer_keep(keep.map(ms))
            .with_idle_timeout(idle.map(ms))
            .with_ping_interval(ping.map(ms));
        let mut now = T0;
        let mut client = Connection::client(request(), cfg.clone(), counter_random(), now);
        let mut server = Connection::server(cfg, now);
        let mut seen = [(client.timers_version(), client.poll_timeout()); 2];
        seen[1] = (server.timers_version(), server.poll_timeout());
        for (op, step) in ops {
            now += ms(step);
            // Traffic is likelier than the events that end a connection.
            match op {
                0..=9 => pump(&mut client, &mut server, now),
                10..=16 => pump(&mut server, &mut client, now),
                17..=22 => { let _ = client.send_text("hello"); }
                23..=26 => { let _ = server.send_binary(&[7; 40]); }
                27 | 28 => { let _ = client.send_ping(b"p"); }
                29 => { let _ = client.close(CloseCode::Normal, "bye"); }
                30 => { let _ = server.close(CloseCode::GoingAway, "later"); }
                31 => server.receive_eof(now),
                32 => server.receive(now, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"),
                _ => {
                    for conn in [&mut client, &mut server] {
                        if conn.poll_timeout().is_some_and(|at| at <= now) {
                            conn.handle_timeout(now);
                        }
                    }
                }
            }
            // The driver takes every event (a request is accepted, a plain one answered).
            while let Some(event) = server.poll_event() {
                if let Event::Request(req) = event {
                    if req.is_websocket_upgrade() {
                        let _ = server.accept(Accept::default());
                    } else if step % 2 == 0 {
                        let _ = server.respond_and_continue(200, &[], b"ok", 0);
                    } else {
                        let _ = server.hold_request(ms(step));
                    }
                }
            }
            drain(&mut client);
            for (i, conn) in [&client, &server].into_iter().enumerate() {
                let now_seen = (conn.timers_version(), conn.poll_timeout());
                if now_seen.0 == seen[i].0 {
                    match (seen[i].1, now_seen.1) {
                        (_, None) => {}
                        (Some(before), Some(after)) => prop_assert!(
                            after >= before,
                            "side {}: deadline moved from {:?} to {:?} with the same version",
                            i, before, after
                        ),
                        (None, Some(after)) => prop_assert!(
                            false,
                            "side {}: deadline {:?} appeared with the same version",
                            i, after
                        ),
                    }
                }
                seen[i] = now_seen;
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_end_cleanly(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut server = open_server(Config::default().with_max_message_size(1000));
        feed_split(&mut server, &bytes, &cuts);
        let events = drain(&mut server);
        let closed = events.iter().filter(|e| matches!(e, Event::Closed(_))).count();
        prop_assert!(closed <= 1);
        if let Some(Event::Closed(c)) = events.last() {
            prop_assert!(c.code.is_valid_on_wire() || c.code == CloseCode::NoStatus);
            prop_assert!(server.is_terminated());
            prop_assert!(server.send_text("x").is_err());
        } else {
            prop_assert_eq!(closed, 0);
        }
    }
}

#[test]
fn a_reply_to_a_message_goes_out_before_the_failure_of_a_later_frame() {
    let mut server = open_server(Config::default());
    let mut bytes = raw_frame(0x81, b"first", Some([1, 2, 3, 4]));
    // RSV2 set without an extension: the connection fails with 1002.
    bytes.extend(raw_frame(0xA1, b"bad", Some([1, 2, 3, 4])));
    server.receive(SEC, &bytes);
    assert_eq!(
        server.output(),
        b"",
        "nothing happens before the events are taken"
    );
    let Some(Event::Message(message)) = server.poll_event() else {
        panic!("expected the first message");
    };
    server.send(&message).unwrap();
    let echo = raw_frame(0x81, b"first", None);
    assert_eq!(&server.output()[..echo.len()], echo.as_slice());
    let events = drain(&mut server);
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Error(Error::Protocol(ProtocolError::ReservedBits)),
                Event::Closed(_)
            ]
        ),
        "{events:?}"
    );
    let out = take_output(&mut server);
    assert_eq!(&out[..echo.len()], echo.as_slice());
    assert_eq!(out[echo.len()], 0x88, "the close frame follows the echo");
}

#[test]
fn frames_received_just_before_eof_are_reported_before_the_reset() {
    let (mut client, mut server) = open_pair(Config::default(), Config::default());
    server.send_text("last words").unwrap();
    server.close(CloseCode::Normal, "bye").unwrap();
    let bytes = take_output(&mut server);
    client.receive(SEC, &bytes);
    client.receive_eof(SEC);
    let events = drain(&mut client);
    assert!(
        matches!(
            events.as_slice(),
            [Event::Message(Message::Text(t)), Event::Closed(Closed { clean: true, .. })]
                if t.as_str() == "last words"
        ),
        "{events:?}"
    );
    assert!(client.is_terminated());
}

#[test]
#[cfg(target_pointer_width = "64")]
fn a_connection_stays_small() {
    // Memory per idle connection is a goal (README): state used only while a frame, a
    // fragmented message or a streamed send is in progress lives in boxes.
    let size = core::mem::size_of::<Connection>();
    let limit = if cfg!(feature = "deflate") { 360 } else { 344 };
    assert!(size <= limit, "Connection grew to {size} bytes");
    assert!(core::mem::size_of::<Event>() <= 48);
}

#[cfg(feature = "deflate")]
#[test]
fn prepared_messages_send_what_send_would_and_compress_once_per_setting() {
    use crate::deflate::DeflateConfig;
    use crate::message::PreparedMessage;
    let text =
        "{\"type\":\"message\",\"room\":\"app/chat\",\"data\":{\"text\":\"hello\"}}".repeat(4);
    let fresh = DeflateConfig {
        server_no_context_takeover: true,
        ..DeflateConfig::default()
    };
    let takeover = DeflateConfig {
        server_no_context_takeover: false,
        ..DeflateConfig::default()
    };
    let client_cfg = Config::default().with_deflate(Some(DeflateConfig::default()));
    let mut prepared = PreparedMessage::text(text.clone());
    for server_deflate in [Some(fresh.clone()), Some(fresh), Some(takeover), None] {
        let server_cfg = Config::default().with_deflate(server_deflate);
        let (mut client, mut server) = open_pair(client_cfg.clone(), server_cfg.clone());
        let (_, mut reference) = open_pair(client_cfg.clone(), server_cfg);
        for _ in 0..2 {
            server.send_prepared(&mut prepared).unwrap();
            reference.send_text(&text).unwrap();
        }
        let out = take_output(&mut server);
        assert_eq!(out, take_output(&mut reference));
        client.receive(T0, &out);
        let events = drain(&mut client);
        assert_eq!(
            events,
            vec![
                Event::Message(Message::text(text.as_str())),
                Event::Message(Message::text(text.as_str()))
            ]
        );
    }
    // Both connections without context takeover shared one compressed copy.
    assert_eq!(prepared.compressed_copies(), 1);
}

#[test]
fn prepared_sends_are_refused_after_close() {
    let mut server = open_server(Config::default());
    server.close(CloseCode::Normal, "").unwrap();
    let mut prepared = crate::message::PreparedMessage::binary(Bytes::from_static(b"x"));
    assert!(server.send_prepared(&mut prepared).is_err());
}

#[test]
fn close_without_a_status_code_sends_an_empty_close_frame() {
    let mut server = open_server(Config::default());
    assert!(server.close(CloseCode::NoStatus, "why").is_err());
    server.close(CloseCode::NoStatus, "").unwrap();
    assert_eq!(take_output(&mut server), vec![0x88, 0x00]);
    // The peer's empty answer completes the handshake with 1005.
    server.receive(SEC, &client_frame(0x88, &[]));
    let events = drain(&mut server);
    assert!(
        matches!(events.as_slice(), [Event::Closed(c)] if c.code == CloseCode::NoStatus && c.clean),
        "{events:?}"
    );
}
