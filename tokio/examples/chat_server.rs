//! A chat server: every text message is broadcast to every connected client, through a
//! `tokio::sync::broadcast` channel. Each connection is split into a reader task and a
//! writer task.
//!
//! ```text
//! cargo run -p duplex-tokio --example chat_server -- 127.0.0.1:9001
//! ```

use duplex_tokio::{CloseCode, Message, accept};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("chat_server: listening on ws://{}", listener.local_addr()?);
    // A subscriber more than 256 messages behind is closed rather than buffered without end.
    let (hub, _) = broadcast::channel::<Message>(256);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let hub = hub.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = match accept(tcp).await {
                Ok(ws) => ws.split(),
                Err(e) => return eprintln!("{peer}: handshake: {e}"),
            };
            let mut feed = hub.subscribe();
            let writer = tokio::spawn(async move {
                loop {
                    match feed.recv().await {
                        Ok(message) => {
                            if tx.send(message).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx.close(CloseCode::Policy, "too slow").await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            while let Some(Ok(message)) = rx.next().await {
                if let Message::Text(_) = message {
                    // No receiver only means nobody is connected right now.
                    let _ = hub.send(message);
                }
            }
            writer.abort();
        });
    }
}
