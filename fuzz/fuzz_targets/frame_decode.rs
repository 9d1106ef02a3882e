//! Frame header decoding: decode, re-encode, decode again. Properties: `duplex_fuzz::checks::frame_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::frame_decode(data));
