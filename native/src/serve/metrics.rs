//! Channel figures for `/metrics`: the hub's own figures, copied by the hub thread after each
//! batch, and the slow-consumer counters the workers add to.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use duplex_core::channel::Hub;

/// Shared by the hub thread (writer of the hub's figures) and every worker (readers, and writers
/// of the slow-consumer counters).
#[derive(Debug, Default)]
pub struct ChannelMetrics {
    pub rooms: AtomicU64,
    pub members: AtomicU64,
    pub publishes: AtomicU64,
    pub deliveries: AtomicU64,
    pub replayed: AtomicU64,
    pub presence_updates: AtomicU64,
    pub gaps: AtomicU64,
    pub dropped_messages: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    broker: Mutex<BrokerState>,
}

/// The broker the hub shares rooms through, for `duplex_broker_up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerState {
    /// `in-process`: the one hub of this process, nothing to reach.
    pub kind: &'static str,
    /// Reachable.
    pub up: bool,
}

impl Default for BrokerState {
    fn default() -> BrokerState {
        BrokerState {
            kind: "in-process",
            up: true,
        }
    }
}

impl ChannelMetrics {
    /// Copies the hub's own figures.
    pub(crate) fn observe<C: Copy + Ord>(&self, hub: &Hub<C>) {
        let stats = hub.stats();
        self.rooms.store(stats.rooms as u64, Ordering::Relaxed);
        self.members.store(stats.members as u64, Ordering::Relaxed);
        self.publishes.store(stats.publishes, Ordering::Relaxed);
        self.deliveries.store(stats.deliveries, Ordering::Relaxed);
        self.replayed.store(stats.replayed, Ordering::Relaxed);
        self.presence_updates
            .store(stats.presence_updates, Ordering::Relaxed);
        self.gaps.store(stats.gaps, Ordering::Relaxed);
    }

    /// Records the broker's kind and whether it is reachable (default: `in-process`, up).
    pub fn set_broker(&self, state: BrokerState) {
        *self.broker.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub fn broker(&self) -> BrokerState {
        *self.broker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the Prometheus text of these figures.
    pub fn render(&self, out: &mut String) {
        let rows: [(&str, &str, &str, &AtomicU64); 9] = [
            (
                "duplex_rooms",
                "gauge",
                "Rooms that exist (with members or history).",
                &self.rooms,
            ),
            (
                "duplex_room_members",
                "gauge",
                "Room memberships, all rooms together.",
                &self.members,
            ),
            (
                "duplex_publishes_total",
                "counter",
                "Messages published to rooms.",
                &self.publishes,
            ),
            (
                "duplex_fanout_deliveries_total",
                "counter",
                "Room messages delivered to members as they were published (the fan-out).",
                &self.deliveries,
            ),
            (
                "duplex_replayed_messages_total",
                "counter",
                "Room messages replayed from history to members rejoining with `since`.",
                &self.replayed,
            ),
            (
                "duplex_presence_updates_total",
                "counter",
                "Presence updates delivered, one per receiving member, after coalescing.",
                &self.presence_updates,
            ),
            (
                "duplex_gaps_total",
                "counter",
                "`gap` notices sent to slow consumers.",
                &self.gaps,
            ),
            (
                "duplex_slow_consumer_dropped_total",
                "counter",
                "Room messages not sent to a slow consumer (announced by a `gap`).",
                &self.dropped_messages,
            ),
            (
                "duplex_slow_consumer_closes_total",
                "counter",
                "Connections closed with 1008 by the `close` slow-consumer policy.",
                &self.slow_consumer_closes,
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            );
        }
        let broker = self.broker();
        let _ = write!(
            out,
            "# HELP duplex_broker_up Whether the broker rooms are shared through is reachable \
             (`in-process`: the hub of this process).\n# TYPE duplex_broker_up gauge\n\
             duplex_broker_up{{kind=\"{}\"}} {}\n",
            broker.kind,
            u8::from(broker.up)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_is_in_process_unless_set() {
        let metrics = ChannelMetrics::default();
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains("\nduplex_broker_up{kind=\"in-process\"} 1\n"),
            "{out}"
        );
        metrics.set_broker(BrokerState {
            kind: "redis",
            up: false,
        });
        out.clear();
        metrics.render(&mut out);
        assert!(
            out.contains("\nduplex_broker_up{kind=\"redis\"} 0\n"),
            "{out}"
        );
    }
}
