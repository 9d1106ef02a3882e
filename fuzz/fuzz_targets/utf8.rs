//! Incremental UTF-8 validation against `std::str::from_utf8`. Properties: `duplex_fuzz::checks::utf8`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| duplex_fuzz::checks::utf8(data));
