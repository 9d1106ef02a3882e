//! Time: the connection's timers, each named for what it waits for, the next deadline, and what
//! happens when one passes.

use core::time::Duration;

use bytes::BytesMut;

use super::{Connection, State};
use crate::close::CloseCode;
use crate::error::Error;
use crate::frame::OpCode;
use crate::heartbeat::{Heartbeat, HeartbeatAction};
use crate::message::Event;

/// Every timer of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The opening handshake: the request or the 101 response, and the server's decision on
    /// it, within `handshake_timeout` of the start.
    Handshake,
    /// Server: after a plain HTTP answer with keep-alive, the wait for the next request (and
    /// the decision on it), bounded by `handshake_timeout`. Ends quietly if nothing came.
    KeepAlive,
    /// Server: a plain HTTP request whose answer the application holds (a long poll,
    /// [`Connection::hold_request`]).
    HeldRequest,
    /// Our close frame is sent: the peer's reply, within `close_timeout`.
    CloseReply,
    /// Client, closed ([`State::ClosedAwaitingFin`]): the server closes TCP first; wait for
    /// its FIN, but not beyond `close_timeout`.
    Linger,
    /// Open: the next heartbeat ping, or the pong it waits for (kept by [`Heartbeat`]).
    Heartbeat,
    /// Open: nothing received for `idle_timeout` (follows the last read).
    Idle,
    /// Open, frames arriving: the emptied receive and send buffers are kept for the next
    /// message until `buffer_keep` after the last read, then released (follows the last read).
    BufferKeep,
}

impl Connection {
    /// Whether an emptied buffer of `capacity` bytes stays for the next message: while frames
    /// arrive on an open connection ([`Timer::BufferKeep`]).
    #[inline]
    pub(super) fn keeps_buffer(&self, capacity: usize) -> bool {
        self.warm && matches!(self.state, State::Open) && capacity <= super::KEEP_MAX
    }

    /// The next deadline may have moved earlier ([`Connection::timers_version`]).
    pub(super) fn timers_changed(&mut self) {
        self.timers_version = self.timers_version.wrapping_add(1);
    }

    /// Arms a stored timer (handshake, close reply, linger, held request, keep-alive) at `at`,
    /// replacing the timer of the previous state, and records that the next deadline may have
    /// moved earlier. The only way to arm one once the connection exists, so no arming can
    /// forget the version.
    pub(super) fn arm_timer(&mut self, timer: Timer, at: Duration) {
        self.timers.set(timer, at);
        self.timers_changed();
    }

    /// Arms `timer` `after` from now; an unset timeout stops every stored timer instead.
    pub(super) fn arm_timer_after(&mut self, timer: Timer, after: Option<Duration>) {
        match after {
            Some(after) => self.arm_timer(timer, self.clock() + after),
            None => self.timers.stop_all(),
        }
    }

    /// A number that changes whenever [`Connection::poll_timeout`] may have moved earlier: a
    /// timer was armed (a handshake, close or linger deadline), the connection opened, frames
    /// started to arrive (the buffer-keep deadline), or a timeout was handled. Deadlines that
    /// only move later, as the idle and buffer-keep deadlines do with every read, leave it
    /// as it is, and so does the passing of time.
    ///
    /// A driver whose own timer is set at or before the deadline it last read from
    /// `poll_timeout`, and which finds the same number here, need not ask `poll_timeout`
    /// again: its timer fires no later than the connection needs it (if early, it calls
    /// [`Connection::handle_timeout`], which changes the number, and reads the deadline anew).
    /// Compare for equality only.
    #[inline]
    pub fn timers_version(&self) -> u32 {
        self.timers_version
    }

    /// Traffic stopped: the emptied buffers go (an idle connection holds none).
    fn release_buffers(&mut self) {
        self.warm = false;
        if self.rx_filled == 0 {
            self.rx = BytesMut::new();
        }
        self.tx.release();
    }
}

/// The armed timers whose deadline is stored: [`Timer::Handshake`], [`Timer::KeepAlive`],
/// [`Timer::HeldRequest`], [`Timer::CloseReply`] and [`Timer::Linger`]. Each belongs to a state
/// the others never share, and a transition stops the timer of the state it leaves, so one
/// slot holds them all: the table costs one deadline per connection (memory per idle
/// connection is a goal). [`Timer::Heartbeat`], [`Timer::Idle`] and [`Timer::BufferKeep`] are derived from the
/// heartbeat and the last read instead of stored, so a read costs no timer update.
///
/// The deadline is kept as its seconds and nanoseconds beside the timer's name rather than as
/// an `Option<(Timer, Duration)>`: that makes 16 bytes instead of 24 (a `Duration`'s padding
/// cannot hold the name).
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    armed: Option<Timer>,
    secs: u64,
    nanos: u32,
}

impl TimerTable {
    /// A table with only the handshake's deadline, if any.
    pub(super) fn new(handshake: Option<Duration>) -> TimerTable {
        let mut table = TimerTable::default();
        if let Some(at) = handshake {
            table.set(Timer::Handshake, at);
        }
        table
    }

    /// Arms `timer` for `at`, replacing the timer of the previous state (through
    /// [`Connection::arm_timer`]).
    fn set(&mut self, timer: Timer, at: Duration) {
        debug_assert!(!matches!(
            timer,
            Timer::Heartbeat | Timer::Idle | Timer::BufferKeep
        ));
        self.armed = Some(timer);
        self.secs = at.as_secs();
        self.nanos = at.subsec_nanos();
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        if self.armed == Some(timer) {
            self.armed = None;
        }
    }

    pub(super) fn stop_all(&mut self) {
        self.armed = None;
    }

    /// The stored timer that is armed, and when it fires.
    pub(super) fn next(&self) -> Option<(Timer, Duration)> {
        self.armed
            .map(|timer| (timer, Duration::new(self.secs, self.nanos)))
    }
}

impl Connection {
    /// When a timer derived from the heartbeat or the last read fires, as nanoseconds, for an
    /// open connection ([`Timer::BufferKeep`] only while frames arrive).
    fn derived_deadline(&self, timer: Timer) -> Option<u64> {
        let after_read = |t: Duration| self.last_received.saturating_add(crate::nanos(t));
        match timer {
            Timer::Heartbeat => self.heartbeat.as_ref().map(Heartbeat::deadline_nanos),
            Timer::Idle => self.config.idle_timeout.map(after_read),
            Timer::BufferKeep if self.warm => self.config.buffer_keep.map(after_read),
            _ => None,
        }
    }

    /// When `timer` fires, if it is armed.
    fn deadline(&self, timer: Timer) -> Option<Duration> {
        match timer {
            Timer::Heartbeat | Timer::Idle | Timer::BufferKeep => {
                if !matches!(self.state, State::Open) {
                    return None;
                }
                self.derived_deadline(timer).map(Duration::from_nanos)
            }
            stored => self
                .timers
                .next()
                .filter(|(t, _)| *t == stored)
                .map(|(_, at)| at),
        }
    }

    /// The next instant [`Connection::handle_timeout`] must be called at, if any.
    ///
    /// Drivers ask after every event, so this is a few comparisons: an open connection has
    /// only derived deadlines, every other state its one stored timer at most.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let stored = self.timers.next().map(|(_, at)| at);
        if !matches!(self.state, State::Open) {
            return stored;
        }
        // The derived deadlines compared as nanoseconds (u64::MAX: none), one conversion.
        let next = [Timer::Heartbeat, Timer::Idle, Timer::BufferKeep]
            .map(|timer| self.derived_deadline(timer).unwrap_or(u64::MAX));
        let next = next[0].min(next[1]).min(next[2]);
        let derived = (next != u64::MAX).then(|| Duration::from_nanos(next));
        match (derived, stored) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires every deadline that `now` has reached.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = crate::nanos(now);
        self.timers_changed();
        if let Some((timer, at)) = self.timers.next() {
            if now >= at {
                self.timers.stop(timer);
                self.expire(timer);
            }
        } else if matches!(self.state, State::Open) {
            if self.deadline(Timer::Idle).is_some_and(|at| now >= at) {
                return self.expire(Timer::Idle);
            }
            if self.deadline(Timer::BufferKeep).is_some_and(|at| now >= at) {
                self.expire(Timer::BufferKeep);
            }
            // The heartbeat judges its own deadline.
            self.expire(Timer::Heartbeat);
        }
    }

    fn expire(&mut self, timer: Timer) {
        match timer {
            Timer::KeepAlive if matches!(self.state, State::Handshake) && self.rx_filled == 0 => {
                // An idle keep-alive connection: nothing failed.
                self.finish(CloseCode::Normal, "keep-alive idle".into(), true, false);
            }
            Timer::Handshake | Timer::KeepAlive | Timer::HeldRequest => {
                self.events.push_back(Event::Error(Error::HandshakeTimeout));
                self.finish(
                    CloseCode::Abnormal,
                    "handshake timeout".into(),
                    false,
                    false,
                );
            }
            Timer::CloseReply => {
                self.events.push_back(Event::Error(Error::CloseTimeout));
                self.finish(CloseCode::Abnormal, "close timeout".into(), false, false);
            }
            Timer::Linger => self.state = State::Closed,
            Timer::BufferKeep => self.release_buffers(),
            Timer::Idle => {
                // Failed like a dead heartbeat: a 1001 close frame, then Closed at once; a
                // peer silent this long is not waited for.
                self.fail(Error::IdleTimeout);
            }
            Timer::Heartbeat => {
                let now = self.clock();
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
        }
    }
}
