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
use alloc::vec::Vec;

use super::protocol::{Id, ServerMessage};

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

/// The answer to `join`: [`ServerMessage::Joined`] with its member list kept as one JSON text
/// (see [`MemberList`]): a list of a thousand members costs its text while it waits to be
/// sent, not a thousand allocations (a room's join storm queues one list per joining member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub id: Id,
    pub room: String,
    pub epoch: String,
    /// The last seq the member has (replayed, or the room's seq when it joined).
    pub seq: u64,
    pub members: MemberList,
    /// The list was cut at the hub's `max_member_list` bytes.
    pub members_truncated: bool,
    pub recovered: bool,
}

/// The members listed in [`Joined`]: `(client id, presence as compact JSON)` pairs, stored
/// back to back in one buffer. [`MemberList::iter`] gives the pairs back to any codec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberList {
    /// Each entry: the client id, then the presence; `ends` holds where each part ends.
    text: String,
    ends: Vec<(u32, u32)>,
}

impl MemberList {
    /// Adds a member: its client id and its presence as compact JSON.
    pub fn push(&mut self, client: &str, presence: &str) {
        self.text.push_str(client);
        let client_end = self.text.len() as u32;
        self.text.push_str(presence);
        self.ends.push((client_end, self.text.len() as u32));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of client ids and presences.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The `(client, presence)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(client_end, end)| {
            let (client_end, end) = (client_end as usize, end as usize);
            let pair = (
                self.text.get(start..client_end).unwrap_or_default(),
                self.text.get(client_end..end).unwrap_or_default(),
            );
            start = end;
            pair
        })
    }
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
    /// The answer to a `join`.
    Joined(Arc<Joined>),
    /// Any other server message: a reply to a command (`welcome`, `joined`, `left`, `ack`,
    /// `pong`, `sent`, `error`), a `gap`, or a presence event (`join`, `leave`, `presence`,
    /// shared by every member it is broadcast to). Never [`ServerMessage::Message`],
    /// [`ServerMessage::Direct`] nor [`ServerMessage::Joined`], which come as the variants
    /// above.
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
            (Delivery::Joined(a), Delivery::Joined(b)) => Arc::ptr_eq(a, b),
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
