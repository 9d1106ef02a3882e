//! permessage-deflate (RFC 7692) checks: `deflate_negotiation` and `deflate_connection`.
//!
//! Compiled with the `deflate` feature only (the fuzz crate's default; in the core's tests, the
//! core's own feature). Besides `duplex_core`, `bytes` and `std`, it uses `zlib_rs`: the core's
//! optional dependency, so the core's tests can include it too. zlib-rs plays the peer: it
//! compresses what the peer sends and inflates what the connection sends, so the core's codec
//! is checked against an independent one. Parameters are read here from RFC 7692 §7, not with
//! the core's parser.
//!
//! # Input formats
//!
//! - `deflate_negotiation`: a policy (2 bytes), a client configuration (2 bytes), then a
//!   `Sec-WebSocket-Extensions` value (lossy UTF-8). A configuration is a flags byte (bit 0
//!   `server_no_context_takeover`, bit 1 `client_no_context_takeover`, bits 2-5 the level, bits
//!   6-7 the threshold in 16 bytes) and a window byte (low nibble `server_max_window_bits`, high
//!   nibble `client_max_window_bits`, 0..=15 as they are: the core clamps them to 9..=15).
//! - `deflate_connection`: the flags byte of the connection targets, 4 setup bytes, then their
//!   operations. Setup: `local` (bit 0: client, else server; bit 1 `server_no_context_takeover`;
//!   bit 2 `client_no_context_takeover`; bits 3-4 the level 0, 1, 6, 9; bits 5-7 the threshold
//!   0, 1, 8, 32, 64, 100, 150, 1000), `windows` (as above), then the peer's side, `peer` and
//!   `peer_windows` (low nibble server's, high client's, each `8 + (n & 7)`):
//!   - server: the offer in the upgrade request (bit 0 `server_no_context_takeover`, bit 1
//!     `client_no_context_takeover`, bit 2 `server_max_window_bits`, bit 3
//!     `client_max_window_bits`, bit 4 with a value; bit 5 after an `x-webkit-deflate-frame`
//!     offer, bit 6 before a plain `permessage-deflate` fallback; bit 7 no header at all);
//!   - client: the policy of the server answering it (bits 0, 1 as above, window bits as given;
//!     bit 7: the server declines compression).
//!
//!   One more operation: `op & 15 == 15` with `hi & 8` feeds a message the peer compressed as
//!   RFC 7692 says (with zlib-rs, within the agreed window and context takeover): `mode: u8`,
//!   `shape: u8`, `key: [u8; 4]`, `len: u8`, `len` bytes. `mode`: bit 0 binary (else text, the
//!   bytes as they are), bits 1-2 how the message ends (0 sync flush, 1 full flush, 2 a final
//!   block then the byte 0x00 of RFC 7692 §7.2.3.4, 3 not compressed: no RSV1), bits 3-4 the
//!   level 0, 1, 6, 9, bits 5-6 the bytes repeated 1, 4, 16 or 128 times (a bomb), bit 7 the
//!   peer starts a new deflate stream first. The payload is cut into frames by `shape` as a
//!   chunking byte (see [`Chunker`]; at most 64 frames, the last one taking the rest); `hi & 1`
//!   puts a ping after the first frame, `hi & 4` feeds through `recv_buf`.

use std::collections::VecDeque;

use duplex_core::deflate::{
    DeflateConfig, DeflateParams, PERMESSAGE_DEFLATE, accept_response, negotiate,
};
use duplex_core::mask::apply_mask_bytewise;
use duplex_core::{ConnectionState, Error, Event, ExtensionOffer, Message, MessageKind, Role};
use zlib_rs::{Deflate, DeflateFlush, Inflate, InflateFlush, Status};

use super::{Chunker, Driver, Extras, Growth, HANDSHAKE, Reader, deflate_bound, naive_head_end};

/// The bytes a sender strips from the end of a compressed message and a receiver appends.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

// ------------------------------------------------------------------------------ parameters

/// A permessage-deflate element's parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// RFC 7692 §7.1.2: a window size is a decimal 8..=15 without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    const VALUES: [&str; 8] = ["8", "9", "10", "11", "12", "13", "14", "15"];
    VALUES.iter().position(|v| *v == value).map(|i| i as u8 + 8)
}

/// The parameters of an offer or response element, or `None` when RFC 7692 §7 makes it
/// invalid (which declines an offer, and fails a response): an unknown or repeated parameter,
/// a value on a `*_no_context_takeover`, `server_max_window_bits` without a valid value, a
/// `client_max_window_bits` value out of range. Names compare as the core compares them,
/// ignoring ASCII case.
fn rfc_params(element: &ExtensionOffer) -> Option<Params> {
    let mut params = Params::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in &element.params {
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        let bits = value.as_deref().map(window_bits);
        match (name.as_str(), bits) {
            ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
            ("server_max_window_bits", Some(Some(bits))) => {
                params.server_max_window_bits = Some(bits);
            }
            ("client_max_window_bits", None) => params.client_max_window_bits = Some(None),
            ("client_max_window_bits", Some(Some(bits))) => {
                params.client_max_window_bits = Some(Some(bits));
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(params)
}

/// What a 101's permessage-deflate element makes the two compressors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Agreed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: u8,
    client_max_window_bits: u8,
}

impl Agreed {
    /// The agreement in a 101's extensions, if permessage-deflate is among them. The element
    /// must be valid and alone: the side that reads it has accepted it.
    fn from_response(extensions: &[ExtensionOffer]) -> Option<Agreed> {
        let mut elements = extensions
            .iter()
            .filter(|e| e.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE));
        let element = elements.next()?;
        assert!(
            elements.next().is_none(),
            "permessage-deflate agreed twice: {extensions:?}"
        );
        let params = rfc_params(element)
            .unwrap_or_else(|| panic!("agreed on an invalid response {element:?}"));
        let Some(client_bits) = params.client_max_window_bits.map_or(Some(15), |bits| bits) else {
            panic!("agreed on client_max_window_bits without a value: {element:?}")
        };
        Some(Agreed {
            server_no_context_takeover: params.server_no_context_takeover,
            client_no_context_takeover: params.client_no_context_takeover,
            server_max_window_bits: params.server_max_window_bits.unwrap_or(15),
            client_max_window_bits: client_bits,
        })
    }

    /// The window of `sender`'s compressor, and whether it must start afresh for each message.
    fn of(self, sender: Role) -> (u8, bool) {
        match sender {
            Role::Server => (self.server_max_window_bits, self.server_no_context_takeover),
            Role::Client => (self.client_max_window_bits, self.client_no_context_takeover),
        }
    }
}

fn other(role: Role) -> Role {
    match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    }
}

// ------------------------------------------------------------------------------ negotiation

/// A configuration from a flags byte and a window byte (see the module documentation).
fn config(flags: u8, windows: u8) -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: flags & 1 != 0,
        client_no_context_takeover: flags & 2 != 0,
        server_max_window_bits: windows & 15,
        client_max_window_bits: windows >> 4,
        level: (flags >> 2) & 15,
        threshold: usize::from(flags >> 6) * 16,
    }
}

/// Window bits as the core uses a configured value.
fn clamped(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

/// Extension offers from arbitrary bytes, negotiated by a server with an arbitrary policy, and
/// arbitrary responses read by a client with an arbitrary configuration. Nothing panics, and:
///
/// - offers parse, format and parse back the same;
/// - the server accepts exactly the first valid permessage-deflate offer (RFC 7692 §5.1: an
///   invalid one is declined, the next one considered);
/// - its response formats and parses back the same, is a valid response (every window size with
///   a value), and says what the agreed parameters are;
/// - the agreement is within the policy (window sizes at most the policy's, clamped to 9..=15;
///   the client's only when the offer lets the server limit it) and asks for no context
///   takeover where the policy does;
/// - it is within the offer (RFC 7692 §7.1): `server_no_context_takeover` and
///   `server_max_window_bits` offered are answered, the latter with at most the value offered;
///   `client_max_window_bits` is answered only if offered, with at most the value offered;
/// - a client that made the accepted offer accepts the response and agrees on the same
///   parameters;
/// - a client refuses a response exactly when it is invalid or ignores what the client's offer
///   required (`server_no_context_takeover`, a `server_max_window_bits` limit); an accepted one
///   gives window sizes in 8..=15 that the response and the client's configuration allow;
/// - the offers of every client configuration are valid, accepted, and the client agrees with the
///   server on the outcome.
pub fn deflate_negotiation(data: &[u8]) {
    let mut reader = Reader::new(data);
    let policy = config(reader.u8(), reader.u8());
    let client = config(reader.u8(), reader.u8());
    let value = String::from_utf8_lossy(reader.rest());

    round_trip(&client, &policy);

    let Ok(offers) = ExtensionOffer::parse_list(&value) else {
        return;
    };
    let formatted = ExtensionOffer::list_to_header_value(&offers);
    assert_eq!(
        ExtensionOffer::parse_list(&formatted).as_ref(),
        Ok(&offers),
        "{value:?} formatted as {formatted:?}"
    );
    let valid = offers
        .iter()
        .filter(|offer| offer.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        .find_map(|offer| Some((offer, rfc_params(offer)?)));
    match (negotiate(&offers, &policy), valid) {
        (None, None) => {}
        (Some((_, response)), None) => {
            panic!("accepted {response:?} although no offer of {value:?} is valid")
        }
        (None, Some((offer, _))) => panic!("declined the valid offer {offer:?} of {value:?}"),
        (Some((params, response)), Some((offer, offered))) => {
            check_answer(&policy, offer, offered, params, &response);
        }
    }
    for element in &offers {
        check_response(element, &client);
    }
}

/// The server's answer to the first valid offer.
fn check_answer(
    policy: &DeflateConfig,
    offer: &ExtensionOffer,
    offered: Params,
    params: DeflateParams,
    response: &ExtensionOffer,
) {
    let header = response.to_header_value();
    let context = format!("offer {offer:?}, policy {policy:?}, response {header:?}");
    assert_eq!(response.name, PERMESSAGE_DEFLATE, "{context}");
    assert_eq!(
        ExtensionOffer::parse_list(&header),
        Ok(vec![response.clone()]),
        "{context}: the response does not parse back"
    );
    let answered = rfc_params(response).unwrap_or_else(|| panic!("{context}: an invalid response"));
    let Some(client_bits) = answered
        .client_max_window_bits
        .map_or(Some(15), |bits| bits)
    else {
        panic!("{context}: client_max_window_bits without a value")
    };

    // What the response says is what is agreed.
    assert_eq!(
        (
            params.server_no_context_takeover,
            params.client_no_context_takeover,
            params.server_max_window_bits,
            params.client_max_window_bits,
        ),
        (
            answered.server_no_context_takeover,
            answered.client_no_context_takeover,
            answered.server_max_window_bits.unwrap_or(15),
            client_bits,
        ),
        "{context}: agreed {params:?}"
    );

    // Within the policy.
    assert!(
        params.server_max_window_bits <= clamped(policy.server_max_window_bits),
        "{context}: server window over the policy's"
    );
    if offered.client_max_window_bits.is_some() {
        assert!(
            params.client_max_window_bits <= clamped(policy.client_max_window_bits),
            "{context}: client window over the policy's"
        );
    }
    assert!(
        params.server_no_context_takeover || !policy.server_no_context_takeover,
        "{context}: the policy's server_no_context_takeover is missing"
    );
    assert!(
        params.client_no_context_takeover || !policy.client_no_context_takeover,
        "{context}: the policy's client_no_context_takeover is missing"
    );

    // Within the offer.
    assert!(
        params.server_no_context_takeover || !offered.server_no_context_takeover,
        "{context}: server_no_context_takeover offered, not answered"
    );
    if let Some(bits) = offered.server_max_window_bits {
        assert!(
            answered.server_max_window_bits.is_some_and(|b| b <= bits),
            "{context}: server_max_window_bits={bits} offered, not answered within it"
        );
    }
    match (
        offered.client_max_window_bits,
        answered.client_max_window_bits,
    ) {
        (None, Some(_)) => panic!("{context}: client_max_window_bits answered, not offered"),
        (Some(Some(bits)), Some(Some(answer))) => assert!(
            answer <= bits,
            "{context}: client_max_window_bits above the value offered"
        ),
        _ => {}
    }

    // A client that made this offer agrees.
    let client = DeflateConfig {
        server_no_context_takeover: offered.server_no_context_takeover,
        client_no_context_takeover: offered.client_no_context_takeover,
        server_max_window_bits: offered.server_max_window_bits.unwrap_or(15),
        client_max_window_bits: offered.client_max_window_bits.flatten().unwrap_or(15),
        ..DeflateConfig::default()
    };
    match accept_response(response, &client) {
        Ok(agreed) => assert_eq!(
            agreed, params,
            "{context}: the client that offered it agrees on other parameters"
        ),
        Err(e) => panic!("{context}: the client that offered it refuses the response: {e}"),
    }
}

/// A client with `client`'s configuration reading an arbitrary response element.
fn check_response(element: &ExtensionOffer, client: &DeflateConfig) {
    let result = accept_response(element, client);
    let offered_server = clamped(client.server_max_window_bits);
    let offered_client = clamped(client.client_max_window_bits);
    let acceptable = rfc_params(element).filter(|p| {
        !matches!(p.client_max_window_bits, Some(None))
            && (p.server_no_context_takeover || !client.server_no_context_takeover)
            && (offered_server == 15
                || p.server_max_window_bits
                    .is_some_and(|b| b <= offered_server))
    });
    let context = format!("response {element:?}, client {client:?}");
    match (result, acceptable) {
        (Err(_), None) => {}
        (Ok(params), None) => panic!("{context}: accepted as {params:?}"),
        (Err(e), Some(_)) => panic!("{context}: refused ({e})"),
        (Ok(params), Some(p)) => {
            for bits in [params.server_max_window_bits, params.client_max_window_bits] {
                assert!((8..=15).contains(&bits), "{context}: {params:?}");
            }
            assert_eq!(
                params.server_no_context_takeover, p.server_no_context_takeover,
                "{context}: {params:?}"
            );
            assert!(
                params.client_no_context_takeover
                    == (p.client_no_context_takeover || client.client_no_context_takeover),
                "{context}: {params:?}"
            );
            assert_eq!(
                params.server_max_window_bits,
                p.server_max_window_bits.unwrap_or(15),
                "{context}: {params:?}"
            );
            let answered = p.client_max_window_bits.flatten().unwrap_or(15);
            assert!(
                params.client_max_window_bits <= answered.min(offered_client),
                "{context}: {params:?}"
            );
        }
    }
}

/// A client's own offers go through a server with any policy, and both sides agree.
fn round_trip(client: &DeflateConfig, policy: &DeflateConfig) {
    let offers = client.offers();
    let header = ExtensionOffer::list_to_header_value(&offers);
    assert_eq!(
        ExtensionOffer::parse_list(&header).as_ref(),
        Ok(&offers),
        "the offers of {client:?}"
    );
    for offer in &offers {
        assert!(
            rfc_params(offer).is_some(),
            "{client:?} makes the invalid offer {offer:?}"
        );
    }
    let Some((params, response)) = negotiate(&offers, policy) else {
        panic!("policy {policy:?} declines the offers {header:?}")
    };
    match accept_response(&response, client) {
        Ok(agreed) => assert_eq!(
            agreed, params,
            "offers {header:?}, policy {policy:?}, response {response:?}"
        ),
        Err(e) => {
            panic!("offers {header:?}, policy {policy:?}: response {response:?} refused: {e}")
        }
    }
}

// ------------------------------------------------------------------------------ connections

/// A connection with permessage-deflate configured, driven like [`super::server_connection`]
/// and [`super::client_connection`] (but with messages of at most 16 KiB, or 200 bytes with
/// `TINY`), with the same checks, and:
///
/// - with the handshake of the input, compression is agreed exactly when the peer offers it
///   (server) or accepts it (client), and a client accepts the 101 negotiated for its offers;
/// - RSV1 comes only on the first frame of a data message, only once compression is agreed
///   with a window of at least 9 bits for the sender (at 8 bits the core sends uncompressed);
/// - every message sent comes out, in order, as the peer reads it: compressed messages inflate
///   with the agreed window (and, without context takeover, each on its own) to the very bytes
///   sent; compressed exactly when at least the threshold (streams: always); a compressed
///   message costs at most zlib's bound of output;
/// - as long as the peer sent only messages built here, each is reported exactly (whatever the
///   frame cuts, flush kind, level, interleaved ping) or fails the connection with 1009 (a frame
///   over the frame limit, or the message inflating past `max_message_size`) or 1007 (text that
///   is not UTF-8), and nothing else fails it with 1002, 1007 or 1009.
pub fn deflate_connection(data: &[u8]) {
    let mut reader = Reader::new(data);
    let flags = reader.u8();
    let session = Session::read(flags, &mut reader);
    let role = session.role;
    let extras = Extras {
        deflate: Some(Box::new(session)),
    };
    Driver::new(role, flags, extras).run(&mut reader);
}

/// The verdict due on a message the peer sent.
#[derive(Debug)]
enum Due {
    Message(MessageKind, Vec<u8>),
    /// The connection must fail with one of these codes.
    Refused(Vec<u16>),
}

/// The deflate side of a [`Driver`]: configuration, agreement, the peer's compressor, and the
/// messages the peer sent.
#[derive(Debug)]
pub(super) struct Session {
    role: Role,
    /// The connection's own configuration.
    local: DeflateConfig,
    /// Server: the `Sec-WebSocket-Extensions` value of the input's upgrade request.
    offer: Option<String>,
    /// Client: the policy of the server answering the input's handshake; `None` declines.
    policy: Option<DeflateConfig>,
    /// The input's handshake (`HANDSHAKE`) is used, so its outcome is known.
    handshake: bool,
    agreed: Option<Agreed>,
    peer: Peer,
    /// Every byte the peer sent was built here, so the messages it sent are known.
    tracking: bool,
    due: VecDeque<Due>,
}

impl Session {
    fn read(flags: u8, reader: &mut Reader<'_>) -> Session {
        let local = reader.u8();
        let windows = reader.u8();
        let peer = reader.u8();
        let peer_windows = reader.u8();
        let role = if local & 1 != 0 {
            Role::Client
        } else {
            Role::Server
        };
        const LEVELS: [u8; 4] = [0, 1, 6, 9];
        const THRESHOLDS: [usize; 8] = [0, 1, 8, 32, 64, 100, 150, 1000];
        let local = DeflateConfig {
            server_no_context_takeover: local & 2 != 0,
            client_no_context_takeover: local & 4 != 0,
            server_max_window_bits: windows & 15,
            client_max_window_bits: windows >> 4,
            level: LEVELS[usize::from((local >> 3) & 3)],
            threshold: THRESHOLDS[usize::from(local >> 5)],
        };
        let server_bits = 8 + (peer_windows & 7);
        let client_bits = 8 + ((peer_windows >> 4) & 7);
        let (offer, policy) = match role {
            Role::Server => (offer(peer, server_bits, client_bits), None),
            Role::Client => {
                let policy = DeflateConfig {
                    server_no_context_takeover: peer & 1 != 0,
                    client_no_context_takeover: peer & 2 != 0,
                    server_max_window_bits: server_bits,
                    client_max_window_bits: client_bits,
                    ..DeflateConfig::default()
                };
                (None, (peer & 0x80 == 0).then_some(policy))
            }
        };
        Session {
            role,
            local,
            offer,
            policy,
            handshake: flags & HANDSHAKE != 0,
            agreed: None,
            peer: Peer::new(15, false),
            tracking: true,
            due: VecDeque::new(),
        }
    }

    pub(super) fn configure(&self, config: duplex_core::Config) -> duplex_core::Config {
        config.with_deflate(Some(self.local.clone()))
    }

    /// Server: `base`, an upgrade request, with our `Sec-WebSocket-Extensions` instead of its.
    pub(super) fn request(&self, base: &[u8]) -> Vec<u8> {
        let base = std::str::from_utf8(base).expect("the requests are ASCII");
        let mut out = String::new();
        for line in base.split_inclusive("\r\n") {
            if line
                .to_ascii_lowercase()
                .starts_with("sec-websocket-extensions:")
            {
                continue;
            }
            if line == "\r\n" {
                if let Some(offer) = &self.offer {
                    out.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
                }
            }
            out.push_str(line);
        }
        out.into_bytes()
    }

    /// Client: the `Sec-WebSocket-Extensions` of the 101 answering the request at the start of
    /// `client_output`, negotiated by a server with our policy.
    pub(super) fn answer(&self, client_output: &[u8]) -> Option<String> {
        let policy = self.policy.as_ref()?;
        let end = naive_head_end(client_output, 0).expect("the client writes its request");
        let request = duplex_core::Request::parse(&client_output[..end])
            .expect("the client's request parses");
        let offers = request
            .extensions()
            .expect("the client's extension offers parse");
        let Some((_, response)) = negotiate(&offers, policy) else {
            panic!("policy {policy:?} declines the client's offers {offers:?}")
        };
        Some(response.to_header_value())
    }

    /// Whether a message of `len` bytes (`None`: streamed) that `sender` sends is compressed.
    pub(super) fn compresses(&self, sender: Role, len: Option<usize>) -> bool {
        let Some(agreed) = self.agreed else {
            return false;
        };
        agreed.of(sender).0 >= 9 && len.is_none_or(|len| len >= self.local.threshold)
    }

    pub(super) fn untrack(&mut self) {
        self.tracking = false;
        self.due.clear();
    }

    fn agree(&mut self, extensions: &[ExtensionOffer]) {
        self.agreed = Agreed::from_response(extensions);
        if self.handshake {
            let expected = match self.role {
                Role::Server => self.offer.is_some(),
                Role::Client => self.policy.is_some(),
            };
            assert_eq!(
                self.agreed.is_some(),
                expected,
                "offer {:?}, policy {:?}, local {:?}: agreed {:?}",
                self.offer,
                self.policy,
                self.local,
                self.agreed
            );
        }
        if let Some(agreed) = self.agreed {
            let (bits, reset) = agreed.of(other(self.role));
            self.peer = Peer::new(bits, reset);
        }
    }

    /// Checks each event against the messages the peer sent.
    pub(super) fn on_event(&mut self, event: &Event) {
        if let Event::Error(Error::Handshake(e)) = event {
            assert!(
                !self.handshake,
                "the input's handshake failed: {e} (offer {:?}, policy {:?}, local {:?})",
                self.offer, self.policy, self.local
            );
        }
        if !self.tracking {
            return;
        }
        match event {
            Event::Message(message) => {
                let (kind, data) = match message {
                    Message::Text(text) => (MessageKind::Text, text.as_bytes()),
                    Message::Binary(data) => (MessageKind::Binary, &data[..]),
                };
                match self.due.pop_front() {
                    Some(Due::Message(sent_kind, sent)) => assert!(
                        sent_kind == kind && sent == data,
                        "the peer sent a {sent_kind:?} message of {} bytes, reported: a \
                         {kind:?} message of {} bytes ({:02x?}... instead of {:02x?}...)",
                        sent.len(),
                        data.len(),
                        &data[..data.len().min(32)],
                        &sent[..sent.len().min(32)]
                    ),
                    Some(Due::Refused(codes)) => panic!(
                        "a {kind:?} message of {} bytes reported, where the connection must \
                         fail with {codes:?}",
                        data.len()
                    ),
                    None => panic!("a message the peer never sent: {message:?}"),
                }
            }
            Event::Error(error) => {
                let code = error.close_code().as_u16();
                if !matches!(code, 1002 | 1007 | 1009) {
                    return; // timeouts, the peer's EOF: not a verdict on the data
                }
                match self.due.pop_front() {
                    Some(Due::Refused(codes)) => assert!(
                        codes.contains(&code),
                        "failed with {code} ({error}) where {codes:?} is due"
                    ),
                    Some(Due::Message(kind, data)) => panic!(
                        "a valid {kind:?} message of {} bytes fails the connection: {error} \
                         ({code}); agreed {:?}",
                        data.len(),
                        self.agreed
                    ),
                    None => panic!("failed with {error} ({code}) on valid input"),
                }
            }
            _ => {}
        }
    }
}

/// The server's offer (see the module documentation), `None` for no header.
fn offer(bits: u8, server_bits: u8, client_bits: u8) -> Option<String> {
    if bits & 0x80 != 0 {
        return None;
    }
    let mut offer = ExtensionOffer::new(PERMESSAGE_DEFLATE);
    if bits & 1 != 0 {
        offer = offer.with_param("server_no_context_takeover", None);
    }
    if bits & 2 != 0 {
        offer = offer.with_param("client_no_context_takeover", None);
    }
    if bits & 4 != 0 {
        offer = offer.with_param("server_max_window_bits", Some(server_bits.to_string()));
    }
    if bits & 8 != 0 {
        let value = (bits & 16 != 0).then(|| client_bits.to_string());
        offer = offer.with_param("client_max_window_bits", value);
    }
    let mut list = Vec::new();
    if bits & 32 != 0 {
        list.push(ExtensionOffer::new("x-webkit-deflate-frame"));
    }
    list.push(offer);
    if bits & 64 != 0 {
        list.push(ExtensionOffer::new(PERMESSAGE_DEFLATE));
    }
    Some(ExtensionOffer::list_to_header_value(&list))
}

/// How a message the peer compresses ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Sync,
    Full,
    /// A final block (BFINAL), then the byte 0x00 (RFC 7692 §7.2.3.4); the next message starts
    /// a new deflate stream.
    Final,
}

/// The peer's compressor, within what was agreed for its direction.
struct Peer {
    bits: u8,
    reset: bool,
    deflater: Option<Deflate>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("bits", &self.bits)
            .field("reset", &self.reset)
            .field("deflater", &self.deflater.is_some())
            .finish()
    }
}

impl Peer {
    fn new(bits: u8, reset: bool) -> Peer {
        Peer {
            bits,
            reset,
            deflater: None,
        }
    }

    /// The payload of one compressed message (RFC 7692 §7.2.1: the tail stripped).
    fn compress(&mut self, data: &[u8], ending: Ending, level: i32, fresh: bool) -> Vec<u8> {
        if fresh {
            self.deflater = None;
        }
        // zlib cannot compress with an 8-bit window; stored blocks refer to nothing.
        let (bits, level) = if self.bits < 9 {
            (9, 0)
        } else {
            (self.bits, level)
        };
        let deflater = self
            .deflater
            .get_or_insert_with(|| Deflate::new(level, false, bits));
        let flush = match ending {
            Ending::Sync => DeflateFlush::SyncFlush,
            Ending::Full => DeflateFlush::FullFlush,
            Ending::Final => DeflateFlush::Finish,
        };
        let (start_in, start_out) = (deflater.total_in(), deflater.total_out());
        let mut out = vec![0; deflate_bound(data.len()) + 64];
        loop {
            let consumed = (deflater.total_in() - start_in) as usize;
            let written = (deflater.total_out() - start_out) as usize;
            if written == out.len() {
                out.resize(2 * out.len(), 0);
            }
            let status = deflater
                .compress(&data[consumed..], &mut out[written..], flush)
                .expect("zlib-rs compresses");
            let consumed = (deflater.total_in() - start_in) as usize;
            let written = (deflater.total_out() - start_out) as usize;
            let done = match ending {
                Ending::Final => status == Status::StreamEnd,
                _ => consumed == data.len() && written < out.len(),
            };
            if done {
                out.truncate(written);
                break;
            }
        }
        match ending {
            Ending::Final => {
                out.push(0x00);
                self.deflater = None;
            }
            // A flush right after a flush writes nothing: the empty block is ours to write.
            _ if out.is_empty() => out.push(0x00),
            _ => {
                assert!(out.ends_with(&TAIL), "a flush ends with {TAIL:02x?}");
                out.truncate(out.len() - TAIL.len());
            }
        }
        if self.reset {
            self.deflater = None;
        }
        out
    }
}

/// Most frames a message the peer compresses is cut into.
const MAX_FRAMES: usize = 64;

/// Appends a frame as the peer sends it, masked with `key` if given.
fn write_frame(out: &mut Vec<u8>, first: u8, payload: &[u8], key: Option<[u8; 4]>) {
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    out.push(first);
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(key) = key {
        out.extend_from_slice(&key);
    }
    let body = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = key {
        apply_mask_bytewise(&mut out[body..], key, 0);
    }
}

impl Driver {
    /// Open: what the 101 agreed on, for the peer's compressor and for reading the output.
    pub(super) fn deflate_opened(&mut self) {
        let extensions = match self.role {
            Role::Client => {
                let response = self.conn.response().expect("an open client keeps its 101");
                response.extensions.clone()
            }
            Role::Server => {
                let output = self.conn.output();
                let end = naive_head_end(output, 0).expect("the 101 leads the output at Open");
                extensions_in_head(&output[..end])
            }
        };
        if let Some(session) = &mut self.deflate {
            session.agree(&extensions);
        }
        if self.role == Role::Client {
            if let Some(inflate) = &mut self.wire.deflate {
                inflate.agree(Role::Client, &extensions);
            }
        }
    }

    /// Feeds one message compressed by the peer (operands in the module documentation).
    pub(super) fn feed_compressed(
        &mut self,
        hi: u8,
        reader: &mut Reader<'_>,
        was_connecting: bool,
    ) -> Growth {
        const LEVELS: [i32; 4] = [0, 1, 6, 9];
        const REPEATS: [usize; 4] = [1, 4, 16, 128];
        let mode = reader.u8();
        let shape = reader.u8();
        let key: [u8; 4] = reader.array();
        let data = reader
            .counted()
            .repeat(REPEATS[usize::from((mode >> 5) & 3)]);
        let kind = if mode & 1 != 0 {
            MessageKind::Binary
        } else {
            MessageKind::Text
        };
        let ending = match (mode >> 1) & 3 {
            0 => Some(Ending::Sync),
            1 => Some(Ending::Full),
            2 => Some(Ending::Final),
            _ => None,
        };
        let lending = hi & 4 != 0;

        // The handshake first, so what it agrees on is known.
        let mut fed = 0;
        if let Some(prefix) = self.prefix.take() {
            fed += prefix.len();
            self.feed(&prefix, lending);
        }
        let connecting = self.conn.state() == ConnectionState::Connecting;
        let Some(session) = &mut self.deflate else {
            unreachable!("the deflate target has a session")
        };
        if connecting || session.agreed.is_none() {
            session.untrack();
        }
        let payload = match ending {
            Some(ending) => {
                let level = LEVELS[usize::from((mode >> 3) & 3)];
                session
                    .peer
                    .compress(&data, ending, level, mode & 0x80 != 0)
            }
            None => data.clone(),
        };

        let key = (self.role == Role::Server).then_some(key);
        let opcode = match kind {
            MessageKind::Text => 0x1,
            MessageKind::Binary => 0x2,
        };
        // A bomb cut into 1-byte frames would only be slow.
        let chunks = Chunker::new(shape).split_at_most(&payload, MAX_FRAMES);
        let mut bytes = Vec::with_capacity(payload.len() + 14 * chunks.len() + 16);
        for (i, chunk) in chunks.iter().enumerate() {
            let fin = if i + 1 == chunks.len() { 0x80 } else { 0 };
            let first = if i == 0 {
                opcode | if ending.is_some() { 0x40 } else { 0 }
            } else {
                0
            };
            write_frame(&mut bytes, fin | first, chunk, key);
            if i == 0 && hi & 1 != 0 {
                write_frame(&mut bytes, 0x89, b"mid", key);
            }
        }

        if session.tracking {
            let mut codes = Vec::new();
            if chunks.iter().any(|c| c.len() > self.max_frame) || data.len() > self.max_message {
                codes.push(1009);
            }
            if kind == MessageKind::Text && std::str::from_utf8(&data).is_err() {
                codes.push(1007);
            }
            session.due.push_back(if codes.is_empty() {
                Due::Message(kind, data)
            } else {
                Due::Refused(codes)
            });
        }
        fed += bytes.len();
        self.feed(&bytes, lending);
        self.receive_growth(fed, was_connecting)
    }
}

/// The extension elements of a response head's `Sec-WebSocket-Extensions` lines.
fn extensions_in_head(head: &[u8]) -> Vec<ExtensionOffer> {
    let head = String::from_utf8_lossy(head);
    let mut extensions = Vec::new();
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
            let parsed = ExtensionOffer::parse_list(value.trim())
                .unwrap_or_else(|e| panic!("the 101's extensions {value:?} do not parse: {e}"));
            extensions.extend(parsed);
        }
    }
    extensions
}

// ------------------------------------------------------------------------------ the peer's view

/// The peer's decompressor for what the connection sends.
#[derive(Default)]
pub(super) struct WireInflate {
    /// The sender's window and whether it starts afresh for each message, once agreed.
    sender: Option<(u8, bool)>,
    inflater: Option<Inflate>,
}

impl std::fmt::Debug for WireInflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireInflate")
            .field("sender", &self.sender)
            .field("inflater", &self.inflater.is_some())
            .finish()
    }
}

impl WireInflate {
    /// The 101's extensions, as agreed for `sender`'s direction.
    pub(super) fn agree(&mut self, sender: Role, extensions: &[ExtensionOffer]) {
        self.sender = Agreed::from_response(extensions).map(|agreed| agreed.of(sender));
    }

    /// RSV1 is allowed: compression agreed, with a window zlib can compress with.
    pub(super) fn compression_agreed(&self) -> bool {
        self.sender.is_some_and(|(bits, _)| bits >= 9)
    }

    /// A compressed message's payload, inflated as RFC 7692 §7.2.2 says, with exactly the agreed
    /// window, and from scratch for each message without context takeover.
    pub(super) fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        let (bits, reset) = self.sender.expect("RSV1 only once agreed");
        if reset {
            self.inflater = None;
        }
        let inflater = self
            .inflater
            .get_or_insert_with(|| Inflate::new(false, bits));
        let input = [payload, &TAIL].concat();
        let result = inflate_all(inflater, &input);
        if reset {
            self.inflater = None;
        }
        result.unwrap_or_else(|e| {
            panic!(
                "a compressed message sent ({} bytes: {:02x?}...) does not inflate with a \
                 {bits}-bit window{}: {e}",
                payload.len(),
                &payload[..payload.len().min(32)],
                if reset {
                    " and without context takeover"
                } else {
                    ""
                }
            )
        })
    }
}

fn inflate_all(inflater: &mut Inflate, input: &[u8]) -> Result<Vec<u8>, String> {
    let (start_in, start_out) = (inflater.total_in(), inflater.total_out());
    let mut out = vec![0; 4 * input.len() + 1024];
    loop {
        let consumed = (inflater.total_in() - start_in) as usize;
        let written = (inflater.total_out() - start_out) as usize;
        if written == out.len() {
            out.resize(2 * out.len(), 0);
        }
        let status = inflater
            .decompress(
                &input[consumed..],
                &mut out[written..],
                InflateFlush::SyncFlush,
            )
            .map_err(|e| e.as_str().to_string())?;
        let now_consumed = (inflater.total_in() - start_in) as usize;
        let now_written = (inflater.total_out() - start_out) as usize;
        if status == Status::StreamEnd {
            return Err("a final block inside a message".to_string());
        }
        if now_consumed == input.len() && now_written < out.len() {
            out.truncate(now_written);
            return Ok(out);
        }
        if now_consumed == consumed && now_written == written && now_written < out.len() {
            return Err(format!(
                "stuck after {now_consumed} of {} bytes",
                input.len()
            ));
        }
    }
}
