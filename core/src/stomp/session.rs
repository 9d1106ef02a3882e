//! # A STOMP client's session on a `duplex.v1` hub
//!
//! [`StompSession`] lets a STOMP 1.0–1.2 client (`@stomp/stompjs`, stomp.py, Spring's client)
//! share rooms with `duplex.v1` clients. It sits between one WebSocket connection and the
//! [`Hub`](crate::channel::Hub): the frames the client sends become `duplex.v1` commands
//! ([`Output::Command`], which the driver hands to the hub exactly as a decoded `duplex.v1` frame,
//! `hello` and its token included), and what the hub sends back to that connection
//! ([`StompSession::deliver`]) becomes STOMP frames ([`Output::Send`]). It does no I/O and reads
//! no clock: time comes in with each call, the heart-beat deadline goes out with
//! [`StompSession::poll_timeout`].
//!
//! ## Mapping
//! - `CONNECT`/`STOMP` → `hello` (client id from `login`; token from `passcode`, a `CONNECT`
//!   header `Authorization: Bearer …`, or the WebSocket upgrade's, given to [`StompSession::new`]);
//!   the hub's `welcome` → `CONNECTED` with `version`, `heart-beat`, `session` (the client id) and
//!   `server`; a refused `hello` → `ERROR`, then close.
//! - Destinations: `/topic/NS/NAME` is the room `NS/NAME` (the room naming rules); anything else
//!   is an `ERROR`, then close.
//! - `SUBSCRIBE` → `join` (once per room, however many subscriptions name it), with `since` from a
//!   `since: EPOCH:SEQ` header; its `receipt` is sent once the hub answered `joined`, so the
//!   subscription is live when the client hears of it. `UNSUBSCRIBE` of a room's last
//!   subscription → `leave`.
//! - `SEND` → `publish`. The room is joined first if the client has no subscription to it (a
//!   member that receives nothing). `content-type: application/json` → `data` is the body's JSON
//!   value; any other body → `data` is the body as a string (it must be UTF-8). An `id` header
//!   makes the publish idempotent: a retry with the same id is acked with the first `seq` and
//!   not delivered twice. A `receipt` is sent once the hub acked the publish (it is sequenced).
//! - A room `message` → one `MESSAGE` per subscription to its room: `destination`,
//!   `subscription`, `message-id` = `EPOCH:SEQ`, `from` (the sender's client id), `ack` in the
//!   client ack modes, and the body: a string `data` as is (`content-type: text/plain`), any other
//!   `data` as compact JSON (`content-type: application/json`). Messages reach the client once
//!   and in `seq` order: a hole (`gap`, the connection was too slow) is refilled by joining again
//!   with `since`, and live messages past the hole wait for that replay.
//! - `ACK`/`NACK` are accepted in every ack mode (`auto`, `client`, `client-individual`); the
//!   server keeps no per-message state: a client that reconnects resubscribes with `since` = the
//!   last message it acked, and gets what followed from the room's history.
//! - `BEGIN`/`COMMIT`/`ABORT`: `SEND`, `ACK` and `NACK` with a `transaction` header wait for
//!   `COMMIT` (then run in order) or are dropped by `ABORT` or by the end of the connection.
//! - `DISCONNECT` with `receipt` → `RECEIPT` once every earlier `SEND` is acked, then close.
//! - Heart-beats as negotiated ([`HeartBeat::negotiate`]): the server sends each beat (an EOL) as
//!   its own WebSocket message, never advertises beats it does not send, and counts any inbound
//!   byte as life; a client silent for twice its period is closed.
//! - Any error (a frame the decoder refuses, a missing header, a command the hub refuses) → one
//!   `ERROR` frame with a `message` header (and `receipt-id` when the failing frame asked for a
//!   receipt), then [`Output::Close`].
//!
//! Presence events, `pong`, `sent` and `direct` have no STOMP form and are not forwarded.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use serde_json::Value;

use super::{Command, Decoder, Frame, FrameWriter, HeartBeat, Item, Limits, Version};

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
use crate::channel::Delivery;
use crate::channel::protocol::{self, ClientMessage, Id, ServerMessage, Since};

/// Settings of [`StompSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompConfig {
    /// The `server` header of `CONNECTED`, e.g. `duplex/0.1.0`.
    pub server: String,
    /// The server's side of the heart-beat negotiation. The default, `1000,10000`: beats as often
    /// as once a second to a client that asks for them, and one from the client at least every
    /// 10 s (or the client's own period if longer).
    pub heart_beat: HeartBeat,
    /// Frame limits of the decoder.
    pub limits: Limits,
    /// The most subscriptions of one session.
    pub max_subscriptions: usize,
    /// The most frames waiting in open transactions.
    pub max_transaction_frames: usize,
    /// The most messages held behind a hole while it is being refilled, per room; past it
    /// they are dropped too and the refill brings them.
    pub max_held: usize,
}

impl Default for StompConfig {
    fn default() -> StompConfig {
        StompConfig {
            server: String::from("duplex"),
            heart_beat: HeartBeat {
                can_send: 1000,
                want_receive: 10_000,
            },
            limits: Limits::default(),
            max_subscriptions: 256,
            max_transaction_frames: 1024,
            max_held: 1024,
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Hand this command to the hub, as a decoded `duplex.v1` frame of this connection.
    Command(ClientMessage),
    /// Send these bytes to the client as one WebSocket message (text: every STOMP frame Duplex
    /// writes is UTF-8 unless a body is not).
    Send(Vec<u8>),
    /// Close the WebSocket: `true` after `DISCONNECT` (close code 1000), `false` after an `ERROR`
    /// frame or a silent peer (the driver picks 1002 or 1008 as it sees fit).
    Close(bool),
}

/// The body of the `MESSAGE` frames of one room message, the same for every STOMP subscriber:
/// a string `data` is the string (`text/plain`), any other `data` its compact JSON
/// (`application/json`). A server delivering one message to many sessions makes it once
/// ([`MessageBody::of_json`]) and hands it to each with [`StompSession::deliver_typed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody {
    /// The body bytes.
    pub bytes: Arc<[u8]>,
    /// `text/plain` or `application/json`.
    pub content_type: &'static str,
}

impl MessageBody {
    /// The body for a message's `data` given as JSON text ([`RoomMessage::data`]): a JSON
    /// string becomes its text, anything else stays as it is (compact JSON).
    ///
    /// [`RoomMessage::data`]: crate::channel::RoomMessage::data
    pub fn of_json(data: &str) -> MessageBody {
        if data.starts_with('"')
            && let Ok(text) = serde_json::from_str::<String>(data)
        {
            return MessageBody {
                bytes: Arc::from(text.into_bytes()),
                content_type: "text/plain",
            };
        }
        MessageBody {
            bytes: Arc::from(data.as_bytes()),
            content_type: "application/json",
        }
    }

    /// The body for a message's `data`.
    pub fn of(data: &Value) -> MessageBody {
        match data {
            Value::String(s) => MessageBody {
                bytes: Arc::from(s.as_bytes()),
                content_type: "text/plain",
            },
            other => MessageBody {
                bytes: Arc::from(other.to_string().into_bytes()),
                content_type: "application/json",
            },
        }
    }
}

/// One subscription.
#[derive(Debug, Clone)]
struct Subscription {
    room: String,
    ack: AckMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

/// This session's membership of one room.
#[derive(Debug, Clone, Default)]
struct RoomState {
    /// Subscription ids naming the room, in subscription order.
    subscriptions: Vec<String>,
    /// The room's epoch, from `joined`.
    epoch: Option<String>,
    /// The last seq passed to the client.
    last: Option<u64>,
    /// Whether a `join` is waiting for `joined`.
    joining: bool,
    /// A refill (join with `since`) is under way: messages past the hole are held.
    refilling: bool,
    /// Messages past a hole, by seq.
    held: BTreeMap<u64, (String, MessageBody)>,
}

/// What a command id waits for.
#[derive(Debug, Clone)]
enum Pending {
    /// A join; `receipt` of the SUBSCRIBE that caused it.
    Join {
        room: String,
        receipt: Option<String>,
    },
    /// A publish and its `receipt`.
    Publish { receipt: Option<String> },
    /// A leave.
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `CONNECT`.
    Connecting,
    /// `hello` sent, waiting for `welcome`.
    Welcoming,
    /// Connected.
    Open,
    /// `DISCONNECT` seen: waiting for the publishes before it, then `RECEIPT` and close.
    Disconnecting,
    /// `ERROR` or close sent: everything else is ignored.
    Done,
}

/// One STOMP connection on a `duplex.v1` hub (see the module documentation).
#[derive(Debug, Clone)]
pub struct StompSession {
    config: StompConfig,
    decoder: Decoder,
    version: Version,
    /// The highest version `CONNECT` may choose.
    highest: Version,
    phase: Phase,
    /// The token from the WebSocket upgrade (`Authorization: Bearer`), if any.
    upgrade_token: Option<String>,
    client: Option<String>,
    client_heart_beat: HeartBeat,
    send_every: Option<Duration>,
    expect_every: Option<Duration>,
    last_in: Duration,
    last_out: Duration,
    subscriptions: BTreeMap<String, Subscription>,
    rooms: BTreeMap<String, RoomState>,
    pending: BTreeMap<String, Pending>,
    transactions: BTreeMap<String, Vec<Frame>>,
    transaction_frames: usize,
    disconnect_receipt: Option<String>,
    next_id: u64,
    out: VecDeque<Output>,
}

impl StompSession {
    /// A session for a connection that just opened at `now`. `upgrade_token` is the bearer
    /// token of the WebSocket upgrade request, used when `CONNECT` carries none.
    pub fn new(config: StompConfig, upgrade_token: Option<String>, now: Duration) -> StompSession {
        StompSession {
            decoder: Decoder::new(config.limits),
            config,
            version: Version::V1_2,
            highest: Version::V1_2,
            phase: Phase::Connecting,
            upgrade_token,
            client: None,
            client_heart_beat: HeartBeat::default(),
            send_every: None,
            expect_every: None,
            last_in: now,
            last_out: now,
            subscriptions: BTreeMap::new(),
            rooms: BTreeMap::new(),
            pending: BTreeMap::new(),
            transactions: BTreeMap::new(),
            transaction_frames: 0,
            disconnect_receipt: None,
            next_id: 0,
            out: VecDeque::new(),
        }
    }

    /// Caps the version `CONNECT` may negotiate: the version of the WebSocket subprotocol the
    /// upgrade chose (`v11.stomp` → at most 1.1). A session on a connection without a STOMP
    /// subprotocol takes the highest of `accept-version`.
    pub fn limit_version(&mut self, highest: Version) {
        self.highest = highest;
    }

    /// The negotiated version (1.2 until `CONNECT`).
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the session ended (an `ERROR` or the `DISCONNECT` receipt went out): the driver
    /// closes once it sent the outputs.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The client id the hub gave this session, once connected.
    pub fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Bytes of one WebSocket message from the client (a text or binary message: STOMP frames,
    /// heart-beat EOLs, or part of a frame).
    pub fn receive(&mut self, bytes: &[u8], now: Duration) {
        self.last_in = self.last_in.max(now);
        if self.phase == Phase::Done {
            return;
        }
        self.decoder.push(bytes);
        loop {
            match self.decoder.poll() {
                Ok(Some(Item::Heartbeat)) => {}
                Ok(Some(Item::Frame(frame))) => {
                    self.frame(frame, now);
                    if self.phase == Phase::Done {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => return self.fail(&e.to_string(), None, now),
            }
        }
    }

    /// One message the hub sent to this connection.
    pub fn deliver(&mut self, message: &ServerMessage, now: Duration) {
        if self.phase == Phase::Done {
            return;
        }
        match message {
            ServerMessage::Welcome { client, .. } if self.phase == Phase::Welcoming => {
                self.client = Some(client.clone());
                self.connected(client.clone(), now);
            }
            ServerMessage::Joined {
                id,
                room,
                epoch,
                seq,
                recovered,
                ..
            } => self.joined(id, room, epoch, *seq, *recovered, now),
            ServerMessage::Ack { id, .. } => {
                if let Some(Pending::Publish { receipt }) = self.pending.remove(&key(id)) {
                    if let Some(receipt) = receipt {
                        self.receipt(&receipt, now);
                    }
                    self.maybe_disconnect(now);
                }
            }
            ServerMessage::Left { id, .. } => {
                self.pending.remove(&key(id));
            }
            ServerMessage::Message {
                room,
                seq,
                from,
                data,
            } => self.message(room, *seq, from, &MessageBody::of(data), now),
            ServerMessage::Gap { room, .. } => self.refill(room),
            ServerMessage::Error { id, code, message } => {
                let pending = id.as_ref().and_then(|id| self.pending.remove(&key(id)));
                let receipt = match &pending {
                    Some(Pending::Join { receipt, .. } | Pending::Publish { receipt }) => {
                        receipt.clone()
                    }
                    _ => None,
                };
                let text = format!("{code}: {message}");
                self.fail(&text, receipt.as_deref(), now);
            }
            ServerMessage::Welcome { .. }
            | ServerMessage::Presence { .. }
            | ServerMessage::Join { .. }
            | ServerMessage::Leave { .. }
            | ServerMessage::Pong { .. }
            | ServerMessage::Sent { .. }
            | ServerMessage::Direct { .. } => {}
        }
    }

    /// A typed delivery of the hub ([`Delivery`]): `body` is the room message's body made once
    /// for its whole fan-out ([`MessageBody::of_json`]), or `None` to make it here.
    pub fn deliver_typed(
        &mut self,
        delivery: &Delivery,
        body: Option<&MessageBody>,
        now: Duration,
    ) {
        if self.phase == Phase::Done {
            return;
        }
        match delivery {
            Delivery::Message(m) => match body {
                Some(body) => self.message(&m.room, m.seq, &m.from, body, now),
                None => self.message(&m.room, m.seq, &m.from, &MessageBody::of_json(&m.data), now),
            },
            Delivery::Joined(j) => self.joined(&j.id, &j.room, &j.epoch, j.seq, j.recovered, now),
            Delivery::Reply(message) => self.deliver(message, now),
            // No STOMP form (see the module documentation).
            Delivery::Direct(_) => {}
        }
    }

    fn joined(
        &mut self,
        id: &Id,
        room: &str,
        epoch: &str,
        seq: u64,
        recovered: bool,
        now: Duration,
    ) {
        let Some(Pending::Join { receipt, .. }) = self.pending.remove(&key(id)) else {
            return;
        };
        if let Some(state) = self.rooms.get_mut(room) {
            state.joining = false;
            if state.epoch.as_deref() != Some(epoch) {
                // A first join, or the room started a new epoch (its history is gone): the
                // client goes on from here.
                state.epoch = Some(String::from(epoch));
                state.last = Some(seq);
            } else if !recovered {
                // The history no longer holds what followed `since`: what is missing is lost,
                // the client goes on from here.
                state.last = Some(state.last.map_or(seq, |l| l.max(seq)));
            }
            state.refilling = false;
            let held = core::mem::take(&mut state.held);
            for (seq, (from, body)) in held {
                self.message(room, seq, &from, &body, now);
            }
        }
        if let Some(receipt) = receipt {
            self.receipt(&receipt, now);
        }
    }

    /// When [`StompSession::handle_timeout`] is due: the next heart-beat to send, or the moment
    /// the client has been silent for too long.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.phase == Phase::Done {
            return None;
        }
        let beat = self.send_every.map(|p| self.last_out + p);
        let silence = self.expect_every.map(|p| self.last_in + p * 2);
        match (beat, silence) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends a heart-beat when one is due, or closes a silent client.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.phase == Phase::Done {
            return;
        }
        if let Some(p) = self.expect_every
            && now >= self.last_in + p * 2
        {
            self.phase = Phase::Done;
            self.out.push_back(Output::Close(false));
            return;
        }
        if let Some(p) = self.send_every
            && now >= self.last_out + p
        {
            self.send_bytes(b"\n".to_vec(), now);
        }
    }

    fn frame(&mut self, frame: Frame, now: Duration) {
        let receipt = frame.header("receipt").map(String::from);
        match (self.phase, frame.command) {
            (Phase::Connecting, Command::Connect | Command::Stomp) => self.connect(&frame, now),
            (Phase::Connecting, c) => self.fail(
                &format!("expected CONNECT or STOMP, got {c}"),
                receipt.as_deref(),
                now,
            ),
            (Phase::Welcoming | Phase::Open, Command::Connect | Command::Stomp) => {
                self.fail("already connected", receipt.as_deref(), now)
            }
            (Phase::Welcoming | Phase::Open, _) => {
                if let Err(text) = self.command(frame, now) {
                    self.fail(&text, receipt.as_deref(), now);
                }
            }
            (Phase::Disconnecting | Phase::Done, _) => {}
        }
    }

    fn connect(&mut self, frame: &Frame, now: Duration) {
        let receipt = frame.header("receipt");
        let Some(version) = Version::negotiate_up_to(frame.header("accept-version"), self.highest)
        else {
            let error = Frame::new(Command::Error)
                .with_header("version", "1.2,1.1,1.0")
                .with_header("content-type", "text/plain")
                .with_header(
                    "message",
                    "no common version: this server speaks 1.0, 1.1 and 1.2",
                )
                .with_body(&b"supported versions: 1.2,1.1,1.0"[..]);
            self.send_frame(&error, now);
            self.phase = Phase::Done;
            self.out.push_back(Output::Close(false));
            return;
        };
        self.version = version;
        self.decoder.set_version(version);
        let client_beat = match frame.header("heart-beat") {
            None => HeartBeat::default(),
            Some(value) => match HeartBeat::parse(value) {
                Ok(beat) => beat,
                Err(e) => return self.fail(&e.to_string(), receipt, now),
            },
        };
        self.client_heart_beat = client_beat;
        let client = match frame.header("login").filter(|l| !l.is_empty()) {
            Some(login) if protocol::is_name(login) => Some(String::from(login)),
            Some(_) => {
                return self.fail(
                    "login must be a client id: 1 to 128 bytes of [A-Za-z0-9_.:-]",
                    receipt,
                    now,
                );
            }
            None => None,
        };
        let bearer = frame
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.strip_prefix("Bearer "))
            .map(String::from);
        let token = frame
            .header("passcode")
            .filter(|p| !p.is_empty())
            .map(String::from)
            .or(bearer)
            .or_else(|| self.upgrade_token.clone());
        self.phase = Phase::Welcoming;
        self.out
            .push_back(Output::Command(ClientMessage::Hello { client, token }));
    }

    fn connected(&mut self, session: String, now: Duration) {
        self.phase = Phase::Open;
        let (send, expect) = HeartBeat::negotiate(self.client_heart_beat, self.config.heart_beat);
        self.send_every = send.map(|ms| Duration::from_millis(u64::from(ms)));
        self.expect_every = expect.map(|ms| Duration::from_millis(u64::from(ms)));
        self.last_in = self.last_in.max(now);
        // What this server will do: beats only when it will send them, and a wish to receive
        // only when the client can send.
        let advertised = HeartBeat {
            can_send: send.map_or(0, |_| self.config.heart_beat.can_send),
            want_receive: expect.map_or(0, |_| self.config.heart_beat.want_receive),
        };
        let mut frame = Frame::new(Command::Connected)
            .with_header("version", self.version.as_str())
            .with_header("heart-beat", advertised.to_header())
            .with_header("session", session.clone())
            .with_header("server", self.config.server.clone());
        if self.version == Version::V1_0 {
            frame.headers.retain(|(n, _)| n != "heart-beat");
        }
        self.send_frame(&frame, now);
    }

    /// One frame of a connected session; `Err` is the text of the `ERROR` to send.
    fn command(&mut self, frame: Frame, now: Duration) -> Result<(), String> {
        if let Some(tx) = frame.header("transaction")
            && matches!(frame.command, Command::Send | Command::Ack | Command::Nack)
        {
            let tx = String::from(tx);
            if self.transaction_frames >= self.config.max_transaction_frames {
                return Err(format!(
                    "more than {} frames in open transactions",
                    self.config.max_transaction_frames
                ));
            }
            let Some(frames) = self.transactions.get_mut(&tx) else {
                return Err(format!("no transaction {tx:?} (BEGIN it first)"));
            };
            let receipt = frame.header("receipt").map(String::from);
            frames.push(frame);
            self.transaction_frames += 1;
            if let Some(r) = receipt {
                self.receipt(&r, now);
            }
            return Ok(());
        }
        let receipt = frame.header("receipt").map(String::from);
        match frame.command {
            Command::Send => return self.send(&frame, receipt),
            Command::Subscribe => return self.subscribe(&frame, receipt, now),
            Command::Unsubscribe => {
                let id = required(&frame, "id")?;
                let Some(sub) = self.subscriptions.remove(id) else {
                    return Err(format!("no subscription {id:?}"));
                };
                let leave = self.rooms.get_mut(&sub.room).is_some_and(|state| {
                    state.subscriptions.retain(|s| s != id);
                    state.subscriptions.is_empty()
                });
                if leave {
                    self.rooms.remove(&sub.room);
                    let id = self.next_command_id("leave");
                    self.pending.insert(key(&id), Pending::Leave);
                    self.out
                        .push_back(Output::Command(ClientMessage::Leave { id, room: sub.room }));
                }
            }
            Command::Ack | Command::Nack => {
                let name = if self.version == Version::V1_2 {
                    "id"
                } else {
                    "message-id"
                };
                required(&frame, name)?;
            }
            Command::Begin => {
                let tx = String::from(required(&frame, "transaction")?);
                if self.transactions.contains_key(&tx) {
                    return Err(format!("transaction {tx:?} is already open"));
                }
                self.transactions.insert(tx, Vec::new());
            }
            Command::Commit => {
                let tx = required(&frame, "transaction")?;
                let Some(frames) = self.transactions.remove(tx) else {
                    return Err(format!("no transaction {tx:?}"));
                };
                self.transaction_frames -= frames.len();
                for mut f in frames {
                    // Their receipts went out when they were queued.
                    f.headers
                        .retain(|(n, _)| n != "transaction" && n != "receipt");
                    self.command(f, now)?;
                }
            }
            Command::Abort => {
                let tx = required(&frame, "transaction")?;
                let Some(frames) = self.transactions.remove(tx) else {
                    return Err(format!("no transaction {tx:?}"));
                };
                self.transaction_frames -= frames.len();
            }
            Command::Disconnect => {
                self.transactions.clear();
                self.transaction_frames = 0;
                self.phase = Phase::Disconnecting;
                self.disconnect_receipt = receipt;
                self.maybe_disconnect(now);
                return Ok(());
            }
            c => return Err(format!("{c} is a server frame")),
        }
        if let Some(r) = receipt {
            self.receipt(&r, now);
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        frame: &Frame,
        receipt: Option<String>,
        now: Duration,
    ) -> Result<(), String> {
        let id = required(frame, "id")?;
        let room = room_of(required(frame, "destination")?)?;
        let ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            other => {
                return Err(format!(
                    "ack {other:?} is not auto, client or client-individual"
                ));
            }
        };
        let since = match frame.header("since") {
            None => None,
            Some(value) => Some(parse_since(value)?),
        };
        if self.subscriptions.contains_key(id) {
            return Err(format!("subscription {id:?} exists already"));
        }
        if self.subscriptions.len() >= self.config.max_subscriptions {
            return Err(format!(
                "more than {} subscriptions",
                self.config.max_subscriptions
            ));
        }
        self.subscriptions.insert(
            String::from(id),
            Subscription {
                room: room.clone(),
                ack,
            },
        );
        let state = self.rooms.entry(room.clone()).or_default();
        let first = state.subscriptions.is_empty();
        state.subscriptions.push(String::from(id));
        if !first && (state.joining || since.is_none()) {
            // The room is joined (or being joined) already: the subscription shares its stream.
            if let Some(r) = receipt {
                if state.joining {
                    self.chain_receipt(&room, r);
                } else {
                    self.receipt(&r, now);
                }
            }
            return Ok(());
        }
        self.join(room, since, receipt);
        Ok(())
    }

    /// Adds a receipt to be sent when the room's pending join is answered.
    fn chain_receipt(&mut self, room: &str, receipt: String) {
        for pending in self.pending.values_mut() {
            if let Pending::Join {
                room: r,
                receipt: slot,
            } = pending
                && r == room
                && slot.is_none()
            {
                *slot = Some(receipt);
                return;
            }
        }
        // Every pending join of the room already carries a receipt: receipts are cumulative in
        // STOMP, so the later one may go out with the next answer; queue it behind a new join.
        self.join(String::from(room), None, Some(receipt));
    }

    fn join(&mut self, room: String, since: Option<Since>, receipt: Option<String>) {
        let state = self.rooms.entry(room.clone()).or_default();
        state.joining = true;
        if let Some(since) = &since {
            state.epoch = Some(since.epoch.clone());
            state.last = Some(since.seq);
            state.refilling = true;
        }
        let id = self.next_command_id("join");
        self.pending.insert(
            key(&id),
            Pending::Join {
                room: room.clone(),
                receipt,
            },
        );
        self.out.push_back(Output::Command(ClientMessage::Join {
            id,
            room,
            presence: None,
            since,
        }));
    }

    fn send(&mut self, frame: &Frame, receipt: Option<String>) -> Result<(), String> {
        let room = room_of(required(frame, "destination")?)?;
        let json = frame.header("content-type").is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim() == "application/json")
        });
        let text = core::str::from_utf8(&frame.body)
            .map_err(|_| String::from("the body must be UTF-8 (this server relays text)"))?;
        let data = if json {
            serde_json::from_str::<Value>(text).map_err(|e| {
                format!("content-type is application/json but the body is not JSON: {e}")
            })?
        } else {
            Value::String(String::from(text))
        };
        if !self.rooms.contains_key(&room) {
            // A member without subscriptions: publishing needs membership, delivering does not
            // happen (no subscription names the room).
            self.join(room.clone(), None, None);
        }
        let id = match frame.header("id") {
            Some(id) if id.len() <= 120 => Id::Text(format!("u:{id}")),
            Some(_) => return Err(String::from("id header longer than 120 bytes")),
            None => self.next_command_id("send"),
        };
        self.pending.insert(key(&id), Pending::Publish { receipt });
        self.out
            .push_back(Output::Command(ClientMessage::Publish { id, room, data }));
        Ok(())
    }

    fn message(&mut self, room: &str, seq: u64, from: &str, body: &MessageBody, now: Duration) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        match state.last {
            Some(last) if seq <= last => return, // already passed on (a replay's overlap)
            Some(last) if seq > last + 1 => {
                // Past a hole: held until the refill brings what is missing.
                if state.held.len() < self.config.max_held {
                    state.held.insert(seq, (String::from(from), body.clone()));
                }
                if !state.refilling && !state.joining {
                    self.refill(room);
                }
                return;
            }
            _ => {}
        }
        state.last = Some(seq);
        let content_type = body.content_type;
        let mut message_id = String::with_capacity(32);
        message_id.push_str(state.epoch.as_deref().unwrap_or_default());
        message_id.push(':');
        message_id.push_str(&seq.to_string());
        let mut destination = String::with_capacity(room.len() + 7);
        destination.push_str("/topic/");
        destination.push_str(room);
        let capacity =
            128 + destination.len() + 2 * message_id.len() + from.len() + body.bytes.len();
        for i in 0..state.subscriptions.len() {
            let sub = &state.subscriptions[i];
            let mut bytes = Vec::with_capacity(capacity + sub.len());
            let mut w = FrameWriter::new(Command::Message, self.version, &mut bytes);
            w.header("destination", &destination)
                .header("subscription", sub)
                .header("message-id", &message_id)
                .header("from", from)
                .header("content-type", content_type);
            if self
                .subscriptions
                .get(sub)
                .is_some_and(|s| s.ack != AckMode::Auto)
            {
                w.header("ack", &message_id);
            }
            w.body(&body.bytes);
            self.last_out = self.last_out.max(now);
            self.out.push_back(Output::Send(bytes));
        }
        // Messages held behind a hole that is now closed.
        loop {
            let Some(state) = self.rooms.get_mut(room) else {
                return;
            };
            let next = state.last.map_or(0, |l| l + 1);
            let Some((from, body)) = state.held.remove(&next) else {
                return;
            };
            self.message(room, next, &from, &body, now);
        }
    }

    /// Joins `room` again with `since` = the last message passed on, to refill a hole.
    fn refill(&mut self, room: &str) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if state.refilling {
            return;
        }
        let (Some(epoch), Some(seq)) = (state.epoch.clone(), state.last) else {
            return;
        };
        self.join(String::from(room), Some(Since { epoch, seq }), None);
    }

    fn maybe_disconnect(&mut self, now: Duration) {
        if self.phase != Phase::Disconnecting
            || self
                .pending
                .values()
                .any(|p| matches!(p, Pending::Publish { .. }))
        {
            return;
        }
        if let Some(r) = self.disconnect_receipt.take() {
            self.receipt(&r, now);
        }
        self.phase = Phase::Done;
        self.out.push_back(Output::Close(true));
    }

    fn receipt(&mut self, receipt: &str, now: Duration) {
        let frame = Frame::new(Command::Receipt).with_header("receipt-id", receipt);
        self.send_frame(&frame, now);
    }

    /// Sends `ERROR` and closes.
    fn fail(&mut self, text: &str, receipt: Option<&str>, now: Duration) {
        let mut frame = Frame::new(Command::Error)
            .with_header("message", text)
            .with_header("content-type", "text/plain");
        if let Some(r) = receipt {
            frame = frame.with_header("receipt-id", r);
        }
        frame.body = text.as_bytes().to_vec();
        self.send_frame(&frame, now);
        self.phase = Phase::Done;
        self.out.push_back(Output::Close(false));
    }

    fn send_frame(&mut self, frame: &Frame, now: Duration) {
        self.send_bytes(frame.encode(self.version), now);
    }

    fn send_bytes(&mut self, bytes: Vec<u8>, now: Duration) {
        self.last_out = self.last_out.max(now);
        self.out.push_back(Output::Send(bytes));
    }

    fn next_command_id(&mut self, kind: &str) -> Id {
        self.next_id += 1;
        Id::Text(format!("{kind}:{}", self.next_id))
    }
}

fn key(id: &Id) -> String {
    match id {
        Id::Text(t) => t.clone(),
        Id::Number(n) => n.to_string(),
    }
}

fn required<'a>(frame: &'a Frame, name: &str) -> Result<&'a str, String> {
    frame
        .header(name)
        .ok_or_else(|| format!("{} needs a {name:?} header", frame.command))
}

/// The room of a `/topic/NS/NAME` destination.
fn room_of(destination: &str) -> Result<String, String> {
    let Some(room) = destination.strip_prefix("/topic/") else {
        return Err(format!(
            "destination {destination:?} is not /topic/NAMESPACE/NAME"
        ));
    };
    protocol::validate_room(room).map_err(|e| format!("destination {destination:?}: {e}"))?;
    Ok(String::from(room))
}

/// `EPOCH:SEQ`.
fn parse_since(value: &str) -> Result<Since, String> {
    let bad = || format!("since {value:?} is not EPOCH:SEQ (a message-id)");
    let (epoch, seq) = value.rsplit_once(':').ok_or_else(bad)?;
    if epoch.is_empty() || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(Since {
        epoch: String::from(epoch),
        seq: seq.parse().map_err(|_| bad())?,
    })
}
