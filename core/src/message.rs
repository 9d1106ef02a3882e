//! What applications receive and send: messages and connection events.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;

use crate::close::CloseCode;
use crate::error::Error;
use crate::handshake::server::Request;

/// Bytes known to be valid UTF-8 (a received or outgoing text payload).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps bytes after checking they are UTF-8.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, core::str::Utf8Error> {
        core::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
    /// Wraps bytes the connection has already validated.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        Utf8Bytes(bytes)
    }
    pub const fn from_static(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }
    /// The text. Safe code cannot skip the check, so this re-validates (at memory speed);
    /// hot paths that only forward text should use [`Utf8Bytes::as_bytes`].
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl core::fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

/// Text or binary, the two kinds of data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Text,
    Binary,
}

/// A complete data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Text(_) => MessageKind::Text,
            Message::Binary(_) => MessageKind::Binary,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
    pub fn into_bytes(self) -> Bytes {
        match self {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
        }
    }
}

/// How the connection ended, reported once by [`Event::Closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The peer's code for a completed close handshake (1005 when its frame had none), the code
    /// we failed the connection with, or 1006 when it ended without a close handshake.
    pub code: CloseCode,
    pub reason: String,
    /// True when both close frames were exchanged.
    pub clean: bool,
    /// True when the peer sent the first close frame.
    pub initiated_by_peer: bool,
}

/// Everything [`crate::Connection::poll_event`] reports. A connection yields events in this
/// order: (`Request`)?, `Open`, then any of `Message`/`Ping`/`Pong`, then at most one `Error`
/// and exactly one `Closed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Server role: a request head arrived. An upgrade request waits for
    /// [`crate::Connection::accept`] or [`crate::Connection::reject`]; any other request
    /// (`!request.is_websocket_upgrade()`) waits for [`crate::Connection::respond`].
    Request(Box<Request>),
    /// The handshake completed; messages may be sent and received.
    Open,
    Message(Message),
    /// A ping arrived; the pong was already queued.
    Ping(Bytes),
    Pong(Bytes),
    /// Why the connection is failing; [`Event::Closed`] follows.
    Error(Error),
    /// The connection is over; see [`crate::Connection::is_terminated`] for when to drop the socket.
    Closed(Closed),
}

/// A data message prepared once and sent to many connections with
/// [`Connection::send_prepared`](crate::Connection::send_prepared): the payload is validated once,
/// and compressed once per distinct compressor setting among the connections that compress each
/// message afresh (permessage-deflate without context takeover, the usual server setting).
#[derive(Debug, Clone)]
pub struct PreparedMessage {
    pub(crate) kind: MessageKind,
    pub(crate) payload: Bytes,
    /// Compressed payloads by (window bits, level), filled as connections need them.
    pub(crate) compressed: Vec<((u8, u8), Bytes)>,
}

impl PreparedMessage {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> PreparedMessage {
        PreparedMessage::new(MessageKind::Text, text.into().0)
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> PreparedMessage {
        PreparedMessage::new(MessageKind::Binary, data.into())
    }

    fn new(kind: MessageKind, payload: Bytes) -> PreparedMessage {
        PreparedMessage {
            kind,
            payload,
            compressed: Vec::new(),
        }
    }

    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// Payload length before compression.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// How many compressed copies were made (one per distinct compressor setting met).
    pub fn compressed_copies(&self) -> usize {
        self.compressed.len()
    }
}
