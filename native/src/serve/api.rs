//! The server HTTP API under `/api/` (`docs/API.md`), on the same port as `/ws`: the worker
//! checks the key and parses the call (`duplex_core::channel::api`), the hub thread runs it
//! (publishes are sequenced like a member's, through the broker on a cluster) and the answer
//! comes back to the worker through its inbox, so no worker waits for the hub.

use duplex_core::channel::api::{self, ApiError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The API keys (`--api-key`), kept as SHA-256 digests: a presented key is hashed and compared
/// with every digest in constant time, so neither its length nor its content shows in the
/// answer's timing.
#[derive(Clone)]
pub(crate) struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

impl ApiKeys {
    /// `None` without keys: the API is off and `/api/` answers 404.
    pub fn new(keys: &[String]) -> Option<ApiKeys> {
        let digests: Vec<[u8; 32]> = keys
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| Sha256::digest(k.as_bytes()).into())
            .collect();
        (!digests.is_empty()).then_some(ApiKeys { digests })
    }

    /// True when `authorization` is `Bearer KEY`, or `Basic` with one of the keys as the
    /// password (any user name): what a browser sends for a page behind the keys (`/dashboard`).
    pub fn verify_page(&self, authorization: Option<&[u8]>) -> bool {
        use base64::Engine as _;
        let Some(value) = authorization.map(<[u8]>::trim_ascii) else {
            return false;
        };
        match value.get(..6) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"basic ") => {
                let Ok(decoded) =
                    base64::engine::general_purpose::STANDARD.decode(value[6..].trim_ascii())
                else {
                    return false;
                };
                let Some(colon) = decoded.iter().position(|&b| b == b':') else {
                    return false;
                };
                self.matches(&decoded[colon + 1..])
            }
            _ => self.verify(Some(value)),
        }
    }

    /// True when `authorization` is `Bearer KEY` with one of the keys.
    pub fn verify(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let value = value.trim_ascii();
        let Some(scheme) = value.get(..7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        self.matches(value[7..].trim_ascii())
    }

    /// Whether `key` is one of the keys, in constant time.
    fn matches(&self, key: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(key).into();
        let mut found = subtle::Choice::from(0);
        for digest in &self.digests {
            found |= digest.ct_eq(&presented);
        }
        found.into()
    }
}

/// An answer to an API call: status, JSON body and, for 405, the `Allow` header.
#[derive(Debug, Clone)]
pub(crate) struct ApiResponse {
    pub status: u16,
    pub body: String,
    pub allow: Option<&'static str>,
}

impl ApiResponse {
    pub fn ok(body: Value) -> Self {
        ApiResponse {
            status: 200,
            body: body.to_string(),
            allow: None,
        }
    }

    pub fn error(error: &ApiError) -> Self {
        ApiResponse {
            status: error.status,
            body: error.body(),
            allow: error.allow,
        }
    }
}

/// `{"room", "epoch", "seq"}` of a publish, or `{"room", "error": {...}}` in a broadcast.
pub(crate) fn publish_result(
    room: &str,
    result: &Result<duplex_core::channel::ApiPublished, ApiError>,
) -> Value {
    match result {
        Ok(p) => json!({"room": p.room, "epoch": p.epoch, "seq": p.seq}),
        Err(e) => json!({"room": room, "error": {"code": e.code, "message": e.message}}),
    }
}

pub(crate) fn unavailable(message: &str) -> ApiResponse {
    ApiResponse::error(&ApiError::new(503, "unavailable", message))
}

pub(crate) use api::ApiCall;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_take_a_key_as_bearer_or_as_a_basic_password() {
        use base64::Engine as _;
        let keys = ApiKeys::new(&["k1".to_string()]).unwrap();
        let basic = |text: &str| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            format!("Basic {encoded}")
        };
        assert!(keys.verify_page(Some(b"Bearer k1")));
        assert!(keys.verify_page(Some(basic("ops:k1").as_bytes())));
        assert!(keys.verify_page(Some(basic(":k1").as_bytes())));
        assert!(!keys.verify_page(Some(basic("k1:other").as_bytes())));
        assert!(!keys.verify_page(Some(basic("k1").as_bytes())));
        assert!(!keys.verify_page(Some(b"Basic !!!")));
        assert!(!keys.verify_page(None));
        // The API itself takes Bearer only.
        assert!(!keys.verify(Some(basic("ops:k1").as_bytes())));
    }

    #[test]
    fn keys_are_checked_whole() {
        let keys = ApiKeys::new(&["k1".into(), "second-key".into()]).unwrap();
        assert!(keys.verify(Some(b"Bearer k1")));
        assert!(keys.verify(Some(b"bearer second-key")));
        assert!(!keys.verify(Some(b"Bearer k")));
        assert!(!keys.verify(Some(b"Bearer k12")));
        assert!(!keys.verify(Some(b"Basic k1")));
        assert!(!keys.verify(None));
        assert!(ApiKeys::new(&[String::new()]).is_none());
        assert!(!format!("{keys:?}").contains("k1"));
    }
}
