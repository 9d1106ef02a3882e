//! The `duplex.v1` command decoder: `channel_decode`.
//!
//! Compiled with the `channel` feature only (the fuzz crate's default; in the core's tests, the
//! core's own feature).
//!
//! # Input format
//!
//! Two limit bytes, then the frame's text (lossy UTF-8, as the server only ever decodes valid
//! text). `depth = 1 + (b0 & 15)`, `nodes = 1 + 4 × b1`, and the length limit is 2 KiB.
//!
//! # Properties
//!
//! - decoding never panics, with those limits or with the default ones;
//! - a frame within the limits (its length, and, when it parses as JSON, its nesting and number
//!   of values) is decoded exactly as with unlimited limits: the budgets refuse nothing else;
//! - a frame over a limit is refused with `too_large` and no `id`, unparsed;
//! - a decoded command re-encodes to a frame that decodes to the same command;
//! - a hub fed the frame from a welcomed connection keeps its caps (rooms per connection, rooms
//!   in all) and never panics.

use core::time::Duration;

use duplex_core::channel::protocol::{DecodeLimits, ErrorCode, decode_limited};
use duplex_core::channel::{Hub, HubConfig};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

const MAX_LEN: usize = 2048;

/// The nesting and number of JSON values of a text, as the parser sees them: every value counts,
/// keys included, and so does every entry of a repeated key (which a `Value` would collapse).
/// Containers nest one level each; a scalar alone is depth 0.
#[derive(Clone, Copy)]
struct Shape {
    depth: usize,
    nodes: usize,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl ShapeVisitor {
    const SCALAR: Shape = Shape { depth: 0, nodes: 1 };
}

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Self::SCALAR)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Self::SCALAR)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Self::SCALAR)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Self::SCALAR)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Self::SCALAR)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Self::SCALAR)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut shape = Shape { depth: 1, nodes: 1 };
        while let Some(item) = seq.next_element::<Shape>()? {
            shape.depth = shape.depth.max(item.depth + 1);
            shape.nodes += item.nodes;
        }
        Ok(shape)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut shape = Shape { depth: 1, nodes: 1 };
        while let Some((_, value)) = map.next_entry::<IgnoredAny, Shape>()? {
            shape.depth = shape.depth.max(value.depth + 1);
            shape.nodes += value.nodes + 1;
        }
        Ok(shape)
    }
}

pub fn channel_decode(data: &[u8]) {
    let (limits, text) = match data {
        [b0, b1, rest @ ..] => (
            DecodeLimits {
                max_len: MAX_LEN,
                max_depth: 1 + usize::from(b0 & 15),
                max_nodes: 1 + 4 * usize::from(*b1),
            },
            String::from_utf8_lossy(rest),
        ),
        _ => return,
    };
    let unlimited = DecodeLimits {
        max_len: usize::MAX,
        max_depth: usize::MAX,
        max_nodes: usize::MAX,
    };
    let limited = decode_limited(&text, &limits);
    let _ = decode_limited(&text, &DecodeLimits::default());
    let parsed = serde_json::from_str::<Shape>(&text);
    let within = text.len() <= limits.max_len
        && parsed.as_ref().map_or(true, |shape| {
            shape.depth <= limits.max_depth && shape.nodes <= limits.max_nodes
        });
    if within && parsed.is_err() {
        // Not JSON: refused either way. The budget scan runs before the parser, so it may
        // count past a limit before the parser would have found the syntax error.
        let error = limited.as_ref().expect_err("invalid JSON decoded");
        assert!(
            matches!(error.code, ErrorCode::BadJson | ErrorCode::TooLarge) && error.id.is_none(),
            "{text:?}: {error:?}"
        );
        let full = decode_limited(&text, &unlimited).expect_err("invalid JSON decoded");
        assert_eq!(full.code, ErrorCode::BadJson, "{text:?}");
    } else if within {
        assert_eq!(limited, decode_limited(&text, &unlimited), "{text:?}");
    } else {
        let error = limited.as_ref().expect_err("over the limits but decoded");
        assert_eq!(
            (error.code, &error.id),
            (ErrorCode::TooLarge, &None),
            "{text:?}"
        );
    }
    let Ok(message) = limited else {
        return;
    };
    let encoded = serde_json::to_string(&message).expect("a command encodes");
    assert_eq!(decode_limited(&encoded, &unlimited), Ok(message.clone()));

    let config = HubConfig::default()
        .with_max_rooms_per_connection(2)
        .with_max_rooms(3)
        .with_max_presence(64)
        .with_max_member_list(128);
    let mut hub: Hub<u8> = Hub::new(config, 1);
    hub.connect(1, Duration::ZERO);
    hub.receive(1, r#"{"type":"hello","client":"fuzz"}"#, Duration::ZERO)
        .expect("hello");
    for conn in [1, 2] {
        for _ in 0..3 {
            let _ = hub.receive_message(conn, message.clone(), Duration::ZERO);
            let _ = hub.receive(conn, &text, Duration::from_millis(1));
        }
    }
    assert!(hub.room_count() <= 3);
    assert!(hub.stats().members <= 4);
    while hub.poll_delivery().is_some() {}
    hub.handle_timeout(Duration::from_secs(3600));
}
