//! permessage-deflate (RFC 7692): negotiation in both roles and the per-message codec.
//!
//! Compression uses [zlib-rs](https://crates.io/crates/zlib-rs) (raw deflate, no zlib header),
//! which honours every window size from 9 to 15 bits. zlib cannot *compress* with an 8-bit
//! window; when a peer limits our window to 8 bits we accept and send every message
//! uncompressed, which RFC 7692 allows (RSV1 is per message). Inflating always works: a larger
//! window than the peer's decodes its stream exactly.
//!
//! Memory: a compressor holds about 256 KiB and a decompressor about 40 KiB (15-bit windows).
//! Without context takeover in a direction, the connection holds that direction's state only
//! while a message is being compressed or inflated and gives it back right after, so an idle
//! connection holds nothing; with context takeover the state must live as long as the
//! connection.
//!
//! Given back where? Allocating a compressor for every message costs more than compressing a
//! small one. With the `std` feature the state goes to a small pool of the thread (at most two
//! compressors and two decompressors, reset for their next message), which the
//! next message of any connection on that thread takes; the memory is the thread's, bounded,
//! and the same for 10 connections or 100,000. Without `std` it is freed.

use alloc::string::ToString;
use alloc::vec::Vec;

use bytes::BytesMut;
use zlib_rs::{Deflate, DeflateFlush, Inflate, InflateFlush};

use crate::handshake::{ExtensionOffer, HandshakeError};

/// Idle compressors (and, apart, decompressors) a thread keeps for messages compressed or
/// inflated on their own (no context takeover), with the `std` feature.
#[cfg(feature = "std")]
const POOLED: usize = 2;

/// Compressor and decompressor states of messages without context takeover, kept per thread
/// between messages instead of being freed and allocated again (module documentation).
#[cfg(feature = "std")]
mod pool {
    use alloc::vec::Vec;
    use core::cell::RefCell;

    use zlib_rs::{Deflate, Inflate};

    use super::POOLED;

    /// Every state here is reset, ready for a new stream; the most recently returned is last.
    #[derive(Default)]
    struct Pool {
        /// With the window bits and level they were made for.
        deflaters: Vec<(u8, u8, Deflate)>,
        /// All with 15-bit windows (what `Inflate::reset` sets).
        inflaters: Vec<Inflate>,
    }

    std::thread_local! {
        static POOL: RefCell<Pool> = RefCell::new(Pool::default());
    }

    pub(super) fn take_deflater(bits: u8, level: u8) -> Option<Deflate> {
        POOL.try_with(|pool| {
            let mut pool = pool.try_borrow_mut().ok()?;
            let index = pool
                .deflaters
                .iter()
                .rposition(|(b, l, _)| (*b, *l) == (bits, level))?;
            Some(pool.deflaters.remove(index).2)
        })
        .ok()
        .flatten()
    }

    pub(super) fn give_deflater(bits: u8, level: u8, mut deflater: Deflate) {
        deflater.reset();
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                if pool.deflaters.len() >= POOLED {
                    pool.deflaters.remove(0);
                }
                pool.deflaters.push((bits, level, deflater));
            }
        });
    }

    pub(super) fn take_inflater() -> Option<Inflate> {
        POOL.try_with(|pool| pool.try_borrow_mut().ok()?.inflaters.pop())
            .ok()
            .flatten()
    }

    pub(super) fn give_inflater(mut inflater: Inflate) {
        inflater.reset(false);
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                if pool.inflaters.len() >= POOLED {
                    pool.inflaters.remove(0);
                }
                pool.inflaters.push(inflater);
            }
        });
    }

    /// (compressors, decompressors) idle in this thread's pool.
    #[cfg(test)]
    pub(super) fn idle() -> (usize, usize) {
        POOL.with(|pool| {
            let pool = pool.borrow();
            (pool.deflaters.len(), pool.inflaters.len())
        })
    }
}

/// A compressor for a new stream: from the thread's pool when the message is compressed on its
/// own (`fresh`), else new.
fn new_deflater(bits: u8, level: u8, fresh: bool) -> Deflate {
    #[cfg(feature = "std")]
    if fresh && let Some(deflater) = pool::take_deflater(bits, level) {
        return deflater;
    }
    if fresh {
        // A message compressed on its own resets its compressor after every message, and a
        // reset clears the symbol buffer, whose size follows the memory level: 12 KiB at
        // `FRESH_MEM_LEVEL` instead of 48 KiB at zlib's default of 8. Only a message of more
        // than 4,096 symbols (literals and matches) pays for it, with one more block header.
        return Deflate::new_with_config(zlib_rs::DeflateConfig {
            level: i32::from(level),
            window_bits: -i32::from(bits),
            mem_level: FRESH_MEM_LEVEL,
            ..zlib_rs::DeflateConfig::default()
        });
    }
    Deflate::new(i32::from(level), false, bits)
}

/// zlib's memory level for compressors of messages compressed on their own (`new_deflater`):
/// blocks of up to 4,096 symbols.
const FRESH_MEM_LEVEL: i32 = 6;

/// Done with a compressor whose message ended (no context takeover).
fn recycle_deflater(bits: u8, level: u8, deflater: Deflate) {
    #[cfg(feature = "std")]
    pool::give_deflater(bits, level, deflater);
    #[cfg(not(feature = "std"))]
    let _ = (bits, level, deflater);
}

/// A decompressor for a new stream. Only 15-bit ones are pooled (a reset sets 15 bits; a
/// smaller window than the peer's limit would not do, a larger one would accept more).
fn new_inflater(bits: u8, fresh: bool) -> Inflate {
    #[cfg(feature = "std")]
    if fresh
        && bits == 15
        && let Some(inflater) = pool::take_inflater()
    {
        return inflater;
    }
    let _ = fresh;
    Inflate::new(false, bits)
}

/// Done with a decompressor whose message ended (no context takeover).
fn recycle_inflater(bits: u8, inflater: Inflate) {
    #[cfg(feature = "std")]
    if bits == 15 {
        pool::give_inflater(inflater);
    }
    #[cfg(not(feature = "std"))]
    let _ = (bits, inflater);
}

/// The extension token.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The bytes RFC 7692 §7.2.1 strips from the end of every compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What a server accepts or a client offers.
///
/// Server: `server_*` bound what the server's compressor uses and `client_*` what it asks of the
/// client; offers are accepted in the client's order of preference. Client: the same fields make
/// up the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// The server never reuses its compression context between messages.
    pub server_no_context_takeover: bool,
    /// The client never reuses its compression context between messages.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window of the server's compressor, 9..=15 bits.
    pub server_max_window_bits: u8,
    /// Largest LZ77 window of the client's compressor, 9..=15 bits.
    pub client_max_window_bits: u8,
    /// zlib level 0..=9 (1 fastest, 9 smallest).
    pub level: u8,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 6,
            threshold: 32,
        }
    }
}

impl DeflateConfig {
    /// Clamps the fields to what can be used (window bits 9..=15, level 0..=9).
    fn clamped(&self) -> DeflateConfig {
        DeflateConfig {
            server_max_window_bits: self.server_max_window_bits.clamp(9, 15),
            client_max_window_bits: self.client_max_window_bits.clamp(9, 15),
            level: self.level.min(9),
            ..self.clone()
        }
    }

    /// The client's offers, most preferred first: this configuration, then (unless it already
    /// says so) the same with `client_no_context_takeover`, for servers that only accept
    /// clients which compress each message on its own. A response that includes
    /// `client_no_context_takeover` is honoured; one that omits it accepted the first offer.
    pub fn offers(&self) -> Vec<ExtensionOffer> {
        let first = self.offer();
        if self.client_no_context_takeover {
            return alloc::vec![first];
        }
        let second = DeflateConfig {
            client_no_context_takeover: true,
            ..self.clone()
        }
        .offer();
        alloc::vec![first, second]
    }

    /// The client's offer (`Sec-WebSocket-Extensions` of the request).
    pub fn offer(&self) -> ExtensionOffer {
        let c = self.clamped();
        let mut offer = ExtensionOffer::new(PERMESSAGE_DEFLATE);
        if c.server_no_context_takeover {
            offer
                .params
                .push(("server_no_context_takeover".into(), None));
        }
        if c.client_no_context_takeover {
            offer
                .params
                .push(("client_no_context_takeover".into(), None));
        }
        if c.server_max_window_bits < 15 {
            offer.params.push((
                "server_max_window_bits".into(),
                Some(c.server_max_window_bits.to_string()),
            ));
        }
        // Always say we can limit our window: servers that want it smaller may then ask.
        let client_bits =
            (c.client_max_window_bits < 15).then(|| c.client_max_window_bits.to_string());
        offer
            .params
            .push(("client_max_window_bits".into(), client_bits));
        offer
    }
}

/// The parameters both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: u8,
    pub client_max_window_bits: u8,
}

/// The parameters of one offer or response, each at most once.
#[derive(Debug, Default)]
struct ParsedParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn window_bits(value: &str) -> Option<u8> {
    // 1*DIGIT in 8..=15, without a leading zero or sign.
    if value.is_empty() || value.len() > 2 || value.starts_with('0') {
        return None;
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

fn parse_params(ext: &ExtensionOffer) -> Result<ParsedParams, &'static str> {
    let mut p = ParsedParams::default();
    let mut seen = [false; 4];
    for (name, value) in &ext.params {
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return Err("unknown permessage-deflate parameter"),
        };
        if seen[index] {
            return Err("duplicate permessage-deflate parameter");
        }
        seen[index] = true;
        match index {
            0 | 1 => {
                if value.is_some() {
                    return Err("no_context_takeover takes no value");
                }
                if index == 0 {
                    p.server_no_context_takeover = true;
                } else {
                    p.client_no_context_takeover = true;
                }
            }
            2 => {
                let bits = value
                    .as_deref()
                    .and_then(window_bits)
                    .ok_or("server_max_window_bits must be 8..15")?;
                p.server_max_window_bits = Some(bits);
            }
            _ => {
                let bits = match value.as_deref() {
                    None => None,
                    Some(v) => Some(window_bits(v).ok_or("client_max_window_bits must be 8..15")?),
                };
                p.client_max_window_bits = Some(bits);
            }
        }
    }
    Ok(p)
}

/// Server: picks the first acceptable permessage-deflate offer. Offers with unknown, duplicate
/// or invalid parameters are declined (RFC 7692 §5); the next one is considered. Returns the
/// agreed parameters and the response extension.
pub fn negotiate(
    offers: &[ExtensionOffer],
    policy: &DeflateConfig,
) -> Option<(DeflateParams, ExtensionOffer)> {
    let policy = policy.clamped();
    for offer in offers {
        if !offer.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
            continue;
        }
        let Ok(p) = parse_params(offer) else {
            continue;
        };
        let params = DeflateParams {
            server_no_context_takeover: p.server_no_context_takeover
                || policy.server_no_context_takeover,
            client_no_context_takeover: p.client_no_context_takeover
                || policy.client_no_context_takeover,
            server_max_window_bits: p
                .server_max_window_bits
                .map_or(policy.server_max_window_bits, |b| {
                    b.min(policy.server_max_window_bits)
                }),
            client_max_window_bits: match p.client_max_window_bits {
                // Without the parameter the client cannot be limited.
                None => 15,
                Some(bits) => bits.unwrap_or(15).min(policy.client_max_window_bits),
            },
        };
        let mut response = ExtensionOffer::new(PERMESSAGE_DEFLATE);
        if params.server_no_context_takeover {
            response
                .params
                .push(("server_no_context_takeover".into(), None));
        }
        if params.client_no_context_takeover {
            response
                .params
                .push(("client_no_context_takeover".into(), None));
        }
        if p.server_max_window_bits.is_some() || params.server_max_window_bits < 15 {
            response.params.push((
                "server_max_window_bits".into(),
                Some(params.server_max_window_bits.to_string()),
            ));
        }
        if p.client_max_window_bits.is_some() && params.client_max_window_bits < 15 {
            response.params.push((
                "client_max_window_bits".into(),
                Some(params.client_max_window_bits.to_string()),
            ));
        }
        return Some((params, response));
    }
    None
}

/// Client: checks the server's response against what we offered (RFC 7692 §7.1). Anything
/// invalid fails the connection.
pub fn accept_response(
    response: &ExtensionOffer,
    offered: &DeflateConfig,
) -> Result<DeflateParams, HandshakeError> {
    let invalid = |reason| HandshakeError::InvalidHeader {
        name: "Sec-WebSocket-Extensions",
        reason,
    };
    let offered = offered.clamped();
    let p = parse_params(response).map_err(invalid)?;
    if offered.server_no_context_takeover && !p.server_no_context_takeover {
        return Err(invalid("server ignored server_no_context_takeover"));
    }
    let server_bits = match p.server_max_window_bits {
        Some(bits)
            if offered.server_max_window_bits < 15 && bits > offered.server_max_window_bits =>
        {
            return Err(invalid("server_max_window_bits above the offer"));
        }
        Some(bits) => bits,
        None if offered.server_max_window_bits < 15 => {
            return Err(invalid("server ignored server_max_window_bits"));
        }
        None => 15,
    };
    let client_bits = match p.client_max_window_bits {
        Some(None) => {
            return Err(invalid(
                "client_max_window_bits needs a value in a response",
            ));
        }
        Some(Some(bits)) => bits.min(offered.client_max_window_bits),
        None => offered.client_max_window_bits,
    };
    Ok(DeflateParams {
        server_no_context_takeover: p.server_no_context_takeover,
        client_no_context_takeover: p.client_no_context_takeover
            || offered.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    })
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateFailure {
    /// Not a valid deflate stream.
    Invalid,
    /// The inflated message would exceed the size limit.
    TooLarge,
}

/// The per-connection codec for the agreed parameters, from one side's point of view.
pub(crate) struct Codec {
    /// Window of our compressor; 0 when we must not compress (an 8-bit window).
    deflate_bits: u8,
    deflate_reset: bool,
    inflate_bits: u8,
    inflate_reset: bool,
    level: u8,
    threshold: usize,
    deflater: Option<Deflate>,
    inflater: Option<Inflate>,
    /// The message being inflated contained a final deflate block; the rest is padding.
    inflate_ended: bool,
}

impl core::fmt::Debug for Codec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Codec")
            .field("deflate_bits", &self.deflate_bits)
            .field("deflate_reset", &self.deflate_reset)
            .field("inflate_bits", &self.inflate_bits)
            .field("inflate_reset", &self.inflate_reset)
            .field("deflater", &self.deflater.is_some())
            .field("inflater", &self.inflater.is_some())
            .finish()
    }
}

impl Codec {
    /// `is_server`: which side of `params` we are. `config` gives level and threshold.
    pub(crate) fn new(params: DeflateParams, is_server: bool, config: &DeflateConfig) -> Codec {
        let config = config.clamped();
        let (ours, our_reset, theirs, their_reset) = if is_server {
            (
                params
                    .server_max_window_bits
                    .min(config.server_max_window_bits),
                params.server_no_context_takeover,
                params.client_max_window_bits,
                params.client_no_context_takeover,
            )
        } else {
            (
                params
                    .client_max_window_bits
                    .min(config.client_max_window_bits),
                params.client_no_context_takeover,
                params.server_max_window_bits,
                params.server_no_context_takeover,
            )
        };
        Codec {
            deflate_bits: if ours >= 9 { ours } else { 0 },
            deflate_reset: our_reset,
            inflate_bits: theirs.max(9),
            inflate_reset: their_reset,
            level: config.level,
            threshold: config.threshold,
            deflater: None,
            inflater: None,
            inflate_ended: false,
        }
    }

    /// Whether a message of `len` bytes should be compressed.
    pub(crate) fn should_compress(&self, len: usize) -> bool {
        self.deflate_bits != 0 && len >= self.threshold
    }

    /// When our compressor starts afresh for every message (no context takeover), its output
    /// depends only on the message and this key (window bits, level): connections with equal
    /// keys can share one compressed copy of a broadcast. `None` with context takeover.
    pub(crate) fn shared_key(&self) -> Option<(u8, u8)> {
        (self.deflate_reset && self.deflate_bits != 0 && self.deflater.is_none())
            .then_some((self.deflate_bits, self.level))
    }

    /// Whether streamed messages (size unknown) are compressed.
    pub(crate) fn compresses_streams(&self) -> bool {
        self.deflate_bits != 0
    }

    /// Compresses one piece of a message into `out` (appending). `last`: the message ends
    /// here, so the RFC 7692 tail is stripped and, without context takeover, the state goes.
    pub(crate) fn compress(&mut self, data: &[u8], last: bool, out: &mut Vec<u8>) {
        let start_len = out.len();
        let (bits, level, fresh) = (self.deflate_bits, self.level, self.deflate_reset);
        let deflater = self
            .deflater
            .get_or_insert_with(|| new_deflater(bits, level, fresh));
        let start_in = deflater.total_in();
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve((data.len() - consumed) / 2 + 64);
            }
            let len = out.len();
            out.resize(out.capacity(), 0);
            let before_out = deflater.total_out();
            let result =
                deflater.compress(&data[consumed..], &mut out[len..], DeflateFlush::SyncFlush);
            let written = (deflater.total_out() - before_out) as usize;
            out.truncate(len + written);
            let before = consumed;
            consumed = (deflater.total_in() - start_in) as usize;
            let full = out.len() == out.capacity();
            if written == 0 && consumed == before && !full {
                break; // no progress possible (never seen; keeps the loop bounded)
            }
            // A sync flush is complete once all input is taken and the output had room left.
            if result.is_err() || (consumed >= data.len() && !full) {
                break;
            }
        }
        if last {
            if out.ends_with(&TAIL) {
                out.truncate(out.len() - TAIL.len());
            }
            if out.len() == start_len {
                // Nothing came out (an empty message after a flush): the receiver appends the
                // tail, which is only a valid empty stored block after a byte holding its
                // 3 header bits, as zlib writes it.
                out.push(0x00);
            }
            if self.deflate_reset
                && let Some(deflater) = self.deflater.take()
            {
                recycle_deflater(bits, level, deflater);
            }
        }
    }

    /// Inflates one frame's payload of a compressed message, appending to `out`, which must
    /// not grow beyond `limit` bytes. `last`: the final frame (the tail is appended).
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), InflateFailure> {
        let (bits, fresh) = (self.inflate_bits, self.inflate_reset);
        let inflater = self
            .inflater
            .get_or_insert_with(|| new_inflater(bits, fresh));
        let result = if self.inflate_ended {
            // The peer ended its deflate stream (a final block) earlier in this message:
            // RFC 7692 §7.2.3.4 pads after it; nothing more is data.
            Ok(Flow::Ended)
        } else {
            inflate_all(inflater, input, out, limit).and_then(|flow| match flow {
                Flow::More if last => inflate_all(inflater, &TAIL, out, limit),
                flow => Ok(flow),
            })
        };
        let ended = matches!(result, Ok(Flow::Ended));
        self.inflate_ended = ended && !last;
        if result.is_err() || (last && (self.inflate_reset || ended)) {
            // A stream that ended cannot continue: the next message starts a new one.
            let inflater = self.inflater.take();
            if let (Ok(_), Some(inflater), true) = (&result, inflater, self.inflate_reset) {
                recycle_inflater(bits, inflater);
            }
        }
        result.map(|_| ())
    }

    /// Forgets a message whose inflation failed half-way (the connection is failing anyway).
    pub(crate) fn release(&mut self) {
        self.deflater = None;
        self.inflater = None;
        self.inflate_ended = false;
    }
}

/// Makes room for `needed` bytes, doubling like a `Vec` but never allocating beyond `cap`, so
/// a decompression bomb costs at most the message limit.
fn grow_within(out: &mut BytesMut, needed: usize, cap: usize) {
    if out.capacity() >= needed {
        return;
    }
    let target = needed
        .max(out.capacity().saturating_mul(2))
        .min(cap.max(needed));
    let mut grown = BytesMut::with_capacity(target);
    grown.extend_from_slice(out);
    *out = grown;
}

/// How a piece of input left the deflate stream.
enum Flow {
    /// All input taken; the stream goes on.
    More,
    /// A final block ended the stream; any input after it is ignored.
    Ended,
}

fn inflate_all(
    inflater: &mut Inflate,
    input: &[u8],
    out: &mut BytesMut,
    limit: usize,
) -> Result<Flow, InflateFailure> {
    let start_in = inflater.total_in();
    loop {
        let consumed = (inflater.total_in() - start_in) as usize;
        // Room for the output, never beyond the limit plus one byte (to detect overflow).
        let room = (limit + 1).saturating_sub(out.len());
        if room == 0 {
            return Err(InflateFailure::TooLarge);
        }
        let chunk = room.min(
            input
                .len()
                .saturating_sub(consumed)
                .saturating_mul(4)
                .max(16 * 1024),
        );
        let len = out.len();
        grow_within(out, len + chunk, limit + 1);
        out.resize(len + chunk, 0);
        let before_out = inflater.total_out();
        let result =
            inflater.decompress(&input[consumed..], &mut out[len..], InflateFlush::SyncFlush);
        let written = (inflater.total_out() - before_out) as usize;
        out.truncate(len + written);
        if out.len() > limit {
            return Err(InflateFailure::TooLarge);
        }
        match result {
            Err(_) => return Err(InflateFailure::Invalid),
            Ok(zlib_rs::Status::StreamEnd) => return Ok(Flow::Ended),
            Ok(_) => {
                let now_consumed = (inflater.total_in() - start_in) as usize;
                if now_consumed >= input.len() && written < chunk {
                    return Ok(Flow::More);
                }
                if written == 0 && now_consumed == consumed {
                    // No progress with room to write: the stream cannot go on.
                    return if now_consumed >= input.len() {
                        Ok(Flow::More)
                    } else {
                        Err(InflateFailure::Invalid)
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;

    fn ext(s: &str) -> Vec<ExtensionOffer> {
        ExtensionOffer::parse_list(s).unwrap()
    }

    fn header(e: &ExtensionOffer) -> String {
        e.to_header_value()
    }

    #[test]
    fn server_accepts_a_plain_offer() {
        let (params, response) =
            negotiate(&ext("permessage-deflate"), &DeflateConfig::default()).unwrap();
        assert_eq!(header(&response), "permessage-deflate");
        assert_eq!(params.server_max_window_bits, 15);
        assert_eq!(params.client_max_window_bits, 15);
    }

    #[test]
    fn server_answers_every_parameter() {
        let offers = ext(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits",
        );
        let policy = DeflateConfig {
            client_max_window_bits: 12,
            ..DeflateConfig::default()
        };
        let (params, response) = negotiate(&offers, &policy).unwrap();
        assert_eq!(
            header(&response),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        );
        assert!(params.server_no_context_takeover && params.client_no_context_takeover);
        assert_eq!(
            (params.server_max_window_bits, params.client_max_window_bits),
            (10, 12)
        );
    }

    #[test]
    fn server_limits_the_client_only_when_it_offered_to_be_limited() {
        let policy = DeflateConfig {
            client_max_window_bits: 10,
            server_max_window_bits: 11,
            ..DeflateConfig::default()
        };
        let (params, response) = negotiate(&ext("permessage-deflate"), &policy).unwrap();
        assert_eq!(
            header(&response),
            "permessage-deflate; server_max_window_bits=11"
        );
        assert_eq!(params.client_max_window_bits, 15);
        let (params, response) = negotiate(
            &ext("permessage-deflate; client_max_window_bits=9"),
            &policy,
        )
        .unwrap();
        assert_eq!(
            header(&response),
            "permessage-deflate; server_max_window_bits=11; client_max_window_bits=9"
        );
        assert_eq!(params.client_max_window_bits, 9);
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_is_taken() {
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
        ] {
            assert!(
                negotiate(&ext(bad), &DeflateConfig::default()).is_none(),
                "{bad}"
            );
            let two = alloc::format!("{bad}, permessage-deflate; client_max_window_bits=10");
            let (params, _) = negotiate(&ext(&two), &DeflateConfig::default()).unwrap();
            assert_eq!(params.client_max_window_bits, 10, "{bad}");
        }
        assert!(negotiate(&ext("x-webkit-deflate-frame"), &DeflateConfig::default()).is_none());
    }

    #[test]
    fn client_validates_responses() {
        let offer = DeflateConfig::default();
        let ok = accept_response(&ext("permessage-deflate")[0], &offer).unwrap();
        assert_eq!(ok.client_max_window_bits, 15);
        let limited = accept_response(
            &ext("permessage-deflate; client_max_window_bits=9")[0],
            &offer,
        )
        .unwrap();
        assert_eq!(limited.client_max_window_bits, 9);
        for bad in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=20",
            "permessage-deflate; foo=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            assert!(accept_response(&ext(bad)[0], &offer).is_err(), "{bad}");
        }
        let strict = DeflateConfig {
            server_max_window_bits: 10,
            server_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert!(
            accept_response(
                &ext("permessage-deflate; server_no_context_takeover")[0],
                &strict
            )
            .is_err()
        );
        assert!(
            accept_response(
                &ext("permessage-deflate; server_no_context_takeover; server_max_window_bits=11")
                    [0],
                &strict
            )
            .is_err()
        );
        let p = accept_response(
            &ext("permessage-deflate; server_no_context_takeover; server_max_window_bits=9")[0],
            &strict,
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, 9);
    }

    #[test]
    fn the_offer_round_trips_through_negotiation() {
        let cfg = DeflateConfig {
            client_no_context_takeover: true,
            server_max_window_bits: 12,
            ..DeflateConfig::default()
        };
        let offer = cfg.offer();
        assert_eq!(
            header(&offer),
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12; \
             client_max_window_bits"
        );
        let (server_params, response) = negotiate(&[offer], &DeflateConfig::default()).unwrap();
        let client_params = accept_response(&response, &cfg).unwrap();
        assert_eq!(server_params, client_params);
    }

    fn pair(params: DeflateParams) -> (Codec, Codec) {
        pair_at(params, DeflateConfig::default().level)
    }

    /// A client and a server codec compressing at zlib `level`, with no threshold.
    fn pair_at(params: DeflateParams, level: u8) -> (Codec, Codec) {
        let cfg = DeflateConfig {
            threshold: 0,
            level,
            ..DeflateConfig::default()
        };
        (
            Codec::new(params, false, &cfg),
            Codec::new(params, true, &cfg),
        )
    }

    fn round_trip(sender: &mut Codec, receiver: &mut Codec, msg: &[u8]) -> usize {
        let mut wire = Vec::new();
        sender.compress(msg, true, &mut wire);
        let mut out = BytesMut::new();
        receiver
            .decompress(&wire, true, &mut out, usize::MAX - 1)
            .unwrap();
        assert_eq!(&out[..], msg);
        wire.len()
    }

    #[test]
    fn codec_round_trips_with_and_without_context_takeover() {
        let chat = b"{\"type\":\"message\",\"room\":\"app/general\",\"text\":\"hello everyone\"}";
        for takeover in [false, true] {
            let params = DeflateParams {
                server_no_context_takeover: !takeover,
                client_no_context_takeover: !takeover,
                server_max_window_bits: 15,
                client_max_window_bits: 15,
            };
            let (mut client, mut server) = pair(params);
            let first = round_trip(&mut client, &mut server, chat);
            let second = round_trip(&mut client, &mut server, chat);
            if takeover {
                assert!(second < first / 2, "{second} vs {first}: the context helps");
                assert!(client.deflater.is_some() && server.inflater.is_some());
            } else {
                assert_eq!(first, second);
                assert!(
                    client.deflater.is_none() && server.inflater.is_none(),
                    "released"
                );
            }
            round_trip(&mut server, &mut client, &[]);
            let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 13) as u8).collect();
            round_trip(&mut server, &mut client, &big);
        }
    }

    #[test]
    fn every_window_size_round_trips() {
        let data: Vec<u8> = (0..50_000u32).map(|i| ((i * i) % 251) as u8).collect();
        for bits in 9..=15 {
            let params = DeflateParams {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: bits,
                client_max_window_bits: bits,
            };
            let (mut client, mut server) = pair(params);
            round_trip(&mut client, &mut server, &data);
            round_trip(&mut server, &mut client, &data);
        }
        // An 8-bit window for our compressor: messages go uncompressed.
        let params = DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 8,
            client_max_window_bits: 15,
        };
        let (client, server) = pair(params);
        assert!(!server.should_compress(1000));
        assert!(client.should_compress(1000));
    }

    #[test]
    fn messages_compressed_alone_round_trip_at_levels_and_windows() {
        // Many blocks of `FRESH_MEM_LEVEL`'s 4,096 symbols, text and less compressible bytes.
        let text: Vec<u8> = (0..6_000u32)
            .flat_map(|i| {
                alloc::format!("{{\"seq\":{i},\"text\":\"hello {}\"}}", i % 97).into_bytes()
            })
            .collect();
        let noisy: Vec<u8> = (0..30_000u32).map(|i| ((i * i) % 251) as u8).collect();
        for level in [0, 1, 2, 4, 6, 9] {
            for bits in [9, 15] {
                let params = DeflateParams {
                    server_max_window_bits: bits,
                    client_max_window_bits: bits,
                    ..no_takeover()
                };
                let (mut client, mut server) = pair_at(params, level);
                for msg in [&text[..], &noisy, b"short", &text] {
                    let size = round_trip(&mut server, &mut client, msg);
                    if level > 0 && msg.len() == text.len() {
                        assert!(size < msg.len() / 3, "level {level}, {bits} bits: {size}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit() {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        };
        let (mut client, mut server) = pair(params);
        let zeros = vec![0u8; 10 << 20];
        let mut wire = Vec::new();
        client.compress(&zeros, true, &mut wire);
        assert!(wire.len() < 20_000, "{}", wire.len());
        let mut out = BytesMut::new();
        let limit = 1 << 20;
        assert_eq!(
            server.decompress(&wire, true, &mut out, limit),
            Err(InflateFailure::TooLarge)
        );
        assert!(out.capacity() <= limit + 64 * 1024, "{}", out.capacity());
        // Garbage is invalid, not a panic.
        let mut out = BytesMut::new();
        assert_eq!(
            server.decompress(&[0xff, 0xff, 0xff, 0x00, 0x12], true, &mut out, limit),
            Err(InflateFailure::Invalid)
        );
    }

    fn takeover() -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }

    #[test]
    fn rfc7692_examples_inflate() {
        let (_, mut server) = pair(takeover());
        for payload in [
            &[0xf2u8, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00][..], // §7.2.3.1
            &[0xf2, 0x00, 0x11, 0x00, 0x00],                   // §7.2.3.2, shares the window
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00], // §7.2.3.4, BFINAL + padding
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],       // a new stream after that one
        ] {
            let mut out = BytesMut::new();
            server.decompress(payload, true, &mut out, 1000).unwrap();
            assert_eq!(&out[..], b"Hello", "{payload:x?}");
        }
        // §7.2.3.3: no compression (a stored block).
        let mut out = BytesMut::new();
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        server.decompress(&stored, true, &mut out, 1000).unwrap();
        assert_eq!(&out[..], b"Hello");
    }

    #[test]
    fn empty_messages_keep_the_stream_valid() {
        let (mut client, mut server) = pair(takeover());
        for msg in [&b""[..], b"", b"abc", b"", b"abc"] {
            round_trip(&mut client, &mut server, msg);
        }
        // A streamed message whose last piece is empty.
        let mut frames = Vec::new();
        for (piece, last) in [(&b"Hello"[..], false), (b"", true)] {
            let mut wire = Vec::new();
            client.compress(piece, last, &mut wire);
            frames.push((wire, last));
        }
        let mut out = BytesMut::new();
        for (f, last) in &frames {
            server.decompress(f, *last, &mut out, 1000).unwrap();
        }
        assert_eq!(&out[..], b"Hello");
        round_trip(&mut client, &mut server, b"after");
    }

    fn no_takeover() -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }

    /// What a compressor that never compressed anything makes of `msg`: on a thread of its own,
    /// whose pool is empty.
    fn compressed_by_a_new_state(msg: &[u8]) -> Vec<u8> {
        let msg = msg.to_vec();
        std::thread::spawn(move || {
            let (mut client, _) = pair(no_takeover());
            let mut wire = Vec::new();
            client.compress(&msg, true, &mut wire);
            wire
        })
        .join()
        .unwrap()
    }

    /// Runs `test` on a thread of its own, so the thread's pool starts empty whatever ran before.
    fn on_new_thread(test: fn()) {
        std::thread::spawn(test).join().unwrap();
    }

    #[test]
    fn without_takeover_a_reused_state_compresses_like_a_new_one() {
        on_new_thread(reused_state_compresses_like_a_new_one);
    }

    fn reused_state_compresses_like_a_new_one() {
        let (mut client, mut server) = pair(no_takeover());
        let chat = b"{\"type\":\"message\",\"room\":\"app/general\",\"text\":\"hello everyone\"}";
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 13) as u8).collect();
        let other: Vec<u8> = (0..5_000u32).map(|i| ((i * i) % 251) as u8).collect();
        for msg in [&chat[..], &big, chat, &other, b"", chat] {
            let mut wire = Vec::new();
            client.compress(msg, true, &mut wire);
            assert_eq!(wire, compressed_by_a_new_state(msg), "{} bytes", msg.len());
            assert!(
                client.deflater.is_none(),
                "an idle connection holds no compressor"
            );
            let mut out = BytesMut::new();
            server
                .decompress(&wire, true, &mut out, usize::MAX - 1)
                .unwrap();
            assert_eq!(&out[..], msg);
            assert!(server.inflater.is_none(), "nor a decompressor");
            #[cfg(feature = "std")]
            assert_eq!(pool::idle(), (1, 1), "one of each, reused");
        }
        // A streamed message keeps its compressor until its last piece.
        let mut frames = Vec::new();
        for (piece, last) in [(&b"hello "[..], false), (b"world", true)] {
            let mut wire = Vec::new();
            client.compress(piece, last, &mut wire);
            assert_eq!(client.deflater.is_some(), !last);
            frames.push((wire, last));
        }
        let mut out = BytesMut::new();
        for (wire, last) in &frames {
            server.decompress(wire, *last, &mut out, 1000).unwrap();
            assert_eq!(server.inflater.is_some(), !last);
        }
        assert_eq!(&out[..], b"hello world");
        // A failed inflation does not put a broken state back.
        let mut out = BytesMut::new();
        assert!(
            server
                .decompress(&[0xff, 0xff, 0xff], true, &mut out, 1000)
                .is_err()
        );
        round_trip(&mut client, &mut server, chat);
    }

    #[cfg(feature = "std")]
    #[test]
    fn the_pool_is_bounded_and_keyed_by_window_and_level() {
        on_new_thread(pool_is_bounded);
    }

    #[cfg(feature = "std")]
    fn pool_is_bounded() {
        let cfg = |level| DeflateConfig {
            threshold: 0,
            level,
            ..DeflateConfig::default()
        };
        let mut codecs: Vec<Codec> = [(15, 6), (15, 1), (12, 6), (15, 6)]
            .into_iter()
            .map(|(bits, level)| {
                let params = DeflateParams {
                    server_max_window_bits: bits,
                    ..no_takeover()
                };
                Codec::new(params, true, &cfg(level))
            })
            .collect();
        // Four streamed messages in progress at once: four states, then all given back.
        for codec in &mut codecs {
            codec.compress(b"piece", false, &mut Vec::new());
        }
        for codec in &mut codecs {
            codec.compress(b"end", true, &mut Vec::new());
        }
        assert_eq!(pool::idle().0, POOLED);
        // A 9-bit decompressor is never pooled (a reset would widen it to 15 bits).
        let params = DeflateParams {
            client_max_window_bits: 9,
            ..no_takeover()
        };
        let (mut client, mut server) = pair(params);
        round_trip(&mut client, &mut server, b"some text, some text, some text");
        assert_eq!(pool::idle().1, 0);
    }

    #[test]
    fn streamed_pieces_inflate_to_the_whole() {
        let params = DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        };
        let (mut client, mut server) = pair(params);
        let mut frames = Vec::new();
        for (i, piece) in [&b"hello "[..], b"streamed ", b"world"].iter().enumerate() {
            let mut wire = Vec::new();
            client.compress(piece, i == 2, &mut wire);
            frames.push(wire);
        }
        let mut out = BytesMut::new();
        for (i, f) in frames.iter().enumerate() {
            server.decompress(f, i == 2, &mut out, 1000).unwrap();
        }
        assert_eq!(&out[..], b"hello streamed world");
    }
}
