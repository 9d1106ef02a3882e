//! The HTTP/1.1 upgrade handshake of RFC 6455 §4, for both ends, without I/O.
//!
//! A driver collects bytes until [`find_head_end`] reports a complete head, then hands the
//! head to [`server::Request::parse`] or [`client::Response::parse`]. Writers append to a
//! caller-owned `Vec<u8>` so the bytes can go straight into a connection's output buffer.

pub mod client;
pub mod key;
pub mod server;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use bytes::BufMut;
use core::fmt;

/// The most header lines a request or response head may carry; more is answered with 431.
///
/// Browsers send about 15; 64 leaves room for proxies and cookies without letting a peer make
/// the parser walk an unbounded list.
pub const MAX_HEADERS: usize = 64;

/// One header line of a parsed head.
///
/// Names are ASCII tokens (httparse checks them). Values are kept as bytes because HTTP allows
/// obs-text; accessors that need text check UTF-8 themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name as sent (compare case-insensitively).
    pub name: String,
    /// Header value with surrounding whitespace removed by the parser.
    pub value: Vec<u8>,
}

/// One offered or accepted extension, such as
/// `permessage-deflate; client_max_window_bits; server_max_window_bits=10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// Extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in order; quoted values are stored unquoted.
    pub params: Vec<(String, Option<String>)>,
}

/// Why a handshake was refused, precise enough for a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The head is not valid HTTP/1.x.
    #[error("malformed HTTP head: {0}")]
    Malformed(&'static str),
    /// The head grew past the configured limit before its end was seen.
    #[error("HTTP head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The head has more header lines than [`MAX_HEADERS`].
    #[error("HTTP head has more than {0} headers")]
    TooManyHeaders(usize),
    /// An upgrade request used a method other than GET.
    #[error("method {0} is not GET")]
    MethodNotGet(String),
    /// HTTP/1.0 cannot carry an upgrade.
    #[error("HTTP version below 1.1")]
    HttpVersion,
    /// HTTP/1.1 requires a Host header.
    #[error("missing Host header")]
    MissingHost,
    /// More than one Host header (RFC 9112 §3.2 requires a 400).
    #[error("more than one Host header")]
    DuplicateHost,
    /// No `websocket` token in Upgrade.
    #[error("Upgrade header does not contain websocket")]
    NotUpgrade,
    /// No `upgrade` token in Connection.
    #[error("Connection header does not contain upgrade")]
    NotConnectionUpgrade,
    /// Sec-WebSocket-Key is absent, repeated, or not base64 of 16 bytes.
    #[error("missing or invalid Sec-WebSocket-Key")]
    InvalidKey,
    /// Sec-WebSocket-Version is absent or not 13.
    #[error("unsupported Sec-WebSocket-Version")]
    UnsupportedVersion,
    /// A header this crate interprets has a value it cannot use.
    #[error("invalid {name} header: {reason}")]
    InvalidHeader {
        /// The header's canonical name.
        name: &'static str,
        /// What is wrong with its value.
        reason: &'static str,
    },
    /// The server did not switch protocols.
    #[error("server answered with status {0}")]
    UnexpectedStatus(u16),
    /// The server sent no Sec-WebSocket-Accept (or several).
    #[error("missing Sec-WebSocket-Accept")]
    MissingAccept,
    /// The server's Sec-WebSocket-Accept is not derived from our key.
    #[error("Sec-WebSocket-Accept does not match the key")]
    AcceptMismatch,
    /// The server picked a subprotocol the client never offered.
    #[error("server chose subprotocol {0:?} that was not offered")]
    ProtocolNotOffered(String),
    /// RFC 6455 §4.2.2 lets a server select at most one subprotocol.
    #[error("server chose more than one subprotocol")]
    MultipleProtocols,
    /// The server accepted an extension the client never offered.
    #[error("server accepted extension {0:?} that was not offered")]
    ExtensionNotOffered(String),
    /// A `ws://` or `wss://` URL could not be used.
    #[error("invalid URL: {0}")]
    InvalidUrl(&'static str),
}

impl HandshakeError {
    /// HTTP status the server should answer with for this error (400, 405, 426, 431...).
    ///
    /// Errors that only a client can detect (bad status, accept mismatch, URL) map to 400; a
    /// server never sends them, the mapping just keeps this function total.
    pub fn http_status(&self) -> u16 {
        match self {
            HandshakeError::HeadTooLarge(_) | HandshakeError::TooManyHeaders(_) => 431,
            HandshakeError::MethodNotGet(_) => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::Malformed(_)
            | HandshakeError::HttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::DuplicateHost
            | HandshakeError::NotUpgrade
            | HandshakeError::NotConnectionUpgrade
            | HandshakeError::InvalidKey
            | HandshakeError::InvalidHeader { .. }
            | HandshakeError::UnexpectedStatus(_)
            | HandshakeError::MissingAccept
            | HandshakeError::AcceptMismatch
            | HandshakeError::ProtocolNotOffered(_)
            | HandshakeError::MultipleProtocols
            | HandshakeError::ExtensionNotOffered(_)
            | HandshakeError::InvalidUrl(_) => 400,
        }
    }

    /// A short, stable label for the kind of error, for metrics and logs
    /// (`malformed`, `head_too_large`, `bad_version`...).
    pub fn kind(&self) -> &'static str {
        match self {
            HandshakeError::Malformed(_) => "malformed",
            HandshakeError::HeadTooLarge(_) => "head_too_large",
            HandshakeError::TooManyHeaders(_) => "too_many_headers",
            HandshakeError::MethodNotGet(_) => "method_not_get",
            HandshakeError::HttpVersion => "http_version",
            HandshakeError::MissingHost => "missing_host",
            HandshakeError::DuplicateHost => "duplicate_host",
            HandshakeError::NotUpgrade => "not_upgrade",
            HandshakeError::NotConnectionUpgrade => "not_connection_upgrade",
            HandshakeError::InvalidKey => "invalid_key",
            HandshakeError::UnsupportedVersion => "unsupported_version",
            HandshakeError::InvalidHeader { .. } => "invalid_header",
            HandshakeError::UnexpectedStatus(_) => "unexpected_status",
            HandshakeError::MissingAccept => "missing_accept",
            HandshakeError::AcceptMismatch => "accept_mismatch",
            HandshakeError::ProtocolNotOffered(_) => "protocol_not_offered",
            HandshakeError::MultipleProtocols => "multiple_protocols",
            HandshakeError::ExtensionNotOffered(_) => "extension_not_offered",
            HandshakeError::InvalidUrl(_) => "invalid_url",
        }
    }
}

/// Finds the end of an HTTP head (the byte after `"\r\n\r\n"`) in `buf`, resuming from
/// `*scanned`.
///
/// `*scanned` is the first offset that could still start the terminator; bytes before it were
/// already judged and are never looked at again, so feeding a head in many small reads costs
/// linear time in total (tungstenite's RUSTSEC-2023-0065 was re-parsing the whole head on every
/// read). Start with `*scanned == 0` for a fresh buffer, and reset it when bytes are removed
/// from the front of `buf`. After a hit `*scanned` is the returned offset, so a second call
/// on the same buffer looks for the next head rather than reporting this one twice.
///
/// Only CRLF line endings are recognised, as RFC 9112 requires of senders.
pub fn find_head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    const TERMINATOR: &[u8; 4] = b"\r\n\r\n";
    let start = (*scanned).min(buf.len());
    let unjudged = buf.get(start..).unwrap_or_default();
    // Each LF is a candidate end, checked against the three bytes before it; memchr finds
    // them a vector at a time instead of a four-byte window at every offset.
    let mut from = TERMINATOR.len() - 1;
    while let Some(lf) = unjudged
        .get(from..)
        .and_then(|rest| memchr::memchr(b'\n', rest))
    {
        let end = from + lf + 1;
        if unjudged.get(end - TERMINATOR.len()..end) == Some(TERMINATOR) {
            *scanned = start + end;
            return Some(start + end);
        }
        from = end;
    }
    // The last three bytes may be the first part of a terminator completed by the next read.
    *scanned = buf.len().saturating_sub(TERMINATOR.len() - 1).max(start);
    None
}

/// Whether a comma-separated header value (Connection, Upgrade...) contains `token`,
/// compared case-insensitively with optional whitespace around each element.
pub fn header_has_token(value: &[u8], token: &str) -> bool {
    // One pass over the bytes, without the iterator chain of `list_elements`: this runs
    // several times per handshake.
    let token = token.as_bytes();
    let mut rest = value;
    loop {
        let (element, next) = match rest.iter().position(|&b| b == b',') {
            Some(comma) => (&rest[..comma], Some(&rest[comma + 1..])),
            None => (rest, None),
        };
        if trim_ows(element).eq_ignore_ascii_case(token) {
            return true;
        }
        match next {
            Some(next) => rest = next,
            None => return false,
        }
    }
}

/// The non-empty elements of a comma-separated header value, with whitespace trimmed.
///
/// Only for lists whose elements cannot contain quoted commas (tokens); extension lists go
/// through [`ExtensionOffer::parse_list`].
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// `value` without leading and trailing spaces and tabs (HTTP's optional whitespace).
pub fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
}

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2): what header names, subprotocols and
/// extension names must be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ExtensionOffer {
    /// An extension without parameters.
    pub fn new(name: impl Into<String>) -> Self {
        ExtensionOffer {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter; `None` for a bare flag such as `client_max_window_bits`.
    pub fn with_param(mut self, name: impl Into<String>, value: Option<String>) -> Self {
        self.params.push((name.into(), value));
        self
    }

    /// The value of the first parameter called `name` (case-insensitive): `None` when absent,
    /// `Some(None)` for a bare flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// Parses one Sec-WebSocket-Extensions value (RFC 6455 §9.1): several extensions separated
    /// by commas, each with `;`-separated parameters whose values may be quoted strings.
    ///
    /// Empty list elements are skipped, as the HTTP list rule allows. A quoted value must still
    /// be a token once unquoted, as §9.1 requires.
    pub fn parse_list(value: &str) -> Result<Vec<ExtensionOffer>, HandshakeError> {
        let mut cursor = Cursor {
            rest: value.as_bytes(),
        };
        let mut offers = Vec::new();
        loop {
            cursor.skip_ows();
            match cursor.peek() {
                None => return Ok(offers),
                Some(b',') => {
                    cursor.bump();
                    continue;
                }
                Some(_) => {}
            }
            let name = cursor
                .token()
                .ok_or(extension_error("expected an extension name"))?;
            let mut offer = ExtensionOffer::new(name);
            loop {
                cursor.skip_ows();
                match cursor.peek() {
                    None | Some(b',') => break,
                    Some(b';') => cursor.bump(),
                    Some(_) => return Err(extension_error("expected ';' or ','")),
                }
                cursor.skip_ows();
                let param = cursor
                    .token()
                    .ok_or(extension_error("expected a parameter name"))?;
                cursor.skip_ows();
                let param_value = if cursor.peek() == Some(b'=') {
                    cursor.bump();
                    cursor.skip_ows();
                    Some(cursor.param_value()?)
                } else {
                    None
                };
                offer.params.push((param, param_value));
            }
            offers.push(offer);
        }
    }

    /// Formats this extension for a Sec-WebSocket-Extensions header, quoting values that are
    /// not tokens.
    pub fn to_header_value(&self) -> String {
        let mut out = self.name.clone();
        for (name, value) in &self.params {
            out.push_str("; ");
            out.push_str(name);
            if let Some(value) = value {
                out.push('=');
                if is_token(value) {
                    out.push_str(value);
                } else {
                    out.push('"');
                    for c in value.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
            }
        }
        out
    }

    /// Formats several extensions as one comma-separated header value.
    pub fn list_to_header_value(offers: &[ExtensionOffer]) -> String {
        let mut out = String::new();
        for (i, offer) in offers.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&offer.to_header_value());
        }
        out
    }
}

fn extension_error(reason: &'static str) -> HandshakeError {
    HandshakeError::InvalidHeader {
        name: "Sec-WebSocket-Extensions",
        reason,
    }
}

/// A byte cursor over an extension list; it only stops on ASCII bytes, so every slice it
/// hands out of the original `&str` is itself valid UTF-8.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn bump(&mut self) {
        self.rest = self.rest.get(1..).unwrap_or_default();
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
    }

    fn token(&mut self) -> Option<String> {
        let len = self.rest.iter().take_while(|&&b| is_tchar(b)).count();
        let (token, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        // tchar is ASCII, so this cannot fail; the Option keeps the function panic-free.
        let token = core::str::from_utf8(token).ok().filter(|t| !t.is_empty())?;
        Some(token.to_string())
    }

    fn param_value(&mut self) -> Result<String, HandshakeError> {
        if self.peek() != Some(b'"') {
            return self
                .token()
                .ok_or(extension_error("expected a parameter value"));
        }
        self.bump();
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(extension_error("unterminated quoted string")),
                Some(b'"') => {
                    self.bump();
                    break;
                }
                Some(b'\\') => {
                    self.bump();
                    let escaped = self
                        .peek()
                        .ok_or(extension_error("unterminated quoted string"))?;
                    value.push(escaped);
                    self.bump();
                }
                Some(b) => {
                    value.push(b);
                    self.bump();
                }
            }
        }
        String::from_utf8(value)
            .ok()
            .filter(|v| is_token(v))
            .ok_or(extension_error("quoted parameter value is not a token"))
    }
}

/// Copies httparse's borrowed headers into owned [`Header`]s.
fn own_headers(parsed: &[httparse::Header<'_>]) -> Vec<Header> {
    parsed
        .iter()
        .map(|h| Header {
            name: h.name.to_string(),
            value: h.value.to_vec(),
        })
        .collect()
}

/// Values of every header called `name` (case-insensitive), in order.
fn header_values<'a, 'n>(
    headers: &'a [Header],
    name: &'n str,
) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// The single value of a header that must not repeat; `Err(())` when it repeats.
fn single_header<'a>(headers: &'a [Header], name: &'a str) -> Result<Option<&'a [u8]>, ()> {
    single_value(header_values(headers, name))
}

/// The only one of a header's `values`, if any; `Err(())` when there are several.
fn single_value<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Result<Option<&'a [u8]>, ()> {
    let first = values.next();
    match values.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

fn httparse_error(err: httparse::Error) -> HandshakeError {
    match err {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders(MAX_HEADERS),
        httparse::Error::HeaderName => HandshakeError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HandshakeError::Malformed("invalid header value"),
        httparse::Error::NewLine => HandshakeError::Malformed("invalid line ending"),
        httparse::Error::Status => HandshakeError::Malformed("invalid status"),
        httparse::Error::Token => HandshakeError::Malformed("invalid token"),
        httparse::Error::Version => HandshakeError::Malformed("invalid HTTP version"),
    }
}

/// Whether a header line may be written as is: a token name and a value without the bytes
/// that would end the line early (CR, LF) or that peers treat as string ends (NUL).
fn is_safe_header(name: &str, value: &str) -> bool {
    is_token(name) && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0'))
}

/// Appends `name: value\r\n`, leaving out lines that would let a value forge further header
/// lines. Returns whether the line was written.
fn push_header(out: &mut impl BufMut, name: &str, value: &str) -> bool {
    if !is_safe_header(name, value) {
        return false;
    }
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
    true
}

/// Lets `write!` format numbers straight into an output buffer without a temporary String.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    // Writing into a Vec cannot fail; the result carries no information.
    let _ = fmt::Write::write_fmt(&mut VecWriter(out), format_args!("{n}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn head_end_found_in_one_buffer() {
        let mut scanned = 0;
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        assert_eq!(find_head_end(buf, &mut scanned), Some(buf.len() - 4));
        assert_eq!(scanned, buf.len() - 4);
        assert_eq!(find_head_end(buf, &mut scanned), None);
    }

    #[test]
    fn head_end_fed_one_byte_at_a_time_is_found_once_without_rescanning() {
        let head = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\r\n";
        let mut buf = Vec::new();
        let mut scanned = 0;
        let mut found = Vec::new();
        let mut judged_total = 0;
        for (i, &b) in head.iter().enumerate() {
            buf.push(b);
            let before = scanned;
            if let Some(end) = find_head_end(&buf, &mut scanned) {
                found.push((i, end));
            }
            assert!(scanned >= before, "scanned went backwards at byte {i}");
            // Each call may only look at bytes from `before`; at most 3 carried over.
            assert!(buf.len() - before <= 4, "byte {i}: rescanned from {before}");
            judged_total += buf.len() - before;
        }
        assert_eq!(found, vec![(head.len() - 1, head.len())]);
        assert!(judged_total <= 4 * head.len());
    }

    #[test]
    fn head_end_split_terminator_across_reads() {
        let mut scanned = 0;
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r".to_vec();
        assert_eq!(find_head_end(&buf, &mut scanned), None);
        buf.push(b'\n');
        assert_eq!(find_head_end(&buf, &mut scanned), Some(buf.len()));
    }

    #[test]
    fn head_end_tolerates_stale_scanned_offset() {
        let mut scanned = 100;
        assert_eq!(find_head_end(b"\r\n\r\n", &mut scanned), None);
        assert_eq!(find_head_end(b"", &mut 0), None);
    }

    #[test]
    fn tokens_are_found_in_comma_lists_case_insensitively() {
        assert!(header_has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(header_has_token(b"  UPGRADE\t", "upgrade"));
        assert!(header_has_token(b"a,,websocket ,", "WebSocket"));
        assert!(!header_has_token(b"upgrades", "upgrade"));
        assert!(!header_has_token(b"", "upgrade"));
        assert!(!header_has_token(b"keep-alive", "upgrade"));
    }

    proptest! {
        /// The one-pass token search agrees with the element list it replaces.
        #[test]
        fn token_search_agrees_with_the_element_list(
            value in proptest::collection::vec(
                prop_oneof![Just(b','), Just(b' '), Just(b'\t'), Just(b'a'), Just(b'A'), Just(b'b')],
                0..12,
            ),
            token in "[aAb]{1,3}",
        ) {
            let oracle = list_elements(&value).any(|e| e.eq_ignore_ascii_case(token.as_bytes()));
            prop_assert_eq!(header_has_token(&value, &token), oracle);
        }
    }

    #[test]
    fn extension_list_with_several_extensions_and_quoted_params() {
        let offers = ExtensionOffer::parse_list(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\" , \
             x-custom ;a = b;q=\"x\\yz\",, permessage-deflate",
        )
        .unwrap();
        assert_eq!(
            offers,
            vec![
                ExtensionOffer::new("permessage-deflate")
                    .with_param("client_max_window_bits", None)
                    .with_param("server_max_window_bits", Some("10".into())),
                ExtensionOffer::new("x-custom")
                    .with_param("a", Some("b".into()))
                    .with_param("q", Some("xyz".into())),
                ExtensionOffer::new("permessage-deflate"),
            ]
        );
        assert_eq!(offers[0].param("SERVER_MAX_WINDOW_BITS"), Some(Some("10")));
        assert_eq!(offers[0].param("client_max_window_bits"), Some(None));
        assert_eq!(offers[0].param("absent"), None);
    }

    #[test]
    fn extension_list_rejects_malformed_values() {
        for bad in [
            "permessage-deflate; a=\"10",
            "permessage-deflate; a=\"1 0\"",
            "permessage-deflate;",
            "permessage-deflate; =1",
            "permessage-deflate a",
            "; a",
            "permessage-deflate; a=",
            "permessage-deflate; a=\"x\\",
            "perméssage",
        ] {
            assert!(
                matches!(
                    ExtensionOffer::parse_list(bad),
                    Err(HandshakeError::InvalidHeader { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(ExtensionOffer::parse_list("").unwrap(), vec![]);
        assert_eq!(ExtensionOffer::parse_list(" , ").unwrap(), vec![]);
    }

    #[test]
    fn extension_formats_back_to_header_value() {
        let offer = ExtensionOffer::new("permessage-deflate")
            .with_param("client_max_window_bits", None)
            .with_param("server_max_window_bits", Some("10".into()));
        assert_eq!(
            offer.to_header_value(),
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10"
        );
        let two = [offer.clone(), ExtensionOffer::new("x")];
        assert_eq!(
            ExtensionOffer::list_to_header_value(&two),
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10, x"
        );
        let quoted = ExtensionOffer::new("x").with_param("v", Some("a \"b\"".into()));
        assert_eq!(quoted.to_header_value(), "x; v=\"a \\\"b\\\"\"");
    }

    #[test]
    fn errors_map_to_http_statuses() {
        assert_eq!(HandshakeError::Malformed("x").http_status(), 400);
        assert_eq!(HandshakeError::HeadTooLarge(8192).http_status(), 431);
        assert_eq!(HandshakeError::TooManyHeaders(64).http_status(), 431);
        assert_eq!(
            HandshakeError::MethodNotGet("POST".into()).http_status(),
            405
        );
        assert_eq!(HandshakeError::UnsupportedVersion.http_status(), 426);
        assert_eq!(HandshakeError::MissingHost.http_status(), 400);
        assert_eq!(
            HandshakeError::HeadTooLarge(8192).to_string(),
            "HTTP head larger than 8192 bytes"
        );
    }

    fn token_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
    }

    proptest! {
        #[test]
        fn parse_list_never_panics(s in any::<String>()) {
            let _ = ExtensionOffer::parse_list(&s);
        }

        /// The LF search finds the first terminator a four-byte window finds, fed whole or
        /// in two reads.
        #[test]
        fn head_end_search_agrees_with_a_window_scan(
            buf in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..40),
            split in 0usize..40,
        ) {
            let oracle = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
            prop_assert_eq!(find_head_end(&buf, &mut 0), oracle);
            let split = split.min(buf.len());
            let mut scanned = 0;
            let found = find_head_end(&buf[..split], &mut scanned)
                .or_else(|| find_head_end(&buf, &mut scanned));
            prop_assert_eq!(found, oracle);
        }

        #[test]
        fn find_head_end_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..256), scanned in 0usize..300) {
            let mut scanned = scanned;
            if let Some(end) = find_head_end(&buf, &mut scanned) {
                prop_assert!(end <= buf.len());
                prop_assert_eq!(&buf[end - 4..end], b"\r\n\r\n");
            }
        }

        #[test]
        fn extension_formatting_round_trips(
            name in token_strategy(),
            params in proptest::collection::vec(
                (token_strategy(), proptest::option::of(token_strategy())), 0..4),
        ) {
            let offer = ExtensionOffer { name, params };
            let parsed = ExtensionOffer::parse_list(&offer.to_header_value()).unwrap();
            prop_assert_eq!(parsed, vec![offer]);
        }
    }
}
