//! An echo server: every message comes back to its sender.
//!
//! ```text
//! cargo run -p duplex-tokio --example echo_server -- 127.0.0.1:9001
//! ```

use duplex_tokio::accept;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("echo_server: listening on ws://{}", listener.local_addr()?);
    loop {
        let (tcp, peer) = listener.accept().await?;
        tokio::spawn(async move {
            let ws = match accept(tcp).await {
                Ok(ws) => ws,
                Err(e) => return eprintln!("{peer}: handshake: {e}"),
            };
            while let Some(message) = ws.recv().await {
                match message {
                    Ok(message) => {
                        if let Err(e) = ws.send(message).await {
                            return eprintln!("{peer}: {e}");
                        }
                    }
                    Err(e) => return eprintln!("{peer}: {e}"),
                }
            }
        });
    }
}
