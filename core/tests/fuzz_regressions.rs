//! Replays the fuzz corpora (`fuzz/corpus/<target>/*`) through the same property checks the
//! fuzz targets run, so every seed and every saved reproducer is a regression test on stable
//! Rust, without libFuzzer. The checks live in `fuzz/src/checks.rs`, shared with the targets.
//!
//! To add a reproducer, copy the crashing input from `fuzz/artifacts/<target>/` into
//! `fuzz/corpus/<target>/` under a name that says what it found.
//!
//! The permessage-deflate corpora (`deflate_*`) need the core's `deflate` feature: without it
//! their tests are reported as ignored.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::any::Any;
use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

/// A property check: panics when the input breaks a property.
type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("frame_decode", checks::frame_decode),
    ("server_request", checks::server_request),
    ("client_response", checks::client_response),
    ("server_connection", checks::server_connection),
    ("client_connection", checks::client_connection),
    ("utf8", checks::utf8),
    ("mask", checks::mask),
    #[cfg(feature = "deflate")]
    ("deflate_negotiation", checks::deflate_negotiation),
    #[cfg(feature = "deflate")]
    ("deflate_connection", checks::deflate_connection),
    #[cfg(feature = "channel")]
    ("channel_decode", checks::channel_decode),
    #[cfg(feature = "channel")]
    ("api_request", checks::api_request),
    #[cfg(feature = "stomp")]
    ("stomp_decode", checks::stomp_decode),
];

/// Targets whose checks need the `deflate` feature.
const DEFLATE_TARGETS: &[&str] = &["deflate_negotiation", "deflate_connection"];

/// Targets whose checks need the `channel` feature.
const CHANNEL_TARGETS: &[&str] = &["channel_decode", "api_request"];

/// Targets whose checks need the `stomp` feature.
const STOMP_TARGETS: &[&str] = &["stomp_decode"];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// The files of a directory, sorted, without hidden ones (libFuzzer's scratch files).
fn files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_string())
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `check` on every file of `fuzz/corpus/<target>/`; fails listing every file that fails.
fn replay(target: &str) {
    let check = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, check)| check)
        .expect("known target");
    let files = files(&corpus_root().join(target));
    assert!(!files.is_empty(), "fuzz/corpus/{target} has no seeds");
    let mut failures = Vec::new();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(payload) = panic::catch_unwind(|| check(&data)) {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            failures.push(format!(
                "  {target}/{name}: {}\n    input: {}",
                panic_message(payload.as_ref()),
                hex(&data)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files of {target} fail the fuzz checks:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_corpus_directory_has_a_check() {
    let entries = fs::read_dir(corpus_root()).expect("fuzz/corpus exists");
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if TARGETS.iter().any(|(target, _)| *target == name) {
            continue;
        }
        assert!(
            (!cfg!(feature = "deflate") && DEFLATE_TARGETS.contains(&&*name))
                || (!cfg!(feature = "channel") && CHANNEL_TARGETS.contains(&&*name))
                || (!cfg!(feature = "stomp") && STOMP_TARGETS.contains(&&*name)),
            "fuzz/corpus/{name} has no check in this test"
        );
    }
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode");
}

#[test]
fn server_request_corpus() {
    replay("server_request");
}

#[test]
fn client_response_corpus() {
    replay("client_response");
}

#[test]
fn server_connection_corpus() {
    replay("server_connection");
}

#[test]
fn client_connection_corpus() {
    replay("client_connection");
}

#[test]
fn utf8_corpus() {
    replay("utf8");
}

#[test]
fn mask_corpus() {
    replay("mask");
}

// Without the `deflate` feature these are reported as ignored, not as passed.

#[test]
#[cfg_attr(not(feature = "deflate"), ignore = "needs `--features deflate`")]
fn deflate_negotiation_corpus() {
    #[cfg(feature = "deflate")]
    replay("deflate_negotiation");
    #[cfg(not(feature = "deflate"))]
    panic!("the deflate checks need `--features deflate`");
}

#[test]
#[cfg_attr(not(feature = "deflate"), ignore = "needs `--features deflate`")]
fn deflate_connection_corpus() {
    #[cfg(feature = "deflate")]
    replay("deflate_connection");
    #[cfg(not(feature = "deflate"))]
    panic!("the deflate checks need `--features deflate`");
}

#[test]
#[cfg_attr(not(feature = "channel"), ignore = "needs `--features channel`")]
fn channel_decode_corpus() {
    #[cfg(feature = "channel")]
    replay("channel_decode");
    #[cfg(not(feature = "channel"))]
    panic!("the channel checks need `--features channel`");
}

#[cfg(feature = "channel")]
#[test]
fn api_request_corpus() {
    replay("api_request");
}

#[test]
#[cfg_attr(not(feature = "stomp"), ignore = "needs `--features stomp`")]
fn stomp_decode_corpus() {
    #[cfg(feature = "stomp")]
    replay("stomp_decode");
    #[cfg(not(feature = "stomp"))]
    panic!("the STOMP checks need `--features stomp`");
}
