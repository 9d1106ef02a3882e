#![forbid(unsafe_code)]
//! # duplex-tokio
//!
//! The [`duplex_core`] WebSocket engine on tokio: a [`WebSocketStream`] over any
//! `AsyncRead + AsyncWrite` byte stream, a [`futures_core::Stream`] of received messages and a
//! [`futures_sink::Sink`] of messages to send, with the core's timers (heartbeat, pong
//! deadline, idle and close timeouts) driven by `tokio::time` while the stream is polled,
//! permessage-deflate on by default, and backpressure on the output.
//!
//! An echo server:
//!
//! ```no_run
//! use duplex_tokio::accept;
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let Ok(ws) = accept(tcp).await else { return };
//!         while let Some(Ok(message)) = ws.recv().await {
//!             if ws.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! A client: `let (ws, _response) = duplex_tokio::connect("ws://127.0.0.1:9001/").await?;`.
//!
//! ## Behaviour
//! - Pings are answered, and timers fire, by whichever half is polled; awaiting the next
//!   message is enough, nothing else is needed from the application.
//! - [`WebSocketStream::send`] waits while more than [`DEFAULT_MAX_BUFFERED`] (adjust with
//!   [`WebSocketStream::set_max_buffered`]) waits to be written. A message it accepted is in
//!   the connection's output: dropping the future afterwards loses nothing.
//! - [`WebSocketStream::split`] gives a sending and a receiving half for two tasks; closing
//!   from the sending half ends the receiving half when the peer answers.
//! - A failed connection yields one `Err` (once its close frame is written), then `None`.

mod handshake;
mod stream;
#[cfg(feature = "tls")]
mod tls;

use std::io;

pub use duplex_core;
pub use duplex_core::deflate::DeflateConfig;
pub use duplex_core::{
    Accept, ClientRequest, CloseCode, Closed, Config, ConnectionState, Message, Request, Response,
    Utf8Bytes,
};
pub use handshake::{
    IntoClientRequest, Reject, accept, accept_with, client_handshake, connect, connect_with,
    default_config, random_source,
};
pub use stream::{DEFAULT_MAX_BUFFERED, RecvHalf, SendHalf, WebSocketStream};
#[cfg(feature = "tls")]
pub use tls::{connect_tls, connect_tls_with, default_tls_config};

/// Everything that can go wrong with a connection or a handshake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The connection failed (a protocol violation, a timeout, a failed handshake); the close
    /// code sent to the peer is `error.close_code()`.
    #[error("{0}")]
    Protocol(duplex_core::Error),
    /// The URL or request cannot be used.
    #[error("invalid request: {0}")]
    Request(duplex_core::HandshakeError),
    /// The message or control frame was refused; nothing was queued.
    #[error("send refused: {0}")]
    Send(duplex_core::SendError),
    /// The connection is closing or closed.
    #[error("the connection is closed")]
    Closed,
    /// The server side refused the upgrade with this HTTP status.
    #[error("upgrade refused with HTTP {status}")]
    Refused { status: u16 },
    /// A `wss://` URL was given to a function without TLS.
    #[error("wss:// URLs need connect_tls (feature `tls`)")]
    TlsRequired,
    /// TLS setup failed (an invalid server name).
    #[error("TLS: {0}")]
    Tls(String),
}
