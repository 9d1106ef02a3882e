//! The echo server the Autobahn fuzzing client (`kosoku`) drives in `tests/autobahn.sh
//! tokio-server`.
//!
//! ```text
//! cargo run --release -p duplex-tokio --example autobahn_server -- 127.0.0.1:9001
//! ```

use std::process::ExitCode;

use duplex_tokio::{Accept, accept_with};
use tokio::net::TcpListener;

#[path = "common/autobahn.rs"]
mod autobahn;
use autobahn::config;

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
