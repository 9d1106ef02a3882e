//! The broker seam of the [`Hub`](super::Hub): what several server processes ("nodes") must
//! share to serve one set of rooms.
//!
//! By default a hub is its own broker: it sequences publishes, keeps history and deduplicates
//! publish ids in memory, and nothing here is used. A hub made with
//! [`HubConfig::with_external_broker`](super::HubConfig::with_external_broker) instead asks a
//! broker the driver runs (Redis, in `duplex serve --broker`) for everything shared, and stays
//! sans-IO: it queues [`BrokerRequest`]s ([`Hub::poll_broker`](super::Hub::poll_broker)) and
//! takes the answers and the broker's fan-out back as [`BrokerEvent`]s
//! ([`Hub::handle_broker`](super::Hub::handle_broker)).
//!
//! What the driver's broker must guarantee:
//! - [`BrokerRequest::Publish`] gives the publish the room's next seq atomically, unless the
//!   `(client, id)` pair was sequenced before, in which case it answers the original seq
//!   (`duplicate`) and fans nothing out; it stores the message in the room's history and fans it
//!   out to every node subscribed to the room, as [`BrokerEvent::Message`]s in seq order.
//! - [`BrokerRequest::Join`] subscribes this node to the room first and reads the room's epoch,
//!   seq and history after that, so every message is either in the answer or arrives later as a
//!   [`BrokerEvent::Message`] (the hub drops the ones it sees twice). When it carries a new
//!   member, the same round trip records it as [`BrokerRequest::MemberJoined`] would, before
//!   the read (so the answer's members and count include it). A join answered with an error
//!   may still take effect in the broker later (its answer was lost, not its request), after
//!   the hub's [`BrokerRequest::MemberLeft`] for it: the broker must then not leave that
//!   member recorded (the Redis broker compensates the given-up attempt).
//! - Every change of a room's members (on any node, this one included) is numbered by the
//!   broker, per room, and reported to every node subscribed to the room as a
//!   [`BrokerEvent::MemberCount`]: the room's members on all nodes after it. The hub judges
//!   `--presence-limit` on that count, not on its own members.
//! - After losing its subscriptions (a reconnect), it resubscribes and sends
//!   [`BrokerEvent::Resubscribed`]; the hub then asks each room's [`BrokerRequest::Position`] and
//!   tells members of a hole with `gap`, so that they recover from history.
//! - Its queue of room messages toward the hub is bounded: when full, it drops messages of a
//!   room rather than grow (nothing acknowledged is lost, history is in the broker), and once
//!   it has room again sends [`BrokerEvent::Missed`] for that room; the hub then asks the
//!   room's [`BrokerRequest::Position`] as after a resubscribe (a later message of the room
//!   shows the hole by its seq as well), and members recover with `gap` and `since`.
//! - [`BrokerRequest::Direct`] hands a message to the node holding the target client id's
//!   latest claim (see [`BrokerRequest::Claim`]), which gets it as a [`BrokerEvent::Direct`],
//!   provided that, when `rooms` is given, the target is a member on that node of one of
//!   `rooms` as the broker records members ([`BrokerRequest::MemberJoined`]: every member, in
//!   rooms of any size). Answered with [`BrokerEvent::Sent`]: how many connections it reached
//!   (0 or 1: a client id has one connection across the nodes).

use alloc::string::String;
use alloc::vec::Vec;

use super::protocol::{Id, Since};

/// Something the hub needs from the broker. Requests carrying a `token` are answered with an
/// event carrying the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerRequest {
    /// Sequence, store and fan out a publish of `client` (deduplicated on `(client, id)`).
    /// Answered with [`BrokerEvent::Published`].
    Publish {
        token: u64,
        room: String,
        client: String,
        id: Id,
        /// `publish.data` as compact JSON.
        data: String,
    },
    /// Subscribe to `room` (if not yet), then read its epoch, seq and, when `since` has the
    /// room's epoch, the history after `since.seq`. Answered with [`BrokerEvent::Joined`].
    Join {
        token: u64,
        room: String,
        since: Option<Since>,
        /// The joining `(client, presence as compact JSON)` when it is not a member of the
        /// room here yet: recorded (and announced to other nodes) in the same round trip, as
        /// [`BrokerRequest::MemberJoined`] would. If the hub then does not admit it (the
        /// connection went away meanwhile), it sends [`BrokerRequest::MemberLeft`].
        member: Option<(String, String)>,
    },
    /// Read the epoch and seq of `room`. Answered with [`BrokerEvent::Position`].
    Position { room: String },
    /// No member of `room` is left on this node: stop receiving its messages.
    Unsubscribe { room: String },
    /// `client` became a member of `room` here (or is announced again after a resubscribe):
    /// record it for other nodes' `joined.members` and send them a `join` event.
    MemberJoined {
        room: String,
        client: String,
        /// Compact JSON.
        presence: String,
    },
    /// `client` left `room` here: forget it and send other nodes a `leave` event.
    MemberLeft { room: String, client: String },
    /// A connection here said `hello` as `client`: claim the client id for this node, and tell
    /// the node that held it before to close its connection (with a later
    /// [`BrokerEvent::TakeOver`] there). Answered with [`BrokerEvent::Claimed`].
    Claim { client: String },
    /// `client`'s presence in `room` changed (after the presence window): record it and send
    /// other nodes a `presence` event.
    MemberPresence {
        room: String,
        client: String,
        /// Compact JSON.
        presence: String,
    },
    /// A message from `from` to client `to`, whose connection is not on this node: hand it to
    /// the node holding `to`, only if `to` is a member there of one of `rooms` (the sender's
    /// rooms) when `rooms` is given (the HTTP API gives none). Answered with
    /// [`BrokerEvent::Sent`].
    Direct {
        token: u64,
        from: String,
        to: String,
        rooms: Option<Vec<String>>,
        /// Compact JSON.
        data: String,
    },
    /// The last connection of `client` on this node ended: unless another node claimed it
    /// since, forget that this node holds it (no more [`BrokerEvent::Direct`] for it here).
    Release { client: String },
}

/// A presence change of a member on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberChange {
    /// `presence` is compact JSON.
    Joined {
        client: String,
        presence: String,
    },
    Left {
        client: String,
    },
    /// `presence` is compact JSON.
    Presence {
        client: String,
        presence: String,
    },
}

/// A message as the broker stores and fans it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMessage {
    pub seq: u64,
    /// The publisher's client id.
    pub from: String,
    /// `publish.data` as compact JSON.
    pub data: String,
}

/// The answer to [`BrokerRequest::Publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: u64,
    pub epoch: String,
    /// The `(client, id)` pair had been sequenced before: `seq` is the original one and
    /// nothing was fanned out again.
    pub duplicate: bool,
}

/// The answer to [`BrokerRequest::Join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    pub epoch: String,
    /// The room's last seq when it was read.
    pub seq: u64,
    /// The stored messages after `since.seq`, oldest first (empty without `since`, or when
    /// `since.epoch` is not the room's epoch).
    pub history: Vec<BrokerMessage>,
    /// The room's members on every node, as `(client, presence as compact JSON)`: listed
    /// only while there are at most `--presence-limit` of them.
    pub members: Vec<(String, String)>,
    /// How many members the room has on every node (this node's included, and the joining
    /// one when the join carried it), and the number of the last member change counted (see
    /// [`BrokerEvent::MemberCount`]).
    pub member_count: MemberCount,
}

/// A room's members on every node after its `version`th member change (the broker numbers a
/// room's member changes: a higher version is a later count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCount {
    pub version: u64,
    pub members: u64,
}

/// The broker could not be reached or did not answer in time; the message says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError(pub String);

/// What the broker tells the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerEvent {
    /// The answer to [`BrokerRequest::Publish`].
    Published {
        token: u64,
        result: Result<Sequenced, BrokerError>,
    },
    /// The answer to [`BrokerRequest::Join`].
    Joined {
        token: u64,
        result: Result<RoomState, BrokerError>,
    },
    /// A message of a room this node is subscribed to, from whichever node published it.
    Message {
        room: String,
        epoch: String,
        message: BrokerMessage,
    },
    /// The answer to [`BrokerRequest::Position`].
    Position {
        room: String,
        epoch: String,
        seq: u64,
    },
    /// The broker lost its subscriptions and has them back: messages may have been missed.
    Resubscribed,
    /// The broker dropped messages of `room` (its queue toward the hub was full): the hub
    /// checks the room's position and tells members of the hole.
    Missed { room: String },
    /// A member of `room` on another node joined, left or changed its presence. It comes
    /// after the [`BrokerEvent::MemberCount`] of the same change.
    Member { room: String, change: MemberChange },
    /// The members of `room` on every node after a member change on any node (this one's
    /// included; a node's members removed because it died too).
    MemberCount { room: String, count: MemberCount },
    /// The answer to [`BrokerRequest::Claim`]: the claim's serial (claims of one client id are
    /// numbered in the order the broker took them).
    Claimed { client: String, serial: u64 },
    /// Another node claimed `client` with this serial: a connection here with an older claim
    /// is taken over.
    TakeOver { client: String, serial: u64 },
    /// A message to `to`, a client id held here, from `from` on another node (see
    /// [`BrokerRequest::Direct`]). `data` is compact JSON.
    Direct {
        from: String,
        to: String,
        data: String,
    },
    /// The answer to [`BrokerRequest::Direct`]: the connections the message was handed to (0
    /// when the target is held nowhere, or shares none of the rooms).
    Sent {
        token: u64,
        result: Result<u64, BrokerError>,
    },
}
