//! Client handshake: response parsing against a fixed request and key. Properties: `duplex_fuzz::checks::client_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::client_response(data));
