//! `send_owned`: the same bytes on the wire as `send`, whichever way the driver takes them.

use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::handshake::client::ClientRequest;
use crate::handshake::server::Accept;
use crate::message::{Event, Message};

const T0: Duration = Duration::ZERO;

fn drain(conn: &mut Connection) -> Vec<Event> {
    core::iter::from_fn(|| conn.poll_event()).collect()
}

/// All pending output, taken with vectored "writes" of at most `max` bytes over at most
/// `slots` pieces.
fn take_vectored(conn: &mut Connection, slots: usize, max: usize) -> Vec<u8> {
    let mut all = Vec::new();
    while conn.buffered_amount() > 0 {
        let mut slices: Vec<&[u8]> = alloc::vec![&[]; slots];
        let n = conn.output_vectored(&mut slices);
        assert!(n >= 1);
        let mut took = 0;
        for slice in &slices[..n] {
            let k = slice.len().min(max - took);
            all.extend_from_slice(&slice[..k]);
            took += k;
            if took == max {
                break;
            }
        }
        conn.consume(took);
    }
    all
}

fn take_front(conn: &mut Connection) -> Vec<u8> {
    let mut all = Vec::new();
    while !conn.output().is_empty() {
        let out = conn.output().to_vec();
        conn.consume(out.len());
        all.extend_from_slice(&out);
    }
    assert_eq!(conn.buffered_amount(), 0);
    all
}

fn pump_all(from: &mut Connection, to: &mut Connection) {
    let out = take_front(from);
    if !out.is_empty() {
        to.receive(T0, &out);
    }
}

fn open_pair(client_cfg: Config, server_cfg: Config) -> (Connection, Connection) {
    let request = ClientRequest::from_url("ws://example.com/").unwrap();
    let mut n = 0u8;
    let random: RandomSource = Box::new(move |buf: &mut [u8]| {
        for b in buf {
            n = n.wrapping_add(37);
            *b = n;
        }
    });
    let mut client = Connection::client(request, client_cfg, random, T0);
    let mut server = Connection::server(server_cfg, T0);
    pump_all(&mut client, &mut server);
    assert!(matches!(drain(&mut server).as_slice(), [Event::Request(_)]));
    server.accept(Accept::default()).unwrap();
    assert!(matches!(drain(&mut server).as_slice(), [Event::Open]));
    pump_all(&mut server, &mut client);
    assert!(matches!(drain(&mut client).as_slice(), [Event::Open]));
    (client, server)
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..20_000).prop_map(|v| Message::Binary(v.into())),
        "[a-zé€]{0,3000}".prop_map(Message::text),
    ]
}

#[cfg(feature = "deflate")]
fn deflate_cfg(on: bool) -> Option<crate::deflate::DeflateConfig> {
    on.then(crate::deflate::DeflateConfig::default)
}

#[cfg(not(feature = "deflate"))]
fn with_deflate(cfg: Config, _on: bool) -> Config {
    cfg
}

#[cfg(feature = "deflate")]
fn with_deflate(cfg: Config, on: bool) -> Config {
    cfg.with_deflate(deflate_cfg(on))
}

#[test]
fn a_large_payload_is_queued_without_a_copy() {
    let (_, mut server) = open_pair(Config::default(), Config::default());
    let payload = Bytes::from(alloc::vec![7u8; OWNED_MIN]);
    server.send_owned(Message::Binary(payload.clone())).unwrap();
    // The header, then the payload itself (the same allocation).
    assert_eq!(server.output().len(), 4);
    server.consume(4);
    assert_eq!(server.output().as_ptr(), payload.as_ptr());
    assert_eq!(server.buffered_amount(), OWNED_MIN);
    // A small one is copied into the output like `send` does.
    let (_, mut server) = open_pair(Config::default(), Config::default());
    server
        .send_owned(Message::Binary(Bytes::from_static(b"small")))
        .unwrap();
    assert_eq!(server.output(), b"\x82\x05small");
}

proptest! {
    #[test]
    fn send_owned_puts_the_same_bytes_on_the_wire_as_send(
        messages in proptest::collection::vec(arb_message(), 1..8),
        fragment in proptest::option::of(1000usize..9000),
        deflate in any::<bool>(),
        client_role in any::<bool>(),
        slots in 1usize..5,
        max in 1usize..40_000,
    ) {
        let cfg = with_deflate(Config::default().with_fragment_size(fragment), deflate);
        let (mut client_a, mut server_a) = open_pair(cfg.clone(), cfg.clone());
        let (mut client_b, mut server_b) = open_pair(cfg.clone(), cfg);
        let (by_send, by_owned, to) = if client_role {
            (&mut client_a, &mut client_b, &mut server_a)
        } else {
            (&mut server_a, &mut server_b, &mut client_a)
        };
        for m in &messages {
            by_send.send(m).unwrap();
            by_owned.send_owned(m.clone()).unwrap();
        }
        prop_assert_eq!(by_owned.buffered_amount(), by_send.buffered_amount());
        let expected = take_front(by_send);
        let wire = take_vectored(by_owned, slots, max);
        prop_assert_eq!(&wire, &expected);
        to.receive(T0, &wire);
        let events: Vec<Event> = messages.iter().cloned().map(Event::Message).collect();
        prop_assert_eq!(drain(to), events);
        let _ = (&mut client_b, &mut server_b);
    }
}

#[test]
fn a_large_prepared_message_is_shared_by_every_connection() {
    use crate::message::PreparedMessage;
    let payload = Bytes::from(alloc::vec![3u8; 3 * OWNED_MIN]);
    for deflate in [false, true] {
        let mut prepared = PreparedMessage::binary(payload.clone());
        let cfg = shared_deflate(Config::default(), deflate);
        let (_, mut reference) = open_pair(cfg.clone(), cfg.clone());
        reference.send_binary(&payload).unwrap();
        let expected = take_front(&mut reference);
        for _ in 0..2 {
            let (mut client, mut server) = open_pair(cfg.clone(), cfg.clone());
            server.send_prepared(&mut prepared).unwrap();
            if !deflate {
                let mut slices: [&[u8]; 4] = [&[]; 4];
                assert_eq!(server.output_vectored(&mut slices), 2);
                // A header, then the payload itself.
                assert_eq!(slices[1].as_ptr(), payload.as_ptr());
            }
            let wire = take_vectored(&mut server, 3, 5000);
            assert_eq!(wire, expected);
            client.receive(T0, &wire);
            assert_eq!(
                drain(&mut client),
                alloc::vec![Event::Message(Message::Binary(payload.clone()))]
            );
        }
        // Compressed once for both connections.
        #[cfg(feature = "deflate")]
        assert_eq!(prepared.compressed_copies(), usize::from(deflate));
    }
}

/// Compression with a fresh compressor per message (what lets connections share a copy).
fn shared_deflate(cfg: Config, on: bool) -> Config {
    #[cfg(feature = "deflate")]
    return cfg.with_deflate(on.then(|| crate::deflate::DeflateConfig {
        server_no_context_takeover: true,
        ..crate::deflate::DeflateConfig::default()
    }));
    #[cfg(not(feature = "deflate"))]
    return with_deflate(cfg, on);
}
