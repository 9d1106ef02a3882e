//! The echo server the Autobahn fuzzing client (`kosoku`) drives in `tests/autobahn.sh
//! tokio-server`.
//!
//! ```text
//! cargo run --release -p duplex-tokio --example autobahn_server -- 127.0.0.1:9001
//! ```

use std::process::ExitCode;

use duplex_tokio::{Accept, Config, DeflateConfig, accept_with};
use tokio::net::TcpListener;

fn config() -> Config {
    // Autobahn sends messages up to 16 MiB (cases 9.*). Every message is compressed
    // (threshold 0): the fuzzing client mishandles uncompressed text messages on a compressed
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: autobahn_server HOST:PORT");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("autobahn_server: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("autobahn_server: listening on {addr}");
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("autobahn_server: accept: {e}");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(ws) = accept_with(tcp, config(), |_| Ok(Accept::default())).await else {
                return;
            };
            // Failing the connection is often the expected outcome of a case.
            while let Some(Ok(message)) = ws.recv().await {
                if ws.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
}
