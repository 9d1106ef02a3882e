#![no_std]
#![forbid(unsafe_code)]
//! duplex-core: a sans-IO WebSocket (RFC 6455) engine.

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod close;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;
