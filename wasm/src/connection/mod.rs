//! [`WsConnection`]: the client role of the duplex-core [`Connection`], exported to JavaScript.
//!
//! JavaScript moves bytes and time; everything else happens here. Time is a number of
//! milliseconds since any origin the caller keeps fixed (`performance.now()`); deadlines come
//! back in the same unit.

use core::time::Duration;

use bytes::Bytes;
use duplex_core::deflate::DeflateConfig;
use duplex_core::{
    ClientRequest, CloseCode, Config, Connection, ConnectionState, Event, ExtensionOffer, Message,
    RandomSource,
};
use wasm_bindgen::prelude::*;

/// What [`WsConnection::poll_event`] found. The payload of the event is read with the
/// `event_*` accessors until the next call.
#[wasm_bindgen]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// No event is ready.
    None = 0,
    /// The handshake completed: `protocol()` and `extensions()` are known.
    Open = 1,
    /// A text message: `event_text()`.
    Text = 2,
    /// A binary message: `event_data()`.
    Binary = 3,
    /// A ping arrived (`event_data()`); its pong is already queued.
    Ping = 4,
    /// A pong arrived (`event_data()`).
    Pong = 5,
    /// Why the connection is failing (`event_error()`); `Closed` follows.
    Error = 6,
    /// The connection is over: `event_code()`, `event_reason()`, `event_clean()`.
    Closed = 7,
}

/// Limits, timers and compression of a [`WsConnection`]; every field has a usable default.
/// Durations are in milliseconds, 0 meaning "never".
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// Ping the server this often while open (the core's heartbeat).
    pub ping_interval_ms: f64,
    /// Fail the connection (1001) when this many pings in a row got no pong.
    pub max_missed_pongs: u32,
    /// Fail the connection (1001) when nothing arrives for this long.
    pub idle_timeout_ms: f64,
    /// Time allowed from construction until the server's 101 response (TCP connect included).
    pub handshake_timeout_ms: f64,
    /// Time allowed for the server to answer our close and then close TCP.
    pub close_timeout_ms: f64,
    /// Largest message (and frame) accepted; larger ones fail the connection with 1009.
    pub max_message_size: usize,
    /// Offer permessage-deflate (RFC 7692).
    pub deflate: bool,
    /// Messages shorter than this are sent uncompressed.
    pub deflate_threshold: usize,
    /// zlib level, 0..=9.
    pub deflate_level: u8,
    /// Ask to compress each message on its own (less memory, larger output).
    pub deflate_client_no_context_takeover: bool,
    /// Ask the server to compress each message on its own.
    pub deflate_server_no_context_takeover: bool,
    headers: Vec<(String, String)>,
    origin: Option<String>,
}

impl Default for WsOptions {
    fn default() -> Self {
        let deflate = DeflateConfig::default();
        let config = Config::default();
        WsOptions {
            ping_interval_ms: 0.0,
            max_missed_pongs: config.max_missed_pongs(),
            idle_timeout_ms: 0.0,
            handshake_timeout_ms: config.handshake_timeout().map_or(0.0, millis),
            close_timeout_ms: millis(config.close_timeout()),
            max_message_size: config.max_message_size(),
            deflate: true,
            deflate_threshold: deflate.threshold,
            deflate_level: deflate.level,
            deflate_client_no_context_takeover: deflate.client_no_context_takeover,
            deflate_server_no_context_takeover: deflate.server_no_context_takeover,
            headers: Vec::new(),
            origin: None,
        }
    }
}

#[wasm_bindgen]
impl WsOptions {
    #[wasm_bindgen(constructor)]
    pub fn new() -> WsOptions {
        WsOptions::default()
    }

    /// Adds a request header (e.g. `Authorization`). Header lines the core judges unsafe (a
    /// name that is not a token, CR/LF in the value) are left out of the request.
    pub fn add_header(&mut self, name: String, value: String) {
        self.headers.push((name, value));
    }

    /// Sets the `Origin` header.
    pub fn set_origin(&mut self, origin: String) {
        self.origin = Some(origin);
    }
}

impl WsOptions {
    fn config(&self) -> Config {
        let deflate = self.deflate.then(|| DeflateConfig {
            threshold: self.deflate_threshold,
            level: self.deflate_level,
            client_no_context_takeover: self.deflate_client_no_context_takeover,
            server_no_context_takeover: self.deflate_server_no_context_takeover,
            ..DeflateConfig::default()
        });
        Config::default()
            .with_deflate(deflate)
            .with_max_message_size(self.max_message_size)
            .with_max_frame_size(self.max_message_size)
            .with_ping_interval(optional_duration(self.ping_interval_ms))
            .with_max_missed_pongs(self.max_missed_pongs)
            .with_idle_timeout(optional_duration(self.idle_timeout_ms))
            .with_handshake_timeout(optional_duration(self.handshake_timeout_ms))
            .with_close_timeout(duration(self.close_timeout_ms))
    }
}

/// The event [`WsConnection::poll_event`] reported last, kept for the accessors.
#[derive(Debug, Default)]
struct Current {
    data: Bytes,
    error: String,
    code: u16,
    reason: String,
    clean: bool,
}

/// One client connection: the WebSocket protocol over whatever byte stream JavaScript has.
///
/// The upgrade request is in [`WsConnection::take_output`] from the start. Then, in any order:
/// hand over received bytes ([`WsConnection::receive`], [`WsConnection::receive_eof`]), take
/// events until [`EventKind::None`], write what [`WsConnection::take_output`] returns, and call
/// [`WsConnection::handle_timeout`] at [`WsConnection::poll_timeout`]. Close the byte stream
/// once [`WsConnection::is_terminated`] is true and the output is written.
#[wasm_bindgen]
#[derive(Debug)]
pub struct WsConnection {
    conn: Connection,
    current: Current,
}

#[wasm_bindgen]
impl WsConnection {
    /// Starts a connection to a `ws://` or `wss://` URL, offering `protocols` in order of
    /// preference. Throws on a URL the handshake cannot use. TLS (`wss://`) is the caller's
    /// byte stream's business; the URL only picks the default port and the `Host` header.
    #[wasm_bindgen(constructor)]
    pub fn new(
        url: &str,
        protocols: Vec<String>,
        options: &WsOptions,
        now_ms: f64,
    ) -> Result<WsConnection, JsError> {
        WsConnection::with_random(
            url,
            protocols,
            options,
            crate::random::default_source(),
            now_ms,
        )
        .map_err(|e| JsError::new(&e))
    }

    // ------------------------------------------------------------------ input

    /// Bytes read from the stream.
    pub fn receive(&mut self, now_ms: f64, data: &[u8]) {
        self.conn.receive(duration(now_ms), data);
    }

    /// The stream ended or failed: nothing more will be read.
    pub fn receive_eof(&mut self, now_ms: f64) {
        self.conn.receive_eof(duration(now_ms));
    }

    /// The next deadline, in milliseconds, or `undefined` when there is none.
    pub fn poll_timeout(&self) -> Option<f64> {
        self.conn.poll_timeout().map(millis)
    }

    /// Fires every deadline `now_ms` has reached (heartbeat pings, pong and idle timeouts, the
    /// handshake and close timeouts).
    pub fn handle_timeout(&mut self, now_ms: f64) {
        self.conn.handle_timeout(duration(now_ms));
    }

    // ------------------------------------------------------------------ output

    /// Takes every byte waiting to be written (empty when there is none).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.conn.poll_transmit().map(Vec::from).unwrap_or_default()
    }

    /// Bytes queued and not yet taken with [`WsConnection::take_output`].
    pub fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount()
    }

    /// True once the stream should be closed (after writing the last output).
    pub fn is_terminated(&self) -> bool {
        self.conn.is_terminated()
    }

    // ------------------------------------------------------------------ events

    /// Takes the next event. Call it until it returns [`EventKind::None`] after each
    /// `receive`, `receive_eof` and `handle_timeout`: frames are decoded as events are taken.
    pub fn poll_event(&mut self) -> EventKind {
        let Some(event) = self.conn.poll_event() else {
            return EventKind::None;
        };
        let current = &mut self.current;
        match event {
            Event::Open => EventKind::Open,
            Event::Message(Message::Text(text)) => {
                current.data = text.into_bytes();
                EventKind::Text
            }
            Event::Message(Message::Binary(data)) => {
                current.data = data;
                EventKind::Binary
            }
            Event::Ping(data) => {
                current.data = data;
                EventKind::Ping
            }
            Event::Pong(data) => {
                current.data = data;
                EventKind::Pong
            }
            Event::Error(error) => {
                current.error = error.to_string();
                EventKind::Error
            }
            Event::Closed(closed) => {
                current.code = closed.code.as_u16();
                current.reason = closed.reason;
                current.clean = closed.clean;
                EventKind::Closed
            }
            // Server-role events never reach a client.
            Event::Request(_) => EventKind::None,
        }
    }

    /// The text of the last [`EventKind::Text`] event.
    pub fn event_text(&mut self) -> String {
        let data = core::mem::take(&mut self.current.data);
        match String::from_utf8(Vec::from(data)) {
            Ok(text) => text,
            // Unreachable: the core validated the message.
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// The payload of the last binary, ping or pong event.
    pub fn event_data(&mut self) -> Vec<u8> {
        Vec::from(core::mem::take(&mut self.current.data))
    }

    /// Why the connection failed, for the last [`EventKind::Error`] event.
    pub fn event_error(&self) -> String {
        self.current.error.clone()
    }

    /// The close code of the [`EventKind::Closed`] event: the server's for a close handshake
    /// (1005 when its frame had none), the one the connection was failed with, or 1006.
    pub fn event_code(&self) -> u16 {
        self.current.code
    }

    pub fn event_reason(&self) -> String {
        self.current.reason.clone()
    }

    /// True when both close frames were exchanged.
    pub fn event_clean(&self) -> bool {
        self.current.clean
    }

    // ------------------------------------------------------------------ state

    /// The WHATWG `readyState`: 0 connecting, 1 open, 2 closing, 3 closed.
    pub fn ready_state(&self) -> u8 {
        match self.conn.state() {
            ConnectionState::Connecting => 0,
            ConnectionState::Open => 1,
            ConnectionState::Closing => 2,
            ConnectionState::Closed => 3,
        }
    }

    /// The subprotocol the server selected, if any.
    pub fn protocol(&self) -> Option<String> {
        self.conn.protocol().map(str::to_owned)
    }

    /// The extensions the server accepted, as a `Sec-WebSocket-Extensions` value (empty when
    /// none, or before the handshake completed).
    pub fn extensions(&self) -> String {
        self.conn
            .response()
            .map(|r| ExtensionOffer::list_to_header_value(&r.extensions))
            .unwrap_or_default()
    }

    // ------------------------------------------------------------------ sending

    pub fn send_text(&mut self, text: &str) -> Result<(), JsError> {
        self.conn.send_text(text).map_err(send_error)
    }

    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), JsError> {
        self.conn.send_binary(data).map_err(send_error)
    }

    /// Sends a ping (at most 125 bytes); its pong arrives as [`EventKind::Pong`].
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), JsError> {
        self.conn.send_ping(payload).map_err(send_error)
    }

    /// Starts the close handshake with a code valid on the wire and a reason of at most 123
    /// bytes, or 1005 with no reason for a close frame without a status code.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), JsError> {
        self.conn
            .close(CloseCode::from_u16(code), reason)
            .map_err(send_error)
    }
}

impl WsConnection {
    /// Like [`WsConnection::new`], with the randomness injected (tests use a fixed sequence).
    pub fn with_random(
        url: &str,
        protocols: Vec<String>,
        options: &WsOptions,
        random: RandomSource,
        now_ms: f64,
    ) -> Result<WsConnection, String> {
        let mut request = ClientRequest::from_url(url).map_err(|e| e.to_string())?;
        for protocol in protocols {
            request = request.with_protocol(protocol);
        }
        if let Some(origin) = &options.origin {
            request = request.with_origin(origin.as_str());
        }
        for (name, value) in &options.headers {
            request = request.with_header(name.as_str(), value.as_str());
        }
        let conn = Connection::client(request, options.config(), random, duration(now_ms));
        Ok(WsConnection {
            conn,
            current: Current::default(),
        })
    }
}

fn send_error(error: duplex_core::SendError) -> JsError {
    JsError::new(&error.to_string())
}

/// Milliseconds as a duration; negative, NaN or absurd values count as 0.
fn duration(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::ZERO)
}

fn optional_duration(ms: f64) -> Option<Duration> {
    (ms > 0.0).then(|| duration(ms))
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests;
