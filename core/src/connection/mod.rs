//! The connection state machine: bytes in → events, calls → bytes out, time → deadlines.
//!
//! ```text
//!            server: Request event            accept()
//! Handshake ───────────────────▶ AwaitingDecision ─────────▶ Open
//!                                       │ respond_streaming()
//!                                       ▼
//!                                   Streaming ── end_body() / peer's EOF ──▶ Closed
//!     │  client: valid 101 response ──────────────────────────▲ │
//!     │                                                         │ close() / idle timeout
//!     │  bad head, timeout, EOF, respond()/reject()             ▼
//!     └──────────────────────────────────────────────▶ Closed ◀── CloseSent
//!                       peer's close frame (echoed) ───▲   ▲ peer's close reply / close timeout
//!                       protocol error (close sent) ───┘
//!
//! client, after the close handshake:
//!   ClosedAwaitingFin ── the server's FIN (EOF) / close timeout ──▶ Closed
//! ```
//!
//! Each state arms at most one stored timer (`timers::Timer`): Handshake and AwaitingDecision
//! the handshake (or keep-alive, or held-request) timer, CloseSent the close reply,
//! ClosedAwaitingFin the linger; Open derives its heartbeat and idle deadlines.
//!
//! Every transition happens in this module; `Closed` is reported exactly once through
//! [`Event::Closed`], after which nothing but the pending output is ever produced.
//!
//! The connection is one struct (here, with its constructors and accessors) whose methods are
//! grouped by concern:
//! - `upgrade`: the opening handshake (request or 101 response heads), opening;
//! - `http`: the server's decisions on a request (accept, plain HTTP answers, streaming);
//! - `recv`: the receive buffer, frames, messages, events;
//! - `send`: frames and messages out, the output buffer;
//! - `close`: the close handshake, failures, EOF, the end;
//! - `timers`: deadlines and what happens when they pass;
//! - `extension`: the per-message extension seam (permessage-deflate), from offer to codec.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::BytesMut;

use crate::handshake::client::{ClientRequest, Response};
use crate::handshake::key::generate_key;
use crate::heartbeat::Heartbeat;
use crate::limits::Config;
#[cfg(doc)]
use crate::message::Event;
use crate::utf8::Utf8Validator;

mod close;
mod extension;
mod http;
mod output;
mod queue;
mod recv;
mod send;
mod timers;
mod upgrade;

use extension::Extensions;
use output::Output;
use queue::EventQueue;
use recv::{FrameInProgress, MessageInProgress};
use send::OutgoingStream;
use timers::{Timer, TimerTable};

/// Payloads at least this large given to [`Connection::send_owned`] are queued without a
/// copy; smaller ones cost less to copy than an extra piece of output.
pub const OWNED_MIN: usize = 4096;

/// Largest emptied buffer an open connection with traffic keeps for its next message
/// ([`Config::with_buffer_keep`]); a larger one is released at once.
const KEEP_MAX: usize = 64 << 10;

/// Which end of the connection this is. Clients mask what they send; servers must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
}

/// Fills a buffer with unpredictable bytes (masking keys, `Sec-WebSocket-Key`).
/// Native and WASM drivers back it with `getrandom`; tests inject a fixed sequence.
pub type RandomSource = Box<dyn FnMut(&mut [u8]) + Send>;

/// The coarse state, as a WHATWG `WebSocket.readyState` would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Connecting,
    Open,
    Closing,
    Closed,
}

#[derive(Debug)]
enum State {
    Handshake,
    /// Server only: the request was reported; `key` is set for a valid upgrade request.
    AwaitingDecision {
        key: Option<String>,
    },
    Open,
    /// Server only: a plain HTTP request answered with a body of unknown length that the
    /// application writes over time (Server-Sent Events); ends with the connection.
    Streaming,
    CloseSent,
    /// Client only: the close handshake is done ([`Event::Closed`] reported) and the server,
    /// which closes TCP first, has not yet; waits for its FIN up to the close timeout.
    ClosedAwaitingFin,
    Closed,
}

#[derive(Debug)]
struct ClientHandshake {
    request: ClientRequest,
    key: String,
}

/// One WebSocket connection, either role, from the first handshake byte to the close.
///
/// Feed received bytes with [`Connection::receive`] (copying) or [`Connection::recv_buf`] +
/// [`Connection::commit`] (reading straight into the connection's buffer); take events from
/// [`Connection::poll_event`]; write [`Connection::output`] to the socket and
/// [`Connection::consume`] what it took; call [`Connection::handle_timeout`] when
/// [`Connection::poll_timeout`] is reached. See the crate documentation for a full example.
pub struct Connection {
    role: Role,
    config: Arc<Config>,
    state: State,
    /// The time of the last call that passed one, as nanoseconds (see [`crate::nanos`]).
    now: u64,
    random: Option<RandomSource>,
    client: Option<Box<ClientHandshake>>,
    response: Option<Box<Response>>,
    /// Boxed rather than a `String`: a connection is kept small (LESSONS: memory per
    /// connection).
    protocol: Option<Box<str>>,
    head_scanned: usize,

    /// `rx[..rx_filled]` holds received bytes; `rx[rx_filled..]` is initialised spare room
    /// lent by `recv_buf`.
    rx: BytesMut,
    rx_filled: usize,
    /// A frame whose payload spans reads (boxed: most connections have none).
    frame: Option<Box<FrameInProgress>>,
    /// A fragmented message in progress (boxed: most connections have none).
    message: Option<Box<MessageInProgress>>,
    utf8: Utf8Validator,

    tx: Output,
    stream: Option<Box<OutgoingStream>>,
    events: EventQueue,

    /// The armed timer of the current state (handshake, keep-alive, held request, close
    /// reply or linger); the heartbeat and idle deadlines follow from the fields below.
    timers: TimerTable,
    heartbeat: Option<Heartbeat>,
    /// When bytes last arrived, as nanoseconds.
    last_received: u64,
    /// The peer closed its side of TCP; acted on once the frames before it are reported.
    peer_eof: bool,
    /// Frames arrive: emptied buffers are kept for the next message until the buffer-keep
    /// deadline after the last read (`Timer::BufferKeep`) releases them.
    warm: bool,
    /// Changes whenever the next deadline may have moved earlier ([`Connection::timers_version`]).
    timers_version: u32,
    /// The per-message extension (permessage-deflate), offered or agreed.
    extensions: Extensions,
}

impl core::fmt::Debug for Connection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("received", &self.rx_filled)
            .field("buffered_amount", &self.tx.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The time of the last call that passed one.
    fn clock(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    /// A server connection waiting for the client's upgrade request.
    pub fn server(config: impl Into<Arc<Config>>, now: Duration) -> Connection {
        Connection::new(Role::Server, config.into(), None, State::Handshake, now)
    }

    /// A client connection whose upgrade request is already in [`Connection::output`].
    pub fn client(
        request: ClientRequest,
        config: impl Into<Arc<Config>>,
        mut random: RandomSource,
        now: Duration,
    ) -> Connection {
        let config = config.into();
        let mut request = request;
        Extensions::offer(&config, &mut request);
        let mut nonce = [0u8; 16];
        random(&mut nonce);
        let key = generate_key(nonce);
        let mut head = Vec::new();
        request.write(&key, &mut head);
        let mut conn = Connection::new(Role::Client, config, Some(random), State::Handshake, now);
        conn.tx.extend_from_slice(&head);
        conn.client = Some(Box::new(ClientHandshake { request, key }));
        conn
    }

    /// A connection whose HTTP upgrade was done elsewhere (an HTTP server's upgrade hook, the
    /// browser's own `WebSocket`): it starts open. `random` is required for the client role.
    pub fn upgraded(
        role: Role,
        config: impl Into<Arc<Config>>,
        random: Option<RandomSource>,
        now: Duration,
    ) -> Connection {
        let mut conn = Connection::new(role, config.into(), random, State::Open, now);
        conn.timers.stop(Timer::Handshake);
        conn.start_heartbeat();
        conn
    }

    fn new(
        role: Role,
        config: Arc<Config>,
        random: Option<RandomSource>,
        state: State,
        now: Duration,
    ) -> Connection {
        let timers = TimerTable::new(config.handshake_timeout.map(|t| now + t));
        Connection {
            role,
            timers,
            config,
            state,
            now: crate::nanos(now),
            random,
            client: None,
            response: None,
            protocol: None,
            head_scanned: 0,
            rx: BytesMut::new(),
            rx_filled: 0,
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            tx: Output::new(),
            stream: None,
            events: EventQueue::new(),
            heartbeat: None,
            last_received: crate::nanos(now),
            peer_eof: false,
            warm: false,
            timers_version: 0,
            extensions: Extensions::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn state(&self) -> ConnectionState {
        match self.state {
            State::Handshake | State::AwaitingDecision { .. } => ConnectionState::Connecting,
            State::Open | State::Streaming => ConnectionState::Open,
            State::CloseSent => ConnectionState::Closing,
            State::ClosedAwaitingFin | State::Closed => ConnectionState::Closed,
        }
    }

    #[inline]
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Client role: the server's 101 response, once open.
    pub fn response(&self) -> Option<&Response> {
        self.response.as_deref()
    }

    /// True once the driver should close the socket (after writing the pending output).
    /// A server closes TCP right after the close handshake; a client waits for the server to
    /// do so, up to the close timeout.
    #[inline]
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Closed)
    }
}

#[cfg(test)]
mod owned_tests;
#[cfg(test)]
mod tests;
