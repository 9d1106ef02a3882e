//! The connection's event queue: one event inline, more only on the heap.
//!
//! Frames are parsed one event at a time, so the queue rarely holds more than one event (two
//! around a failure: `Error` then `Closed`). Keeping the head inline means an open connection
//! allocates nothing for its events, and the overflow is released as soon as it empties.

use alloc::boxed::Box;
use alloc::collections::VecDeque;

use crate::message::Event;

#[derive(Debug, Default)]
pub(super) struct EventQueue {
    head: Option<Event>,
    /// Events after the head; boxed so the common case costs one pointer instead of the
    /// deque's four words (the extra allocation happens only on the rare overflow).
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Event>>>,
}

impl EventQueue {
    pub(super) fn new() -> EventQueue {
        EventQueue::default()
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    #[inline]
    pub(super) fn push_back(&mut self, event: Event) {
        if self.head.is_none() {
            self.head = Some(event);
        } else {
            self.rest.get_or_insert_default().push_back(event);
        }
    }

    #[inline]
    pub(super) fn pop_front(&mut self) -> Option<Event> {
        let event = self.head.take()?;
        if let Some(rest) = &mut self.rest {
            self.head = rest.pop_front();
            if rest.is_empty() {
                self.rest = None;
            }
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn keeps_order_and_releases_the_overflow() {
        let mut q = EventQueue::new();
        assert!(q.is_empty());
        assert_eq!(q.pop_front(), None);
        for i in 0..5u8 {
            q.push_back(Event::Ping(Bytes::from(alloc::vec![i])));
        }
        for i in 0..5u8 {
            assert!(!q.is_empty());
            assert_eq!(
                q.pop_front(),
                Some(Event::Ping(Bytes::from(alloc::vec![i])))
            );
        }
        assert!(q.is_empty());
        assert!(q.rest.is_none());
        q.push_back(Event::Open);
        assert!(q.rest.is_none(), "one event stays inline");
        assert_eq!(q.pop_front(), Some(Event::Open));
    }
}
