//! The opening handshake: reading the request (server) or the 101 response (client), opening.

use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::vec::Vec;

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
        let head = self.rx.split_to(end);
        self.rx_filled -= end;
        self.head_scanned = 0;
        match self.role {
            Role::Server => self.on_request_head(&head),
            Role::Client => self.on_response_head(&head),
        }
    }

    pub(super) fn on_request_head(&mut self, head: &[u8]) -> bool {
        let request = match Request::parse(head) {
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

    pub(super) fn on_response_head(&mut self, head: &[u8]) -> bool {
        let Some(client) = self.client.take() else {
            return false;
        };
        match Response::parse(head, &client.key, &client.request) {
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
        self.events.push_back(Event::Open);
    }

    pub(super) fn start_heartbeat(&mut self) {
        self.heartbeat = self
            .config
            .ping_interval
            .map(|i| Heartbeat::new(i, self.config.max_missed_pongs, self.now));
    }
}
