//! Word-at-a-time masking against the bytewise oracle. Properties: `duplex_fuzz::checks::mask`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::mask(data));
