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
//! ```
//!
//! Every transition happens in this file; `Closed` is reported exactly once through
//! [`Event::Closed`], after which nothing but the pending output is ever produced.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame, encode_close_payload, parse_close_payload};
use crate::error::{Error, ProtocolError, SendError};
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode};
use crate::handshake::client::{ClientRequest, Response};
use crate::handshake::key::generate_key;
use crate::handshake::server::{
    Accept, Request, write_accept_response, write_error_response, write_response,
    write_response_keep_alive, write_streaming_head,
};
use crate::handshake::{HandshakeError, find_head_end};
use crate::heartbeat::{Heartbeat, HeartbeatAction};
use crate::limits::Config;
use crate::mask::{apply_mask, apply_mask_at};
use crate::message::{Closed, Event, Message, MessageKind, PreparedMessage, Utf8Bytes};
use crate::utf8::Utf8Validator;

mod output;
mod queue;
use output::Output;
use queue::EventQueue;

/// Payloads at least this large given to [`Connection::send_owned`] are queued without a
/// copy; smaller ones cost less to copy than an extra piece of output.
pub const OWNED_MIN: usize = 4096;

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

/// Largest window [`Connection::recv_buf`] lends at once, even when a larger frame is pending.
const MAX_READ_WINDOW: usize = 1 << 20;
/// Longest close reason we put on the wire (a control payload holds 125 bytes, 2 are the code).
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

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
    Closed,
}

#[derive(Debug)]
struct ClientHandshake {
    request: ClientRequest,
    key: String,
}

/// A frame whose header has been read and whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct FrameInProgress {
    header: FrameHeader,
    len: usize,
    /// Payload bytes already unmasked and validated, at the front of the receive buffer.
    processed: usize,
    text: bool,
}

#[derive(Debug)]
struct MessageInProgress {
    kind: MessageKind,
    data: BytesMut,
    /// permessage-deflate: `data` holds the inflated bytes so far.
    compressed: bool,
}

#[derive(Debug)]
struct OutgoingStream {
    kind: MessageKind,
    started: bool,
    utf8: Utf8Validator,
    compressed: bool,
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
    now: Duration,
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

    /// The deadline of the current state: the handshake (Handshake, AwaitingDecision), the
    /// peer's close reply (CloseSent), or, for a client after a clean close, the wait for the
    /// server to close TCP (Closed). One field: only one applies at a time.
    deadline: Option<Duration>,
    heartbeat: Option<Heartbeat>,
    last_received: Duration,
    /// The peer closed its side of TCP; acted on once the frames before it are reported.
    peer_eof: bool,
    /// Server: a plain HTTP request was answered with keep-alive; an idle wait for the next
    /// one ends quietly rather than as a handshake timeout.
    kept_alive: bool,
    /// permessage-deflate, once negotiated.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<crate::deflate::Codec>>,
    /// Server: the answer to the client's deflate offers, applied by `accept`.
    #[cfg(feature = "deflate")]
    deflate_offer: Option<
        Box<(
            crate::deflate::DeflateParams,
            crate::handshake::ExtensionOffer,
        )>,
    >,
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
        #[cfg(feature = "deflate")]
        let request = {
            let mut request = request;
            if let Some(deflate) = &config.deflate {
                let offered = request.extensions.iter().any(|e| {
                    e.name
                        .eq_ignore_ascii_case(crate::deflate::PERMESSAGE_DEFLATE)
                });
                if !offered {
                    request.extensions.extend(deflate.offers());
                }
            }
            request
        };
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
        conn.deadline = None;
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
        Connection {
            role,
            deadline: config.handshake_timeout.map(|t| now + t),
            config,
            state,
            now,
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
            last_received: now,
            peer_eof: false,
            kept_alive: false,
            #[cfg(feature = "deflate")]
            deflate: None,
            #[cfg(feature = "deflate")]
            deflate_offer: None,
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
            State::Closed => ConnectionState::Closed,
        }
    }

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
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Closed) && self.deadline.is_none()
    }

    // ---------------------------------------------------------------- receiving

    /// Received bytes buffered and not yet reported (a partial frame, or frames waiting for
    /// [`Connection::poll_event`]).
    pub fn received_len(&self) -> usize {
        self.rx_filled
    }

    /// Payload bytes the frame being received still misses (0 between frames). A driver that
    /// reads into its own buffer can switch to [`Connection::recv_buf`] when this is large, so
    /// a big frame lands in place without a copy.
    pub fn frame_remaining(&self) -> usize {
        self.frame
            .as_ref()
            .map_or(0, |f| f.len.saturating_sub(self.rx_filled))
    }

    /// Lends the spare room of the receive buffer for one read. Its size adapts to the frame
    /// in progress so a large frame arrives in few reads. Follow with [`Connection::commit`].
    pub fn recv_buf(&mut self) -> &mut [u8] {
        let missing = self.frame_remaining();
        let window = missing.clamp(
            self.config.read_chunk,
            MAX_READ_WINDOW.max(self.config.read_chunk),
        );
        let needed = self.rx_filled + window;
        if self.rx.len() < needed {
            self.rx.resize(needed, 0);
        }
        &mut self.rx[self.rx_filled..]
    }

    /// Records that the last read put `n` bytes into [`Connection::recv_buf`], then processes them.
    pub fn commit(&mut self, now: Duration, n: usize) {
        let n = n.min(self.rx.len() - self.rx_filled);
        self.rx_filled += n;
        self.after_receive(now, n);
    }

    /// Copies received bytes in and processes them.
    pub fn receive(&mut self, now: Duration, data: &[u8]) {
        self.rx.truncate(self.rx_filled);
        self.rx.extend_from_slice(data);
        self.rx_filled += data.len();
        self.after_receive(now, data.len());
    }

    /// The peer closed its side of TCP (a read returned 0). Frames received before it are
    /// still reported first.
    pub fn receive_eof(&mut self, now: Duration) {
        self.now = now;
        self.peer_eof = true;
        if self.events.is_empty() {
            self.process();
        }
        self.apply_eof();
    }

    /// Acts on the peer's EOF once every complete frame before it has been reported.
    fn apply_eof(&mut self) {
        if !self.peer_eof || !self.events.is_empty() {
            return;
        }
        if matches!(self.state, State::Closed) {
            self.deadline = None;
        } else if matches!(self.state, State::Streaming) {
            // The reader of a streamed response left: its normal end.
            self.finish(CloseCode::Normal, "reader left".into(), true, true);
        } else {
            self.events.push_back(Event::Error(Error::ConnectionReset));
            self.finish(CloseCode::Abnormal, "connection reset".into(), false, false);
        }
    }

    fn after_receive(&mut self, now: Duration, n: usize) {
        self.now = now;
        if n > 0 {
            self.last_received = now;
        }
        self.process();
    }

    /// Consumes as much of the receive buffer as the current state allows.
    fn process(&mut self) {
        loop {
            match self.state {
                State::Handshake => {
                    if !self.process_handshake() {
                        break;
                    }
                }
                State::Open | State::CloseSent => {
                    self.process_frames();
                    break;
                }
                State::AwaitingDecision { .. } => break,
                State::Streaming | State::Closed => {
                    // Nothing after the end is ever looked at.
                    self.rx_filled = 0;
                    break;
                }
            }
        }
        if self.rx_filled == 0 {
            // An idle connection keeps no receive buffer (LESSONS: memory per connection).
            self.rx = BytesMut::new();
        }
    }

    /// Returns true when the handshake advanced and more bytes may be processed.
    fn process_handshake(&mut self) -> bool {
        let max = self.config.max_head_size;
        let head_end = find_head_end(&self.rx[..self.rx_filled], &mut self.head_scanned);
        let end = match head_end {
            Some(end) if end <= max => end,
            Some(_) => {
                self.fail_handshake(HandshakeError::HeadTooLarge(max));
                return false;
            }
            None if self.rx_filled > max => {
                self.fail_handshake(HandshakeError::HeadTooLarge(max));
                return false;
            }
            None => return false,
        };
        let head = self.rx.split_to(end);
        self.rx_filled -= end;
        self.head_scanned = 0;
        match self.role {
            Role::Server => self.on_request_head(&head),
            Role::Client => self.on_response_head(&head),
        }
    }

    fn on_request_head(&mut self, head: &[u8]) -> bool {
        let request = match Request::parse(head) {
            Ok(r) => r,
            Err(e) => {
                self.fail_handshake(e);
                return false;
            }
        };
        let key = if request.is_websocket_upgrade() {
            match request.validate_upgrade() {
                Ok(key) => {
                    #[cfg(feature = "deflate")]
                    if let (Some(policy), Ok(offers)) = (&self.config.deflate, request.extensions())
                    {
                        self.deflate_offer =
                            crate::deflate::negotiate(&offers, policy).map(Box::new);
                    }
                    Some(key.to_string())
                }
                Err(e) => {
                    self.fail_handshake(e);
                    return false;
                }
            }
        } else {
            None
        };
        self.state = State::AwaitingDecision { key };
        self.events.push_back(Event::Request(Box::new(request)));
        false
    }

    fn on_response_head(&mut self, head: &[u8]) -> bool {
        let Some(client) = self.client.take() else {
            return false;
        };
        match Response::parse(head, &client.key, &client.request) {
            Ok(response) => {
                #[cfg(feature = "deflate")]
                if let Err(e) = self.accept_deflate_response(&response) {
                    self.fail_handshake(e);
                    return false;
                }
                self.protocol = response.protocol.as_deref().map(Box::from);
                self.response = Some(Box::new(response));
                self.open();
                true
            }
            Err(e) => {
                self.fail_handshake(e);
                false
            }
        }
    }

    #[cfg(feature = "deflate")]
    fn accept_deflate_response(&mut self, response: &Response) -> Result<(), HandshakeError> {
        let mut accepted = response.extensions.iter().filter(|e| {
            e.name
                .eq_ignore_ascii_case(crate::deflate::PERMESSAGE_DEFLATE)
        });
        let Some(ext) = accepted.next() else {
            return Ok(());
        };
        if accepted.next().is_some() {
            return Err(HandshakeError::InvalidHeader {
                name: "Sec-WebSocket-Extensions",
                reason: "permessage-deflate accepted twice",
            });
        }
        // We only offer what the config says; Response::parse refused unoffered extensions.
        let policy = self.config.deflate.clone().unwrap_or_default();
        let params = crate::deflate::accept_response(ext, &policy)?;
        self.deflate = Some(Box::new(crate::deflate::Codec::new(params, false, &policy)));
        Ok(())
    }

    fn fail_handshake(&mut self, error: HandshakeError) {
        if self.role == Role::Server {
            let mut out = Vec::new();
            write_error_response(&error, &mut out);
            self.tx.extend_from_slice(&out);
        }
        let reason = error.to_string();
        self.events.push_back(Event::Error(Error::Handshake(error)));
        self.finish(CloseCode::Abnormal, reason, false, false);
    }

    fn open(&mut self) {
        self.state = State::Open;
        self.deadline = None;
        self.last_received = self.now;
        self.start_heartbeat();
        self.events.push_back(Event::Open);
    }

    fn start_heartbeat(&mut self) {
        self.heartbeat = self
            .config
            .ping_interval
            .map(|i| Heartbeat::new(i, self.config.max_missed_pongs, self.now));
    }

    fn process_frames(&mut self) {
        while matches!(self.state, State::Open | State::CloseSent) {
            if !self.events.is_empty() {
                // One event at a time: the application answers a message before a later frame
                // can fail or close the connection, so replies keep the order of the requests.
                // `poll_event` resumes the parsing once the queue is empty.
                return;
            }
            let mut frame = match self.frame.take() {
                Some(frame) => *frame,
                None => match FrameHeader::decode(&self.rx[..self.rx_filled]) {
                    Ok(None) => return,
                    Err(e) => return self.fail(e.into()),
                    Ok(Some((header, header_len))) => match self.start_frame(header) {
                        Ok(frame) => {
                            self.rx.advance(header_len);
                            self.rx_filled -= header_len;
                            frame
                        }
                        Err(e) => return self.fail(e),
                    },
                },
            };
            let available = self.rx_filled.min(frame.len);
            if available > frame.processed {
                let fresh = &mut self.rx[frame.processed..available];
                if let Some(key) = frame.header.mask {
                    apply_mask_at(fresh, key, frame.processed);
                }
                if frame.text {
                    if let Err(e) = self.utf8.feed(fresh) {
                        return self.fail(e.into());
                    }
                }
                frame.processed = available;
            }
            if available < frame.len {
                self.frame = Some(Box::new(frame));
                return;
            }
            self.frame = None;
            let payload = self.rx.split_to(frame.len);
            self.rx_filled -= frame.len;
            self.on_frame(frame.header, payload);
        }
    }

    /// Judges a header before any of its payload is buffered.
    fn start_frame(&mut self, header: FrameHeader) -> Result<FrameInProgress, Error> {
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame.into()),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame.into()),
            _ => {}
        }
        // RSV1 marks the first frame of a compressed message, once permessage-deflate is agreed.
        let rsv1_allowed =
            self.compression_agreed() && matches!(header.opcode, OpCode::Text | OpCode::Binary);
        if header.rsv2 || header.rsv3 || (header.rsv1 && !rsv1_allowed) {
            return Err(ProtocolError::ReservedBits.into());
        }
        let max_frame = self.config.max_frame_size;
        if header.payload_len > max_frame as u64 {
            return Err(Error::FrameTooLarge {
                size: header.payload_len,
                max: max_frame,
            });
        }
        let len = header.payload_len as usize;
        let text = match header.opcode {
            OpCode::Continuation => match &self.message {
                Some(m) => m.kind == MessageKind::Text,
                None => return Err(ProtocolError::UnexpectedContinuation.into()),
            },
            OpCode::Text | OpCode::Binary if self.message.is_some() => {
                return Err(ProtocolError::ExpectedContinuation.into());
            }
            OpCode::Text => {
                self.utf8.reset();
                true
            }
            _ => false,
        };
        let compressed = match header.opcode {
            OpCode::Continuation => self.message.as_ref().is_some_and(|m| m.compressed),
            _ => header.rsv1,
        };
        // A compressed message is validated and measured once inflated.
        let text = text && !compressed;
        if header.opcode.is_data() && !compressed {
            let so_far = self.message.as_ref().map_or(0, |m| m.data.len());
            let total = so_far as u64 + header.payload_len;
            if total > self.config.max_message_size as u64 {
                return Err(Error::MessageTooLarge {
                    size: total,
                    max: self.config.max_message_size,
                });
            }
        }
        Ok(FrameInProgress {
            header,
            len,
            processed: 0,
            text,
        })
    }

    fn compression_agreed(&self) -> bool {
        #[cfg(feature = "deflate")]
        return self.deflate.is_some();
        #[cfg(not(feature = "deflate"))]
        return false;
    }

    /// Inflates one frame of a compressed message onto the message so far, validating text as
    /// it comes out. `Err` has already failed the connection.
    #[cfg(feature = "deflate")]
    fn inflate_frame(
        &mut self,
        kind: MessageKind,
        fin: bool,
        payload: &[u8],
        mut data: BytesMut,
    ) -> Result<BytesMut, ()> {
        use crate::deflate::InflateFailure;
        let max = self.config.max_message_size;
        let before = data.len();
        let Some(codec) = self.deflate.as_mut() else {
            self.fail(ProtocolError::ReservedBits.into());
            return Err(());
        };
        match codec.decompress(payload, fin, &mut data, max) {
            Ok(()) => {}
            Err(InflateFailure::TooLarge) => {
                codec.release();
                self.fail(Error::MessageTooLarge {
                    size: data.len() as u64,
                    max,
                });
                return Err(());
            }
            Err(InflateFailure::Invalid) => {
                codec.release();
                self.fail(Error::InvalidCompressedData);
                return Err(());
            }
        }
        if kind == MessageKind::Text {
            if let Err(e) = self.utf8.feed(&data[before..]) {
                self.fail(e.into());
                return Err(());
            }
        }
        Ok(data)
    }

    fn on_frame(&mut self, header: FrameHeader, payload: BytesMut) {
        match header.opcode {
            OpCode::Ping => {
                if matches!(self.state, State::Open) {
                    self.write_frame(true, OpCode::Pong, &payload);
                }
                self.events.push_back(Event::Ping(payload.freeze()));
            }
            OpCode::Pong => {
                if let Some(hb) = &mut self.heartbeat {
                    hb.on_pong();
                }
                self.events.push_back(Event::Pong(payload.freeze()));
            }
            OpCode::Close => self.on_close_frame(&payload),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let kind = match header.opcode {
                    OpCode::Text => MessageKind::Text,
                    OpCode::Binary => MessageKind::Binary,
                    _ => match &self.message {
                        Some(m) => m.kind,
                        None => return,
                    },
                };
                let compressed = match header.opcode {
                    OpCode::Continuation => self.message.as_ref().is_some_and(|m| m.compressed),
                    _ => header.rsv1,
                };
                let data = if compressed {
                    #[cfg(feature = "deflate")]
                    {
                        let so_far = self.message.take().map(|m| m.data).unwrap_or_default();
                        match self.inflate_frame(kind, header.fin, &payload, so_far) {
                            Ok(data) => data,
                            Err(()) => return,
                        }
                    }
                    #[cfg(not(feature = "deflate"))]
                    return self.fail(ProtocolError::ReservedBits.into());
                } else {
                    match self.message.take() {
                        None => payload,
                        Some(mut m) => {
                            m.data.extend_from_slice(&payload);
                            m.data
                        }
                    }
                };
                if !header.fin {
                    self.message = Some(Box::new(MessageInProgress {
                        kind,
                        data,
                        compressed,
                    }));
                    return;
                }
                let message = match kind {
                    MessageKind::Binary => Message::Binary(data.freeze()),
                    MessageKind::Text => {
                        if let Err(e) = self.utf8.finish() {
                            return self.fail(e.into());
                        }
                        Message::Text(Utf8Bytes::from_validated(data.freeze()))
                    }
                };
                self.events.push_back(Event::Message(message));
            }
        }
    }

    fn on_close_frame(&mut self, payload: &[u8]) {
        let frame = match parse_close_payload(payload) {
            Ok(frame) => frame,
            Err(e) => return self.fail(e.into()),
        };
        let (code, reason) = match frame {
            Some(CloseFrame { code, reason }) => (code, reason),
            None => (CloseCode::NoStatus, String::new()),
        };
        let initiated_by_peer = matches!(self.state, State::Open);
        if initiated_by_peer {
            // Echo the peer's code (RFC 6455 §5.5.1); an empty close gets an empty close.
            let mut reply = Vec::with_capacity(2);
            if code != CloseCode::NoStatus {
                reply.extend_from_slice(&code.as_u16().to_be_bytes());
            }
            self.write_frame(true, OpCode::Close, &reply);
        }
        self.finish(code, reason, true, initiated_by_peer);
        if self.role == Role::Client {
            // The server closes TCP first; wait for it, but not forever.
            self.deadline = Some(self.now + self.config.close_timeout);
        }
    }

    /// Fails the connection: one close frame with the error's code, then Closed.
    fn fail(&mut self, error: Error) {
        let code = error.close_code();
        let reason = truncate_reason(error.to_string());
        if matches!(self.state, State::Open) && code.is_valid_on_wire() {
            let mut payload = Vec::with_capacity(2 + reason.len());
            if encode_close_payload(code, &reason, &mut payload).is_ok() {
                self.write_frame(true, OpCode::Close, &payload);
            }
        }
        self.events.push_back(Event::Error(error));
        self.finish(code, reason, false, false);
    }

    fn finish(&mut self, code: CloseCode, reason: String, clean: bool, initiated_by_peer: bool) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.state = State::Closed;
        self.frame = None;
        self.message = None;
        self.stream = None;
        self.heartbeat = None;
        self.deadline = None;
        self.client = None;
        self.rx_filled = 0;
        #[cfg(feature = "deflate")]
        {
            self.deflate = None;
            self.deflate_offer = None;
        }
        self.events.push_back(Event::Closed(Closed {
            code,
            reason,
            clean,
            initiated_by_peer,
        }));
    }

    // ---------------------------------------------------------------- events and output

    /// The next event, if any.
    ///
    /// Received frames are parsed as events are taken: one message (or ping, pong, close) is
    /// decoded, and the next only once the queue is empty again. The application thus answers
    /// each message before a later frame can fail or close the connection, and a driver must
    /// take events until `None` after each receive.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.events.is_empty() && self.rx_filled > 0 {
            self.process();
        }
        self.apply_eof();
        self.events.pop_front()
    }

    /// Bytes waiting to be written to the socket: the first contiguous piece of them. After
    /// [`Connection::send_owned`] the output may come in several pieces (see
    /// [`Connection::output_vectored`]); after other sends it is one piece.
    pub fn output(&self) -> &[u8] {
        self.tx.front()
    }

    /// Fills `out` with the pending output's pieces, in order, for a vectored write; returns
    /// how many slots it filled (all pieces when `out` is long enough).
    pub fn output_vectored<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        self.tx.vectored(out)
    }

    /// Records that the socket took the first `n` bytes of the pending output (across pieces
    /// after a vectored write). `consume(buffered_amount())` discards all of it.
    pub fn consume(&mut self, n: usize) {
        self.tx.consume(n);
    }

    /// Takes the first piece of the pending output, for drivers that queue `Bytes`; all of it
    /// when it is one piece.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.tx.take()
    }

    /// Bytes queued but not yet taken by the driver (the WHATWG `bufferedAmount`).
    pub fn buffered_amount(&self) -> usize {
        self.tx.len()
    }

    // ---------------------------------------------------------------- server decisions

    /// Accepts the upgrade request reported by [`Event::Request`]: queues the 101 response and
    /// opens the connection. Frames the client sent right after its request are processed now.
    pub fn accept(&mut self, accept: Accept) -> Result<(), SendError> {
        let State::AwaitingDecision { key: Some(key) } = &self.state else {
            return Err(SendError::NotOpen);
        };
        #[cfg(feature = "deflate")]
        let accept = {
            let mut accept = accept;
            let app_chose = accept.extensions.iter().any(|e| {
                e.name
                    .eq_ignore_ascii_case(crate::deflate::PERMESSAGE_DEFLATE)
            });
            if let (false, Some(offer), Some(policy)) =
                (app_chose, self.deflate_offer.take(), &self.config.deflate)
            {
                let (params, response) = *offer;
                accept.extensions.push(response);
                self.deflate = Some(Box::new(crate::deflate::Codec::new(params, true, policy)));
            }
            accept
        };
        let mut out = Vec::new();
        write_accept_response(key, &accept, &mut out);
        self.tx.extend_from_slice(&out);
        self.protocol = accept.protocol.map(String::into_boxed_str);
        self.open();
        self.process();
        Ok(())
    }

    /// Answers the request reported by [`Event::Request`] with a plain HTTP response (a
    /// refused upgrade, `/healthz`, a page) and ends the connection.
    pub fn respond(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { .. }) {
            return Err(SendError::NotOpen);
        }
        let mut out = Vec::new();
        write_response(status, headers, body, &mut out);
        self.tx.extend_from_slice(&out);
        let reason = alloc::format!("answered with HTTP {status}");
        self.finish(CloseCode::Abnormal, reason, false, false);
        Ok(())
    }

    /// Answers the plain HTTP request reported by [`Event::Request`] with a body of unknown
    /// length (no `Content-Length`, `Connection: close`), written later with
    /// [`Connection::send_body`] and ended with [`Connection::end_body`] (Server-Sent Events,
    /// streamed downloads). The state is then `Open` for [`Connection::state`] and
    /// [`Connection::is_streaming`] is true; no timeout applies (the application ends the
    /// stream), bytes the client sends are ignored, and its EOF ends the stream with
    /// [`Event::Closed`] (code 1000, `initiated_by_peer`).
    pub fn respond_streaming(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
    ) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { key: None }) {
            return Err(SendError::NotOpen);
        }
        let mut out = Vec::new();
        write_streaming_head(status, headers, &mut out);
        self.tx.extend_from_slice(&out);
        self.state = State::Streaming;
        self.deadline = None;
        self.rx_filled = 0;
        self.process();
        if self.peer_eof {
            self.apply_eof();
        }
        Ok(())
    }

    /// A response started by [`Connection::respond_streaming`] is being written.
    pub fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming)
    }

    /// Queues more of a streamed response's body.
    pub fn send_body(&mut self, data: &[u8]) -> Result<(), SendError> {
        if !matches!(self.state, State::Streaming) {
            return Err(SendError::NotOpen);
        }
        self.tx.extend_from_slice(data);
        Ok(())
    }

    /// Ends a streamed response: the connection closes once the output is written.
    pub fn end_body(&mut self) -> Result<(), SendError> {
        if !matches!(self.state, State::Streaming) {
            return Err(SendError::NotOpen);
        }
        self.finish(CloseCode::Normal, "response complete".into(), true, false);
        Ok(())
    }

    /// Lets the answer to the plain HTTP request reported by [`Event::Request`] wait up to
    /// `timeout` from now instead of the handshake timeout (a long poll held until there is
    /// something to answer).
    pub fn hold_request(&mut self, timeout: Duration) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { key: None }) {
            return Err(SendError::NotOpen);
        }
        self.deadline = Some(self.now + timeout);
        Ok(())
    }

    /// The bytes received after the head of the plain HTTP request reported by
    /// [`Event::Request`] (its body, and whatever the client pipelined after it); empty once
    /// the request is answered.
    pub fn request_body(&self) -> &[u8] {
        match self.state {
            State::AwaitingDecision { key: None } => &self.rx[..self.rx_filled],
            _ => &[],
        }
    }

    /// Queues `HTTP/1.1 100 Continue` for a plain HTTP request that asked for it
    /// (`Expect: 100-continue`) before sending its body.
    pub fn continue_request(&mut self) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { key: None }) {
            return Err(SendError::NotOpen);
        }
        self.tx.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        Ok(())
    }

    /// Answers the plain HTTP request reported by [`Event::Request`] with `Connection:
    /// keep-alive` and waits for the next request on the same connection: the first `consumed`
    /// bytes of [`Connection::request_body`] (the request's body) are dropped, and what follows
    /// them is parsed as the next request (pipelining). The wait for it is bounded by the
    /// handshake timeout. Upgrade requests cannot be answered this way.
    pub fn respond_and_continue(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        consumed: usize,
    ) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { key: None }) {
            return Err(SendError::NotOpen);
        }
        let mut out = Vec::new();
        write_response_keep_alive(status, headers, body, &mut out);
        self.tx.extend_from_slice(&out);
        let consumed = consumed.min(self.rx_filled);
        self.rx.advance(consumed);
        self.rx_filled -= consumed;
        self.head_scanned = 0;
        self.state = State::Handshake;
        self.kept_alive = true;
        self.deadline = self.config.handshake_timeout.map(|t| self.now + t);
        self.process();
        if self.peer_eof {
            self.apply_eof();
        }
        Ok(())
    }

    /// Refuses an upgrade request with an HTTP status and a body that says why.
    pub fn reject(&mut self, status: u16, body: &str) -> Result<(), SendError> {
        self.respond(
            status,
            &[("Content-Type", "text/plain; charset=utf-8")],
            body.as_bytes(),
        )
    }

    // ---------------------------------------------------------------- sending

    fn check_open(&self) -> Result<(), SendError> {
        if matches!(self.state, State::Open) {
            Ok(())
        } else {
            Err(SendError::NotOpen)
        }
    }

    fn check_data_send(&self) -> Result<(), SendError> {
        self.check_open()?;
        if self.stream.is_some() {
            return Err(SendError::StreamInProgress);
        }
        Ok(())
    }

    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.check_data_send()?;
        self.write_message(OpCode::Text, text.as_bytes());
        Ok(())
    }

    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.check_data_send()?;
        self.write_message(OpCode::Binary, data);
        Ok(())
    }

    pub fn send(&mut self, message: &Message) -> Result<(), SendError> {
        match message {
            Message::Text(t) => {
                self.check_data_send()?;
                self.write_message(OpCode::Text, t.as_bytes());
                Ok(())
            }
            Message::Binary(b) => self.send_binary(b),
        }
    }

    /// Sends a message the caller gives away. A server queues a large payload (at least
    /// [`OWNED_MIN`] bytes, or its compressed form) as it is, without copying it, so the
    /// output then comes in pieces: write them with [`Connection::output_vectored`], or one
    /// [`Connection::output`] at a time. Otherwise the same as [`Connection::send`].
    pub fn send_owned(&mut self, message: Message) -> Result<(), SendError> {
        self.check_data_send()?;
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        #[cfg(feature = "deflate")]
        if let Some(codec) = self.deflate.as_mut() {
            if codec.should_compress(payload.len()) {
                let mut out = Vec::with_capacity(payload.len() / 2 + 16);
                codec.compress(&payload, true, &mut out);
                self.write_frames_owned(opcode, Bytes::from(out), true);
                return Ok(());
            }
        }
        self.write_frames_owned(opcode, payload, false);
        Ok(())
    }

    /// Sends a message prepared once for many connections (a broadcast). Connections that
    /// compress each message afresh with the same window and level share one compressed copy,
    /// kept in `message`; the others compress (or not) as [`Connection::send`] would. A server
    /// queues a large payload (or shared compressed copy) without copying it, as
    /// [`Connection::send_owned`] does: the output may then come in pieces.
    pub fn send_prepared(&mut self, message: &mut PreparedMessage) -> Result<(), SendError> {
        self.check_data_send()?;
        let opcode = match message.kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        #[cfg(feature = "deflate")]
        if let Some(codec) = self.deflate.as_mut()
            && codec.should_compress(message.payload.len())
        {
            let Some(key) = codec.shared_key() else {
                self.write_message(opcode, &message.payload);
                return Ok(());
            };
            let index = match message.compressed.iter().position(|(k, _)| *k == key) {
                Some(index) => index,
                None => {
                    let mut out = Vec::with_capacity(message.payload.len() / 2 + 16);
                    codec.compress(&message.payload, true, &mut out);
                    message.compressed.push((key, Bytes::from(out)));
                    message.compressed.len() - 1
                }
            };
            // Shared, not copied, by every connection when large (see `send_owned`).
            let compressed = message.compressed[index].1.clone();
            self.write_frames_owned(opcode, compressed, true);
            return Ok(());
        }
        self.write_frames_owned(opcode, message.payload.clone(), false);
        Ok(())
    }

    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// An unsolicited pong (a one-way heartbeat, RFC 6455 §5.5.3).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        self.check_open()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlPayloadTooLong(payload.len()));
        }
        self.write_frame(true, opcode, payload);
        Ok(())
    }

    /// Starts the close handshake. The connection reports [`Event::Closed`] when the peer
    /// answers, or after the close timeout.
    ///
    /// [`CloseCode::NoStatus`] with an empty reason sends a close frame without a status code
    /// (what a browser's `close()` without arguments does); with a reason it is refused.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.check_open()?;
        let mut payload = Vec::with_capacity(2 + reason.len());
        if !(code == CloseCode::NoStatus && reason.is_empty()) {
            encode_close_payload(code, reason, &mut payload)?;
        }
        self.write_frame(true, OpCode::Close, &payload);
        self.state = State::CloseSent;
        self.stream = None;
        self.heartbeat = None;
        self.deadline = Some(self.now + self.config.close_timeout);
        Ok(())
    }

    /// Starts a message sent in pieces, for messages too large to hold at once.
    pub fn begin_message(&mut self, kind: MessageKind) -> Result<(), SendError> {
        self.check_data_send()?;
        #[cfg(feature = "deflate")]
        let compressed = self
            .deflate
            .as_ref()
            .is_some_and(|c| c.compresses_streams());
        #[cfg(not(feature = "deflate"))]
        let compressed = false;
        self.stream = Some(Box::new(OutgoingStream {
            kind,
            started: false,
            utf8: Utf8Validator::new(),
            compressed,
        }));
        Ok(())
    }

    /// Sends the next piece of the streamed message as one frame. Text may be split anywhere,
    /// even inside a character; the whole must be UTF-8.
    pub fn send_fragment(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.stream_piece(data, false)
    }

    /// Sends the last piece and ends the streamed message.
    pub fn finish_message(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.stream_piece(data, true)
    }

    fn stream_piece(&mut self, data: &[u8], fin: bool) -> Result<(), SendError> {
        self.check_open()?;
        let stream = self.stream.as_mut().ok_or(SendError::NoStreamInProgress)?;
        if stream.kind == MessageKind::Text {
            // Judge a copy so a refused piece leaves the stream as it was.
            let mut utf8 = stream.utf8.clone();
            utf8.feed(data).map_err(|_| SendError::InvalidUtf8)?;
            if fin {
                utf8.finish().map_err(|_| SendError::InvalidUtf8)?;
            }
            stream.utf8 = utf8;
        }
        let opcode = match (stream.started, stream.kind) {
            (true, _) => OpCode::Continuation,
            (false, MessageKind::Text) => OpCode::Text,
            (false, MessageKind::Binary) => OpCode::Binary,
        };
        let first = !stream.started;
        stream.started = true;
        let compressed = stream.compressed;
        if fin {
            self.stream = None;
        }
        #[cfg(feature = "deflate")]
        if compressed {
            if let Some(codec) = self.deflate.as_mut() {
                let mut out = Vec::with_capacity(data.len() / 2 + 16);
                codec.compress(data, fin, &mut out);
                self.write_frame_rsv(fin, first, opcode, &out);
                return Ok(());
            }
        }
        let _ = (first, compressed);
        self.write_frame(fin, opcode, data);
        Ok(())
    }

    fn write_message(&mut self, opcode: OpCode, payload: &[u8]) {
        #[cfg(feature = "deflate")]
        if let Some(codec) = self.deflate.as_mut() {
            if codec.should_compress(payload.len()) {
                let mut out = Vec::with_capacity(payload.len() / 2 + 16);
                codec.compress(payload, true, &mut out);
                return self.write_frames(opcode, &out, true);
            }
        }
        self.write_frames(opcode, payload, false);
    }

    /// One message as one frame, or fragments of `fragment_size`; RSV1 on the first only.
    fn write_frames(&mut self, opcode: OpCode, payload: &[u8], rsv1: bool) {
        match self.config.fragment_size {
            Some(size) if payload.len() > size => {
                let mut chunks = payload.chunks(size).peekable();
                let mut op = opcode;
                let mut first = true;
                while let Some(chunk) = chunks.next() {
                    self.write_frame_rsv(chunks.peek().is_none(), rsv1 && first, op, chunk);
                    op = OpCode::Continuation;
                    first = false;
                }
            }
            _ => self.write_frame_rsv(true, rsv1, opcode, payload),
        }
    }

    /// [`Connection::write_frames`] for a payload the connection owns: a server queues a large
    /// one without copying it (a slice of it per fragment).
    fn write_frames_owned(&mut self, opcode: OpCode, payload: Bytes, rsv1: bool) {
        if self.role == Role::Client || payload.len() < OWNED_MIN {
            return self.write_frames(opcode, &payload, rsv1);
        }
        let size = match self.config.fragment_size {
            Some(size) if size > 0 => size,
            _ => payload.len(),
        };
        let mut op = opcode;
        let mut start = 0;
        while start < payload.len() {
            let end = payload.len().min(start + size);
            let header = FrameHeader {
                fin: end == payload.len(),
                rsv1: rsv1 && start == 0,
                rsv2: false,
                rsv3: false,
                opcode: op,
                mask: None,
                payload_len: (end - start) as u64,
            };
            self.tx.extend_from_slice(header.encode().as_slice());
            self.tx.push_owned(payload.slice(start..end));
            op = OpCode::Continuation;
            start = end;
        }
    }

    fn write_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.write_frame_rsv(fin, false, opcode, payload);
    }

    fn write_frame_rsv(&mut self, fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) {
        let mask = match self.role {
            Role::Server => None,
            Role::Client => Some(self.masking_key()),
        };
        let header = FrameHeader {
            fin,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let encoded = header.encode();
        let tx = self.tx.tail();
        tx.reserve(encoded.len() + payload.len());
        tx.extend_from_slice(encoded.as_slice());
        let start = tx.len();
        tx.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut tx[start..], key);
        }
    }

    fn masking_key(&mut self) -> [u8; 4] {
        let mut key = [0u8; 4];
        if let Some(random) = &mut self.random {
            random(&mut key);
        }
        key
    }

    // ---------------------------------------------------------------- time

    /// The next instant [`Connection::handle_timeout`] must be called at, if any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let deadlines = match self.state {
            State::Handshake | State::AwaitingDecision { .. } => [self.deadline, None],
            State::Open => [
                self.heartbeat.as_ref().map(Heartbeat::deadline),
                self.config.idle_timeout.map(|t| self.last_received + t),
            ],
            State::CloseSent | State::Closed => [self.deadline, None],
            State::Streaming => [None, None],
        };
        deadlines.into_iter().flatten().min()
    }

    /// Fires every deadline that `now` has reached.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now;
        match self.state {
            State::Handshake | State::AwaitingDecision { .. } => {
                if self.deadline.is_some_and(|d| now >= d) {
                    if self.kept_alive
                        && self.rx_filled == 0
                        && matches!(self.state, State::Handshake)
                    {
                        // An idle keep-alive connection: nothing failed.
                        self.finish(CloseCode::Normal, "keep-alive idle".into(), true, false);
                        return;
                    }
                    self.events.push_back(Event::Error(Error::HandshakeTimeout));
                    self.finish(
                        CloseCode::Abnormal,
                        "handshake timeout".into(),
                        false,
                        false,
                    );
                }
            }
            State::Open => {
                if self
                    .config
                    .idle_timeout
                    .is_some_and(|t| now >= self.last_received + t)
                {
                    // Failed like a dead heartbeat: a 1001 close frame, then Closed at once;
                    // a peer silent this long is not waited for.
                    return self.fail(Error::IdleTimeout);
                }
                let action = match &mut self.heartbeat {
                    Some(hb) => hb.on_timeout(now),
                    None => None,
                };
                match action {
                    Some(HeartbeatAction::Ping(seq)) => {
                        self.write_frame(true, OpCode::Ping, &seq.to_be_bytes());
                    }
                    Some(HeartbeatAction::Dead { missed }) => {
                        self.fail(Error::HeartbeatTimeout { missed });
                    }
                    None => {}
                }
            }
            State::Streaming => {}
            State::CloseSent => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.events.push_back(Event::Error(Error::CloseTimeout));
                    self.finish(CloseCode::Abnormal, "close timeout".into(), false, false);
                }
            }
            State::Closed => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.deadline = None;
                }
            }
        }
    }
}

/// Cuts a reason to what fits in a close frame, at a character boundary.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON {
        let mut end = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod owned_tests;
#[cfg(test)]
mod tests;
