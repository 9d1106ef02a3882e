//! The `duplex.v1` wire format: one JSON object per text frame, tagged by `"type"`.
//!
//! [`decode`] turns a text frame from a client into a [`ClientMessage`], or into a
//! [`CommandError`] that already carries the `error` reply (code, message and the command's `id`
//! when one could be read). Unknown fields are ignored so that clients can be newer than servers.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The WebSocket subprotocol name (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = "duplex.v1";
/// Longest room name, client id or command id, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A command id chosen by the client and echoed in the reply: a non-negative integer or a string
/// of at most [`MAX_NAME_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Number(u64),
    Text(String),
}

/// Where a client's copy of a room stopped: the room's `epoch` and the last `seq` it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    pub epoch: String,
    pub seq: u64,
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Join {
        id: Id,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Since>,
    },
    Leave {
        id: Id,
        room: String,
    },
    Publish {
        id: Id,
        room: String,
        data: Value,
    },
    Presence {
        room: String,
        presence: Value,
    },
    Ping {
        id: Id,
    },
    /// A message to every live connection of client `to`, answered `sent` (see
    /// `docs/PROTOCOL.md`, Messages to one client).
    Send {
        id: Id,
        to: String,
        data: Value,
    },
}

/// One entry of `joined.members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub client: String,
    pub presence: Value,
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        client: String,
        heartbeat_ms: u64,
    },
    Joined {
        id: Id,
        room: String,
        epoch: String,
        seq: u64,
        members: Vec<Member>,
        /// True when `members` lists only part of the room: the list is cut at
        /// [`crate::channel::HubConfig::max_member_list`] bytes. Absent (false) otherwise.
        #[serde(default, skip_serializing_if = "is_false")]
        members_truncated: bool,
        recovered: bool,
    },
    Left {
        id: Id,
        room: String,
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
    Pong {
        id: Id,
    },
    Gap {
        room: String,
        from_seq: u64,
        to_seq: u64,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        code: ErrorCode,
        message: String,
    },
    /// The reply to `send`: the message was handed to the target's connections.
    Sent {
        id: Id,
    },
    /// A message sent to this client alone (`send`, or `"api"` for the server's HTTP API).
    Direct {
        from: String,
        data: Value,
    },
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl ClientMessage {
    /// The command's `id` (`hello` and `presence` have none).
    pub fn id(&self) -> Option<&Id> {
        match self {
            ClientMessage::Join { id, .. }
            | ClientMessage::Leave { id, .. }
            | ClientMessage::Publish { id, .. }
            | ClientMessage::Ping { id }
            | ClientMessage::Send { id, .. } => Some(id),
            ClientMessage::Hello { .. } | ClientMessage::Presence { .. } => None,
        }
    }
}

impl ServerMessage {
    /// The JSON text of this message, as the `duplex.v1` codec writes it
    /// ([`codec::json::reply`](super::codec::json::reply)).
    pub fn to_text(&self) -> String {
        super::codec::json::reply(self)
    }
}

/// Why a command was refused. The wire form is the snake_case name (`bad_json`, …); these
/// strings are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON, or not a JSON object.
    BadJson,
    /// `type` is missing, or a field is missing or has the wrong type, or a client/command id is
    /// malformed, or a second `hello` on the same connection.
    BadMessage,
    /// `type` names no command of `duplex.v1`.
    UnknownType,
    /// A command other than `hello` before `hello`.
    HelloRequired,
    /// The room name is not `namespace/name` of `[A-Za-z0-9_.:-]`, at most 128 bytes.
    BadRoom,
    /// `leave`, `publish` or `presence` for a room this connection has not joined.
    NotJoined,
    /// `publish.data` or a presence larger than the server's limit, or a command longer, deeper
    /// or with more JSON values than [`DecodeLimits`] allow (refused before it is parsed).
    TooLarge,
    /// The room's namespace is not allowed for this connection.
    Unauthorized,
    /// `join` of a new room beyond the rooms a connection may be in, or beyond the rooms the
    /// server holds.
    TooManyRooms,
    /// The connection's client id said `hello` on another connection, which took over: this one
    /// can do nothing more and is closed.
    TakenOver,
    /// The shared broker behind the server (Redis, with `--broker`) cannot be reached: the
    /// command (a `publish`, a `join`) was not carried out; retry it, with the same publish id.
    Unavailable,
    /// `send` to a client that shares no room with the sender, or that does not exist (the
    /// two are not told apart).
    NotFound,
    /// `send` beyond the connection's rate (`duplex serve --send-rate`).
    RateLimited,
}

impl ErrorCode {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::TakenOver => "taken_over",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: becomes `error {id?, code, message}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CommandError {
    /// The command's `id`, when the command had a readable one.
    pub id: Option<Id>,
    pub code: ErrorCode,
    pub message: String,
}

impl CommandError {
    pub fn new(id: Option<Id>, code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError {
            id,
            code,
            message: message.into(),
        }
    }

    /// The `error` reply.
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            id: self.id.clone(),
            code: self.code,
            message: self.message.clone(),
        }
    }
}

const COMMANDS: [&str; 7] = [
    "hello", "join", "leave", "publish", "presence", "ping", "send",
];

/// What [`decode_limited`] accepts before it builds anything: a JSON document costs up to ~20×
/// its text once parsed, so a frame is judged by its size and shape first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longest frame, in bytes. The hub sets it to the largest valid command (see
    /// [`crate::channel::HubConfig::max_command`]).
    pub max_len: usize,
    /// Deepest nesting of arrays and objects (the command object itself is depth 1).
    pub max_depth: usize,
    /// Most JSON values in the frame (every scalar, array, object and key counts one).
    pub max_nodes: usize,
}

impl Default for DecodeLimits {
    /// The limits of a hub with the default [`crate::channel::HubConfig`].
    fn default() -> Self {
        DecodeLimits {
            max_len: 64 * 1024 + COMMAND_OVERHEAD,
            max_depth: 64,
            max_nodes: 16 * 1024,
        }
    }
}

/// Room for everything in a command but `data` and `presence`: type, names, ids, `since`, and
/// the whitespace a client may put around them.
pub const COMMAND_OVERHEAD: usize = 16 * 1024;

/// Scans `text` once, without allocating, and refuses it with `too_large` when it breaks
/// `limits`. Strings are skipped (escapes included); the syntax itself is left to the parser.
pub(crate) fn check_shape(text: &str, limits: &DecodeLimits) -> Result<(), CommandError> {
    if text.len() > limits.max_len {
        let message = alloc::format!(
            "the command is {} bytes, the limit is {}",
            text.len(),
            limits.max_len
        );
        return Err(CommandError::new(None, ErrorCode::TooLarge, message));
    }
    let (mut depth, mut nodes) = (0usize, 0usize);
    let (mut in_string, mut escaped, mut in_scalar) = (false, false, false);
    for &b in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        let starts_value = match b {
            b'"' => {
                in_string = true;
                in_scalar = false;
                true
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limits.max_depth {
                    let message =
                        alloc::format!("the command nests deeper than {}", limits.max_depth);
                    return Err(CommandError::new(None, ErrorCode::TooLarge, message));
                }
                in_scalar = false;
                true
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                in_scalar = false;
                false
            }
            b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' => {
                in_scalar = false;
                false
            }
            _ => !core::mem::replace(&mut in_scalar, true),
        };
        if starts_value {
            nodes += 1;
            if nodes > limits.max_nodes {
                let message =
                    alloc::format!("the command has more than {} JSON values", limits.max_nodes);
                return Err(CommandError::new(None, ErrorCode::TooLarge, message));
            }
        }
    }
    Ok(())
}

/// Decodes and validates one text frame from a client, with [`DecodeLimits::default`].
pub fn decode(text: &str) -> Result<ClientMessage, CommandError> {
    decode_limited(text, &DecodeLimits::default())
}

/// Decodes and validates one text frame from a client.
///
/// Checks, in order: size, depth and number of values (`too_large`, before anything is
/// parsed), JSON syntax (`bad_json`), an object with a string `type` (`bad_json`,
/// `bad_message`), a known `type` (`unknown_type`), the command's fields (`bad_message`), then
/// names: command id and client id (`bad_message`) and room (`bad_room`).
pub fn decode_limited(text: &str, limits: &DecodeLimits) -> Result<ClientMessage, CommandError> {
    check_shape(text, limits)?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| CommandError::new(None, ErrorCode::BadJson, e.to_string()))?;
    let Value::Object(object) = &value else {
        return Err(CommandError::new(
            None,
            ErrorCode::BadJson,
            "a command is a JSON object",
        ));
    };
    let id = object.get("id").and_then(|v| Id::deserialize(v).ok());
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => {
            return Err(CommandError::new(
                id,
                ErrorCode::BadMessage,
                "`type` is not a string",
            ));
        }
        None => {
            return Err(CommandError::new(
                id,
                ErrorCode::BadMessage,
                "missing field `type`",
            ));
        }
    };
    if !COMMANDS.contains(&kind.as_str()) {
        let message = alloc::format!("unknown command type `{}`", truncate(kind, 32));
        return Err(CommandError::new(id, ErrorCode::UnknownType, message));
    }
    let message: ClientMessage = serde_json::from_value(value)
        .map_err(|e| CommandError::new(id.clone(), ErrorCode::BadMessage, e.to_string()))?;
    validate(&message).map_err(|(code, text)| CommandError::new(id, code, text))?;
    Ok(message)
}

fn validate(message: &ClientMessage) -> Result<(), (ErrorCode, String)> {
    let (id, room) = match message {
        ClientMessage::Hello { client, .. } => {
            if let Some(client) = client {
                if !is_name(client) {
                    return Err((
                        ErrorCode::BadMessage,
                        "`client` must be 1 to 128 bytes of [A-Za-z0-9_.:-]".to_string(),
                    ));
                }
            }
            return Ok(());
        }
        ClientMessage::Join { id, room, .. }
        | ClientMessage::Leave { id, room }
        | ClientMessage::Publish { id, room, .. } => (Some(id), Some(room)),
        ClientMessage::Presence { room, .. } => (None, Some(room)),
        ClientMessage::Ping { id } => (Some(id), None),
        ClientMessage::Send { id, to, .. } => {
            if !is_name(to) {
                return Err((
                    ErrorCode::BadMessage,
                    "`to` must be 1 to 128 bytes of [A-Za-z0-9_.:-]".to_string(),
                ));
            }
            (Some(id), None)
        }
    };
    if let Some(Id::Text(id)) = id {
        if id.len() > MAX_NAME_LEN {
            return Err((
                ErrorCode::BadMessage,
                "`id` is longer than 128 bytes".to_string(),
            ));
        }
    }
    if let Some(room) = room {
        validate_room(room).map_err(|text| (ErrorCode::BadRoom, text.to_string()))?;
    }
    Ok(())
}

/// Checks a room name: `namespace/name`, exactly one `/`, both parts non-empty and made of
/// `[A-Za-z0-9_.:-]`, at most [`MAX_NAME_LEN`] bytes in total.
pub fn validate_room(room: &str) -> Result<(), &'static str> {
    if room.len() > MAX_NAME_LEN {
        return Err("room name is longer than 128 bytes");
    }
    let Some((namespace, name)) = room.split_once('/') else {
        return Err("room name must be `namespace/name`");
    };
    if namespace.is_empty() || name.is_empty() {
        return Err("room namespace and name must not be empty");
    }
    if !namespace.bytes().chain(name.bytes()).all(is_name_byte) {
        return Err("room name must be made of [A-Za-z0-9_.:-] around one `/`");
    }
    Ok(())
}

/// The namespace of a valid room name.
pub fn namespace(room: &str) -> &str {
    room.split_once('/')
        .map_or(room, |(namespace, _)| namespace)
}

/// A client id: 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9_.:-]`.
pub fn is_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(is_name_byte)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(text: &str) -> (Option<Id>, ErrorCode) {
        let e = decode(text).unwrap_err();
        (e.id, e.code)
    }

    #[test]
    fn decodes_every_command() {
        assert_eq!(
            decode(r#"{"type":"hello"}"#).unwrap(),
            ClientMessage::Hello {
                client: None,
                token: None
            }
        );
        assert_eq!(
            decode(r#"{"type":"join","id":1,"room":"app/a","since":{"epoch":"e","seq":3},"x":0}"#)
                .unwrap(),
            ClientMessage::Join {
                id: Id::Number(1),
                room: "app/a".into(),
                presence: None,
                since: Some(Since {
                    epoch: "e".into(),
                    seq: 3
                }),
            }
        );
        assert_eq!(
            decode(r#"{"type":"publish","id":"p1","room":"app/a","data":{"k":[1,2]}}"#).unwrap(),
            ClientMessage::Publish {
                id: Id::Text("p1".into()),
                room: "app/a".into(),
                data: json!({"k": [1, 2]}),
            }
        );
        assert!(matches!(
            decode(r#"{"type":"publish","id":2,"room":"app/a","data":null}"#),
            Ok(ClientMessage::Publish {
                data: Value::Null,
                ..
            })
        ));
        assert!(matches!(
            decode(r#"{"type":"leave","id":2,"room":"app/a"}"#),
            Ok(ClientMessage::Leave { .. })
        ));
        assert!(matches!(
            decode(r#"{"type":"presence","room":"app/a","presence":"typing"}"#),
            Ok(ClientMessage::Presence { .. })
        ));
        assert_eq!(
            decode(r#"{"type":"ping","id":9}"#).unwrap(),
            ClientMessage::Ping { id: Id::Number(9) }
        );
        assert_eq!(
            decode(r#"{"type":"send","id":3,"to":"bob","data":{"sdp":"x"}}"#).unwrap(),
            ClientMessage::Send {
                id: Id::Number(3),
                to: "bob".into(),
                data: json!({"sdp": "x"}),
            }
        );
    }

    #[test]
    fn precise_errors_echo_the_id() {
        assert_eq!(code("{"), (None, ErrorCode::BadJson));
        assert_eq!(code("[1]"), (None, ErrorCode::BadJson));
        assert_eq!(
            code(r#"{"id":4}"#),
            (Some(Id::Number(4)), ErrorCode::BadMessage)
        );
        assert_eq!(
            code(r#"{"id":4,"type":7}"#),
            (Some(Id::Number(4)), ErrorCode::BadMessage)
        );
        assert_eq!(
            code(r#"{"id":"x","type":"shout"}"#),
            (Some(Id::Text("x".into())), ErrorCode::UnknownType)
        );
        let e = decode(r#"{"type":"publish","id":5,"room":"app/a"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(Id::Number(5)), ErrorCode::BadMessage));
        assert!(e.message.contains("missing field `data`"), "{}", e.message);
        assert_eq!(
            code(r#"{"type":"join","id":6,"room":"nope"}"#),
            (Some(Id::Number(6)), ErrorCode::BadRoom)
        );
        assert_eq!(
            code(r#"{"type":"ping","id":-1}"#),
            (None, ErrorCode::BadMessage)
        );
        assert_eq!(
            code(r#"{"type":"hello","client":"a b"}"#),
            (None, ErrorCode::BadMessage)
        );
        assert_eq!(
            code(r#"{"type":"send","id":8,"to":"a b","data":1}"#),
            (Some(Id::Number(8)), ErrorCode::BadMessage)
        );
        assert_eq!(
            code(r#"{"type":"send","id":8,"to":"bob"}"#),
            (Some(Id::Number(8)), ErrorCode::BadMessage)
        );
        let long = "i".repeat(129);
        assert_eq!(
            code(&alloc::format!(r#"{{"type":"ping","id":"{long}"}}"#)).1,
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn room_names() {
        for ok in [
            "app/chat",
            "a/b",
            "x.y:z-1_/Q",
            &alloc::format!("a/{}", "n".repeat(126)),
        ] {
            assert_eq!(validate_room(ok), Ok(()), "{ok}");
        }
        let too_long = alloc::format!("a/{}", "n".repeat(127));
        for bad in [
            "",
            "app",
            "/x",
            "app/",
            "a/b/c",
            "a b/c",
            "app/é",
            "app/ch at",
            &too_long,
        ] {
            assert!(validate_room(bad).is_err(), "{bad}");
        }
        assert_eq!(namespace("admin/x"), "admin");
    }

    #[test]
    fn server_messages_round_trip() {
        let messages = [
            ServerMessage::Welcome {
                client: "c".into(),
                heartbeat_ms: 30_000,
            },
            ServerMessage::Error {
                id: None,
                code: ErrorCode::NotJoined,
                message: "m".into(),
            },
            ServerMessage::Gap {
                room: "a/b".into(),
                from_seq: 3,
                to_seq: 9,
            },
            ServerMessage::Sent { id: Id::Number(4) },
            ServerMessage::Direct {
                from: "ada".into(),
                data: serde_json::json!({"k": 1}),
            },
            ServerMessage::Error {
                id: Some(Id::Number(5)),
                code: ErrorCode::RateLimited,
                message: "m".into(),
            },
        ];
        for message in messages {
            let text = message.to_text();
            assert_eq!(
                serde_json::from_str::<ServerMessage>(&text).unwrap(),
                message
            );
        }
        assert_eq!(
            ServerMessage::Error {
                id: None,
                code: ErrorCode::TooLarge,
                message: "m".into()
            }
            .to_text(),
            r#"{"type":"error","code":"too_large","message":"m"}"#
        );
    }
}
