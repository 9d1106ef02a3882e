//! Errors. Every way a connection can fail knows the close code it is reported with.

use crate::close::{CloseCode, CloseError};
use crate::frame::FrameError;
use crate::handshake::HandshakeError;
use crate::utf8::Utf8Error;

/// Why a connection failed. Reported once through [`crate::Event::Error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("handshake did not complete in time")]
    HandshakeTimeout,
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("invalid close frame: {0}")]
    Close(#[from] CloseError),
    #[error("text message is not valid UTF-8: {0}")]
    InvalidUtf8(#[from] Utf8Error),
    #[error("frame payload of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge { size: u64, max: usize },
    #[error("message of at least {size} bytes exceeds the limit of {max}")]
    MessageTooLarge { size: u64, max: usize },
    #[error("no pong after {missed} pings")]
    HeartbeatTimeout { missed: u32 },
    #[error("nothing received for the idle timeout")]
    IdleTimeout,
    #[error("peer did not complete the close handshake in time")]
    CloseTimeout,
    #[error("connection closed by the peer without a close frame")]
    ConnectionReset,
    /// A permessage-deflate message is not a valid deflate stream.
    #[error("compressed message is not valid deflate data")]
    InvalidCompressedData,
}

/// RFC 6455 rules a frame sequence can break (all close with 1002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    #[error("server frame is masked")]
    MaskedServerFrame,
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    #[error("data after the close frame")]
    DataAfterClose,
}

impl Error {
    /// The close code this failure is reported to the peer with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Error::Handshake(_) | Error::HandshakeTimeout | Error::ConnectionReset => {
                CloseCode::Abnormal
            }
            Error::Frame(_) | Error::Protocol(_) => CloseCode::Protocol,
            Error::Close(e) => e.close_code(),
            Error::InvalidUtf8(_) | Error::InvalidCompressedData => CloseCode::InvalidPayload,
            Error::FrameTooLarge { .. } | Error::MessageTooLarge { .. } => CloseCode::TooBig,
            Error::HeartbeatTimeout { .. } | Error::IdleTimeout => CloseCode::GoingAway,
            Error::CloseTimeout => CloseCode::Abnormal,
        }
    }

    /// Whether the failure was caused by what the peer sent (not by a timeout or by the peer
    /// going away), so the peer may still be sending. A transport then sends its FIN and
    /// discards input until the peer's FIN (bounded by the close timeout) before it closes:
    /// closing a socket with unread bytes makes the kernel send a RST, which can destroy the
    /// close frame or the error response before the peer reads it.
    pub fn caused_by_input(&self) -> bool {
        match self {
            Error::Handshake(_)
            | Error::Frame(_)
            | Error::Protocol(_)
            | Error::Close(_)
            | Error::InvalidUtf8(_)
            | Error::FrameTooLarge { .. }
            | Error::MessageTooLarge { .. }
            | Error::InvalidCompressedData => true,
            Error::HandshakeTimeout
            | Error::HeartbeatTimeout { .. }
            | Error::IdleTimeout
            | Error::CloseTimeout
            | Error::ConnectionReset => false,
        }
    }
}

/// Why a send was refused. Nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the connection is not open")]
    NotOpen,
    #[error("control frame payload of {0} bytes (at most 125)")]
    ControlPayloadTooLong(usize),
    #[error("invalid close frame: {0}")]
    Close(#[from] CloseError),
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    #[error("a streamed message is in progress; finish it first")]
    StreamInProgress,
    #[error("no streamed message is in progress")]
    NoStreamInProgress,
}
