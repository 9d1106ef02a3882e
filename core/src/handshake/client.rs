//! Client side: turn a `ws://` / `wss://` URL into a request head, check the server's answer.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::key::accept_key;
use super::{
    ExtensionOffer, HandshakeError, Header, MAX_HEADERS, header_has_token, header_values,
    httparse_error, is_token, list_elements, own_headers, push_header, single_header, trim_ows,
};

/// Everything needed to write an upgrade request and to check the response against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// `wss` (TLS is the driver's business; this only picks the default port).
    pub secure: bool,
    /// The Host header value: hostname, with `:port` when not the scheme's default.
    pub host: String,
    /// Port to connect to: 80 / 443 when the URL has none.
    pub port: u16,
    /// Hostname to connect to, without port (IPv6 without brackets).
    pub hostname: String,
    /// Request target: path plus query, `/` when the URL has no path.
    pub target: String,
    /// Origin header, which browsers always send and servers may check.
    pub origin: Option<String>,
    /// Offered subprotocols, most preferred first.
    pub protocols: Vec<String>,
    /// Offered extensions, most preferred first.
    pub extensions: Vec<ExtensionOffer>,
    /// Extra request headers (Authorization, Cookie...).
    pub headers: Vec<(String, String)>,
}

impl ClientRequest {
    /// Parses `ws://` or `wss://` URLs (IPv6 literals in brackets, port, path, query).
    ///
    /// A fragment is rejected (RFC 6455 §3), as are user info and hosts with characters a DNS
    /// name cannot have (internationalised names must already be punycode). Characters that
    /// may not appear raw in a request line (space, non-ASCII...) are percent-encoded in the
    /// target, as browsers do.
    pub fn from_url(url: &str) -> Result<ClientRequest, HandshakeError> {
        let url = url.trim_matches(|c: char| c.is_ascii_whitespace());
        let (scheme, rest) = url
            .split_once("://")
            .ok_or(HandshakeError::InvalidUrl("expected ws:// or wss://"))?;
        let secure = if scheme.eq_ignore_ascii_case("ws") {
            false
        } else if scheme.eq_ignore_ascii_case("wss") {
            true
        } else {
            return Err(HandshakeError::InvalidUrl("scheme must be ws or wss"));
        };
        if rest.contains('#') {
            return Err(HandshakeError::InvalidUrl("fragments are not allowed"));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(HandshakeError::InvalidUrl("user info is not supported"));
        }

        let (hostname, port_text, bracketed) = if let Some(inner) = authority.strip_prefix('[') {
            let (address, after) = inner
                .split_once(']')
                .ok_or(HandshakeError::InvalidUrl("unclosed IPv6 bracket"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(HandshakeError::InvalidUrl(
                    "unexpected text after IPv6 address",
                ))?),
            };
            let is_ipv6 = address.contains(':')
                && address
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !is_ipv6 {
                return Err(HandshakeError::InvalidUrl("invalid IPv6 address"));
            }
            (address, port, true)
        } else {
            let (name, port) = match authority.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (authority, None),
            };
            let is_reg_name = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if !is_reg_name {
                return Err(HandshakeError::InvalidUrl("invalid character in host"));
            }
            (name, port, false)
        };
        if hostname.is_empty() {
            return Err(HandshakeError::InvalidUrl("missing host"));
        }

        let default_port = if secure { 443 } else { 80 };
        // RFC 3986 §6.2.3: an empty port ("host:") means the default one.
        let port = match port_text {
            None | Some("") => default_port,
            Some(text) => parse_port(text)?,
        };
        let mut host = String::new();
        if bracketed {
            host.push('[');
            host.push_str(hostname);
            host.push(']');
        } else {
            host.push_str(hostname);
        }
        if port != default_port {
            host.push(':');
            host.push_str(&port.to_string());
        }

        let mut target = String::new();
        if !path_and_query.starts_with('/') {
            target.push('/');
        }
        push_encoded_target(&mut target, path_and_query);

        Ok(ClientRequest {
            secure,
            host,
            port,
            hostname: hostname.to_string(),
            target,
            origin: None,
            protocols: Vec::new(),
            extensions: Vec::new(),
            headers: Vec::new(),
        })
    }

    /// Offers a subprotocol (after those already offered).
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Sets the Origin header.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Adds a request header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers an extension (after those already offered).
    pub fn with_extension(mut self, extension: ExtensionOffer) -> Self {
        self.extensions.push(extension);
        self
    }

    /// Appends the GET request head with the given key (Host, Upgrade: websocket, Connection:
    /// Upgrade, Sec-WebSocket-Key, Sec-WebSocket-Version: 13, Origin, Sec-WebSocket-Protocol,
    /// Sec-WebSocket-Extensions, extra headers).
    ///
    /// The fields are public, so the write defends itself: the target is percent-encoded
    /// where needed, protocols that are not tokens are not offered, and header lines whose
    /// name is not a token or whose value holds CR, LF or NUL are left out.
    pub fn write(&self, key: &str, out: &mut Vec<u8>) {
        let mut target = String::new();
        if !self.target.starts_with('/') {
            target.push('/');
        }
        push_encoded_target(&mut target, &self.target);
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        push_header(out, "Host", &self.host);
        out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
        push_header(out, "Sec-WebSocket-Key", key);
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
        if let Some(origin) = &self.origin {
            push_header(out, "Origin", origin);
        }
        let protocols: Vec<&str> = self
            .protocols
            .iter()
            .map(String::as_str)
            .filter(|p| is_token(p))
            .collect();
        if !protocols.is_empty() {
            push_header(out, "Sec-WebSocket-Protocol", &protocols.join(", "));
        }
        if !self.extensions.is_empty() {
            push_header(
                out,
                "Sec-WebSocket-Extensions",
                &ExtensionOffer::list_to_header_value(&self.extensions),
            );
        }
        for (name, value) in &self.headers {
            push_header(out, name, value);
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn parse_port(text: &str) -> Result<u16, HandshakeError> {
    // u16::from_str would accept a leading '+'.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HandshakeError::InvalidUrl("port is not a number"));
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(HandshakeError::InvalidUrl("port out of range")),
        Ok(port) => Ok(port),
    }
}

/// Appends `raw` with every byte that may not appear in a request target percent-encoded;
/// existing `%XX` escapes pass through, so encoding twice changes nothing.
fn push_encoded_target(out: &mut String, raw: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in raw.as_bytes() {
        let must_encode = b <= b' '
            || b >= 0x7f
            || matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#'
            );
        if must_encode {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push(char::from(b));
        }
    }
}

/// A server's answer to the upgrade request, checked against what was asked.
#[derive(Debug, Clone)]
pub struct Response {
    /// Always 101 once parsed successfully.
    pub status: u16,
    /// Header lines in order.
    pub headers: Vec<Header>,
    /// The subprotocol the server selected, one the client offered.
    pub protocol: Option<String>,
    /// The extensions the server accepted, with its parameters, in response order.
    pub extensions: Vec<ExtensionOffer>,
}

impl Response {
    /// Parses a complete response head and validates it against the request (RFC 6455 §4.1):
    /// status 101 (else [`HandshakeError::UnexpectedStatus`]), Upgrade contains `websocket`,
    /// Connection contains `upgrade` (comma lists, case-insensitive), Sec-WebSocket-Accept
    /// equals `accept_key(key)`, at most one subprotocol and only an offered one (exact match,
    /// subprotocols are case-sensitive), extensions only if offered (by name,
    /// case-insensitive).
    ///
    /// Parameter negotiation within an extension is left to that extension.
    pub fn parse(
        head: &[u8],
        key: &str,
        request: &ClientRequest,
    ) -> Result<Response, HandshakeError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(head).map_err(httparse_error)? {
            httparse::Status::Complete(_) => {}
            httparse::Status::Partial => return Err(HandshakeError::Malformed("incomplete head")),
        }
        let status = parsed
            .code
            .ok_or(HandshakeError::Malformed("incomplete status line"))?;
        if status != 101 {
            return Err(HandshakeError::UnexpectedStatus(status));
        }
        let headers = own_headers(parsed.headers);

        if !header_values(&headers, "Upgrade").any(|v| header_has_token(v, "websocket")) {
            return Err(HandshakeError::NotUpgrade);
        }
        if !header_values(&headers, "Connection").any(|v| header_has_token(v, "upgrade")) {
            return Err(HandshakeError::NotConnectionUpgrade);
        }
        match single_header(&headers, "Sec-WebSocket-Accept") {
            Ok(Some(accept)) => {
                if trim_ows(accept) != accept_key(key.as_bytes()).as_bytes() {
                    return Err(HandshakeError::AcceptMismatch);
                }
            }
            _ => return Err(HandshakeError::MissingAccept),
        }

        let protocol = {
            let mut selected =
                header_values(&headers, "Sec-WebSocket-Protocol").flat_map(list_elements);
            match (selected.next(), selected.next()) {
                (None, _) => None,
                (Some(_), Some(_)) => return Err(HandshakeError::MultipleProtocols),
                (Some(chosen), None) => {
                    let chosen = core::str::from_utf8(chosen).map_err(|_| {
                        HandshakeError::InvalidHeader {
                            name: "Sec-WebSocket-Protocol",
                            reason: "not UTF-8",
                        }
                    })?;
                    if !request.protocols.iter().any(|offered| offered == chosen) {
                        return Err(HandshakeError::ProtocolNotOffered(chosen.to_string()));
                    }
                    Some(chosen.to_string())
                }
            }
        };

        let mut extensions = Vec::new();
        for value in header_values(&headers, "Sec-WebSocket-Extensions") {
            let value = core::str::from_utf8(value).map_err(|_| HandshakeError::InvalidHeader {
                name: "Sec-WebSocket-Extensions",
                reason: "not UTF-8",
            })?;
            extensions.extend(ExtensionOffer::parse_list(value)?);
        }
        if let Some(unoffered) = extensions.iter().find(|accepted| {
            !request
                .extensions
                .iter()
                .any(|offered| offered.name.eq_ignore_ascii_case(&accepted.name))
        }) {
            return Err(HandshakeError::ExtensionNotOffered(unoffered.name.clone()));
        }

        Ok(Response {
            status,
            headers,
            protocol,
            extensions,
        })
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header_values(&self.headers, name).next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;
    use proptest::prelude::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn url(url: &str) -> ClientRequest {
        ClientRequest::from_url(url).unwrap()
    }

    #[test]
    fn url_default_ports() {
        let r = url("ws://example.com");
        assert_eq!(
            (
                r.secure,
                r.port,
                r.host.as_str(),
                r.hostname.as_str(),
                r.target.as_str()
            ),
            (false, 80, "example.com", "example.com", "/")
        );
        let r = url("wss://example.com/");
        assert_eq!(
            (r.secure, r.port, r.host.as_str()),
            (true, 443, "example.com")
        );
        let r = url("WSS://example.com:443/x");
        assert_eq!(
            (r.secure, r.port, r.host.as_str()),
            (true, 443, "example.com")
        );
        let r = url("ws://example.com:443/x");
        assert_eq!((r.port, r.host.as_str()), (443, "example.com:443"));
        let r = url("ws://example.com:/x");
        assert_eq!((r.port, r.host.as_str()), (80, "example.com"));
    }

    #[test]
    fn url_ipv6_port_path_query() {
        let r = url("ws://[::1]:9001/chat/room?token=a%20b&x=1");
        assert_eq!(r.hostname, "::1");
        assert_eq!(r.host, "[::1]:9001");
        assert_eq!(r.port, 9001);
        assert_eq!(r.target, "/chat/room?token=a%20b&x=1");
        let r = url("wss://[2001:db8::ffff:192.0.2.1]");
        assert_eq!(
            (r.hostname.as_str(), r.host.as_str(), r.port),
            (
                "2001:db8::ffff:192.0.2.1",
                "[2001:db8::ffff:192.0.2.1]",
                443
            )
        );
        let r = url("ws://h?q=1");
        assert_eq!(r.target, "/?q=1");
        let r = url("ws://h/a b/é");
        assert_eq!(r.target, "/a%20b/%C3%A9");
    }

    #[test]
    fn url_rejections() {
        for (bad, why) in [
            ("ws://example.com/#frag", "fragments are not allowed"),
            ("http://example.com/", "scheme must be ws or wss"),
            ("example.com", "expected ws:// or wss://"),
            ("ws:///path", "missing host"),
            ("ws://", "missing host"),
            ("ws://user:pw@example.com/", "user info is not supported"),
            ("ws://example.com:0/", "port out of range"),
            ("ws://example.com:65536/", "port out of range"),
            ("ws://example.com:+80/", "port is not a number"),
            ("ws://example.com:80:80/", "port is not a number"),
            ("ws://[::1/", "unclosed IPv6 bracket"),
            ("ws://[::1]x/", "unexpected text after IPv6 address"),
            ("ws://[example.com]/", "invalid IPv6 address"),
            ("ws://exa mple.com/", "invalid character in host"),
            ("ws://exa\r\nmple.com/", "invalid character in host"),
        ] {
            assert_eq!(
                ClientRequest::from_url(bad),
                Err(HandshakeError::InvalidUrl(why)),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_bytes() {
        let request = url("ws://example.com:8080/chat?x=1")
            .with_origin("http://example.com")
            .with_protocol("chat")
            .with_protocol("superchat")
            .with_protocol("not a token")
            .with_extension(
                ExtensionOffer::new("permessage-deflate")
                    .with_param("client_max_window_bits", None),
            )
            .with_header("Authorization", "Bearer t")
            .with_header("X-Evil", "a\r\nX-Injected: 1");
        let mut out = Vec::new();
        request.write(KEY, &mut out);
        assert_eq!(
            core::str::from_utf8(&out).unwrap(),
            "GET /chat?x=1 HTTP/1.1\r\n\
             Host: example.com:8080\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Origin: http://example.com\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Authorization: Bearer t\r\n\
             \r\n"
        );
    }

    #[test]
    fn request_write_defends_public_fields() {
        let mut request = url("ws://h/");
        request.target = "x y\r\n".into();
        let mut out = Vec::new();
        request.write(KEY, &mut out);
        assert!(out.starts_with(b"GET /x%20y%0D%0A HTTP/1.1\r\n"));
    }

    fn response(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n"
        )
    }

    fn offering() -> ClientRequest {
        url("ws://h/")
            .with_protocol("chat")
            .with_protocol("superchat")
            .with_extension(ExtensionOffer::new("permessage-deflate"))
    }

    #[test]
    fn valid_response_with_protocol_and_extension() {
        let head = response(
            "Sec-WebSocket-Protocol: superchat\r\n\
             Sec-WebSocket-Extensions: Permessage-Deflate; server_no_context_takeover\r\n\
             Server: test\r\n",
        );
        let r = Response::parse(head.as_bytes(), KEY, &offering()).unwrap();
        assert_eq!(r.status, 101);
        assert_eq!(r.protocol.as_deref(), Some("superchat"));
        assert_eq!(
            r.extensions,
            vec![
                ExtensionOffer::new("Permessage-Deflate")
                    .with_param("server_no_context_takeover", None)
            ]
        );
        assert_eq!(r.header("server"), Some(&b"test"[..]));
    }

    #[test]
    fn response_tokens_are_case_insensitive() {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, UPGRADE\r\n\
             sec-websocket-accept: {ACCEPT}\r\n\r\n"
        );
        let r = Response::parse(head.as_bytes(), KEY, &offering()).unwrap();
        assert_eq!(r.protocol, None);
        assert!(r.extensions.is_empty());
    }

    #[test]
    fn response_rejections() {
        let req = offering();
        let parse = |head: &str| Response::parse(head.as_bytes(), KEY, &req).map(|_| ());
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Err(HandshakeError::UnexpectedStatus(200))
        );
        assert_eq!(
            parse(&response("").replace(ACCEPT, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")),
            Err(HandshakeError::AcceptMismatch)
        );
        assert_eq!(
            parse(&response("").replace(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n"), "")),
            Err(HandshakeError::MissingAccept)
        );
        assert_eq!(
            parse(&response(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n"))),
            Err(HandshakeError::MissingAccept)
        );
        assert_eq!(
            parse(&response("").replace("Upgrade: websocket\r\n", "")),
            Err(HandshakeError::NotUpgrade)
        );
        assert_eq!(
            parse(&response("").replace("Connection: Upgrade", "Connection: close")),
            Err(HandshakeError::NotConnectionUpgrade)
        );
        assert_eq!(
            parse(&response("Sec-WebSocket-Protocol: CHAT\r\n")),
            Err(HandshakeError::ProtocolNotOffered("CHAT".into()))
        );
        assert_eq!(
            parse(&response("Sec-WebSocket-Protocol: chat, superchat\r\n")),
            Err(HandshakeError::MultipleProtocols)
        );
        assert_eq!(
            parse(&response(
                "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n"
            )),
            Err(HandshakeError::MultipleProtocols)
        );
        assert_eq!(
            parse(&response(
                "Sec-WebSocket-Extensions: permessage-deflate, x-webkit\r\n"
            )),
            Err(HandshakeError::ExtensionNotOffered("x-webkit".into()))
        );
        assert_eq!(
            parse("HTTP/1.1 101 Switching"),
            Err(HandshakeError::Malformed("incomplete head"))
        );
        // No offer at all: any selection is unsolicited.
        let bare = url("ws://h/");
        assert_eq!(
            Response::parse(
                response("Sec-WebSocket-Protocol: chat\r\n").as_bytes(),
                KEY,
                &bare
            )
            .map(|_| ()),
            Err(HandshakeError::ProtocolNotOffered("chat".into()))
        );
    }

    proptest! {
        #[test]
        fn response_parse_never_panics(head in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Response::parse(&head, KEY, &offering());
        }

        #[test]
        fn from_url_never_panics_and_writes_single_line_targets(s in any::<String>()) {
            if let Ok(request) = ClientRequest::from_url(&s) {
                let mut out = Vec::new();
                request.write(KEY, &mut out);
                let first_line_end = out.iter().position(|&b| b == b'\n').unwrap();
                prop_assert!(!out[..first_line_end - 1].contains(&b'\r'));
            }
        }

        #[test]
        fn urls_from_parts_round_trip(
            host in "[a-z][a-z0-9.-]{0,20}",
            port in 1u16..,
            path in "(/[a-zA-Z0-9._~-]{0,8}){0,4}",
            secure in any::<bool>(),
        ) {
            let scheme = if secure { "wss" } else { "ws" };
            let r = ClientRequest::from_url(&format!("{scheme}://{host}:{port}{path}")).unwrap();
            prop_assert_eq!(&r.hostname, &host);
            prop_assert_eq!(r.port, port);
            prop_assert_eq!(r.target, if path.is_empty() { "/".to_string() } else { path });
        }
    }
}
