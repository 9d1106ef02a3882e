//! An in-memory echo round trip: the client sends a message, the server receives it and sends
//! it back, the client receives the echo. Both ends of each library talk over the same
//! in-memory socket pair, so every library pays the same copies; the connection setup is done
//! once, outside the measurement.
//!
//! Benchmark IDs are `echo/library/kind-size`; `report.py` turns the results into a table.

mod common;

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use common::{DuplexReader, Pipe, pipe_pair, random_source, ready};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_core::{Config, Connection, Event, Message, Role};
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};

/// A chat message as JSON, repeated to the wanted length (ASCII, so any cut is valid UTF-8).
fn text_of_len(len: usize) -> String {
    let unit = "{\"type\":\"msg\",\"room\":\"lobby\",\"text\":\"hello, world\"}";
    unit.repeat(len / unit.len() + 1)[..len].to_string()
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Binary,
}

struct Duplex {
    client: Connection,
    server: Connection,
    client_socket: Pipe,
    server_socket: Pipe,
    /// The scratch buffer of the worker thread both ends run on.
    reader: DuplexReader,
}

impl Duplex {
    fn new() -> Duplex {
        let (client_socket, server_socket) = pipe_pair();
        Duplex {
            client: Connection::upgraded(
                Role::Client,
                Config::default(),
                Some(random_source()),
                Duration::ZERO,
            ),
            server: Connection::upgraded(Role::Server, Config::default(), None, Duration::ZERO),
            client_socket,
            server_socket,
            reader: DuplexReader::default(),
        }
    }

    fn round_trip(&mut self, kind: Kind, text: &str) -> Message {
        match kind {
            Kind::Text => self.client.send_text(text).unwrap(),
            Kind::Binary => self.client.send_binary(text.as_bytes()).unwrap(),
        }
        self.client_socket.send_output(&mut self.client);

        self.server_socket
            .receive_into(&mut self.reader, &mut self.server);
        let Some(Event::Message(message)) = self.server.poll_event() else {
            panic!("duplex server: no message");
        };
        self.server.send(&message).unwrap();
        self.server_socket.send_output(&mut self.server);

        self.client_socket
            .receive_into(&mut self.reader, &mut self.client);
        match self.client.poll_event() {
            Some(Event::Message(message)) => message,
            other => panic!("duplex client: {other:?}"),
        }
    }
}

struct Tungstenite {
    client: tungstenite::WebSocket<Pipe>,
    server: tungstenite::WebSocket<Pipe>,
}

impl Tungstenite {
    fn new() -> Tungstenite {
        use tungstenite::protocol::Role;
        let (client_socket, server_socket) = pipe_pair();
        Tungstenite {
            client: tungstenite::WebSocket::from_raw_socket(client_socket, Role::Client, None),
            server: tungstenite::WebSocket::from_raw_socket(server_socket, Role::Server, None),
        }
    }

    fn round_trip(&mut self, message: tungstenite::Message) -> tungstenite::Message {
        self.client.send(message).unwrap();
        let message = self.server.read().unwrap();
        self.server.send(message).unwrap();
        self.client.read().unwrap()
    }
}

struct FastWebSockets {
    client: FragmentCollector<Pipe>,
    server: FragmentCollector<Pipe>,
}

impl FastWebSockets {
    fn new() -> FastWebSockets {
        use fastwebsockets::{Role, WebSocket};
        let (client_socket, server_socket) = pipe_pair();
        // The collector assembles messages and validates text, as the other two libraries do.
        FastWebSockets {
            client: FragmentCollector::new(WebSocket::after_handshake(client_socket, Role::Client)),
            server: FragmentCollector::new(WebSocket::after_handshake(server_socket, Role::Server)),
        }
    }

    fn round_trip(&mut self, kind: Kind, data: &[u8]) -> Payload<'static> {
        let frame = match kind {
            Kind::Text => Frame::text(Payload::Borrowed(data)),
            Kind::Binary => Frame::binary(Payload::Borrowed(data)),
        };
        ready(self.client.write_frame(frame)).unwrap();
        let echo = ready(self.server.read_frame()).unwrap();
        assert!(matches!(echo.opcode, OpCode::Text | OpCode::Binary));
        ready(self.server.write_frame(echo)).unwrap();
        let frame = ready(self.client.read_frame()).unwrap();
        frame.payload
    }
}

fn echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo");
    for (kind, kind_label) in [(Kind::Text, "text"), (Kind::Binary, "binary")] {
        for (size, size_label) in [(20, "20B"), (1 << 10, "1KiB")] {
            let label = format!("{kind_label}-{size_label}");
            let text = text_of_len(size);
            group.throughput(Throughput::Bytes(size as u64));

            let mut duplex = Duplex::new();
            let expected = match kind {
                Kind::Text => Message::Text(text.as_str().into()),
                Kind::Binary => Message::Binary(Bytes::from(text.clone())),
            };
            assert_eq!(duplex.round_trip(kind, &text), expected);
            group.bench_function(BenchmarkId::new("duplex", &label), |b| {
                b.iter(|| duplex.round_trip(kind, black_box(&text)))
            });

            let mut tungstenite = Tungstenite::new();
            let message = match kind {
                Kind::Text => tungstenite::Message::Text(text.as_str().into()),
                Kind::Binary => tungstenite::Message::Binary(Bytes::from(text.clone())),
            };
            assert_eq!(tungstenite.round_trip(message.clone()), message);
            group.bench_function(BenchmarkId::new("tungstenite", &label), |b| {
                // Cloning a message only bumps a reference count.
                b.iter(|| tungstenite.round_trip(black_box(&message).clone()))
            });

            let mut fastwebsockets = FastWebSockets::new();
            assert_eq!(
                &*fastwebsockets.round_trip(kind, text.as_bytes()),
                text.as_bytes()
            );
            group.bench_function(BenchmarkId::new("fastwebsockets", &label), |b| {
                b.iter(|| fastwebsockets.round_trip(kind, black_box(text.as_bytes())))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, echo);
criterion_main!(benches);
