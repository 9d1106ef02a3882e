//! What the hub hands out ([`Delivery`]) and the wire formats that encode it.
//!
//! The [`Hub`](super::Hub) never writes a wire format: it yields typed deliveries, and each
//! wire format is one codec module that turns a delivery into the bytes of one frame.
//! [`json`] is `duplex.v1` (the only place that writes the JSON of server messages).
//!
//! A fan-out is one value shared by every member: the hub pushes clones of one [`Arc`] for a
//! broadcast, so a driver encodes it once and sends the same bytes to each member, by
//! comparing consecutive deliveries with [`Delivery::same`] (`duplex serve` prepares, and
//! compresses, one frame per run of equal deliveries on each worker).
//!
//! # Another wire format
//!
//! A second codec (STOMP 1.2, say) is a sibling module with its own `encode` over the same
//! [`Delivery`]: a [`RoomMessage`] carries everything a STOMP `MESSAGE` frame needs
//! (`destination` from [`RoomMessage::room`], `message-id` as `EPOCH:SEQ` from
//! [`RoomMessage::epoch`] and [`RoomMessage::seq`], the sender from [`RoomMessage::from`], the
//! body from [`RoomMessage::data`]); replies ([`ServerMessage`]) map to `RECEIPT`/`ERROR`
//! frames. The driver picks the codec per connection (by its subprotocol), so members of one
//! room may speak different formats and still share one hub, one sequence and one fan-out;
//! the per-subscription part of a frame (STOMP's `subscription` header) is the codec's to add
//! for each connection.

use alloc::string::String;
use alloc::sync::Arc;

use super::protocol::ServerMessage;

pub mod json;

/// One message of a room, as every member of its fan-out (and a replay from history) gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    /// The room's name (validated: `[A-Za-z0-9_.:-/]`, no JSON escaping needed).
    pub room: String,
    /// The room's epoch: `(epoch, seq)` names the message for recovery.
    pub epoch: String,
    /// The room's sequence number of the message (1, 2, ...).
    pub seq: u64,
    /// The publisher's client id (validated like a room name).
    pub from: String,
    /// The application data as compact JSON text.
    pub data: String,
}

/// A message sent to one client (`send`, or the HTTP API): every live connection of the
/// target gets the same value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectMessage {
    /// The sender's client id, or `api`.
    pub from: String,
    /// The application data as compact JSON text.
    pub data: String,
}

/// What the hub hands a driver for one connection (see [`Hub::poll_delivery`]).
///
/// [`Hub::poll_delivery`]: super::Hub::poll_delivery
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A room message: live fan-out or replay.
    Message(Arc<RoomMessage>),
    /// A message to this client alone.
    Direct(Arc<DirectMessage>),
    /// Any other server message: a reply to a command (`welcome`, `joined`, `left`, `ack`,
    /// `pong`, `sent`, `error`), a `gap`, or a presence event (`join`, `leave`, `presence`,
    /// shared by every member it is broadcast to). Never [`ServerMessage::Message`] nor
    /// [`ServerMessage::Direct`], which come as the variants above.
    Reply(Arc<ServerMessage>),
}

impl Delivery {
    /// A reply for one connection.
    pub fn reply(message: ServerMessage) -> Self {
        Delivery::Reply(Arc::new(message))
    }

    /// True when both are the same shared value (one fan-out): encode once, send twice.
    pub fn same(&self, other: &Delivery) -> bool {
        match (self, other) {
            (Delivery::Message(a), Delivery::Message(b)) => Arc::ptr_eq(a, b),
            (Delivery::Direct(a), Delivery::Direct(b)) => Arc::ptr_eq(a, b),
            (Delivery::Reply(a), Delivery::Reply(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The room and seq of a room message (what a slow consumer's drop must report in `gap`);
    /// `None` for every other delivery.
    pub fn room_seq(&self) -> Option<(&str, u64)> {
        match self {
            Delivery::Message(m) => Some((&m.room, m.seq)),
            _ => None,
        }
    }
}
