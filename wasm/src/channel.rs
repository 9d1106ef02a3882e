//! [`ChannelSession`]: the `duplex.v1` client session of duplex-core
//! ([`ClientSession`]), exported to JavaScript for `DuplexClient` (`wasm/js/src/client.js`).
//!
//! The session does everything the protocol asks of a client (hello, rejoin with `since`,
//! ordering and deduplication, resends, offline queue, backoff, heartbeat); JavaScript owns the
//! socket and the clock. Time is a number of milliseconds since an origin the caller keeps fixed
//! (`performance.now()`). Events leave as the JSON of [`ClientEvent::to_json`]; application
//! values (presence, published data) enter as JSON text. Refused calls throw an `Error` whose
//! message is `code: explanation`, `code` being [`ClientError::code`].

use core::time::Duration;

use duplex_core::channel::{ClientConfig, ClientError, ClientSession, Id};
use wasm_bindgen::prelude::*;

/// Parses one JSON value (application text: presence, published data) with the session's own
/// reader, which keeps numbers exact without serde_json's float parser.
fn parse(json: &str) -> Result<serde_json::Value, JsError> {
    duplex_core::channel::json::parse(json).map_err(|e| JsError::new(&format!("bad_json: {e}")))
}

/// The client side of `duplex.v1` for one logical connection that outlives sockets. See the
/// module documentation of `duplex_core::channel::client` for the driving loop.
#[wasm_bindgen]
#[derive(Debug)]
pub struct ChannelSession {
    inner: ClientSession,
}

#[wasm_bindgen]
impl ChannelSession {
    /// A session with `Connect` already queued. Durations in milliseconds; `client` and `token`
    /// may be `undefined`. The seed of the backoff jitter and of the command ids comes from
    /// `crypto.getRandomValues`.
    #[wasm_bindgen(constructor)]
    // One argument per `DuplexClient` option: the JS wrapper is the public API and names them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Option<String>,
        token: Option<String>,
        initial_backoff_ms: f64,
        max_backoff_ms: f64,
        backoff_multiplier: f64,
        max_offline_publishes: u32,
        welcome_timeout_ms: f64,
        unavailable_retries: u32,
        unavailable_timeout_ms: f64,
    ) -> ChannelSession {
        let mut config = ClientConfig::default()
            .with_backoff(
                duration(initial_backoff_ms),
                duration(max_backoff_ms),
                backoff_multiplier,
            )
            .with_max_offline_publishes(max_offline_publishes as usize)
            .with_welcome_timeout(duration(welcome_timeout_ms))
            .with_unavailable_retries(unavailable_retries, duration(unavailable_timeout_ms));
        config.client = client;
        config.token = token;
        let mut seed = [0u8; 8];
        crate::random::default_source()(&mut seed);
        ChannelSession {
            inner: ClientSession::new(config, u64::from_le_bytes(seed)),
        }
    }

    /// The socket opened: `hello` is queued.
    pub fn connected(&mut self, now_ms: f64) {
        self.inner.connected(duration(now_ms));
    }

    /// The socket closed, failed or could not be opened.
    pub fn disconnected(&mut self, now_ms: f64) {
        self.inner.disconnected(duration(now_ms));
    }

    /// One text frame from the server.
    pub fn receive(&mut self, now_ms: f64, text: &str) {
        self.inner.receive(text, duration(now_ms));
    }

    /// The next text frame to send, in order.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.inner.poll_transmit()
    }

    /// The next event as a JSON object tagged by `type`.
    pub fn poll_event(&mut self) -> Option<String> {
        self.inner.poll_event().map(|event| event.to_json())
    }

    /// When `handle_timeout` has work, in milliseconds on the caller's clock.
    pub fn poll_timeout(&self) -> Option<f64> {
        self.inner.poll_timeout().map(|t| t.as_secs_f64() * 1000.0)
    }

    /// Fires whatever is due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: f64) {
        self.inner.handle_timeout(duration(now_ms));
    }

    /// Skips the rest of the backoff delay.
    pub fn reconnect_now(&mut self) {
        self.inner.reconnect_now();
    }

    /// Ends the session: `CloseSocket` (when a socket is up), then `Closed`.
    pub fn close(&mut self) {
        self.inner.close();
    }

    /// Joins `room`; `presence` is JSON text or `undefined`. Returns the `join` id.
    pub fn join(&mut self, room: &str, presence: Option<String>) -> Result<f64, JsError> {
        let presence = match presence {
            Some(json) => Some(parse(&json)?),
            None => None,
        };
        id(self.inner.join(room, presence))
    }

    /// Leaves `room`; returns the `leave` id.
    pub fn leave(&mut self, room: &str) -> Result<f64, JsError> {
        id(self.inner.leave(room))
    }

    /// Sets this client's presence in `room` (JSON text).
    pub fn set_presence(&mut self, room: &str, presence: &str) -> Result<(), JsError> {
        let presence = parse(presence)?;
        self.inner.set_presence(room, presence).map_err(error)
    }

    /// Publishes `data` (JSON text) to `room`; returns the publish id that `ack` or
    /// `publish_rejected` will carry.
    pub fn publish(&mut self, room: &str, data: &str) -> Result<f64, JsError> {
        let data = parse(data)?;
        id(self.inner.publish(room, data))
    }

    /// Sends `data` (JSON text) to client `to`; returns the id that `sent` or `send_rejected`
    /// will carry. Refused while offline (`offline`): never queued.
    pub fn send(&mut self, to: &str, data: &str) -> Result<f64, JsError> {
        let data = parse(data)?;
        id(self.inner.send(to, data))
    }

    /// Replaces the token of the next `hello`.
    pub fn set_token(&mut self, token: Option<String>) {
        self.inner.set_token(token);
    }

    /// This client's id, once known.
    pub fn client_id(&self) -> Option<String> {
        self.inner.client_id().map(Into::into)
    }

    /// Whether a connection is welcomed.
    pub fn is_open(&self) -> bool {
        self.inner.is_open()
    }

    /// Whether the server confirmed membership of `room` on the current connection.
    pub fn is_joined(&self, room: &str) -> bool {
        self.inner.is_joined(room)
    }

    /// Members of `room` as a JSON array of `[client, presence]` pairs, in client id order.
    pub fn members(&self, room: &str) -> String {
        let members: Vec<(&str, &serde_json::Value)> = self.inner.members(room).collect();
        // Cannot fail: no map here has a key that is not a string.
        serde_json::to_string(&members).unwrap_or_default()
    }

    /// Where the application's copy of `room` stands, as `{"epoch":…,"seq":…}` JSON.
    pub fn position(&self, room: &str) -> Option<String> {
        serde_json::to_string(&self.inner.position(room)?).ok()
    }

    /// Publishes not yet acknowledged or refused.
    pub fn pending_publishes(&self) -> usize {
        self.inner.pending_publishes()
    }
}

fn id(result: Result<Id, ClientError>) -> Result<f64, JsError> {
    match result.map_err(error)? {
        // Session ids stay below 2^53: exact as JavaScript numbers.
        Id::Number(n) => Ok(n as f64),
        Id::Text(_) => Err(JsError::new("bad_message: text id")),
    }
}

fn error(error: ClientError) -> JsError {
    JsError::new(&format!("{}: {error}", error.code()))
}

fn duration(ms: f64) -> Duration {
    if ms > 0.0 {
        // Beyond what a Duration holds (or infinite): the end of time, without a panic.
        Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
    } else {
        // Negative, zero or NaN.
        Duration::ZERO
    }
}
