//! The configuration both Autobahn examples (`autobahn_server`, `tokio_autobahn_client`) run
//! the TestSuite with, so the two roles are judged on the same settings.

use duplex_tokio::{Config, DeflateConfig};

pub fn config() -> Config {
    // Autobahn sends messages up to 16 MiB (cases 9.*). Every message is compressed
    // (threshold 0): the Autobahn runner mishandles uncompressed text messages on a compressed
    // connection (cases 12.*.1 and 13.*.1), although RFC 7692 allows them.
    let deflate = DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    };
    Config::default()
        .with_deflate(Some(deflate))
        .with_max_message_size(64 << 20)
        .with_max_frame_size(64 << 20)
}
