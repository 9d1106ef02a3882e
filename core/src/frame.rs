//! Frame header encoding and decoding (RFC 6455 §5.2).
//!
//! Only the header is handled here; the payload stays in the caller's buffer so it can be
//! unmasked in place ([`crate::mask`]) and handed out without a copy.

use alloc::vec::Vec;

use crate::close::CloseCode;

/// Longest possible header: 2 fixed bytes, an 8-byte length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// What a frame carries (RFC 6455 §5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// The next fragment of a fragmented message.
    Continuation = 0x0,
    /// The first (or only) frame of a text message.
    Text = 0x1,
    /// The first (or only) frame of a binary message.
    Binary = 0x2,
    /// Starts or answers the closing handshake.
    Close = 0x8,
    /// Asks the peer for a pong.
    Ping = 0x9,
    /// Answers a ping, or serves as an unsolicited heartbeat.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for the low 4 bits of a frame's first byte; `None` for reserved values.
    pub fn from_u8(v: u8) -> Option<OpCode> {
        match v {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The 4-bit value sent on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Close, ping or pong: at most 125 bytes, never fragmented, may arrive between fragments.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }

    /// Continuation, text or binary: part of a message.
    pub fn is_data(self) -> bool {
        !self.is_control()
    }
}

/// A frame header as it appears on the wire, minus the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of its message.
    pub fin: bool,
    /// Reserved bit 1 (permessage-deflate uses it to mark a compressed message).
    pub rsv1: bool,
    /// Reserved bit 2.
    pub rsv2: bool,
    /// Reserved bit 3.
    pub rsv3: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// Masking key; clients must mask every frame, servers must not mask any.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes; must stay below 2^63 to be encodable.
    pub payload_len: u64,
}

/// A header that breaks RFC 6455 whoever sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Opcodes 0x3–0x7 and 0xB–0xF are reserved for future use.
    #[error("reserved opcode {0:#x}")]
    ReservedOpCode(u8),
    /// A 64-bit length must have its most significant bit clear.
    #[error("64-bit payload length with the most significant bit set")]
    LengthOverflow,
    /// A control frame longer than [`MAX_CONTROL_PAYLOAD`].
    #[error("control frame payload of {0} bytes (at most 125 allowed)")]
    ControlFrameTooLong(u64),
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
}

impl FrameError {
    /// The code to close the connection with: every malformed header is a protocol error.
    pub fn close_code(self) -> CloseCode {
        CloseCode::Protocol
    }
}

/// A header encoded on the stack.
#[derive(Debug, Clone, Copy)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: usize,
}

impl EncodedHeader {
    /// The encoded bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// Number of encoded bytes: 2 to [`MAX_HEADER_LEN`].
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Never true for a real header; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(slot) = self.bytes.get_mut(self.len..end) {
            slot.copy_from_slice(bytes);
            self.len = end;
        }
    }
}

impl AsRef<[u8]> for EncodedHeader {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;
const OPCODE: u8 = 0x0F;
const MASKED: u8 = 0x80;
const LEN7: u8 = 0x7F;
/// 7-bit length values announcing a 16-bit and a 64-bit extended length.
const LEN16_MARKER: u8 = 126;
const LEN64_MARKER: u8 = 127;

/// The header of a final, uncompressed text or binary frame with a 7- or 16-bit length, as
/// [`FrameHeader::decode_short_data`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShortData {
    pub(crate) text: bool,
    pub(crate) mask: Option<[u8; 4]>,
    pub(crate) len: usize,
    pub(crate) header_len: usize,
}

impl FrameHeader {
    /// The header at the start of `buf` when it is that of the usual data frame: final, no
    /// RSV bit, text or binary, a length under 64 KiB. `None` for any other header and when
    /// `buf` holds less than the header; [`FrameHeader::decode`] judges those. A few
    /// comparisons, for the receive path's common case.
    #[inline]
    pub(crate) fn decode_short_data(buf: &[u8]) -> Option<ShortData> {
        let &[first, second, ..] = buf else {
            return None;
        };
        let text = match first {
            b if b == FIN | OpCode::Text as u8 => true,
            b if b == FIN | OpCode::Binary as u8 => false,
            _ => return None,
        };
        let (len, len_end) = match second & LEN7 {
            LEN16_MARKER => (
                usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
                4,
            ),
            LEN64_MARKER => return None,
            len7 => (usize::from(len7), 2),
        };
        let (mask, header_len) = if second & MASKED != 0 {
            (
                Some(buf.get(len_end..len_end + 4)?.try_into().ok()?),
                len_end + 4,
            )
        } else {
            (None, len_end)
        };
        Some(ShortData {
            text,
            mask,
            len,
            header_len,
        })
    }

    /// Decodes the header at the start of `buf`. `Ok(None)`: more bytes needed.
    /// `Ok(Some((header, header_len)))`: the payload starts at `buf[header_len..]`.
    ///
    /// Structural checks only (reserved opcode, length MSB, control frame length/fragmentation);
    /// role-dependent checks (masking, RSV) are the connection's job. Each error is reported as
    /// soon as the bytes that prove it have arrived, before the rest of the header.
    ///
    /// Lengths in a longer form than needed are accepted: they are harmless, and rejecting them
    /// would fail peers that pre-size headers.
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let opcode_bits = first & OPCODE;
        let opcode = OpCode::from_u8(opcode_bits).ok_or(FrameError::ReservedOpCode(opcode_bits))?;
        let fin = first & FIN != 0;
        if opcode.is_control() && !fin {
            return Err(FrameError::FragmentedControlFrame);
        }

        let Some(&second) = buf.get(1) else {
            return Ok(None);
        };
        let masked = second & MASKED != 0;
        let (payload_len, len_end) = match second & LEN7 {
            LEN16_MARKER => match buf.get(2..4) {
                Some(&[high, low]) => (u64::from(u16::from_be_bytes([high, low])), 4),
                _ => return Ok(None),
            },
            LEN64_MARKER => match buf.get(2..10).map(<[u8; 8]>::try_from) {
                Some(Ok(bytes)) => {
                    let len = u64::from_be_bytes(bytes);
                    if len >> 63 != 0 {
                        return Err(FrameError::LengthOverflow);
                    }
                    (len, 10)
                }
                _ => return Ok(None),
            },
            len7 => (u64::from(len7), 2),
        };
        if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(FrameError::ControlFrameTooLong(payload_len));
        }

        let (mask, header_len) = if masked {
            match buf.get(len_end..len_end + 4).map(<[u8; 4]>::try_from) {
                Some(Ok(key)) => (Some(key), len_end + 4),
                _ => return Ok(None),
            }
        } else {
            (None, len_end)
        };

        let header = FrameHeader {
            fin,
            rsv1: first & RSV1 != 0,
            rsv2: first & RSV2 != 0,
            rsv3: first & RSV3 != 0,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, header_len)))
    }

    /// Length of the encoded header: 2 + (0|2|8) + (0|4), using the shortest length form, as
    /// RFC 6455 §5.2 requires.
    pub fn encoded_len(&self) -> usize {
        let extended_len = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        let mask_len = if self.mask.is_some() { 4 } else { 0 };
        2 + extended_len + mask_len
    }

    /// The whole encoded header when it is two bytes (unmasked, a payload of at most 125
    /// bytes: a server's usual frame), without [`FrameHeader::encode`]'s general buffer.
    pub(crate) fn encode_short(&self) -> Option<[u8; 2]> {
        (self.mask.is_none() && self.payload_len < u64::from(LEN16_MARKER))
            .then(|| [self.first_byte(), self.payload_len as u8])
    }

    /// The two-byte header of an unmasked, final, uncompressed frame whose payload is at most
    /// 125 bytes (a server's usual message), or `None` when the length needs more.
    #[inline]
    pub(crate) fn short_final(opcode: OpCode, len: usize) -> Option<[u8; 2]> {
        (len < usize::from(LEN16_MARKER)).then(|| [FIN | opcode.as_u8(), len as u8])
    }

    /// The four-byte header of such a frame whose payload is 126 bytes to 64 KiB - 1.
    #[inline]
    pub(crate) fn medium_final(opcode: OpCode, len: usize) -> Option<[u8; 4]> {
        let [high, low] = u16::try_from(len).ok()?.to_be_bytes();
        (len >= usize::from(LEN16_MARKER)).then(|| [FIN | opcode.as_u8(), LEN16_MARKER, high, low])
    }

    /// The first byte of the encoded header: FIN, the RSV bits and the opcode.
    fn first_byte(&self) -> u8 {
        let mut first = self.opcode.as_u8();
        for (set, bit) in [
            (self.fin, FIN),
            (self.rsv1, RSV1),
            (self.rsv2, RSV2),
            (self.rsv3, RSV3),
        ] {
            if set {
                first |= bit;
            }
        }
        first
    }

    /// Encodes the header on the stack.
    ///
    /// Fields are written as they are, even ones [`FrameHeader::decode`] would reject (a control
    /// frame over 125 bytes, a length of 2^63 or more); checking is up to the sender.
    pub fn encode(&self) -> EncodedHeader {
        let mut encoded = EncodedHeader {
            bytes: [0; MAX_HEADER_LEN],
            len: 0,
        };
        let first = self.first_byte();
        let mask_bit = if self.mask.is_some() { MASKED } else { 0 };

        match self.payload_len {
            len @ 0..=125 => encoded.push(&[first, mask_bit | len as u8]),
            len @ 126..=0xFFFF => {
                encoded.push(&[first, mask_bit | LEN16_MARKER]);
                encoded.push(&(len as u16).to_be_bytes());
            }
            len => {
                encoded.push(&[first, mask_bit | LEN64_MARKER]);
                encoded.push(&len.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            encoded.push(&key);
        }
        encoded
    }

    /// Appends the encoded header to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.encode().as_slice());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::apply_mask;
    use alloc::vec;
    use proptest::prelude::*;

    fn header(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload_len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len,
        }
    }

    /// Decodes a whole frame the way a receiver would and returns the unmasked payload;
    /// checks that encoding the decoded header gives back the same bytes.
    fn decode_frame(frame: &[u8]) -> (FrameHeader, Vec<u8>) {
        let (decoded, header_len) = FrameHeader::decode(frame).unwrap().unwrap();
        assert_eq!(decoded.encode().as_slice(), &frame[..header_len]);
        assert_eq!(decoded.encoded_len(), header_len);
        let mut payload = frame[header_len..].to_vec();
        assert_eq!(payload.len() as u64, decoded.payload_len);
        if let Some(key) = decoded.mask {
            apply_mask(&mut payload, key);
        }
        (decoded, payload)
    }

    const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    #[test]
    fn rfc_single_frame_unmasked_text() {
        let frame = [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F];
        let (decoded, payload) = decode_frame(&frame);
        assert_eq!(decoded, header(true, OpCode::Text, None, 5));
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn rfc_single_frame_masked_text() {
        let frame = [
            0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58,
        ];
        let (decoded, payload) = decode_frame(&frame);
        assert_eq!(decoded, header(true, OpCode::Text, Some(KEY), 5));
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn rfc_fragmented_unmasked_text() {
        let first = [0x01, 0x03, 0x48, 0x65, 0x6C];
        let (decoded, payload) = decode_frame(&first);
        assert_eq!(decoded, header(false, OpCode::Text, None, 3));
        assert_eq!(payload, b"Hel");

        let last = [0x80, 0x02, 0x6C, 0x6F];
        let (decoded, payload) = decode_frame(&last);
        assert_eq!(decoded, header(true, OpCode::Continuation, None, 2));
        assert_eq!(payload, b"lo");
    }

    #[test]
    fn rfc_unmasked_ping_and_masked_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F];
        let (decoded, payload) = decode_frame(&ping);
        assert_eq!(decoded, header(true, OpCode::Ping, None, 5));
        assert_eq!(payload, b"Hello");

        let pong = [
            0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58,
        ];
        let (decoded, payload) = decode_frame(&pong);
        assert_eq!(decoded, header(true, OpCode::Pong, Some(KEY), 5));
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn rfc_256_byte_binary() {
        let mut frame = vec![0x82, 0x7E, 0x01, 0x00];
        frame.extend((0..256).map(|i| i as u8));
        let (decoded, payload) = decode_frame(&frame);
        assert_eq!(decoded, header(true, OpCode::Binary, None, 256));
        assert_eq!(payload, frame[4..]);
    }

    #[test]
    fn rfc_64_kib_binary() {
        let mut frame = vec![0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
        frame.resize(10 + 65536, 0xA5);
        let (decoded, payload) = decode_frame(&frame);
        assert_eq!(decoded, header(true, OpCode::Binary, None, 65536));
        assert_eq!(payload.len(), 65536);
    }

    #[test]
    fn write_to_appends_the_encoded_bytes() {
        let mut out = vec![0xEE];
        header(true, OpCode::Text, Some(KEY), 5).write_to(&mut out);
        assert_eq!(out, [0xEE, 0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D]);
    }

    #[test]
    fn length_forms_switch_at_126_and_65536() {
        let cases: [(u64, &[u8]); 6] = [
            (0, &[0x82, 0x00]),
            (125, &[0x82, 0x7D]),
            (126, &[0x82, 0x7E, 0x00, 0x7E]),
            (65535, &[0x82, 0x7E, 0xFF, 0xFF]),
            (65536, &[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]),
            (
                i64::MAX as u64,
                &[0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            ),
        ];
        for (len, bytes) in cases {
            let encoded = header(true, OpCode::Binary, None, len).encode();
            assert_eq!(encoded.as_slice(), bytes, "{len}");
            assert_eq!(encoded.len(), bytes.len());
            assert!(!encoded.is_empty());
            let (decoded, header_len) = FrameHeader::decode(bytes).unwrap().unwrap();
            assert_eq!((decoded.payload_len, header_len), (len, bytes.len()));
        }
    }

    #[test]
    fn longest_header_fills_max_header_len() {
        let encoded = header(true, OpCode::Binary, Some(KEY), 1 << 40).encode();
        assert_eq!(encoded.len(), MAX_HEADER_LEN);
    }

    #[test]
    fn non_minimal_length_forms_are_accepted() {
        let (decoded, header_len) = FrameHeader::decode(&[0x82, 0x7E, 0x00, 0x05])
            .unwrap()
            .unwrap();
        assert_eq!((decoded.payload_len, header_len), (5, 4));
        let bytes = [0x89, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0x7D];
        let (decoded, header_len) = FrameHeader::decode(&bytes).unwrap().unwrap();
        assert_eq!((decoded.payload_len, header_len), (125, 10));
    }

    #[test]
    fn length_with_msb_set_is_rejected() {
        let bytes = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::decode(&bytes), Err(FrameError::LengthOverflow));
        let bytes = [0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(FrameHeader::decode(&bytes), Err(FrameError::LengthOverflow));
    }

    #[test]
    fn reserved_opcodes_are_rejected_after_one_byte() {
        for opcode in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(OpCode::from_u8(opcode), None);
            for first in [opcode, 0x80 | opcode, 0xF0 | opcode] {
                let error = FrameHeader::decode(&[first]).unwrap_err();
                assert_eq!(error, FrameError::ReservedOpCode(opcode));
                assert_eq!(error.close_code(), CloseCode::Protocol);
            }
        }
    }

    #[test]
    fn opcodes_round_trip_and_classify() {
        for value in 0..=0xFF {
            if let Some(opcode) = OpCode::from_u8(value) {
                assert_eq!(opcode.as_u8(), value);
                assert_eq!(opcode.is_control(), value >= 0x8);
                assert_ne!(opcode.is_control(), opcode.is_data());
            }
        }
        for value in [0x10, 0x81, 0xFF] {
            assert_eq!(OpCode::from_u8(value), None);
        }
    }

    #[test]
    fn control_frames_over_125_bytes_are_rejected() {
        for opcode in [OpCode::Close, OpCode::Ping, OpCode::Pong] {
            let first = 0x80 | opcode.as_u8();
            assert!(FrameHeader::decode(&[first, 125]).unwrap().is_some());
            let bytes = [first, 0x7E, 0x00, 0x7E];
            assert_eq!(
                FrameHeader::decode(&bytes),
                Err(FrameError::ControlFrameTooLong(126))
            );
            let bytes = [first, 0xFF, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
            let error = FrameHeader::decode(&bytes).unwrap_err();
            assert_eq!(error, FrameError::ControlFrameTooLong(65536));
            assert_eq!(error.close_code(), CloseCode::Protocol);
        }
    }

    #[test]
    fn fragmented_control_frames_are_rejected_after_one_byte() {
        for opcode in [OpCode::Close, OpCode::Ping, OpCode::Pong] {
            let error = FrameHeader::decode(&[opcode.as_u8()]).unwrap_err();
            assert_eq!(error, FrameError::FragmentedControlFrame);
            assert_eq!(error.close_code(), CloseCode::Protocol);
        }
    }

    #[test]
    fn truncated_headers_need_more_bytes_until_an_error_is_decidable() {
        /// The prefix length that proves the header wrong, and the error.
        type Verdict = Option<(usize, FrameError)>;
        let cases: [(&[u8], Verdict); 9] = [
            (&[0x81, 0x05], None),
            (&[0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D], None),
            (&[0x82, 0x7E, 0x01, 0x00], None),
            (&[0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4], None),
            (&[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00], None),
            (
                &[0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 1, 2, 3, 4],
                None,
            ),
            (&[0x83, 0x00], Some((1, FrameError::ReservedOpCode(3)))),
            (
                &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                Some((10, FrameError::LengthOverflow)),
            ),
            (
                &[0x88, 0xFE, 0x00, 0x7E, 1, 2, 3, 4],
                Some((4, FrameError::ControlFrameTooLong(126))),
            ),
        ];
        for (bytes, error) in cases {
            for prefix_len in 0..=bytes.len() {
                let result = FrameHeader::decode(&bytes[..prefix_len]);
                match error {
                    Some((decidable_at, error)) if prefix_len >= decidable_at => {
                        assert_eq!(result, Err(error), "{bytes:x?}[..{prefix_len}]")
                    }
                    _ if prefix_len < bytes.len() => {
                        assert_eq!(result, Ok(None), "{bytes:x?}[..{prefix_len}]")
                    }
                    _ => assert_eq!(result.unwrap().unwrap().1, bytes.len()),
                }
            }
        }
    }

    fn opcode() -> impl Strategy<Value = OpCode> {
        prop::sample::select(
            &[
                OpCode::Continuation,
                OpCode::Text,
                OpCode::Binary,
                OpCode::Close,
                OpCode::Ping,
                OpCode::Pong,
            ][..],
        )
    }

    /// Headers `decode` accepts: any data frame, or a final control frame of ≤ 125 bytes.
    fn valid_header() -> impl Strategy<Value = FrameHeader> {
        let payload_len = prop_oneof![
            0..=125u64,
            126..=0xFFFFu64,
            0x1_0000..=(i64::MAX as u64),
            Just(0x1_0000),
            Just(i64::MAX as u64),
        ];
        (
            opcode(),
            any::<[bool; 4]>(),
            any::<Option<[u8; 4]>>(),
            payload_len,
        )
            .prop_map(|(opcode, [fin, rsv1, rsv2, rsv3], mask, payload_len)| {
                let control = opcode.is_control();
                FrameHeader {
                    fin: fin || control,
                    rsv1,
                    rsv2,
                    rsv3,
                    opcode,
                    mask,
                    payload_len: if control {
                        payload_len % 126
                    } else {
                        payload_len
                    },
                }
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(
            header in valid_header(),
            trailing in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let encoded = header.encode();
            prop_assert_eq!(encoded.len(), header.encoded_len());
            let mut written = Vec::new();
            header.write_to(&mut written);
            prop_assert_eq!(written.as_slice(), encoded.as_slice());

            for prefix_len in 0..encoded.len() {
                prop_assert_eq!(FrameHeader::decode(&written[..prefix_len]), Ok(None));
            }
            written.extend_from_slice(&trailing);
            prop_assert_eq!(FrameHeader::decode(&written), Ok(Some((header, encoded.len()))));
        }

        /// The receive path's shortcut reads exactly what `decode` reads, for the headers it
        /// takes, and takes every header it should.
        #[test]
        fn decode_short_data_agrees_with_decode(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..=MAX_HEADER_LEN + 2),
                (valid_header(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(
                    |(header, trailing)| {
                        let mut bytes = header.encode().as_slice().to_vec();
                        bytes.extend(trailing);
                        bytes
                    }
                ),
            ],
        ) {
            let decoded = FrameHeader::decode(&bytes);
            let expected = match decoded {
                Ok(Some((h, header_len)))
                    if h.fin
                        && !(h.rsv1 || h.rsv2 || h.rsv3)
                        && matches!(h.opcode, OpCode::Text | OpCode::Binary)
                        && h.payload_len <= u64::from(u16::MAX) =>
                {
                    Some(ShortData {
                        text: h.opcode == OpCode::Text,
                        mask: h.mask,
                        len: h.payload_len as usize,
                        header_len,
                    })
                }
                _ => None,
            };
            let short = FrameHeader::decode_short_data(&bytes);
            // A 16-bit length below 126 is not the shortest form; decode accepts it too.
            prop_assert_eq!(short, expected, "{:?}", decoded);
        }

        #[test]
        fn decode_never_panics_and_is_prefix_stable(
            bytes in proptest::collection::vec(any::<u8>(), 0..=MAX_HEADER_LEN + 2),
        ) {
            let result = FrameHeader::decode(&bytes);
            if let Ok(Some((_, header_len))) = result {
                prop_assert!((2..=MAX_HEADER_LEN).contains(&header_len));
                prop_assert_eq!(FrameHeader::decode(&bytes[..header_len]), result);
            }
            // A verdict, once reached, does not change as more bytes arrive.
            if let Some(Ok(Some(_)) | Err(_)) = bytes.len().checked_sub(1)
                .map(|len| FrameHeader::decode(&bytes[..len]))
            {
                prop_assert_eq!(FrameHeader::decode(&bytes[..bytes.len() - 1]), result);
            }
        }
    }
}
