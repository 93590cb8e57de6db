//! The waiters of a pool: one FIFO queue per priority level, so finding
//! the next waiter to serve looks at the front of each non-empty level
//! (at most 256, in practice the few levels in use), never at every
//! waiter.
//!
//! Aging keeps this exact without re-sorting: every waiter of a level ages
//! at the same rate from its arrival, so a level's front is always its
//! best (see `order.rs`), and the best waiter of the pool is the best of
//! the fronts.
//!
//! A waiter that leaves from the middle of a level (cancelled, timed out,
//! or served out of order by a named pool) leaves a stale id behind, which
//! is skipped when it reaches the front; a level with more stale ids than
//! live ones is compacted, so stale ids never outnumber live ones by more
//! than a constant.
//!
//! ```
//! use tower_hardening_limit::{Acquire, Priority, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(1).build().unwrap();
//! let holder = pool.acquire(Acquire::new("holder")).await.unwrap();
//! let low = tokio::spawn({
//!     let pool = pool.clone();
//!     async move { pool.acquire(Acquire::new("low").priority(Priority::LOW)).await.map(drop) }
//! });
//! let high = tokio::spawn({
//!     let pool = pool.clone();
//!     async move { pool.acquire(Acquire::new("high").priority(Priority::HIGH)).await.map(drop) }
//! });
//! tokio::task::yield_now().await;
//! assert_eq!(pool.stats().queued, 2);
//! drop(holder); // HIGH is served first although it came second
//! high.await.unwrap().unwrap();
//! low.await.unwrap().unwrap();
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;
use tower_hardening_core::{BoxError, Priority};

use super::order::{InOrder, effective, serves_before};
use super::resource::Acquire;
use super::state::Grant;

/// Stale ids a level may carry before it is compacted (and then only if
/// they outnumber its live ids).
const COMPACT_AFTER: usize = 64;

/// Room for waiters kept after a burst has drained; beyond it the memory
/// goes back (a queue of a million waiters is not kept for ever).
const RETAINED: usize = 1_024;

/// A request in the queue, and then its answer until its future takes it.
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) request: Acquire,
    pub(super) enqueued: Instant,
    /// Whether the grant becomes a tracked lease (owner, id, TTL).
    pub(super) tracked: bool,
    pub(super) answer: Option<Result<Grant, BoxError>>,
    pub(super) waker: Option<Waker>,
}

impl Waiter {
    pub(super) fn new(request: Acquire, tracked: bool, enqueued: Instant) -> Self {
        Waiter {
            request,
            enqueued,
            tracked,
            answer: None,
            waker: None,
        }
    }

    fn is_waiting(&self) -> bool {
        self.answer.is_none()
    }

    /// Its priority now, aged.
    pub(super) fn rank(&self, now: Instant, aging: Option<Duration>) -> Priority {
        effective(self.request.priority, self.enqueued, now, aging)
    }
}

#[derive(Debug, Default)]
struct Level {
    /// Ids in arrival order; some may be stale (answered or gone).
    ids: VecDeque<u64>,
    /// How many of `ids` are stale.
    stale: usize,
}

/// The waiters of one pool, by priority.
#[derive(Debug)]
pub(super) struct WaitQueue {
    /// Waiting and answered-but-not-yet-taken waiters, by id.
    waiters: HashMap<u64, Waiter>,
    levels: Vec<Level>,
    /// Bit `p` is set when `levels[p]` holds any id.
    occupied: [u64; 4],
    /// Waiters not yet answered.
    waiting: usize,
}

impl Default for WaitQueue {
    fn default() -> Self {
        WaitQueue {
            waiters: HashMap::new(),
            levels: (0..256).map(|_| Level::default()).collect(),
            occupied: [0; 4],
            waiting: 0,
        }
    }
}

impl WaitQueue {
    /// Waiters not yet answered.
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    pub(super) fn get(&self, id: u64) -> Option<&Waiter> {
        self.waiters.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut Waiter> {
        self.waiters.get_mut(&id)
    }

    /// Queues a waiter under `id` (ids must grow with arrival).
    pub(super) fn push(&mut self, id: u64, waiter: Waiter) {
        let level = usize::from(waiter.request.priority.0);
        self.waiters.insert(id, waiter);
        self.levels[level].ids.push_back(id);
        self.occupied[level / 64] |= 1 << (level % 64);
        self.waiting += 1;
    }

    /// Answers a waiting waiter and wakes it. Its id stays in its level,
    /// stale, until it reaches the front.
    pub(super) fn answer(&mut self, id: u64, answer: Result<Grant, BoxError>) {
        let Some(waiter) = self.waiters.get_mut(&id) else {
            return;
        };
        debug_assert!(waiter.is_waiting(), "a waiter is answered once");
        waiter.answer = Some(answer);
        let level = usize::from(waiter.request.priority.0);
        if let Some(waker) = waiter.waker.take() {
            waker.wake();
        }
        self.waiting -= 1;
        self.levels[level].stale += 1;
    }

    /// Removes a waiter (answered or not) for good.
    pub(super) fn take(&mut self, id: u64) -> Option<Waiter> {
        let waiter = self.waiters.remove(&id)?;
        let capacity = self.waiters.capacity();
        if capacity > RETAINED && self.waiters.len() < capacity / 4 {
            self.waiters.shrink_to(self.waiters.len() * 2);
        }
        if waiter.is_waiting() {
            self.waiting -= 1;
            let level = usize::from(waiter.request.priority.0);
            self.levels[level].stale += 1;
            self.tidy(level);
        }
        Some(waiter)
    }

    /// Drops stale ids from a level's front, and compacts the level when
    /// stale ids outnumber live ones.
    fn tidy(&mut self, level: usize) {
        let WaitQueue {
            waiters,
            levels,
            occupied,
            ..
        } = self;
        let queue = &mut levels[level];
        let live = |id: &u64| waiters.get(id).is_some_and(Waiter::is_waiting);
        while let Some(front) = queue.ids.front() {
            if live(front) {
                break;
            }
            queue.ids.pop_front();
            queue.stale = queue.stale.saturating_sub(1);
        }
        if queue.stale > COMPACT_AFTER && queue.stale * 2 > queue.ids.len() {
            queue.ids.retain(live);
            queue.stale = 0;
        }
        if queue.ids.is_empty() {
            occupied[level / 64] &= !(1 << (level % 64));
            queue.stale = 0;
            // Give back what a burst took, keeping enough for the next.
            if queue.ids.capacity() > RETAINED {
                queue.ids = VecDeque::new();
            }
        }
    }

    /// Levels holding any id, lowest first.
    fn occupied_levels(&self) -> impl Iterator<Item = usize> + use<> {
        let words = self.occupied;
        (0..4).flat_map(move |word| {
            let mut bits = words[word];
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(word * 64 + bit)
            })
        })
    }

    /// The waiter to serve next: highest aged priority, then oldest.
    pub(super) fn best(&mut self, now: Instant, aging: Option<Duration>) -> Option<u64> {
        let mut best: Option<(Priority, u64)> = None;
        for level in self.occupied_levels() {
            self.tidy(level);
            let Some(&id) = self.levels[level].ids.front() else {
                continue;
            };
            let rank = self.waiters[&id].rank(now, aging);
            if best.is_none_or(|(p, first)| serves_before((rank, id), (p, first))) {
                best = Some((rank, id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// Every waiting id in serving order, lazily: for a named pool, which
    /// skips waiters whose resources are busy. Answering the ids it yields
    /// is allowed (they turn stale in place); nothing may be taken while it
    /// runs. Call [`tidy_all`](Self::tidy_all) afterwards.
    pub(super) fn in_order(&self, now: Instant, aging: Option<Duration>) -> InOrder {
        InOrder::new(self.occupied_levels(), now, aging)
    }

    /// The ids of one level, stale ones included.
    pub(super) fn level(&self, level: usize) -> &VecDeque<u64> {
        &self.levels[level].ids
    }

    /// Whether `id` waits (queued and not yet answered).
    pub(super) fn is_waiting(&self, id: u64) -> bool {
        self.waiters.get(&id).is_some_and(Waiter::is_waiting)
    }

    pub(super) fn tidy_all(&mut self) {
        for level in self.occupied_levels() {
            self.tidy(level);
        }
    }

    /// Answers every waiter below `priority` (all of them with `None`)
    /// with `refusal`; returns the priorities refused, one per waiter.
    pub(super) fn refuse_below(
        &mut self,
        priority: Option<Priority>,
        mut refusal: impl FnMut(Priority) -> BoxError,
    ) -> Vec<Priority> {
        let below = priority.map_or(256, |p| usize::from(p.0));
        let mut refused = Vec::new();
        let levels: Vec<usize> = self.occupied_levels().filter(|&l| l < below).collect();
        for level in levels {
            let ids = std::mem::take(&mut self.levels[level].ids);
            self.levels[level].stale = 0;
            self.occupied[level / 64] &= !(1 << (level % 64));
            for id in ids {
                let Some(waiter) = self.waiters.get_mut(&id) else {
                    continue;
                };
                if !waiter.is_waiting() {
                    continue;
                }
                let priority = waiter.request.priority;
                waiter.answer = Some(Err(refusal(priority)));
                if let Some(waker) = waiter.waker.take() {
                    waker.wake();
                }
                self.waiting -= 1;
                refused.push(priority);
            }
        }
        refused
    }

    /// Waiting waiters by priority, for stats.
    pub(super) fn waiting_by_priority(&self) -> impl Iterator<Item = (Priority, usize)> + '_ {
        self.occupied_levels().filter_map(|level| {
            let queue = &self.levels[level];
            let live = queue.ids.len().saturating_sub(queue.stale);
            (live > 0).then_some((Priority(level as u8), live))
        })
    }

    /// Ids held, stale ones included (for tests of the bound on stale ids).
    #[cfg(test)]
    fn ids_held(&self) -> usize {
        self.levels.iter().map(|level| level.ids.len()).sum()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::pool) fn waiter(priority: u8, at: Instant) -> Waiter {
        Waiter::new(Acquire::new("t").priority(Priority(priority)), false, at)
    }

    pub(in crate::pool) fn grant(lease: u64) -> Result<Grant, BoxError> {
        Ok(Grant {
            lease,
            units: 1,
            resources: Vec::new(),
        })
    }

    #[test]
    fn serves_by_priority_then_arrival() {
        let now = Instant::now();
        let mut queue = WaitQueue::default();
        for (id, priority) in [(1, 1), (2, 3), (3, 2), (4, 3), (5, 1)] {
            queue.push(id, waiter(priority, now));
        }
        let mut served = Vec::new();
        while let Some(id) = queue.best(now, None) {
            queue.answer(id, grant(id));
            served.push(id);
        }
        assert_eq!(served, vec![2, 4, 3, 1, 5]);
        assert_eq!(queue.waiting(), 0);
    }

    #[test]
    fn cancelled_waiters_never_pile_up_as_stale_ids() {
        let now = Instant::now();
        let mut queue = WaitQueue::default();
        // One long-lived front waiter, and a stream of waiters behind it
        // that all leave: the level must not keep their ids.
        queue.push(1, waiter(1, now));
        for id in 2..100_000 {
            queue.push(id, waiter(1, now));
            queue.take(id);
        }
        assert_eq!(queue.waiting(), 1);
        assert!(
            queue.ids_held() <= 2 * COMPACT_AFTER + 2,
            "{}",
            queue.ids_held()
        );
        assert_eq!(queue.best(now, None), Some(1));
    }
}
