//! The `duplex.v1` channel protocol (feature `channel`): rooms in namespaces, presence,
//! acknowledged and deduplicated publishes, per-room total order, and recovery from history.
//! The wire format is specified in `docs/PROTOCOL.md`.
//!
//! [`Hub`] is the server side as a sans-IO state machine that hands out typed deliveries
//! ([`Delivery`]), encoded by a wire format's codec ([`codec::json`] for `duplex.v1`), [`ClientSession`] the client side
//! (reconnect with backoff, rejoin and recovery, offline queue, application heartbeat; see
//! [`client`] for how to drive it and an example against a hub).
//!
//! The hub:
//!
//! ```
//! use core::time::Duration;
//! use duplex_core::channel::{codec, Hub, HubConfig};
//!
//! let now = Duration::ZERO;
//! let mut hub = Hub::new(HubConfig::default(), 42); // the seed comes from the driver's RNG
//! hub.connect(1u64, now);
//! hub.receive(1, r#"{"type":"hello","client":"ada"}"#, now).unwrap();
//! hub.receive(1, r#"{"type":"join","id":1,"room":"app/chat"}"#, now).unwrap();
//! hub.receive(1, r#"{"type":"publish","id":2,"room":"app/chat","data":"hi"}"#, now).unwrap();
//! let mut texts = Vec::new();
//! while let Some((conn, delivery)) = hub.poll_delivery() {
//!     assert_eq!(conn, 1);
//!     texts.push(codec::json::encode(&delivery)); // the `duplex.v1` wire format
//! }
//! assert!(texts[0].starts_with(r#"{"type":"welcome","client":"ada""#));
//! assert_eq!(texts[2], r#"{"type":"ack","id":2,"seq":1}"#);
//! assert_eq!(texts[3], r#"{"type":"message","room":"app/chat","seq":1,"from":"ada","data":"hi"}"#);
//! ```

pub mod api;
pub mod broker;
pub mod client;
#[cfg(test)]
mod client_tests;
pub mod codec;
pub mod hub;
pub mod json;
#[cfg(test)]
mod props;
pub mod protocol;
#[cfg(test)]
mod tests;

/// For tests: the hub's next delivery as `duplex.v1` text, encoded by the codec.
#[cfg(test)]
pub(crate) trait PollText<C> {
    fn poll_text(&mut self) -> Option<(C, alloc::string::String)>;
}

#[cfg(test)]
impl<C: Copy + Ord> PollText<C> for Hub<C> {
    fn poll_text(&mut self) -> Option<(C, alloc::string::String)> {
        self.poll_delivery()
            .map(|(conn, delivery)| (conn, codec::json::encode(&delivery)))
    }
}

pub use broker::{
    BrokerError, BrokerEvent, BrokerMessage, BrokerRequest, MemberChange, MemberCount, RoomState,
    Sequenced,
};
pub use client::{ClientConfig, ClientError, ClientEvent, ClientSession, DisconnectReason};
pub use codec::{Delivery, DirectMessage, Joined, MemberList, RoomMessage};
pub use hub::{
    ApiDirect, ApiHistory, ApiPublished, ApiRoom, ConnectionUsage, Hub, HubConfig, HubStats,
};
pub use protocol::{
    ClientMessage, CommandError, DecodeLimits, ErrorCode, Id, Member, SUBPROTOCOL, ServerMessage,
    Since, decode, decode_limited, validate_room,
};
