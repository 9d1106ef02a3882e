//! Closing: the close handshake, failing the connection, the end of the state machine, EOF.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use super::timers::Timer;
use super::{Connection, Role, State};
use crate::close::{CloseCode, CloseFrame, encode_close_payload, parse_close_payload};
use crate::error::{Error, SendError};
use crate::frame::{MAX_CONTROL_PAYLOAD, OpCode};
use crate::message::{Closed, Event};

/// Longest close reason we put on the wire (a control payload holds 125 bytes, 2 are the code).
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

impl Connection {
    /// Starts the close handshake. The connection reports [`Event::Closed`] when the peer
    /// answers, or after the close timeout.
    ///
    /// [`CloseCode::NoStatus`] with an empty reason sends a close frame without a status code
    /// (what a browser's `close()` without arguments does); with a reason it is refused.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.check_open()?;
        let mut payload = Vec::with_capacity(2 + reason.len());
        if !(code == CloseCode::NoStatus && reason.is_empty()) {
            encode_close_payload(code, reason, &mut payload)?;
        }
        self.write_frame(true, OpCode::Close, &payload);
        self.state = State::CloseSent;
        self.stream = None;
        self.heartbeat = None;
        self.arm_timer(Timer::CloseReply, self.clock() + self.config.close_timeout);
        Ok(())
    }

    /// The peer closed its side of TCP (a read returned 0). Frames received before it are
    /// still reported first.
    pub fn receive_eof(&mut self, now: Duration) {
        self.now = crate::nanos(now);
        self.peer_eof = true;
        if self.events.is_empty() {
            self.process();
        }
        self.apply_eof();
    }

    /// Acts on the peer's EOF once every complete frame before it has been reported.
    pub(super) fn apply_eof(&mut self) {
        if !self.peer_eof || !self.events.is_empty() {
            return;
        }
        match self.state {
            State::ClosedAwaitingFin => {
                // The FIN the client waited for: done.
                self.timers.stop(Timer::Linger);
                self.state = State::Closed;
            }
            State::Closed => {}
            State::Streaming => {
                // The reader of a streamed response left: its normal end.
                self.finish(CloseCode::Normal, "reader left".into(), true, true);
            }
            _ => {
                self.events.push_back(Event::Error(Error::ConnectionReset));
                self.finish(CloseCode::Abnormal, "connection reset".into(), false, false);
            }
        }
    }

    pub(super) fn on_close_frame(&mut self, payload: &[u8]) {
        let frame = match parse_close_payload(payload) {
            Ok(frame) => frame,
            Err(e) => return self.fail(e.into()),
        };
        let (code, reason) = match frame {
            Some(CloseFrame { code, reason }) => (code, reason),
            None => (CloseCode::NoStatus, String::new()),
        };
        let initiated_by_peer = matches!(self.state, State::Open);
        if initiated_by_peer {
            // Echo the peer's code (RFC 6455 §5.5.1); an empty close gets an empty close.
            let mut reply = Vec::with_capacity(2);
            if code != CloseCode::NoStatus {
                reply.extend_from_slice(&code.as_u16().to_be_bytes());
            }
            self.write_frame(true, OpCode::Close, &reply);
        }
        self.finish(code, reason, true, initiated_by_peer);
        if self.role == Role::Client {
            // The server closes TCP first; wait for it, but not forever.
            self.state = State::ClosedAwaitingFin;
            self.arm_timer(Timer::Linger, self.clock() + self.config.close_timeout);
        }
    }

    /// Fails the connection: one close frame with the error's code, then Closed.
    pub(super) fn fail(&mut self, error: Error) {
        let code = error.close_code();
        let reason = truncate_reason(error.to_string());
        if matches!(self.state, State::Open) && code.is_valid_on_wire() {
            let mut payload = Vec::with_capacity(2 + reason.len());
            if encode_close_payload(code, &reason, &mut payload).is_ok() {
                self.write_frame(true, OpCode::Close, &payload);
            }
        }
        self.events.push_back(Event::Error(error));
        self.finish(code, reason, false, false);
    }

    pub(super) fn finish(
        &mut self,
        code: CloseCode,
        reason: String,
        clean: bool,
        initiated_by_peer: bool,
    ) {
        if matches!(self.state, State::ClosedAwaitingFin | State::Closed) {
            return;
        }
        self.state = State::Closed;
        self.frame = None;
        self.message = None;
        self.stream = None;
        self.heartbeat = None;
        self.timers.stop_all();
        self.client = None;
        self.rx_filled = 0;
        self.extensions.clear();
        self.events.push_back(Event::Closed(Closed {
            code,
            reason,
            clean,
            initiated_by_peer,
        }));
    }
}

/// Cuts a reason to what fits in a close frame, at a character boundary.
pub(super) fn truncate_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON {
        let mut end = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}
