//! The connection's output: bytes written by the connection, plus payloads handed over whole.
//!
//! Frames are written into one growing buffer (`tail`). A large payload the application gives
//! away ([`super::Connection::send_owned`]) is not copied: the frame's header is written to the
//! tail, the tail is sealed as a piece, and the payload becomes the next piece. A driver writes
//! the pieces in order, one at a time ([`Output::front`]) or together with a vectored write
//! ([`Output::vectored`]). Connections that never send owned payloads have no pieces, and an
//! empty output holds no allocation.

use alloc::boxed::Box;
use alloc::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, Default)]
pub(super) struct Output {
    /// Sealed pieces, written before `tail`, oldest first (boxed: most connections never have
    /// any, and the common case then costs one pointer).
    pieces: Option<Box<Pieces>>,
    /// Frames written after the last piece.
    tail: BytesMut,
}

#[derive(Debug, Default)]
struct Pieces {
    queue: VecDeque<Bytes>,
    /// Their bytes, kept so the length is not a sum.
    len: usize,
}

impl Output {
    pub(super) fn new() -> Output {
        Output::default()
    }

    /// The buffer frames are written into (after every piece).
    pub(super) fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    pub(super) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
    }

    /// Queues `bytes` after everything written so far, without copying them.
    pub(super) fn push_owned(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let pieces = self.pieces.get_or_insert_default();
        if !self.tail.is_empty() {
            let sealed = core::mem::take(&mut self.tail).freeze();
            pieces.len += sealed.len();
            pieces.queue.push_back(sealed);
        }
        pieces.len += bytes.len();
        pieces.queue.push_back(bytes);
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.pieces.as_ref().map_or(0, |p| p.len) + self.tail.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room held: the tail's capacity, plus one for a piece queue (for the idle-memory tests).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.tail.capacity() + usize::from(self.pieces.is_some())
    }

    /// The first contiguous piece of the output (empty when there is none).
    #[inline]
    pub(super) fn front(&self) -> &[u8] {
        match self.pieces.as_ref().and_then(|p| p.queue.front()) {
            Some(piece) => piece,
            None => &self.tail,
        }
    }

    /// Fills `out` with the output's pieces in order; returns how many it filled.
    pub(super) fn vectored<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        let mut filled = 0;
        let pieces = self
            .pieces
            .iter()
            .flat_map(|p| p.queue.iter().map(|b| &b[..]));
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        for (slot, piece) in out.iter_mut().zip(pieces.chain(tail)) {
            *slot = piece;
            filled += 1;
        }
        filled
    }

    /// Drops the first `n` bytes of the output (across pieces). An emptied tail keeps its
    /// room for the next frames when `keep` is set, and is released otherwise.
    pub(super) fn consume(&mut self, mut n: usize, keep: bool) {
        while n > 0 {
            let Some(pieces) = self.pieces.as_mut() else {
                break;
            };
            let Some(front) = pieces.queue.front_mut() else {
                self.pieces = None;
                break;
            };
            if n < front.len() {
                front.advance(n);
                pieces.len -= n;
                return;
            }
            n -= front.len();
            pieces.len -= front.len();
            pieces.queue.pop_front();
            if pieces.queue.is_empty() {
                self.pieces = None;
            }
        }
        if n < self.tail.len() {
            self.tail.advance(n);
        } else if keep {
            // Emptied, not advanced: the next frames are written from the buffer's start
            // again, without the buffer first moving its (empty) contents back.
            self.tail.clear();
        } else {
            // An idle connection keeps no send buffer.
            self.tail = BytesMut::new();
        }
    }

    /// The tail's room (what an emptied tail would keep).
    #[inline]
    pub(super) fn tail_capacity(&self) -> usize {
        self.tail.capacity()
    }

    /// Releases the tail's room if it holds nothing.
    pub(super) fn release(&mut self) {
        if self.tail.is_empty() {
            self.tail = BytesMut::new();
        }
    }

    /// Takes the first piece (or everything written, when there are no pieces).
    pub(super) fn take(&mut self) -> Option<Bytes> {
        if let Some(pieces) = self.pieces.as_mut() {
            if let Some(piece) = pieces.queue.pop_front() {
                pieces.len -= piece.len();
                if pieces.queue.is_empty() {
                    self.pieces = None;
                }
                return Some(piece);
            }
        }
        if self.tail.is_empty() {
            return None;
        }
        Some(core::mem::take(&mut self.tail).freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn drain_front(output: &mut Output, step: usize) -> Vec<u8> {
        let mut all = Vec::new();
        while !output.is_empty() {
            let front = output.front();
            let n = step.min(front.len());
            all.extend_from_slice(&front[..n]);
            output.consume(n, false);
        }
        all
    }

    #[test]
    fn pieces_come_out_in_order_whichever_way_they_are_taken() {
        let build = || {
            let mut o = Output::new();
            o.extend_from_slice(b"ab");
            o.push_owned(Bytes::from_static(b"cdef"));
            o.extend_from_slice(b"g");
            o.push_owned(Bytes::from_static(b"hi"));
            o.push_owned(Bytes::new());
            o.extend_from_slice(b"jk");
            o
        };
        let mut o = build();
        assert_eq!(o.len(), 11);
        for step in [1, 3, 100] {
            let mut o = build();
            assert_eq!(drain_front(&mut o, step), b"abcdefghijk");
            assert!(o.pieces.is_none() && o.tail.capacity() == 0);
        }
        let mut slices: [&[u8]; 8] = [&[]; 8];
        let n = o.vectored(&mut slices);
        assert_eq!(slices[..n].concat(), b"abcdefghijk");
        // A vectored write that took 5 bytes: across the first two pieces.
        o.consume(5, false);
        assert_eq!(o.len(), 6);
        assert_eq!(o.front(), b"f");
        let mut taken = Vec::new();
        while let Some(piece) = o.take() {
            taken.extend_from_slice(&piece);
        }
        assert_eq!(taken, b"fghijk");
        assert!(o.is_empty());
        // Consuming more than there is empties it.
        let mut o = build();
        o.consume(usize::MAX, false);
        assert!(o.is_empty() && o.pieces.is_none());
    }

    #[test]
    fn an_emptied_tail_that_is_kept_starts_over_with_all_its_room() {
        let mut o = Output::new();
        o.extend_from_slice(&[1; 100]);
        let room = o.tail_capacity();
        let start = o.front().as_ptr();
        // Written at once (the usual case): the next frame goes to the buffer's start again,
        // with no room lost to the bytes written before and nothing to move back first.
        o.consume(100, true);
        assert!(o.is_empty());
        assert_eq!(o.tail_capacity(), room);
        o.extend_from_slice(b"next");
        assert_eq!(o.front(), b"next");
        assert_eq!(o.front().as_ptr(), start);
        // Written in two parts: the rest follows the part already written.
        o.consume(2, true);
        assert_eq!(o.front(), b"xt");
        o.consume(2, true);
        assert!(o.is_empty());
        o.extend_from_slice(b"more");
        assert_eq!(o.front(), b"more");
        // Not kept: released.
        o.consume(4, false);
        assert_eq!(o.tail_capacity(), 0);
    }
}
