//! Receiving: the receive buffer, frame parsing and unmasking, messages, inflation, events.

use alloc::boxed::Box;
use core::time::Duration;

use bytes::{Buf, BytesMut};

use super::extension::Extension;
use super::{Connection, Role, State};
use crate::error::{Error, ProtocolError};
use crate::frame::{FrameHeader, OpCode, ShortData};
use crate::mask::apply_mask_at;
use crate::message::{Event, Message, MessageKind, Utf8Bytes};

/// Largest window [`Connection::recv_buf`] lends at once, even when a larger frame is pending.
const MAX_READ_WINDOW: usize = 1 << 20;

/// A frame whose header has been read and whose payload is arriving.
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameInProgress {
    header: FrameHeader,
    len: usize,
    /// Payload bytes already unmasked and validated, at the front of the receive buffer.
    processed: usize,
    text: bool,
}

#[derive(Debug)]
pub(super) struct MessageInProgress {
    kind: MessageKind,
    data: BytesMut,
    /// permessage-deflate: `data` holds the inflated bytes so far.
    compressed: bool,
}

impl Connection {
    /// Received bytes buffered and not yet reported (a partial frame, or frames waiting for
    /// [`Connection::poll_event`]).
    pub fn received_len(&self) -> usize {
        self.rx_filled
    }

    /// Payload bytes the frame being received still misses (0 between frames). A driver that
    /// reads into its own buffer can switch to [`Connection::recv_buf`] when this is large, so
    /// a big frame lands in place without a copy.
    #[inline]
    pub fn frame_remaining(&self) -> usize {
        self.frame
            .as_ref()
            .map_or(0, |f| f.len.saturating_sub(self.rx_filled))
    }

    /// Room for one read: what the frame in progress misses, at least `read_chunk` and at most
    /// [`MAX_READ_WINDOW`] (or `read_chunk` if larger).
    #[inline]
    fn read_window(&self) -> usize {
        self.frame_remaining().clamp(
            self.config.read_chunk,
            MAX_READ_WINDOW.max(self.config.read_chunk),
        )
    }

    /// Lends the spare room of the receive buffer for one read. Its size adapts to the frame
    /// in progress so a large frame arrives in few reads. Follow with [`Connection::commit`].
    pub fn recv_buf(&mut self) -> &mut [u8] {
        let needed = self.rx_filled + self.read_window();
        if self.rx.len() < needed {
            self.rx.resize(needed, 0);
        }
        &mut self.rx[self.rx_filled..]
    }

    /// Records that the last read put `n` bytes into [`Connection::recv_buf`], then processes them.
    pub fn commit(&mut self, now: Duration, n: usize) {
        let n = n.min(self.rx.len() - self.rx_filled);
        self.rx_filled += n;
        self.after_receive(now, n);
    }

    /// Whether a read should go straight into the connection's own buffer
    /// ([`Connection::append_buf`]) rather than through the driver's: a frame is in progress,
    /// or frames arrive and the emptied buffer is kept for the next one
    /// ([`crate::Config::with_buffer_keep`]). Otherwise (an idle connection) the connection
    /// holds no receive buffer, and a read through a buffer of the driver's keeps it so.
    #[inline]
    pub fn reads_in_place(&self) -> bool {
        self.rx_filled > 0 || self.frame.is_some() || self.keeps_buffer(self.rx.capacity())
    }

    /// The receive buffer, with room reserved for one read (sized like [`Connection::recv_buf`]'s
    /// window), for a driver whose reads append to a `BytesMut` without zeroing its spare
    /// capacity first (tokio's `AsyncReadExt::read_buf`, `tokio_util::io::poll_read_buf`).
    /// Only append to it; follow with [`Connection::commit_appended`].
    #[inline]
    pub fn append_buf(&mut self) -> &mut BytesMut {
        let window = self.read_window();
        self.rx.truncate(self.rx_filled);
        self.rx.reserve(window);
        &mut self.rx
    }

    /// Processes the bytes appended to [`Connection::append_buf`] since it was lent.
    #[inline]
    pub fn commit_appended(&mut self, now: Duration) {
        // Bytes removed instead of appended are taken as never received.
        let n = self.rx.len().saturating_sub(self.rx_filled);
        self.rx_filled = self.rx.len();
        self.after_receive(now, n);
    }

    /// Copies received bytes in and processes them.
    pub fn receive(&mut self, now: Duration, data: &[u8]) {
        self.rx.truncate(self.rx_filled);
        self.rx.extend_from_slice(data);
        self.rx_filled += data.len();
        self.after_receive(now, data.len());
    }

    pub(super) fn after_receive(&mut self, now: Duration, n: usize) {
        self.now = crate::nanos(now);
        if n > 0 {
            self.last_received = crate::nanos(now);
        }
        self.process();
    }

    /// Consumes as much of the receive buffer as the current state allows.
    pub(super) fn process(&mut self) {
        loop {
            match self.state {
                State::Handshake => {
                    if !self.process_handshake() {
                        break;
                    }
                }
                State::Open | State::CloseSent => {
                    self.process_frames();
                    break;
                }
                State::AwaitingDecision { .. } => break,
                State::Streaming | State::ClosedAwaitingFin | State::Closed => {
                    // Nothing after the end is ever looked at.
                    self.rx_filled = 0;
                    break;
                }
            }
        }
        if self.rx_filled == 0 && !self.keeps_buffer(self.rx.capacity()) {
            // An idle connection keeps no receive buffer (LESSONS: memory per connection).
            self.rx = BytesMut::new();
        }
    }

    pub(super) fn process_frames(&mut self) {
        while matches!(self.state, State::Open | State::CloseSent) {
            if !self.events.is_empty() {
                // One event at a time: the application answers a message before a later frame
                // can fail or close the connection, so replies keep the order of the requests.
                // `poll_event` resumes the parsing once the queue is empty.
                return;
            }
            if self.frame.is_none() && self.short_data_frame() {
                continue;
            }
            let mut frame = match self.frame.take() {
                Some(frame) => *frame,
                None => match FrameHeader::decode(&self.rx[..self.rx_filled]) {
                    Ok(None) => return,
                    Err(e) => return self.fail(e.into()),
                    Ok(Some((header, header_len))) => match self.start_frame(header) {
                        Ok(frame) => {
                            self.rx.advance(header_len);
                            self.rx_filled -= header_len;
                            frame
                        }
                        Err(e) => return self.fail(e),
                    },
                },
            };
            let available = self.rx_filled.min(frame.len);
            if available > frame.processed {
                let fresh = &mut self.rx[frame.processed..available];
                if let Some(key) = frame.header.mask {
                    apply_mask_at(fresh, key, frame.processed);
                }
                if frame.text {
                    if let Err(e) = self.utf8.feed(fresh) {
                        return self.fail(e.into());
                    }
                }
                frame.processed = available;
            }
            if available < frame.len {
                self.frame = Some(Box::new(frame));
                return;
            }
            self.frame = None;
            self.frame_arrived();
            let payload = self.rx.split_to(frame.len);
            self.rx_filled -= frame.len;
            self.on_frame(frame.header, payload);
        }
    }

    /// The usual frame, whole in the buffer: an open connection's final, uncompressed text or
    /// binary frame under 64 KiB, masked as the role requires, within the size limits, with
    /// no fragmented message in progress. It is reported without the general path's header
    /// decoding and frame bookkeeping. Returns false, having changed nothing, for any other
    /// frame, which the general path then judges.
    #[inline]
    fn short_data_frame(&mut self) -> bool {
        let Some(ShortData {
            text,
            mask,
            len,
            header_len,
        }) = FrameHeader::decode_short_data(&self.rx[..self.rx_filled])
        else {
            return false;
        };
        if mask.is_some() != (self.role == Role::Server)
            || self.rx_filled < header_len + len
            || len > self.config.max_frame_size
            || len > self.config.max_message_size
            || self.message.is_some()
            || !matches!(self.state, State::Open)
        {
            return false;
        }
        if let Some(key) = mask {
            apply_mask_at(&mut self.rx[header_len..header_len + len], key, 0);
        }
        if text {
            // What the general path reports: the payload is fed whole, then finished.
            self.utf8.reset();
            let valid = self.utf8.feed(&self.rx[header_len..header_len + len]);
            if let Err(e) = valid.and_then(|()| self.utf8.finish()) {
                self.fail(e.into());
                return true;
            }
        }
        self.frame_arrived();
        self.rx.advance(header_len);
        let payload = self.rx.split_to(len).freeze();
        self.rx_filled -= header_len + len;
        let message = if text {
            Message::Text(Utf8Bytes::from_validated(payload))
        } else {
            Message::Binary(payload)
        };
        self.events.push_back(Event::Message(message));
        true
    }

    /// A whole frame arrived: emptied buffers are kept for the next one, until the
    /// buffer-keep deadline (which starts now if traffic was idle).
    #[inline]
    fn frame_arrived(&mut self) {
        if !self.warm && self.config.buffer_keep.is_some() {
            self.warm = true;
            self.timers_changed();
        }
    }

    /// Judges a header before any of its payload is buffered.
    pub(super) fn start_frame(&mut self, header: FrameHeader) -> Result<FrameInProgress, Error> {
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame.into()),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame.into()),
            _ => {}
        }
        // RSV1 marks the first frame of a compressed message, once permessage-deflate is agreed.
        let rsv1_allowed =
            self.extensions.is_agreed() && matches!(header.opcode, OpCode::Text | OpCode::Binary);
        if header.rsv2 || header.rsv3 || (header.rsv1 && !rsv1_allowed) {
            return Err(ProtocolError::ReservedBits.into());
        }
        let max_frame = self.config.max_frame_size;
        if header.payload_len > max_frame as u64 {
            return Err(Error::FrameTooLarge {
                size: header.payload_len,
                max: max_frame,
            });
        }
        let len = header.payload_len as usize;
        let text = match header.opcode {
            OpCode::Continuation => match &self.message {
                Some(m) => m.kind == MessageKind::Text,
                None => return Err(ProtocolError::UnexpectedContinuation.into()),
            },
            OpCode::Text | OpCode::Binary if self.message.is_some() => {
                return Err(ProtocolError::ExpectedContinuation.into());
            }
            OpCode::Text => {
                self.utf8.reset();
                true
            }
            _ => false,
        };
        let compressed = match header.opcode {
            OpCode::Continuation => self.message.as_ref().is_some_and(|m| m.compressed),
            _ => header.rsv1,
        };
        // A compressed message is validated and measured once inflated.
        let text = text && !compressed;
        if header.opcode.is_data() && !compressed {
            let so_far = self.message.as_ref().map_or(0, |m| m.data.len());
            let total = so_far as u64 + header.payload_len;
            if total > self.config.max_message_size as u64 {
                return Err(Error::MessageTooLarge {
                    size: total,
                    max: self.config.max_message_size,
                });
            }
        }
        Ok(FrameInProgress {
            header,
            len,
            processed: 0,
            text,
        })
    }

    /// Inflates one frame of a compressed message onto the message so far, validating text as
    /// it comes out. `Err` has already failed the connection.
    pub(super) fn inflate_frame(
        &mut self,
        kind: MessageKind,
        fin: bool,
        payload: &[u8],
        mut data: BytesMut,
    ) -> Result<BytesMut, ()> {
        let max = self.config.max_message_size;
        let before = data.len();
        let Some(extension) = self.extensions.agreed() else {
            self.fail(ProtocolError::ReservedBits.into());
            return Err(());
        };
        if let Err(e) = extension.decode(payload, fin, &mut data, max) {
            self.fail(e);
            return Err(());
        }
        if kind == MessageKind::Text {
            if let Err(e) = self.utf8.feed(&data[before..]) {
                self.fail(e.into());
                return Err(());
            }
        }
        Ok(data)
    }

    pub(super) fn on_frame(&mut self, header: FrameHeader, payload: BytesMut) {
        match header.opcode {
            OpCode::Ping => {
                if matches!(self.state, State::Open) {
                    self.write_frame(true, OpCode::Pong, &payload);
                }
                self.events.push_back(Event::Ping(payload.freeze()));
            }
            OpCode::Pong => {
                if let Some(hb) = &mut self.heartbeat {
                    hb.on_pong();
                }
                self.events.push_back(Event::Pong(payload.freeze()));
            }
            OpCode::Close => self.on_close_frame(&payload),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let kind = match header.opcode {
                    OpCode::Text => MessageKind::Text,
                    OpCode::Binary => MessageKind::Binary,
                    _ => match &self.message {
                        Some(m) => m.kind,
                        None => return,
                    },
                };
                let compressed = match header.opcode {
                    OpCode::Continuation => self.message.as_ref().is_some_and(|m| m.compressed),
                    _ => header.rsv1,
                };
                let data = if compressed {
                    let so_far = self.message.take().map(|m| m.data).unwrap_or_default();
                    match self.inflate_frame(kind, header.fin, &payload, so_far) {
                        Ok(data) => data,
                        Err(()) => return,
                    }
                } else {
                    match self.message.take() {
                        None => payload,
                        Some(mut m) => {
                            m.data.extend_from_slice(&payload);
                            m.data
                        }
                    }
                };
                if !header.fin {
                    self.message = Some(Box::new(MessageInProgress {
                        kind,
                        data,
                        compressed,
                    }));
                    return;
                }
                let message = match kind {
                    MessageKind::Binary => Message::Binary(data.freeze()),
                    MessageKind::Text => {
                        if let Err(e) = self.utf8.finish() {
                            return self.fail(e.into());
                        }
                        Message::Text(Utf8Bytes::from_validated(data.freeze()))
                    }
                };
                self.events.push_back(Event::Message(message));
            }
        }
    }

    /// The next event, if any.
    ///
    /// Received frames are parsed as events are taken: one message (or ping, pong, close) is
    /// decoded, and the next only once the queue is empty again. The application thus answers
    /// each message before a later frame can fail or close the connection, and a driver must
    /// take events until `None` after each receive.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.events.is_empty() && self.rx_filled == 0 && !self.peer_eof {
            // Nothing queued, buffered or ended: the usual answer between messages, inlined
            // into the driver's loop.
            return None;
        }
        self.next_event()
    }

    fn next_event(&mut self) -> Option<Event> {
        if self.events.is_empty() {
            if self.rx_filled > 0 {
                self.process();
            }
            self.apply_eof();
            if self.events.is_empty() {
                return None;
            }
        }
        self.events.pop_front()
    }
}
