//! Server decisions on a reported request: accept the upgrade, answer plain HTTP (whole,
//! streamed, kept alive, held).

use alloc::vec::Vec;
use core::time::Duration;

use bytes::Buf;

use super::timers::Timer;
use super::{Connection, State};
use crate::close::CloseCode;
use crate::error::SendError;
use crate::handshake::server::{
    Accept, write_accept_response, write_response, write_response_keep_alive, write_streaming_head,
};
#[cfg(doc)]
use crate::message::Event;

impl Connection {
    /// Accepts the upgrade request reported by [`Event::Request`]: queues the 101 response and
    /// opens the connection. Frames the client sent right after its request are processed now.
    pub fn accept(&mut self, accept: Accept) -> Result<(), SendError> {
        let State::AwaitingDecision { key: Some(key) } = &self.state else {
            return Err(SendError::NotOpen);
        };
        let mut accept = accept;
        self.extensions.on_accept(&self.config, &mut accept);
        // Written where it is sent from; the usual response (129 bytes) in one allocation.
        let out = self.tx.tail();
        out.reserve(160);
        write_accept_response(key, &accept, out);
        self.protocol = accept.protocol.map(alloc::string::String::into_boxed_str);
        self.open();
        self.process();
        Ok(())
    }

    /// Answers the request reported by [`Event::Request`] with a plain HTTP response (a
    /// refused upgrade, `/healthz`, a page) and ends the connection.
    pub fn respond(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { .. }) {
            return Err(SendError::NotOpen);
        }
        let mut out = Vec::new();
        write_response(status, headers, body, &mut out);
        self.tx.extend_from_slice(&out);
        let reason = alloc::format!("answered with HTTP {status}");
        self.finish(CloseCode::Abnormal, reason, false, false);
        Ok(())
    }

    /// Answers the plain HTTP request reported by [`Event::Request`] with a body of unknown
    /// length (no `Content-Length`, `Connection: close`), written later with
    /// [`Connection::send_body`] and ended with [`Connection::end_body`] (Server-Sent Events,
    /// streamed downloads). The state is then `Open` for [`Connection::state`] and
    /// [`Connection::is_streaming`] is true; no timeout applies (the application ends the
    /// stream), bytes the client sends are ignored, and its EOF ends the stream with
    /// [`Event::Closed`] (code 1000, `initiated_by_peer`).
    pub fn respond_streaming(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
    ) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { key: None }) {
            return Err(SendError::NotOpen);
        }
        let mut out = Vec::new();
        write_streaming_head(status, headers, &mut out);
        self.tx.extend_from_slice(&out);
        self.state = State::Streaming;
        self.timers.stop_all();
        self.rx_filled = 0;
        self.process();
        if self.peer_eof {
            self.apply_eof();
        }
        Ok(())
    }

    /// A response started by [`Connection::respond_streaming`] is being written.
    pub fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming)
    }

    /// Queues more of a streamed response's body.
    pub fn send_body(&mut self, data: &[u8]) -> Result<(), SendError> {
        if !matches!(self.state, State::Streaming) {
            return Err(SendError::NotOpen);
        }
        self.tx.extend_from_slice(data);
        Ok(())
    }

    /// Ends a streamed response: the connection closes once the output is written.
    pub fn end_body(&mut self) -> Result<(), SendError> {
        if !matches!(self.state, State::Streaming) {
            return Err(SendError::NotOpen);
        }
        self.finish(CloseCode::Normal, "response complete".into(), true, false);
        Ok(())
    }

    /// Lets the answer to the plain HTTP request reported by [`Event::Request`] wait up to
    /// `timeout` from now instead of the handshake timeout (a long poll held until there is
    /// something to answer).
    pub fn hold_request(&mut self, timeout: Duration) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { key: None }) {
            return Err(SendError::NotOpen);
        }
        self.arm_timer(Timer::HeldRequest, self.clock() + timeout);
        Ok(())
    }

    /// The bytes received after the head of the plain HTTP request reported by
    /// [`Event::Request`] (its body, and whatever the client pipelined after it); empty once
    /// the request is answered.
    pub fn request_body(&self) -> &[u8] {
        match self.state {
            State::AwaitingDecision { key: None } => &self.rx[..self.rx_filled],
            _ => &[],
        }
    }

    /// Queues `HTTP/1.1 100 Continue` for a plain HTTP request that asked for it
    /// (`Expect: 100-continue`) before sending its body.
    pub fn continue_request(&mut self) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { key: None }) {
            return Err(SendError::NotOpen);
        }
        self.tx.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        Ok(())
    }

    /// Answers the plain HTTP request reported by [`Event::Request`] with `Connection:
    /// keep-alive` and waits for the next request on the same connection: the first `consumed`
    /// bytes of [`Connection::request_body`] (the request's body) are dropped, and what follows
    /// them is parsed as the next request (pipelining). The wait for it is bounded by the
    /// handshake timeout. Upgrade requests cannot be answered this way.
    pub fn respond_and_continue(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        consumed: usize,
    ) -> Result<(), SendError> {
        if !matches!(self.state, State::AwaitingDecision { key: None }) {
            return Err(SendError::NotOpen);
        }
        let mut out = Vec::new();
        write_response_keep_alive(status, headers, body, &mut out);
        self.tx.extend_from_slice(&out);
        let consumed = consumed.min(self.rx_filled);
        self.rx.advance(consumed);
        self.rx_filled -= consumed;
        self.head_scanned = 0;
        self.state = State::Handshake;
        self.arm_timer_after(Timer::KeepAlive, self.config.handshake_timeout);
        self.process();
        if self.peer_eof {
            self.apply_eof();
        }
        Ok(())
    }

    /// Refuses an upgrade request with an HTTP status and a body that says why.
    pub fn reject(&mut self, status: u16, body: &str) -> Result<(), SendError> {
        self.respond(
            status,
            &[("Content-Type", "text/plain; charset=utf-8")],
            body.as_bytes(),
        )
    }
}
