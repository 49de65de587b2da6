//! A timer heap with lazy cancellation.
//!
//! Each connection remembers the deadline it wants (`want`) and the earliest entry it has
//! in the heap (`queued`). A new entry is pushed only when the wanted deadline is earlier
//! than the queued one, so a session whose idle deadline moves later with every command
//! costs no heap growth; when an entry pops before the wanted time it is re-pushed at the
//! wanted time, and entries that are no longer the queued one are skipped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// The timer state a connection keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct TimerSlot {
    want: Option<Instant>,
    queued: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct TimerHeap {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl TimerHeap {
    /// Sets the deadline of connection (`key`, `gen`).
    pub fn arm(&mut self, slot: &mut TimerSlot, key: usize, gen: u64, want: Option<Instant>) {
        slot.want = want;
        if let Some(t) = want {
            if slot.queued.is_none_or(|q| t < q) {
                self.heap.push(Reverse((t, key, gen)));
                slot.queued = Some(t);
            }
        }
    }

    /// The earliest entry's time (possibly stale, which only costs an early wake-up).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Pops the next entry due at `now`, as (`key`, `gen`, entry time).
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64, Instant)> {
        match self.heap.peek() {
            Some(Reverse((t, _, _))) if *t <= now => {
                self.heap.pop().map(|Reverse((t, k, g))| (k, g, t))
            }
            _ => None,
        }
    }

    /// Decides what a popped entry means for its connection's `slot`: `true` when the
    /// connection's timer is due now. A live entry that popped early is re-pushed.
    pub fn fire(
        &mut self,
        slot: &mut TimerSlot,
        key: usize,
        gen: u64,
        entry: Instant,
        now: Instant,
    ) -> bool {
        if slot.queued != Some(entry) {
            return false; // stale: a newer, earlier entry replaced it
        }
        slot.queued = None;
        match slot.want {
            Some(w) if w <= now => {
                slot.want = None;
                true
            }
            Some(w) => {
                self.heap.push(Reverse((w, key, gen)));
                slot.queued = Some(w);
                false
            }
            None => false,
        }
    }

    /// Entries in the heap (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn later_deadline_reuses_the_queued_entry() {
        let t0 = Instant::now();
        let mut h = TimerHeap::default();
        let mut s = TimerSlot::default();
        h.arm(&mut s, 1, 7, Some(t0 + Duration::from_secs(10)));
        h.arm(&mut s, 1, 7, Some(t0 + Duration::from_secs(20)));
        assert_eq!(h.len(), 1);
        let now = t0 + Duration::from_secs(10);
        let (k, g, e) = h.pop_due(now).unwrap();
        assert!(!h.fire(&mut s, k, g, e, now), "not due yet: re-pushed");
        assert_eq!(h.next_deadline(), Some(t0 + Duration::from_secs(20)));
        let now = t0 + Duration::from_secs(20);
        let (k, g, e) = h.pop_due(now).unwrap();
        assert!(h.fire(&mut s, k, g, e, now));
        assert!(h.pop_due(now).is_none());
    }

    #[test]
    fn earlier_deadline_makes_the_old_entry_stale() {
        let t0 = Instant::now();
        let mut h = TimerHeap::default();
        let mut s = TimerSlot::default();
        h.arm(&mut s, 1, 7, Some(t0 + Duration::from_secs(20)));
        h.arm(&mut s, 1, 7, Some(t0 + Duration::from_secs(5)));
        let now = t0 + Duration::from_secs(30);
        let mut fired = 0;
        while let Some((k, g, e)) = h.pop_due(now) {
            if h.fire(&mut s, k, g, e, now) {
                fired += 1;
            }
        }
        assert_eq!(fired, 1);
    }

    #[test]
    fn disarmed_timer_does_not_fire() {
        let t0 = Instant::now();
        let mut h = TimerHeap::default();
        let mut s = TimerSlot::default();
        h.arm(&mut s, 1, 7, Some(t0));
        h.arm(&mut s, 1, 7, None);
        let (k, g, e) = h.pop_due(t0).unwrap();
        assert!(!h.fire(&mut s, k, g, e, t0));
    }
}
