//! End-to-end tests of the event loop over real sockets on 127.0.0.1: a server in this process
//! (or the `duplex` binary), clients from `duplex::client` or a hand-driven core connection.
//! Every wait is bounded, so a broken server fails a test instead of hanging it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duplex::client::{Client, ClientError, ClientEvent, ClientOptions};
use duplex::metrics::Metrics;
use duplex::server::{ConnId, Ctx, Decision, Echo, Handler, Server, ServerConfig, ShutdownHandle};
use duplex_core::handshake::client::ClientRequest;
use duplex_core::handshake::server::Request;
use duplex_core::limits::Config;
use duplex_core::message::{Event, Message};
use duplex_core::{CloseCode, Connection};

mod common;
use common::{get, http, metric_value, raw_peer};

const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    addr: SocketAddr,
    stop: ShutdownHandle,
    metrics: Arc<Metrics>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    fn start<H: Handler + 'static>(
        mut config: ServerConfig,
        make: impl Fn(usize) -> H + Send + Sync + 'static,
    ) -> TestServer {
        config.listen = "127.0.0.1:0".parse().unwrap();
        let server = Server::bind(config).expect("bind");
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let metrics = server.metrics();
        let thread = std::thread::spawn(move || server.run(make));
        TestServer {
            addr,
            stop,
            metrics,
            thread: Some(thread),
        }
    }

    fn echo(config: ServerConfig) -> TestServer {
        TestServer::start(config, |_| Echo)
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Shuts down and waits for `run` to return.
    fn stop(mut self) -> std::io::Result<()> {
        self.stop.shutdown();
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + WAIT;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().expect("server thread panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.shutdown();
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        threads: 2,
        connection: Config::default().with_ping_interval(None),
        drain_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

fn connect(url: &str) -> Client {
    Client::connect(url, ClientOptions::default()).expect("connect")
}

fn recv_message(client: &mut Client) -> Message {
    loop {
        match client.recv_timeout(WAIT).expect("recv") {
            ClientEvent::Message(m) => return m,
            ClientEvent::Ping(_) | ClientEvent::Pong(_) => {}
            ClientEvent::Closed(c) => panic!("closed instead of a message: {c:?}"),
        }
    }
}

fn metric(metrics: &Metrics, name: &str) -> u64 {
    metric_value(&metrics.render(), name)
}

/// A client driven by hand over a blocking socket: the test decides what gets written, so it
/// can play a peer that never answers pings or never reads.
struct RawPeer {
    stream: TcpStream,
    conn: Connection,
    epoch: Instant,
}

impl RawPeer {
    fn open(addr: SocketAddr) -> RawPeer {
        let request = ClientRequest::from_url(&format!("ws://{addr}/")).unwrap();
        let mut seed = 7u8;
        let random = Box::new(move |buf: &mut [u8]| {
            for b in buf {
                seed = seed.wrapping_mul(31).wrapping_add(17);
                *b = seed;
            }
        });
        let mut peer = RawPeer {
            stream: TcpStream::connect(addr).unwrap(),
            conn: Connection::client(request, Config::default(), random, Duration::ZERO),
            epoch: Instant::now(),
        };
        peer.stream.set_read_timeout(Some(WAIT)).unwrap();
        peer.flush();
        let events = peer.read_until(|e| matches!(e, Event::Open));
        assert!(matches!(events.last(), Some(Event::Open)), "{events:?}");
        peer
    }

    fn flush(&mut self) {
        let out = self.conn.output().to_vec();
        self.stream.write_all(&out).unwrap();
        self.conn.consume(out.len());
    }

    /// Reads until an event matches (returned last) or EOF/timeout (then the events so far).
    fn read_until(&mut self, mut want: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let mut events = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            while let Some(e) = self.conn.poll_event() {
                let done = want(&e);
                events.push(e);
                if done {
                    return events;
                }
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => {
                    self.conn.receive_eof(self.epoch.elapsed());
                    events.extend(std::iter::from_fn(|| self.conn.poll_event()));
                    return events;
                }
                Ok(n) => self.conn.receive(self.epoch.elapsed(), &buf[..n]),
            }
        }
    }
}

#[test]
fn echoes_text_and_binary_of_every_size() {
    let server = TestServer::echo(config());
    let mut client = connect(&server.url("/any/path?x=1"));
    client.send_text("hello").unwrap();
    assert_eq!(recv_message(&mut client), Message::text("hello"));
    client.send_binary(&[0, 1, 2, 255]).unwrap();
    assert_eq!(
        recv_message(&mut client),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    for size in [0usize, 125, 126, 65535, 65536, 16 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        client.send_binary(&data).unwrap();
        let echo = recv_message(&mut client);
        assert_eq!(echo.kind(), duplex_core::MessageKind::Binary, "{size}");
        assert_eq!(echo.as_bytes(), data.as_slice(), "binary of {size} bytes");
        let text = "é".repeat(size / 2);
        client.send_text(&text).unwrap();
        assert_eq!(
            recv_message(&mut client),
            Message::text(text),
            "text of {size} bytes"
        );
    }
    let closed = client.close(CloseCode::Normal, "done").unwrap();
    assert_eq!(closed.code, CloseCode::Normal);
    assert!(closed.clean);
    server.stop().unwrap();
}

#[test]
fn many_clients_at_once_each_get_their_own_echoes() {
    let server = TestServer::echo(config());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let url = server.url("/");
            std::thread::spawn(move || {
                let mut client = connect(&url);
                for i in 0..200 {
                    let text = format!("client {t} message {i}");
                    client.send_text(&text).unwrap();
                    assert_eq!(recv_message(&mut client), Message::text(text));
                }
                client.close(CloseCode::Normal, "").unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        metric(&server.metrics, "duplex_messages_received_total"),
        16 * 200
    );
    assert_eq!(
        metric(&server.metrics, "duplex_messages_sent_total"),
        16 * 200
    );
}

#[test]
fn a_thousand_concurrent_clients_echo_correctly() {
    let server = TestServer::echo(config());
    let mut clients: Vec<Client> = (0..1000).map(|_| connect(&server.url("/"))).collect();
    for round in 0..3 {
        for (i, client) in clients.iter_mut().enumerate() {
            client.send_text(&format!("{i}/{round}")).unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(recv_message(client), Message::text(format!("{i}/{round}")));
        }
    }
    assert_eq!(metric(&server.metrics, "duplex_connections_open"), 1000);
}

#[test]
fn an_oversized_message_closes_that_connection_only_with_1009() {
    let server = small_limits_server();
    let mut other = connect(&server.url("/"));
    let mut big = connect(&server.url("/"));
    big.send_binary(&vec![1u8; 64 * 1024]).unwrap();
    assert_eq!(
        recv_message(&mut big).len(),
        64 * 1024,
        "at the limit is fine"
    );
    big.send_binary(&vec![1u8; 64 * 1024 + 1]).unwrap();
    match big.recv_timeout(WAIT) {
        Ok(ClientEvent::Closed(c)) => assert_eq!(c.code, CloseCode::TooBig, "{c:?}"),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    other.send_text("unaffected").unwrap();
    assert_eq!(recv_message(&mut other), Message::text("unaffected"));
    let text = server.metrics.render();
    assert!(
        text.contains("duplex_closes_total{code=\"1009\"} 1"),
        "{text}"
    );
}

/// A server with 64 KiB frame and message limits and no heartbeat.
fn small_limits_server() -> TestServer {
    TestServer::echo(ServerConfig {
        connection: Config::default()
            .with_ping_interval(None)
            .with_max_message_size(64 * 1024)
            .with_max_frame_size(64 * 1024),
        ..config()
    })
}

/// A peer that keeps sending after the frame the server refuses still reads the 1009 close:
/// the server lingers instead of closing with unread bytes, which makes the kernel send a RST
/// that destroys the close frame.
#[test]
fn a_peer_still_sending_after_an_oversized_frame_reads_the_1009_close() {
    let server = small_limits_server();
    assert_eq!(
        raw_peer::close_code_while_still_sending(server.addr, WAIT),
        1009
    );
    // The server is still serving everyone else.
    let mut other = connect(&server.url("/"));
    other.send_text("unaffected").unwrap();
    assert_eq!(recv_message(&mut other), Message::text("unaffected"));
}

/// A peer that still sends after its close frame (Autobahn 7.1.3 sends a ping) is not reset:
/// after the close handshake the server shuts down its side and discards input until the
/// peer's FIN (see `raw_peer`).
#[test]
fn a_peer_sending_after_its_close_frame_is_not_reset() {
    let server = small_limits_server();
    assert_eq!(raw_peer::close_code_then_ping(server.addr, WAIT), 1000);
    // The server is still serving everyone else.
    let mut other = connect(&server.url("/"));
    other.send_text("unaffected").unwrap();
    assert_eq!(recv_message(&mut other), Message::text("unaffected"));
}

#[test]
fn plain_http_health_metrics_and_not_found() {
    let server = TestServer::echo(config());
    let mut client = connect(&server.url("/"));
    client.send_text("x").unwrap();
    recv_message(&mut client);

    let health = get(server.addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200 "), "{health}");
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");

    let metrics = get(server.addr, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 "), "{metrics}");
    assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
    assert!(
        metrics.contains("\nduplex_connections_open 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nduplex_messages_received_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nduplex_received_bytes_total 1\n"),
        "{metrics}"
    );

    let missing = get(server.addr, "/nope");
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    client.close(CloseCode::Normal, "").unwrap();
}

#[test]
fn bad_upgrades_get_precise_http_errors_and_the_server_keeps_serving() {
    let server = TestServer::echo(config());
    let mut client = connect(&server.url("/"));
    let addr = server.addr;

    let no_key = http(
        addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        ),
    );
    assert!(no_key.starts_with("HTTP/1.1 400 "), "{no_key}");
    assert!(no_key.contains("Sec-WebSocket-Key"), "{no_key}");

    let old_version = http(
        addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
        ),
    );
    assert!(old_version.starts_with("HTTP/1.1 426 "), "{old_version}");
    assert!(
        old_version.contains("Sec-WebSocket-Version: 13\r\n"),
        "{old_version}"
    );

    // Upgrade attempts (they carry Sec-WebSocket-Key/Version) that get the Upgrade or
    // Connection header wrong are failed upgrades with the reason, not page requests (404).
    for (upgrade, connection, reason) in [
        ("", "Connection: Upgrade\r\n", "Upgrade"),
        ("Upgrade: h2c\r\n", "Connection: Upgrade\r\n", "Upgrade"),
        ("Upgrade: websocket\r\n", "", "Connection"),
        (
            "Upgrade: websocket\r\n",
            "Connection: keep-alive\r\n",
            "Connection",
        ),
    ] {
        let reply = http(
            addr,
            &format!(
                "GET /nope HTTP/1.1\r\nHost: {addr}\r\n{upgrade}{connection}\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        );
        assert!(
            reply.starts_with("HTTP/1.1 400 "),
            "{upgrade}{connection}: {reply}"
        );
        assert!(reply.contains(reason), "{upgrade}{connection}: {reply}");
    }

    let garbage = http(addr, "\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");

    let huge = http(
        addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nX: {}\r\n\r\n",
            "a".repeat(20_000)
        ),
    );
    assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");

    // The open connection never noticed.
    client.send_text("still here").unwrap();
    assert_eq!(recv_message(&mut client), Message::text("still here"));
    let text = server.metrics.render();
    assert!(
        text.contains("duplex_handshake_failures_total{reason=\"invalid_key\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("duplex_handshake_failures_total{reason=\"unsupported_version\"} 1"),
        "{text}"
    );
}

#[test]
fn upgrades_beyond_max_connections_get_503() {
    let server = TestServer::echo(ServerConfig {
        max_connections: 2,
        ..config()
    });
    let a = connect(&server.url("/"));
    let b = connect(&server.url("/"));
    match Client::connect(&server.url("/"), ClientOptions::default()) {
        Err(ClientError::HandshakeRejected { status: 503 }) => {}
        other => panic!("expected a 503, got {other:?}"),
    }
    assert!(metric(&server.metrics, "duplex_connections_rejected_full_total") >= 1);
    drop((a, b));
    // Once the others are gone there is room again.
    let deadline = Instant::now() + WAIT;
    loop {
        match Client::connect(&server.url("/"), ClientOptions::default()) {
            Ok(_) => break,
            Err(ClientError::HandshakeRejected { status: 503 }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_silent_tcp_connection_is_dropped_at_the_handshake_timeout() {
    let server = TestServer::echo(ServerConfig {
        connection: Config::default()
            .with_ping_interval(None)
            .with_handshake_timeout(Some(Duration::from_millis(300))),
        ..config()
    });
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(); // never finished
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).expect("EOF, not a read timeout");
    assert_eq!(n, 0);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    let text = server.metrics.render();
    assert!(
        text.contains("duplex_handshake_failures_total{reason=\"timeout\"} 1"),
        "{text}"
    );
}

#[test]
fn a_thousand_half_handshakes_do_not_stop_others_from_being_served() {
    let server = TestServer::echo(ServerConfig {
        connection: Config::default()
            .with_ping_interval(None)
            .with_handshake_timeout(Some(Duration::from_secs(2))),
        ..config()
    });
    let mut stalled: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr").unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let mut client = connect(&server.url("/"));
    client.send_text("served").unwrap();
    assert_eq!(recv_message(&mut client), Message::text("served"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served only after the stalled sockets timed out"
    );
    // And every stalled socket is dropped at the timeout.
    for s in &mut stalled {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).expect("EOF"), 0);
    }
    let deadline = Instant::now() + WAIT;
    while metric(&server.metrics, "duplex_tcp_connections") != 1 {
        assert!(
            Instant::now() < deadline,
            "stalled sockets are still counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_peer_that_never_answers_pings_is_closed_with_1001() {
    let server = TestServer::echo(ServerConfig {
        connection: Config::default()
            .with_ping_interval(Some(Duration::from_millis(100)))
            .with_max_missed_pongs(2),
        ..config()
    });
    let mut peer = RawPeer::open(server.addr);
    // Never flush again: the core queues pongs that never leave.
    let events = peer.read_until(|e| matches!(e, Event::Closed(_)));
    let pings = events
        .iter()
        .filter(|e| matches!(e, Event::Ping(_)))
        .count();
    assert!(pings >= 2, "{events:?}");
    match events.last() {
        Some(Event::Closed(c)) => assert_eq!(c.code, CloseCode::GoingAway, "{c:?}"),
        other => panic!("expected Closed, got {other:?}"),
    }
    let text = server.metrics.render();
    assert!(
        text.contains("duplex_closes_total{code=\"1001\"} 1"),
        "{text}"
    );
}

#[test]
fn a_peer_that_answers_pings_stays_open() {
    let server = TestServer::echo(ServerConfig {
        connection: Config::default()
            .with_ping_interval(Some(Duration::from_millis(50)))
            .with_max_missed_pongs(1),
        ..config()
    });
    let mut client = connect(&server.url("/"));
    let until = Instant::now() + Duration::from_millis(600);
    let mut pings = 0;
    while Instant::now() < until {
        match client.recv_timeout(Duration::from_millis(50)) {
            Ok(ClientEvent::Ping(_)) => pings += 1,
            Err(ClientError::Timeout) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(pings >= 5, "{pings} pings");
    client.send_text("alive").unwrap();
    assert_eq!(recv_message(&mut client), Message::text("alive"));
}

#[test]
fn backpressure_pauses_a_reader_that_does_not_read_and_loses_nothing() {
    let server = TestServer::echo(ServerConfig {
        max_backlog: 64 * 1024,
        threads: 1,
        ..config()
    });
    let mut peer = RawPeer::open(server.addr);
    let payload: Vec<u8> = (0..16 * 1024).map(|i| (i % 253) as u8).collect();
    const N: usize = 600; // ~10 MB each way: far more than the socket buffers hold
    let mut writer = peer.stream.try_clone().unwrap();
    let mut frames = Vec::new();
    for _ in 0..N {
        peer.conn.send_binary(&payload).unwrap();
        frames.extend_from_slice(peer.conn.output());
        let n = peer.conn.output().len();
        peer.conn.consume(n);
    }
    // Write everything from another thread while this one does not read yet.
    let sender = std::thread::spawn(move || writer.write_all(&frames));
    let deadline = Instant::now() + WAIT;
    while metric(&server.metrics, "duplex_backpressure_pauses_total") == 0 {
        assert!(Instant::now() < deadline, "the server never paused");
        std::thread::sleep(Duration::from_millis(10));
    }
    // While the peer does not read, the server's unsent output stays near the cap: at most one
    // read's worth of echoes beyond it.
    for _ in 0..50 {
        let buffered = metric(&server.metrics, "duplex_output_buffered_bytes");
        assert!(
            buffered <= 64 * 1024 + 256 * 1024,
            "{buffered} bytes buffered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(metric(&server.metrics, "duplex_output_buffered_bytes") >= 64 * 1024);
    let mut received = 0;
    let events = peer.read_until(|e| {
        if let Event::Message(m) = e {
            assert_eq!(m.as_bytes(), payload.as_slice());
            received += 1;
        }
        received == N
    });
    assert_eq!(received, N, "last events: {:?}", events.last());
    sender.join().unwrap().unwrap();
}

#[test]
fn graceful_shutdown_closes_everyone_with_1001() {
    let server = TestServer::echo(config());
    let mut clients: Vec<Client> = (0..4).map(|_| connect(&server.url("/"))).collect();
    let stop = server.stop.clone();
    let waiter = std::thread::spawn(move || server.stop());
    stop.shutdown();
    for client in &mut clients {
        match client.recv_timeout(WAIT) {
            Ok(ClientEvent::Closed(c)) => {
                assert_eq!(c.code, CloseCode::GoingAway);
                assert!(c.clean, "{c:?}");
            }
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    }
    waiter.join().unwrap().unwrap();
}

struct Rooms;

impl Handler for Rooms {
    fn on_upgrade(&mut self, request: &Request) -> Decision {
        if request.path() != "/chat" {
            return Decision::Reject(403, "only /chat\n".into());
        }
        let offered = request.subprotocols();
        let mut accept = duplex_core::Accept::default();
        if offered.iter().any(|p| p == "chat.v2") {
            accept = accept.with_protocol("chat.v2");
        }
        Decision::Accept(accept)
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message) {
        let reply = format!("{}:{}", ctx.protocol(id).unwrap_or_default(), message.len());
        ctx.send(id, &Message::text(reply)).unwrap();
    }
}

#[test]
fn the_application_chooses_subprotocols_and_rejects_paths() {
    let server = TestServer::start(config(), |_| Rooms);
    match Client::connect(&server.url("/other"), ClientOptions::default()) {
        Err(ClientError::HandshakeRejected { status: 403 }) => {}
        other => panic!("expected 403, got {other:?}"),
    }
    let options = ClientOptions::default()
        .with_subprotocol("chat.v1")
        .with_subprotocol("chat.v2");
    let mut client = Client::connect(&server.url("/chat"), options).unwrap();
    assert_eq!(client.protocol(), Some("chat.v2"));
    client.send_text("abc").unwrap();
    assert_eq!(recv_message(&mut client), Message::text("chat.v2:3"));
}

#[test]
fn a_reset_mid_message_does_not_disturb_others() {
    let server = TestServer::echo(config());
    let mut client = connect(&server.url("/"));
    let mut peer = RawPeer::open(server.addr);
    peer.conn.send_binary(&[7u8; 100_000]).unwrap();
    let half = peer.conn.output()[..50_000].to_vec();
    peer.stream.write_all(&half).unwrap();
    peer.stream.shutdown(Shutdown::Both).unwrap();
    drop(peer);
    client.send_text("ok?").unwrap();
    assert_eq!(recv_message(&mut client), Message::text("ok?"));
    let deadline = Instant::now() + WAIT;
    while metric(&server.metrics, "duplex_connections_open") != 1 {
        assert!(
            Instant::now() < deadline,
            "the reset connection is still counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ----------------------------------------------------------------------- the binary

fn duplex_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duplex"))
}

#[test]
fn connect_cli_reports_refused_connections() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = duplex_bin()
        .args(["connect", &format!("ws://127.0.0.1:{port}/")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connection refused"), "{stderr}");
}

#[test]
fn connect_cli_reports_rejected_handshakes() {
    let server = TestServer::start(config(), |_| Rooms);
    let out = duplex_bin()
        .args(["connect", &server.url("/elsewhere")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("handshake rejected: HTTP 403"), "{stderr}");
}

#[test]
fn echo_cli_rejects_bad_flags_with_a_message() {
    let out = duplex_bin()
        .args(["echo", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn echo_cli_drains_on_sigterm_and_exits_0() {
    let mut child = duplex_bin()
        .args(["echo", "--listen", "127.0.0.1:0", "--threads", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    let mut client = connect(&url);
    client.send_text("before").unwrap();
    assert_eq!(recv_message(&mut client), Message::text("before"));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    match client.recv_timeout(WAIT) {
        Ok(ClientEvent::Closed(c)) => assert_eq!(c.code, CloseCode::GoingAway),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "duplex echo did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

// ----------------------------------------------------------------------- permessage-deflate

fn negotiated_deflate(client: &Client) -> bool {
    client
        .response()
        .expect("open")
        .extensions
        .iter()
        .any(|e| e.name == "permessage-deflate")
}

#[test]
fn deflate_is_negotiated_and_echoes_stay_intact() {
    let server = TestServer::echo(ServerConfig {
        connection: ServerConfig::default().connection.with_ping_interval(None),
        ..config()
    });
    let mut client = connect(&server.url("/"));
    assert!(negotiated_deflate(&client), "{:?}", client.response());
    let json = r#"{"type":"message","room":"app/general","text":"hello everyone"}"#.repeat(500);
    for _ in 0..3 {
        client.send_text(&json).unwrap();
        assert_eq!(recv_message(&mut client), Message::text(json.clone()));
    }
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    client.send_binary(&noise).unwrap();
    assert_eq!(recv_message(&mut client).as_bytes(), noise.as_slice());
    client.send_text("tiny").unwrap();
    assert_eq!(recv_message(&mut client), Message::text("tiny"));
}

#[test]
fn a_server_without_deflate_declines_the_offer() {
    let server = TestServer::echo(config()); // config() has no deflate policy
    let mut client = connect(&server.url("/"));
    assert!(!negotiated_deflate(&client));
    client.send_text("plain").unwrap();
    assert_eq!(recv_message(&mut client), Message::text("plain"));
}

#[test]
fn a_deflate_bomb_is_refused_with_1009() {
    let server = TestServer::echo(ServerConfig {
        connection: ServerConfig::default()
            .connection
            .with_ping_interval(None)
            .with_max_message_size(256 << 10),
        ..config()
    });
    let mut bomb = connect(&server.url("/"));
    let mut other = connect(&server.url("/"));
    assert!(negotiated_deflate(&bomb));
    // 8 MiB of zeros compress to ~8 KiB, far under the 256 KiB limit on the wire.
    bomb.send_binary(&vec![0u8; 8 << 20]).unwrap();
    match bomb.recv_timeout(WAIT) {
        Ok(ClientEvent::Closed(c)) => assert_eq!(c.code, CloseCode::TooBig, "{c:?}"),
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, CloseCode::TooBig),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    other.send_text("fine").unwrap();
    assert_eq!(recv_message(&mut other), Message::text("fine"));
}
