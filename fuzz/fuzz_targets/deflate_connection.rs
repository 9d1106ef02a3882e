//! A server or client connection with permessage-deflate, fed compressed frames. Properties: `duplex_fuzz::checks::deflate_connection`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::deflate_connection(data));
