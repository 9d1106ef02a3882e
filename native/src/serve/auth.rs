//! Who may use `/ws`: the `Origin` allow-list (cross-site WebSocket hijacking) and HS256 tokens
//! presented in `hello.token`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The claims `duplex serve` reads from a token.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The client id the connection acts as.
    pub sub: String,
    /// Namespaces the client may join; absent: every namespace.
    #[serde(default)]
    pub ns: Option<Vec<String>>,
    /// Expiry (seconds since the Unix epoch); required.
    pub exp: u64,
}

/// Checks HS256 tokens against one shared secret.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier(HS256)")
    }
}

impl TokenVerifier {
    pub fn hs256(secret: &[u8]) -> TokenVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        TokenVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The token's claims if its signature, algorithm and expiry are valid and `sub` is a
    /// usable client id.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| TokenError(format!("invalid token: {e}")))?;
        let claims = data.claims;
        if !duplex_core::channel::protocol::is_name(&claims.sub) {
            return Err(TokenError(
                "invalid token: `sub` must be 1 to 128 characters of [A-Za-z0-9_.:-]".into(),
            ));
        }
        if let Some(ns) = &claims.ns
            && let Some(bad) = ns
                .iter()
                .find(|n| !duplex_core::channel::protocol::is_name(n))
        {
            return Err(TokenError(format!(
                "invalid token: namespace {bad:?} in `ns` is not a valid name"
            )));
        }
        Ok(claims)
    }
}

/// Why a token was refused (sent to the client in `error.message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

/// The `--allowed-origin` list. Empty: every origin. Requests without `Origin` come from
/// non-browser clients, which cross-site hijacking cannot involve, and are allowed.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    pub fn new(allowed: Vec<String>) -> OriginPolicy {
        let allowed = allowed
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        OriginPolicy { allowed }
    }

    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.allowed.is_empty() => true,
            None => true,
            Some(origin) => {
                let origin = origin.trim_end_matches('/').to_ascii_lowercase();
                self.allowed.contains(&origin)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde::Serialize;

    #[derive(Serialize)]
    struct Raw<'a> {
        sub: &'a str,
        ns: Option<Vec<&'a str>>,
        exp: u64,
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(secret: &[u8], alg: Algorithm, claims: &Raw<'_>) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn valid_token_gives_its_claims() {
        let v = TokenVerifier::hs256(b"k1");
        let t = token(
            b"k1",
            Algorithm::HS256,
            &Raw {
                sub: "alice",
                ns: Some(vec!["app"]),
                exp: now() + 60,
            },
        );
        let claims = v.verify(&t).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.ns, Some(vec!["app".to_string()]));
    }

    #[test]
    fn refuses_wrong_secret_expired_other_algorithm_bad_sub_and_garbage() {
        let v = TokenVerifier::hs256(b"k1");
        let ok = |sub| Raw {
            sub,
            ns: None,
            exp: now() + 60,
        };
        assert!(v.verify(&token(b"k2", Algorithm::HS256, &ok("a"))).is_err());
        let expired = Raw {
            sub: "a",
            ns: None,
            exp: now() - 3600,
        };
        assert!(v.verify(&token(b"k1", Algorithm::HS256, &expired)).is_err());
        assert!(v.verify(&token(b"k1", Algorithm::HS384, &ok("a"))).is_err());
        assert!(
            v.verify(&token(b"k1", Algorithm::HS256, &ok("a b")))
                .is_err()
        );
        assert!(v.verify("not.a.token").is_err());
        assert!(v.verify("").is_err());
    }

    #[test]
    fn origin_policy() {
        let any = OriginPolicy::default();
        assert!(any.allows(Some("https://evil.example")));
        let p = OriginPolicy::new(vec!["https://app.example/".into()]);
        assert!(p.allows(Some("https://APP.example")));
        assert!(p.allows(None));
        assert!(!p.allows(Some("https://evil.example")));
        assert!(!p.allows(Some("null")));
    }
}
