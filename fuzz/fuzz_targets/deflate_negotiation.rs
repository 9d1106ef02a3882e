//! permessage-deflate offers parsed, negotiated and answered. Properties: `duplex_fuzz::checks::deflate_negotiation`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::deflate_negotiation(data));
