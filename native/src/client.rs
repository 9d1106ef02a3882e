//! A blocking WebSocket client: the `duplex-core` state machine driven over a TCP socket, or
//! over TLS (`wss://`, rustls) on that socket.
//!
//! ```no_run
//! use duplex::client::{Client, ClientEvent, ClientOptions};
//! use duplex_core::close::CloseCode;
//!
//! let mut client = Client::connect("ws://127.0.0.1:9001/", ClientOptions::default())?;
//! client.send_text("hello")?;
//! if let ClientEvent::Message(message) = client.recv()? {
//!     println!("{message:?}");
//! }
//! client.close(CloseCode::Normal, "bye")?;
//! # Ok::<(), duplex::client::ClientError>(())
//! ```
//!
//! The socket is non-blocking underneath and watched with its own `mio::Poll`, so reading and
//! writing never wait on each other: while a large `send` drains into the kernel, whatever the
//! server sends meanwhile is read and queued for `recv`. Heartbeats, the handshake deadline and
//! the close timeout all come from the core's `poll_timeout`, which bounds every wait.
//!
//! [`Client::waker`] lets another thread interrupt a wait (the `duplex connect` CLI wakes the
//! client when a line arrives on stdin), and [`Client::poll`] reports such wake-ups as `None`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex_core::close::CloseCode;
use duplex_core::connection::Connection;
use duplex_core::deflate::DeflateConfig;
use duplex_core::error::{Error as CoreError, SendError};
use duplex_core::handshake::HandshakeError;
use duplex_core::handshake::client::{ClientRequest, Response};
use duplex_core::limits::Config;
use duplex_core::message::{Closed, Event, Message};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::tls::{self, Transport, Trust};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// What to ask for in the handshake, and the limits of the connection.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in order of preference.
    pub subprotocols: Vec<String>,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// Limits and timers of the connection (message size, heartbeat, handshake and close
    /// timeouts) and the permessage-deflate offer (on by default).
    pub config: Config,
    /// Time allowed for the TCP connection to one resolved address.
    pub connect_timeout: Duration,
    /// The socket's receive buffer (`SO_RCVBUF`) in bytes; `None` leaves the kernel's
    /// auto-tuning on. A small buffer makes a client that stops reading stall its sender early.
    pub recv_buffer_size: Option<usize>,
    /// TLS settings for `wss://` (trust anchors, see [`crate::tls::client_config`]); `None`
    /// trusts the operating system's store.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            subprotocols: Vec::new(),
            headers: Vec::new(),
            origin: None,
            config: Config::default().with_deflate(Some(DeflateConfig::default())),
            connect_timeout: Duration::from_secs(10),
            recv_buffer_size: None,
            tls: None,
        }
    }
}

impl ClientOptions {
    /// Offers one more subprotocol.
    pub fn with_subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocols.push(protocol.into());
        self
    }

    /// Adds a request header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the `Origin` header.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Replaces the connection limits and timers.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the socket's receive buffer (`SO_RCVBUF`).
    pub fn with_recv_buffer_size(mut self, bytes: usize) -> Self {
        self.recv_buffer_size = Some(bytes);
        self
    }

    /// Uses these TLS settings for `wss://`.
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Sets the TCP connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// What [`Client::recv`] hands out once the connection is open.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A complete text or binary message.
    Message(Message),
    /// The server pinged us; the pong has already been queued.
    Ping(Bytes),
    /// A pong arrived (an answer to [`Client::ping`] or an unsolicited heartbeat).
    Pong(Bytes),
    /// The close handshake completed (either side started it). Reported once; afterwards
    /// every call returns [`ClientError::Closed`].
    Closed(Closed),
}

/// Why connecting, sending or receiving failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a usable `ws://` URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(HandshakeError),
    /// The TLS settings could not be built (e.g. an unreadable CA file, a bad host name).
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// The TLS handshake failed; `reason` names the certificate problem (expired, wrong name,
    /// unknown issuer) when there is one.
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    /// Nothing listens at the address.
    #[error("connection refused: {addr}")]
    ConnectionRefused { addr: SocketAddr },
    /// The TCP connection did not complete within the connect timeout.
    #[error("connection timed out: {addr}")]
    ConnectTimeout { addr: SocketAddr },
    /// Any other failure to open the TCP connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The server answered the upgrade request with another status than 101.
    #[error("handshake rejected: HTTP {status}")]
    HandshakeRejected { status: u16 },
    /// The server's 101 response was not a valid WebSocket handshake.
    #[error("invalid handshake response: {0}")]
    Handshake(HandshakeError),
    /// The server did not finish the handshake within the configured handshake timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The connection failed: the server broke the protocol, sent a message over the limits,
    /// stopped answering pings, or did not answer our close in time. A close frame with the
    /// matching code was sent when the connection was still open.
    #[error("connection failed: {0}")]
    Protocol(CoreError),
    /// The server closed TCP without a close handshake.
    #[error("connection reset by the server")]
    ConnectionReset,
    /// The connection is closed (reported after [`ClientEvent::Closed`] was handed out, or
    /// when sending on a closed connection).
    #[error("connection closed: {code}{}", reason_suffix(.reason))]
    Closed { code: CloseCode, reason: String },
    /// The send was refused before anything was queued (e.g. a ping payload over 125 bytes, a
    /// close reason over 123 bytes, or a close code that may not be sent).
    #[error("cannot send: {0}")]
    Send(SendError),
    /// [`Client::recv_timeout`] saw no event within its timeout.
    #[error("timed out waiting for an event")]
    Timeout,
    /// A socket or poll operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason:?}")
    }
}

/// One WebSocket connection to a server. See the module documentation.
pub struct Client {
    conn: Connection,
    stream: Transport,
    /// The host named in the URL (SNI), for error messages.
    host: String,
    poll: Poll,
    events: Events,
    epoch: Instant,
    peer: SocketAddr,
    /// The failure reported by the core, waiting for its `Closed` event.
    failure: Option<CoreError>,
    /// Set once `ClientEvent::Closed` (or the error standing for it) was handed out.
    closed: Option<Closed>,
    /// The server closed its side of TCP, or the socket failed: nothing more will be read.
    eof: bool,
    /// Output that can no longer be written (the socket failed) is dropped.
    write_failed: bool,
    /// Set by a waker event; reported by `poll` as `None`.
    woken: bool,
    /// A read stopped before `WouldBlock`; the next wait must not sleep.
    pending_read: bool,
    /// Our sending side was shut down (TLS close_notify and FIN sent once).
    shut: bool,
    waker: Option<Arc<Waker>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("conn", &self.conn)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to a `ws://` URL and completes the opening handshake.
    pub fn connect(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let request = build_request(url, &options)?;
        let host = request
            .hostname
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (host, request.port)
            .to_socket_addrs()
            .map_err(|source| ClientError::Resolve {
                host: host.to_string(),
                source,
            })?
            .collect();
        let (std_stream, peer) = connect_any(&addrs, host, options.connect_timeout)?;
        std_stream.set_nodelay(true)?;
        if let Some(bytes) = options.recv_buffer_size {
            socket2::SockRef::from(&std_stream).set_recv_buffer_size(bytes)?;
        }
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
        let stream = if request.secure {
            let config = match options.tls {
                Some(config) => config,
                None => system_tls()?,
            };
            Transport::tls(
                stream,
                tls::connect(config, host).map_err(ClientError::TlsSetup)?,
            )
        } else {
            Transport::Plain(stream)
        };
        let host = host.to_string();
        let epoch = Instant::now();
        let conn = Connection::client(
            request,
            options.config,
            crate::random_source(),
            Duration::ZERO,
        );
        let mut client = Client {
            conn,
            stream,
            host,
            poll,
            events: Events::with_capacity(8),
            epoch,
            peer,
            failure: None,
            closed: None,
            eof: false,
            write_failed: false,
            woken: false,
            pending_read: false,
            shut: false,
            waker: None,
        };
        client.handshake()?;
        Ok(client)
    }

    fn handshake(&mut self) -> Result<(), ClientError> {
        loop {
            self.pump()?;
            while let Some(event) = self.conn.poll_event() {
                if let Some(e) = self.stream.tls_error() {
                    return Err(ClientError::Tls {
                        host: self.host.clone(),
                        reason: tls::describe_error(e),
                    });
                }
                match event {
                    Event::Open => return Ok(()),
                    Event::Error(e) => return Err(handshake_error(e)),
                    Event::Closed(_) => return Err(ClientError::ConnectionReset),
                    _ => {}
                }
            }
            self.wait(None)?;
        }
    }

    /// The address of the server.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The subprotocol the server selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.conn.protocol()
    }

    /// The server's 101 response (headers such as `Sec-WebSocket-Extensions`).
    pub fn response(&self) -> Option<&Response> {
        self.conn.response()
    }

    /// True while messages may be sent (open and no close started).
    pub fn is_open(&self) -> bool {
        self.conn.is_open()
    }

    /// Bytes queued but not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount()
    }

    /// A handle another thread can use to interrupt [`Client::poll`] (which then returns
    /// `Ok(None)`). Created on first use; later calls return the same waker.
    pub fn waker(&mut self) -> Result<Arc<Waker>, ClientError> {
        if let Some(waker) = &self.waker {
            return Ok(Arc::clone(waker));
        }
        let waker = Arc::new(Waker::new(self.poll.registry(), WAKER)?);
        self.waker = Some(Arc::clone(&waker));
        Ok(waker)
    }

    // ------------------------------------------------------------------ sending

    /// Sends a message and waits until it is written to the socket.
    pub fn send(&mut self, message: &Message) -> Result<(), ClientError> {
        self.check_sendable()?;
        self.conn.send(message).map_err(|e| self.send_error(e))?;
        self.flush()
    }

    /// Sends a text message and waits until it is written to the socket.
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.check_sendable()?;
        self.conn.send_text(text).map_err(|e| self.send_error(e))?;
        self.flush()
    }

    /// Sends a binary message and waits until it is written to the socket.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.check_sendable()?;
        self.conn
            .send_binary(data)
            .map_err(|e| self.send_error(e))?;
        self.flush()
    }

    /// Sends a ping (payload of at most 125 bytes); its pong arrives as [`ClientEvent::Pong`].
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.check_sendable()?;
        self.conn
            .send_ping(payload)
            .map_err(|e| self.send_error(e))?;
        self.flush()
    }

    /// Starts the close handshake without waiting for it: keep calling [`Client::recv`] (the
    /// server may still send messages) until [`ClientEvent::Closed`].
    pub fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<(), ClientError> {
        self.check_sendable()?;
        self.conn
            .close(code, reason)
            .map_err(|e| self.send_error(e))?;
        self.flush()
    }

    /// Closes the connection: sends a close frame, discards whatever messages still arrive,
    /// and waits for the server's close frame and for it to close TCP, bounded by the close
    /// timeout of the [`Config`]. Returns how the connection ended.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<Closed, ClientError> {
        if self.conn.is_open() {
            self.start_close(code, reason)?;
        }
        let closed = loop {
            match self.recv() {
                Ok(ClientEvent::Closed(closed)) => break closed,
                Ok(_) => {}
                Err(ClientError::Closed { .. }) => match &self.closed {
                    Some(closed) => break closed.clone(),
                    None => return Err(ClientError::ConnectionReset),
                },
                Err(e) => return Err(e),
            }
        };
        // A client lets the server close TCP first (RFC 6455 §7.1.1), up to the close timeout.
        while !self.conn.is_terminated() && !self.eof {
            self.pump()?;
            if self.conn.is_terminated() || self.eof {
                break;
            }
            self.wait(None)?;
        }
        self.flush_now();
        if !std::mem::replace(&mut self.shut, true) {
            self.stream.shutdown_write();
        }
        let _ = self.stream.socket().shutdown(Shutdown::Both);
        Ok(closed)
    }

    fn check_sendable(&self) -> Result<(), ClientError> {
        match &self.closed {
            Some(closed) => Err(ClientError::Closed {
                code: closed.code,
                reason: closed.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn send_error(&self, error: SendError) -> ClientError {
        match error {
            // The connection is closing or closed but `recv` has not reported it yet.
            SendError::NotOpen => ClientError::Closed {
                code: CloseCode::NoStatus,
                reason: "the connection is closing".into(),
            },
            other => ClientError::Send(other),
        }
    }

    /// Waits until every queued byte is in the kernel (reading meanwhile, so a server that
    /// sends while we send cannot deadlock us).
    fn flush(&mut self) -> Result<(), ClientError> {
        loop {
            self.pump()?;
            if self.conn.output().is_empty() || self.write_failed || self.eof {
                return Ok(());
            }
            self.wait(None)?;
        }
    }

    // ------------------------------------------------------------------ receiving

    /// Waits for the next message, ping, pong or the close.
    pub fn recv(&mut self) -> Result<ClientEvent, ClientError> {
        loop {
            if let Some(event) = self.poll(None)? {
                return Ok(event);
            }
        }
    }

    /// Like [`Client::recv`], but gives up with [`ClientError::Timeout`] after `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<ClientEvent, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(event) = self.poll(Some(left))? {
                return Ok(event);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout);
            }
        }
    }

    /// Returns an event that is ready without waiting, if any.
    pub fn try_recv(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        self.poll(Some(Duration::ZERO))
    }

    /// Waits up to `timeout` (forever for `None`) for the next event. Returns `Ok(None)` when
    /// the time is up or the [`Client::waker`] was woken.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Option<ClientEvent>, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(event) = self.next_event_flushed()? {
                return Ok(Some(event));
            }
            self.pump()?;
            if let Some(event) = self.next_event_flushed()? {
                return Ok(Some(event));
            }
            if std::mem::take(&mut self.woken) {
                return Ok(None);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            self.wait(deadline)?;
        }
    }

    /// [`Client::next_event`], then writes what taking it queued (frames are parsed as events
    /// are taken, so a pong or the reply to a close may just have been queued).
    fn next_event_flushed(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        let event = self.next_event();
        self.flush_now();
        event
    }

    /// Turns the core's next event into what `recv` reports.
    fn next_event(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        // `Closed` is the core's last event: after it there is nothing but this answer.
        if let Some(closed) = &self.closed {
            return Err(ClientError::Closed {
                code: closed.code,
                reason: closed.reason.clone(),
            });
        }
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::Message(message) => return Ok(Some(ClientEvent::Message(message))),
                Event::Ping(payload) => return Ok(Some(ClientEvent::Ping(payload))),
                Event::Pong(payload) => return Ok(Some(ClientEvent::Pong(payload))),
                Event::Error(error) => self.failure = Some(error),
                Event::Closed(closed) => {
                    self.closed = Some(closed.clone());
                    return match self.failure.take() {
                        None => Ok(Some(ClientEvent::Closed(closed))),
                        Some(CoreError::ConnectionReset) => Err(ClientError::ConnectionReset),
                        Some(error) => Err(ClientError::Protocol(error)),
                    };
                }
                Event::Open | Event::Request(_) => {}
            }
        }
        Ok(None)
    }

    // ------------------------------------------------------------------ I/O

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Does all the I/O possible without waiting: write, read, fire due timers.
    fn pump(&mut self) -> Result<(), ClientError> {
        self.flush_now();
        self.read_now()?;
        let now = self.now();
        if self.conn.poll_timeout().is_some_and(|t| now >= t) {
            self.conn.handle_timeout(now);
        }
        // Timers and reads may have queued frames (pings, pongs, close).
        self.flush_now();
        if self.conn.is_terminated() && self.conn.output().is_empty() && !self.shut {
            self.shut = true;
            self.stream.shutdown_write();
        }
        Ok(())
    }

    fn flush_now(&mut self) {
        while !self.conn.output().is_empty() {
            if self.write_failed {
                let n = self.conn.output().len();
                self.conn.consume(n);
                return;
            }
            match self.stream.write(self.conn.output()) {
                Ok(0) => self.write_failed = true,
                Ok(n) => self.conn.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Broken pipe or reset: the server is gone; the read side reports it.
                    self.write_failed = true;
                    if !self.eof {
                        self.eof = true;
                        let now = self.now();
                        self.conn.receive_eof(now);
                    }
                }
            }
        }
        // TLS records of their own (handshake, key updates) may wait without core output.
        if !self.write_failed
            && let Err(e) = self.stream.flush_tls()
            && e.kind() != io::ErrorKind::WouldBlock
        {
            self.write_failed = true;
        }
    }

    fn read_now(&mut self) -> Result<(), ClientError> {
        // Bound one pump so a fast server cannot keep us here forever (events must get out).
        let mut budget: usize = 4 << 20;
        while !self.eof && budget > 0 {
            let buf = self.conn.recv_buf();
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    let now = self.now();
                    self.conn.receive_eof(now);
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    let now = self.now();
                    self.conn.commit(now, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.eof = true;
                    let now = self.now();
                    self.conn.receive_eof(now);
                }
            }
        }
        if budget == 0 {
            // More may be waiting and mio will not say so again: the next wait returns at once.
            self.pending_read = true;
        }
        Ok(())
    }

    /// Sleeps until the socket is ready, the waker fires, the core's next deadline or
    /// `deadline`, whichever comes first.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<(), ClientError> {
        if std::mem::take(&mut self.pending_read) {
            return Ok(());
        }
        let now = Instant::now();
        let core_deadline = self.conn.poll_timeout().map(|t| self.epoch + t);
        let until = match (core_deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = until.map(|u| {
            // Round up so we never wake a hair before a deadline and spin.
            u.saturating_duration_since(now) + Duration::from_millis(1)
        });
        if self.eof && timeout.is_none() && self.waker.is_none() {
            // Nothing can ever happen again; the caller sees the Closed event on its next pass.
            return Ok(());
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        for event in self.events.iter() {
            if event.token() == WAKER {
                self.woken = true;
            }
        }
        Ok(())
    }
}

/// The client TLS settings trusting the system store, read from disk once per process.
fn system_tls() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    static SYSTEM: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    SYSTEM
        .get_or_init(|| tls::client_config(&Trust::System))
        .clone()
        .map_err(ClientError::TlsSetup)
}

fn build_request(url: &str, options: &ClientOptions) -> Result<ClientRequest, ClientError> {
    let mut request = ClientRequest::from_url(url.trim()).map_err(ClientError::InvalidUrl)?;
    for protocol in &options.subprotocols {
        request = request.with_protocol(protocol.as_str());
    }
    if let Some(origin) = &options.origin {
        request = request.with_origin(origin.as_str());
    }
    for (name, value) in &options.headers {
        request = request.with_header(name.as_str(), value.as_str());
    }
    Ok(request)
}

/// Tries each resolved address in turn; reports the last failure.
fn connect_any(
    addrs: &[SocketAddr],
    host: &str,
    timeout: Duration,
) -> Result<(StdTcpStream, SocketAddr), ClientError> {
    let mut last = None;
    for &addr in addrs {
        match StdTcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => {
                last = Some(match e.kind() {
                    io::ErrorKind::ConnectionRefused => ClientError::ConnectionRefused { addr },
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                        ClientError::ConnectTimeout { addr }
                    }
                    _ => ClientError::Connect { addr, source: e },
                });
            }
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Resolve {
        host: host.to_string(),
        source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
    }))
}

fn handshake_error(error: CoreError) -> ClientError {
    match error {
        CoreError::Handshake(HandshakeError::UnexpectedStatus(status)) => {
            ClientError::HandshakeRejected { status }
        }
        CoreError::Handshake(e) => ClientError::Handshake(e),
        CoreError::HandshakeTimeout => ClientError::HandshakeTimeout,
        CoreError::ConnectionReset => ClientError::ConnectionReset,
        other => ClientError::Protocol(other),
    }
}
