#![no_std]
#![forbid(unsafe_code)]
//! # duplex-core
//!
//! A sans-IO WebSocket engine (RFC 6455): the HTTP upgrade handshake in both roles, frame
//! parsing and masking, fragmentation, control frames, close codes, incremental UTF-8
//! validation, limits, and heartbeat/idle/close timers. It never touches a socket, a clock or a
//! random-number generator: the caller passes bytes, time and randomness in, and takes events,
//! bytes and the next deadline out. That makes it embeddable in any runtime (mio, tokio,
//! io_uring, a game loop, a microcontroller, WebAssembly). It is `no_std` + `alloc`.
//!
//! ## Driving a connection
//!
//! A driver does four things, in any order, for as long as [`Connection::is_terminated`] is
//! false: feed what the socket read ([`Connection::receive`], or [`Connection::recv_buf`] then
//! [`Connection::commit`]); handle [`Connection::poll_event`]; write [`Connection::output`] and
//! [`Connection::consume`] what was written; call [`Connection::handle_timeout`] when
//! [`Connection::poll_timeout`] is reached (and need not ask again while
//! [`Connection::timers_version`] stays the same and its timer is set no later). A server
//! that gives its messages away ([`Connection::send_owned`]) has large payloads queued
//! without a copy: its output then comes in several pieces, written one
//! [`Connection::output`] at a time or together with [`Connection::output_vectored`] and a
//! vectored write. Here a client and a server talk in memory:
//!
//! ```
//! use core::time::Duration;
//! use duplex_core::{Accept, ClientRequest, CloseCode, Config, Connection, Event, Message};
//!
//! // Move bytes one way, as a socket would.
//! fn pump(from: &mut Connection, to: &mut Connection, now: Duration) {
//!     let n = from.output().len();
//!     if n > 0 {
//!         let bytes = from.output().to_vec();
//!         from.consume(n);
//!         to.receive(now, &bytes);
//!     }
//! }
//!
//! let now = Duration::ZERO;
//! // Tests inject deterministic randomness; real drivers use getrandom.
//! let mut seed = 7u8;
//! let random = Box::new(move |buf: &mut [u8]| {
//!     for b in buf {
//!         seed = seed.wrapping_mul(31).wrapping_add(1);
//!         *b = seed;
//!     }
//! });
//! let config = Config::default().with_ping_interval(Some(Duration::from_secs(30)));
//! let request = ClientRequest::from_url("ws://example.com/chat").unwrap();
//! let mut client = Connection::client(request, config.clone(), random, now);
//! let mut server = Connection::server(config, now);
//!
//! // Handshake: the client's request is already in its output.
//! pump(&mut client, &mut server, now);
//! let Some(Event::Request(request)) = server.poll_event() else { panic!() };
//! assert_eq!(request.path(), "/chat");
//! server.accept(Accept::default()).unwrap();
//! assert_eq!(server.poll_event(), Some(Event::Open));
//! pump(&mut server, &mut client, now);
//! assert_eq!(client.poll_event(), Some(Event::Open));
//!
//! // Messages both ways.
//! client.send_text("hello").unwrap();
//! pump(&mut client, &mut server, now);
//! let Some(Event::Message(message)) = server.poll_event() else { panic!() };
//! server.send(&message).unwrap(); // echo
//! pump(&mut server, &mut client, now);
//! assert_eq!(client.poll_event(), Some(Event::Message(Message::Text("hello".into()))));
//!
//! // The buffers kept for the next message go a second after the last frame received.
//! assert_eq!(server.poll_timeout(), Some(Duration::from_secs(1)));
//! server.handle_timeout(Duration::from_secs(1));
//!
//! // The heartbeat: at the deadline the server pings, the client answers by itself.
//! let deadline = server.poll_timeout().unwrap();
//! assert_eq!(deadline, Duration::from_secs(30));
//! server.handle_timeout(deadline);
//! pump(&mut server, &mut client, deadline);
//! assert!(matches!(client.poll_event(), Some(Event::Ping(_))));
//! pump(&mut client, &mut server, deadline);
//! assert!(matches!(server.poll_event(), Some(Event::Pong(_))));
//!
//! // Close handshake: the server echoes the code and may close TCP at once.
//! client.close(CloseCode::Normal, "bye").unwrap();
//! pump(&mut client, &mut server, deadline);
//! let Some(Event::Closed(closed)) = server.poll_event() else { panic!() };
//! assert_eq!((closed.code, closed.clean), (CloseCode::Normal, true));
//! assert!(server.is_terminated());
//! pump(&mut server, &mut client, deadline);
//! assert!(matches!(client.poll_event(), Some(Event::Closed(_))));
//! client.receive_eof(deadline); // the server closed TCP
//! assert!(client.is_terminated());
//! ```
//!
//! ## Guarantees
//! - Bad input never panics: it becomes [`Event::Error`] with a precise [`Error`], a close frame
//!   with the right code (1002, 1007, 1009…) and [`Event::Closed`]; later sends return
//!   [`SendError::NotOpen`].
//! - Every buffer is bounded ([`Config`]): frame and message sizes are judged from frame headers,
//!   before payloads are buffered; the handshake head is scanned once, never re-parsed.
//! - Text is validated as it arrives: an invalid byte fails the connection at once, not at the
//!   end of the message.
//! - An idle connection holds no receive or send buffer. One with traffic keeps its emptied
//!   buffers (up to 64 KiB each) until a second after the last frame it received, so it does
//!   not allocate per message ([`Config::with_buffer_keep`]).

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(feature = "channel")]
pub mod channel;
pub mod close;
pub mod connection;
#[cfg(feature = "deflate")]
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod heartbeat;
pub mod limits;
pub mod mask;
pub mod message;
#[cfg(feature = "stomp")]
pub mod stomp;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};

/// `d` in nanoseconds, for times kept in 8 bytes instead of a `Duration`'s 16 (memory per
/// connection); 584 years fit, later saturates.
pub(crate) fn nanos(d: core::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
pub use connection::{Connection, ConnectionState, RandomSource, Role};
pub use error::{Error, ProtocolError, SendError};
pub use handshake::client::{ClientRequest, Response};
pub use handshake::server::{Accept, Request};
pub use handshake::{ExtensionOffer, HandshakeError};
pub use limits::Config;
pub use message::{Closed, Event, Message, MessageKind, PreparedMessage, Utf8Bytes};
