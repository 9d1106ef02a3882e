//! Duplex over real sockets: a mio event-loop server ([`server`]), a blocking client
//! ([`client`]) and the `duplex connect` command-line client ([`connect`]), all driving the
//! sans-IO state machine of `duplex-core`.
//!
//! ```no_run
//! use duplex::server::{Echo, Server, ServerConfig};
//!
//! let config = ServerConfig {
//!     listen: "127.0.0.1:9001".parse().unwrap(),
//!     ..ServerConfig::default()
//! };
//! let server = Server::bind(config)?;
//! let stop = server.shutdown_handle(); // call stop.shutdown() from another thread
//! server.run(|_worker| Echo)?;
//! # drop(stop);
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod client;
pub mod config_file;
pub mod connect;
pub mod metrics;
pub mod serve;
pub mod server;
pub mod timer;
pub mod tls;

pub use duplex_core as core;

/// Randomness for masking keys and `Sec-WebSocket-Key`: the operating system's generator.
pub fn random_source() -> duplex_core::RandomSource {
    Box::new(fill_random)
}

fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // The OS generator is unavailable (never seen on Linux): fall back to a generator
        // seeded from the clock and a counter. Masking keys only need to be unpredictable to
        // scripts in a browser, which this process does not run.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut x = nanos ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        for b in buf {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            *b = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    }
}
