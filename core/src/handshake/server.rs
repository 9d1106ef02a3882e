//! Server side: parse a request head, decide whether it is an upgrade, answer it.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use bytes::BufMut;

use super::key::{accept_key_bytes, is_valid_key};
use super::{
    ExtensionOffer, HandshakeError, MAX_HEADERS, header_has_token, httparse_error, is_token,
    list_elements, push_decimal, push_header, single_value, trim_ows,
};

/// A parsed HTTP/1.x request head.
///
/// It holds one copy of the head and where its parts are in it (two allocations, whatever
/// the number of headers), and hands out borrowed views of them.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The head as received, up to and including its blank line.
    head: Box<[u8]>,
    method: Span,
    target: Span,
    minor_version: u8,
    /// Each header line's name and value.
    headers: Vec<(Span, Span)>,
    /// An Upgrade header contains the token `websocket`; found once, like `upgrade_attempt`.
    upgrade_token: bool,
    /// [`Request::is_websocket_upgrade`], found once (servers ask it several times).
    upgrade_attempt: bool,
}

/// A part of [`Request::head`]: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Where `part`, a slice of `head`, lies in it.
    fn of(head: &[u8], part: &[u8]) -> Span {
        // Both are in one allocation: the difference of the addresses is the offset.
        let start = (part.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize);
        debug_assert!(start + part.len() <= head.len());
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    fn get(self, head: &[u8]) -> &[u8] {
        head.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    /// A part httparse returned as text (the method, the target, a header name).
    fn text(self, head: &[u8]) -> &str {
        core::str::from_utf8(self.get(head)).unwrap_or_default()
    }
}

impl core::fmt::Debug for Request {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        struct Headers<'a>(&'a Request);
        impl core::fmt::Debug for Headers<'_> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_list()
                    .entries(
                        self.0
                            .headers()
                            .map(|(name, value)| (name, String::from_utf8_lossy(value))),
                    )
                    .finish()
            }
        }
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("target", &self.target())
            .field("minor_version", &self.minor_version)
            .field("headers", &Headers(self))
            .finish()
    }
}

impl Request {
    /// Parses a complete head (ending in `\r\n\r\n`, see [`super::find_head_end`]).
    ///
    /// More than [`MAX_HEADERS`] header lines is [`HandshakeError::TooManyHeaders`] (431).
    /// Bytes after the head are ignored; they belong to whatever follows it.
    pub fn parse(head: &[u8]) -> Result<Request, HandshakeError> {
        if u32::try_from(head.len()).is_err() {
            return Err(HandshakeError::Malformed("head larger than 4 GiB"));
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut slots);
        let length = match parsed.parse(head).map_err(httparse_error)? {
            httparse::Status::Complete(length) => length,
            httparse::Status::Partial => return Err(HandshakeError::Malformed("incomplete head")),
        };
        // httparse leaves these unset only on a partial parse, handled above.
        let (Some(method), Some(target), Some(minor_version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Err(HandshakeError::Malformed("incomplete request line"));
        };
        let headers = parsed
            .headers
            .iter()
            .map(|h| (Span::of(head, h.name.as_bytes()), Span::of(head, h.value)))
            .collect();
        let mut request = Request {
            method: Span::of(head, method.as_bytes()),
            target: Span::of(head, target.as_bytes()),
            minor_version,
            headers,
            head: head[..length].into(),
            upgrade_token: false,
            upgrade_attempt: false,
        };
        let upgrade_token = request
            .header_values("Upgrade")
            .any(|value| header_has_token(value, "websocket"));
        let upgrade_attempt = upgrade_token
            || request.header_values("Sec-WebSocket-Key").next().is_some()
            || request
                .header_values("Sec-WebSocket-Version")
                .next()
                .is_some();
        request.upgrade_token = upgrade_token;
        request.upgrade_attempt = upgrade_attempt;
        Ok(request)
    }

    /// Request method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.method.text(&self.head)
    }

    /// Request target as sent: path plus query.
    pub fn target(&self) -> &str {
        self.target.text(&self.head)
    }

    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// Header lines in order: the name as sent (compare it case-insensitively) and the value
    /// with surrounding whitespace removed by the parser (bytes: HTTP allows obs-text).
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|(name, value)| (name.text(&self.head), value.get(&self.head)))
    }

    /// The target up to the `?`.
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The target after the `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, query)| query)
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.header_values(name).next()
    }

    /// Like [`Request::header`], but `None` when the value is not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|value| core::str::from_utf8(value).ok())
    }

    /// Every header called `name` (case-insensitive), in order.
    pub fn header_values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        let head = &self.head[..];
        self.headers
            .iter()
            .filter(move |(n, _)| n.get(head).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |(_, value)| value.get(head))
    }

    /// The single value of a header that must not repeat; `Err(())` when it repeats.
    fn single_header(&self, name: &str) -> Result<Option<&[u8]>, ()> {
        single_value(self.header_values(name))
    }

    /// True when the request attempts a WebSocket upgrade: an Upgrade header contains the token
    /// `websocket` (case-insensitive), or the request carries `Sec-WebSocket-Key` or
    /// `Sec-WebSocket-Version`, which only WebSocket clients send.
    ///
    /// An attempt that gets another header wrong (no `Upgrade: websocket`, no `Connection:
    /// upgrade`) is still an attempt: [`Request::validate_upgrade`] says what is wrong, so the
    /// client gets a 400 or 426 with the reason instead of being served a page (or a 404).
    /// A request that is not an attempt is plain HTTP: a server answers /healthz, /metrics, pages.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.upgrade_attempt
    }

    /// The Origin header, which browsers always send; servers use it against cross-site
    /// WebSocket hijacking.
    pub fn origin(&self) -> Option<&str> {
        self.header_str("Origin").map(trim_str)
    }

    /// The Host header.
    pub fn host(&self) -> Option<&str> {
        self.header_str("Host").map(trim_str)
    }

    /// Offered subprotocols in order, from every Sec-WebSocket-Protocol header, comma-split and
    /// trimmed.
    ///
    /// Elements that are not tokens cannot be selected and are left out;
    /// [`Request::validate_upgrade`] rejects a request that contains any.
    pub fn subprotocols(&self) -> Vec<String> {
        self.header_values("Sec-WebSocket-Protocol")
            .flat_map(list_elements)
            .filter_map(|element| core::str::from_utf8(element).ok())
            .filter(|element| is_token(element))
            .map(ToString::to_string)
            .collect()
    }

    /// Offered extensions in order, from every Sec-WebSocket-Extensions header.
    pub fn extensions(&self) -> Result<Vec<ExtensionOffer>, HandshakeError> {
        let mut offers = Vec::new();
        for value in self.header_values("Sec-WebSocket-Extensions") {
            let value = core::str::from_utf8(value).map_err(|_| HandshakeError::InvalidHeader {
                name: "Sec-WebSocket-Extensions",
                reason: "not UTF-8",
            })?;
            offers.extend(ExtensionOffer::parse_list(value)?);
        }
        Ok(offers)
    }

    /// The Sec-WebSocket-Key header, trimmed; not validated (see
    /// [`Request::validate_upgrade`]).
    pub fn websocket_key(&self) -> Option<&str> {
        self.header_str("Sec-WebSocket-Key").map(trim_str)
    }

    /// Checks everything RFC 6455 §4.2.1 requires of an upgrade request: GET, HTTP/1.1+, one
    /// Host, Upgrade/Connection tokens (comma lists, case-insensitive; `Connection: keep-alive,
    /// Upgrade` is fine), Sec-WebSocket-Version: 13, one key that is base64 of 16 bytes, and
    /// well-formed subprotocol and extension offers. Returns the key on success.
    pub fn validate_upgrade(&self) -> Result<&str, HandshakeError> {
        if self.method() != "GET" {
            return Err(HandshakeError::MethodNotGet(self.method().into()));
        }
        if self.minor_version < 1 {
            return Err(HandshakeError::HttpVersion);
        }
        match self.single_header("Host") {
            Ok(Some(_)) => {}
            Ok(None) => return Err(HandshakeError::MissingHost),
            Err(()) => return Err(HandshakeError::DuplicateHost),
        }
        if !self.upgrade_token {
            return Err(HandshakeError::NotUpgrade);
        }
        if !self
            .header_values("Connection")
            .any(|value| header_has_token(value, "upgrade"))
        {
            return Err(HandshakeError::NotConnectionUpgrade);
        }
        // The version is checked before the key: clients of older drafts (hixie-76 sends
        // Sec-WebSocket-Key1/Key2) learn from the 426 which version to speak instead of being
        // told their key is bad.
        match self.single_header("Sec-WebSocket-Version") {
            Ok(Some(version)) if trim_ows(version) == b"13" => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        let key = match self.single_header("Sec-WebSocket-Key") {
            Ok(Some(key)) => trim_ows(key),
            _ => return Err(HandshakeError::InvalidKey),
        };
        if !is_valid_key(key) {
            return Err(HandshakeError::InvalidKey);
        }
        for value in self.header_values("Sec-WebSocket-Protocol") {
            let all_tokens = core::str::from_utf8(value).is_ok_and(|value| {
                list_elements(value.as_bytes()).all(|p| core::str::from_utf8(p).is_ok_and(is_token))
            });
            if !all_tokens {
                return Err(HandshakeError::InvalidHeader {
                    name: "Sec-WebSocket-Protocol",
                    reason: "element is not a token",
                });
            }
        }
        self.extensions()?;
        // A valid key is 24 ASCII characters, so this conversion cannot fail.
        core::str::from_utf8(key).map_err(|_| HandshakeError::InvalidKey)
    }
}

fn trim_str(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// What the application decides for an upgrade request.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    /// The selected subprotocol; it must be one the client offered.
    pub protocol: Option<String>,
    /// The accepted extensions with their response parameters.
    pub extensions: Vec<ExtensionOffer>,
    /// Extra response headers (Set-Cookie, Server...).
    pub headers: Vec<(String, String)>,
}

impl Accept {
    /// Selects a subprotocol.
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Accepts an extension.
    pub fn with_extension(mut self, extension: ExtensionOffer) -> Self {
        self.extensions.push(extension);
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Appends the 101 response (Upgrade, Connection, Sec-WebSocket-Accept, optional
/// protocol/extensions, extra headers).
///
/// `key` is the value returned by [`Request::validate_upgrade`]. A protocol that is not a
/// token, and extra headers whose name is not a token or whose value holds CR, LF or NUL, are
/// left out: an application passing through client-controlled text must not be able to split
/// the response.
pub fn write_accept_response(key: &str, accept: &Accept, out: &mut impl BufMut) {
    out.put_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.put_slice(&accept_key_bytes(key.as_bytes()));
    out.put_slice(b"\r\n");
    if let Some(protocol) = accept.protocol.as_deref().filter(|p| is_token(p)) {
        push_header(out, "Sec-WebSocket-Protocol", protocol);
    }
    if !accept.extensions.is_empty() {
        push_header(
            out,
            "Sec-WebSocket-Extensions",
            &ExtensionOffer::list_to_header_value(&accept.extensions),
        );
    }
    for (name, value) in &accept.headers {
        push_header(out, name, value);
    }
    out.put_slice(b"\r\n");
}

/// Appends a complete plain HTTP/1.1 response with Content-Length and `Connection: close`.
///
/// For 426 the caller passes the `Sec-WebSocket-Version: 13` header. The reason phrase is
/// derived from the status. Content-Length and Connection in `headers` are ignored in favour
/// of the ones written here, and unsafe header lines are left out as in
/// [`write_accept_response`]. A status outside 100..=999 is written as 500.
pub fn write_response(status: u16, headers: &[(&str, &str)], body: &[u8], out: &mut Vec<u8>) {
    write_response_with(status, headers, body, false, out);
}

/// Like [`write_response`], with `Connection: keep-alive`: the client may send its next request
/// on the same connection (see [`crate::Connection::respond_and_continue`]).
pub fn write_response_keep_alive(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    out: &mut Vec<u8>,
) {
    write_response_with(status, headers, body, true, out);
}

/// Appends the head of a response whose body follows over time (no `Content-Length`,
/// `Connection: close`: the body ends with the connection), e.g. `text/event-stream`.
/// Content-Length, Connection and Transfer-Encoding in `headers` are left out.
pub fn write_streaming_head(status: u16, headers: &[(&str, &str)], out: &mut Vec<u8>) {
    write_status_and_headers(status, headers, true, out);
    out.extend_from_slice(b"Connection: close\r\n\r\n");
}

/// The status line and the application's headers, without the framing ones written after them
/// (Content-Length, Connection, and Transfer-Encoding with `streaming`).
fn write_status_and_headers(
    status: u16,
    headers: &[(&str, &str)],
    streaming: bool,
    out: &mut Vec<u8>,
) {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("Content-Length")
            || name.eq_ignore_ascii_case("Connection")
            || (streaming && name.eq_ignore_ascii_case("Transfer-Encoding"))
        {
            continue;
        }
        push_header(out, name, value);
    }
}

fn write_response_with(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    write_status_and_headers(status, headers, false, out);
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len());
    if keep_alive {
        out.extend_from_slice(b"\r\nConnection: keep-alive\r\n\r\n");
    } else {
        out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    }
    out.extend_from_slice(body);
}

/// The response a server sends for a handshake error: status from
/// [`HandshakeError::http_status`], the error text as body, `Sec-WebSocket-Version: 13` with
/// 426 and `Allow: GET` with 405.
pub fn write_error_response(err: &HandshakeError, out: &mut Vec<u8>) {
    let status = err.http_status();
    let mut body = err.to_string();
    body.push('\n');
    let content_type = ("Content-Type", "text/plain; charset=utf-8");
    let headers: &[(&str, &str)] = match status {
        426 => &[content_type, ("Sec-WebSocket-Version", "13")],
        405 => &[content_type, ("Allow", "GET")],
        _ => &[content_type],
    };
    write_response(status, headers, body.as_bytes(), out);
}

/// The standard reason phrase for a status (RFC 9110 §15); clients ignore it, people read it.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::client::{ClientRequest, Response};
    use crate::handshake::find_head_end;
    use crate::handshake::key::generate_key;
    use alloc::format;
    use alloc::vec;
    use proptest::prelude::*;

    const CHROME: &[u8] = b"GET /chat?room=lobby&x=1 HTTP/1.1\r\n\
        Host: example.com:8080\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Pragma: no-cache\r\n\
        Cache-Control: no-cache\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
        Upgrade: websocket\r\n\
        Origin: https://example.com\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Accept-Encoding: gzip, deflate, br, zstd\r\n\
        Accept-Language: en-US,en;q=0.9\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        \r\n";

    /// The Chrome request with header `name` replaced by `line` (or removed when `line` is
    /// empty).
    fn chrome_with(name: &str, line: &str) -> Vec<u8> {
        let text = core::str::from_utf8(CHROME).unwrap();
        let mut out = String::new();
        for l in text.split_inclusive("\r\n") {
            if l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            {
                out.push_str(line);
            } else {
                out.push_str(l);
            }
        }
        out.into_bytes()
    }

    #[test]
    fn chrome_request_parses_and_validates() {
        let req = Request::parse(CHROME).unwrap();
        assert_eq!(req.method(), "GET");
        assert_eq!(req.target(), "/chat?room=lobby&x=1");
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("room=lobby&x=1"));
        assert_eq!(req.minor_version, 1);
        assert_eq!(req.host(), Some("example.com:8080"));
        assert_eq!(req.origin(), Some("https://example.com"));
        assert_eq!(req.header("pragma"), Some(&b"no-cache"[..]));
        assert_eq!(req.header_str("SEC-WEBSOCKET-VERSION"), Some("13"));
        assert!(req.is_websocket_upgrade());
        assert_eq!(req.subprotocols(), vec!["chat", "superchat"]);
        assert_eq!(
            req.extensions().unwrap(),
            vec![
                ExtensionOffer::new("permessage-deflate")
                    .with_param("client_max_window_bits", None)
            ]
        );
        assert_eq!(req.websocket_key(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(req.validate_upgrade(), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn path_without_query() {
        let req = Request::parse(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(req.path(), "/healthz");
        assert_eq!(req.query(), None);
        assert!(!req.is_websocket_upgrade());
    }

    #[test]
    fn rejects_non_get() {
        let mut head = b"POST".to_vec();
        head.extend_from_slice(&CHROME[3..]);
        let err = Request::parse(&head)
            .unwrap()
            .validate_upgrade()
            .unwrap_err();
        assert_eq!(err, HandshakeError::MethodNotGet("POST".into()));
        assert_eq!(err.http_status(), 405);
    }

    #[test]
    fn rejects_http_1_0() {
        let text = core::str::from_utf8(CHROME)
            .unwrap()
            .replacen("HTTP/1.1", "HTTP/1.0", 1);
        let req = Request::parse(text.as_bytes()).unwrap();
        assert_eq!(req.validate_upgrade(), Err(HandshakeError::HttpVersion));
    }

    #[test]
    fn rejects_missing_or_duplicate_host() {
        let req = Request::parse(&chrome_with("Host", "")).unwrap();
        assert_eq!(req.validate_upgrade(), Err(HandshakeError::MissingHost));
        let req = Request::parse(&chrome_with("Host", "Host: a\r\nHost: b\r\n")).unwrap();
        assert_eq!(req.validate_upgrade(), Err(HandshakeError::DuplicateHost));
    }

    #[test]
    fn request_without_websocket_headers_is_plain_http() {
        let req = Request::parse(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n").unwrap();
        assert!(!req.is_websocket_upgrade());
        assert_eq!(req.validate_upgrade(), Err(HandshakeError::NotUpgrade));
    }

    #[test]
    fn attempt_with_a_wrong_header_is_a_failed_upgrade() {
        // Sec-WebSocket-Key/Version mark a WebSocket client: a wrong or missing Upgrade token,
        // or a missing `Connection: upgrade`, is a failed upgrade (400), never a page request.
        for (name, line, err) in [
            ("Upgrade", "", HandshakeError::NotUpgrade),
            ("Upgrade", "Upgrade: h2c\r\n", HandshakeError::NotUpgrade),
            (
                "Upgrade",
                "Upgrade: websockets\r\n",
                HandshakeError::NotUpgrade,
            ),
            ("Connection", "", HandshakeError::NotConnectionUpgrade),
            (
                "Connection",
                "Connection: keep-alive\r\n",
                HandshakeError::NotConnectionUpgrade,
            ),
        ] {
            let req = Request::parse(&chrome_with(name, line)).unwrap();
            assert!(req.is_websocket_upgrade(), "{name}: {line:?}");
            assert_eq!(req.validate_upgrade(), Err(err.clone()), "{name}: {line:?}");
            assert_eq!(err.http_status(), 400);
        }
        // Only the version header, wrong: 426 tells the client which version to speak.
        let req = Request::parse(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        .unwrap();
        assert!(req.is_websocket_upgrade());
        assert_eq!(req.validate_upgrade(), Err(HandshakeError::NotUpgrade));
        let req = Request::parse(&chrome_with(
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Version: 8\r\n",
        ))
        .unwrap();
        assert_eq!(
            req.validate_upgrade(),
            Err(HandshakeError::UnsupportedVersion)
        );
        assert_eq!(HandshakeError::UnsupportedVersion.http_status(), 426);
    }

    #[test]
    fn upgrade_tokens_are_case_insensitive_lists() {
        let req = Request::parse(&chrome_with("Upgrade", "upgrade: foo, WebSocket\r\n")).unwrap();
        assert!(req.is_websocket_upgrade());
        let req = Request::parse(&chrome_with("Connection", "connection: UPGRADE\r\n")).unwrap();
        assert!(req.validate_upgrade().is_ok());
        let req = Request::parse(&chrome_with("Connection", "Connection: keep-alive\r\n")).unwrap();
        assert_eq!(
            req.validate_upgrade(),
            Err(HandshakeError::NotConnectionUpgrade)
        );
    }

    #[test]
    fn rejects_missing_duplicate_or_short_key() {
        let req = Request::parse(&chrome_with("Sec-WebSocket-Key", "")).unwrap();
        assert_eq!(req.validate_upgrade(), Err(HandshakeError::InvalidKey));
        // base64 of 15 bytes.
        let req = Request::parse(&chrome_with(
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n",
        ))
        .unwrap();
        assert_eq!(req.validate_upgrade(), Err(HandshakeError::InvalidKey));
        let two = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let req = Request::parse(&chrome_with("Sec-WebSocket-Key", two)).unwrap();
        assert_eq!(req.validate_upgrade(), Err(HandshakeError::InvalidKey));
    }

    #[test]
    fn version_8_gets_426_with_version_header() {
        let req = Request::parse(&chrome_with(
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Version: 8\r\n",
        ))
        .unwrap();
        let err = req.validate_upgrade().unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion);
        assert_eq!(err.http_status(), 426);
        let mut out = Vec::new();
        write_error_response(&err, &mut out);
        let text = core::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        let req = Request::parse(&chrome_with("Sec-WebSocket-Version", "")).unwrap();
        assert_eq!(
            req.validate_upgrade(),
            Err(HandshakeError::UnsupportedVersion)
        );
    }

    #[test]
    fn rejects_bad_offers() {
        let req = Request::parse(&chrome_with(
            "Sec-WebSocket-Protocol",
            "Sec-WebSocket-Protocol: chat, two words\r\n",
        ))
        .unwrap();
        assert!(matches!(
            req.validate_upgrade(),
            Err(HandshakeError::InvalidHeader {
                name: "Sec-WebSocket-Protocol",
                ..
            })
        ));
        assert_eq!(req.subprotocols(), vec!["chat"]);
        let req = Request::parse(&chrome_with(
            "Sec-WebSocket-Extensions",
            "Sec-WebSocket-Extensions: permessage-deflate; x=\"\r\n",
        ))
        .unwrap();
        assert!(matches!(
            req.validate_upgrade(),
            Err(HandshakeError::InvalidHeader {
                name: "Sec-WebSocket-Extensions",
                ..
            })
        ));
    }

    #[test]
    fn non_utf8_header_values_are_kept_as_bytes() {
        let req = Request::parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9\r\n\r\n").unwrap();
        assert_eq!(req.header("x-name"), Some(&b"caf\xe9"[..]));
        assert_eq!(req.header_str("x-name"), None);
        let req =
            Request::parse(b"GET / HTTP/1.1\r\nSec-WebSocket-Extensions: \xff\r\n\r\n").unwrap();
        assert!(req.extensions().is_err());
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            Request::parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap_err(),
            HandshakeError::Malformed("incomplete head")
        );
        assert!(matches!(
            Request::parse(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            Request::parse(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            Err(HandshakeError::Malformed(_))
        ));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let err = Request::parse(&many).unwrap_err();
        assert_eq!(err, HandshakeError::TooManyHeaders(MAX_HEADERS));
        assert_eq!(err.http_status(), 431);
    }

    #[test]
    fn accept_response_bytes() {
        let accept = Accept::default()
            .with_protocol("chat")
            .with_extension(
                ExtensionOffer::new("permessage-deflate")
                    .with_param("client_max_window_bits", Some("10".into())),
            )
            .with_header("Server", "duplex")
            .with_header("X-Evil", "a\r\nSet-Cookie: x=1")
            .with_header("Bad Name", "v");
        let mut out = Vec::new();
        write_accept_response("dGhlIHNhbXBsZSBub25jZQ==", &accept, &mut out);
        assert_eq!(
            core::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n\
             Server: duplex\r\n\
             \r\n"
        );
        let mut out = Vec::new();
        write_accept_response("k", &Accept::default().with_protocol("no token"), &mut out);
        assert!(
            !core::str::from_utf8(&out)
                .unwrap()
                .contains("Sec-WebSocket-Protocol")
        );
    }

    #[test]
    fn plain_response_bytes() {
        let mut out = b"prefix".to_vec();
        write_response(
            200,
            &[
                ("Content-Type", "text/plain"),
                ("Content-Length", "999"),
                ("Connection", "keep-alive"),
            ],
            b"ok\n",
            &mut out,
        );
        assert_eq!(
            core::str::from_utf8(&out).unwrap(),
            "prefixHTTP/1.1 200 OK\r\n\
             Content-Type: text/plain\r\n\
             Content-Length: 3\r\n\
             Connection: close\r\n\
             \r\n\
             ok\n"
        );
        for (status, line) in [
            (404, "HTTP/1.1 404 Not Found\r\n"),
            (431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            (503, "HTTP/1.1 503 Service Unavailable\r\n"),
            (499, "HTTP/1.1 499 Client Error\r\n"),
            (0, "HTTP/1.1 500 Internal Server Error\r\n"),
        ] {
            let mut out = Vec::new();
            write_response(status, &[], b"", &mut out);
            assert!(out.starts_with(line.as_bytes()), "{status}");
        }
    }

    #[test]
    fn error_response_bytes() {
        let mut out = Vec::new();
        write_error_response(&HandshakeError::MethodNotGet("POST".into()), &mut out);
        let body = "method POST is not GET\n";
        assert_eq!(
            core::str::from_utf8(&out).unwrap(),
            format!(
                "HTTP/1.1 405 Method Not Allowed\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\
                 Allow: GET\r\n\
                 Content-Length: {}\r\n\
                 Connection: close\r\n\
                 \r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn round_trip_client_server_client() {
        let request = ClientRequest::from_url("ws://example.com:9001/chat?x=1")
            .unwrap()
            .with_origin("http://example.com")
            .with_protocol("v2.chat")
            .with_protocol("v1.chat")
            .with_extension(
                ExtensionOffer::new("permessage-deflate")
                    .with_param("client_max_window_bits", None),
            )
            .with_header("Authorization", "Bearer t");
        let key = generate_key([42; 16]);
        let mut wire = Vec::new();
        request.write(&key, &mut wire);

        // Fed one byte at a time, as a slow socket would.
        let mut buf = Vec::new();
        let mut scanned = 0;
        let mut end = None;
        for &b in &wire {
            buf.push(b);
            if let Some(e) = find_head_end(&buf, &mut scanned) {
                assert!(end.is_none());
                end = Some(e);
            }
        }
        assert_eq!(end, Some(wire.len()));

        let req = Request::parse(&buf).unwrap();
        let server_key = req.validate_upgrade().unwrap();
        assert_eq!(server_key, key);
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.host(), Some("example.com:9001"));
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(req.header_str("authorization"), Some("Bearer t"));
        let offered = req.subprotocols();
        assert_eq!(offered, vec!["v2.chat", "v1.chat"]);
        let extensions = req.extensions().unwrap();
        assert_eq!(extensions[0].name, "permessage-deflate");

        let accept = Accept::default()
            .with_protocol(offered[1].clone())
            .with_extension(
                ExtensionOffer::new("permessage-deflate")
                    .with_param("client_max_window_bits", Some("12".into())),
            );
        let mut response = Vec::new();
        write_accept_response(server_key, &accept, &mut response);

        let response = Response::parse(&response, &key, &request).unwrap();
        assert_eq!(response.status, 101);
        assert_eq!(response.protocol.as_deref(), Some("v1.chat"));
        assert_eq!(
            response.extensions[0].param("client_max_window_bits"),
            Some(Some("12"))
        );
    }

    proptest! {
        #[test]
        fn request_parse_never_panics(head in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(req) = Request::parse(&head) {
                let _ = req.validate_upgrade();
                let _ = req.subprotocols();
                let _ = req.extensions();
                let _ = (req.path(), req.query(), req.host(), req.origin(), req.websocket_key());
            }
        }

        #[test]
        fn request_parse_never_panics_on_near_valid_heads(
            cut in 0usize..CHROME.len(),
            byte in any::<u8>(),
        ) {
            let mut head = CHROME.to_vec();
            head[cut] = byte;
            if let Ok(req) = Request::parse(&head) {
                let _ = req.validate_upgrade();
                let _ = req.extensions();
            }
        }

        #[test]
        fn write_response_never_splits_lines(
            status in any::<u16>(),
            name in any::<String>(),
            value in any::<String>(),
        ) {
            let mut out = Vec::new();
            write_response(status, &[(&name, &value)], b"", &mut out);
            let head_lines = out.split(|&b| b == b'\n').count();
            // Status line, optional header, Content-Length, Connection, blank line, empty tail.
            prop_assert!(head_lines == 5 || head_lines == 6);
        }
    }
}
