//! Incremental UTF-8 validation of text messages.
//!
//! A text message arrives in frames, and frames arrive in reads, so a code point may be split
//! anywhere. RFC 6455 §8.1 asks an endpoint to fail the connection as soon as the text stops
//! being valid, so the validator rejects a byte the moment no continuation could make it valid
//! instead of waiting for the end of the message.
//!
//! With the `std` feature, the bulk of every chunk is checked by the `simdutf8` crate (SIMD,
//! chosen at run time for the CPU); the standard library's validator then only sees the few
//! bytes of a code point cut off by the end of a chunk, and a chunk that is invalid, to find
//! where. Without `std`, `core::str::from_utf8` checks everything. Both give the same answers:
//! the fast check only says "valid" or not.

/// Validator for one text message fed in chunks.
///
/// Feed each chunk with [`feed`](Self::feed) and call [`finish`](Self::finish) at the end of the
/// message. After an error the validator starts over, as after [`reset`](Self::reset).
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// Start of a code point cut off by the end of the last chunk; only the first
    /// `pending_len` bytes are meaningful, and they are always a valid prefix.
    pending: [u8; 4],
    /// At most 3 (a byte, not a `usize`: the validator lives in every connection).
    pending_len: u8,
    /// Bytes fed since the last reset, so errors can point into the whole message.
    seen: usize,
}

/// The message is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 at byte {valid_up_to} of the message")]
pub struct Utf8Error {
    /// Offset, across all chunks fed since the last reset, of the first byte of the sequence
    /// that is invalid; everything before it is valid UTF-8 (as in
    /// [`core::str::Utf8Error::valid_up_to`]).
    pub valid_up_to: usize,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next chunk of a message.
    ///
    /// Fails as soon as a byte makes the stream invalid, including a prefix that can never
    /// complete (0xC0, 0xF5.., E0 80, ED A0, F4 90 ...), even if the chunk ends right after it.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Utf8Error> {
        let chunk_start = self.seen;
        let mut rest = chunk;

        if self.pending_len() > 0 {
            let sequence_start = chunk_start.saturating_sub(self.pending_len());
            let missing = sequence_len(self.pending[0]).saturating_sub(self.pending_len());
            let (completion, after) = rest.split_at(missing.min(rest.len()));
            let mut sequence = self.pending;
            let sequence_len = self.pending_len() + completion.len();
            let Some(slot) = sequence.get_mut(self.pending_len()..sequence_len) else {
                return self.fail(sequence_start);
            };
            slot.copy_from_slice(completion);
            match core::str::from_utf8(sequence.get(..sequence_len).unwrap_or_default()) {
                Ok(_) => {
                    self.pending_len = 0;
                    rest = after;
                }
                Err(error) if error.error_len().is_some() => return self.fail(sequence_start),
                Err(_) => {
                    // Still a valid prefix, and the chunk is used up, or it would be complete.
                    self.pending = sequence;
                    self.set_pending_len(sequence_len);
                    self.seen = self.seen.saturating_add(chunk.len());
                    return Ok(());
                }
            }
        }

        let rest_start = chunk_start.saturating_add(chunk.len() - rest.len());
        // Fast path: all but a code point cut off at the end is valid text, which ends at a
        // character boundary, so the rest is judged on its own (offsets shifted by the cut).
        // Otherwise the whole is judged again, to find the first invalid byte.
        let cut = incomplete_tail_start(rest);
        let (head, tail) = rest.split_at(cut);
        let checked = if is_valid(head) {
            self.check(tail, rest_start.saturating_add(cut))
        } else {
            self.check(rest, rest_start)
        };
        checked?;
        self.seen = self.seen.saturating_add(chunk.len());
        Ok(())
    }

    /// Judges `bytes`, which start at a character boundary at offset `start` of the message,
    /// keeping a valid prefix at the end as the pending sequence.
    fn check(&mut self, bytes: &[u8], start: usize) -> Result<(), Utf8Error> {
        match core::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(error) => {
                let valid_up_to = error.valid_up_to();
                if error.error_len().is_some() {
                    return self.fail(start.saturating_add(valid_up_to));
                }
                // `error_len() == None` means the tail is a valid prefix of at most 3 bytes.
                let tail = bytes.get(valid_up_to..).unwrap_or_default();
                let Some(slot) = self.pending.get_mut(..tail.len()) else {
                    return self.fail(start.saturating_add(valid_up_to));
                };
                slot.copy_from_slice(tail);
                self.set_pending_len(tail.len());
                Ok(())
            }
        }
    }

    /// End of message: fails if a multi-byte sequence is incomplete. Resets the validator either
    /// way.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        if self.pending_len() > 0 {
            return self.fail(self.seen.saturating_sub(self.pending_len()));
        }
        self.reset();
        Ok(())
    }

    /// Forgets the current message and starts a new one.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// True when no partial sequence is pending.
    pub fn is_at_boundary(&self) -> bool {
        self.pending_len == 0
    }

    fn pending_len(&self) -> usize {
        usize::from(self.pending_len)
    }

    /// `len` is at most 4 (the length of `pending`).
    fn set_pending_len(&mut self, len: usize) {
        self.pending_len = u8::try_from(len).unwrap_or(u8::MAX);
    }

    fn fail(&mut self, valid_up_to: usize) -> Result<(), Utf8Error> {
        self.reset();
        Err(Utf8Error { valid_up_to })
    }
}

/// Whether `bytes` is valid UTF-8 (no more than that: where it fails is not needed here).
#[cfg(feature = "std")]
fn is_valid(bytes: &[u8]) -> bool {
    simdutf8::basic::from_utf8(bytes).is_ok()
}

/// Whether `bytes` is valid UTF-8.
#[cfg(not(feature = "std"))]
fn is_valid(bytes: &[u8]) -> bool {
    core::str::from_utf8(bytes).is_ok()
}

/// Where a multi-byte sequence cut off by the end of `bytes` starts: the last lead byte among
/// the final three bytes, when the bytes after it are fewer than it needs; otherwise
/// `bytes.len()` (the validation proper judges whatever is there).
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let byte = bytes.get(len - back).copied().unwrap_or_default();
        if byte & 0xC0 != 0x80 {
            // Not a continuation byte: the start of the last sequence (or an invalid byte).
            return if sequence_len(byte) > back {
                len - back
            } else {
                len
            };
        }
    }
    len
}

/// Length of the sequence a valid lead byte starts (0 for a byte that cannot lead one).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// Feeds `chunks` then finishes; returns the index of the first failing call
    /// (`chunks.len()` for `finish`) and its error.
    fn first_failure(chunks: &[&[u8]]) -> Option<(usize, Utf8Error)> {
        let mut validator = Utf8Validator::new();
        for (index, chunk) in chunks.iter().enumerate() {
            if let Err(error) = validator.feed(chunk) {
                return Some((index, error));
            }
        }
        validator.finish().err().map(|error| (chunks.len(), error))
    }

    fn whole(bytes: &[u8]) -> Option<(usize, Utf8Error)> {
        first_failure(&[bytes])
    }

    fn bytewise(bytes: &[u8]) -> Option<(usize, Utf8Error)> {
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        first_failure(&chunks)
    }

    #[test]
    fn accepts_valid_text_whole_and_byte_by_byte() {
        let text = "κόσμε, hello, 𝄞, \u{10FFFF}, \u{FFFD}, \u{0}, \u{7F}, \u{80}, \u{7FF}, \u{800}";
        assert_eq!(whole(text.as_bytes()), None);
        assert_eq!(bytewise(text.as_bytes()), None);
        assert_eq!(whole(b""), None);
    }

    #[test]
    fn rejects_autobahn_style_sequences_at_the_first_bad_byte() {
        // (bytes, offset of the invalid sequence, index of the byte that proves it invalid)
        let cases: &[(&[u8], usize, usize)] = &[
            (b"a\x80", 1, 1),                                // lone continuation byte
            (b"\xC0\x80", 0, 0),         // overlong NUL, lead can never be valid
            (b"\xC1\xBF", 0, 0),         // overlong 2-byte
            (b"\xE0\x80\x80", 0, 1),     // overlong 3-byte
            (b"\xE0\x9F\xBF", 0, 1),     // overlong 3-byte, largest
            (b"\xF0\x80\x80\x80", 0, 1), // overlong 4-byte
            (b"\xF0\x8F\xBF\xBF", 0, 1), // overlong 4-byte, largest
            (b"\xED\xA0\x80", 0, 1),     // U+D800, high surrogate
            (b"\xED\xBF\xBF", 0, 1),     // U+DFFF, low surrogate
            (b"\xED\xA0\x80\xED\xB0\x80", 0, 1), // surrogate pair
            (b"\xF4\x90\x80\x80", 0, 1), // U+110000
            (b"\xF5\x80\x80\x80", 0, 0), // lead beyond U+10FFFF
            (b"\xF8\x88\x80\x80\x80", 0, 0), // 5-byte form
            (b"\xFC\x84\x80\x80\x80\x80", 0, 0), // 6-byte form
            (b"\xFE", 0, 0),             // never valid
            (b"\xFF", 0, 0),             // never valid
            (b"ab\xC3(", 2, 3),          // missing continuation
            (b"\xE2\x82(", 0, 2),        // missing last continuation
            (b"\xF0\x9F\x98", 0, 3),     // truncated at end: fails at finish
            (b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE", 7, 8), // truncated 2-byte at end
            (b"\xCE\xBA\xE1\xBD\xB9\xF4\x90\x80\x80", 5, 6), // Autobahn 6.4.x
        ];
        for &(bytes, valid_up_to, proof) in cases {
            let expected = Utf8Error { valid_up_to };
            assert!(core::str::from_utf8(bytes).is_err(), "{bytes:x?}");
            // Whole message: fails in `feed` unless truncated at the very end.
            let whole_call = if proof == bytes.len() { 1 } else { 0 };
            assert_eq!(whole(bytes), Some((whole_call, expected)), "{bytes:x?}");
            // Byte by byte: fails on the very byte that proves the text invalid.
            assert_eq!(bytewise(bytes), Some((proof, expected)), "{bytes:x?}");
        }
    }

    #[test]
    fn invalid_prefix_split_across_chunks_fails_on_the_second_chunk() {
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(&[0xF4]), Ok(()));
        assert!(!validator.is_at_boundary());
        assert_eq!(validator.feed(&[0x90]), Err(Utf8Error { valid_up_to: 0 }));
        assert!(
            validator.is_at_boundary(),
            "an error starts the validator over"
        );

        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(b"ok\xED"), Ok(()));
        assert_eq!(
            validator.feed(b"\xA0\x80"),
            Err(Utf8Error { valid_up_to: 2 })
        );
    }

    #[test]
    fn pending_sequence_completes_across_many_chunks() {
        let mut validator = Utf8Validator::new();
        for (chunk, at_boundary) in [
            (&b"x\xF0"[..], false),
            (b"", false),
            (b"\x9F", false),
            (b"\x98", false),
            (b"\x80y\xE2", false),
            (b"\x82\xACz", true),
        ] {
            assert_eq!(validator.feed(chunk), Ok(()));
            assert_eq!(validator.is_at_boundary(), at_boundary);
        }
        assert_eq!(validator.finish(), Ok(()));
    }

    #[test]
    fn finish_resets_and_offsets_restart() {
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(b"abc\xE2\x82"), Ok(()));
        assert_eq!(validator.finish(), Err(Utf8Error { valid_up_to: 3 }));
        assert!(validator.is_at_boundary());
        assert_eq!(validator.feed(b"a\xFF"), Err(Utf8Error { valid_up_to: 1 }));
        assert_eq!(validator.feed(b"abc"), Ok(()));
        validator.reset();
        assert_eq!(validator.feed(b"\x80"), Err(Utf8Error { valid_up_to: 0 }));
    }

    #[test]
    fn error_message_names_the_offset() {
        let message = alloc::format!("{}", Utf8Error { valid_up_to: 7 });
        assert_eq!(message, "invalid UTF-8 at byte 7 of the message");
    }

    /// Mostly-valid text with the odd stray byte, so errors land anywhere in the message.
    fn almost_text() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            8 => any::<char>().prop_map(|c| {
                let mut buf = [0; 4];
                c.encode_utf8(&mut buf).as_bytes().to_vec()
            }),
            1 => any::<u8>().prop_map(|b| alloc::vec![b]),
            1 => prop::sample::select(&[0xC0u8, 0xE0, 0xED, 0xF0, 0xF4, 0x80, 0xBF][..])
                .prop_map(|b| alloc::vec![b]),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    fn split(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        cuts.into_iter()
            .chain([bytes.len()])
            .map(|end| {
                let chunk = bytes[start..end].to_vec();
                start = end;
                chunk
            })
            .collect()
    }

    /// Feeds `bytes` cut at `cuts` and checks the outcome against `core::str::from_utf8`, the
    /// oracle: the same verdict, the same offset, and the failure reported by the very call
    /// whose chunk holds the byte that proves the text invalid.
    fn agrees_with_oracle(
        bytes: &[u8],
        cuts: &[prop::sample::Index],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let chunks = split(bytes, cuts);
        let chunk_refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let failure = first_failure(&chunk_refs);
        match core::str::from_utf8(bytes) {
            Ok(_) => prop_assert_eq!(failure, None),
            Err(expected) => {
                let (call, error) = failure.expect("invalid text must be rejected");
                prop_assert_eq!(error.valid_up_to, expected.valid_up_to());
                let expected_call = match expected.error_len() {
                    // An impossible lead byte proves it by itself; otherwise the sequence is
                    // a valid prefix broken by the byte right after it.
                    Some(len) => {
                        let start = expected.valid_up_to();
                        let proof = if sequence_len(bytes[start]) == 0 {
                            start
                        } else {
                            start + len
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
                    None => chunks.len(),
                };
                prop_assert_eq!(call, expected_call);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn agrees_with_from_utf8_and_fails_fast(
            bytes in prop_oneof![almost_text(), proptest::collection::vec(any::<u8>(), 0..64)],
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            agrees_with_oracle(&bytes, &cuts)?;
        }

        /// Longer messages, mostly ASCII with multi-byte characters and the odd bad byte, so
        /// the SIMD blocks (64 bytes and more) of the fast check are crossed by cuts and errors.
        #[test]
        fn long_messages_agree_with_from_utf8(
            bytes in proptest::collection::vec(
                prop_oneof![
                    6 => proptest::collection::vec(0x20u8..0x7f, 1..48),
                    3 => almost_text(),
                    1 => proptest::collection::vec(any::<u8>(), 0..4),
                ],
                0..24,
            ).prop_map(|pieces| pieces.concat()),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            agrees_with_oracle(&bytes, &cuts)?;
            agrees_with_oracle(&bytes, &[])?;
        }

        #[test]
        fn never_panics_on_arbitrary_chunks(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..8),
        ) {
            let mut validator = Utf8Validator::new();
            for chunk in &chunks {
                let _ = validator.feed(chunk);
            }
            let _ = validator.finish();
            prop_assert!(validator.is_at_boundary());
        }
    }
}
