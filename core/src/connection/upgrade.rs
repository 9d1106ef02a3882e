//! The opening handshake: reading the request (server) or the 101 response (client), opening.

use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::vec::Vec;

use bytes::Buf;

use super::{Connection, Role, State};
use crate::close::CloseCode;
use crate::error::Error;
use crate::handshake::client::Response;
use crate::handshake::server::{Request, write_error_response};
use crate::handshake::{HandshakeError, find_head_end};
use crate::heartbeat::Heartbeat;
use crate::message::Event;

impl Connection {
    /// Returns true when the handshake advanced and more bytes may be processed.
    pub(super) fn process_handshake(&mut self) -> bool {
        let max = self.config.max_head_size;
        let head_end = find_head_end(&self.rx[..self.rx_filled], &mut self.head_scanned);
        let end = match head_end {
            Some(end) if end <= max => end,
            Some(_) => {
                self.fail_handshake(HandshakeError::HeadTooLarge(max));
                return false;
            }
            None if self.rx_filled > max => {
                self.fail_handshake(HandshakeError::HeadTooLarge(max));
                return false;
            }
            None => return false,
        };
        // The head is parsed where it lies and then dropped from the buffer: splitting it off
        // would turn the buffer into a shared one (an allocation, and another when it grows).
        match self.role {
            Role::Server => {
                let request = Request::parse(&self.rx[..end]);
                self.drop_head(end);
                self.on_request_head(request)
            }
            Role::Client => {
                let Some(client) = self.client.take() else {
                    self.drop_head(end);
                    return false;
                };
                let response = Response::parse(&self.rx[..end], &client.key, &client.request);
                self.drop_head(end);
                self.on_response_head(response)
            }
        }
    }

    fn drop_head(&mut self, end: usize) {
        self.rx.advance(end);
        self.rx_filled -= end;
        self.head_scanned = 0;
    }

    fn on_request_head(&mut self, request: Result<Request, HandshakeError>) -> bool {
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                self.fail_handshake(e);
                return false;
            }
        };
        let key = if request.is_websocket_upgrade() {
            match request.validate_upgrade() {
                Ok(key) => {
                    self.extensions.on_request(&self.config, &request);
                    Some(key.to_string())
                }
                Err(e) => {
                    self.fail_handshake(e);
                    return false;
                }
            }
        } else {
            None
        };
        self.state = State::AwaitingDecision { key };
        self.events.push_back(Event::Request(Box::new(request)));
        false
    }

    fn on_response_head(&mut self, response: Result<Response, HandshakeError>) -> bool {
        match response {
            Ok(response) => {
                if let Err(e) = self.extensions.on_response(&self.config, &response) {
                    self.fail_handshake(e);
                    return false;
                }
                self.protocol = response.protocol.as_deref().map(Box::from);
                self.response = Some(Box::new(response));
                self.open();
                true
            }
            Err(e) => {
                self.fail_handshake(e);
                false
            }
        }
    }

    pub(super) fn fail_handshake(&mut self, error: HandshakeError) {
        if self.role == Role::Server {
            let mut out = Vec::new();
            write_error_response(&error, &mut out);
            self.tx.extend_from_slice(&out);
        }
        let reason = error.to_string();
        self.events.push_back(Event::Error(Error::Handshake(error)));
        self.finish(CloseCode::Abnormal, reason, false, false);
    }

    pub(super) fn open(&mut self) {
        self.state = State::Open;
        self.timers.stop_all();
        self.last_received = self.now;
        self.start_heartbeat();
        self.timers_changed();
        self.events.push_back(Event::Open);
    }

    pub(super) fn start_heartbeat(&mut self) {
        self.heartbeat = self
            .config
            .ping_interval
            .map(|i| Heartbeat::new(i, self.config.max_missed_pongs, self.clock()));
    }
}
