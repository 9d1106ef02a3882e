//! Keep-alive: "ping every `interval`, give up after `max_missed` pings in a row without a pong".

use core::time::Duration;

use crate::nanos;

/// What the connection must do when the heartbeat deadline fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Send a ping with this sequence number as payload.
    Ping(u64),
    /// Too many pings went unanswered: the peer is gone.
    Dead { missed: u32 },
}

/// The ping schedule of one open connection.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Times as nanoseconds (8 bytes instead of a `Duration`'s 16: every open connection
    /// holds a heartbeat, and memory per idle connection is a goal).
    interval: u64,
    max_missed: u32,
    next_ping: u64,
    outstanding: bool,
    missed: u32,
    sequence: u64,
}

impl Heartbeat {
    /// Starts the schedule at `now`: the first ping goes out one interval later.
    pub fn new(interval: Duration, max_missed: u32, now: Duration) -> Self {
        Heartbeat {
            interval: nanos(interval),
            max_missed: max_missed.max(1),
            next_ping: nanos(now).saturating_add(nanos(interval)),
            outstanding: false,
            missed: 0,
            sequence: 0,
        }
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_nanos(self.deadline_nanos())
    }

    /// [`Heartbeat::deadline`] as nanoseconds.
    pub(crate) fn deadline_nanos(&self) -> u64 {
        self.next_ping
    }

    /// Pings sent in a row that got no pong so far.
    pub fn missed(&self) -> u32 {
        self.missed + u32::from(self.outstanding)
    }

    /// A pong arrived. Unsolicited pongs (RFC 6455 §5.5.3) count too: they prove the peer is alive.
    pub fn on_pong(&mut self) {
        self.outstanding = false;
        self.missed = 0;
    }

    /// Called when `now` has reached [`Heartbeat::deadline`].
    pub fn on_timeout(&mut self, now: Duration) -> Option<HeartbeatAction> {
        let now = nanos(now);
        if now < self.next_ping {
            return None;
        }
        if self.outstanding {
            self.missed += 1;
            if self.missed >= self.max_missed {
                return Some(HeartbeatAction::Dead {
                    missed: self.missed,
                });
            }
        }
        self.outstanding = true;
        self.sequence += 1;
        // Schedule from `now`, not from the old deadline, so a stalled driver does not
        // fire a burst of catch-up pings.
        self.next_ping = now.saturating_add(self.interval);
        Some(HeartbeatAction::Ping(self.sequence))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pings_every_interval_and_dies_after_max_missed() {
        let mut hb = Heartbeat::new(30 * S, 3, Duration::ZERO);
        assert_eq!(hb.deadline(), 30 * S);
        assert_eq!(hb.on_timeout(29 * S), None);
        assert_eq!(hb.on_timeout(30 * S), Some(HeartbeatAction::Ping(1)));
        assert_eq!(hb.on_timeout(60 * S), Some(HeartbeatAction::Ping(2)));
        assert_eq!(hb.missed(), 2);
        assert_eq!(hb.on_timeout(90 * S), Some(HeartbeatAction::Ping(3)));
        assert_eq!(
            hb.on_timeout(120 * S),
            Some(HeartbeatAction::Dead { missed: 3 })
        );
    }

    #[test]
    fn a_pong_resets_the_count() {
        let mut hb = Heartbeat::new(10 * S, 2, Duration::ZERO);
        assert_eq!(hb.on_timeout(10 * S), Some(HeartbeatAction::Ping(1)));
        assert_eq!(hb.on_timeout(20 * S), Some(HeartbeatAction::Ping(2)));
        hb.on_pong();
        assert_eq!(hb.missed(), 0);
        assert_eq!(hb.on_timeout(30 * S), Some(HeartbeatAction::Ping(3)));
        hb.on_pong();
        assert_eq!(hb.on_timeout(40 * S), Some(HeartbeatAction::Ping(4)));
        assert_eq!(hb.on_timeout(50 * S), Some(HeartbeatAction::Ping(5)));
        assert_eq!(
            hb.on_timeout(60 * S),
            Some(HeartbeatAction::Dead { missed: 2 })
        );
    }

    #[test]
    fn a_late_driver_does_not_get_a_burst_of_pings() {
        let mut hb = Heartbeat::new(10 * S, 3, Duration::ZERO);
        assert_eq!(hb.on_timeout(100 * S), Some(HeartbeatAction::Ping(1)));
        assert_eq!(hb.deadline(), 110 * S);
        assert_eq!(hb.on_timeout(100 * S), None);
    }
}
