//! The server HTTP API's request parser, and a hub fed what it accepts. Properties:
//! `duplex_fuzz::checks::api_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::api_request(data));
