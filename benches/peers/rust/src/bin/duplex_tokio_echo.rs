//! `duplex-tokio-echo PORT`: the duplex-tokio echo server on a current-thread tokio runtime,
//! with the default configuration (permessage-deflate offered, a heartbeat ping every 30 s).
//! Replies are queued with `feed`: they go out in one write when `recv` waits for more data,
//! so a burst of messages read at once is answered with one write.

use duplex_peers::{MAX_MESSAGE, listen, port_arg};
use duplex_tokio::{Accept, accept_with, default_config};
use tokio::net::TcpStream;

const USAGE: &str = "duplex-tokio-echo PORT";

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let config = default_config()
        .with_max_message_size(MAX_MESSAGE)
        .with_max_frame_size(MAX_MESSAGE);
    let Ok(ws) = accept_with(stream, config, |_| Ok(Accept::default())).await else {
        return;
    };
    while let Some(Ok(message)) = ws.recv().await {
        if ws.feed(message).await.is_err() {
            return;
        }
    }
}

fn main() {
    let port = port_arg(std::env::args().nth(1).as_deref(), USAGE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("cannot start the tokio runtime");
    runtime.block_on(async move {
        let listener = listen("duplex-tokio-echo", port).await;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                Err(e) => eprintln!("duplex-tokio-echo: accept failed: {e}"),
            }
        }
    });
}
