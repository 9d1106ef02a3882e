//! Server handshake: head scanning in chunks, request parsing and validation. Properties: `duplex_fuzz::checks::server_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::server_request(data));
