//! An in-memory echo round trip of 1 KiB of JSON through two `duplex_core::Connection`s, without
//! compression and with permessage-deflate in both context-takeover modes: what compression
//! costs on top of the protocol work. The connections negotiate the extension through a real
//! upgrade handshake, done once outside the measurement; every round trip then crosses the same
//! in-memory sockets and reader as the `echo` bench.
//!
//! Benchmark IDs are `echo_deflate/duplex/MODE-1KiB` with MODE `plain` (no extension),
//! `takeover` (the context kept between messages) or `no-takeover` (`server_no_context_takeover`
//! and `client_no_context_takeover`: every message compressed on its own).

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{DuplexReader, Pipe, pipe_pair, random_source};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_core::deflate::DeflateConfig;
use duplex_core::{Accept, ClientRequest, Config, Connection, Event, Message};

/// `len` bytes of a JSON array of chat records whose ids, names, rooms and times vary, so the
/// compressor finds repeats (keys, structure) but not one unit repeated verbatim.
fn json_of_len(len: usize) -> String {
    let words = [
        "hello", "world", "deploy", "merged", "lunch", "review", "ship", "it", "later", "ok",
    ];
    let mut out = String::from("[");
    let mut i = 0u64;
    while out.len() < len {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{},\"user\":\"user-{}\",\"room\":\"room-{}\",\"ts\":{},\"text\":\"{} {} {}\"}}",
            1000 + i * 7,
            (i * 37) % 97,
            i % 5,
            1_764_000_000_000u64 + i * 1_337,
            words[(i % 10) as usize],
            words[((i * 3) % 10) as usize],
            words[((i * 7 + 1) % 10) as usize],
        ));
        i += 1;
    }
    // Cut to `len` (ASCII, so any cut is valid UTF-8; the echo does not parse it).
    out.truncate(len - 1);
    out.push(']');
    out
}

struct Pair {
    client: Connection,
    server: Connection,
    client_socket: Pipe,
    server_socket: Pipe,
    reader: DuplexReader,
}

fn take(conn: &mut Connection) -> Vec<u8> {
    let out = conn.output().to_vec();
    conn.consume(out.len());
    out
}

impl Pair {
    /// Both ends with `deflate` (`None`: no extension), the handshake done.
    fn new(deflate: Option<DeflateConfig>) -> Pair {
        let config = Config::default().with_deflate(deflate.clone());
        let request = ClientRequest::from_url("ws://127.0.0.1/echo").unwrap();
        let mut client =
            Connection::client(request, config.clone(), random_source(), Duration::ZERO);
        let mut server = Connection::server(config, Duration::ZERO);
        server.receive(Duration::ZERO, &take(&mut client));
        assert!(matches!(server.poll_event(), Some(Event::Request(_))));
        server.accept(Accept::default()).unwrap();
        assert!(matches!(server.poll_event(), Some(Event::Open)));
        client.receive(Duration::ZERO, &take(&mut server));
        assert!(matches!(client.poll_event(), Some(Event::Open)));
        let extensions = client
            .response()
            .and_then(|r| r.header("sec-websocket-extensions"))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        assert_eq!(
            extensions.contains("permessage-deflate"),
            deflate.is_some(),
            "{extensions}"
        );
        let (client_socket, server_socket) = pipe_pair();
        Pair {
            client,
            server,
            client_socket,
            server_socket,
            reader: DuplexReader::default(),
        }
    }

    fn round_trip(&mut self, text: &str) -> Message {
        self.echo(text).0
    }

    /// Bytes the server sent for the last echo, to show that compression happened.
    fn wire_len(&mut self, text: &str) -> usize {
        self.echo(text).1
    }

    /// One echo: the message the client got back, and the bytes the server sent for it.
    fn echo(&mut self, text: &str) -> (Message, usize) {
        self.client.send_text(text).unwrap();
        self.client_socket.send_output(&mut self.client);
        self.server_socket
            .receive_into(&mut self.reader, &mut self.server);
        let Some(Event::Message(message)) = self.server.poll_event() else {
            panic!("server: no message");
        };
        self.server.send(&message).unwrap();
        let len = self.server.output().len();
        self.server_socket.send_output(&mut self.server);
        self.client_socket
            .receive_into(&mut self.reader, &mut self.client);
        match self.client.poll_event() {
            Some(Event::Message(message)) => (message, len),
            other => panic!("client: {other:?}"),
        }
    }
}

fn echo_deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_deflate");
    let text = json_of_len(1 << 10);
    group.throughput(Throughput::Bytes(text.len() as u64));
    let no_takeover = DeflateConfig {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..DeflateConfig::default()
    };
    for (mode, deflate) in [
        ("plain", None),
        ("takeover", Some(DeflateConfig::default())),
        ("no-takeover", Some(no_takeover)),
    ] {
        let compressed = deflate.is_some();
        let mut pair = Pair::new(deflate);
        for _ in 0..3 {
            assert_eq!(pair.round_trip(&text), Message::text(text.as_str()));
        }
        let wire = pair.wire_len(&text);
        assert_eq!(compressed, wire < text.len() / 2, "{mode}: {wire} bytes");
        group.bench_function(BenchmarkId::new("duplex", format!("{mode}-1KiB")), |b| {
            b.iter(|| pair.round_trip(black_box(&text)))
        });
    }
    group.finish();
}

criterion_group!(benches, echo_deflate);
criterion_main!(benches);
