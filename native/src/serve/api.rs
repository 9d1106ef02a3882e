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
        let presented: [u8; 32] = Sha256::digest(value[7..].trim_ascii()).into();
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
