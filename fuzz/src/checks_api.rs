//! The server HTTP API's request parser: `api_request`.
//!
//! Compiled with the `channel` feature only (the fuzz crate's default; in the core's tests, the
//! core's own feature).

use core::time::Duration;

use duplex_core::channel::protocol::DecodeLimits;
use duplex_core::channel::{Hub, HubConfig};

/// The server HTTP API's request parser (`duplex_core::channel::api::parse_request`), and a
/// hub given what it accepts.
///
/// # Input format
///
/// One byte choosing the method (`b0 & 3`: GET, POST, PUT, DELETE), the target up to the first
/// `\n` (lossy UTF-8), then the body (raw bytes). `data` may be at most 256 bytes.
///
/// # Properties
///
/// - parsing never panics;
/// - a refused request has a status of 400, 404, 405 or 413 (405 with an `Allow` header) and a
///   JSON error body `{"code", "message"}`;
/// - an accepted call holds only valid names (rooms, `from`, `client`), `data` that is JSON
///   within the limit, a history `limit` in range and a close code a client may receive;
/// - an accepted publish or broadcast is sequenced by an in-process hub (never refused), and a
///   history read of it answers without panicking.
pub fn api_request(data: &[u8]) {
    use duplex_core::channel::api::{ApiCall, ApiLimits, MAX_HISTORY_LIMIT, parse_request};
    use duplex_core::channel::protocol::{is_name, validate_room};

    let [selector, rest @ ..] = data else {
        return;
    };
    let method = ["GET", "POST", "PUT", "DELETE"][usize::from(selector & 3)];
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let target = String::from_utf8_lossy(&rest[..split]);
    let body = rest.get(split + 1..).unwrap_or_default();
    let limits = ApiLimits::for_payload(256, &DecodeLimits::default());
    let call = match parse_request(method, &target, body, &limits) {
        Ok(call) => call,
        Err(error) => {
            assert!(
                matches!(error.status, 400 | 404 | 405 | 413),
                "{target:?}: {error:?}"
            );
            assert_eq!(error.status == 405, error.allow.is_some(), "{error:?}");
            let body: serde_json::Value =
                serde_json::from_str(&error.body()).expect("the error body is JSON");
            assert!(body["code"].is_string() && body["message"].is_string());
            return;
        }
    };
    let room_ok = |room: &str| validate_room(room).is_ok();
    let mut hub: Hub<u32> = Hub::new(HubConfig::default().with_max_payload(256), 7);
    let now = Duration::from_secs(1);
    match call {
        ApiCall::Publish(p) => {
            assert!(room_ok(&p.room) && is_name(&p.from), "{p:?}");
            assert!(p.data.len() <= 256);
            serde_json::from_str::<serde_json::Value>(&p.data).expect("data is JSON");
            hub.api_publish(1, p.room.clone(), p.from, p.id, p.data, now);
            let (ticket, answer) = hub.poll_api().expect("answered at once in-process");
            let published = answer.expect("an accepted publish is sequenced");
            assert_eq!((ticket, published.seq, published.room), (1, 1, p.room));
        }
        ApiCall::Broadcast { rooms, data, from } => {
            assert!(!rooms.is_empty() && rooms.iter().all(|r| room_ok(r)) && is_name(&from));
            assert!(data.len() <= 256);
            for (ticket, room) in rooms.into_iter().enumerate() {
                hub.api_publish(ticket as u64, room, from.clone(), None, data.clone(), now);
                let (_, answer) = hub.poll_api().expect("answered at once in-process");
                answer.expect("an accepted publish is sequenced");
            }
        }
        ApiCall::Send { client, data } => {
            assert!(is_name(&client) && data.len() <= 256);
            serde_json::from_str::<serde_json::Value>(&data).expect("data is JSON");
            let sent = hub
                .send_direct_json_from_api(&client, data)
                .expect("an accepted send is handed to the hub");
            assert_eq!(
                (sent.delivered, sent.pending),
                (0, None),
                "nobody is connected"
            );
        }
        ApiCall::Disconnect { client, code, .. } => {
            assert!(is_name(&client));
            assert!(code == 1000 || code == 1008 || (3000..=4999).contains(&code));
        }
        ApiCall::Rooms => {}
        ApiCall::Presence { room } => assert!(room_ok(&room)),
        ApiCall::History { room, since, limit } => {
            assert!(room_ok(&room) && (1..=MAX_HISTORY_LIMIT).contains(&limit));
            let history = hub.api_history(&room, since, limit, now);
            assert!(history.messages.is_empty());
        }
    }
}
