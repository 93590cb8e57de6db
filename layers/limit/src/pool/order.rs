//! The order waiters are served in: highest priority first, aged by
//! waiting, then oldest first.
//!
//! Aging raises a waiter one level per interval waited, up to
//! [`Priority::HIGH`]: a long wait makes low-priority work as important as
//! high-priority work, never more important than what the application
//! itself marks `CRITICAL`. Every waiter of a level ages at the same rate
//! from its arrival, so within a level the oldest is always the best.
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_limit::{Acquire, Priority, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots")
//!     .capacity(1)
//!     .aging(Duration::from_millis(100))
//!     .queue_timeout(Duration::from_secs(60))
//!     .build()
//!     .unwrap();
//! let holder = pool.acquire(Acquire::new("holder")).await.unwrap();
//! let low = tokio::spawn({
//!     let pool = pool.clone();
//!     async move { pool.acquire(Acquire::new("low").priority(Priority::LOW)).await.map(drop) }
//! });
//! tokio::time::sleep(Duration::from_secs(1)).await; // LOW has aged to HIGH...
//! let high = tokio::spawn({
//!     let pool = pool.clone();
//!     async move { pool.acquire(Acquire::new("high").priority(Priority::HIGH)).await.map(drop) }
//! });
//! tokio::task::yield_now().await;
//! drop(holder); // ...and, older, goes first
//! low.await.unwrap().unwrap();
//! high.await.unwrap().unwrap();
//! # }
//! ```

use std::time::Duration;

use tokio::time::Instant;
use tower_hardening_core::Priority;

use super::queue::WaitQueue;

/// A waiter's priority raised one level per `aging` interval waited, up to
/// `HIGH`; a waiter at `HIGH` or above keeps its own priority.
pub(super) fn effective(
    priority: Priority,
    enqueued: Instant,
    now: Instant,
    aging: Option<Duration>,
) -> Priority {
    match aging {
        Some(step) if !step.is_zero() && priority < Priority::HIGH => {
            let levels = now.saturating_duration_since(enqueued).as_nanos() / step.as_nanos();
            let aged = u128::from(priority.0).saturating_add(levels);
            Priority(u8::try_from(aged.min(u128::from(Priority::HIGH.0))).unwrap_or(u8::MAX))
        }
        _ => priority,
    }
}

/// Whether `(rank, id)` is served before `(other_rank, other_id)`: higher
/// rank first, then the earlier arrival (ids grow with arrival).
pub(super) fn serves_before(a: (Priority, u64), b: (Priority, u64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Every waiting id in serving order, lazily: a k-way merge over the
/// levels' queues; see [`WaitQueue::in_order`].
#[derive(Debug)]
pub(super) struct InOrder {
    /// (level, index of the next id to look at).
    cursors: Vec<(usize, usize)>,
    now: Instant,
    aging: Option<Duration>,
}

impl InOrder {
    pub(super) fn new(
        levels: impl Iterator<Item = usize>,
        now: Instant,
        aging: Option<Duration>,
    ) -> Self {
        InOrder {
            cursors: levels.map(|level| (level, 0)).collect(),
            now,
            aging,
        }
    }

    pub(super) fn next(&mut self, queue: &WaitQueue) -> Option<u64> {
        let mut best: Option<(Priority, u64, usize)> = None;
        for (slot, (level, index)) in self.cursors.iter_mut().enumerate() {
            let ids = queue.level(*level);
            // Skip stale ids (answered earlier in this pass or before).
            while let Some(&id) = ids.get(*index) {
                if queue.is_waiting(id) {
                    break;
                }
                *index += 1;
            }
            let Some(&id) = ids.get(*index) else {
                continue;
            };
            let rank = queue.get(id).expect("waiting").rank(self.now, self.aging);
            if best.is_none_or(|(p, first, _)| serves_before((rank, id), (p, first))) {
                best = Some((rank, id, slot));
            }
        }
        let (_, id, slot) = best?;
        self.cursors[slot].1 += 1;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::queue::tests::{grant, waiter};

    #[test]
    fn aging_stops_at_high_so_critical_still_wins() {
        let start = Instant::now();
        let aging = Some(Duration::from_secs(1));
        assert_eq!(
            effective(
                Priority::LOW,
                start,
                start + Duration::from_secs(3_600),
                aging
            ),
            Priority::HIGH
        );
        assert_eq!(
            effective(
                Priority::CRITICAL,
                start,
                start + Duration::from_secs(3_600),
                aging
            ),
            Priority::CRITICAL
        );
        assert_eq!(
            effective(
                Priority::LOW,
                start,
                start + Duration::from_secs(3_600),
                Some(Duration::MAX)
            ),
            Priority::LOW
        );
    }

    #[test]
    fn in_order_merges_levels_and_skips_answered() {
        let now = Instant::now();
        let mut queue = WaitQueue::default();
        for (id, priority) in [(1, 0), (2, 2), (3, 0), (4, 2)] {
            queue.push(id, waiter(priority, now));
        }
        let mut order = queue.in_order(now, None);
        let mut seen = Vec::new();
        while let Some(id) = order.next(&queue) {
            if id == 4 {
                queue.answer(id, grant(id));
            }
            seen.push(id);
        }
        assert_eq!(seen, vec![2, 4, 1, 3]);
        queue.tidy_all();
        assert_eq!(queue.waiting(), 3);
        let by_priority: Vec<_> = queue.waiting_by_priority().collect();
        assert_eq!(by_priority, vec![(Priority(0), 2), (Priority(2), 1)]);
    }
}
