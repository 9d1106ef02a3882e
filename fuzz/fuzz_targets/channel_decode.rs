//! The duplex.v1 command decoder with size, depth and value budgets, and a hub fed what it
//! decodes. Properties: `duplex_fuzz::checks::channel_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::channel_decode(data));
