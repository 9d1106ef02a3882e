//! One client connection: a non-blocking TCP socket registered with mio, driving a
//! `duplex_core::Connection` in the client role.
//!
//! Reads go through one buffer per worker thread ([`Connection::receive`] copies what was read
//! into the core), so a connection holds no read buffer of its own between wake-ups. WRITABLE
//! interest is registered only while output is pending (and while the TCP connect is in
//! progress).
//!
//! Over `wss://` the socket carries a rustls `ClientConnection` (buffered API): ciphertext is
//! read into rustls, the plaintext it yields goes to the core, and the core's output is written
//! into rustls, which encrypts it. The upgrade request is handed over at once and sent when the
//! TLS handshake completes.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use duplex_core::{ClientRequest, Config, Connection, Event, RandomSource};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;

/// Why a connection cannot go on; any of these ends a run with a non-zero exit.
#[derive(Debug)]
pub enum Failure {
    /// The TCP connection could not be made, or a read or write failed.
    Io(io::Error),
    /// The server refused the handshake, broke the protocol or closed the connection.
    Protocol(String),
    /// An echo differs from the message that was sent.
    Mismatch(String),
    /// A room message was lost, repeated or out of order (fanout).
    Delivery(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "I/O error: {e}"),
            Failure::Protocol(detail) => write!(f, "{detail}"),
            Failure::Mismatch(detail) => write!(f, "echo mismatch: {detail}"),
            Failure::Delivery(detail) => write!(f, "delivery check failed: {detail}"),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Where to connect and how: shared by every connection of a run.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub request: ClientRequest,
    pub config: Arc<Config>,
    /// The origin of the `now` passed to the core.
    pub epoch: Instant,
    /// wss://: the client configuration and the name the certificate must carry.
    pub tls: Option<TlsTarget>,
}

/// What every TLS connection of a run shares.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub name: ServerName<'static>,
    /// Protocol version, cipher suite and key exchange of the first handshake completed.
    pub negotiated: Arc<OnceLock<String>>,
}

impl Target {
    pub fn since_epoch(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.epoch)
    }
}

/// Masking keys for a load generator need no cryptographic strength: a xorshift generator
/// seeded once per connection keeps `getrandom` out of the per-message path.
fn fast_random(seed: u64) -> RandomSource {
    let mut x = seed | 1;
    Box::new(move |buf: &mut [u8]| {
        for chunk in buf.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    })
}

/// A seed that differs per process and per connection.
pub fn seed(index: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(index);
    h.finish()
}

#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    /// wss://: the TLS layer between the socket and the core.
    tls: Option<Box<rustls::ClientConnection>>,
    pub conn: Connection,
    connected: bool,
    writable_interest: bool,
    /// The server closed its side of TCP (or the socket failed).
    pub eof: bool,
}

impl Client {
    /// Starts a non-blocking TCP connect; the upgrade request is written once it completes.
    pub fn connect(
        target: &Target,
        seed: u64,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> Result<Client, Failure> {
        let tls = match &target.tls {
            Some(t) => Some(Box::new(
                rustls::ClientConnection::new(Arc::clone(&t.config), t.name.clone())
                    .map_err(|e| Failure::Protocol(format!("TLS setup: {e}")))?,
            )),
            None => None,
        };
        let mut stream = TcpStream::connect(target.addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let conn = Connection::client(
            target.request.clone(),
            Arc::clone(&target.config),
            fast_random(seed),
            target.since_epoch(now),
        );
        Ok(Client {
            stream,
            tls,
            conn,
            connected: false,
            writable_interest: true,
            eof: false,
        })
    }

    /// Handles a readiness event (`ready`, registered under this client's token): completes
    /// the TCP connect if needed, reads everything the socket holds (handing every event to
    /// `on_event` with the time of the read that brought it), then writes the pending output.
    ///
    /// A plain socket's read that returns less than the buffer holds has drained it: the poll
    /// is edge-triggered and reports the next bytes that arrive, so the read that would only
    /// say `WouldBlock` is skipped, as the server does (one system call per message less, in a
    /// process that is usually the bottleneck of a run). Not once the event reported the
    /// server's FIN or an error, whose edge has passed: then the socket is read until EOF or
    /// `WouldBlock`.
    pub fn service<F>(
        &mut self,
        target: &Target,
        registry: &Registry,
        ready: &mio::event::Event,
        buf: &mut [u8],
        mut on_event: F,
    ) -> Result<(), Failure>
    where
        F: FnMut(&mut Connection, Event, Instant) -> Result<(), Failure>,
    {
        let token = ready.token();
        if !self.connected && !self.finish_connect()? {
            return Ok(());
        }
        if self.tls.is_some() {
            self.read_tls(target, buf, &mut on_event)?;
            return self.flush(registry, token);
        }
        let read_to_block = ready.is_read_closed() || ready.is_error();
        while !self.eof {
            match self.stream.read(buf) {
                Ok(0) => {
                    let t = Instant::now();
                    self.eof = true;
                    self.conn.receive_eof(target.since_epoch(t));
                    self.drain(t, &mut on_event)?;
                }
                Ok(n) => {
                    let t = Instant::now();
                    self.conn.receive(target.since_epoch(t), &buf[..n]);
                    self.drain(t, &mut on_event)?;
                    if n < buf.len() && !read_to_block {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.flush(registry, token)
    }

    fn drain<F>(&mut self, t: Instant, on_event: &mut F) -> Result<(), Failure>
    where
        F: FnMut(&mut Connection, Event, Instant) -> Result<(), Failure>,
    {
        while let Some(event) = self.conn.poll_event() {
            on_event(&mut self.conn, event, t)?;
        }
        Ok(())
    }

    /// wss://: reads the ciphertext the socket holds into rustls and hands the plaintext it
    /// yields to the core (events to `on_event`, as [`Client::service`]).
    fn read_tls<F>(
        &mut self,
        target: &Target,
        buf: &mut [u8],
        on_event: &mut F,
    ) -> Result<(), Failure>
    where
        F: FnMut(&mut Connection, Event, Instant) -> Result<(), Failure>,
    {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        while !self.eof {
            let n = match tls.read_tls(&mut self.stream) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let state = tls
                .process_new_packets()
                .map_err(|e| Failure::Protocol(format!("TLS: {e}")))?;
            if !tls.is_handshaking()
                && let Some(t) = &target.tls
                && t.negotiated.get().is_none()
            {
                let _ = t.negotiated.set(describe_session(tls));
            }
            let mut pending = state.plaintext_bytes_to_read();
            while pending > 0 {
                let len = pending.min(buf.len());
                let read = tls.reader().read(&mut buf[..len])?;
                if read == 0 {
                    break;
                }
                pending -= read;
                let t = Instant::now();
                self.conn.receive(target.since_epoch(t), &buf[..read]);
                while let Some(event) = self.conn.poll_event() {
                    on_event(&mut self.conn, event, t)?;
                }
            }
            if n == 0 || state.peer_has_closed() {
                let t = Instant::now();
                self.eof = true;
                self.conn.receive_eof(target.since_epoch(t));
                while let Some(event) = self.conn.poll_event() {
                    on_event(&mut self.conn, event, t)?;
                }
            }
        }
        Ok(())
    }

    /// True once the non-blocking connect has completed.
    fn finish_connect(&mut self) -> Result<bool, Failure> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e.into());
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                self.stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes what the socket takes of the core's output.
    pub fn flush(&mut self, registry: &Registry, token: Token) -> Result<(), Failure> {
        if !self.connected {
            return Ok(());
        }
        let want_writable = if let Some(tls) = self.tls.as_mut() {
            flush_tls(&mut self.conn, tls, &mut self.stream)?;
            self.conn.buffered_amount() > 0 || tls.wants_write()
        } else {
            loop {
                let out = self.conn.output();
                if out.is_empty() {
                    break;
                }
                match self.stream.write(out) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    Ok(n) => self.conn.consume(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.conn.buffered_amount() > 0
        };
        if want_writable != self.writable_interest {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.stream, token, interest)?;
            self.writable_interest = want_writable;
        }
        Ok(())
    }

    /// Removes the socket from the poll; dropping the client then closes it.
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}

/// wss://: moves the core's output into rustls (which encrypts it, or holds it until the
/// handshake completes) and writes the ciphertext the socket takes, until either side blocks.
fn flush_tls(
    conn: &mut Connection,
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
) -> Result<(), Failure> {
    loop {
        let mut progress = false;
        loop {
            let out = conn.output();
            if out.is_empty() {
                break;
            }
            let n = tls.writer().write(out)?;
            if n == 0 {
                break;
            }
            conn.consume(n);
            progress = true;
        }
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(_) => progress = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !progress || conn.output().is_empty() {
            return Ok(());
        }
    }
}

/// "TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519": what a completed handshake settled on.
fn describe_session(tls: &rustls::ClientConnection) -> String {
    let version = tls
        .protocol_version()
        .map_or_else(|| "?".to_string(), |v| format!("{v:?}"));
    let suite = tls
        .negotiated_cipher_suite()
        .map_or_else(|| "?".to_string(), |s| format!("{:?}", s.suite()));
    let group = tls
        .negotiated_key_exchange_group()
        .map_or_else(|| "?".to_string(), |g| format!("{:?}", g.name()));
    format!("{version} {suite} {group}")
}
