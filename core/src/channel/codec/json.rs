//! The `duplex.v1` codec: each [`Delivery`] is one JSON object, tagged by `"type"`, in one
//! text frame (see `docs/PROTOCOL.md`). This module is the only writer of server messages'
//! JSON; decoding client commands is [`protocol::decode`](super::super::protocol::decode).
//!
//! ```
//! use std::sync::Arc;
//! use duplex_core::channel::codec::{json, Delivery, RoomMessage};
//!
//! let message = RoomMessage {
//!     room: "app/chat".into(),
//!     epoch: "0123456789abcdef".into(),
//!     seq: 7,
//!     from: "ada".into(),
//!     data: r#"{"text":"hi"}"#.into(),
//! };
//! assert_eq!(
//!     json::encode(&Delivery::Message(Arc::new(message))),
//!     r#"{"type":"message","room":"app/chat","seq":7,"from":"ada","data":{"text":"hi"}}"#
//! );
//! ```

use alloc::string::String;

use super::{Delivery, DirectMessage, Joined, RoomMessage};
use crate::channel::protocol::ServerMessage;

/// The text frame of `delivery`.
pub fn encode(delivery: &Delivery) -> String {
    match delivery {
        Delivery::Message(m) => message(m),
        Delivery::Direct(d) => direct(d),
        Delivery::Joined(j) => joined(j),
        Delivery::Reply(r) => reply(r),
    }
}

/// `{"type":"message","room":…,"seq":…,"from":…,"data":…}`. Room and client names are
/// validated to need no JSON escaping, and `data` is compact JSON. The epoch is not part of a
/// `duplex.v1` message (clients learn it from `joined`).
pub fn message(m: &RoomMessage) -> String {
    let mut seq = itoa_buf();
    let seq = fmt_u64(m.seq, &mut seq);
    let mut out =
        String::with_capacity(48 + m.room.len() + seq.len() + m.from.len() + m.data.len());
    out.push_str(r#"{"type":"message","room":""#);
    out.push_str(&m.room);
    out.push_str(r#"","seq":"#);
    out.push_str(seq);
    out.push_str(r#","from":""#);
    out.push_str(&m.from);
    out.push_str(r#"","data":"#);
    out.push_str(&m.data);
    out.push('}');
    out
}

/// `{"type":"direct","from":…,"data":…}`; `from` is a valid client id (or `api`), `data`
/// compact JSON.
pub fn direct(d: &DirectMessage) -> String {
    let mut out = String::with_capacity(32 + d.from.len() + d.data.len());
    out.push_str(r#"{"type":"direct","from":""#);
    out.push_str(&d.from);
    out.push_str(r#"","data":"#);
    out.push_str(&d.data);
    out.push('}');
    out
}

/// `{"type":"joined","id":…,"room":…,"epoch":…,"seq":…,"members":[{"client":…,"presence":…}…],
/// "members_truncated":true (only when true),"recovered":…}`. Room, epoch and client names need
/// no JSON escaping; presences are compact JSON.
pub fn joined(j: &Joined) -> String {
    let members = j.members.text_len() + 26 * j.members.len();
    let mut out = String::with_capacity(128 + j.room.len() + j.epoch.len() + members);
    out.push_str(r#"{"type":"joined","id":"#);
    // An id is a number or a string of at most 128 bytes: it cannot fail to serialise.
    out.push_str(&serde_json::to_string(&j.id).unwrap_or_default());
    out.push_str(r#","room":""#);
    out.push_str(&j.room);
    out.push_str(r#"","epoch":""#);
    out.push_str(&j.epoch);
    out.push_str(r#"","seq":"#);
    out.push_str(fmt_u64(j.seq, &mut itoa_buf()));
    out.push_str(r#","members":["#);
    for (i, (client, presence)) in j.members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"client":""#);
        out.push_str(client);
        out.push_str(r#"","presence":"#);
        out.push_str(presence);
        out.push('}');
    }
    out.push(']');
    if j.members_truncated {
        out.push_str(r#","members_truncated":true"#);
    }
    out.push_str(if j.recovered {
        r#","recovered":true}"#
    } else {
        r#","recovered":false}"#
    });
    out
}

/// Any server message, as serde writes the [`ServerMessage`] shape (compact JSON).
pub fn reply(message: &ServerMessage) -> String {
    // Serialising these types cannot fail: every map key is a string.
    serde_json::to_string(message).unwrap_or_default()
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// The decimal digits of `n`, written at the end of `buf`.
fn fmt_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    core::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    #[test]
    fn message_matches_the_serde_shape() {
        for seq in [0, 1, 9, 10, 12345, u64::MAX] {
            let m = RoomMessage {
                room: "app/a".into(),
                epoch: "e".into(),
                seq,
                from: "c-1".into(),
                data: r#"[1,"x",{"k":null}]"#.into(),
            };
            let typed = ServerMessage::Message {
                room: m.room.clone(),
                seq,
                from: m.from.clone(),
                data: serde_json::from_str(&m.data).unwrap(),
            };
            assert_eq!(message(&m), reply(&typed));
            assert_eq!(fmt_u64(seq, &mut itoa_buf()), format!("{seq}"));
        }
        let d = DirectMessage {
            from: "api".into(),
            data: "\"hi\"".into(),
        };
        let typed = ServerMessage::Direct {
            from: "api".into(),
            data: serde_json::Value::String("hi".to_string()),
        };
        assert_eq!(direct(&d), reply(&typed));
    }

    #[test]
    fn joined_matches_the_serde_shape() {
        use crate::channel::codec::MemberList;
        use crate::channel::protocol::{Id, Member};
        for (id, members, truncated, recovered) in [
            (Id::Number(3), 0, false, false),
            (Id::Text("j\"1".into()), 1, true, true),
            (Id::Number(u64::MAX), 3, false, true),
        ] {
            let mut entries = MemberList::default();
            for i in 0..members {
                let presence = format!(r#"{{"list":[1,2.5,null],"name":"n{i}"}}"#);
                entries.push(&format!("c{i}"), &presence);
            }
            assert_eq!(entries.len(), members);
            let j = Joined {
                id: id.clone(),
                room: "app/a".into(),
                epoch: "00ff".into(),
                seq: 42,
                members: entries.clone(),
                members_truncated: truncated,
                recovered,
            };
            let typed = ServerMessage::Joined {
                id,
                room: "app/a".into(),
                epoch: "00ff".into(),
                seq: 42,
                members: entries
                    .iter()
                    .map(|(client, presence)| Member {
                        client: client.into(),
                        presence: serde_json::from_str(presence).unwrap(),
                    })
                    .collect(),
                members_truncated: truncated,
                recovered,
            };
            assert_eq!(joined(&j), reply(&typed));
        }
    }
}
