//! Property checks of `duplex-core`, shared by the fuzz targets (`fuzz/fuzz_targets/`) and the
//! corpus replay test (`core/tests/fuzz_regressions.rs`).
//!
//! Each public function takes raw bytes and panics when a property fails. Structured inputs are
//! decoded here by a small byte reader rather than by `arbitrary`, so libFuzzer and the stable
//! replay test read a corpus file the same way. This file uses only `duplex_core`, `bytes` and
//! `std`: the core's integration test includes it with `#[path]`. The permessage-deflate checks
//! (`deflate_negotiation`, `deflate_connection`) are in `checks_deflate.rs`, compiled with the
//! `deflate` feature only (the fuzz crate's default, the core's own feature in its tests).
//!
//! # Input formats
//!
//! Integers are little-endian. An input that runs out simply ends: missing operands read as 0.
//!
//! - `frame_decode`, `client_response`: the bytes as they are.
//! - `server_request`, `utf8`: one chunking byte, then the bytes. The chunking byte's low 3 bits
//!   pick the largest chunk (0: everything at once; then 1, 2, 3, 5, 16, 64, 512 bytes), its high
//!   5 bits seed the generator of chunk lengths (empty chunks included).
//! - `mask`: 4-byte key, 8-byte offset, 1 alignment byte (the slice starts that many bytes,
//!   mod 32, into its buffer), 2-byte split point, then the payload.
//! - `server_connection`, `client_connection`: one flags byte, then operations until the input
//!   ends. Flags: [`HANDSHAKE`], [`VARIANT`], [`PING`], [`IDLE`], [`FRAGMENT`], [`TINY`],
//!   [`PROTOCOL`], [`REJECT`]. An operation is one byte `op`; its low 4 bits pick it, its high
//!   4 bits (`hi`) modify it:
//!
//!   | `op & 15` | operation | operands |
//!   |---|---|---|
//!   | 0, 1 | feed bytes (1: through `recv_buf` + `commit`) | `len: u16`, `len` bytes |
//!   | 2 | `send_text` (`hi & 1`: `send(&Message::Text)`) | `len: u8`, `len` bytes (lossy UTF-8) |
//!   | 3 | `send_binary` of the bytes repeated `1 + (hi & 7) * 32` times (`hi & 8`: `send`) | `len: u8`, `len` bytes |
//!   | 4 | `send_ping` | `len: u8`, `len` bytes |
//!   | 5 | `send_pong` | `len: u8`, `len` bytes |
//!   | 6 | `close` | `code: u16`, `len: u8`, `len` bytes (lossy UTF-8) |
//!   | 7 | `begin_message` (`hi & 1`: binary, else text) | |
//!   | 8 | `send_fragment` | `len: u8`, `len` bytes |
//!   | 9 | `finish_message` | `len: u8`, `len` bytes |
//!   | 10 | advance the clock by `ms * 10` ms, `handle_timeout` | `ms: u16` |
//!   | 11 | jump the clock to `poll_timeout()` (if later), `handle_timeout` | |
//!   | 12 | the socket takes `n` bytes of output (`consume`) | `n: u16` |
//!   | 13 | the socket takes all output (`poll_transmit`) | |
//!   | 14 | the peer closes TCP (`receive_eof`) | |
//!   | 15 | feed one frame built from its parts, masked as the peer must (`hi & 1`: the other way; `hi & 2`: 64-bit length form; `hi & 4`: through `recv_buf`) | `b0: u8` (FIN, RSV, opcode as on the wire), `len: u8`, `key: [u8; 4]`, `len` payload bytes |
//!
//!   With [`HANDSHAKE`] a valid upgrade request (server) or 101 response (client) is prepended
//!   to the bytes of the first feed. At the end of the input the peer closes TCP and the
//!   connection must be over.
//! - `deflate_negotiation`, `deflate_connection`: see `checks_deflate.rs`.
//! - `stomp_decode`: see `checks_stomp.rs`.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::Duration;

use bytes::Bytes;
use duplex_core::close::{CloseError, MAX_CLOSE_REASON, parse_close_payload};
use duplex_core::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use duplex_core::handshake::key::{accept_key, is_valid_key};
use duplex_core::handshake::server::{write_accept_response, write_error_response};
use duplex_core::handshake::{find_head_end, is_token};
use duplex_core::mask::{apply_mask, apply_mask_at, apply_mask_bytewise};
use duplex_core::utf8::Utf8Validator;
use duplex_core::{
    Accept, ClientRequest, CloseCode, Config, Connection, ConnectionState, Event, ExtensionOffer,
    HandshakeError, Message, MessageKind, RandomSource, Request, Response, Role, SendError,
};

#[cfg(feature = "deflate")]
#[path = "checks_deflate.rs"]
mod deflate;
#[cfg(feature = "deflate")]
pub use deflate::{deflate_connection, deflate_negotiation};

#[cfg(feature = "channel")]
#[path = "checks_channel.rs"]
mod channel;
#[cfg(feature = "channel")]
pub use channel::channel_decode;

#[cfg(feature = "channel")]
#[path = "checks_api.rs"]
mod api;
#[cfg(feature = "channel")]
pub use api::api_request;

#[cfg(feature = "stomp")]
#[path = "checks_stomp.rs"]
mod stomp;
#[cfg(feature = "stomp")]
pub use stomp::stomp_decode;

// ------------------------------------------------------------------------------ input reading

/// Reads operands off the front of a fuzz input; past the end every number is 0.
#[derive(Debug)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { rest: data }
    }

    fn next(&mut self) -> Option<u8> {
        let (&byte, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(byte)
    }

    fn u8(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for byte in &mut out {
            *byte = self.u8();
        }
        out
    }

    /// Up to `n` bytes: fewer when the input ends first.
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        taken
    }

    /// A length byte, then that many bytes.
    fn counted(&mut self) -> &'a [u8] {
        let len = self.u8();
        self.bytes(usize::from(len))
    }

    fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.rest.len())
    }
}

/// Splits inputs into chunks as reads from a socket would, driven by one byte (see the module
/// documentation).
#[derive(Debug)]
struct Chunker {
    /// Largest chunk; 0 means "all at once".
    max: usize,
    state: u32,
}

impl Chunker {
    fn new(seed: u8) -> Self {
        const MAX: [usize; 8] = [0, 1, 2, 3, 5, 16, 64, 512];
        Chunker {
            max: MAX[usize::from(seed & 7)],
            state: 0x9E37_79B9 ^ u32::from(seed >> 3),
        }
    }

    fn split(self, data: &[u8]) -> Vec<&[u8]> {
        self.split_at_most(data, usize::MAX)
    }

    /// As [`Chunker::split`], in at most `most` chunks: the last one takes the rest.
    fn split_at_most(mut self, data: &[u8], most: usize) -> Vec<&[u8]> {
        let mut chunks = Vec::new();
        let mut rest = data;
        loop {
            let len = if self.max == 0 || chunks.len() + 1 >= most {
                rest.len()
            } else {
                self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                ((self.state >> 16) as usize % (self.max + 1)).min(rest.len())
            };
            let (chunk, tail) = rest.split_at(len);
            chunks.push(chunk);
            rest = tail;
            if rest.is_empty() {
                return chunks;
            }
        }
    }
}

// ------------------------------------------------------------------------------ frame_decode

/// `FrameHeader::decode` on arbitrary bytes: a decoded header is at most `MAX_HEADER_LEN`
/// bytes, satisfies the structural rules, and encodes to bytes that decode to the same header
/// (the very input bytes when the input used the shortest length form). Shorter prefixes need
/// more bytes, and an error is reported from the first prefix that proves it, unchanged after.
pub fn frame_decode(data: &[u8]) {
    match FrameHeader::decode(data) {
        Ok(None) => assert!(
            data.len() < MAX_HEADER_LEN,
            "{} bytes cannot still be an incomplete header: {data:02x?}",
            data.len()
        ),
        Ok(Some((header, len))) => {
            assert!(
                (2..=MAX_HEADER_LEN).contains(&len) && len <= data.len(),
                "header length {len} out of range for {data:02x?}"
            );
            assert_eq!(header.payload_len >> 63, 0, "{header:?}");
            if header.opcode.is_control() {
                assert!(
                    header.fin && header.payload_len <= MAX_CONTROL_PAYLOAD as u64,
                    "control frame must be final and short: {header:?}"
                );
            }
            let encoded = header.encode();
            assert_eq!(encoded.len(), header.encoded_len(), "{header:?}");
            assert!(
                encoded.len() <= len,
                "the shortest form is longer than the input's"
            );
            assert_eq!(
                FrameHeader::decode(encoded.as_slice()),
                Ok(Some((header, encoded.len()))),
                "re-encoded {header:?} as {:02x?}",
                encoded.as_slice()
            );
            if encoded.len() == len {
                assert_eq!(encoded.as_slice(), &data[..len], "same form, other bytes");
            }
            let mut written = Vec::new();
            header.write_to(&mut written);
            assert_eq!(written, encoded.as_slice());
            for end in 0..len {
                assert_eq!(
                    FrameHeader::decode(&data[..end]),
                    Ok(None),
                    "prefix of {end} bytes of {data:02x?}"
                );
            }
        }
        Err(error) => {
            assert_eq!(error.close_code(), CloseCode::Protocol);
            let mut failed = false;
            for end in 0..=data.len().min(MAX_HEADER_LEN) {
                match FrameHeader::decode(&data[..end]) {
                    Ok(None) => assert!(!failed, "error, then more bytes needed: {data:02x?}"),
                    Err(e) => {
                        assert_eq!(e, error, "prefix of {end} bytes of {data:02x?}");
                        failed = true;
                    }
                    Ok(Some(_)) => panic!("a prefix decodes but {data:02x?} does not"),
                }
            }
            assert!(
                failed,
                "error not proven by the first {MAX_HEADER_LEN} bytes"
            );
        }
    }
}

// ------------------------------------------------------------------------------ handshakes

const TERMINATOR: &[u8] = b"\r\n\r\n";

/// The oracle for `find_head_end`: the end of the first `\r\n\r\n` at or after `from`.
fn naive_head_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(TERMINATOR.len())
        .position(|window| window == TERMINATOR)
        .map(|pos| from + pos + TERMINATOR.len())
}

/// `find_head_end` in one call and fed in chunks agree with a plain search, and after a hit it
/// looks for the next head.
fn check_head_scan(chunker: Chunker, buf: &[u8]) -> Option<usize> {
    let expected = naive_head_end(buf, 0);
    let mut scanned = 0;
    assert_eq!(find_head_end(buf, &mut scanned), expected, "one-shot scan");
    if let Some(end) = expected {
        assert_eq!(scanned, end);
        assert_eq!(
            find_head_end(buf, &mut scanned),
            naive_head_end(buf, end),
            "the scan after a hit must look for the next head"
        );
    }

    let mut scanned = 0;
    let mut fed = 0;
    let mut found = None;
    for chunk in chunker.split(buf) {
        fed += chunk.len();
        let result = find_head_end(&buf[..fed], &mut scanned);
        assert!(scanned <= fed, "scanned {scanned} past the {fed} bytes fed");
        // The first head end is in the bytes fed so far exactly when it ends within them.
        let due = expected.filter(|&end| end <= fed);
        assert_eq!(result, due, "after {fed} bytes");
        if result.is_some() {
            found = result;
            break;
        }
    }
    assert_eq!(found, expected, "incremental scan");
    expected
}

/// `Request::parse` on arbitrary bytes (chunked head scanning first). A parsed request is
/// self-consistent; one that validates as an upgrade yields a key whose 101 response a client
/// accepts; every error maps to an HTTP status and an error response a client recognises.
pub fn server_request(data: &[u8]) {
    let mut reader = Reader::new(data);
    let chunker = Chunker::new(reader.u8());
    let input = reader.rest();
    let end = check_head_scan(chunker, input);

    // What a connection parses: the head up to its end.
    let head = end.map_or(input, |end| &input[..end]);
    let parsed = Request::parse(head);
    if let Ok(request) = &parsed {
        // Bytes after a complete head are ignored.
        assert_eq!(Request::parse(input).as_ref(), Ok(request));
    }
    match parsed {
        Ok(request) => check_request(&request),
        Err(error) => check_server_error(&error),
    }
}

fn check_request(request: &Request) {
    match request.query() {
        Some(query) => assert_eq!(request.target(), format!("{}?{query}", request.path())),
        None => assert_eq!(request.target(), request.path()),
    }
    for name in ["Host", "Origin", "Upgrade", "sec-websocket-key", "X"] {
        assert_eq!(request.header(name), request.header_values(name).next());
        assert_eq!(
            request.header_str(name),
            request
                .header(name)
                .and_then(|value| std::str::from_utf8(value).ok())
        );
    }
    let _ = (request.host(), request.origin(), request.websocket_key());
    let protocols = request.subprotocols();
    assert!(protocols.iter().all(|p| is_token(p)), "{protocols:?}");
    if let Ok(offers) = request.extensions() {
        let formatted = ExtensionOffer::list_to_header_value(&offers);
        assert_eq!(
            ExtensionOffer::parse_list(&formatted).as_ref(),
            Ok(&offers),
            "extension offers formatted as {formatted:?}"
        );
    }

    match request.validate_upgrade() {
        Ok(key) => {
            assert_eq!(request.method(), "GET");
            assert!(request.minor_version() >= 1);
            assert!(request.is_websocket_upgrade());
            assert!(is_valid_key(key.as_bytes()), "{key:?}");
            assert_eq!(request.websocket_key(), Some(key));
            assert!(request.extensions().is_ok());

            // The 101 for it satisfies a client that offered the same subprotocols.
            let mut client = ClientRequest::from_url("ws://example.com/").expect("valid URL");
            client.protocols.clone_from(&protocols);
            let accept = Accept {
                protocol: protocols.first().cloned(),
                ..Accept::default()
            };
            let mut response = Vec::new();
            write_accept_response(key, &accept, &mut response);
            assert_eq!(naive_head_end(&response, 0), Some(response.len()));
            match Response::parse(&response, key, &client) {
                Ok(parsed) => assert_eq!(parsed.protocol, accept.protocol),
                Err(error) => panic!("the server's 101 is refused by the client: {error}"),
            }
        }
        Err(error) => check_server_error(&error),
    }
}

/// A server answers every handshake error with a plain HTTP error response.
fn check_server_error(error: &HandshakeError) {
    let status = error.http_status();
    assert!(
        matches!(status, 400 | 405 | 426 | 431),
        "{error:?} answered with {status}"
    );
    let mut response = Vec::new();
    write_error_response(error, &mut response);
    let end = naive_head_end(&response, 0).expect("error response has a head");
    let client = ClientRequest::from_url("ws://example.com/").expect("valid URL");
    match Response::parse(&response[..end], "", &client) {
        Err(HandshakeError::UnexpectedStatus(s)) => assert_eq!(s, status),
        other => panic!("error response read back as {other:?}"),
    }
    assert_eq!(
        content_length(&response[..end]),
        response.len() - end,
        "Content-Length"
    );
}

/// The Content-Length of a response head this crate wrote.
fn content_length(head: &[u8]) -> usize {
    let text = std::str::from_utf8(head).expect("response head is UTF-8");
    text.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .expect("response head has a Content-Length")
}

/// RFC 6455's sample key and the accept value derived from it.
const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const OTHER_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAA==";

fn client_request() -> ClientRequest {
    ClientRequest::from_url("ws://example.com/chat")
        .expect("valid URL")
        .with_protocol("chat")
        .with_protocol("superchat")
        .with_extension(
            ExtensionOffer::new("permessage-deflate").with_param("client_max_window_bits", None),
        )
}

/// `Response::parse` on arbitrary bytes with a fixed request and key. An accepted response is a
/// 101 whose accept value matches the key (and only that key), with an offered subprotocol and
/// offered extensions only.
pub fn client_response(data: &[u8]) {
    let request = client_request();
    let mut scanned = 0;
    let end = find_head_end(data, &mut scanned);
    assert_eq!(end, naive_head_end(data, 0));
    let head = end.map_or(data, |end| &data[..end]);

    let response = match Response::parse(head, CLIENT_KEY, &request) {
        Ok(response) => response,
        Err(error) => {
            let _ = (error.to_string(), error.http_status());
            return;
        }
    };
    assert_eq!(response.status, 101);
    let accepts: Vec<&[u8]> = response
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Accept"))
        .map(|h| h.value.as_slice())
        .collect();
    assert_eq!(accepts.len(), 1, "exactly one Sec-WebSocket-Accept");
    assert_eq!(
        trim(accepts[0]),
        accept_key(CLIENT_KEY.as_bytes()).as_bytes()
    );
    if let Some(protocol) = &response.protocol {
        assert!(request.protocols.contains(protocol), "{protocol:?}");
    }
    for extension in &response.extensions {
        assert!(
            request
                .extensions
                .iter()
                .any(|offer| offer.name.eq_ignore_ascii_case(&extension.name)),
            "{extension:?} was not offered"
        );
    }
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some(accepts[0]),
        "header() finds the first value"
    );

    // Bound to the key: any other key is refused.
    assert_eq!(
        Response::parse(head, OTHER_KEY, &request).err(),
        Some(HandshakeError::AcceptMismatch)
    );
    // Bound to the offers: a request that offered nothing refuses what was chosen.
    let bare = ClientRequest::from_url("ws://example.com/chat").expect("valid URL");
    let expected = match (&response.protocol, response.extensions.first()) {
        (Some(protocol), _) => Some(HandshakeError::ProtocolNotOffered(protocol.clone())),
        (None, Some(extension)) => {
            Some(HandshakeError::ExtensionNotOffered(extension.name.clone()))
        }
        (None, None) => None,
    };
    assert_eq!(Response::parse(head, CLIENT_KEY, &bare).err(), expected);
    // Bytes after a complete head are ignored.
    let whole = Response::parse(data, CLIENT_KEY, &request).expect("same head, same verdict");
    assert_eq!(
        (
            whole.status,
            &whole.headers,
            &whole.protocol,
            &whole.extensions
        ),
        (
            response.status,
            &response.headers,
            &response.protocol,
            &response.extensions
        )
    );
}

/// HTTP optional whitespace trimmed off both ends.
fn trim(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

// ------------------------------------------------------------------------------ utf8

/// Whether `lead` can start a UTF-8 sequence at all.
fn can_lead(lead: u8) -> bool {
    matches!(lead, 0x00..=0x7F | 0xC2..=0xF4)
}

/// `Utf8Validator` fed in chunks agrees with `std::str::from_utf8` on the whole: the same
/// verdict, the same `valid_up_to`, and it fails on the very chunk holding the byte that proves
/// the text invalid. It starts over after an error or a finish, so a second run on the same
/// validator gives the same result.
pub fn utf8(data: &[u8]) {
    let mut reader = Reader::new(data);
    let chunker = Chunker::new(reader.u8());
    let text = reader.rest();
    let chunks = chunker.split(text);

    let expected = match std::str::from_utf8(text) {
        Ok(_) => None,
        Err(error) => {
            let start = error.valid_up_to();
            let call = match error.error_len() {
                // An impossible lead byte is its own proof; otherwise the byte after the
                // longest valid prefix of the sequence is.
                Some(len) => {
                    let proof = if can_lead(text[start]) {
                        start + len
                    } else {
                        start
                    };
                    let mut end = 0;
                    chunks
                        .iter()
                        .position(|chunk| {
                            end += chunk.len();
                            proof < end
                        })
                        .expect("the proof byte is in some chunk")
                }
                None => chunks.len(), // truncated: `finish` fails
            };
            Some((call, start))
        }
    };

    let mut validator = Utf8Validator::new();
    for round in 0..2 {
        let mut failure = None;
        let mut fed = 0;
        for (call, chunk) in chunks.iter().enumerate() {
            fed += chunk.len();
            match validator.feed(chunk) {
                Ok(()) => assert_eq!(
                    validator.is_at_boundary(),
                    std::str::from_utf8(&text[..fed]).is_ok(),
                    "boundary after {fed} bytes"
                ),
                Err(error) => {
                    failure = Some((call, error.valid_up_to));
                    break;
                }
            }
        }
        if failure.is_none() {
            if let Err(error) = validator.finish() {
                failure = Some((chunks.len(), error.valid_up_to));
            }
        }
        assert_eq!(failure, expected, "round {round}, chunks {chunks:02x?}");
        assert!(validator.is_at_boundary(), "starts over after the message");
    }
}

// ------------------------------------------------------------------------------ mask

/// `apply_mask_at` agrees with `apply_mask_bytewise` and a direct formula for any data, key,
/// offset and alignment, touches nothing outside its slice, works in pieces, and undoes itself.
pub fn mask(data: &[u8]) {
    let mut reader = Reader::new(data);
    let key: [u8; 4] = reader.array();
    let offset = reader.u64() as usize;
    let align = usize::from(reader.u8() % 32);
    let split = usize::from(reader.u16());
    let payload = reader.rest();
    let len = payload.len();
    let range = align..align + len;

    let mut backing = vec![0xA5; align + len + 32];
    backing[range.clone()].copy_from_slice(payload);

    let mut fast = backing.clone();
    apply_mask_at(&mut fast[range.clone()], key, offset);
    let mut slow = backing.clone();
    apply_mask_bytewise(&mut slow[range.clone()], key, offset);
    assert_eq!(fast, slow, "key {key:02x?} offset {offset} align {align}");
    for (i, byte) in payload.iter().enumerate() {
        assert_eq!(
            fast[align + i],
            byte ^ key[(offset % 4 + i % 4) % 4],
            "byte {i}"
        );
    }

    let mut at_zero = backing.clone();
    apply_mask_at(&mut at_zero[range.clone()], key, 0);
    let mut plain = backing.clone();
    apply_mask(&mut plain[range.clone()], key);
    assert_eq!(at_zero, plain, "apply_mask is apply_mask_at with offset 0");

    // In two pieces, as a payload arriving in two reads.
    let split = split % (len + 1);
    let mut pieces = backing.clone();
    let (head, tail) = pieces[range.clone()].split_at_mut(split);
    apply_mask_at(head, key, offset);
    apply_mask_at(tail, key, offset.wrapping_add(split));
    assert_eq!(pieces, fast, "split at {split}");

    apply_mask_at(&mut fast[range], key, offset);
    assert_eq!(fast, backing, "masking twice is the identity");
}

// ------------------------------------------------------------------------------ connections

/// Prepend a valid upgrade request (server) or 101 response (client) to the first feed.
pub const HANDSHAKE: u8 = 0x01;
/// Server: Chromium's upgrade request instead of RFC 6455's sample. Client: the 101 selects
/// the subprotocol `chat`.
pub const VARIANT: u8 = 0x02;
/// Ping every 30 s; two missed pongs fail the connection.
pub const PING: u8 = 0x04;
/// Close after 60 s without receiving anything.
pub const IDLE: u8 = 0x08;
/// Send messages in frames of at most 100 bytes.
pub const FRAGMENT: u8 = 0x10;
/// Frames of at most 64 bytes and messages of at most 200 (instead of 16 KiB and 64 KiB, or
/// 16 KiB with permessage-deflate).
pub const TINY: u8 = 0x20;
/// Server: accept with the first offered subprotocol. Client: no handshake timeout.
pub const PROTOCOL: u8 = 0x40;
/// Server: refuse upgrade requests with 403.
pub const REJECT: u8 = 0x80;

const MAX_FRAME: usize = 16 << 10;
const MAX_MESSAGE: usize = 64 << 10;
/// With permessage-deflate: a bomb need not be large to go over the limit.
const DEFLATE_MAX_MESSAGE: usize = 16 << 10;
const TINY_MAX_FRAME: usize = 64;
const TINY_MAX_MESSAGE: usize = 200;
const MAX_HEAD: usize = 2 << 10;
const FRAGMENT_SIZE: usize = 100;
const SECOND: Duration = Duration::from_secs(1);

/// Largest frame a connection sends on its own (a close frame, or a ping): 2-byte header,
/// masking key, 125-byte control payload.
const CONTROL_FRAME_MAX: usize = 2 + 4 + MAX_CONTROL_PAYLOAD;
/// Most bytes a compressed message of `len` bytes can take: zlib's bound for any window and
/// level (9-bit literals, a block header every 64 bytes at worst), plus the flush.
fn deflate_bound(len: usize) -> usize {
    len + len / 8 + len / 64 + 32
}

/// Largest HTTP response a server writes during the handshake: the error responses and the 101
/// are under 300 bytes of fixed text, plus at most one piece copied from the head (a method
/// name in the error body, or a selected subprotocol), itself at most the head.
const HANDSHAKE_RESPONSE_MAX: usize = 512 + MAX_HEAD;

const RFC_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
    Host: server.example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: http://example.com\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Version: 13\r\n\
    \r\n";

const CHROMIUM_REQUEST: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
    Host: localhost:9001\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: http://localhost:9001\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-US,en;q=0.9\r\n\
    Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    \r\n";

/// A server `Connection` driven by a fuzz input (format in the module documentation), with
/// `max_message_size` 64 KiB so the limits are reachable. Checked after every operation:
///
/// - events follow `Event`'s documented order: `Request` (server only), `Open`, messages, pings
///   and pongs, at most one `Error`, exactly one `Closed`, then nothing ever again;
/// - every `Error`'s and `Closed`'s code is valid on the wire or local-only (1005, 1006, 1015);
///   after an `Error`, the `Closed` right behind it carries the same code;
/// - `state()` agrees with the events delivered, and a closed server is terminated at once;
/// - each call returns what the API promises in that state (refused calls queue nothing) and
///   queues exactly the frames expected (fragmented by the configured size);
/// - the output grows only as much as justified (see `Driver::receive_growth`, `Driver::timeout`),
///   not at all on EOF, and not at all once `Closed` has been delivered;
/// - once events are taken, the receive buffer holds at most the head limit or the frame limit;
/// - `handle_timeout(now)` leaves no deadline at or before `now`;
/// - read as the peer reads it, the output is a valid handshake then valid frames carrying, in
///   order and unchanged, every message the connection accepted to send (see `Wire`);
/// - when the input ends the peer closes TCP: the connection ends, and stays silent after.
pub fn server_connection(data: &[u8]) {
    connection(Role::Server, data);
}

/// A client `Connection` driven by a fuzz input; the same checks as [`server_connection`].
pub fn client_connection(data: &[u8]) {
    connection(Role::Client, data);
}

fn connection(role: Role, data: &[u8]) {
    let mut reader = Reader::new(data);
    let flags = reader.u8();
    Driver::new(role, flags, Extras::default()).run(&mut reader);
}

/// What a target adds to the flags byte's setup of a [`Driver`].
#[derive(Debug, Default)]
struct Extras {
    /// permessage-deflate: the connection's configuration, the peer's side of the negotiation.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<deflate::Session>>,
}

/// Deterministic stand-in for `getrandom`.
fn random_source() -> RandomSource {
    let mut state = 0x2545_F491_u32;
    Box::new(move |buf: &mut [u8]| {
        for byte in buf {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *byte = (state >> 24) as u8;
        }
    })
}

/// How an operation may change the length of the output.
#[derive(Debug, Clone, Copy)]
enum Growth {
    Exactly(usize),
    AtMost(usize),
    Shrinks(usize),
}

/// What the events seen so far allow next (RFC order documented on `Event`).
#[derive(Debug, Default)]
struct Seen {
    request: bool,
    open: bool,
    error: bool,
    closed: bool,
}

/// A message being streamed with `begin_message`: its kind, the bytes accepted so far, and
/// whether it goes out compressed.
#[derive(Debug)]
struct Stream {
    kind: MessageKind,
    sent: Vec<u8>,
    compressed: bool,
}

/// Plays the driver and the application around one connection, and checks what it sees.
#[derive(Debug)]
struct Driver {
    conn: Connection,
    role: Role,
    flags: u8,
    now: Duration,
    max_frame: usize,
    max_message: usize,
    /// Bytes to put in front of the first feed.
    prefix: Option<Vec<u8>>,
    seen: Seen,
    stream: Option<Stream>,
    /// Everything the socket took from the output, checked as the peer would read it.
    wire: Wire,
    /// permessage-deflate: what was agreed, the peer's compressor, the messages it sent.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<deflate::Session>>,
}

impl Driver {
    fn new(role: Role, flags: u8, extras: Extras) -> Self {
        #[cfg(not(feature = "deflate"))]
        let Extras {} = extras;
        #[cfg(feature = "deflate")]
        let Extras { deflate: session } = extras;
        #[cfg(feature = "deflate")]
        let deflate = session.is_some();
        #[cfg(not(feature = "deflate"))]
        let deflate = false;
        let tiny = flags & TINY != 0;
        let (max_frame, max_message) = if tiny {
            (TINY_MAX_FRAME, TINY_MAX_MESSAGE)
        } else if deflate {
            (MAX_FRAME, DEFLATE_MAX_MESSAGE)
        } else {
            (MAX_FRAME, MAX_MESSAGE)
        };
        let mut config = Config::default()
            .with_max_frame_size(max_frame)
            .with_max_message_size(max_message)
            .with_max_head_size(MAX_HEAD)
            .with_handshake_timeout(Some(10 * SECOND))
            .with_close_timeout(5 * SECOND);
        if flags & PING != 0 {
            config = config
                .with_ping_interval(Some(30 * SECOND))
                .with_max_missed_pongs(2);
        }
        if flags & IDLE != 0 {
            config = config.with_idle_timeout(Some(60 * SECOND));
        }
        if flags & FRAGMENT != 0 {
            config = config.with_fragment_size(Some(FRAGMENT_SIZE));
        }
        #[cfg(feature = "deflate")]
        if let Some(session) = &session {
            config = session.configure(config);
        }
        let now = Duration::ZERO;
        let (conn, prefix) = match role {
            Role::Server => {
                let request = if flags & VARIANT != 0 {
                    CHROMIUM_REQUEST
                } else {
                    RFC_REQUEST
                };
                #[cfg(feature = "deflate")]
                let request = &match &session {
                    Some(session) => session.request(request),
                    None => request.to_vec(),
                };
                (Connection::server(config, now), request.to_vec())
            }
            Role::Client => {
                if flags & PROTOCOL != 0 {
                    config = config.with_handshake_timeout(None);
                }
                let conn = Connection::client(
                    ClientRequest::from_url("ws://example.com/chat")
                        .expect("valid URL")
                        .with_protocol("chat")
                        .with_protocol("superchat"),
                    config,
                    random_source(),
                    now,
                );
                #[cfg(feature = "deflate")]
                let extension = session.as_ref().and_then(|s| s.answer(conn.output()));
                #[cfg(not(feature = "deflate"))]
                let extension: Option<String> = None;
                let response =
                    switching_protocols(conn.output(), flags & VARIANT != 0, extension.as_deref());
                (conn, response)
            }
        };
        #[cfg_attr(not(feature = "deflate"), allow(unused_mut))]
        let mut wire = Wire::new(role);
        #[cfg(feature = "deflate")]
        if session.is_some() {
            wire.deflate = Some(deflate::WireInflate::default());
        }
        assert_eq!(conn.role(), role);
        assert_eq!(conn.state(), ConnectionState::Connecting);
        Driver {
            conn,
            role,
            flags,
            now,
            max_frame,
            max_message,
            prefix: (flags & HANDSHAKE != 0).then_some(prefix),
            seen: Seen::default(),
            stream: None,
            wire,
            #[cfg(feature = "deflate")]
            deflate: session,
        }
    }

    fn run(mut self, reader: &mut Reader<'_>) {
        while let Some(op) = reader.next() {
            self.step(op, reader);
        }
        self.end();
    }

    fn output_len(&self) -> usize {
        self.conn.output().len()
    }

    fn is_open(&self) -> bool {
        self.conn.state() == ConnectionState::Open
    }

    fn step(&mut self, op: u8, reader: &mut Reader<'_>) {
        let before = self.output_len();
        let was_connecting = self.conn.state() == ConnectionState::Connecting;
        let was_closed = self.seen.closed;
        let hi = op >> 4;
        let growth = match op & 0x0F {
            kind @ (0 | 1) => {
                self.untrack();
                let len = usize::from(reader.u16());
                let bytes = self.with_prefix(reader.bytes(len));
                self.feed(&bytes, kind == 1);
                self.receive_growth(bytes.len(), was_connecting)
            }
            2 => {
                let text = String::from_utf8_lossy(reader.counted());
                self.send_text(&text, hi & 1 != 0)
            }
            3 => {
                let piece = reader.counted();
                let data = piece.repeat(1 + usize::from(hi & 7) * 32);
                self.send_binary(&data, hi & 8 != 0)
            }
            kind @ (4 | 5) => {
                let payload = reader.counted();
                self.send_control(kind == 4, payload)
            }
            6 => {
                let code = CloseCode::from_u16(reader.u16());
                let reason = String::from_utf8_lossy(reader.counted());
                self.close(code, &reason)
            }
            7 => {
                let kind = if hi & 1 != 0 {
                    MessageKind::Binary
                } else {
                    MessageKind::Text
                };
                self.begin_message(kind)
            }
            kind @ (8 | 9) => {
                let data = reader.counted();
                self.stream_piece(data, kind == 9)
            }
            10 => {
                let advance = Duration::from_millis(u64::from(reader.u16()) * 10);
                self.timeout(self.now + advance)
            }
            11 => {
                let deadline = self.conn.poll_timeout().unwrap_or(self.now);
                self.timeout(deadline.max(self.now))
            }
            12 => {
                let n = usize::from(reader.u16());
                let taken = n.min(before);
                self.wire.push(&self.conn.output()[..taken]);
                self.conn.consume(n);
                Growth::Shrinks(taken)
            }
            13 => {
                match self.conn.poll_transmit() {
                    Some(bytes) => {
                        assert_eq!(bytes.len(), before);
                        self.wire.push(&bytes);
                    }
                    None => assert_eq!(before, 0, "poll_transmit left output behind"),
                }
                Growth::Shrinks(before)
            }
            14 => {
                self.conn.receive_eof(self.now);
                Growth::Exactly(0)
            }
            #[cfg(feature = "deflate")]
            15 if hi & 8 != 0 && self.deflate.is_some() => {
                self.feed_compressed(hi, reader, was_connecting)
            }
            _ => {
                self.untrack();
                let frame = self.build_frame(hi, reader);
                let bytes = self.with_prefix(&frame);
                self.feed(&bytes, hi & 4 != 0);
                self.receive_growth(bytes.len(), was_connecting)
            }
        };
        self.drain();

        let after = self.output_len();
        let growth = match growth {
            // "Closed is reported exactly once, after which nothing but the pending output is
            // ever produced."
            Growth::Exactly(_) | Growth::AtMost(_) if was_closed => Growth::Exactly(0),
            growth => growth,
        };
        match growth {
            Growth::Exactly(n) => assert_eq!(after, before + n, "output after op {op:#04x}"),
            Growth::AtMost(n) => assert!(
                after <= before + n,
                "op {op:#04x} grew the output from {before} to {after} bytes (at most {n} allowed)"
            ),
            Growth::Shrinks(n) => assert_eq!(after, before - n, "output after op {op:#04x}"),
        }
        assert_eq!(self.conn.buffered_amount(), after);
    }

    /// The peer sends bytes of its own making: with permessage-deflate, the messages it sends
    /// are no longer known.
    fn untrack(&mut self) {
        #[cfg(feature = "deflate")]
        if let Some(session) = &mut self.deflate {
            session.untrack();
        }
    }

    fn with_prefix(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = self.prefix.take().unwrap_or_default();
        out.extend_from_slice(bytes);
        out
    }

    /// How much `n` received bytes may add to the output. A server answers a masked ping
    /// (header >= 6 bytes) with an unmasked pong (header 2) of the same payload, so never more
    /// than it received; a client answers an unmasked ping (>= 2 bytes) with a masked pong
    /// 4 bytes longer, at most 3 times what it received. On top: one close frame, and for a
    /// server still in the handshake its HTTP response.
    fn receive_growth(&self, n: usize, was_connecting: bool) -> Growth {
        let handshake = if was_connecting && self.role == Role::Server {
            HANDSHAKE_RESPONSE_MAX
        } else {
            0
        };
        let factor = match self.role {
            Role::Server => 1,
            Role::Client => 3,
        };
        Growth::AtMost(factor * n + CONTROL_FRAME_MAX + handshake)
    }

    /// Feeds bytes the way a driver does, taking every event after each read.
    fn feed(&mut self, bytes: &[u8], lending: bool) {
        if !lending {
            self.conn.receive(self.now, bytes);
            self.drain();
            return;
        }
        let mut rest = bytes;
        loop {
            let buf = self.conn.recv_buf();
            assert!(!buf.is_empty(), "recv_buf lent no room");
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.conn.commit(self.now, n);
            self.drain();
            rest = &rest[n..];
            if rest.is_empty() {
                return;
            }
        }
    }

    /// A frame as the peer would send it: masked by a client, not by a server (`hi & 1` flips
    /// that), shortest length form unless `hi & 2` asks for the 64-bit one.
    fn build_frame(&self, hi: u8, reader: &mut Reader<'_>) -> Vec<u8> {
        let first = reader.u8();
        let len = reader.u8();
        let key: [u8; 4] = reader.array();
        let mut payload = reader.bytes(usize::from(len)).to_vec();
        let masked = (self.role == Role::Server) != (hi & 1 != 0);
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut frame = vec![first];
        if hi & 2 != 0 {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        } else if payload.len() < 126 {
            frame.push(mask_bit | payload.len() as u8);
        } else {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        if masked {
            frame.extend_from_slice(&key);
            apply_mask_bytewise(&mut payload, key, 0);
        }
        frame.extend_from_slice(&payload);
        frame
    }

    // -------------------------------------------------------------------------- sending

    /// Encoded size of one frame we send.
    fn frame_len(&self, payload: usize) -> usize {
        let extended = match payload {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        let mask = if self.role == Role::Client { 4 } else { 0 };
        2 + extended + mask + payload
    }

    /// Encoded size of a message sent with `send_*`, split by the fragment size if any.
    fn message_len(&self, payload: usize) -> usize {
        if self.flags & FRAGMENT != 0 && payload > FRAGMENT_SIZE {
            let full = payload / FRAGMENT_SIZE;
            let rest = payload % FRAGMENT_SIZE;
            full * self.frame_len(FRAGMENT_SIZE) + if rest > 0 { self.frame_len(rest) } else { 0 }
        } else {
            self.frame_len(payload)
        }
    }

    fn expect_data_send(&self) -> Result<(), SendError> {
        if !self.is_open() {
            Err(SendError::NotOpen)
        } else if self.stream.is_some() {
            Err(SendError::StreamInProgress)
        } else {
            Ok(())
        }
    }

    /// Whether a message of `len` bytes (`None`: a streamed message) goes out compressed: only
    /// with permessage-deflate agreed, our window at least 9 bits (zlib cannot compress with
    /// 8), and at least the configured threshold.
    fn compresses(&self, len: Option<usize>) -> bool {
        #[cfg(feature = "deflate")]
        return self
            .deflate
            .as_ref()
            .is_some_and(|session| session.compresses(self.role, len));
        #[cfg(not(feature = "deflate"))]
        let _ = len;
        #[cfg(not(feature = "deflate"))]
        return false;
    }

    /// Output of one message sent with `send_*`: exact when sent as it is, bounded when
    /// compressed.
    fn message_growth(&self, len: usize, compressed: bool) -> Growth {
        if compressed {
            Growth::AtMost(self.message_len(deflate_bound(len)))
        } else {
            Growth::Exactly(self.message_len(len))
        }
    }

    /// Checks a send's result against the model; a refused send queues nothing.
    fn judge(
        what: &str,
        result: Result<(), SendError>,
        expected: Result<(), SendError>,
        growth: Growth,
    ) -> Growth {
        assert_eq!(result, expected, "{what}");
        if result.is_ok() {
            growth
        } else {
            Growth::Exactly(0)
        }
    }

    fn send_text(&mut self, text: &str, via_message: bool) -> Growth {
        let expected = self.expect_data_send();
        let compressed = self.compresses(Some(text.len()));
        let result = if via_message {
            self.conn.send(&Message::Text(text.into()))
        } else {
            self.conn.send_text(text)
        };
        if result.is_ok() {
            self.wire
                .expect_message(MessageKind::Text, text.as_bytes(), compressed);
        }
        let growth = self.message_growth(text.len(), compressed);
        Self::judge("send_text", result, expected, growth)
    }

    fn send_binary(&mut self, data: &[u8], via_message: bool) -> Growth {
        let expected = self.expect_data_send();
        let compressed = self.compresses(Some(data.len()));
        let result = if via_message {
            self.conn
                .send(&Message::Binary(Bytes::copy_from_slice(data)))
        } else {
            self.conn.send_binary(data)
        };
        if result.is_ok() {
            self.wire
                .expect_message(MessageKind::Binary, data, compressed);
        }
        let growth = self.message_growth(data.len(), compressed);
        Self::judge("send_binary", result, expected, growth)
    }

    fn send_control(&mut self, ping: bool, payload: &[u8]) -> Growth {
        let expected = if !self.is_open() {
            Err(SendError::NotOpen)
        } else if payload.len() > MAX_CONTROL_PAYLOAD {
            Err(SendError::ControlPayloadTooLong(payload.len()))
        } else {
            Ok(())
        };
        let result = if ping {
            self.conn.send_ping(payload)
        } else {
            self.conn.send_pong(payload)
        };
        let growth = Growth::Exactly(self.frame_len(payload.len()));
        Self::judge("ping/pong", result, expected, growth)
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Growth {
        let expected = if !self.is_open() {
            Err(SendError::NotOpen)
        } else if reason.len() > MAX_CLOSE_REASON {
            Err(SendError::Close(CloseError::ReasonTooLong))
        } else if code == CloseCode::NoStatus && reason.is_empty() {
            // A close frame without a status code, as a browser's `close()` sends.
            Ok(())
        } else if !code.is_valid_on_wire() {
            Err(SendError::Close(CloseError::InvalidCode(code.as_u16())))
        } else {
            Ok(())
        };
        let empty = code == CloseCode::NoStatus && reason.is_empty();
        let result = self.conn.close(code, reason);
        if result.is_ok() {
            // Closing abandons a streamed message.
            self.stream = None;
            assert_eq!(self.conn.state(), ConnectionState::Closing);
            assert!(self.conn.poll_timeout().is_some(), "no close deadline");
        }
        let growth = Growth::Exactly(self.frame_len(if empty { 0 } else { 2 + reason.len() }));
        Self::judge("close", result, expected, growth)
    }

    fn begin_message(&mut self, kind: MessageKind) -> Growth {
        let expected = self.expect_data_send();
        let compressed = self.compresses(None);
        let result = self.conn.begin_message(kind);
        if result.is_ok() {
            self.stream = Some(Stream {
                kind,
                sent: Vec::new(),
                compressed,
            });
        }
        Self::judge("begin_message", result, expected, Growth::Exactly(0))
    }

    fn stream_piece(&mut self, data: &[u8], fin: bool) -> Growth {
        let expected = match &self.stream {
            _ if !self.is_open() => Err(SendError::NotOpen),
            None => Err(SendError::NoStreamInProgress),
            Some(stream) if stream.kind == MessageKind::Text => {
                let whole = [stream.sent.as_slice(), data].concat();
                match std::str::from_utf8(&whole) {
                    Ok(_) => Ok(()),
                    // A piece may end inside a character, the message may not.
                    Err(e) if e.error_len().is_none() && !fin => Ok(()),
                    Err(_) => Err(SendError::InvalidUtf8),
                }
            }
            Some(_) => Ok(()),
        };
        let compressed = self.stream.as_ref().is_some_and(|s| s.compressed);
        let growth = if compressed {
            Growth::AtMost(self.frame_len(deflate_bound(data.len())))
        } else {
            Growth::Exactly(self.frame_len(data.len()))
        };
        let result = if fin {
            self.conn.finish_message(data)
        } else {
            self.conn.send_fragment(data)
        };
        if result.is_ok() {
            if let Some(stream) = &mut self.stream {
                stream.sent.extend_from_slice(data);
            }
            if fin {
                if let Some(stream) = self.stream.take() {
                    self.wire
                        .expect_message(stream.kind, &stream.sent, stream.compressed);
                }
            }
        }
        Self::judge("stream piece", result, expected, growth)
    }

    // -------------------------------------------------------------------------- time

    /// `handle_timeout(now)` fires every deadline reached: afterwards the next one is later.
    /// At most one control frame comes out (a ping, or the close frame of a timeout).
    fn timeout(&mut self, now: Duration) -> Growth {
        self.now = now;
        self.conn.handle_timeout(now);
        if let Some(deadline) = self.conn.poll_timeout() {
            assert!(
                deadline > now,
                "handle_timeout({now:?}) left the deadline {deadline:?} behind"
            );
        }
        Growth::AtMost(CONTROL_FRAME_MAX)
    }

    // -------------------------------------------------------------------------- events

    /// Takes every event, answering requests as an application would, and checks their order.
    fn drain(&mut self) {
        let mut previous_error = None;
        while let Some(event) = self.conn.poll_event() {
            assert!(!self.seen.closed, "event after Closed: {event:?}");
            #[cfg(feature = "deflate")]
            if let Some(session) = &mut self.deflate {
                session.on_event(&event);
            }
            let mut error_code = None;
            match event {
                Event::Request(request) => self.on_request(&request),
                Event::Open => {
                    assert!(!self.seen.open, "second Open");
                    assert!(!self.seen.error, "Open after Error");
                    assert!(
                        self.role == Role::Client || self.seen.request,
                        "Open before Request"
                    );
                    self.seen.open = true;
                    #[cfg(feature = "deflate")]
                    self.deflate_opened();
                }
                Event::Message(message) => {
                    self.assert_receiving(&message);
                    assert!(
                        message.len() <= self.max_message,
                        "message of {} bytes over the {} limit",
                        message.len(),
                        self.max_message
                    );
                    if let Message::Text(text) = &message {
                        assert!(std::str::from_utf8(text.as_bytes()).is_ok());
                        assert_eq!(text.as_str().len(), text.len());
                    }
                }
                Event::Ping(payload) | Event::Pong(payload) => {
                    self.assert_receiving(&payload);
                    assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
                }
                Event::Error(error) => {
                    assert!(
                        !self.seen.error,
                        "a second Error ({error:?}): a connection reports one"
                    );
                    self.seen.error = true;
                    assert_reportable(error.close_code(), &error);
                    error_code = Some(error.close_code());
                }
                Event::Closed(closed) => {
                    assert_reportable(closed.code, &closed);
                    if closed.initiated_by_peer {
                        assert!(closed.clean, "{closed:?}");
                    }
                    if closed.clean {
                        assert!(
                            closed.code.is_valid_on_wire() || closed.code.as_u16() == 1005,
                            "{closed:?}"
                        );
                    }
                    if let Some(code) = previous_error {
                        assert_eq!(closed.code, code, "Closed right after Error: {closed:?}");
                    }
                    self.seen.closed = true;
                    self.stream = None;
                }
            }
            previous_error = error_code;
        }
        self.check_state();
    }

    fn assert_receiving(&self, what: &impl Debug) {
        assert!(self.seen.open, "{what:?} before Open");
        assert!(!self.seen.error, "{what:?} after Error");
    }

    fn on_request(&mut self, request: &Request) {
        assert_eq!(self.role, Role::Server, "a client got a Request");
        assert!(!self.seen.request && !self.seen.open, "second Request");
        self.seen.request = true;
        if !request.is_websocket_upgrade() {
            assert_eq!(self.conn.accept(Accept::default()), Err(SendError::NotOpen));
            assert_eq!(self.conn.respond(404, &[], b"not found\n"), Ok(()));
            return;
        }
        let key = match request.validate_upgrade() {
            Ok(key) => key.to_string(),
            Err(e) => panic!("an upgrade request was reported although invalid: {e}"),
        };
        let protocols = request.subprotocols();
        let result = if self.flags & REJECT != 0 {
            self.conn.reject(403, "forbidden")
        } else {
            let mut accept = Accept::default();
            if self.flags & PROTOCOL != 0 {
                accept.protocol = protocols.first().cloned();
            }
            self.conn.accept(accept)
        };
        assert_eq!(result, Ok(()));
        assert_eq!(self.conn.respond(500, &[], b""), Err(SendError::NotOpen));
        self.wire.upgrade = Some((key, protocols));
    }

    /// The coarse state agrees with the events delivered, and buffers stay within the limits.
    fn check_state(&self) {
        let state = self.conn.state();
        let expected = if self.seen.closed {
            ConnectionState::Closed
        } else if !self.seen.open {
            ConnectionState::Connecting
        } else if state == ConnectionState::Closing {
            ConnectionState::Closing
        } else {
            ConnectionState::Open
        };
        assert_eq!(state, expected, "{:?}", self.seen);
        assert_eq!(self.conn.is_open(), state == ConnectionState::Open);
        if self.conn.is_terminated() {
            assert_eq!(state, ConnectionState::Closed);
        }
        if self.role == Role::Server && state == ConnectionState::Closed {
            assert!(self.conn.is_terminated(), "a server closes TCP at once");
        }
        // Once every event is taken, the receive buffer holds at most an unfinished head, an
        // unfinished frame header, or the unfinished payload of one frame within the limit.
        let received = received(&self.conn);
        let bound = MAX_HEAD.max(self.max_frame).max(MAX_HEADER_LEN - 1);
        assert!(
            received <= bound,
            "{received} bytes held in the receive buffer (at most {bound})"
        );
    }

    /// End of input: the peer closes TCP; the connection must be over, silent, and every byte
    /// it wrote must read as a valid stream.
    fn end(mut self) {
        let before = self.output_len();
        self.conn.receive_eof(self.now);
        assert_eq!(self.output_len(), before, "receive_eof wrote output");
        self.drain();
        assert!(self.seen.closed, "no Closed event after EOF");
        assert!(self.conn.is_terminated());
        assert_eq!(self.conn.poll_timeout(), None, "deadline after termination");

        assert_eq!(self.conn.send_text("late"), Err(SendError::NotOpen));
        assert_eq!(self.conn.send_ping(b""), Err(SendError::NotOpen));
        assert_eq!(
            self.conn.close(CloseCode::Normal, ""),
            Err(SendError::NotOpen)
        );
        assert_eq!(
            self.conn.begin_message(MessageKind::Text),
            Err(SendError::NotOpen)
        );
        assert_eq!(self.conn.accept(Accept::default()), Err(SendError::NotOpen));
        self.conn.receive(self.now, b"\x89\x80\0\0\0\0\x89\0");
        self.conn.handle_timeout(self.now + 3600 * SECOND);
        self.conn.receive_eof(self.now + 3600 * SECOND);
        assert_eq!(self.conn.poll_event(), None, "event after the end");
        assert_eq!(self.output_len(), before, "output after the end");

        if let Some(rest) = self.conn.poll_transmit() {
            self.wire.push(&rest);
        }
        assert_eq!(self.conn.output(), b"");
        self.wire.end();
    }
}

/// Codes an `Error` or `Closed` may carry: sendable ones, or the local-only 1005, 1006, 1015.
fn assert_reportable(code: CloseCode, what: &impl Debug) {
    assert!(
        code.is_valid_on_wire() || matches!(code.as_u16(), 1005 | 1006 | 1015),
        "{what:?} carries close code {code}: neither valid on the wire nor local-only"
    );
}

/// Bytes in the connection's receive buffer, as its `Debug` output reports them.
fn received(conn: &Connection) -> usize {
    let debug = format!("{conn:?}");
    debug
        .split_once("received: ")
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| {
            panic!("Connection's Debug output no longer shows `received: N`: {debug}")
        })
}

/// The 101 a server would send for the request at the start of a client's output, with the
/// subprotocol `chat` and a `Sec-WebSocket-Extensions` value if asked.
fn switching_protocols(
    client_output: &[u8],
    with_protocol: bool,
    extensions: Option<&str>,
) -> Vec<u8> {
    let end = naive_head_end(client_output, 0).expect("the client writes its request head");
    let request = Request::parse(&client_output[..end]).expect("the client's request parses");
    let key = request
        .validate_upgrade()
        .expect("the client's request is a valid upgrade");
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_key(key.as_bytes())
    );
    if with_protocol {
        response.push_str("Sec-WebSocket-Protocol: chat\r\n");
    }
    if let Some(extensions) = extensions {
        response.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
    }
    response.push_str("\r\n");
    response.into_bytes()
}

// ------------------------------------------------------------------------------ the peer's view

#[derive(Debug)]
enum Phase {
    /// Waiting for the HTTP head (request from a client, response from a server).
    Head,
    Frames,
    /// A non-101 response's body: this many bytes remain, then nothing more.
    Body(usize),
}

/// A message the connection accepted to send, as the peer must read it.
#[derive(Debug)]
struct Sent {
    kind: MessageKind,
    data: Vec<u8>,
    compressed: bool,
}

/// Reads a connection's output as its peer would, and checks it is a valid stream: the right
/// handshake, then well-formed frames (masked by clients only, no RSV bits but RSV1 on the
/// first frame of a compressed message, valid close payloads, proper fragmentation, nothing
/// after the close frame) carrying, in order, the very messages the connection accepted to
/// send (inflated as the peer would when compressed).
#[derive(Debug)]
struct Wire {
    sender: Role,
    bytes: Vec<u8>,
    parsed: usize,
    phase: Phase,
    /// Server: the key and offered subprotocols of the upgrade request being answered.
    upgrade: Option<(String, Vec<String>)>,
    /// The message being read: kind, payload so far, compressed (RSV1 on its first frame).
    message: Option<(MessageKind, Vec<u8>, bool)>,
    close_sent: bool,
    /// Messages sent and not yet read, oldest first.
    sent: VecDeque<Sent>,
    /// permessage-deflate: the sender's agreed window and context takeover, and the inflater.
    #[cfg(feature = "deflate")]
    deflate: Option<deflate::WireInflate>,
}

impl Wire {
    fn new(sender: Role) -> Self {
        Wire {
            sender,
            bytes: Vec::new(),
            parsed: 0,
            phase: Phase::Head,
            upgrade: None,
            message: None,
            close_sent: false,
            sent: VecDeque::new(),
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }

    /// The connection accepted to send this message: it must come out next.
    fn expect_message(&mut self, kind: MessageKind, data: &[u8], compressed: bool) {
        self.sent.push_back(Sent {
            kind,
            data: data.to_vec(),
            compressed,
        });
    }

    fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
        while self.advance() {}
    }

    /// Reads one more unit (head, frame, body); false when more bytes are needed.
    fn advance(&mut self) -> bool {
        let rest = &self.bytes[self.parsed..];
        if rest.is_empty() {
            return false;
        }
        match self.phase {
            Phase::Head => {
                let Some(end) = naive_head_end(rest, 0) else {
                    return false;
                };
                let head = rest[..end].to_vec();
                self.parsed += end;
                self.phase = match self.sender {
                    Role::Client => {
                        let request = Request::parse(&head).expect("the client's request parses");
                        if let Err(e) = request.validate_upgrade() {
                            panic!("the client's request is not a valid upgrade: {e}");
                        }
                        Phase::Frames
                    }
                    Role::Server => self.response_head(&head),
                };
                true
            }
            Phase::Body(remaining) => {
                assert!(
                    rest.len() <= remaining,
                    "{} bytes after the HTTP response",
                    rest.len() - remaining
                );
                self.parsed += rest.len();
                self.phase = Phase::Body(remaining - rest.len());
                false
            }
            Phase::Frames => self.frame(),
        }
    }

    fn response_head(&mut self, head: &[u8]) -> Phase {
        let bare = ClientRequest::from_url("ws://example.com/").expect("valid URL");
        if let Err(HandshakeError::UnexpectedStatus(status)) = Response::parse(head, "", &bare) {
            assert!(
                (200..=599).contains(&status),
                "server answered with status {status}"
            );
            return Phase::Body(content_length(head));
        }
        let (key, protocols) = self
            .upgrade
            .as_ref()
            .expect("a 101 without an accepted upgrade request");
        let mut client = bare;
        client.protocols.clone_from(protocols);
        #[cfg(feature = "deflate")]
        if self.deflate.is_some() {
            client = client.with_extension(ExtensionOffer::new("permessage-deflate"));
        }
        #[cfg_attr(not(feature = "deflate"), allow(unused_variables))]
        let response = match Response::parse(head, key, &client) {
            Ok(response) => response,
            Err(e) => panic!("the server's 101 is refused by the client: {e}"),
        };
        #[cfg(feature = "deflate")]
        if let Some(inflate) = &mut self.deflate {
            inflate.agree(Role::Server, &response.extensions);
        }
        Phase::Frames
    }

    fn frame(&mut self) -> bool {
        let rest = &self.bytes[self.parsed..];
        let (header, header_len) = match FrameHeader::decode(rest) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return false,
            Err(e) => panic!("invalid frame header in the output ({e}): {rest:02x?}"),
        };
        let len = usize::try_from(header.payload_len).expect("payload fits in memory");
        let Some(payload) = rest.get(header_len..header_len + len) else {
            return false;
        };
        let mut payload = payload.to_vec();
        self.parsed += header_len + len;

        assert_eq!(
            header.mask.is_some(),
            self.sender == Role::Client,
            "clients mask every frame, servers none: {header:?}"
        );
        if let Some(key) = header.mask {
            apply_mask_bytewise(&mut payload, key, 0);
        }
        // RSV1 marks the first frame of a compressed message: only with permessage-deflate
        // agreed and a window of at least 9 bits for the sender.
        let rsv1_allowed =
            self.compression_agreed() && matches!(header.opcode, OpCode::Text | OpCode::Binary);
        assert!(
            !(header.rsv2 || header.rsv3 || (header.rsv1 && !rsv1_allowed)),
            "RSV bits without an extension: {header:?}"
        );
        assert!(!self.close_sent, "frame after the close frame: {header:?}");
        match header.opcode {
            OpCode::Close => {
                if let Err(e) = parse_close_payload(&payload) {
                    panic!("invalid close frame sent ({e}): {payload:02x?}");
                }
                self.close_sent = true;
            }
            OpCode::Ping | OpCode::Pong => {}
            OpCode::Text | OpCode::Binary => {
                assert!(self.message.is_none(), "new message before the last ended");
                let kind = if header.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                self.message = Some((kind, payload, header.rsv1));
            }
            OpCode::Continuation => match &mut self.message {
                Some((_, data, _)) => data.extend_from_slice(&payload),
                None => panic!("continuation frame without a message"),
            },
        }
        if header.opcode.is_data() && header.fin {
            if let Some((kind, data, compressed)) = self.message.take() {
                let data = self.inflated(data, compressed);
                let Some(sent) = self.sent.pop_front() else {
                    panic!(
                        "a {kind:?} message of {} bytes that was never sent",
                        data.len()
                    );
                };
                assert!(
                    sent.kind == kind && sent.data == data,
                    "sent a {:?} message of {} bytes, the peer reads a {kind:?} message of {} \
                     bytes: {:02x?}... instead of {:02x?}...",
                    sent.kind,
                    sent.data.len(),
                    data.len(),
                    &data[..data.len().min(32)],
                    &sent.data[..sent.data.len().min(32)]
                );
                assert_eq!(
                    compressed,
                    sent.compressed,
                    "a message of {} bytes sent compressed or not against the configuration",
                    data.len()
                );
            }
        }
        true
    }

    /// Whether the sender may set RSV1.
    fn compression_agreed(&self) -> bool {
        #[cfg(feature = "deflate")]
        return self
            .deflate
            .as_ref()
            .is_some_and(|d| d.compression_agreed());
        #[cfg(not(feature = "deflate"))]
        return false;
    }

    /// A whole message's payload as the peer reads it: inflated when compressed.
    fn inflated(&mut self, data: Vec<u8>, compressed: bool) -> Vec<u8> {
        if !compressed {
            return data;
        }
        #[cfg(feature = "deflate")]
        if let Some(inflate) = &mut self.deflate {
            return inflate.inflate(&data);
        }
        unreachable!("RSV1 is refused without permessage-deflate")
    }

    /// Everything written was whole: no half frame or half head is left, and every message sent
    /// was read.
    fn end(&self) {
        let left = self.bytes.len() - self.parsed;
        assert_eq!(
            left, 0,
            "{left} bytes of the output do not form a whole unit ({:?})",
            self.phase
        );
        if let Phase::Body(remaining) = self.phase {
            assert_eq!(remaining, 0, "HTTP body shorter than its Content-Length");
        }
        assert!(
            self.sent.is_empty(),
            "{} messages sent never came out: {:?}",
            self.sent.len(),
            self.sent
                .iter()
                .map(|m| (m.kind, m.data.len()))
                .collect::<Vec<_>>()
        );
    }
}
