//! Echo servers on other Rust WebSocket libraries, for side-by-side runs of `duplex-load`
//! against `duplex echo` (see `benches/compare.sh`). Each binary takes the port as its argument,
//! listens on 127.0.0.1, echoes text and binary messages with their type, accepts messages up
//! to 64 MiB and offers no compression.

use std::process::exit;

/// Largest message (and frame) every peer accepts.
pub const MAX_MESSAGE: usize = 64 << 20;

/// The port argument, or a usage message and exit code 2.
pub fn port_arg(value: Option<&str>, usage: &str) -> u16 {
    match value.and_then(|v| v.parse().ok()) {
        Some(port) => port,
        None => {
            eprintln!("usage: {usage}");
            exit(2);
        }
    }
}

/// Listens on 127.0.0.1:`port` and announces it on stdout, or says why not and exits 1.
pub async fn listen(name: &str, port: u16) -> tokio::net::TcpListener {
    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => {
            println!("{name} listening on ws://127.0.0.1:{port}/");
            listener
        }
        Err(e) => {
            eprintln!("{name}: cannot listen on 127.0.0.1:{port}: {e}");
            exit(1);
        }
    }
}
