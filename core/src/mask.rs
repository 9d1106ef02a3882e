//! Payload masking (RFC 6455 §5.3).
//!
//! Every byte a client sends, and every byte a server receives, passes through here, so the hot
//! loop works on 16 bytes at a time as an element-wise XOR of arrays, which the compiler turns
//! into SIMD XORs without any `unsafe`.
//! [`apply_mask_bytewise`] is the slow, obviously correct version the fast one is tested against.

/// Bytes processed per step of the word loop; a multiple of 4 so every word starts on the same
/// key phase.
const WORD: usize = 16;

/// XOR `buf` with the 4-byte masking key, as if `buf` started at byte `offset` of the masked
/// payload (so a payload can be unmasked in pieces as it arrives).
///
/// Masking and unmasking are the same operation.
pub fn apply_mask_at(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    if buf.len() < SHORT {
        return xor_short(buf, key);
    }

    // Aligning first gives aligned loads on targets where unaligned ones are slow; `align_offset`
    // may answer "impossible" with a huge number, which just sends everything down the slow path.
    let head_len = buf.as_ptr().align_offset(WORD).min(buf.len());
    let (head, body) = buf.split_at_mut(head_len);
    xor_cycle(head, key);

    let key = rotate_key(key, head_len);
    let key_word = repeat_key(key);
    let mut words = body.chunks_exact_mut(WORD);
    for word in &mut words {
        // An element-wise XOR of two 16-byte arrays is what LLVM vectorises (a `u128` XOR
        // becomes two scalar 64-bit XORs).
        for (byte, key_byte) in word.iter_mut().zip(key_word) {
            *byte ^= key_byte;
        }
    }
    xor_cycle(words.into_remainder(), key);
}

/// Below this length a payload skips the aligned word loop: aligning alone could cost up to 15
/// bytewise steps, more than the payload's 8-byte words do.
const SHORT: usize = 64;

/// XOR a short payload 8 bytes at a time (unaligned `u64` loads), then 4, then bytewise.
fn xor_short(buf: &mut [u8], key: [u8; 4]) {
    let key4 = u32::from_ne_bytes(key);
    // The key twice in a row, in either byte order.
    let key8 = u64::from(key4) | (u64::from(key4) << 32);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let masked = u64::from_ne_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]) ^ key8;
        word.copy_from_slice(&masked.to_ne_bytes());
    }
    // Every word is 8 bytes, so the rest starts on the key's first byte again.
    let rest = words.into_remainder();
    let (four, tail) = rest.split_at_mut(rest.len() & 4);
    if let [a, b, c, d] = four {
        let masked = u32::from_ne_bytes([*a, *b, *c, *d]) ^ key4;
        four.copy_from_slice(&masked.to_ne_bytes());
    }
    xor_cycle(tail, key);
}

/// XOR with the key from its first byte, for the short head and tail.
fn xor_cycle(buf: &mut [u8], key: [u8; 4]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// XOR `buf` with the 4-byte masking key, starting at the first byte of the key.
///
/// Same as [`apply_mask_at`] with an offset of 0.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_at(buf, key, 0);
}

/// Byte-at-a-time reference implementation, the oracle for tests, fuzzing and benches.
///
/// Same contract as [`apply_mask_at`].
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    for (byte, key_byte) in buf.iter_mut().zip(key.iter().cycle()) {
        *byte ^= key_byte;
    }
}

/// The key as seen from byte `offset` of the payload.
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Byte i of the result is key[(i + offset) % 4]: a right rotation of the little-endian
    // word (a single instruction, where `<[u8]>::rotate_left` is a generic memmove).
    u32::from_le_bytes(key)
        .rotate_right(8 * (offset % 4) as u32)
        .to_le_bytes()
}

fn repeat_key(key: [u8; 4]) -> [u8; WORD] {
    let mut repeated = [0; WORD];
    for (index, byte) in repeated.iter_mut().enumerate() {
        *byte = key[index % 4];
    }
    repeated
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const KEYS: [[u8; 4]; 5] = [
        [0, 0, 0, 0],
        [0xFF, 0xFF, 0xFF, 0xFF],
        [0x37, 0xFA, 0x21, 0x3D],
        [1, 2, 3, 4],
        [0x80, 0x00, 0x7F, 0x01],
    ];

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn rfc_example_masks_hello() {
        // RFC 6455 §5.7, "A single-frame masked text message".
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xFA, 0x21, 0x3D]);
        assert_eq!(payload, [0x7F, 0x9F, 0x4D, 0x51, 0x58]);
    }

    #[test]
    fn matches_oracle_for_every_small_length_offset_and_alignment() {
        // A larger backing buffer lets the slice start at every alignment of the word loop.
        let backing = pattern(300 + WORD);
        for key in KEYS {
            for start in 0..WORD {
                for len in 0..=300 {
                    for offset in 0..8 {
                        let mut fast = backing.clone();
                        let mut slow = backing.clone();
                        apply_mask_at(&mut fast[start..start + len], key, offset);
                        apply_mask_bytewise(&mut slow[start..start + len], key, offset);
                        assert_eq!(
                            fast, slow,
                            "key {key:?} start {start} len {len} off {offset}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn huge_offsets_do_not_overflow() {
        let mut fast = pattern(40);
        let mut slow = fast.clone();
        apply_mask_at(&mut fast, [1, 2, 3, 4], usize::MAX);
        apply_mask_bytewise(&mut slow, [1, 2, 3, 4], usize::MAX);
        assert_eq!(fast, slow);
        assert_eq!(slow[0], pattern(1)[0] ^ 4);
        assert_eq!(slow[1], pattern(2)[1] ^ 1);
    }

    proptest! {
        #[test]
        fn equals_oracle(
            buf in proptest::collection::vec(any::<u8>(), 0..1024),
            key in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            let mut fast = buf.clone();
            let mut slow = buf;
            apply_mask_at(&mut fast, key, offset);
            apply_mask_bytewise(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn masking_twice_is_identity(
            buf in proptest::collection::vec(any::<u8>(), 0..1024),
            key in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            let mut masked = buf.clone();
            apply_mask_at(&mut masked, key, offset);
            apply_mask_at(&mut masked, key, offset);
            prop_assert_eq!(masked, buf);
        }

        #[test]
        fn unmasking_in_pieces_equals_whole(
            buf in proptest::collection::vec(any::<u8>(), 0..1024),
            key in any::<[u8; 4]>(),
            mut cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut whole = buf.clone();
            apply_mask(&mut whole, key);

            let mut cuts: Vec<usize> = cuts.drain(..).map(|cut| cut.index(buf.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = buf;
            let mut start = 0;
            for end in cuts.into_iter().chain([pieces.len()]) {
                apply_mask_at(&mut pieces[start..end], key, start);
                start = end;
            }
            prop_assert_eq!(pieces, whole);
        }
    }
}
