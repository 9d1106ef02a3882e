//! # duplex-wasm
//!
//! duplex-core compiled to WebAssembly for the `duplex-ws` npm package (`wasm/js/`). The
//! handshake, framing, masking, UTF-8 validation, permessage-deflate, the close handshake and
//! the heartbeat all run here; JavaScript only moves bytes and time. `wasm/build.sh` builds the
//! `.wasm` and its wasm-bindgen glue.
//!
//! Exports:
//! - [`WsConnection`] + [`WsOptions`] + [`EventKind`] (feature `socket`, on by default): the
//!   client role of a duplex-core connection, which `DuplexSocket` (a WHATWG `WebSocket` over
//!   Node `net`/`tls`) drives.
//! - [`ChannelSession`]: the core's `duplex.v1` `ClientSession`, which `DuplexClient` drives
//!   over the browser's `WebSocket` or a `DuplexSocket`.
//!
//! Without the `socket` feature the crate holds only [`ChannelSession`]: the browser build of
//! `wasm/build.sh`, for pages where the browser's own `WebSocket` does the framing.
//!
//! The same driving loop in Rust, against an in-memory duplex-core server (JavaScript does
//! exactly this with a socket in between):
//!
//! ```
//! # #[cfg(feature = "socket")] {
//! use core::time::Duration;
//! use duplex_core::{Accept, Config, Connection, Event};
//! use duplex_wasm::{EventKind, WsConnection, WsOptions};
//!
//! let mut client =
//!     WsConnection::new("ws://127.0.0.1:9001/", vec!["chat".into()], &WsOptions::new(), 0.0)
//!         .unwrap();
//! let mut server = Connection::server(Config::default(), Duration::ZERO);
//!
//! // The upgrade request is waiting to be written.
//! server.receive(Duration::ZERO, &client.take_output());
//! let Some(Event::Request(_)) = server.poll_event() else { panic!() };
//! server.accept(Accept::default().with_protocol("chat")).unwrap();
//! server.poll_event(); // Open
//!
//! client.receive(1.0, &server.poll_transmit().unwrap());
//! assert_eq!(client.poll_event(), EventKind::Open);
//! assert_eq!(client.protocol().as_deref(), Some("chat"));
//!
//! client.send_text("hello").unwrap();
//! server.receive(Duration::ZERO, &client.take_output());
//! let Some(Event::Message(message)) = server.poll_event() else { panic!() };
//! server.send(&message).unwrap();
//! client.receive(2.0, &server.poll_transmit().unwrap());
//! assert_eq!(client.poll_event(), EventKind::Text);
//! assert_eq!(client.event_text(), "hello");
//! assert_eq!(client.poll_event(), EventKind::None);
//! # }
//! ```

/// The browser build (without `socket`) allocates through lol_alloc's free list: a session holds
/// few, small allocations, and dlmalloc would be a sixth of its `.wasm`. The full build keeps
/// dlmalloc, whose speed the deflate engine wants.
#[cfg(all(target_arch = "wasm32", not(feature = "socket")))]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

mod channel;
#[cfg(feature = "socket")]
mod connection;
mod random;

pub use channel::ChannelSession;
#[cfg(feature = "socket")]
pub use connection::{EventKind, WsConnection, WsOptions};
