//! Sec-WebSocket-Key and Sec-WebSocket-Accept (RFC 6455 §4.1, §4.2.2).

use alloc::string::String;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the key so a non-WebSocket server cannot produce the accept
/// value by accident.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Sec-WebSocket-Accept for a key: base64(sha1(key + GUID)).
///
/// `key` is used exactly as sent (already trimmed of surrounding whitespace).
pub fn accept_key(key: &[u8]) -> String {
    let value = accept_key_bytes(key);
    value.iter().map(|&b| char::from(b)).collect()
}

/// [`accept_key`] without an allocation: the 28 base64 characters.
pub(crate) fn accept_key_bytes(key: &[u8]) -> [u8; 28] {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID.as_bytes());
    let mut value = [0u8; 28];
    // 20 bytes of SHA-1 always encode to exactly 28 characters.
    let written = STANDARD
        .encode_slice(sha1.finalize(), &mut value)
        .unwrap_or_default();
    debug_assert_eq!(written, value.len());
    value
}

/// Sec-WebSocket-Key from 16 random bytes supplied by the caller.
///
/// The core owns no random source (see DESIGN.md); drivers pass `getrandom` output, tests a
/// fixed array.
pub fn generate_key(random: [u8; 16]) -> String {
    STANDARD.encode(random)
}

/// A valid key is base64 that decodes to exactly 16 bytes.
///
/// Padding is required and non-canonical trailing bits are rejected, so the 24-character
/// spelling of each 16-byte value is the only one accepted.
pub fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes always encode to 24 characters ending in "=="; checking the length first keeps
    // the decode below from ever looking at a long attacker-supplied value.
    if key.len() != 24 {
        return false;
    }
    // decode_slice wants room for its upper estimate (18 bytes for 24 characters).
    let mut decoded = [0u8; 18];
    matches!(STANDARD.decode_slice(key, &mut decoded), Ok(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_sample_key_and_accept() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn generated_key_is_valid_and_deterministic() {
        // "the sample nonce" is the 16-byte value behind the RFC's sample key.
        assert_eq!(
            generate_key(*b"the sample nonce"),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        let key = generate_key([0xff; 16]);
        assert!(is_valid_key(key.as_bytes()));
    }

    #[test]
    fn invalid_keys_are_rejected() {
        // 15 bytes, 17 bytes, not base64, missing padding, non-canonical trailing bits, empty.
        let fifteen = generate_key_of(&[7u8; 15]);
        let seventeen = generate_key_of(&[7u8; 17]);
        for bad in [
            fifteen.as_bytes(),
            seventeen.as_bytes(),
            b"dGhlIHNhbXBsZSBub25jZQ!!",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZR==",
            b"",
            b" dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            assert!(!is_valid_key(bad), "{bad:?} accepted");
        }
    }

    fn generate_key_of(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }
}
