//! [`ClientSession`]: the client side of `duplex.v1` as a state machine. Text frames and time go
//! in; text frames, [`ClientEvent`]s and the next deadline come out.
//!
//! The session outlives sockets. It keeps what the application asked for (rooms, presence,
//! unacknowledged publishes) and replays it on every new connection, so the application sees one
//! continuous stream per room: each message once, in `seq` order, or an explicit
//! [`ClientEvent::Resync`] when the server could not fill a hole.
//!
//! # Driving a session
//!
//! The driver owns the socket and the clock. It:
//!
//! - opens a socket when [`ClientSession::poll_event`] yields [`ClientEvent::Connect`] (the first
//!   one is queued by [`ClientSession::new`]), then calls [`ClientSession::connected`] once it is
//!   open, or [`ClientSession::disconnected`] if it fails to open;
//! - calls [`ClientSession::receive`] for each text frame and [`ClientSession::disconnected`]
//!   when the socket closes or fails;
//! - closes the socket when told so by [`ClientEvent::CloseSocket`], and from then on reports
//!   nothing more about that socket (the session has already moved on);
//! - sends every text [`ClientSession::poll_transmit`] yields, in order;
//! - calls [`ClientSession::handle_timeout`] once [`ClientSession::poll_timeout`] is reached, and
//!   polls again after every call.
//!
//! `now` is any monotonic clock with a fixed origin (`performance.now()`, an `Instant` at start).
//! Nothing here panics on any input: malformed server text becomes
//! [`ClientEvent::ProtocolError`] and the session goes on.
//!
//! # Connection states
//!
//! ```text
//!             new()                       connected()               welcome
//!   ──▶ Connecting ──────────────────▶ Handshaking ──────────────▶ Open
//!          ▲   │ disconnected()             │ disconnected(),          │ disconnected(),
//!          │   ▼                            │ welcome timeout          │ heartbeat timeout
//!          │ Backoff ◀──────────────────────┴──────────────────────────┘
//!          └───┘ deadline (ClientEvent::Connect)
//!   close() from any state ──▶ Closed (final)
//! ```
//!
//! Backoff is exponential with full jitter: the n-th consecutive attempt waits a uniformly random
//! delay in `[0, min(max_backoff, initial_backoff × multiplier^(n-1))]`; a `welcome` resets the
//! count.
//!
//! # `unavailable`
//!
//! A node of several (`duplex serve --broker`) answers `error {code: "unavailable"}` to a
//! `publish` or `join` while it cannot reach its broker. The session retries either itself, on
//! the same connection: after a delay drawn as for the n-th reconnect (full jitter below
//! `min(max_backoff, initial_backoff × multiplier^(n-1))`), with the same id (the server
//! deduplicates publishes by client and id, so a retry is never delivered twice). A refused
//! publish holds its room's later publishes: the retry goes out alone and the others follow its
//! answer, in order, so none is sequenced before it; a refused join holds the room's publishes
//! likewise. After [`ClientConfig::unavailable_retries`] retries, or
//! [`ClientConfig::unavailable_timeout`] after the first `unavailable`, the next one is final:
//! [`ClientEvent::PublishRejected`] or [`ClientEvent::JoinRejected`] with code `unavailable`.
//! A reconnect resends whatever is held at once; [`ClientSession::close`] drops it. The driver
//! needs nothing more than [`ClientSession::poll_timeout`] and
//! [`ClientSession::handle_timeout`].
//!
//! # Messages to one client
//!
//! [`ClientSession::send`] sends `data` to another client sharing a room with this one; the
//! server answers [`ClientEvent::Sent`] (handed to the target's connection) or
//! [`ClientEvent::SendRejected`] (`not_found`, `rate_limited`, `too_large`, `unavailable`), and
//! messages to this client arrive as [`ClientEvent::Direct`]. Direct messages are not stored
//! by the server, so the session neither queues them while offline nor resends them: `send`
//! fails with [`ClientError::Offline`] when no connection is open, and a send still unanswered
//! when the connection ends is rejected with code `disconnected` (it may or may not have
//! arrived); the application decides whether to send again.
//!
//! # Example
//!
//! A session and a [`Hub`](super::Hub) talking in memory:
//!
//! ```
//! use core::time::Duration;
//! use duplex_core::channel::{ClientConfig, ClientEvent, ClientSession, Hub, HubConfig};
//! use serde_json::json;
//!
//! let now = Duration::ZERO;
//! let mut hub = Hub::new(HubConfig::default(), 1);
//! let mut session = ClientSession::new(ClientConfig::default(), 2);
//! assert_eq!(session.poll_event(), Some(ClientEvent::Connect { attempt: 0 }));
//! // Rooms and publishes may be requested before the socket is open: they wait for `welcome`.
//! session.join("app/chat", Some(json!({"name": "Ada"}))).unwrap();
//! let id = session.publish("app/chat", json!("hi")).unwrap();
//!
//! // The driver opened socket 7.
//! hub.connect(7u32, now);
//! session.connected(now);
//! for _ in 0..3 {
//!     while let Some(text) = session.poll_transmit() {
//!         let _ = hub.receive(7, &text, now);
//!     }
//!     while let Some((_, delivery)) = hub.poll_delivery() {
//!         let text = duplex_core::channel::codec::json::encode(&delivery);
//!         session.receive(&text, now);
//!     }
//! }
//! let mut events = Vec::new();
//! while let Some(event) = session.poll_event() {
//!     events.push(event);
//! }
//! assert!(matches!(&events[0], ClientEvent::Welcome { .. }));
//! assert!(matches!(&events[1], ClientEvent::Joined { room, .. } if room == "app/chat"));
//! assert_eq!(events[2], ClientEvent::Ack { id, room: "app/chat".into(), seq: 1 });
//! assert!(matches!(&events[3], ClientEvent::Message { seq: 1, data, .. } if *data == json!("hi")));
//! ```

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::protocol::{self, ClientMessage, Id, Member, Since};

/// Session settings. Defaults: backoff from 500 ms doubling up to 30 s, up to 1,000 publishes held
/// while offline, 10 s for the server's `welcome`, a publish or join refused with `unavailable`
/// retried up to 10 times within 60 s, no client id (the server assigns one) and no token.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// The client id for the first `hello`; later `hello`s use the id from `welcome`.
    pub client: Option<String>,
    /// Sent in every `hello` (see [`ClientSession::set_token`] to refresh it).
    pub token: Option<String>,
    /// Upper bound of the first reconnect delay.
    pub initial_backoff: Duration,
    /// Upper bound of any reconnect delay.
    pub max_backoff: Duration,
    /// Growth of the delay bound per failed attempt; values below 1 (or NaN) count as 1.
    pub backoff_multiplier: f64,
    /// Unacknowledged publishes the session holds while it has no welcomed connection; past it
    /// [`ClientSession::publish`] fails with [`ClientError::QueueFull`].
    pub max_offline_publishes: usize,
    /// How long to wait for `welcome` after the socket opened before giving the socket up.
    pub welcome_timeout: Duration,
    /// How many times a publish or join the server refused with `unavailable` (its broker cannot
    /// be reached) is retried, each after a backoff delay drawn as for reconnects (the n-th retry
    /// waits up to `min(max_backoff, initial_backoff × multiplier^(n-1))`). One more
    /// `unavailable` ends it: [`ClientEvent::PublishRejected`] or [`ClientEvent::JoinRejected`].
    pub unavailable_retries: u32,
    /// No retry once this long has passed since the first `unavailable` of that publish or join.
    pub unavailable_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client: None,
            token: None,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            backoff_multiplier: 2.0,
            max_offline_publishes: 1000,
            welcome_timeout: Duration::from_secs(10),
            unavailable_retries: 10,
            unavailable_timeout: Duration::from_secs(60),
        }
    }
}

impl ClientConfig {
    /// Sets [`ClientConfig::client`].
    pub fn with_client(mut self, client: impl Into<String>) -> Self {
        self.client = Some(client.into());
        self
    }
    /// Sets [`ClientConfig::token`].
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
    /// Sets the backoff schedule: first bound, largest bound and growth per attempt.
    pub fn with_backoff(mut self, initial: Duration, max: Duration, multiplier: f64) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self.backoff_multiplier = multiplier;
        self
    }
    /// Sets [`ClientConfig::max_offline_publishes`].
    pub fn with_max_offline_publishes(mut self, publishes: usize) -> Self {
        self.max_offline_publishes = publishes;
        self
    }
    /// Sets [`ClientConfig::welcome_timeout`].
    pub fn with_welcome_timeout(mut self, timeout: Duration) -> Self {
        self.welcome_timeout = timeout;
        self
    }
    /// Sets [`ClientConfig::unavailable_retries`] and [`ClientConfig::unavailable_timeout`]
    /// (0 retries: an `unavailable` is final at once).
    pub fn with_unavailable_retries(mut self, retries: u32, timeout: Duration) -> Self {
        self.unavailable_retries = retries;
        self.unavailable_timeout = timeout;
        self
    }
}

/// Why a call of the application was refused. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The room name breaks the `namespace/name` rule.
    #[error("bad room name: {0}")]
    BadRoom(&'static str),
    /// `join` of a room already joined (or being joined).
    #[error("room already joined")]
    AlreadyJoined,
    /// `leave`, `publish` or `set_presence` for a room that was not joined.
    #[error("room not joined")]
    NotJoined,
    /// `publish` while offline with [`ClientConfig::max_offline_publishes`] already held.
    #[error("offline publish queue is full")]
    QueueFull,
    /// The session was closed with [`ClientSession::close`].
    #[error("session closed")]
    Closed,
    /// `send` while no connection is open: direct messages are not queued.
    #[error("not connected")]
    Offline,
    /// `send` to a string that is not a client id.
    #[error("bad client id")]
    BadClient,
}

impl ClientError {
    /// A stable snake_case name (`bad_room`, `already_joined`, `not_joined`, `queue_full`,
    /// `closed`, `offline`, `bad_client`), for bindings that pass errors as strings.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::BadRoom(_) => "bad_room",
            ClientError::AlreadyJoined => "already_joined",
            ClientError::NotJoined => "not_joined",
            ClientError::QueueFull => "queue_full",
            ClientError::Closed => "closed",
            ClientError::Offline => "offline",
            ClientError::BadClient => "bad_client",
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The driver reported the socket closed or failed ([`ClientSession::disconnected`]).
    SocketClosed,
    /// Nothing arrived within `heartbeat_ms` after a `ping`.
    HeartbeatTimeout,
    /// No `welcome` within [`ClientConfig::welcome_timeout`] of the socket opening.
    WelcomeTimeout,
    /// The application called [`ClientSession::close`].
    Closed,
    /// The server said `taken_over`: a newer connection said `hello` with this client id. The
    /// session ends for good (reconnecting would take the newer connection over in turn, and
    /// two sessions sharing an id would evict each other forever).
    TakenOver,
}

/// What the session tells its driver and the application. The `serde` form (see
/// [`ClientEvent::to_json`]) is an object tagged by a snake_case `"type"`, durations in
/// milliseconds (`delay_ms`, `heartbeat_ms`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientEvent {
    /// Driver: open a new socket now, then call [`ClientSession::connected`] (or
    /// [`ClientSession::disconnected`] if it cannot be opened). `attempt` counts the attempts
    /// since the last `welcome` (0 for the very first connection).
    Connect {
        /// Consecutive attempt number.
        attempt: u32,
    },
    /// Driver: close the current socket (heartbeat or welcome timeout, or
    /// [`ClientSession::close`]). The session already considers it gone: report nothing more
    /// about it.
    CloseSocket {
        /// Why the session gave the socket up.
        reason: DisconnectReason,
    },
    /// A connection attempt failed or a connection was lost: [`ClientEvent::Connect`] follows
    /// after `delay`.
    Reconnecting {
        /// Consecutive attempt number (1 for the first retry).
        attempt: u32,
        /// The jittered delay before that attempt.
        #[serde(rename = "delay_ms", serialize_with = "millis")]
        delay: Duration,
    },
    /// The server said `welcome`: the session is online. Rooms are being rejoined and unacked
    /// publishes resent.
    Welcome {
        /// This client's id, kept for every later `hello`.
        client: String,
        /// The server's heartbeat interval (zero: no application heartbeat).
        #[serde(rename = "heartbeat_ms", serialize_with = "millis")]
        heartbeat: Duration,
    },
    /// A connection that had opened ended. Membership is per connection: rooms are rejoined after
    /// the next `welcome`.
    Disconnected {
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// [`ClientSession::close`] was called: no more connections, no more events.
    Closed,
    /// The server confirmed membership of `room`, on the first join or when rejoining after a
    /// reconnect. `members` (this client included) now fill [`ClientSession::members`].
    Joined {
        /// The id of the `join` command this answers.
        id: Id,
        /// The room.
        room: String,
        /// The room's history epoch.
        epoch: String,
        /// The room's last seq: messages after it follow.
        seq: u64,
        /// Every member and its presence.
        members: Vec<Member>,
        /// True when the server cut `members` to its size limit: the others are learned from
        /// later join and presence events only.
        members_truncated: bool,
        /// True when a rejoin replayed everything missed since the last message seen.
        recovered: bool,
    },
    /// The server refused to join `room`; it is no longer among the session's rooms. A join
    /// refused with `unavailable` is retried first (see [`ClientConfig::unavailable_retries`]).
    JoinRejected {
        /// The id of the refused `join`.
        id: Id,
        /// The room.
        room: String,
        /// The server's error code (`bad_room`, `unauthorized`, …).
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// `room` was left ([`ClientSession::leave`]).
    Left {
        /// The room.
        room: String,
    },
    /// A message of `room`. Delivered once per `seq`, in `seq` order, with no hole except after
    /// a [`ClientEvent::Resync`].
    Message {
        /// The room.
        room: String,
        /// Its position in the room.
        seq: u64,
        /// The publisher's client id.
        from: String,
        /// The published JSON value.
        data: Value,
    },
    /// Another client joined `room`.
    MemberJoined {
        /// The room.
        room: String,
        /// The client that joined.
        client: String,
        /// Its presence (`null` when none).
        presence: Value,
    },
    /// Another client left `room` (or disconnected).
    MemberLeft {
        /// The room.
        room: String,
        /// The client that left.
        client: String,
    },
    /// Another member's presence changed.
    Presence {
        /// The room.
        room: String,
        /// The member.
        client: String,
        /// Its new presence.
        presence: Value,
    },
    /// The publish `id` was sequenced at `seq` (reported once per publish).
    Ack {
        /// The id [`ClientSession::publish`] returned.
        id: Id,
        /// The room published to.
        room: String,
        /// The message's seq.
        seq: u64,
    },
    /// The server refused the publish `id` (`not_joined`, `too_large`, …); it is not retried.
    /// `unavailable` comes only after the retries of [`ClientConfig::unavailable_retries`].
    PublishRejected {
        /// The id [`ClientSession::publish`] returned.
        id: Id,
        /// The room published to.
        room: String,
        /// The server's error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// Messages of `room` were lost for good (history no longer covers them, or the room's
    /// history restarted with a new epoch): refetch the room's state by other means. Messages
    /// continue after the current seq.
    Resync {
        /// The room.
        room: String,
    },
    /// The server handed the message of [`ClientSession::send`] `id` to its target.
    Sent {
        /// The id [`ClientSession::send`] returned.
        id: Id,
    },
    /// The message of [`ClientSession::send`] `id` was refused (`not_found`, `rate_limited`,
    /// `too_large`, `unavailable`), or its connection ended before the answer
    /// (`disconnected`; it may have arrived) or the session was closed (`closed`, or
    /// `taken_over`). Never resent.
    SendRejected {
        /// The id [`ClientSession::send`] returned.
        id: Id,
        /// The server's error code, or `disconnected`, `closed`, `taken_over`.
        code: String,
        /// The explanation.
        message: String,
    },
    /// A message to this client alone, from client `from` (or `api`, the server's HTTP API).
    Direct {
        /// The sender's client id.
        from: String,
        /// The JSON value sent.
        data: Value,
    },
    /// A server `error` that answers no pending join, leave or publish of this session.
    ServerError {
        /// The refused command's id, when the server could read one.
        id: Option<Id>,
        /// The server's error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The server sent text that is not a `duplex.v1` message; it was ignored.
    ProtocolError {
        /// What was wrong.
        message: String,
    },
}

impl ClientEvent {
    /// The event as one JSON object, e.g. `{"type":"reconnecting","attempt":1,"delay_ms":312}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Server → client, as the session reads it: error codes stay strings so that codes from newer
/// servers still arrive. Read by hand from the parsed JSON value by [`Incoming::parse`] rather
/// than by a serde derive: the derive's visitors, and the float formatting of serde's type
/// errors, would be most of the code of a browser's `.wasm` (`wasm/build.sh`). Unknown fields
/// are ignored, as a derive would.
#[derive(Debug)]
enum Incoming {
    Welcome {
        client: String,
        heartbeat_ms: u64,
    },
    Joined(JoinedReply),
    Left {
        id: Id,
    },
    Ack {
        id: Id,
        seq: u64,
    },
    Message {
        room: String,
        seq: u64,
        from: String,
        data: Value,
    },
    Presence {
        room: String,
        client: String,
        presence: Value,
    },
    Join {
        room: String,
        client: String,
        presence: Value,
    },
    Leave {
        room: String,
        client: String,
    },
    Pong {},
    Gap {
        room: String,
        to_seq: u64,
    },
    Sent {
        id: Id,
    },
    Direct {
        from: String,
        data: Value,
    },
    Error {
        id: Option<Id>,
        code: String,
        message: String,
    },
}

/// A `joined` as the session reads it.
#[derive(Debug)]
struct JoinedReply {
    id: Id,
    room: String,
    epoch: String,
    seq: u64,
    members: Vec<Member>,
    members_truncated: bool,
    recovered: bool,
}

impl Incoming {
    fn parse(text: &str) -> Result<Incoming, String> {
        // The session's own JSON reader: exact numbers without serde_json's float parser.
        let value = super::json::parse(text)?;
        let Value::Object(mut fields) = value else {
            return Err("not a JSON object".into());
        };
        let kind = match fields.remove("type") {
            Some(Value::String(kind)) => kind,
            _ => return Err("no string `type`".into()),
        };
        let mut f = Fields(fields);
        Ok(match kind.as_str() {
            "welcome" => Incoming::Welcome {
                client: f.string("client")?,
                heartbeat_ms: f.u64("heartbeat_ms")?,
            },
            "joined" => Incoming::Joined(JoinedReply {
                id: f.id("id")?,
                room: f.string("room")?,
                epoch: f.string("epoch")?,
                seq: f.u64("seq")?,
                members: f.members("members")?,
                // Absent when the list is whole.
                members_truncated: match f.value("members_truncated") {
                    Value::Null => false,
                    Value::Bool(cut) => cut,
                    _ => return Err(wrong("members_truncated", "a boolean")),
                },
                recovered: f.bool("recovered")?,
            }),
            "left" => Incoming::Left { id: f.id("id")? },
            "ack" => Incoming::Ack {
                id: f.id("id")?,
                seq: f.u64("seq")?,
            },
            "message" => Incoming::Message {
                room: f.string("room")?,
                seq: f.u64("seq")?,
                from: f.string("from")?,
                data: f.value("data"),
            },
            "presence" => Incoming::Presence {
                room: f.string("room")?,
                client: f.string("client")?,
                presence: f.value("presence"),
            },
            "join" => Incoming::Join {
                room: f.string("room")?,
                client: f.string("client")?,
                presence: f.value("presence"),
            },
            "leave" => Incoming::Leave {
                room: f.string("room")?,
                client: f.string("client")?,
            },
            "pong" => Incoming::Pong {},
            "sent" => Incoming::Sent { id: f.id("id")? },
            "direct" => Incoming::Direct {
                from: f.string("from")?,
                data: f.value("data"),
            },
            "gap" => Incoming::Gap {
                room: f.string("room")?,
                to_seq: f.u64("to_seq")?,
            },
            "error" => Incoming::Error {
                id: match f.value("id") {
                    Value::Null => None,
                    id => Some(to_id(id).ok_or("`id` is not an id")?),
                },
                code: f.string("code")?,
                message: match f.value("message") {
                    Value::Null => String::new(),
                    Value::String(message) => message,
                    _ => return Err("`message` is not a string".into()),
                },
            },
            _ => return Err(format!("unknown type `{}`", truncate(&kind, 32))),
        })
    }
}

/// The fields of one server message, taken out as they are read.
struct Fields(serde_json::Map<String, Value>);

impl Fields {
    /// The field, `null` when absent.
    fn value(&mut self, name: &str) -> Value {
        self.0.remove(name).unwrap_or(Value::Null)
    }

    fn string(&mut self, name: &str) -> Result<String, String> {
        match self.value(name) {
            Value::String(text) => Ok(text),
            _ => Err(wrong(name, "a string")),
        }
    }

    fn u64(&mut self, name: &str) -> Result<u64, String> {
        self.value(name)
            .as_u64()
            .ok_or_else(|| wrong(name, "an unsigned integer"))
    }

    fn bool(&mut self, name: &str) -> Result<bool, String> {
        self.value(name)
            .as_bool()
            .ok_or_else(|| wrong(name, "a boolean"))
    }

    fn id(&mut self, name: &str) -> Result<Id, String> {
        to_id(self.value(name)).ok_or_else(|| wrong(name, "an id"))
    }

    fn members(&mut self, name: &str) -> Result<Vec<Member>, String> {
        let Value::Array(members) = self.value(name) else {
            return Err(wrong(name, "an array"));
        };
        members
            .into_iter()
            .map(|member| {
                let Value::Object(fields) = member else {
                    return Err(wrong(name, "an array of objects"));
                };
                let mut f = Fields(fields);
                Ok(Member {
                    client: f.string("client")?,
                    presence: match f.0.remove("presence") {
                        Some(presence) => presence,
                        None => return Err(wrong("presence", "a JSON value")),
                    },
                })
            })
            .collect()
    }
}

/// An [`Id`]: a non-negative integer or a string.
fn to_id(value: Value) -> Option<Id> {
    match value {
        Value::String(text) => Some(Id::Text(text)),
        value => value.as_u64().map(Id::Number),
    }
}

fn wrong(name: &str, what: &str) -> String {
    format!("`{name}` is missing or not {what}")
}

/// A map kept as a vector sorted by key: a session holds a few rooms and leaves in flight, and a
/// `BTreeMap` per key type would add several KiB of code to a browser's `.wasm` for them.
/// Iterates in key order, as a `BTreeMap` would.
#[derive(Debug)]
struct SortedMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap(Vec::new())
    }
}

impl<K: Ord, V> SortedMap<K, V> {
    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: core::borrow::Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: core::borrow::Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: core::borrow::Borrow<Q>,
    {
        self.find(key).ok().map(|at| &self.0[at].1)
    }

    fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: core::borrow::Borrow<Q>,
    {
        self.find(key).ok().map(|at| &mut self.0[at].1)
    }

    fn insert(&mut self, key: K, value: V) {
        match self.find(&key) {
            Ok(at) => self.0[at].1 = value,
            Err(at) => self.0.insert(at, (key, value)),
        }
    }

    fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: core::borrow::Borrow<Q>,
    {
        self.find(key).ok().map(|at| self.0.remove(at).1)
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.0.iter().map(|(k, _)| k)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        self.0.iter_mut().map(|(_, v)| v)
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// [`ClientEvent::Connect`] was queued; the driver is opening a socket.
    Connecting,
    /// `hello` sent; `welcome` due by the deadline.
    Handshaking { deadline: Duration },
    /// Welcomed.
    Open(Heartbeat),
    /// Waiting to reconnect.
    Backoff { until: Duration },
    /// [`ClientSession::close`] was called.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Heartbeat {
    /// Zero: off.
    interval: Duration,
    last_sent: Duration,
    last_received: Duration,
    /// When the unanswered `ping` went out.
    ping_sent: Option<Duration>,
}

#[derive(Debug)]
struct Joining {
    id: Id,
    since: Option<Since>,
    /// Sent while already a member, to fill a hole: no [`ClientEvent::Joined`] for it.
    refill: bool,
}

#[derive(Debug, Default)]
struct Room {
    /// This client's presence, sent with every join.
    presence: Option<Value>,
    /// The id [`ClientSession::join`] returned, until it is sent.
    unsent_id: Option<Id>,
    /// The join in flight on the current connection.
    joining: Option<Joining>,
    /// The server confirmed membership on the current connection.
    joined: bool,
    /// Epoch of the last `joined`, and the last seq delivered; `None` before the first `joined`.
    position: Option<(String, u64)>,
    members: BTreeMap<String, Value>,
    /// After an `unavailable`: when the held join and the room's publishes go out again. Until
    /// then no publish of the room is sent, so none overtakes the refused one.
    hold: Option<Duration>,
    /// A join refused with `unavailable`, resent (same id) at `hold`.
    held_join: Option<Joining>,
    /// The retried publish in flight: the room's later publishes wait for its answer.
    probe: Option<Id>,
    /// `unavailable` answers to this room's joins on this connection, and when the first came.
    join_tries: (u32, Duration),
}

#[derive(Debug)]
struct Pending {
    id: Id,
    room: String,
    /// The encoded `publish`, resent as is.
    text: String,
    /// `unavailable` answers so far, and when the first came.
    tries: (u32, Duration),
}

/// The client side of `duplex.v1`: connection lifecycle with backoff, rooms, presence, acked
/// publishes with an offline queue, recovery of missed messages and an application heartbeat.
/// See the [module documentation](self) for how to drive it.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    rng: u64,
    next_id: u64,
    state: State,
    /// Consecutive connection attempts since the last `welcome`.
    attempt: u32,
    /// The latest `now` the driver passed in; stamps sends made without one.
    now: Duration,
    client: Option<String>,
    token: Option<String>,
    rooms: SortedMap<String, Room>,
    leaving: SortedMap<Id, String>,
    pending: VecDeque<Pending>,
    /// `send`s of the current connection not answered yet.
    sending: Vec<Id>,
    out: VecDeque<String>,
    events: VecDeque<ClientEvent>,
}

impl ClientSession {
    /// A session that has not connected yet: [`ClientEvent::Connect`] is already queued. `seed`
    /// drives the backoff jitter and the command ids; give each session a fresh random one.
    pub fn new(config: ClientConfig, seed: u64) -> Self {
        let mut rng = seed;
        // Ids start at a random point below 2^52 so that two sessions with the same client id
        // (a reload with a stored id) do not reuse publish ids the server still remembers, and
        // stay exact as JavaScript numbers.
        let next_id = splitmix64(&mut rng) >> 12;
        let mut events = VecDeque::new();
        events.push_back(ClientEvent::Connect { attempt: 0 });
        ClientSession {
            client: config.client.clone(),
            token: config.token.clone(),
            config,
            rng,
            next_id,
            state: State::Connecting,
            attempt: 0,
            now: Duration::ZERO,
            rooms: SortedMap::default(),
            leaving: SortedMap::default(),
            pending: VecDeque::new(),
            sending: Vec::new(),
            out: VecDeque::new(),
            events,
        }
    }

    /// The configuration the session was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    // ---- driver interface ----

    /// The socket opened: sends `hello` with the client id and token.
    pub fn connected(&mut self, now: Duration) {
        self.tick(now);
        match self.state {
            State::Closed => {
                self.event(ClientEvent::CloseSocket {
                    reason: DisconnectReason::Closed,
                });
                return;
            }
            // A new socket without news of the old one: the old one is over.
            State::Handshaking { .. } | State::Open(_) => {
                self.reset_connection(DisconnectReason::SocketClosed)
            }
            State::Connecting | State::Backoff { .. } => {}
        }
        let deadline = now.saturating_add(self.config.welcome_timeout);
        self.state = State::Handshaking { deadline };
        let hello = ClientMessage::Hello {
            client: self.client.clone(),
            token: self.token.clone(),
        };
        self.send_message(&hello);
    }

    /// The socket closed or failed (or could not be opened): reconnects after a backoff delay.
    /// Ignored when no socket is expected (after [`ClientEvent::CloseSocket`], while backing off,
    /// once closed).
    pub fn disconnected(&mut self, now: Duration) {
        self.tick(now);
        match self.state {
            State::Connecting => self.backoff(),
            State::Handshaking { .. } | State::Open(_) => {
                self.reset_connection(DisconnectReason::SocketClosed);
                self.backoff();
            }
            State::Backoff { .. } | State::Closed => {}
        }
    }

    /// One text frame from the server. Ignored when no socket is open.
    pub fn receive(&mut self, text: &str, now: Duration) {
        self.tick(now);
        match &mut self.state {
            State::Open(heartbeat) => {
                heartbeat.last_received = self.now;
                heartbeat.ping_sent = None;
            }
            State::Handshaking { .. } => {}
            _ => return,
        }
        match Incoming::parse(text) {
            Ok(message) => self.handle(message),
            Err(e) => self.event(ClientEvent::ProtocolError {
                message: format!("{e}: {}", truncate(text, 64)),
            }),
        }
    }

    /// The next text frame to send, in order.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.out.pop_front()
    }

    /// The next event for the driver or the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] has work: a reconnect, the `welcome` deadline, a
    /// `ping` to send or its reply's deadline, a retry after `unavailable`.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.state {
            State::Backoff { until } => Some(until),
            State::Handshaking { deadline } => Some(deadline),
            State::Open(heartbeat) => {
                let hold = self.rooms.0.iter().filter_map(|(_, r)| r.hold).min();
                match (heartbeat.deadline(), hold) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Connecting | State::Closed => None,
        }
    }

    /// Fires whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.tick(now);
        let now = self.now;
        match self.state {
            State::Backoff { until } if now >= until => {
                self.state = State::Connecting;
                self.event(ClientEvent::Connect {
                    attempt: self.attempt,
                });
            }
            State::Handshaking { deadline } if now >= deadline => {
                self.give_up_socket(DisconnectReason::WelcomeTimeout)
            }
            State::Open(heartbeat) if heartbeat.deadline().is_some_and(|d| now >= d) => {
                if heartbeat.ping_sent.is_some() {
                    self.give_up_socket(DisconnectReason::HeartbeatTimeout);
                } else {
                    let id = self.new_id();
                    self.send_message(&ClientMessage::Ping { id });
                    if let State::Open(heartbeat) = &mut self.state {
                        heartbeat.ping_sent = Some(now);
                    }
                }
            }
            _ => {}
        }
        if self.is_open() {
            self.release_holds();
        }
    }

    /// Skips the rest of the current backoff delay (e.g. the platform reports the network back):
    /// queues [`ClientEvent::Connect`] at once. Does nothing in other states.
    pub fn reconnect_now(&mut self) {
        if let State::Backoff { .. } = self.state {
            self.state = State::Connecting;
            self.event(ClientEvent::Connect {
                attempt: self.attempt,
            });
        }
    }

    /// Ends the session for good: no reconnects; the socket, if any, is to be closed
    /// ([`ClientEvent::CloseSocket`]), then [`ClientEvent::Closed`]. Unacknowledged publishes are
    /// abandoned.
    pub fn close(&mut self) {
        match self.state {
            State::Closed => return,
            State::Connecting | State::Handshaking { .. } | State::Open(_) => {
                self.event(ClientEvent::CloseSocket {
                    reason: DisconnectReason::Closed,
                })
            }
            State::Backoff { .. } => {}
        }
        self.state = State::Closed;
        self.out.clear();
        self.leaving.clear();
        self.pending.clear();
        self.reject_sends("closed");
        self.event(ClientEvent::Closed);
    }

    // ---- application interface ----

    /// Joins `room` with an optional presence; returns the `join` command's id. Sent at once
    /// when online, else after the next `welcome`; [`ClientEvent::Joined`] or
    /// [`ClientEvent::JoinRejected`] follows.
    pub fn join(&mut self, room: &str, presence: Option<Value>) -> Result<Id, ClientError> {
        self.usable()?;
        protocol::validate_room(room).map_err(ClientError::BadRoom)?;
        if self.rooms.contains_key(room) {
            return Err(ClientError::AlreadyJoined);
        }
        let id = self.new_id();
        let mut state = Room {
            presence,
            ..Room::default()
        };
        if self.is_open() {
            self.send_message(&ClientMessage::Join {
                id: id.clone(),
                room: room.into(),
                presence: state.presence.clone(),
                since: None,
            });
            state.joining = Some(Joining {
                id: id.clone(),
                since: None,
                refill: false,
            });
        } else {
            state.unsent_id = Some(id.clone());
        }
        self.rooms.insert(room.into(), state);
        Ok(id)
    }

    /// Leaves `room`; returns the `leave` command's id. The room stops delivering events at once;
    /// [`ClientEvent::Left`] follows (at once when offline).
    pub fn leave(&mut self, room: &str) -> Result<Id, ClientError> {
        self.usable()?;
        let Some(state) = self.rooms.remove(room) else {
            return Err(ClientError::NotJoined);
        };
        let id = self.new_id();
        if self.is_open() {
            self.send_message(&ClientMessage::Leave {
                id: id.clone(),
                room: room.into(),
            });
            self.leaving.insert(id.clone(), room.into());
            if state.hold.is_some() || state.probe.is_some() {
                // Held publishes go out after all, to be answered `not_joined`.
                self.send_publishes(room, false);
            }
        } else {
            self.event(ClientEvent::Left { room: room.into() });
        }
        Ok(id)
    }

    /// Sets this client's presence in `room`: sent at once when online, and with every rejoin.
    pub fn set_presence(&mut self, room: &str, presence: Value) -> Result<(), ClientError> {
        self.usable()?;
        let open = self.is_open();
        let client = self.client.clone();
        let state = self.rooms.get_mut(room).ok_or(ClientError::NotJoined)?;
        state.presence = Some(presence.clone());
        if let Some(own) = client.and_then(|c| state.members.get_mut(&c)) {
            *own = presence.clone();
        }
        if open {
            self.send_message(&ClientMessage::Presence {
                room: room.into(),
                presence,
            });
        }
        Ok(())
    }

    /// Publishes `data` to `room` (joined or being joined); returns the publish id that
    /// [`ClientEvent::Ack`] or [`ClientEvent::PublishRejected`] will carry. Kept until acked and
    /// resent, same id, after every reconnect (the server delivers a retry once).
    pub fn publish(&mut self, room: &str, data: Value) -> Result<Id, ClientError> {
        self.usable()?;
        if !self.rooms.contains_key(room) {
            return Err(ClientError::NotJoined);
        }
        let open = self.is_open();
        if !open && self.pending.len() >= self.config.max_offline_publishes {
            return Err(ClientError::QueueFull);
        }
        // Behind a held (retried) publish of the room: sent with it, in order.
        let open = open
            && self
                .rooms
                .get(room)
                .is_some_and(|r| r.hold.is_none() && r.probe.is_none());
        let id = self.new_id();
        let text = encode(&ClientMessage::Publish {
            id: id.clone(),
            room: room.into(),
            data,
        });
        if open {
            self.send_text(text.clone());
        }
        self.pending.push_back(Pending {
            id: id.clone(),
            room: room.into(),
            text,
            tries: (0, Duration::ZERO),
        });
        Ok(id)
    }

    /// Sends `data` to client `to`, which must share a room with this client; returns the id
    /// that [`ClientEvent::Sent`] or [`ClientEvent::SendRejected`] will carry. Sent at once,
    /// never queued nor resent: refused with [`ClientError::Offline`] while no connection is
    /// open (see the module documentation).
    pub fn send(&mut self, to: &str, data: Value) -> Result<Id, ClientError> {
        self.usable()?;
        if !protocol::is_name(to) {
            return Err(ClientError::BadClient);
        }
        if !self.is_open() {
            return Err(ClientError::Offline);
        }
        let id = self.new_id();
        self.send_message(&ClientMessage::Send {
            id: id.clone(),
            to: to.into(),
            data,
        });
        self.sending.push(id.clone());
        Ok(id)
    }

    /// Replaces the token sent with the next `hello` (e.g. a refreshed one).
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    // ---- queries ----

    /// This client's id: the configured one until a `welcome` says otherwise.
    pub fn client_id(&self) -> Option<&str> {
        self.client.as_deref()
    }

    /// Whether a connection is welcomed (online).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Whether [`ClientSession::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The rooms the session is in or joining, in name order.
    pub fn rooms(&self) -> impl Iterator<Item = &str> + '_ {
        self.rooms.keys().map(String::as_str)
    }

    /// Whether the server confirmed membership of `room` on the current connection.
    pub fn is_joined(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| r.joined)
    }

    /// Members of `room` and their presence, as of the last `joined` and the events since (this
    /// client included), in client id order. Kept while offline, replaced on rejoin.
    pub fn members(&self, room: &str) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.members.iter().map(|(c, p)| (c.as_str(), p)))
    }

    /// Where the application's copy of `room` stands: the epoch and the last seq delivered.
    pub fn position(&self, room: &str) -> Option<Since> {
        let (epoch, seq) = self.rooms.get(room)?.position.as_ref()?;
        Some(Since {
            epoch: epoch.clone(),
            seq: *seq,
        })
    }

    /// Publishes not yet acknowledged or refused.
    pub fn pending_publishes(&self) -> usize {
        self.pending.len()
    }

    // ---- internals ----

    fn tick(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    fn usable(&self) -> Result<(), ClientError> {
        if self.is_closed() {
            Err(ClientError::Closed)
        } else {
            Ok(())
        }
    }

    fn new_id(&mut self) -> Id {
        self.next_id += 1;
        Id::Number(self.next_id)
    }

    fn event(&mut self, event: ClientEvent) {
        self.events.push_back(event);
    }

    fn send_message(&mut self, message: &ClientMessage) {
        self.send_text(encode(message));
    }

    fn send_text(&mut self, text: String) {
        self.out.push_back(text);
        if let State::Open(heartbeat) = &mut self.state {
            heartbeat.last_sent = self.now;
        }
    }

    /// Whether `id` is an unanswered `send`, which it no longer is. By `retain` rather than
    /// `Vec::remove`, whose panic message would bring integer formatting into a browser's
    /// `.wasm`.
    fn answered(&mut self, id: &Id) -> bool {
        let before = self.sending.len();
        self.sending.retain(|s| s != id);
        self.sending.len() < before
    }

    /// Every unanswered `send` fails with `code`: it is not resent.
    fn reject_sends(&mut self, code: &str) {
        for id in core::mem::take(&mut self.sending) {
            self.event(ClientEvent::SendRejected {
                id,
                code: code.into(),
                message: "no answer before the connection ended".into(),
            });
        }
    }

    /// The session decided the socket is dead: tell the driver, then back off.
    fn give_up_socket(&mut self, reason: DisconnectReason) {
        self.event(ClientEvent::CloseSocket { reason });
        self.reset_connection(reason);
        self.backoff();
    }

    /// Forgets everything that lived on the connection that just ended.
    fn reset_connection(&mut self, reason: DisconnectReason) {
        self.out.clear();
        for state in self.rooms.values_mut() {
            state.joined = false;
            state.joining = None;
            // The rejoin and the resends after the next `welcome` retry what was held.
            state.hold = None;
            state.held_join = None;
            state.probe = None;
            state.join_tries = (0, Duration::ZERO);
        }
        // A leave in flight is done: membership does not outlive the connection.
        for (_, room) in core::mem::take(&mut self.leaving).0 {
            self.event(ClientEvent::Left { room });
        }
        self.reject_sends(if reason == DisconnectReason::TakenOver {
            "taken_over"
        } else {
            "disconnected"
        });
        self.event(ClientEvent::Disconnected { reason });
    }

    /// Another connection took this client id over: end for good, as [`ClientSession::close`]
    /// does, after telling the driver to drop the socket.
    fn taken_over(&mut self) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.event(ClientEvent::CloseSocket {
            reason: DisconnectReason::TakenOver,
        });
        self.reset_connection(DisconnectReason::TakenOver);
        self.state = State::Closed;
        self.out.clear();
        self.pending.clear();
        self.event(ClientEvent::Closed);
    }

    fn backoff(&mut self) {
        self.attempt = self.attempt.saturating_add(1);
        let delay = self.backoff_delay(self.attempt);
        self.state = State::Backoff {
            until: self.now.saturating_add(delay),
        };
        self.event(ClientEvent::Reconnecting {
            attempt: self.attempt,
            delay,
        });
    }

    /// Full jitter: uniform in `[0, min(max, initial × multiplier^(attempt-1))]`.
    fn backoff_delay(&mut self, attempt: u32) -> Duration {
        let max = self.config.max_backoff.as_nanos();
        let multiplier = self.config.backoff_multiplier;
        let multiplier = if multiplier >= 1.0 { multiplier } else { 1.0 };
        let mut bound = self.config.initial_backoff.as_nanos().min(max);
        let mut grown = bound as f64;
        for _ in 1..attempt {
            if bound >= max {
                break;
            }
            grown *= multiplier;
            // Float to integer casts saturate.
            bound = (grown as u128).min(max);
        }
        let bound = u64::try_from(bound).unwrap_or(u64::MAX);
        let draw = splitmix64(&mut self.rng);
        let nanos = match bound.checked_add(1) {
            Some(span) => draw % span,
            None => draw,
        };
        Duration::from_nanos(nanos)
    }

    fn handle(&mut self, message: Incoming) {
        match message {
            Incoming::Welcome {
                client,
                heartbeat_ms,
            } => self.welcome(client, Duration::from_millis(heartbeat_ms)),
            Incoming::Joined(reply) => self.joined(reply),
            Incoming::Left { id } => {
                if let Some(room) = self.leaving.remove(&id) {
                    self.event(ClientEvent::Left { room });
                }
            }
            Incoming::Ack { id, seq } => {
                if let Some(at) = self.pending.iter().position(|p| p.id == id) {
                    if let Some(publish) = self.pending.remove(at) {
                        self.end_probe(&publish.room, &id);
                        self.event(ClientEvent::Ack {
                            id,
                            room: publish.room,
                            seq,
                        });
                    }
                }
            }
            Incoming::Message {
                room,
                seq,
                from,
                data,
            } => self.message(room, seq, from, data),
            Incoming::Presence {
                room,
                client,
                presence,
            } => {
                if let Some(state) = self.member_table(&room) {
                    state.insert(client.clone(), presence.clone());
                    self.event(ClientEvent::Presence {
                        room,
                        client,
                        presence,
                    });
                }
            }
            Incoming::Join {
                room,
                client,
                presence,
            } => {
                if let Some(state) = self.member_table(&room) {
                    state.insert(client.clone(), presence.clone());
                    self.event(ClientEvent::MemberJoined {
                        room,
                        client,
                        presence,
                    });
                }
            }
            Incoming::Leave { room, client } => {
                if let Some(state) = self.member_table(&room) {
                    state.remove(&client);
                    self.event(ClientEvent::MemberLeft { room, client });
                }
            }
            Incoming::Pong {} => {}
            Incoming::Gap { room, to_seq } => {
                let hole = self.rooms.get(&room).is_some_and(|r| {
                    r.joined
                        && r.joining.is_none()
                        && r.position.as_ref().is_some_and(|p| to_seq > p.1)
                });
                if hole {
                    self.refill(&room);
                }
            }
            Incoming::Error { id, code, message } => self.error(id, code, message),
            Incoming::Sent { id } => {
                if self.answered(&id) {
                    self.event(ClientEvent::Sent { id });
                }
            }
            Incoming::Direct { from, data } => self.event(ClientEvent::Direct { from, data }),
        }
    }

    /// The member table of a room this connection is a member of. Before `joined` nothing
    /// concerns the new membership: the server sends member events only to members.
    fn member_table(&mut self, room: &str) -> Option<&mut BTreeMap<String, Value>> {
        self.rooms
            .get_mut(room)
            .filter(|r| r.joined)
            .map(|r| &mut r.members)
    }

    fn welcome(&mut self, client: String, heartbeat: Duration) {
        if !matches!(self.state, State::Handshaking { .. }) {
            self.event(ClientEvent::ProtocolError {
                message: "unexpected `welcome`".into(),
            });
            return;
        }
        let now = self.now;
        self.state = State::Open(Heartbeat {
            interval: heartbeat,
            last_sent: now,
            last_received: now,
            ping_sent: None,
        });
        self.attempt = 0;
        self.client = Some(client.clone());
        self.event(ClientEvent::Welcome { client, heartbeat });
        // Rooms first, each resuming where the application's copy stopped; then the publishes,
        // which need the membership.
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for room in names {
            let id = match self.rooms.get_mut(&room).and_then(|r| r.unsent_id.take()) {
                Some(id) => id,
                None => self.new_id(),
            };
            let Some(state) = self.rooms.get_mut(&room) else {
                continue;
            };
            let since = state.position.as_ref().map(|(epoch, seq)| Since {
                epoch: epoch.clone(),
                seq: *seq,
            });
            state.joining = Some(Joining {
                id: id.clone(),
                since: since.clone(),
                refill: false,
            });
            let join = ClientMessage::Join {
                id,
                room,
                presence: state.presence.clone(),
                since,
            };
            self.send_message(&join);
        }
        let texts: Vec<String> = self.pending.iter().map(|p| p.text.clone()).collect();
        for text in texts {
            self.send_text(text);
        }
    }

    fn joined(&mut self, reply: JoinedReply) {
        let JoinedReply {
            id,
            room,
            epoch,
            seq,
            members,
            members_truncated,
            recovered,
        } = reply;
        let Some(state) = self.rooms.get_mut(&room) else {
            return; // left meanwhile
        };
        if state.joining.as_ref().is_none_or(|j| j.id != id) {
            return; // answers a join this connection no longer waits for
        }
        let Some(joining) = state.joining.take() else {
            return;
        };
        state.joined = true;
        state.join_tries = (0, Duration::ZERO);
        // Inserted one by one rather than collected: the same map (a later duplicate wins)
        // without the sort and bulk build `collect` brings into a browser's `.wasm`.
        state.members = BTreeMap::new();
        for member in &members {
            state
                .members
                .insert(member.client.clone(), member.presence.clone());
        }
        // Did the replay (if any) bring the application's copy up to `seq`?
        let mut resync = false;
        let mut hole = false;
        match (&joining.since, &state.position) {
            (Some(since), Some((last_epoch, last)))
                if recovered && since.epoch == epoch && *last_epoch == epoch =>
            {
                // Replayed messages were delivered as they came; some may have been dropped
                // on the way (slow consumer).
                hole = *last < seq;
            }
            (Some(since), _) => {
                resync = true;
                if since.epoch != epoch && seq > 0 {
                    // A new epoch (the server restarted or forgot the room): none of its
                    // messages reached this client yet; fetch them from its history.
                    state.position = Some((epoch.clone(), 0));
                    hole = true;
                } else {
                    state.position = Some((epoch.clone(), seq));
                }
            }
            (None, _) => state.position = Some((epoch.clone(), seq)),
        }
        if !joining.refill {
            self.event(ClientEvent::Joined {
                id,
                room: room.clone(),
                epoch,
                seq,
                members,
                members_truncated,
                recovered,
            });
        }
        if resync {
            self.event(ClientEvent::Resync { room: room.clone() });
        }
        if hole {
            self.refill(&room);
        }
    }

    fn message(&mut self, room: String, seq: u64, from: String, data: Value) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        let Some((_, last)) = &mut state.position else {
            return; // never joined: nothing to continue
        };
        let recovering = match &state.joining {
            // A fresh join gets no replay: this belongs to an earlier membership.
            Some(Joining { since: None, .. }) => return,
            Some(Joining { since: Some(_), .. }) => true,
            None if !state.joined => return,
            None => false,
        };
        if seq <= *last {
            return; // already delivered (a replay overlapping the live stream)
        }
        if seq == *last + 1 {
            *last = seq;
            self.event(ClientEvent::Message {
                room,
                seq,
                from,
                data,
            });
        } else if !recovering {
            // A hole (dropped for a slow consumer; the `gap` notice may come later): fetch it
            // from history. This message comes again in the replay.
            self.refill(&room);
        }
    }

    /// Rejoins `room`, already joined on this connection, from the last seq delivered: the
    /// server replays what follows, then answers `joined` without changing membership.
    fn refill(&mut self, room: &str) {
        if !self.is_open() {
            return;
        }
        let id = self.new_id();
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if state.held_join.is_some() {
            return; // a refill waits for its retry
        }
        let Some((epoch, seq)) = &state.position else {
            return;
        };
        let since = Since {
            epoch: epoch.clone(),
            seq: *seq,
        };
        state.joining = Some(Joining {
            id: id.clone(),
            since: Some(since.clone()),
            refill: true,
        });
        self.send_message(&ClientMessage::Join {
            id,
            room: room.into(),
            presence: None,
            since: Some(since),
        });
    }

    fn error(&mut self, id: Option<Id>, code: String, message: String) {
        if code == protocol::ErrorCode::TakenOver.as_str() {
            self.event(ClientEvent::ServerError { id, code, message });
            self.taken_over();
            return;
        }
        let unavailable = code == protocol::ErrorCode::Unavailable.as_str();
        if let Some(id) = &id {
            let join = self
                .rooms
                .iter()
                .find(|(_, r)| r.joining.as_ref().is_some_and(|j| j.id == *id))
                .map(|(room, _)| room.clone());
            if let Some(room) = join {
                if unavailable && self.hold_join(&room) {
                    return;
                }
                self.rooms.remove(&room);
                self.event(ClientEvent::JoinRejected {
                    id: id.clone(),
                    room,
                    code,
                    message,
                });
                return;
            }
            if let Some(at) = self.pending.iter().position(|p| p.id == *id) {
                // `not_joined` behind a join held for a retry: retried with it.
                let retry = unavailable
                    || (code == protocol::ErrorCode::NotJoined.as_str()
                        && self
                            .rooms
                            .get(&self.pending[at].room)
                            .is_some_and(|r| r.held_join.is_some()));
                if retry && self.hold_publish(at) {
                    return;
                }
                if let Some(publish) = self.pending.remove(at) {
                    self.end_probe(&publish.room, id);
                    self.event(ClientEvent::PublishRejected {
                        id: id.clone(),
                        room: publish.room,
                        code,
                        message,
                    });
                }
                return;
            }
            if let Some(room) = self.leaving.remove(id) {
                // Not a member: as good as left.
                self.event(ClientEvent::Left { room });
                return;
            }
            if self.answered(id) {
                let id = id.clone();
                self.event(ClientEvent::SendRejected { id, code, message });
                return;
            }
        }
        self.event(ClientEvent::ServerError { id, code, message });
    }
}

impl ClientSession {
    /// Counts one more `unavailable` (`tries`): the delay before the retry, or `None` once
    /// [`ClientConfig::unavailable_retries`] or [`ClientConfig::unavailable_timeout`] is spent.
    fn retry_delay(&mut self, tries: &mut (u32, Duration)) -> Option<Duration> {
        if tries.0 == 0 {
            tries.1 = self.now;
        }
        tries.0 = tries.0.saturating_add(1);
        let spent = self.now.saturating_sub(tries.1) >= self.config.unavailable_timeout;
        if tries.0 > self.config.unavailable_retries || spent {
            return None;
        }
        Some(self.backoff_delay(tries.0))
    }

    /// Holds `room`'s join, refused with `unavailable`, for a retry; false past the bound.
    fn hold_join(&mut self, room: &str) -> bool {
        let Some(mut tries) = self.rooms.get(room).map(|r| r.join_tries) else {
            return false;
        };
        let delay = self.retry_delay(&mut tries);
        let now = self.now;
        let Some(state) = self.rooms.get_mut(room) else {
            return false;
        };
        state.join_tries = tries;
        let Some(delay) = delay else {
            return false;
        };
        state.held_join = state.joining.take();
        state.hold.get_or_insert(now.saturating_add(delay));
        true
    }

    /// Holds the publish at `at`, refused with `unavailable`, and its room's later publishes
    /// for a retry; false past the bound (or when the room was left).
    fn hold_publish(&mut self, at: usize) -> bool {
        let Some(mut tries) = self.pending.get(at).map(|p| p.tries) else {
            return false;
        };
        let delay = self.retry_delay(&mut tries);
        let now = self.now;
        let Some(publish) = self.pending.get_mut(at) else {
            return false;
        };
        publish.tries = tries;
        let (Some(delay), Some(state)) = (delay, self.rooms.get_mut(&publish.room)) else {
            return false;
        };
        state.hold.get_or_insert(now.saturating_add(delay));
        state.probe = None;
        true
    }

    /// The answer to `room`'s retried publish `id` came: the publishes held behind it go out.
    fn end_probe(&mut self, room: &str, id: &Id) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if state.probe.as_ref() == Some(id) {
            state.probe = None;
            if state.hold.is_none() {
                self.send_publishes(room, false);
            }
        }
    }

    /// Sends `room`'s unacked publishes in order, or with `probe` only the first, which the
    /// others then wait for.
    fn send_publishes(&mut self, room: &str, probe: bool) {
        // By index rather than collected: no new `Vec` type in a browser's `.wasm`.
        for at in 0..self.pending.len() {
            let Some(publish) = self.pending.get(at).filter(|p| p.room == room) else {
                continue;
            };
            let text = publish.text.clone();
            if probe {
                let id = publish.id.clone();
                if let Some(state) = self.rooms.get_mut(room) {
                    state.probe = Some(id);
                }
            }
            self.send_text(text);
            if probe {
                return;
            }
        }
    }

    /// Sends again what rooms held past their `hold`: the join (same id), then the room's first
    /// unacked publish (same id: the server delivers it once), the others once it is answered.
    fn release_holds(&mut self) {
        let now = self.now;
        for at in 0..self.rooms.0.len() {
            let Some((room, state)) = self.rooms.0.get_mut(at) else {
                continue;
            };
            if state.hold.is_none_or(|hold| now < hold) {
                continue;
            }
            let room = room.clone();
            state.hold = None;
            if let Some(joining) = state.held_join.take() {
                let join = ClientMessage::Join {
                    id: joining.id.clone(),
                    room: room.clone(),
                    presence: if joining.refill {
                        None
                    } else {
                        state.presence.clone()
                    },
                    since: joining.since.clone(),
                };
                state.joining = Some(joining);
                self.send_message(&join);
            }
            self.send_publishes(&room, true);
        }
    }
}

impl Heartbeat {
    /// When to send a `ping` (after `interval` without traffic either way), or, with a `ping`
    /// out, when the connection counts as dead.
    fn deadline(&self) -> Option<Duration> {
        if self.interval.is_zero() {
            return None;
        }
        let from = match self.ping_sent {
            Some(sent) => sent,
            None => self.last_sent.min(self.last_received),
        };
        Some(from.saturating_add(self.interval))
    }
}

fn encode(message: &ClientMessage) -> String {
    // Cannot fail: every map key is a string.
    serde_json::to_string(message).unwrap_or_default()
}

/// SplitMix64 as a generator: advances `state`, returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // `get` rather than indexing: the same slice without the panic path's formatting code,
    // which would be most of what a browser's `.wasm` spends on `core::fmt`.
    text.get(..end).unwrap_or(text)
}
