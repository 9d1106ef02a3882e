//! Opening handshakes: `accept` for servers, `connect` for clients.

use std::time::Duration;

use duplex_core::deflate::DeflateConfig;
use duplex_core::{
    Accept, ClientRequest, Config, Connection, Event, RandomSource, Request, Response,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::{Error, WebSocketStream};

/// The configuration [`accept`] and [`connect`] use: the core's limits, permessage-deflate
/// offered and accepted, and a ping every 30 s (a peer that misses 3 pongs in a row is dropped).
pub fn default_config() -> Config {
    Config::default()
        .with_deflate(Some(DeflateConfig::default()))
        .with_ping_interval(Some(Duration::from_secs(30)))
}

/// Randomness for masking keys and `Sec-WebSocket-Key`: the operating system's generator.
pub fn random_source() -> RandomSource {
    Box::new(fill_random)
}

fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // The OS generator is unavailable: std's hasher keys are seeded from it once per
        // process, mixed with a counter. Masking keys only need to be unpredictable to scripts
        // in a browser, which this process does not run.
        use std::hash::{BuildHasher, RandomState};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let state = RandomState::new();
        for chunk in buf.chunks_mut(8) {
            let x = state.hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A refused upgrade: the HTTP status and a body saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub body: String,
}

impl Reject {
    pub fn new(status: u16, body: impl Into<String>) -> Reject {
        Reject {
            status,
            body: body.into(),
        }
    }
}

/// Accepts a WebSocket upgrade on `io` with [`default_config`] and no subprotocol.
pub async fn accept<S>(io: S) -> Result<WebSocketStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(io, default_config(), |_| Ok(Accept::default())).await
}

/// Accepts a WebSocket upgrade on `io`, letting `decide` pick a subprotocol (or add headers)
/// or refuse the request with an HTTP status. A request that is not an upgrade is answered
/// with 426 without asking `decide`; a malformed one with the status the core chooses.
pub async fn accept_with<S, F>(
    io: S,
    config: Config,
    decide: F,
) -> Result<WebSocketStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> Result<Accept, Reject>,
{
    let start = Instant::now();
    let ws =
        WebSocketStream::from_connection(io, Connection::server(config, Duration::ZERO), start);
    let mut decide = Some(decide);
    let mut refused = None;
    let mut failure = None;
    while let Some(event) = ws.next_event().await {
        match event {
            Event::Request(request) => {
                let decision = match decide.take() {
                    Some(_) if !request.is_websocket_upgrade() => {
                        Err(Reject::new(426, "this endpoint only speaks WebSocket"))
                    }
                    Some(decide) => decide(&request),
                    None => Err(Reject::new(400, "one request per connection")),
                };
                ws.with_connection(|conn| match decision {
                    Ok(accept) => conn.accept(accept),
                    Err(reject) => {
                        refused = Some(reject.status);
                        let upgrade = [
                            ("Content-Type", "text/plain; charset=utf-8"),
                            ("Upgrade", "websocket"),
                        ];
                        let headers = if reject.status == 426 {
                            &upgrade[..]
                        } else {
                            &upgrade[..1]
                        };
                        conn.respond(reject.status, headers, reject.body.as_bytes())
                    }
                })
                .map_err(Error::Send)?;
            }
            Event::Open => {
                // The 101 goes out now, not with the first message.
                ws.flush().await?;
                return Ok(ws);
            }
            Event::Error(e) => failure = Some(e),
            _ => {}
        }
    }
    Err(match (refused, failure) {
        (Some(status), _) => Error::Refused { status },
        (None, Some(e)) => Error::Protocol(e),
        (None, None) => Error::Closed,
    })
}

/// Anything [`connect_with`] can build an upgrade request from.
pub trait IntoClientRequest {
    fn into_client_request(self) -> Result<ClientRequest, Error>;
}

impl IntoClientRequest for ClientRequest {
    fn into_client_request(self) -> Result<ClientRequest, Error> {
        Ok(self)
    }
}

impl IntoClientRequest for &ClientRequest {
    fn into_client_request(self) -> Result<ClientRequest, Error> {
        Ok(self.clone())
    }
}

impl IntoClientRequest for &str {
    fn into_client_request(self) -> Result<ClientRequest, Error> {
        ClientRequest::from_url(self).map_err(Error::Request)
    }
}

impl IntoClientRequest for &String {
    fn into_client_request(self) -> Result<ClientRequest, Error> {
        self.as_str().into_client_request()
    }
}

impl IntoClientRequest for String {
    fn into_client_request(self) -> Result<ClientRequest, Error> {
        self.as_str().into_client_request()
    }
}

/// Connects to a `ws://` URL over TCP with [`default_config`].
pub async fn connect(
    url: impl IntoClientRequest,
) -> Result<(WebSocketStream<TcpStream>, Response), Error> {
    connect_with(url, default_config()).await
}

/// Connects over TCP with a request (URL, subprotocols, headers) and a configuration.
pub async fn connect_with(
    request: impl IntoClientRequest,
    config: Config,
) -> Result<(WebSocketStream<TcpStream>, Response), Error> {
    let request = request.into_client_request()?;
    if request.secure {
        return Err(Error::TlsRequired);
    }
    let tcp = TcpStream::connect((request.hostname.as_str(), request.port)).await?;
    tcp.set_nodelay(true)?;
    client_handshake(tcp, request, config).await
}

/// Runs the client handshake over an already connected byte stream (TLS, a proxy tunnel, an
/// in-memory pipe).
pub async fn client_handshake<S>(
    io: S,
    request: ClientRequest,
    config: Config,
) -> Result<(WebSocketStream<S>, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let conn = Connection::client(request, config, random_source(), Duration::ZERO);
    let ws = WebSocketStream::from_connection(io, conn, start);
    let mut failure = None;
    while let Some(event) = ws.next_event().await {
        match event {
            Event::Open => {
                let response = ws.with_connection(|conn| conn.response().cloned());
                return match response {
                    Some(response) => Ok((ws, response)),
                    None => Err(Error::Closed),
                };
            }
            Event::Error(e) => failure = Some(e),
            _ => {}
        }
    }
    Err(match failure {
        Some(duplex_core::Error::Handshake(duplex_core::HandshakeError::UnexpectedStatus(
            status,
        ))) => Error::Refused { status },
        Some(e) => Error::Protocol(e),
        None => Error::Closed,
    })
}
