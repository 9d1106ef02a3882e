//! The core's timers run on tokio time while the application only awaits the next message.
//! Time is paused: tokio advances it whenever every task waits, so these take no real time.

use std::time::Duration;

use duplex_core::{ClientRequest, Connection, Event};
use duplex_tokio::{
    Accept, CloseCode, Config, Error, WebSocketStream, accept_with, client_handshake,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::{Instant, timeout};

/// The close timeout of the tests that wait for it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks that what `started` waited for ended at the close timeout, within a second, and not
/// at a later deadline.
fn ended_at_the_close_timeout(started: Instant) {
    let waited = started.elapsed();
    assert!(
        waited >= CLOSE_TIMEOUT && waited < CLOSE_TIMEOUT + Duration::from_secs(1),
        "{waited:?}"
    );
}

/// A peer that completes the handshake and then never reads or answers anything.
async fn silent_client(mut io: DuplexStream) -> DuplexStream {
    let request = ClientRequest::from_url("ws://127.0.0.1/").unwrap();
    let mut seed = 1u8;
    let random = Box::new(move |buf: &mut [u8]| {
        for b in buf {
            seed = seed.wrapping_mul(13).wrapping_add(7);
            *b = seed;
        }
    });
    let mut conn = Connection::client(request, Config::default(), random, Duration::ZERO);
    io.write_all(conn.output()).await.unwrap();
    let n = conn.output().len();
    conn.consume(n);
    let mut buf = [0u8; 1024];
    while !conn.is_open() {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during the handshake");
        conn.receive(Duration::ZERO, &buf[..n]);
        while let Some(event) = conn.poll_event() {
            assert!(matches!(event, Event::Open), "{event:?}");
        }
    }
    io
}

async fn server(io: DuplexStream, config: Config) -> WebSocketStream<DuplexStream> {
    accept_with(io, config, |_| Ok(Accept::default()))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_by_the_heartbeat_without_app_action() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let config = Config::default()
        .with_ping_interval(Some(Duration::from_secs(10)))
        .with_max_missed_pongs(2);
    let (ws, _peer) = tokio::join!(server(a, config), silent_client(b));
    let started = Instant::now();
    // The application does nothing but wait for a message.
    let end = timeout(Duration::from_secs(600), ws.recv())
        .await
        .expect("the heartbeat ended the connection");
    let waited = started.elapsed();
    match end {
        Some(Err(Error::Protocol(duplex_core::Error::HeartbeatTimeout { missed: 2 }))) => {}
        other => panic!("expected a heartbeat timeout, got {other:?}"),
    }
    // Pings at 10 s and 20 s went unanswered; the third deadline (30 s) declares it dead.
    assert!(
        waited >= Duration::from_secs(20) && waited <= Duration::from_secs(31),
        "{waited:?}"
    );
    assert_eq!(ws.closed().unwrap().code, CloseCode::GoingAway);
    assert!(ws.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_fires_without_app_action() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let config = Config::default().with_idle_timeout(Some(Duration::from_secs(45)));
    let (ws, _peer) = tokio::join!(server(a, config), silent_client(b));
    let started = Instant::now();
    let end = timeout(Duration::from_secs(600), ws.recv()).await.unwrap();
    assert!(
        matches!(
            end,
            Some(Err(Error::Protocol(duplex_core::Error::IdleTimeout)))
        ),
        "{end:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(45),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_close_the_peer_never_answers_ends_after_the_close_timeout() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let config = Config::default().with_close_timeout(CLOSE_TIMEOUT);
    let (ws, _peer) = tokio::join!(server(a, config), silent_client(b));
    ws.close(CloseCode::Normal, "bye").await.unwrap();
    let started = Instant::now();
    let end = timeout(Duration::from_secs(600), ws.recv()).await.unwrap();
    assert!(
        matches!(
            end,
            Some(Err(Error::Protocol(duplex_core::Error::CloseTimeout)))
        ),
        "{end:?}"
    );
    // At the close timeout, not at a later deadline (the heartbeat's, 30 s) armed before the
    // close frame went out.
    ended_at_the_close_timeout(started);
    assert!(!ws.closed().unwrap().clean);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_responsive_pair_open() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let config = Config::default()
        .with_ping_interval(Some(Duration::from_secs(5)))
        .with_max_missed_pongs(1);
    let request = ClientRequest::from_url("ws://127.0.0.1/").unwrap();
    let (server, client) = tokio::join!(
        server(a, config.clone()),
        client_handshake(b, request, config)
    );
    let (client, _) = client.unwrap();
    // Both sides only wait for messages for a minute: pings flow both ways and are answered.
    let quiet = Duration::from_secs(60);
    let (s, c) = tokio::join!(timeout(quiet, server.recv()), timeout(quiet, client.recv()));
    assert!(
        s.is_err() && c.is_err(),
        "nothing ended the connection: {s:?} {c:?}"
    );
    assert!(server.closed().is_none() && client.closed().is_none());
    client
        .send(duplex_tokio::Message::text("still here"))
        .await
        .unwrap();
    let got = server.recv().await.unwrap().unwrap();
    assert_eq!(got, duplex_tokio::Message::text("still here"));
}

/// A peer whose data never stops: every read returns more of the same masked frames at once
/// (never `Pending`), writes are taken and dropped. It gives up (EOF) at `until`.
struct Flood {
    frames: Vec<u8>,
    at: usize,
    until: std::time::Instant,
}

impl tokio::io::AsyncRead for Flood {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if std::time::Instant::now() >= self.until {
            return std::task::Poll::Ready(Ok(()));
        }
        while buf.remaining() > 0 {
            let at = self.at;
            let n = buf.remaining().min(self.frames.len() - at);
            buf.put_slice(&self.frames[at..at + n]);
            self.at = (at + n) % self.frames.len();
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Flood {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_stops_sending_cannot_hold_off_the_close_timeout() {
    // An open server core (handshake done in memory), and a client core for masked frames.
    let config = Config::default().with_close_timeout(Duration::from_millis(300));
    let request = ClientRequest::from_url("ws://127.0.0.1/").unwrap();
    let random = Box::new(|buf: &mut [u8]| buf.fill(0x5a));
    let mut client = Connection::client(request, config.clone(), random, Duration::ZERO);
    let mut server = Connection::server(config, Duration::ZERO);
    for _ in 0..10 {
        let out = client.output().to_vec();
        client.consume(out.len());
        server.receive(Duration::ZERO, &out);
        while let Some(event) = server.poll_event() {
            if let Event::Request(_) = event {
                server.accept(duplex_core::Accept::default()).unwrap();
            }
        }
        let out = server.output().to_vec();
        server.consume(out.len());
        client.receive(Duration::ZERO, &out);
        while client.poll_event().is_some() {}
    }
    assert!(server.is_open() && client.is_open());
    while server.poll_event().is_some() {}
    client.send_binary(&[1; 100]).unwrap();
    let frames = client.output().to_vec();
    let io = Flood {
        frames,
        at: 0,
        until: std::time::Instant::now() + Duration::from_secs(10),
    };
    let ws = WebSocketStream::from_connection(io, server, Instant::now());
    let reader = tokio::spawn(async move {
        ws.close(CloseCode::Normal, "bye").await.unwrap();
        let started = std::time::Instant::now();
        // The reads never wait: only the timer check between them can end this loop.
        loop {
            match ws.recv().await {
                Some(Ok(_)) => {}
                end => return (end, started.elapsed()),
            }
        }
    });
    let (end, took) = reader.await.unwrap();
    assert!(
        matches!(
            end,
            Some(Err(Error::Protocol(duplex_core::Error::CloseTimeout)))
        ),
        "{end:?} after {took:?}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A server on the bare core that completes the handshake and answers the client's close,
/// then keeps its side of the pipe open (returned to the test) instead of closing it first.
async fn server_that_never_closes_tcp(mut io: DuplexStream) -> DuplexStream {
    let mut conn = Connection::server(Config::default(), Duration::ZERO);
    let mut buf = [0u8; 1024];
    loop {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed first");
        conn.receive(Duration::ZERO, &buf[..n]);
        while let Some(event) = conn.poll_event() {
            if let Event::Request(_) = event {
                conn.accept(duplex_core::Accept::default()).unwrap();
            }
        }
        let out = conn.output().to_vec();
        io.write_all(&out).await.unwrap();
        conn.consume(out.len());
        if conn.is_terminated() {
            return io;
        }
    }
}

/// After a close handshake the server closes TCP first. A client whose server never does ends
/// at the close timeout, once: its core waits for the FIN, and the stream does not linger again.
#[tokio::test(start_paused = true)]
async fn a_client_whose_server_keeps_tcp_open_after_the_close_ends_at_the_close_timeout() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(server_that_never_closes_tcp(a));
    let config = Config::default()
        .with_ping_interval(None)
        .with_close_timeout(CLOSE_TIMEOUT);
    let request = ClientRequest::from_url("ws://127.0.0.1/").unwrap();
    let (client, _) = client_handshake(b, request, config).await.unwrap();
    client.close(CloseCode::Normal, "bye").await.unwrap();
    let started = Instant::now();
    let end = timeout(Duration::from_secs(600), client.recv())
        .await
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    ended_at_the_close_timeout(started);
    assert!(client.closed().unwrap().clean);
    // The server's side stays open until here.
    drop(server.await.unwrap());
}

/// A server's stream lingers after a close handshake (the client may still send) until the
/// client's FIN, and no longer than the close timeout when the client keeps TCP open.
#[tokio::test(start_paused = true)]
async fn a_server_lingers_after_a_close_handshake_at_most_the_close_timeout() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let config = Config::default()
        .with_ping_interval(None)
        .with_close_timeout(CLOSE_TIMEOUT);
    let (ws, mut peer) = tokio::join!(server(a, config), silent_client(b));
    // The client's close frame (masked, code 1000), sent by hand: the client then keeps its
    // side open and reads nothing.
    peer.write_all(&[0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2])
        .await
        .unwrap();
    let started = Instant::now();
    let end = timeout(Duration::from_secs(600), ws.recv()).await.unwrap();
    assert!(end.is_none(), "{end:?}");
    ended_at_the_close_timeout(started);
    assert!(ws.closed().unwrap().clean);
    drop(peer);
}
