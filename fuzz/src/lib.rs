//! Fuzz targets for `duplex-core`. Each target in `fuzz_targets/` hands its input to one
//! function of [`checks`], which the core's stable test suite also runs on every file of
//! `fuzz/corpus/` (`core/tests/fuzz_regressions.rs`).

pub mod checks;
