//! One timer structure per worker thread: a min-heap of `(deadline, connection)` entries.
//!
//! Each connection remembers the deadline it is scheduled at. Moving a deadline later costs
//! nothing (the early entry fires, the connection finds nothing due, and is rescheduled);
//! moving it earlier pushes a new entry and the old one becomes stale, recognised when popped
//! because it no longer matches the connection's scheduled deadline. The heap is rebuilt when
//! stale entries outnumber live ones, so its size stays proportional to the connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::time::Duration;

/// A deadline as nanoseconds since the worker's epoch (at least 1), in 8 bytes: an
/// `Option<Deadline>` takes half the room of an `Option<Duration>`, and a heap entry 16 bytes
/// instead of 24 (memory per idle connection is a goal; each holds one of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(NonZeroU64);

impl Deadline {
    /// `at`, to the nanosecond (584 years fit; later saturates).
    pub fn new(at: Duration) -> Deadline {
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        Deadline(NonZeroU64::MIN.saturating_add(nanos.saturating_sub(1)))
    }

    pub fn get(self) -> Duration {
        Duration::from_nanos(self.0.get())
    }
}

#[derive(Debug, Default)]
pub struct TimerHeap {
    heap: BinaryHeap<Reverse<(Deadline, usize)>>,
}

impl TimerHeap {
    pub fn new() -> TimerHeap {
        TimerHeap::default()
    }

    /// Makes sure `key` fires no later than `deadline`. `scheduled` is the connection's record
    /// of its earliest heap entry; it is updated.
    pub fn schedule(&mut self, key: usize, scheduled: &mut Option<Deadline>, deadline: Duration) {
        let deadline = Deadline::new(deadline);
        if scheduled.is_some_and(|s| s <= deadline) {
            return;
        }
        *scheduled = Some(deadline);
        self.heap.push(Reverse((deadline, key)));
    }

    /// The earliest entry, stale or not.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse((d, _))| d.get())
    }

    /// Pops an entry that is due at `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<(Deadline, usize)> {
        match self.heap.peek() {
            Some(Reverse((d, _))) if *d <= Deadline::new(now) => {
                self.heap.pop().map(|Reverse(e)| e)
            }
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Rebuilds the heap from the live schedule when it holds more than twice `live` entries.
    pub fn compact(&mut self, live: usize, entries: impl Iterator<Item = (usize, Deadline)>) {
        if self.heap.len() <= 2 * live + 64 {
            return;
        }
        self.heap = entries.map(|(k, d)| Reverse((d, k))).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn later_deadlines_do_not_push_and_earlier_ones_do() {
        let mut t = TimerHeap::new();
        let mut s = None;
        t.schedule(1, &mut s, ms(100));
        t.schedule(1, &mut s, ms(200));
        assert_eq!(t.len(), 1);
        assert_eq!(s.map(Deadline::get), Some(ms(100)));
        t.schedule(1, &mut s, ms(50));
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_deadline(), Some(ms(50)));
    }

    #[test]
    fn pops_only_due_entries_in_order() {
        let mut t = TimerHeap::new();
        let (mut a, mut b, mut c) = (None, None, None);
        t.schedule(3, &mut c, ms(30));
        t.schedule(1, &mut a, ms(10));
        t.schedule(2, &mut b, ms(20));
        let mut pop = |now| t.pop_due(now).map(|(d, k)| (d.get(), k));
        assert_eq!(pop(ms(5)), None);
        assert_eq!(pop(ms(25)), Some((ms(10), 1)));
        assert_eq!(pop(ms(25)), Some((ms(20), 2)));
        assert_eq!(pop(ms(25)), None);
        assert_eq!(pop(ms(30)), Some((ms(30), 3)));
        assert!(t.is_empty());
    }

    #[test]
    fn compact_drops_stale_entries() {
        let mut t = TimerHeap::new();
        let mut s = None;
        for i in (0..200).rev() {
            t.schedule(7, &mut s, ms(i + 1000));
        }
        assert_eq!(t.len(), 200);
        t.compact(1, std::iter::once((7, s.unwrap())));
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(ms(5000)), Some((Deadline::new(ms(1000)), 7)));
    }

    #[test]
    fn deadlines_keep_their_nanoseconds_and_order() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            ms(7),
            Duration::new(86_400, 999_999_999),
        ] {
            assert_eq!(Deadline::new(d).get(), d.max(Duration::from_nanos(1)));
        }
        assert!(Deadline::new(ms(1)) < Deadline::new(ms(2)));
        assert_eq!(
            Deadline::new(Duration::MAX).get(),
            Duration::from_nanos(u64::MAX)
        );
        assert_eq!(std::mem::size_of::<Option<Deadline>>(), 8);
    }
}
