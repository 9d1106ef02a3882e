//! Sending: data and control frames, whole, prepared and streamed messages, the output buffer.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::Range;

use bytes::{Bytes, BytesMut};

use super::extension::Extension;
use super::{Connection, Role, State};
use crate::error::SendError;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode};
use crate::mask::apply_mask;
use crate::message::{Message, MessageKind, PreparedMessage};
use crate::utf8::Utf8Validator;

#[derive(Debug)]
pub(super) struct OutgoingStream {
    kind: MessageKind,
    started: bool,
    utf8: Utf8Validator,
    compressed: bool,
}

impl Connection {
    /// Bytes waiting to be written to the socket: the first contiguous piece of them. After
    /// [`Connection::send_owned`] or [`Connection::send_prepared`] of a large payload, the
    /// output may come in several pieces (see [`Connection::output_vectored`]); otherwise it
    /// is one piece.
    #[inline]
    pub fn output(&self) -> &[u8] {
        self.tx.front()
    }

    /// Fills `out` with the pending output's pieces, in order, for a vectored write; returns
    /// how many slots it filled (all pieces when `out` is long enough).
    pub fn output_vectored<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        self.tx.vectored(out)
    }

    /// Records that the socket took the first `n` bytes of the pending output (across pieces
    /// after a vectored write). `consume(buffered_amount())` discards all of it.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        let keep = self.keeps_buffer(self.tx.tail_capacity());
        self.tx.consume(n, keep);
    }

    /// Takes the first piece of the pending output, for drivers that queue `Bytes`; all of it
    /// when it is one piece.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.tx.take()
    }

    /// Bytes queued but not yet taken by the driver (the WHATWG `bufferedAmount`).
    #[inline]
    pub fn buffered_amount(&self) -> usize {
        self.tx.len()
    }

    pub(super) fn check_open(&self) -> Result<(), SendError> {
        if matches!(self.state, State::Open) {
            Ok(())
        } else {
            Err(SendError::NotOpen)
        }
    }

    pub(super) fn check_data_send(&self) -> Result<(), SendError> {
        self.check_open()?;
        if self.stream.is_some() {
            return Err(SendError::StreamInProgress);
        }
        Ok(())
    }

    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.check_data_send()?;
        self.write_message(OpCode::Text, text.as_bytes());
        Ok(())
    }

    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.check_data_send()?;
        self.write_message(OpCode::Binary, data);
        Ok(())
    }

    pub fn send(&mut self, message: &Message) -> Result<(), SendError> {
        match message {
            Message::Text(t) => {
                self.check_data_send()?;
                self.write_message(OpCode::Text, t.as_bytes());
                Ok(())
            }
            Message::Binary(b) => self.send_binary(b),
        }
    }

    /// Sends a message the caller gives away. A server queues a large payload (at least
    /// [`OWNED_MIN`](super::OWNED_MIN) bytes, or its compressed form) as it is, without copying
    /// it, so the output then comes in pieces: write them with
    /// [`Connection::output_vectored`], or one [`Connection::output`] at a time. Otherwise the
    /// same as [`Connection::send`].
    pub fn send_owned(&mut self, message: Message) -> Result<(), SendError> {
        self.check_data_send()?;
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        if let Some(extension) = self.extensions.agreed()
            && extension.encodes(payload.len())
        {
            let mut out = Vec::with_capacity(payload.len() / 2 + 16);
            extension.encode(&payload, true, &mut out);
            self.write_frames_owned(opcode, Bytes::from(out), true);
            return Ok(());
        }
        // A payload the output would take without a copy goes that way instead.
        if payload.len() >= super::OWNED_MIN || !self.write_short_frame(opcode, &payload) {
            self.write_frames_owned(opcode, payload, false);
        }
        Ok(())
    }

    /// Writes an uncompressed message as one frame with a short header when it is a server's
    /// and under 64 KiB, not fragmented: the usual message, kept to a few instructions.
    /// Returns false, having written nothing, for any other.
    #[inline]
    fn write_short_frame(&mut self, opcode: OpCode, payload: &[u8]) -> bool {
        if self.role != Role::Server
            || self
                .config
                .fragment_size
                .is_some_and(|size| payload.len() > size)
        {
            return false;
        }
        let tail = self.tx.tail();
        if let Some(header) = FrameHeader::short_final(opcode, payload.len()) {
            put_frame(tail, header, payload);
        } else if let Some(header) = FrameHeader::medium_final(opcode, payload.len()) {
            put_frame(tail, header, payload);
        } else {
            return false;
        }
        true
    }

    /// Sends a message prepared once for many connections (a broadcast). Connections that
    /// compress each message afresh with the same window and level share one compressed copy,
    /// kept in `message`; the others compress (or not) as [`Connection::send`] would. A server
    /// queues a large payload (or shared compressed copy) without copying it, as
    /// [`Connection::send_owned`] does: the output may then come in pieces.
    pub fn send_prepared(&mut self, message: &mut PreparedMessage) -> Result<(), SendError> {
        self.check_data_send()?;
        let opcode = match message.kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        if let Some(extension) = self.extensions.agreed()
            && extension.encodes(message.payload.len())
        {
            let Some(key) = extension.shared_key() else {
                self.write_message(opcode, &message.payload);
                return Ok(());
            };
            let index = match message.compressed.iter().position(|(k, _)| *k == key) {
                Some(index) => index,
                None => {
                    let mut out = Vec::with_capacity(message.payload.len() / 2 + 16);
                    extension.encode(&message.payload, true, &mut out);
                    message.compressed.push((key, Bytes::from(out)));
                    message.compressed.len() - 1
                }
            };
            // Shared, not copied, by every connection when large (see `send_owned`).
            let compressed = message.compressed[index].1.clone();
            self.write_frames_owned(opcode, compressed, true);
            return Ok(());
        }
        self.write_frames_owned(opcode, message.payload.clone(), false);
        Ok(())
    }

    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// An unsolicited pong (a one-way heartbeat, RFC 6455 §5.5.3).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    pub(super) fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        self.check_open()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlPayloadTooLong(payload.len()));
        }
        self.write_frame(true, opcode, payload);
        Ok(())
    }

    /// Starts a message sent in pieces, for messages too large to hold at once.
    pub fn begin_message(&mut self, kind: MessageKind) -> Result<(), SendError> {
        self.check_data_send()?;
        let compressed = self.extensions.encodes_streams();
        self.stream = Some(Box::new(OutgoingStream {
            kind,
            started: false,
            utf8: Utf8Validator::new(),
            compressed,
        }));
        Ok(())
    }

    /// Sends the next piece of the streamed message as one frame. Text may be split anywhere,
    /// even inside a character; the whole must be UTF-8.
    pub fn send_fragment(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.stream_piece(data, false)
    }

    /// Sends the last piece and ends the streamed message.
    pub fn finish_message(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.stream_piece(data, true)
    }

    pub(super) fn stream_piece(&mut self, data: &[u8], fin: bool) -> Result<(), SendError> {
        self.check_open()?;
        let stream = self.stream.as_mut().ok_or(SendError::NoStreamInProgress)?;
        if stream.kind == MessageKind::Text {
            // Judge a copy so a refused piece leaves the stream as it was.
            let mut utf8 = stream.utf8.clone();
            utf8.feed(data).map_err(|_| SendError::InvalidUtf8)?;
            if fin {
                utf8.finish().map_err(|_| SendError::InvalidUtf8)?;
            }
            stream.utf8 = utf8;
        }
        let opcode = match (stream.started, stream.kind) {
            (true, _) => OpCode::Continuation,
            (false, MessageKind::Text) => OpCode::Text,
            (false, MessageKind::Binary) => OpCode::Binary,
        };
        let first = !stream.started;
        stream.started = true;
        let compressed = stream.compressed;
        if fin {
            self.stream = None;
        }
        if compressed && let Some(extension) = self.extensions.agreed() {
            let mut out = Vec::with_capacity(data.len() / 2 + 16);
            extension.encode(data, fin, &mut out);
            self.write_frame_rsv(fin, first, opcode, &out);
            return Ok(());
        }
        self.write_frame(fin, opcode, data);
        Ok(())
    }

    pub(super) fn write_message(&mut self, opcode: OpCode, payload: &[u8]) {
        if let Some(extension) = self.extensions.agreed()
            && extension.encodes(payload.len())
        {
            let mut out = Vec::with_capacity(payload.len() / 2 + 16);
            extension.encode(payload, true, &mut out);
            return self.write_frames(opcode, &out, true);
        }
        if !self.write_short_frame(opcode, payload) {
            self.write_frames(opcode, payload, false);
        }
    }

    /// One message as one frame, or fragments of `fragment_size`; RSV1 on the first only.
    pub(super) fn write_frames(&mut self, opcode: OpCode, payload: &[u8], rsv1: bool) {
        if self
            .config
            .fragment_size
            .is_none_or(|size| payload.len() <= size)
        {
            return self.write_frame_rsv(true, rsv1, opcode, payload);
        }
        for (range, fin) in fragments(payload.len(), self.config.fragment_size) {
            let first = range.start == 0;
            let op = if first { opcode } else { OpCode::Continuation };
            self.write_frame_rsv(fin, rsv1 && first, op, &payload[range]);
        }
    }

    /// [`Connection::write_frames`] for a payload the connection owns: a server queues a large
    /// one without copying it (a slice of it per fragment).
    fn write_frames_owned(&mut self, opcode: OpCode, payload: Bytes, rsv1: bool) {
        if self.role == Role::Client || payload.len() < super::OWNED_MIN {
            return self.write_frames(opcode, &payload, rsv1);
        }
        for (range, fin) in fragments(payload.len(), self.config.fragment_size) {
            let first = range.start == 0;
            let header = FrameHeader {
                fin,
                rsv1: rsv1 && first,
                rsv2: false,
                rsv3: false,
                opcode: if first { opcode } else { OpCode::Continuation },
                mask: None,
                payload_len: range.len() as u64,
            };
            self.tx.extend_from_slice(header.encode().as_slice());
            self.tx.push_owned(payload.slice(range));
        }
    }

    pub(super) fn write_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.write_frame_rsv(fin, false, opcode, payload);
    }

    pub(super) fn write_frame_rsv(
        &mut self,
        fin: bool,
        rsv1: bool,
        opcode: OpCode,
        payload: &[u8],
    ) {
        let mask = match self.role {
            Role::Server => None,
            Role::Client => Some(self.masking_key()),
        };
        let header = FrameHeader {
            fin,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let tx = self.tx.tail();
        if let Some(short) = header.encode_short() {
            // Most frames of a chat or a game.
            tx.reserve(short.len() + payload.len());
            tx.extend_from_slice(&short);
            tx.extend_from_slice(payload);
            return;
        }
        let encoded = header.encode();
        tx.reserve(encoded.len() + payload.len());
        tx.extend_from_slice(encoded.as_slice());
        let start = tx.len();
        tx.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut tx[start..], key);
        }
    }

    pub(super) fn masking_key(&mut self) -> [u8; 4] {
        let mut key = [0u8; 4];
        if let Some(random) = &mut self.random {
            random(&mut key);
        }
        key
    }
}

/// The fragments a message of `len` bytes is sent in: one frame, or pieces of `fragment_size`
/// when it is longer; each one's byte range, and whether it is the last.
fn fragments(
    len: usize,
    fragment_size: Option<usize>,
) -> impl Iterator<Item = (Range<usize>, bool)> {
    let size = match fragment_size {
        Some(size) if len > size => size.max(1),
        _ => len.max(1),
    };
    let count = len.div_ceil(size).max(1);
    (0..count).map(move |i| {
        let start = i * size;
        (start..len.min(start + size), i + 1 == count)
    })
}

/// Appends a frame: a header of a constant size (a store or two, not a copy), then the payload.
#[inline]
fn put_frame<const N: usize>(tail: &mut BytesMut, header: [u8; N], payload: &[u8]) {
    tail.reserve(N + payload.len());
    tail.extend_from_slice(&header);
    tail.extend_from_slice(payload);
}
