//! `tungstenite-echo [--runtime current|multi] PORT`: an echo server on tokio-tungstenite, in
//! the shape of its own echo-server example (`read.forward(write)`, which batches writes while
//! more messages are ready). `current` (the default) runs everything on one thread.

use duplex_peers::{MAX_MESSAGE, listen, port_arg};
use futures_util::{StreamExt, TryStreamExt, future};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const USAGE: &str = "tungstenite-echo [--runtime current|multi] PORT";

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (write, read) = ws.split();
    // Pings are answered and the close handshake completed by tungstenite itself.
    let _ = read
        .try_filter(|m| future::ready(m.is_text() || m.is_binary()))
        .forward(write)
        .await;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (multi, port) = match args.as_slice() {
        [port] => (false, port),
        [flag, runtime, port] if flag == "--runtime" => match runtime.as_str() {
            "current" => (false, port),
            "multi" => (true, port),
            _ => (false, &String::new()),
        },
        _ => (false, &String::new()),
    };
    let port = port_arg(Some(port.as_str()), USAGE);
    let runtime = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .enable_io()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
    }
    .expect("cannot start the tokio runtime");
    runtime.block_on(async move {
        let listener = listen("tungstenite-echo", port).await;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                Err(e) => eprintln!("tungstenite-echo: accept failed: {e}"),
            }
        }
    });
}
