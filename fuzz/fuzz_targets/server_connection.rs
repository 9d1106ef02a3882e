//! A server connection driven by bytes, API calls and time. Properties: `duplex_fuzz::checks::server_connection`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::server_connection(data));
