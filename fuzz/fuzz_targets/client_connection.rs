//! A client connection driven by bytes, API calls and time. Properties: `duplex_fuzz::checks::client_connection`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::client_connection(data));
