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
use serde_json::Value;

const MAX_LEN: usize = 2048;

fn shape(value: &Value) -> (usize, usize) {
    match value {
        Value::Array(items) => items.iter().fold((1, 1), |(depth, nodes), item| {
            let (d, n) = shape(item);
            (depth.max(d + 1), nodes + n)
        }),
        Value::Object(map) => map.values().fold((1, 1), |(depth, nodes), item| {
            let (d, n) = shape(item);
            (depth.max(d + 1), nodes + n + 1)
        }),
        _ => (0, 1),
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
    let within = text.len() <= limits.max_len
        && serde_json::from_str::<Value>(&text).map_or(true, |value| {
            let (depth, nodes) = shape(&value);
            depth <= limits.max_depth && nodes <= limits.max_nodes
        });
    if within {
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
