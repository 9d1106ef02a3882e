//! The STOMP frame decoder fed chunks, and the encoder given what it decodes. Properties:
//! `duplex_fuzz::checks::stomp_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::stomp_decode(data));
