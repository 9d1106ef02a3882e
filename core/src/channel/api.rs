//! The server HTTP API (`/api/...`, see `docs/API.md`): the request parser and the response
//! bodies, sans-IO like the rest of the core. The driver reads a request's method, target and
//! body, checks the key, calls [`parse_request`], hands the [`ApiCall`] to the [`Hub`] (or its
//! broker) and writes what comes back.
//!
//! [`Hub`]: super::Hub

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::{Map, Value};

use super::protocol::{self, DecodeLimits, Id, Since};

/// Rooms one `broadcast` may name.
pub const MAX_BROADCAST_ROOMS: usize = 1000;
/// The default and largest `limit` of a history read.
pub const MAX_HISTORY_LIMIT: usize = 10_000;
/// The `from` of an API publish that names none.
pub const DEFAULT_FROM: &str = "api";
/// The close code of `disconnect` when none is given (policy violation).
pub const DEFAULT_DISCONNECT_CODE: u16 = 1008;

/// One API call, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiCall {
    /// `POST /api/publish`.
    Publish(ApiPublish),
    /// `POST /api/broadcast`: one publish per room, with the same data.
    Broadcast {
        rooms: Vec<String>,
        /// Compact JSON.
        data: String,
        from: String,
    },
    /// `POST /api/send`: `direct {from: "api", data}` to every live connection of `client`.
    Send {
        client: String,
        /// Compact JSON.
        data: String,
    },
    /// `POST /api/disconnect`.
    Disconnect {
        client: String,
        code: u16,
        reason: String,
    },
    /// `GET /api/rooms`.
    Rooms,
    /// `GET /api/rooms/NS/NAME/presence`.
    Presence { room: String },
    /// `GET /api/rooms/NS/NAME/history[?since=EPOCH:SEQ&limit=N]`.
    History {
        room: String,
        since: Option<Since>,
        limit: usize,
    },
}

/// `POST /api/publish {"room", "data", "from"?, "id"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiPublish {
    pub room: String,
    /// Compact JSON.
    pub data: String,
    pub from: String,
    /// Makes retries idempotent: a second publish with the same `from` and `id` gets the first
    /// one's seq and is not delivered again.
    pub id: Option<Id>,
}

/// A refused call: an HTTP status and `{"code", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// For 405: the methods the path accepts (the `Allow` header).
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    fn bad_message(message: impl Into<String>) -> Self {
        ApiError::new(400, "bad_message", message)
    }

    /// `{"code": ..., "message": ...}`.
    pub fn body(&self) -> String {
        error_body(self.code, &self.message)
    }
}

/// `{"code": ..., "message": ...}` (also an entry of a broadcast's results).
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"code": code, "message": message}).to_string()
}

/// The error of a command refused by the hub, as the API says it.
pub fn from_command_error(error: &protocol::CommandError) -> ApiError {
    use protocol::ErrorCode;
    let status = match error.code {
        ErrorCode::BadRoom | ErrorCode::BadMessage | ErrorCode::BadJson => 400,
        ErrorCode::TooLarge => 413,
        ErrorCode::Unavailable | ErrorCode::TooManyRooms => 503,
        _ => 400,
    };
    ApiError::new(status, error.code.as_str(), error.message.clone())
}

/// What the API accepts of a request body and its `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest `data`, as compact JSON (`--max-payload`).
    pub max_payload: usize,
    /// Largest body; see [`ApiLimits::for_payload`].
    pub max_body: usize,
    pub max_depth: usize,
    pub max_nodes: usize,
}

impl ApiLimits {
    /// Limits for a hub whose `data` may be `max_payload` bytes: a body may hold that much
    /// data plus room for the other fields (a broadcast's room list).
    pub fn for_payload(max_payload: usize, decode: &DecodeLimits) -> Self {
        ApiLimits {
            max_payload,
            max_body: max_payload.saturating_add(MAX_BROADCAST_ROOMS * 140 + 4096),
            max_depth: decode.max_depth,
            max_nodes: decode.max_nodes,
        }
    }
}

/// True for every path of the API (`/api` and below), answered or not.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Parses one request: `method`, `target` (path and query) and `body`. The key is checked by
/// the caller before this.
pub fn parse_request(
    method: &str,
    target: &str,
    body: &[u8],
    limits: &ApiLimits,
) -> Result<ApiCall, ApiError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let post = |call: fn(Map<String, Value>, &ApiLimits) -> Result<ApiCall, ApiError>| {
        if method != "POST" {
            return Err(not_allowed(method, "POST"));
        }
        call(object(body, limits)?, limits)
    };
    match path {
        "/api/publish" => post(publish),
        "/api/broadcast" => post(broadcast),
        "/api/send" => post(send),
        "/api/disconnect" => post(disconnect),
        "/api/rooms" => {
            get_only(method)?;
            Ok(ApiCall::Rooms)
        }
        _ => {
            let Some(rest) = path.strip_prefix("/api/rooms/") else {
                return Err(ApiError::new(
                    404,
                    "not_found",
                    format!("no API call at {}", printable(path)),
                ));
            };
            let (room, what) = rest.rsplit_once('/').ok_or_else(|| {
                ApiError::new(
                    404,
                    "not_found",
                    "use /api/rooms/NS/NAME/presence or /history",
                )
            })?;
            if what != "presence" && what != "history" {
                return Err(ApiError::new(
                    404,
                    "not_found",
                    "use /api/rooms/NS/NAME/presence or /history",
                ));
            }
            get_only(method)?;
            protocol::validate_room(room).map_err(|m| ApiError::new(400, "bad_room", m))?;
            let room = room.to_string();
            if what == "presence" {
                return Ok(ApiCall::Presence { room });
            }
            let (since, limit) = history_query(query)?;
            Ok(ApiCall::History { room, since, limit })
        }
    }
}

fn printable(text: &str) -> String {
    text.chars().take(128).filter(|c| !c.is_control()).collect()
}

fn not_allowed(method: &str, allow: &'static str) -> ApiError {
    ApiError {
        allow: Some(allow),
        ..ApiError::new(
            405,
            "method_not_allowed",
            format!("{} is not allowed here: use {allow}", printable(method)),
        )
    }
}

fn get_only(method: &str) -> Result<(), ApiError> {
    match method {
        "GET" => Ok(()),
        other => Err(not_allowed(other, "GET")),
    }
}

fn history_query(query: &str) -> Result<(Option<Since>, usize), ApiError> {
    let mut since = None;
    let mut limit = MAX_HISTORY_LIMIT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "since" => {
                let (epoch, seq) = value.rsplit_once(':').ok_or_else(|| {
                    ApiError::bad_message("`since` must be EPOCH:SEQ (from `joined` or a reply)")
                })?;
                let seq = seq
                    .parse()
                    .map_err(|_| ApiError::bad_message("the seq of `since` is not a number"))?;
                if !protocol::is_name(epoch) {
                    return Err(ApiError::bad_message("the epoch of `since` is malformed"));
                }
                since = Some(Since {
                    epoch: epoch.to_string(),
                    seq,
                });
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| (1..=MAX_HISTORY_LIMIT).contains(&n))
                    .ok_or_else(|| {
                        ApiError::bad_message(format!(
                            "`limit` must be a number from 1 to {MAX_HISTORY_LIMIT}"
                        ))
                    })?;
            }
            _ => {
                return Err(ApiError::bad_message(format!(
                    "unknown query parameter `{}`: use since and limit",
                    printable(name)
                )));
            }
        }
    }
    Ok((since, limit))
}

/// The body as a JSON object, within the limits (413 over the size, 400 otherwise).
fn object(body: &[u8], limits: &ApiLimits) -> Result<Map<String, Value>, ApiError> {
    if body.len() > limits.max_body {
        return Err(ApiError::new(
            413,
            "too_large",
            format!(
                "the body is {} bytes, the limit is {}",
                body.len(),
                limits.max_body
            ),
        ));
    }
    let text = core::str::from_utf8(body)
        .map_err(|_| ApiError::new(400, "bad_json", "the body is not UTF-8"))?;
    let decode = DecodeLimits {
        max_len: limits.max_body,
        max_depth: limits.max_depth,
        max_nodes: limits.max_nodes,
    };
    protocol::check_shape(text, &decode).map_err(|e| {
        let status = if e.code == protocol::ErrorCode::TooLarge {
            413
        } else {
            400
        };
        ApiError::new(status, e.code.as_str(), e.message)
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(
            400,
            "bad_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            400,
            "bad_json",
            format!("the body is not JSON: {e}"),
        )),
    }
}

fn string_field(map: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_message(format!("`{name}` must be a string"))),
    }
}

fn room_name(value: Option<String>, field: &str) -> Result<String, ApiError> {
    let room = value.ok_or_else(|| ApiError::bad_message(format!("`{field}` is missing")))?;
    protocol::validate_room(&room).map_err(|m| ApiError::new(400, "bad_room", m))?;
    Ok(room)
}

fn data_field(map: &Map<String, Value>, limits: &ApiLimits) -> Result<String, ApiError> {
    let data = map
        .get("data")
        .ok_or_else(|| ApiError::bad_message("`data` is missing"))?;
    let text = serde_json::to_string(data).unwrap_or_default();
    if text.len() > limits.max_payload {
        return Err(ApiError::new(
            413,
            "too_large",
            format!(
                "data is {} bytes, the limit is {}",
                text.len(),
                limits.max_payload
            ),
        ));
    }
    Ok(text)
}

fn from_field(map: &Map<String, Value>) -> Result<String, ApiError> {
    match string_field(map, "from")? {
        None => Ok(DEFAULT_FROM.to_string()),
        Some(from) if protocol::is_name(&from) => Ok(from),
        Some(_) => Err(ApiError::bad_message(
            "`from` must be a client id: 1 to 128 bytes of [A-Za-z0-9_.:-]",
        )),
    }
}

fn check_fields(map: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::bad_message(format!(
            "unknown field `{}`",
            printable(unknown)
        ))),
        None => Ok(()),
    }
}

fn publish(map: Map<String, Value>, limits: &ApiLimits) -> Result<ApiCall, ApiError> {
    check_fields(&map, &["room", "data", "from", "id"])?;
    let room = room_name(string_field(&map, "room")?, "room")?;
    let from = from_field(&map)?;
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let id: Id = serde_json::from_value(value.clone()).map_err(|_| {
                ApiError::bad_message("`id` must be a non-negative integer or a string")
            })?;
            if let Id::Text(text) = &id
                && (text.is_empty() || text.len() > protocol::MAX_NAME_LEN)
            {
                return Err(ApiError::bad_message("`id` must be 1 to 128 bytes"));
            }
            Some(id)
        }
    };
    let data = data_field(&map, limits)?;
    Ok(ApiCall::Publish(ApiPublish {
        room,
        data,
        from,
        id,
    }))
}

fn broadcast(map: Map<String, Value>, limits: &ApiLimits) -> Result<ApiCall, ApiError> {
    check_fields(&map, &["rooms", "data", "from"])?;
    let Some(Value::Array(list)) = map.get("rooms") else {
        return Err(ApiError::bad_message(
            "`rooms` must be an array of room names",
        ));
    };
    if list.is_empty() || list.len() > MAX_BROADCAST_ROOMS {
        return Err(ApiError::bad_message(format!(
            "`rooms` must name 1 to {MAX_BROADCAST_ROOMS} rooms"
        )));
    }
    let mut rooms = Vec::with_capacity(list.len());
    for room in list {
        let Value::String(room) = room else {
            return Err(ApiError::bad_message(
                "`rooms` must be an array of room names",
            ));
        };
        rooms.push(room_name(Some(room.clone()), "rooms")?);
    }
    let from = from_field(&map)?;
    let data = data_field(&map, limits)?;
    Ok(ApiCall::Broadcast { rooms, data, from })
}

fn send(map: Map<String, Value>, limits: &ApiLimits) -> Result<ApiCall, ApiError> {
    check_fields(&map, &["client", "data"])?;
    let client = string_field(&map, "client")?
        .ok_or_else(|| ApiError::bad_message("`client` is missing"))?;
    if !protocol::is_name(&client) {
        return Err(ApiError::bad_message("`client` is not a client id"));
    }
    let data = data_field(&map, limits)?;
    Ok(ApiCall::Send { client, data })
}

fn disconnect(map: Map<String, Value>, _limits: &ApiLimits) -> Result<ApiCall, ApiError> {
    check_fields(&map, &["client", "code", "reason"])?;
    let client = string_field(&map, "client")?
        .ok_or_else(|| ApiError::bad_message("`client` is missing"))?;
    if !protocol::is_name(&client) {
        return Err(ApiError::bad_message("`client` is not a client id"));
    }
    let code = match map.get("code") {
        None => DEFAULT_DISCONNECT_CODE,
        Some(value) => value
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|&c| c == 1000 || c == 1008 || (3000..=4999).contains(&c))
            .ok_or_else(|| {
                ApiError::bad_message("`code` must be 1000, 1008 or from 3000 to 4999")
            })?,
    };
    let reason = string_field(&map, "reason")?.unwrap_or_else(|| "disconnected".to_string());
    if reason.len() > 123 {
        return Err(ApiError::bad_message("`reason` is longer than 123 bytes"));
    }
    Ok(ApiCall::Disconnect {
        client,
        code,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ApiLimits {
        ApiLimits::for_payload(100, &DecodeLimits::default())
    }

    fn parse(method: &str, target: &str, body: &str) -> Result<ApiCall, ApiError> {
        parse_request(method, target, body.as_bytes(), &limits())
    }

    #[test]
    fn publish_defaults_and_errors() {
        let call = parse("POST", "/api/publish", r#"{"room":"a/b","data":{"x":1}}"#).unwrap();
        assert_eq!(
            call,
            ApiCall::Publish(ApiPublish {
                room: "a/b".into(),
                data: r#"{"x":1}"#.into(),
                from: "api".into(),
                id: None,
            })
        );
        let code = |m, t, b| parse(m, t, b).unwrap_err();
        assert_eq!(code("POST", "/api/publish", "{").code, "bad_json");
        assert_eq!(code("POST", "/api/publish", "[]").code, "bad_json");
        assert_eq!(
            code("POST", "/api/publish", r#"{"room":"x","data":1}"#).code,
            "bad_room"
        );
        assert_eq!(
            code("POST", "/api/publish", r#"{"room":"a/b"}"#).code,
            "bad_message"
        );
        let big = format!(r#"{{"room":"a/b","data":"{}"}}"#, "x".repeat(200));
        assert_eq!(code("POST", "/api/publish", &big).status, 413);
        let wrong = code("GET", "/api/publish", "");
        assert_eq!((wrong.status, wrong.allow), (405, Some("POST")));
        assert_eq!(code("GET", "/api/nope", "").status, 404);
        let bad_from = r#"{"room":"a/b","data":1,"from":"a b"}"#;
        assert_eq!(code("POST", "/api/publish", bad_from).code, "bad_message");
    }

    #[test]
    fn reads() {
        assert_eq!(parse("GET", "/api/rooms", "").unwrap(), ApiCall::Rooms);
        assert_eq!(
            parse("GET", "/api/rooms/a/b/history?since=e1:4&limit=2", "").unwrap(),
            ApiCall::History {
                room: "a/b".into(),
                since: Some(Since {
                    epoch: "e1".into(),
                    seq: 4
                }),
                limit: 2
            }
        );
        assert_eq!(
            parse("GET", "/api/rooms/a/b/presence", "").unwrap(),
            ApiCall::Presence { room: "a/b".into() }
        );
        assert_eq!(
            parse("GET", "/api/rooms/a/b c/presence", "")
                .unwrap_err()
                .code,
            "bad_room"
        );
        assert_eq!(parse("POST", "/api/rooms", "").unwrap_err().status, 405);
        let limit = parse("GET", "/api/rooms/a/b/history?limit=0", "");
        assert_eq!(limit.unwrap_err().code, "bad_message");
    }
}
