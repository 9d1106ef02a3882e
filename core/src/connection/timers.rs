//! Time: the next deadline and what happens when it is reached.

use core::time::Duration;

use super::{Connection, State};
use crate::close::CloseCode;
use crate::error::Error;
use crate::frame::OpCode;
use crate::heartbeat::{Heartbeat, HeartbeatAction};
use crate::message::Event;

impl Connection {
    /// The next instant [`Connection::handle_timeout`] must be called at, if any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let deadlines = match self.state {
            State::Handshake | State::AwaitingDecision { .. } => [self.deadline, None],
            State::Open => [
                self.heartbeat.as_ref().map(Heartbeat::deadline),
                self.config.idle_timeout.map(|t| self.last_received + t),
            ],
            State::CloseSent | State::Closed => [self.deadline, None],
            State::Streaming => [None, None],
        };
        deadlines.into_iter().flatten().min()
    }

    /// Fires every deadline that `now` has reached.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now;
        match self.state {
            State::Handshake | State::AwaitingDecision { .. } => {
                if self.deadline.is_some_and(|d| now >= d) {
                    if self.kept_alive
                        && self.rx_filled == 0
                        && matches!(self.state, State::Handshake)
                    {
                        // An idle keep-alive connection: nothing failed.
                        self.finish(CloseCode::Normal, "keep-alive idle".into(), true, false);
                        return;
                    }
                    self.events.push_back(Event::Error(Error::HandshakeTimeout));
                    self.finish(
                        CloseCode::Abnormal,
                        "handshake timeout".into(),
                        false,
                        false,
                    );
                }
            }
            State::Open => {
                if self
                    .config
                    .idle_timeout
                    .is_some_and(|t| now >= self.last_received + t)
                {
                    // Failed like a dead heartbeat: a 1001 close frame, then Closed at once;
                    // a peer silent this long is not waited for.
                    return self.fail(Error::IdleTimeout);
                }
                let action = match &mut self.heartbeat {
                    Some(hb) => hb.on_timeout(now),
                    None => None,
                };
                match action {
                    Some(HeartbeatAction::Ping(seq)) => {
                        self.write_frame(true, OpCode::Ping, &seq.to_be_bytes());
                    }
                    Some(HeartbeatAction::Dead { missed }) => {
                        self.fail(Error::HeartbeatTimeout { missed });
                    }
                    None => {}
                }
            }
            State::Streaming => {}
            State::CloseSent => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.events.push_back(Event::Error(Error::CloseTimeout));
                    self.finish(CloseCode::Abnormal, "close timeout".into(), false, false);
                }
            }
            State::Closed => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.deadline = None;
                }
            }
        }
    }
}
