//! The wrapper against an in-memory duplex-core server.

use core::time::Duration;

use duplex_core::deflate::DeflateConfig;
use duplex_core::{Accept, CloseCode, Config, Connection, Event};

use super::{EventKind, WsConnection, WsOptions};

fn fixed_random() -> duplex_core::RandomSource {
    let mut seed = 1u8;
    Box::new(move |buf: &mut [u8]| {
        for b in buf {
            seed = seed.wrapping_mul(13).wrapping_add(7);
            *b = seed;
        }
    })
}

fn client(options: &WsOptions, protocols: &[&str]) -> WsConnection {
    let protocols = protocols.iter().map(|p| p.to_string()).collect();
    WsConnection::with_random(
        "ws://example.com/chat?room=1",
        protocols,
        options,
        fixed_random(),
        0.0,
    )
    .unwrap()
}

fn server() -> Connection {
    let config = Config::default().with_deflate(Some(DeflateConfig::default()));
    Connection::server(config, Duration::ZERO)
}

fn to_server(client: &mut WsConnection, server: &mut Connection) {
    let bytes = client.take_output();
    server.receive(Duration::ZERO, &bytes);
}

fn to_client(server: &mut Connection, client: &mut WsConnection, now_ms: f64) {
    let n = server.output().len();
    let bytes = server.output().to_vec();
    server.consume(n);
    client.receive(now_ms, &bytes);
}

/// Handshake with the server choosing `protocol`; returns the pair, open.
fn open(
    options: &WsOptions,
    protocols: &[&str],
    protocol: Option<&str>,
) -> (WsConnection, Connection) {
    let mut c = client(options, protocols);
    let mut s = server();
    assert_eq!(c.ready_state(), 0);
    to_server(&mut c, &mut s);
    let Some(Event::Request(request)) = s.poll_event() else {
        panic!("no request")
    };
    assert_eq!(request.path(), "/chat");
    let accept = Accept {
        protocol: protocol.map(str::to_owned),
        ..Accept::default()
    };
    s.accept(accept).unwrap();
    assert_eq!(s.poll_event(), Some(Event::Open));
    to_client(&mut s, &mut c, 0.0);
    assert_eq!(c.poll_event(), EventKind::Open);
    assert_eq!(c.poll_event(), EventKind::None);
    assert_eq!(c.ready_state(), 1);
    (c, s)
}

#[test]
fn handshake_negotiates_protocol_and_deflate() {
    let (c, _s) = open(
        &WsOptions::default(),
        &["chat.v2", "chat.v1"],
        Some("chat.v1"),
    );
    assert_eq!(c.protocol().as_deref(), Some("chat.v1"));
    assert!(
        c.extensions().starts_with("permessage-deflate"),
        "{}",
        c.extensions()
    );
}

#[test]
fn without_deflate_nothing_is_offered() {
    let options = WsOptions {
        deflate: false,
        ..WsOptions::default()
    };
    let (c, _s) = open(&options, &[], None);
    assert_eq!(c.extensions(), "");
    assert_eq!(c.protocol(), None);
}

#[test]
fn messages_round_trip_in_both_directions() {
    let (mut c, mut s) = open(&WsOptions::default(), &[], None);
    let big = "é".repeat(40_000);
    c.send_text(&big).unwrap();
    c.send_binary(&[1, 2, 3]).unwrap();
    assert!(c.buffered_amount() > 0);
    to_server(&mut c, &mut s);
    assert_eq!(c.buffered_amount(), 0);
    for _ in 0..2 {
        let Some(Event::Message(m)) = s.poll_event() else {
            panic!("no message")
        };
        s.send(&m).unwrap();
    }
    to_client(&mut s, &mut c, 1.0);
    assert_eq!(c.poll_event(), EventKind::Text);
    assert_eq!(c.event_text(), big);
    assert_eq!(c.poll_event(), EventKind::Binary);
    assert_eq!(c.event_data(), vec![1, 2, 3]);
    assert_eq!(c.poll_event(), EventKind::None);
}

#[test]
fn server_ping_is_answered_and_reported() {
    let (mut c, mut s) = open(&WsOptions::default(), &[], None);
    s.send_ping(b"hi").unwrap();
    to_client(&mut s, &mut c, 1.0);
    assert_eq!(c.poll_event(), EventKind::Ping);
    assert_eq!(c.event_data(), b"hi".to_vec());
    to_server(&mut c, &mut s);
    assert!(matches!(s.poll_event(), Some(Event::Pong(p)) if &p[..] == b"hi"));
}

#[test]
fn heartbeat_pings_on_schedule_and_fails_without_pongs() {
    let options = WsOptions {
        ping_interval_ms: 100.0,
        max_missed_pongs: 1,
        ..WsOptions::default()
    };
    let (mut c, mut s) = open(&options, &[], None);
    assert_eq!(c.poll_timeout(), Some(100.0));
    c.handle_timeout(100.0);
    to_server(&mut c, &mut s);
    assert!(matches!(s.poll_event(), Some(Event::Ping(_))));
    // The server's pong is never delivered: the next deadline fails the connection.
    let deadline = c.poll_timeout().unwrap();
    c.handle_timeout(deadline);
    assert_eq!(c.poll_event(), EventKind::Error);
    assert!(c.event_error().contains("pong"), "{}", c.event_error());
    assert_eq!(c.poll_event(), EventKind::Closed);
    assert_eq!(c.event_code(), 1001);
    assert!(!c.event_clean());
}

#[test]
fn close_handshake_reports_code_reason_and_clean() {
    let (mut c, mut s) = open(&WsOptions::default(), &[], None);
    c.close(4000, "done").unwrap();
    assert_eq!(c.ready_state(), 2);
    to_server(&mut c, &mut s);
    let Some(Event::Closed(closed)) = s.poll_event() else {
        panic!("server saw no close")
    };
    assert_eq!(closed.code, CloseCode::Application(4000));
    to_client(&mut s, &mut c, 2.0);
    // The server's reply echoes the code; the reason was ours.
    assert_eq!(c.poll_event(), EventKind::Closed);
    assert_eq!((c.event_code(), c.event_clean()), (4000, true));
    assert_eq!(c.ready_state(), 3);
    // A client waits for the server to close TCP, up to the close timeout.
    assert!(!c.is_terminated());
    c.receive_eof(3.0);
    assert_eq!(c.poll_event(), EventKind::None);
    assert!(c.is_terminated());
}

#[test]
fn server_close_is_echoed() {
    let (mut c, mut s) = open(&WsOptions::default(), &[], None);
    s.close(CloseCode::GoingAway, "bye").unwrap();
    to_client(&mut s, &mut c, 1.0);
    assert_eq!(c.poll_event(), EventKind::Closed);
    assert_eq!(c.event_code(), 1001);
    assert!(c.event_clean());
    to_server(&mut c, &mut s);
    assert!(matches!(s.poll_event(), Some(Event::Closed(c)) if c.clean));
}

#[test]
fn eof_before_the_response_fails_with_1006() {
    let mut c = client(&WsOptions::default(), &[]);
    assert!(!c.take_output().is_empty());
    c.receive_eof(5.0);
    assert_eq!(c.poll_event(), EventKind::Error);
    assert_eq!(c.poll_event(), EventKind::Closed);
    assert_eq!(c.event_code(), 1006);
    assert!(c.is_terminated());
}

#[test]
fn handshake_timeout_is_a_deadline() {
    let options = WsOptions {
        handshake_timeout_ms: 250.0,
        ..WsOptions::default()
    };
    let mut c = client(&options, &[]);
    assert_eq!(c.poll_timeout(), Some(250.0));
    c.handle_timeout(250.0);
    assert_eq!(c.poll_event(), EventKind::Error);
    assert_eq!(c.poll_event(), EventKind::Closed);
    assert_eq!(c.event_code(), 1006);
}

#[test]
fn invalid_text_from_the_server_fails_with_1007() {
    let (mut c, mut s) = open(
        &WsOptions {
            deflate: false,
            ..WsOptions::default()
        },
        &[],
        None,
    );
    // An unmasked server text frame holding an invalid UTF-8 byte.
    c.receive(1.0, &[0x81, 0x01, 0xff]);
    assert_eq!(c.poll_event(), EventKind::Error);
    assert_eq!(c.poll_event(), EventKind::Closed);
    assert_eq!(c.event_code(), 1007);
    to_server(&mut c, &mut s);
    assert!(
        matches!(s.poll_event(), Some(Event::Closed(c)) if c.code == CloseCode::InvalidPayload)
    );
}

#[test]
fn times_convert_in_milliseconds() {
    assert_eq!(super::duration(1500.0), Duration::from_millis(1500));
    assert_eq!(super::duration(-3.0), Duration::ZERO);
    assert_eq!(super::duration(f64::NAN), Duration::ZERO);
    assert_eq!(super::optional_duration(0.0), None);
    assert_eq!(super::millis(Duration::from_micros(2500)), 2.5);
}
