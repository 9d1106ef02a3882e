//! [`Hub`]: the server side of `duplex.v1` as a state machine. Text frames and time go in,
//! typed `(connection, Delivery)` pairs (see [`super::codec`]) and the next deadline come out.
//!
//! The driver owns sockets, clocks and randomness. It calls [`Hub::connect`] when a `duplex.v1`
//! WebSocket opens, [`Hub::receive`] for each text frame, [`Hub::disconnect`] when the socket is
//! gone (closed, reset or heartbeat timeout), [`Hub::handle_timeout`] once [`Hub::poll_timeout`]
//! is reached, and encodes and sends whatever [`Hub::poll_delivery`] yields, in order.

use alloc::collections::btree_map::Entry;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use serde_json::Value;

use super::broker::{
    BrokerError, BrokerEvent, BrokerMessage, BrokerRequest, MemberChange, MemberCount, RoomState,
    Sequenced,
};
use super::codec::{Delivery, Joined, MemberList, RoomMessage};
use super::protocol::{
    self, ClientMessage, CommandError, DecodeLimits, ErrorCode, Id, ServerMessage, Since,
};

mod api;
pub use api::{ApiHistory, ApiPublished, ApiRoom};
mod direct;

pub use direct::ApiDirect;

/// Why a taken-over connection is closed (its `taken_over` error and close frame reason).
const TAKEN_OVER: &str = "taken over by a newer connection";

/// Hub limits and timings. Defaults: 100 messages of history for 5 minutes, a 100 ms presence
/// window, 64 KiB publish payloads, 4 KiB presences, 100 rooms per connection and 100,000 in
/// all, 64 KiB of members listed in `joined`, a 30 s heartbeat, 256 remembered publish ids per
/// client kept 5 minutes after the client's last connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Messages kept per room for recovery.
    pub history_size: usize,
    /// How long a message stays in history; also how long a room with neither members nor
    /// history is kept (with its epoch and seq) before it is forgotten.
    pub history_ttl: Duration,
    /// Presence updates from one client in one room within this window are coalesced into one
    /// broadcast of the last value, sent when the window closes. Zero broadcasts at once.
    pub presence_window: Duration,
    /// Largest `publish.data`, in bytes of compact JSON.
    pub max_payload: usize,
    /// The interval announced in `welcome.heartbeat_ms`; the driver enforces it.
    pub heartbeat: Duration,
    /// Publish ids remembered per client for deduplication.
    pub dedup_window: usize,
    /// How long a client's state (publish ids) survives without a connection.
    pub client_ttl: Duration,
    /// Presence is tracked in rooms of up to this many members. In a larger room `join`,
    /// `leave` and `presence` events are not broadcast and `joined.members` is empty: every
    /// join would otherwise cost a message to every member and a member list as long as the
    /// room (quadratic traffic for a 10,000-member live feed).
    pub presence_limit: usize,
    /// Largest presence value, in bytes of compact JSON.
    pub max_presence: usize,
    /// Rooms one connection may be a member of at once.
    pub max_rooms_per_connection: usize,
    /// Rooms the hub holds at once (with members or history); joining a new room beyond it is
    /// refused with `too_many_rooms`.
    pub max_rooms: usize,
    /// Bytes of `joined.members` (client ids and presences) at most; a longer list is cut and
    /// flagged `members_truncated`.
    pub max_member_list: usize,
    /// Most JSON values and deepest nesting of a command (its length limit is
    /// [`HubConfig::max_command`]).
    pub max_nodes: usize,
    /// See [`HubConfig::max_nodes`].
    pub max_depth: usize,
    /// Identities come from the driver only ([`Hub::authenticate`], e.g. after checking a
    /// token): a `hello` command is refused with `unauthorized`.
    pub external_identity: bool,
    /// Seq numbers, history and publish ids live in a broker the driver runs (shared by several
    /// nodes) instead of this hub: see [`super::broker`].
    pub external_broker: bool,
    /// `send` commands one connection may make per second, and at once (a token bucket of
    /// this size refilled at this rate); beyond it they are refused with `rate_limited`. Zero:
    /// no limit.
    pub send_rate: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            presence_window: Duration::from_millis(100),
            max_payload: 64 * 1024,
            heartbeat: Duration::from_secs(30),
            dedup_window: 256,
            client_ttl: Duration::from_secs(300),
            presence_limit: 1000,
            max_presence: 4 * 1024,
            max_rooms_per_connection: 100,
            max_rooms: 100_000,
            max_member_list: 64 * 1024,
            max_nodes: 16 * 1024,
            max_depth: 64,
            external_identity: false,
            external_broker: false,
            send_rate: 50,
        }
    }
}

impl HubConfig {
    /// The longest valid command: a `publish` of [`HubConfig::max_payload`] or a `join` with
    /// [`HubConfig::max_presence`], plus [`protocol::COMMAND_OVERHEAD`] for everything else.
    /// Longer frames are refused unparsed.
    pub fn max_command(&self) -> usize {
        self.max_payload
            .max(self.max_presence)
            .saturating_add(protocol::COMMAND_OVERHEAD)
    }
    /// What [`protocol::decode_limited`] accepts for this hub.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_len: self.max_command(),
            max_depth: self.max_depth,
            max_nodes: self.max_nodes,
        }
    }
    /// Sets [`HubConfig::max_presence`].
    pub fn with_max_presence(mut self, bytes: usize) -> Self {
        self.max_presence = bytes;
        self
    }
    /// Sets [`HubConfig::max_rooms_per_connection`].
    pub fn with_max_rooms_per_connection(mut self, rooms: usize) -> Self {
        self.max_rooms_per_connection = rooms;
        self
    }
    /// Sets [`HubConfig::max_rooms`].
    pub fn with_max_rooms(mut self, rooms: usize) -> Self {
        self.max_rooms = rooms;
        self
    }
    /// Sets [`HubConfig::max_member_list`].
    pub fn with_max_member_list(mut self, bytes: usize) -> Self {
        self.max_member_list = bytes;
        self
    }
    /// Sets [`HubConfig::external_identity`].
    pub fn with_external_identity(mut self, external: bool) -> Self {
        self.external_identity = external;
        self
    }
    /// Sets [`HubConfig::external_broker`].
    pub fn with_external_broker(mut self, external: bool) -> Self {
        self.external_broker = external;
        self
    }
    /// Sets [`HubConfig::presence_limit`].
    pub fn with_presence_limit(mut self, members: usize) -> Self {
        self.presence_limit = members;
        self
    }
    /// Sets [`HubConfig::history_size`].
    pub fn with_history_size(mut self, messages: usize) -> Self {
        self.history_size = messages;
        self
    }
    /// Sets [`HubConfig::history_ttl`].
    pub fn with_history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self
    }
    /// Sets [`HubConfig::presence_window`].
    pub fn with_presence_window(mut self, window: Duration) -> Self {
        self.presence_window = window;
        self
    }
    /// Sets [`HubConfig::max_payload`].
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }
    /// Sets [`HubConfig::heartbeat`].
    pub fn with_heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }
    /// Sets [`HubConfig::dedup_window`].
    pub fn with_dedup_window(mut self, ids: usize) -> Self {
        self.dedup_window = ids;
        self
    }
    /// Sets [`HubConfig::send_rate`].
    pub fn with_send_rate(mut self, per_second: u32) -> Self {
        self.send_rate = per_second;
        self
    }
    /// Sets [`HubConfig::client_ttl`].
    pub fn with_client_ttl(mut self, ttl: Duration) -> Self {
        self.client_ttl = ttl;
        self
    }
}

#[derive(Debug, Default)]
struct Conn {
    /// Set by the first accepted `hello`, and never changed: a later `hello` is refused.
    client: Option<String>,
    /// Another connection took its client id over: it may do nothing more.
    taken_over: bool,
    rooms: BTreeSet<String>,
    /// `None`: every namespace.
    namespaces: Option<Vec<String>>,
    /// With an external broker: joins of this connection awaiting the broker's answer.
    joins: usize,
    /// Commands that came while a join was awaited, applied in order once none is: a client
    /// that sends `join` then `publish` gets its publish applied as a member, as on one node.
    deferred: VecDeque<ClientMessage>,
}

/// Commands a connection may send while one of its joins awaits the broker (bounded memory);
/// beyond it a command is refused with `unavailable`, which clients retry.
const MAX_DEFERRED: usize = 1024;

#[derive(Debug)]
struct Client<C> {
    conn: Option<C>,
    /// Recent publish ids and the seq each was acked with, oldest first.
    recent: VecDeque<(Id, u64)>,
    detached_at: Duration,
    /// With an external broker: the serial of the current connection's claim (0 while the
    /// answer is awaited), and the highest serial another node claimed the id with.
    claim: u64,
    superseded: u64,
}

#[derive(Debug)]
struct Stored {
    seq: u64,
    at: Duration,
    message: Arc<RoomMessage>,
}

#[derive(Debug)]
struct RoomMember {
    client: String,
    presence: Value,
    /// Bytes of `presence` as compact JSON.
    presence_len: usize,
    /// A coalesced presence update not yet broadcast, and when it will be.
    pending: Option<(Value, Duration)>,
    /// Live messages up to this seq reached the member otherwise (replayed on join, or sent
    /// before it joined): with an external broker, a message can arrive after the join read it.
    after: u64,
}

#[derive(Debug)]
struct Room<C> {
    epoch: String,
    /// The last seq sequenced (in-process) or received from the broker.
    seq: u64,
    /// False while the first join's answer from an external broker is awaited: `epoch` and
    /// `seq` are not known yet, and live messages are only buffered in `history`.
    known: bool,
    history: VecDeque<Stored>,
    /// The deadline under which this room sits in `history_timers`.
    expiry: Option<Duration>,
    members: BTreeMap<C, RoomMember>,
    /// With an external broker: the room's members on every node, as last counted by the
    /// broker (`None` until its first count).
    count: Option<MemberCount>,
}

impl<C> Room<C> {
    /// The room's members for `--presence-limit`: on every node with an external broker
    /// (never fewer than the ones here), here otherwise.
    fn size(&self) -> usize {
        let here = self.members.len();
        self.count.map_or(here, |count| {
            usize::try_from(count.members).map_or(usize::MAX, |n| n.max(here))
        })
    }

    /// Takes the broker's `count` unless a later one is known already.
    fn counted(&mut self, count: MemberCount) {
        if self.count.is_none_or(|known| known.version < count.version) {
            self.count = Some(count);
        }
    }

    /// Sequences a publish of `data` (compact JSON) by `from` in this in-process room (`name`)
    /// and keeps it in the history (at most `history_size` messages); its seq and the message.
    /// The caller answers the publisher, delivers and schedules the history's expiry.
    fn append(
        &mut self,
        name: &str,
        from: String,
        data: String,
        now: Duration,
        history_size: usize,
    ) -> (u64, Arc<RoomMessage>) {
        self.seq += 1;
        let message = Arc::new(RoomMessage {
            room: name.into(),
            epoch: self.epoch.clone(),
            seq: self.seq,
            from,
            data,
        });
        if history_size > 0 {
            self.history.push_back(Stored {
                seq: self.seq,
                at: now,
                message: message.clone(),
            });
            while self.history.len() > history_size {
                self.history.pop_front();
            }
        }
        (self.seq, message)
    }
}

/// What a hub holds and has done, for metrics. Gauges (`connections`, `rooms`, `members`) are
/// current values; counters (the `u64` fields) only grow over the hub's lifetime and count
/// deliveries when they are queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Connections known to the hub (with or without `hello`).
    pub connections: usize,
    /// Rooms that exist (with members or history).
    pub rooms: usize,
    /// Room memberships: a connection in two rooms counts twice.
    pub members: usize,
    /// Publishes sequenced (a deduplicated retry is not counted again).
    pub publishes: u64,
    /// `message` deliveries of live publishes, one per member (the fan-out).
    pub deliveries: u64,
    /// `message` deliveries replayed from history on `join` with `since`.
    pub replayed: u64,
    /// `gap` notices sent (see [`Hub::dropped`]).
    pub gaps: u64,
    /// `presence` deliveries, one per receiving member, after coalescing.
    pub presence_updates: u64,
}

/// See [`Hub::connection_usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionUsage {
    /// Rooms the connection is a member of.
    pub rooms: usize,
    /// Bytes of its presences in those rooms, as compact JSON.
    pub presence_bytes: usize,
}

/// The `duplex.v1` server hub, keyed by a connection id `C` chosen by the driver.
///
/// Deliveries are typed ([`Delivery`]); one broadcast is one shared value, so a driver encodes
/// it once (with [`codec::json`](super::codec::json) for `duplex.v1`) for every member.
#[derive(Debug)]
pub struct Hub<C> {
    config: HubConfig,
    seed: u64,
    next_client: u64,
    /// Epoch generations, one per bucket of room names (see [`Hub::epoch_for`]).
    generations: Vec<u32>,
    conns: BTreeMap<C, Conn>,
    clients: BTreeMap<String, Client<C>>,
    rooms: BTreeMap<String, Room<C>>,
    presence_timers: BTreeSet<(Duration, String, C)>,
    history_timers: BTreeSet<(Duration, String)>,
    client_timers: BTreeSet<(Duration, String)>,
    out: VecDeque<(C, Delivery)>,
    /// Connections gone since deliveries were last taken: their queued deliveries are dropped
    /// in one pass over `out` when the next one is taken, not in one pass per disconnect
    /// (which made a batch of disconnects quadratic in the queue).
    gone: BTreeSet<C>,
    /// Connections the driver must close, with the close reason.
    closes: VecDeque<(C, &'static str)>,
    /// Counters and the member gauge of [`HubStats`].
    stats: HubStats,
    /// With an external broker: requests to send, answers awaited.
    broker_out: VecDeque<BrokerRequest>,
    next_token: u64,
    pending_publishes: BTreeMap<u64, (C, Id, String)>,
    pending_joins: BTreeMap<u64, PendingJoin<C>>,
    /// Joins awaiting an answer per room: the room stays subscribed meanwhile.
    joins_per_room: BTreeMap<String, usize>,
    /// The server HTTP API's publishes and dedup (see `api`).
    api: api::ApiState,
    /// Messages to one client (`send`): see the `direct` module.
    direct: direct::Directs<C>,
}

/// A `join` waiting for the external broker's answer.
#[derive(Debug)]
struct PendingJoin<C> {
    /// `None` once the connection is gone.
    conn: Option<C>,
    client: String,
    id: Id,
    room: String,
    presence: Option<Value>,
    presence_len: Option<usize>,
    since: Option<Since>,
    /// The broker records the member with the join's read (it was not one here yet).
    recorded: bool,
}

impl<C: Copy + Ord> Hub<C> {
    /// A hub whose client ids and room epochs derive from `seed`; give every hub instance a fresh
    /// random seed so that epochs change across restarts.
    pub fn new(config: HubConfig, seed: u64) -> Self {
        Hub {
            config,
            seed,
            next_client: 0,
            generations: alloc::vec![0; EPOCH_BUCKETS],
            conns: BTreeMap::new(),
            clients: BTreeMap::new(),
            rooms: BTreeMap::new(),
            presence_timers: BTreeSet::new(),
            history_timers: BTreeSet::new(),
            client_timers: BTreeSet::new(),
            out: VecDeque::new(),
            gone: BTreeSet::new(),
            closes: VecDeque::new(),
            stats: HubStats::default(),
            broker_out: VecDeque::new(),
            next_token: 0,
            pending_publishes: BTreeMap::new(),
            pending_joins: BTreeMap::new(),
            joins_per_room: BTreeMap::new(),
            api: api::ApiState::default(),
            direct: direct::Directs::default(),
        }
    }

    /// The configuration the hub was made with.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// A `duplex.v1` connection opened. Nothing is sent until the client says `hello`.
    pub fn connect(&mut self, conn: C, _now: Duration) {
        if self.gone.contains(&conn) {
            // The id is used again: what was queued for its previous connection goes first.
            self.drop_gone();
        }
        self.conns.entry(conn).or_default();
    }

    /// Restricts the namespaces `conn` may join from now on (e.g. from a token's claims).
    pub fn restrict(&mut self, conn: C, namespaces: &[&str]) {
        let conn = self.conns.entry(conn).or_default();
        conn.namespaces = Some(namespaces.iter().map(|ns| String::from(*ns)).collect());
    }

    /// The client id `conn` said `hello` with.
    pub fn client(&self, conn: C) -> Option<&str> {
        self.conns.get(&conn)?.client.as_deref()
    }

    /// Rooms that currently exist (with members or history, or unused for less than the
    /// history TTL).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Members of `room`.
    pub fn member_count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |room| room.members.len())
    }

    /// What `conn` makes the hub hold: the rooms it is in and the bytes of its presences there.
    /// Both are capped ([`HubConfig::max_rooms_per_connection`], and that times
    /// [`HubConfig::max_presence`]) whatever the connection sends.
    pub fn connection_usage(&self, conn: C) -> Option<ConnectionUsage> {
        let state = self.conns.get(&conn)?;
        let presence_bytes = state
            .rooms
            .iter()
            .filter_map(|room| self.rooms.get(room)?.members.get(&conn))
            .map(|member| member.presence_len)
            .sum();
        Some(ConnectionUsage {
            rooms: state.rooms.len(),
            presence_bytes,
        })
    }

    /// Gauges and counters for metrics.
    pub fn stats(&self) -> HubStats {
        HubStats {
            connections: self.conns.len(),
            rooms: self.rooms.len(),
            ..self.stats
        }
    }

    /// One text frame from `conn`, decoded with [`HubConfig::decode_limits`]. A refused command
    /// queues `error {id?, code, message}` for `conn` and is returned; the connection stays
    /// usable either way. An unknown `conn` is connected first.
    pub fn receive(&mut self, conn: C, text: &str, now: Duration) -> Result<(), CommandError> {
        match protocol::decode_limited(text, &self.config.decode_limits()) {
            Ok(message) => self.receive_message(conn, message, now),
            Err(error) => {
                self.refuse(conn, &error);
                Err(error)
            }
        }
    }

    /// One command from `conn`, already decoded (drivers decode off the hub's thread with
    /// [`protocol::decode_limited`] and [`HubConfig::decode_limits`]). As [`Hub::receive`].
    pub fn receive_message(
        &mut self,
        conn: C,
        message: ClientMessage,
        now: Duration,
    ) -> Result<(), CommandError> {
        self.conns.entry(conn).or_default();
        let result = self.command(conn, message, now);
        if let Err(error) = &result {
            self.refuse(conn, error);
        }
        result
    }

    /// Queues the `error` reply for a command the driver refused itself (it could not be
    /// decoded, or its token was refused), in order with `conn`'s other replies.
    pub fn refuse(&mut self, conn: C, error: &CommandError) {
        self.send(conn, error.to_message().into_delivery());
    }

    /// Sets `conn`'s client id from a verified identity (a token's subject), as `hello` with
    /// that id would, and restricts its namespaces when `namespaces` is given. This is the only
    /// way to say `hello` with [`HubConfig::external_identity`]; like `hello`, it is refused
    /// once the connection has an id.
    pub fn authenticate(
        &mut self,
        conn: C,
        client: String,
        namespaces: Option<Vec<String>>,
        now: Duration,
    ) -> Result<(), CommandError> {
        let result = if protocol::is_name(&client) {
            self.conns.entry(conn).or_default();
            self.hello(conn, Some(client), namespaces, now)
        } else {
            Err(CommandError::new(
                None,
                ErrorCode::Unauthorized,
                "the identity is not a valid client id",
            ))
        };
        if let Err(error) = &result {
            self.refuse(conn, error);
        }
        result
    }

    /// The next connection to close (it was taken over), with the reason for the close frame.
    /// The driver closes it and then calls [`Hub::disconnect`] as for any closed connection.
    pub fn poll_close(&mut self) -> Option<(C, &'static str)> {
        self.closes.pop_front()
    }

    /// `conn` is gone. The other members of its rooms get `leave`; its queued deliveries are
    /// discarded; its client's publish ids are kept for [`HubConfig::client_ttl`].
    pub fn disconnect(&mut self, conn: C, now: Duration) {
        self.detach(conn, now);
        self.conns.remove(&conn);
        if !self.out.is_empty() {
            self.gone.insert(conn);
        }
        self.pending_publishes.retain(|_, p| p.0 != conn);
        self.direct.forget(conn);
        for join in self.pending_joins.values_mut() {
            if join.conn == Some(conn) {
                join.conn = None;
            }
        }
    }

    /// The driver dropped messages `from_seq..=to_seq` of `room` for `conn` (slow consumer):
    /// queues `gap` so the client can recover them from history.
    pub fn dropped(&mut self, conn: C, room: &str, from_seq: u64, to_seq: u64) {
        if self.conns.contains_key(&conn) {
            let gap = ServerMessage::Gap {
                room: room.into(),
                from_seq,
                to_seq,
            };
            self.send(conn, gap.into_delivery());
            self.stats.gaps += 1;
        }
    }

    /// The next request for the external broker (see [`super::broker`]); never any with the
    /// in-process default.
    pub fn poll_broker(&mut self) -> Option<BrokerRequest> {
        self.broker_out.pop_front()
    }

    /// An answer or a fan-out from the external broker.
    pub fn handle_broker(&mut self, event: BrokerEvent, now: Duration) {
        match event {
            BrokerEvent::Published { token, result } => self.published(token, result),
            BrokerEvent::Joined { token, result } => self.joined(token, result, now),
            BrokerEvent::Message {
                room,
                epoch,
                message,
            } => self.live(&room, &epoch, message, now),
            BrokerEvent::Position { room, epoch, seq } => self.position(&room, &epoch, seq),
            BrokerEvent::Missed { room } => {
                if self.rooms.get(&room).is_some_and(|state| state.known) {
                    self.broker_out.push_back(BrokerRequest::Position { room });
                }
            }
            BrokerEvent::Resubscribed => {
                for state in self.rooms.values_mut() {
                    // A Redis that came back empty numbers the member changes from 1 again.
                    if let Some(count) = &mut state.count {
                        count.version = 0;
                    }
                }
                for (room, state) in &self.rooms {
                    if state.known {
                        self.broker_out
                            .push_back(BrokerRequest::Position { room: room.clone() });
                    }
                    // Announced again: other nodes may have taken this node for dead.
                    for member in state.members.values() {
                        self.broker_out.push_back(BrokerRequest::MemberJoined {
                            room: room.clone(),
                            client: member.client.clone(),
                            presence: serde_json::to_string(&member.presence).unwrap_or_default(),
                        });
                    }
                }
            }
            BrokerEvent::Member { room, change } => self.remote_member(&room, change),
            BrokerEvent::MemberCount { room, count } => {
                if let Some(state) = self.rooms.get_mut(&room) {
                    state.counted(count);
                }
            }
            BrokerEvent::Direct { from, to, data } => self.deliver_direct(&from, &to, &data),
            BrokerEvent::Sent { token, result } => self.direct_sent(token, result),
            BrokerEvent::Claimed { client, serial } => {
                if let Some(state) = self.clients.get_mut(&client) {
                    state.claim = serial;
                    if state.superseded > serial {
                        self.take_over_remotely(&client, now);
                    }
                }
            }
            BrokerEvent::TakeOver { client, serial } => {
                if let Some(state) = self.clients.get_mut(&client) {
                    state.superseded = state.superseded.max(serial);
                    // While this node's own claim is unanswered, its serial decides later.
                    if state.claim != 0 && state.claim < serial {
                        self.take_over_remotely(&client, now);
                    }
                }
            }
        }
    }

    /// A connection on another node said `hello` with `client` after the one here: the one
    /// here keeps nothing and is closed, as for a takeover within the node.
    fn take_over_remotely(&mut self, client: &str, now: Duration) {
        let Some(old) = self.clients.get(client).and_then(|c| c.conn) else {
            return;
        };
        self.take_over(old, now);
    }

    /// `old` lost its client id to a newer connection: it keeps nothing (no rooms, no id, no
    /// way to say `hello` again), is told why and is closed.
    fn take_over(&mut self, old: C, now: Duration) {
        self.detach(old, now);
        if let Some(state) = self.conns.get_mut(&old) {
            state.taken_over = true;
            state.deferred.clear();
        }
        // Said before the close, so that a client tells a takeover (final: do not reconnect)
        // from a lost connection.
        let error = CommandError::new(None, ErrorCode::TakenOver, TAKEN_OVER);
        self.refuse(old, &error);
        self.closes.push_back((old, TAKEN_OVER));
    }

    /// A presence event of a member on another node, for the members here.
    fn remote_member(&mut self, room: &str, change: MemberChange) {
        let parse = |presence: &str| serde_json::from_str(presence).unwrap_or(Value::Null);
        let event = match change {
            MemberChange::Joined { client, presence } => ServerMessage::Join {
                room: room.into(),
                client,
                presence: parse(&presence),
            },
            MemberChange::Left { client } => ServerMessage::Leave {
                room: room.into(),
                client,
            },
            MemberChange::Presence { client, presence } => ServerMessage::Presence {
                room: room.into(),
                client,
                presence: parse(&presence),
            },
        };
        let is_presence = matches!(event, ServerMessage::Presence { .. });
        // Judged on the room's size with the member (its count came first): a `leave` is
        // told where its `join` was.
        let with_it = usize::from(matches!(event, ServerMessage::Leave { .. }));
        let tracked = self
            .rooms
            .get(room)
            .is_some_and(|r| r.size().saturating_add(with_it) <= self.config.presence_limit);
        if !tracked {
            return;
        }
        let sent = self.broadcast(room, &event.into_delivery(), None);
        if is_presence {
            self.stats.presence_updates += sent;
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    #[allow(clippy::too_many_arguments)]
    fn request_join(
        &mut self,
        conn: C,
        client: String,
        id: Id,
        room: String,
        presence: Option<Value>,
        presence_len: Option<usize>,
        since: Option<Since>,
    ) {
        let token = self.token();
        *self.joins_per_room.entry(room.clone()).or_default() += 1;
        if let Some(state) = self.conns.get_mut(&conn) {
            state.joins += 1;
        }
        // Held (and buffering live messages) from now on, so that nothing published between
        // the broker's read and its answer reaching the hub is lost.
        let state = self.rooms.entry(room.clone()).or_insert_with(|| Room {
            epoch: String::new(),
            seq: 0,
            known: false,
            history: VecDeque::new(),
            expiry: None,
            members: BTreeMap::new(),
            count: None,
        });
        // A member rejoining (to recover a gap) gets no live message until the answer: they
        // are buffered and come after the replay, none twice.
        let member = match state.members.get_mut(&conn) {
            Some(member) => {
                member.after = u64::MAX;
                None
            }
            // Recorded by the broker in the join's round trip (a connection has one join
            // awaited at a time: its later commands wait).
            None => {
                let initial = presence.as_ref().unwrap_or(&Value::Null);
                let initial = serde_json::to_string(initial).unwrap_or_default();
                Some((client.clone(), initial))
            }
        };
        let recorded = member.is_some();
        self.broker_out.push_back(BrokerRequest::Join {
            token,
            room: room.clone(),
            since: since.clone(),
            member,
        });
        self.pending_joins.insert(
            token,
            PendingJoin {
                conn: Some(conn),
                client,
                id,
                room,
                presence,
                presence_len,
                since,
                recorded,
            },
        );
    }

    fn published(&mut self, token: u64, result: Result<Sequenced, BrokerError>) {
        let Some(result) = self.api_published(token, result) else {
            return;
        };
        let Some((conn, id, client)) = self.pending_publishes.remove(&token) else {
            return;
        };
        match result {
            Ok(sequenced) => {
                if !sequenced.duplicate {
                    self.stats.publishes += 1;
                }
                if let Some(state) = self.clients.get_mut(&client) {
                    state.recent.push_back((id.clone(), sequenced.seq));
                    while state.recent.len() > self.config.dedup_window {
                        state.recent.pop_front();
                    }
                }
                let ack = ServerMessage::Ack {
                    id,
                    seq: sequenced.seq,
                };
                self.send(conn, ack.into_delivery());
            }
            Err(BrokerError(reason)) => {
                let error = CommandError::new(
                    Some(id),
                    ErrorCode::Unavailable,
                    format!("not published: {reason}"),
                );
                self.refuse(conn, &error);
            }
        }
    }

    fn joined(&mut self, token: u64, result: Result<RoomState, BrokerError>, now: Duration) {
        let Some(join) = self.pending_joins.remove(&token) else {
            return;
        };
        let conn = join.conn;
        if let Some(state) = conn.and_then(|c| self.conns.get_mut(&c)) {
            state.joins = state.joins.saturating_sub(1);
        }
        self.answer_join(join, result, now);
        if let Some(conn) = conn {
            self.resume(conn, now);
        }
    }

    fn answer_join(
        &mut self,
        join: PendingJoin<C>,
        result: Result<RoomState, BrokerError>,
        now: Duration,
    ) {
        if let Some(count) = self.joins_per_room.get_mut(&join.room) {
            *count -= 1;
            if *count == 0 {
                self.joins_per_room.remove(&join.room);
            }
        }
        let conn = join.conn.filter(|c| {
            self.conns
                .get(c)
                .is_some_and(|s| !s.taken_over && s.client.as_ref() == Some(&join.client))
        });
        let (Some(conn), Ok(read)) = (conn, result.as_ref()) else {
            // Recorded by the broker (or maybe, when its answer was lost) but not admitted:
            // forgotten again (the broker tells other nodes only of a member it had).
            if join.recorded
                && !join.conn.is_some_and(|c| {
                    self.rooms
                        .get(&join.room)
                        .is_some_and(|r| r.members.contains_key(&c))
                })
            {
                self.broker_out.push_back(BrokerRequest::MemberLeft {
                    room: join.room.clone(),
                    client: join.client.clone(),
                });
            }
            // A member whose rejoin failed is live again from where the room is.
            if let (Some(c), Some(state)) = (join.conn, self.rooms.get_mut(&join.room)) {
                let seq = state.seq;
                if let Some(member) = state.members.get_mut(&c) {
                    member.after = member.after.min(seq);
                }
            }
            if let (Some(conn), Err(BrokerError(reason))) = (join.conn, &result) {
                let error = CommandError::new(
                    Some(join.id),
                    ErrorCode::Unavailable,
                    format!("not joined: {reason}"),
                );
                self.refuse(conn, &error);
            }
            self.refresh_lifetime(&join.room);
            return;
        };
        if self
            .rooms
            .get(&join.room)
            .is_some_and(|r| r.known && r.epoch != read.epoch)
        {
            // The broker's copy of the room was lost meanwhile: it restarted with a new epoch.
            self.restart_epoch(&join.room, &read.epoch, read.seq);
        }
        let Some(state) = self.rooms.get_mut(&join.room) else {
            return;
        };
        state.counted(read.member_count);
        if !state.known {
            // The first answer for this room: take the broker's view, keeping the live
            // messages newer than its read.
            state.history.retain(|m| m.seq > read.seq);
            state.epoch = read.epoch.clone();
            state.seq = state
                .history
                .back()
                .map_or(read.seq, |m| m.seq.max(read.seq));
            state.known = true;
        }
        // The members here may still be owed messages up to `read.seq` by the fan-out; this
        // one got everything up to `after` from the read (or joined after it).
        let after = state.seq.max(read.seq);
        let mut recovered = false;
        if let Some(since) = &join.since {
            let covered = since.epoch == read.epoch
                && since.seq <= read.seq
                && (since.seq == read.seq
                    || read.history.first().is_some_and(|m| m.seq == since.seq + 1));
            if covered {
                recovered = true;
                for m in &read.history {
                    let message = RoomMessage {
                        room: join.room.clone(),
                        epoch: read.epoch.clone(),
                        seq: m.seq,
                        from: m.from.clone(),
                        data: m.data.clone(),
                    };
                    self.out
                        .push_back((conn, Delivery::Message(Arc::new(message))));
                    self.stats.replayed += 1;
                }
                // Live messages that reached this node after the broker's read.
                let floor = since.seq.max(read.seq);
                for m in state.history.iter().filter(|m| m.seq > floor) {
                    self.out
                        .push_back((conn, Delivery::Message(m.message.clone())));
                    self.stats.replayed += 1;
                }
            }
        }
        let remote = read.members.clone();
        let _ = self.admit(
            conn,
            join.client,
            join.id,
            join.room,
            join.presence,
            join.presence_len,
            (recovered, after),
            remote,
            now,
        );
    }

    /// A message from the broker's fan-out: delivered in seq order to the members here that
    /// did not get it otherwise, and kept for the joins still waiting for their answer.
    fn live(&mut self, room: &str, epoch: &str, message: BrokerMessage, now: Duration) {
        let Some(state) = self.rooms.get_mut(room) else {
            return; // unsubscribed meanwhile
        };
        if state.known && state.epoch != epoch {
            self.restart_epoch(room, epoch, message.seq);
            return;
        }
        if state.known && message.seq <= state.seq {
            return; // read by a join already, or a duplicate
        }
        if !state.known && state.history.back().is_some_and(|m| m.seq >= message.seq) {
            return;
        }
        let hole =
            (state.known && message.seq > state.seq + 1).then(|| (state.seq + 1, message.seq - 1));
        let seq = message.seq;
        let message = Arc::new(RoomMessage {
            room: room.into(),
            epoch: epoch.into(),
            seq,
            from: message.from,
            data: message.data,
        });
        if state.known {
            state.seq = seq;
        }
        state.history.push_back(Stored {
            seq,
            at: now,
            message: message.clone(),
        });
        while state.history.len() > self.config.history_size.max(1) {
            state.history.pop_front();
        }
        let members: Vec<C> = state
            .members
            .iter()
            .filter(|(_, m)| m.after < seq)
            .map(|(&c, _)| c)
            .collect();
        if let Some((from_seq, to_seq)) = hole {
            // Missed while the broker's fan-out was cut: members recover them from history.
            for &member in &members {
                self.dropped(member, room, from_seq, to_seq);
            }
        }
        for &member in &members {
            self.out
                .push_back((member, Delivery::Message(message.clone())));
        }
        self.stats.deliveries += members.len() as u64;
        self.reschedule_history(room);
    }

    /// The broker's position of `room` after a resubscribe: a hole is reported to members.
    fn position(&mut self, room: &str, epoch: &str, seq: u64) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if !state.known {
            return;
        }
        if state.epoch != epoch {
            self.restart_epoch(room, epoch, seq);
            return;
        }
        if seq > state.seq {
            let from_seq = state.seq + 1;
            state.seq = seq;
            let members: Vec<C> = state.members.keys().copied().collect();
            for member in members {
                self.dropped(member, room, from_seq, seq);
            }
        }
    }

    /// The broker's copy of `room` was lost (it came back empty, with a new epoch): members are
    /// told of a gap, rejoin with `since` and get `recovered: false`.
    fn restart_epoch(&mut self, room: &str, epoch: &str, seq: u64) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        let from_seq = state.seq + 1;
        state.epoch = epoch.into();
        state.seq = seq;
        state.history.clear();
        let members: Vec<C> = state.members.keys().copied().collect();
        for member in &members {
            if let Some(m) = state.members.get_mut(member) {
                m.after = seq;
            }
        }
        for member in members {
            self.dropped(member, room, from_seq, from_seq.max(seq));
        }
        self.reschedule_history(room);
    }

    /// The next delivery to send, in order. Encode it with the connection's codec
    /// ([`codec::json::encode`](super::codec::json::encode) for `duplex.v1`).
    pub fn poll_delivery(&mut self) -> Option<(C, Delivery)> {
        self.drop_gone();
        self.out.pop_front()
    }

    /// Drops the queued deliveries of the connections gone since the last call.
    fn drop_gone(&mut self) {
        if !self.gone.is_empty() {
            let gone = core::mem::take(&mut self.gone);
            self.out.retain(|(to, _)| !gone.contains(to));
        }
    }

    /// When [`Hub::handle_timeout`] has work: a presence window closing, history or an idle
    /// client's state expiring.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [
            self.presence_timers.first().map(|t| t.0),
            self.history_timers.first().map(|t| t.0),
            self.client_timers.first().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        while self.presence_timers.first().is_some_and(|t| t.0 <= now) {
            let Some((deadline, room, conn)) = self.presence_timers.pop_first() else {
                break;
            };
            self.flush_presence(&room, conn, deadline);
        }
        while self.history_timers.first().is_some_and(|t| t.0 <= now) {
            let Some((_, room)) = self.history_timers.pop_first() else {
                break;
            };
            if let Some(state) = self.rooms.get_mut(&room) {
                state.expiry = None;
            }
            self.prune(&room, now);
        }
        while self.client_timers.first().is_some_and(|t| t.0 <= now) {
            let Some((_, client)) = self.client_timers.pop_first() else {
                break;
            };
            if self.clients.get(&client).is_some_and(|c| c.conn.is_none()) {
                self.clients.remove(&client);
            }
        }
    }

    fn send(&mut self, conn: C, delivery: Delivery) {
        self.out.push_back((conn, delivery));
    }

    /// Queues `text` for every member of `room` but `except`; returns how many got it.
    /// Broadcasts a presence event (`join`, `leave`, `presence`) unless the room is too large
    /// to track presence in.
    fn broadcast_presence(&mut self, room: &str, text: &Delivery, except: Option<C>) -> u64 {
        let tracked = self
            .rooms
            .get(room)
            .is_some_and(|r| r.size() <= self.config.presence_limit);
        if tracked {
            self.broadcast(room, text, except)
        } else {
            0
        }
    }

    fn broadcast(&mut self, room: &str, text: &Delivery, except: Option<C>) -> u64 {
        let mut sent = 0;
        if let Some(room) = self.rooms.get(room) {
            for &member in room.members.keys() {
                if Some(member) != except {
                    self.out.push_back((member, text.clone()));
                    sent += 1;
                }
            }
        }
        sent
    }

    fn command(
        &mut self,
        conn: C,
        message: ClientMessage,
        now: Duration,
    ) -> Result<(), CommandError> {
        let state = self.conns.get(&conn);
        if state.is_some_and(|c| !c.taken_over && (c.joins > 0 || !c.deferred.is_empty())) {
            return self.defer(conn, message);
        }
        self.apply(conn, message, now)
    }

    fn apply(
        &mut self,
        conn: C,
        message: ClientMessage,
        now: Duration,
    ) -> Result<(), CommandError> {
        let state = self.conns.get(&conn);
        if state.is_some_and(|c| c.taken_over) {
            return Err(CommandError::new(
                message.id().cloned(),
                ErrorCode::TakenOver,
                "another connection said `hello` with this client id and took over",
            ));
        }
        if let ClientMessage::Hello { client, .. } = message {
            if self.config.external_identity && state.is_some_and(|c| c.client.is_none()) {
                return Err(CommandError::new(
                    None,
                    ErrorCode::Unauthorized,
                    "this server sets client ids from verified tokens only",
                ));
            }
            return self.hello(conn, client, None, now);
        }
        let Some(client) = state.and_then(|c| c.client.clone()) else {
            return Err(CommandError::new(
                message.id().cloned(),
                ErrorCode::HelloRequired,
                "send `hello` first",
            ));
        };
        match message {
            ClientMessage::Hello { .. } => Ok(()),
            ClientMessage::Join {
                id,
                room,
                presence,
                since,
            } => self.join(conn, client, id, room, presence, since, now),
            ClientMessage::Leave { id, room } => self.leave(conn, id, room),
            ClientMessage::Publish { id, room, data } => {
                self.publish(conn, client, id, room, data, now)
            }
            ClientMessage::Presence { room, presence } => self.presence(conn, &room, presence, now),
            ClientMessage::Send { id, to, data } => {
                self.send_direct(conn, client, id, to, data, now)
            }
            ClientMessage::Ping { id } => {
                self.send(conn, ServerMessage::Pong { id }.into_delivery());
                Ok(())
            }
        }
    }

    /// Keeps `message` until `conn` has no join awaiting the broker (see [`Conn::deferred`]).
    fn defer(&mut self, conn: C, message: ClientMessage) -> Result<(), CommandError> {
        let Some(state) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        if state.deferred.len() >= MAX_DEFERRED {
            return Err(CommandError::new(
                message.id().cloned(),
                ErrorCode::Unavailable,
                format!("{MAX_DEFERRED} commands already wait for this connection's join"),
            ));
        }
        state.deferred.push_back(message);
        Ok(())
    }

    /// Applies the commands `conn` sent while its joins were awaited, in order, until one of
    /// them is a join that must wait for the broker in turn.
    fn resume(&mut self, conn: C, now: Duration) {
        loop {
            let Some(state) = self.conns.get_mut(&conn) else {
                return;
            };
            if state.joins > 0 {
                return;
            }
            let Some(message) = state.deferred.pop_front() else {
                return;
            };
            if let Err(error) = self.apply(conn, message, now) {
                self.refuse(conn, &error);
            }
        }
    }

    fn hello(
        &mut self,
        conn: C,
        requested: Option<String>,
        namespaces: Option<Vec<String>>,
        now: Duration,
    ) -> Result<(), CommandError> {
        match self.conns.get(&conn) {
            Some(c) if c.taken_over => {
                return Err(CommandError::new(
                    None,
                    ErrorCode::TakenOver,
                    "another connection said `hello` with this client id and took over",
                ));
            }
            Some(c) if c.client.is_some() => {
                return Err(CommandError::new(
                    None,
                    ErrorCode::BadMessage,
                    "`hello` was already sent: a connection keeps its first client id",
                ));
            }
            _ => {}
        }
        let client = match requested {
            Some(client) => client,
            None => self.new_client_id(),
        };
        // One connection per client id: a reconnect takes over from a socket not yet noticed
        // dead. The old connection keeps nothing (no rooms, no id, no way to say `hello`
        // again) and is closed.
        if let Some(old) = self.clients.get(&client).and_then(|c| c.conn) {
            if old != conn {
                self.take_over(old, now);
            }
        }
        if let Some(namespaces) = namespaces {
            self.conns.entry(conn).or_default().namespaces = Some(namespaces);
        }
        let state = self
            .clients
            .entry(client.clone())
            .or_insert_with(|| Client {
                conn: None,
                recent: VecDeque::new(),
                detached_at: now,
                claim: 0,
                superseded: 0,
            });
        if self.config.external_broker {
            state.claim = 0;
            self.broker_out.push_back(BrokerRequest::Claim {
                client: client.clone(),
            });
        }
        if state.conn.is_none() {
            let key = (state.detached_at + self.config.client_ttl, client.clone());
            self.client_timers.remove(&key);
        }
        state.conn = Some(conn);
        self.conns.entry(conn).or_default().client = Some(client.clone());
        let heartbeat_ms = u64::try_from(self.config.heartbeat.as_millis()).unwrap_or(u64::MAX);
        self.send(
            conn,
            ServerMessage::Welcome {
                client,
                heartbeat_ms,
            }
            .into_delivery(),
        );
        Ok(())
    }

    fn new_client_id(&mut self) -> String {
        let prefix = splitmix64(self.seed) & 0xffff_ffff_ffff;
        loop {
            let id = format!("{prefix:012x}-{}", self.next_client);
            self.next_client += 1;
            if !self.clients.contains_key(&id) {
                return id;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        conn: C,
        client: String,
        id: Id,
        room: String,
        presence: Option<Value>,
        since: Option<Since>,
        now: Duration,
    ) -> Result<(), CommandError> {
        let namespace = protocol::namespace(&room);
        if let Some(allowed) = self.conns.get(&conn).and_then(|c| c.namespaces.as_ref()) {
            if !allowed.iter().any(|ns| ns == namespace) {
                let message = format!("namespace `{namespace}` is not allowed");
                return Err(CommandError::new(
                    Some(id),
                    ErrorCode::Unauthorized,
                    message,
                ));
            }
        }
        let presence_len = match &presence {
            Some(presence) => Some(self.presence_len(Some(&id), presence)?),
            None => None,
        };
        // Expired history must not be replayed, even if the driver is late with handle_timeout.
        self.prune(&room, now);
        let member = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.rooms.contains(&room));
        if !member {
            let rooms = self.conns.get(&conn).map_or(0, |c| c.rooms.len());
            if rooms >= self.config.max_rooms_per_connection {
                let message = format!(
                    "this connection is in {rooms} rooms, the limit is {}",
                    self.config.max_rooms_per_connection
                );
                return Err(CommandError::new(
                    Some(id),
                    ErrorCode::TooManyRooms,
                    message,
                ));
            }
            if !self.rooms.contains_key(&room) && self.rooms.len() >= self.config.max_rooms {
                let message = format!("the server holds {} rooms, its limit", self.rooms.len());
                return Err(CommandError::new(
                    Some(id),
                    ErrorCode::TooManyRooms,
                    message,
                ));
            }
        }
        if self.config.external_broker {
            self.request_join(conn, client, id, room, presence, presence_len, since);
            return Ok(());
        }
        let state = local_room(&mut self.rooms, self.seed, &self.generations, &room);

        // Replay first, all or nothing: a partial replay would look like a complete one.
        let mut recovered = false;
        if let Some(since) = since {
            let covered = since.epoch == state.epoch
                && since.seq <= state.seq
                && (since.seq == state.seq
                    || state
                        .history
                        .front()
                        .is_some_and(|m| m.seq <= since.seq + 1));
            if covered {
                recovered = true;
                for message in state.history.iter().filter(|m| m.seq > since.seq) {
                    self.out
                        .push_back((conn, Delivery::Message(message.message.clone())));
                    self.stats.replayed += 1;
                }
            }
        }
        let after = state.seq;
        self.admit(
            conn,
            client,
            id,
            room,
            presence,
            presence_len,
            (recovered, after),
            Vec::new(),
            now,
        )
    }

    /// Makes `conn` a member of `room` (which exists) after any replay, telling the others, and
    /// answers `joined`.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        conn: C,
        client: String,
        id: Id,
        room: String,
        presence: Option<Value>,
        presence_len: Option<usize>,
        (recovered, after): (bool, u64),
        remote: Vec<(String, String)>,
        now: Duration,
    ) -> Result<(), CommandError> {
        let Some(state) = self.rooms.get_mut(&room) else {
            return Ok(());
        };
        if let Some(member) = state.members.get_mut(&conn) {
            member.after = after;
        }
        let rejoin = state.members.contains_key(&conn);
        if !rejoin {
            // With an external broker, the join's read recorded the member (and counted it).
            let initial = presence.clone().unwrap_or(Value::Null);
            let event = ServerMessage::Join {
                room: room.clone(),
                client: client.clone(),
                presence: initial.clone(),
            };
            let member = RoomMember {
                client,
                presence: initial,
                presence_len: presence_len.unwrap_or(4),
                pending: None,
                after,
            };
            state.members.insert(conn, member);
            if state.size() <= self.config.presence_limit {
                let event = event.into_delivery();
                for &member in state.members.keys() {
                    if member != conn {
                        self.out.push_back((member, event.clone()));
                    }
                }
            }
            self.stats.members += 1;
            if let Some(c) = self.conns.get_mut(&conn) {
                c.rooms.insert(room.clone());
            }
        }
        let tracked = state.size() <= self.config.presence_limit;
        let mut members = MemberList::default();
        let mut members_truncated = false;
        if tracked {
            // The joining client is always listed; the others while the list stays within
            // max_member_list bytes.
            let mut budget = self.config.max_member_list;
            for (&member_conn, m) in &state.members {
                let cost = m.client.len() + m.presence_len + MEMBER_OVERHEAD;
                if member_conn != conn {
                    if cost > budget {
                        members_truncated = true;
                        continue;
                    }
                    budget -= cost;
                }
                let presence = serde_json::to_string(&m.presence).unwrap_or_default();
                members.push(&m.client, &presence);
            }
            // Members on other nodes, as the broker read them (a set of the ones here: a
            // scan of them per remote member made a join cost here × remote comparisons).
            let here: BTreeSet<&str> = state.members.values().map(|m| m.client.as_str()).collect();
            for (client, presence) in remote {
                if here.contains(client.as_str()) {
                    continue;
                }
                let cost = client.len() + presence.len() + MEMBER_OVERHEAD;
                if cost > budget {
                    members_truncated = true;
                    continue;
                }
                budget -= cost;
                members.push(&client, &presence);
            }
        }
        let joined = Joined {
            id,
            room: room.clone(),
            epoch: state.epoch.clone(),
            seq: after,
            members,
            members_truncated,
            recovered,
        };
        self.send(conn, Delivery::Joined(Arc::new(joined)));
        self.refresh_lifetime(&room);
        if let (true, Some(presence)) = (rejoin, presence) {
            self.presence(conn, &room, presence, now)?;
        }
        Ok(())
    }

    fn leave(&mut self, conn: C, id: Id, room: String) -> Result<(), CommandError> {
        if !self.remove_member(conn, &room) {
            return Err(not_joined(Some(id), &room));
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.rooms.remove(&room);
        }
        self.send(conn, ServerMessage::Left { id, room }.into_delivery());
        Ok(())
    }

    fn publish(
        &mut self,
        conn: C,
        client: String,
        id: Id,
        room: String,
        data: Value,
        now: Duration,
    ) -> Result<(), CommandError> {
        // A retry of a publish already sequenced is acked again, never delivered again.
        let seen = self
            .clients
            .get(&client)
            .and_then(|c| c.recent.iter().find(|r| r.0 == id));
        if let Some(&(_, seq)) = seen {
            self.send(conn, ServerMessage::Ack { id, seq }.into_delivery());
            return Ok(());
        }
        if !self
            .rooms
            .get(&room)
            .is_some_and(|r| r.members.contains_key(&conn))
        {
            return Err(not_joined(Some(id), &room));
        }
        let data = serde_json::to_string(&data).unwrap_or_default();
        if data.len() > self.config.max_payload {
            let message = format!(
                "data is {} bytes, the limit is {}",
                data.len(),
                self.config.max_payload
            );
            return Err(CommandError::new(Some(id), ErrorCode::TooLarge, message));
        }
        if self.config.external_broker {
            let token = self.token();
            self.pending_publishes
                .insert(token, (conn, id.clone(), client.clone()));
            self.broker_out.push_back(BrokerRequest::Publish {
                token,
                room,
                client,
                id,
                data,
            });
            return Ok(());
        }
        let history_size = self.config.history_size;
        let Some(state) = self.rooms.get_mut(&room) else {
            return Ok(());
        };
        let (seq, message) = state.append(&room, client.clone(), data, now, history_size);
        self.reschedule_history(&room);
        if let Some(state) = self.clients.get_mut(&client) {
            state.recent.push_back((id.clone(), seq));
            while state.recent.len() > self.config.dedup_window {
                state.recent.pop_front();
            }
        }
        self.send(conn, ServerMessage::Ack { id, seq }.into_delivery());
        self.stats.publishes += 1;
        self.stats.deliveries += self.broadcast(&room, &Delivery::Message(message), None);
        Ok(())
    }

    fn presence(
        &mut self,
        conn: C,
        room: &str,
        presence: Value,
        now: Duration,
    ) -> Result<(), CommandError> {
        let window = self.config.presence_window;
        let presence_len = self.presence_len(None, &presence)?;
        let Some(member) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.members.get_mut(&conn))
        else {
            return Err(not_joined(None, room));
        };
        member.presence = presence.clone();
        member.presence_len = presence_len;
        if window.is_zero() {
            if self.config.external_broker {
                self.broker_out.push_back(BrokerRequest::MemberPresence {
                    room: room.into(),
                    client: member.client.clone(),
                    presence: serde_json::to_string(&presence).unwrap_or_default(),
                });
            }
            let event = ServerMessage::Presence {
                room: room.into(),
                client: member.client.clone(),
                presence,
            };
            self.stats.presence_updates +=
                self.broadcast_presence(room, &event.into_delivery(), Some(conn));
        } else if let Some(pending) = &mut member.pending {
            pending.0 = presence;
        } else {
            member.pending = Some((presence, now + window));
            self.presence_timers
                .insert((now + window, room.into(), conn));
        }
        Ok(())
    }

    /// Bytes of `presence` as compact JSON, refused with `too_large` beyond
    /// [`HubConfig::max_presence`].
    fn presence_len(&self, id: Option<&Id>, presence: &Value) -> Result<usize, CommandError> {
        let len = serde_json::to_string(presence).map_or(0, |text| text.len());
        if len > self.config.max_presence {
            let message = format!(
                "presence is {len} bytes, the limit is {}",
                self.config.max_presence
            );
            return Err(CommandError::new(id.cloned(), ErrorCode::TooLarge, message));
        }
        Ok(len)
    }

    fn flush_presence(&mut self, room: &str, conn: C, deadline: Duration) {
        let Some(member) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.members.get_mut(&conn))
        else {
            return;
        };
        if member.pending.as_ref().is_none_or(|p| p.1 != deadline) {
            return;
        }
        let Some((presence, _)) = member.pending.take() else {
            return;
        };
        if self.config.external_broker {
            self.broker_out.push_back(BrokerRequest::MemberPresence {
                room: room.into(),
                client: member.client.clone(),
                presence: serde_json::to_string(&presence).unwrap_or_default(),
            });
        }
        let event = ServerMessage::Presence {
            room: room.into(),
            client: member.client.clone(),
            presence,
        };
        self.stats.presence_updates +=
            self.broadcast_presence(room, &event.into_delivery(), Some(conn));
    }

    /// Removes `conn` from `room`, telling the others. False if it was not a member.
    fn remove_member(&mut self, conn: C, room: &str) -> bool {
        let Some(state) = self.rooms.get_mut(room) else {
            return false;
        };
        // Judged on the room as it was: the member's arrival was announced if it was tracked.
        let tracked = state.size() <= self.config.presence_limit;
        let Some(member) = state.members.remove(&conn) else {
            return false;
        };
        // Until the broker counts the leave.
        if let Some(count) = &mut state.count {
            count.members = count.members.saturating_sub(1);
        }
        self.stats.members = self.stats.members.saturating_sub(1);
        if self.config.external_broker {
            self.broker_out.push_back(BrokerRequest::MemberLeft {
                room: room.into(),
                client: member.client.clone(),
            });
        }
        if tracked {
            let event = ServerMessage::Leave {
                room: room.into(),
                client: member.client,
            };
            self.broadcast(room, &event.into_delivery(), None);
        }
        self.refresh_lifetime(room);
        true
    }

    /// Takes `conn` out of every room and unbinds it from its client id.
    fn detach(&mut self, conn: C, now: Duration) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        let rooms = core::mem::take(&mut state.rooms);
        let client = state.client.take();
        for room in rooms {
            self.remove_member(conn, &room);
        }
        if let Some(client) = client {
            if let Some(state) = self.clients.get_mut(&client) {
                if state.conn == Some(conn) {
                    state.conn = None;
                    state.detached_at = now;
                    if self.config.external_broker {
                        // No connection here any more: direct messages stop coming here.
                        self.broker_out.push_back(BrokerRequest::Release {
                            client: client.clone(),
                        });
                    }
                    self.client_timers
                        .insert((now + self.config.client_ttl, client));
                }
            }
        }
    }

    /// Drops history older than the TTL.
    fn prune(&mut self, room: &str, now: Duration) {
        let ttl = self.config.history_ttl;
        if let Some(state) = self.rooms.get_mut(room) {
            while state.history.front().is_some_and(|m| m.at + ttl <= now) {
                state.history.pop_front();
            }
        }
        self.refresh_lifetime(room);
    }

    /// Keeps `history_timers` on the room's next deadline: the expiry of its oldest message.
    fn reschedule_history(&mut self, room: &str) {
        let ttl = self.config.history_ttl;
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        let expiry = state.history.front().map(|m| m.at.saturating_add(ttl));
        if expiry != state.expiry {
            if let Some(old) = state.expiry {
                self.history_timers.remove(&(old, String::from(room)));
            }
            if let Some(new) = expiry {
                self.history_timers.insert((new, String::from(room)));
            }
            state.expiry = expiry;
        }
    }

    /// A room with neither members nor history is forgotten at once (with its epoch): an
    /// unused room costs nothing, however many a client creates.
    fn refresh_lifetime(&mut self, room: &str) {
        let Some(state) = self.rooms.get(room) else {
            return;
        };
        if self.config.external_broker {
            // History lives in the broker: the room is held while it has members here.
            if state.members.is_empty() && !self.joins_per_room.contains_key(room) {
                if let Some(state) = self.rooms.remove(room) {
                    if let Some(expiry) = state.expiry {
                        self.history_timers.remove(&(expiry, String::from(room)));
                    }
                }
                self.broker_out
                    .push_back(BrokerRequest::Unsubscribe { room: room.into() });
            } else {
                self.reschedule_history(room);
            }
            return;
        }
        if state.members.is_empty() && state.history.is_empty() {
            if state.seq > 0 {
                // Its messages are gone: the next room of that name needs a new epoch.
                let bucket = bucket(room);
                self.generations[bucket] = self.generations[bucket].wrapping_add(1);
            }
            if let Some(state) = self.rooms.remove(room) {
                if let Some(expiry) = state.expiry {
                    self.history_timers.remove(&(expiry, String::from(room)));
                }
            }
            return;
        }
        self.reschedule_history(room);
    }
}

/// The in-process room `room` (no external broker), created with the epoch that `seed` and
/// `generations` give it when new.
fn local_room<'a, C>(
    rooms: &'a mut BTreeMap<String, Room<C>>,
    seed: u64,
    generations: &[u32],
    room: &str,
) -> &'a mut Room<C> {
    match rooms.entry(room.into()) {
        Entry::Occupied(entry) => entry.into_mut(),
        Entry::Vacant(entry) => {
            let epoch = epoch_for(seed, generations, entry.key());
            entry.insert(Room {
                epoch,
                seq: 0,
                known: true,
                history: VecDeque::new(),
                expiry: None,
                members: BTreeMap::new(),
                count: None,
            })
        }
    }
}

impl ServerMessage {
    /// This message as a delivery for one connection.
    fn into_delivery(self) -> Delivery {
        Delivery::reply(self)
    }
}

/// What one entry of `joined.members` costs beyond its client id and presence:
/// `{"client":"","presence":},`.
const MEMBER_OVERHEAD: usize = 26;

fn not_joined(id: Option<Id>, room: &str) -> CommandError {
    CommandError::new(id, ErrorCode::NotJoined, format!("not joined to `{room}`"))
}

/// Buckets of room names for epoch generations: 16 KiB for the whole hub.
const EPOCH_BUCKETS: usize = 4096;

/// FNV-1a of a room name.
fn name_hash(room: &str) -> u64 {
    room.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn bucket(room: &str) -> usize {
    (splitmix64(name_hash(room)) % EPOCH_BUCKETS as u64) as usize
}

/// The epoch of a room created now. A room is forgotten as soon as it has neither members nor
/// history, so nothing of it is kept; its epoch is instead a function of the hub's seed, its
/// name and its bucket's generation. A room forgotten before any message (seq 0) comes back
/// with the same epoch, so clients that all dropped at once resume with `recovered: true`; a
/// room forgotten after messages bumps its bucket's generation, so it comes back with a new
/// epoch (and so, rarely, do the seq-0 rooms of that bucket, whose clients then resync).
fn epoch_for(seed: u64, generations: &[u32], room: &str) -> String {
    let generation = u64::from(generations[bucket(room)]);
    let epoch = splitmix64(seed ^ splitmix64(name_hash(room) ^ (generation << 32)));
    format!("{epoch:016x}")
}

/// SplitMix64: spreads a counter or seed over 64 bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
