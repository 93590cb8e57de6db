//! Free units of a capacity pool: one atomic counter, taken only by
//! compare-and-swap against a value of at least what is taken, so no
//! interleaving of the fast path, dispatch and releases grants more than
//! the capacity.
//!
//! ```
//! use tower_hardening_limit::{Acquire, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("bytes").capacity(1_024).build().unwrap();
//! let lease = pool.acquire(Acquire::new("upload").units(1_000)).await.unwrap();
//! assert_eq!(pool.stats().available, 24);
//! pool.set_capacity(2_048); // grows at once; shrinking waits for units to come back
//! assert_eq!(pool.stats().available, 1_048);
//! drop(lease);
//! assert_eq!(pool.stats().available, 2_048);
//! # }
//! ```

use std::sync::atomic::Ordering;

use super::state::PoolInner;
use tower_hardening_core::stripe;

fn signed(units: u64) -> i64 {
    i64::try_from(units).unwrap_or(i64::MAX)
}

impl PoolInner {
    /// Whether a request of `units` at any priority passes the checks that
    /// need no lock: the pool is open, nothing is shed, it fits the
    /// capacity. (Shedding applies per priority, so with shedding on the
    /// caller takes the slow path.)
    #[inline]
    pub(crate) fn admits_now(&self, units: u64) -> bool {
        !self.closed.load(Ordering::Acquire)
            && self.shed_below.load(Ordering::Acquire) == 0
            && units >= 1
            && units <= self.capacity.load(Ordering::Acquire)
    }

    /// The fast path for interchangeable units: takes them if nobody waits.
    /// `waiting` is read again on every retry, so a request that lost a
    /// race to a release does not overtake a waiter that queued meanwhile.
    #[inline]
    pub(crate) fn try_take_units(&self, units: u64) -> bool {
        self.try_take_units_on(units, stripe::thread_number())
    }

    /// [`try_take_units`](Self::try_take_units) for the thread numbered
    /// `thread` (a `stripe::thread_number` the caller read already).
    #[inline]
    pub(crate) fn try_take_units_on(&self, units: u64, thread: usize) -> bool {
        if self.named {
            return false;
        }
        let units = signed(units);
        let mut free = self.available.load(Ordering::SeqCst);
        loop {
            if self.waiting.load(Ordering::SeqCst) > 0 || free < units {
                return false;
            }
            match self.available.compare_exchange_weak(
                free,
                free - units,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    self.granted_total.add_at(thread, 1);
                    return true;
                }
                Err(actual) => free = actual,
            }
        }
    }

    /// Takes `units` free units for a waiter (under the pool's lock, but
    /// racing the lock-free fast path): a compare-and-swap, never a read
    /// followed by a separate subtraction.
    pub(super) fn take_free(&self, units: u64) -> bool {
        let units = signed(units);
        let mut free = self.available.load(Ordering::SeqCst);
        while free >= units {
            #[cfg(test)]
            race::between_read_and_swap();
            match self.available.compare_exchange_weak(
                free,
                free - units,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => free = actual,
            }
        }
        false
    }

    /// Puts units back without serving anyone (the caller dispatches).
    pub(super) fn put_back(&self, units: u64) {
        self.available.fetch_add(signed(units), Ordering::SeqCst);
    }

    /// Gives units back (capacity pools) and serves waiters if any.
    ///
    /// The add and the read of `waiting` are both sequentially consistent,
    /// as are `enqueue`'s publication of a waiter and its own dispatch: so
    /// either this sees the waiter, or the waiter's dispatch sees the units.
    #[inline]
    pub(crate) fn return_units(&self, units: u64) {
        self.put_back(units);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let mut state = self.lock();
            self.dispatch(&mut state);
        }
    }

    /// Changes a capacity pool's size (a named pool ignores it). Shrinking
    /// below what is in use takes effect as units come back.
    pub(crate) fn set_capacity(&self, capacity: u64) {
        if self.named {
            return;
        }
        let old = self.capacity.swap(capacity, Ordering::AcqRel);
        if old == capacity {
            return;
        }
        let delta = signed(capacity) - signed(old);
        self.available.fetch_add(delta, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // Growing serves waiters; shrinking refuses those that no
            // longer fit at all, rather than letting them block the queue.
            let mut state = self.lock();
            self.dispatch(&mut state);
        }
    }
}

/// A test hook at the one point where a read of the free units can go
/// stale: between the read and the swap.
#[cfg(test)]
mod race {
    use std::cell::RefCell;

    thread_local! {
        static HOOK: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    }

    pub(super) fn set(hook: impl FnOnce() + 'static) {
        HOOK.with(|slot| *slot.borrow_mut() = Some(Box::new(hook)));
    }

    pub(super) fn between_read_and_swap() {
        if let Some(hook) = HOOK.with(|slot| slot.borrow_mut().take()) {
            hook();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::race;
    use crate::pool::state::{PoolInner, Settings};

    fn pool(capacity: u64) -> Arc<PoolInner> {
        let settings = Settings {
            name: "slots".into(),
            max_queue: 10,
            queue_timeout: Duration::from_secs(1),
            lease_ttl: None,
            aging: None,
            events: None,
        };
        Arc::new(PoolInner::new(settings, None, capacity))
    }

    // Issue 9, item 7: dispatch read the free units, then subtracted; a
    // fast-path take in between granted the same unit twice (free went
    // to -1 and two holders had the pool's one unit).
    #[test]
    fn a_take_between_dispatchs_read_and_swap_is_not_granted_twice() {
        let pool = pool(1);
        let racer = pool.clone();
        race::set(move || assert!(racer.try_take_units(1), "the fast path takes the unit"));
        assert!(!pool.take_free(1), "dispatch sees it gone");
        assert_eq!(pool.available.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_fast_path_gives_way_to_waiters() {
        let pool = pool(2);
        pool.waiting.store(1, Ordering::SeqCst);
        assert!(!pool.try_take_units(1), "someone waits: take the slow path");
        pool.waiting.store(0, Ordering::SeqCst);
        assert!(pool.try_take_units(2));
        assert!(!pool.try_take_units(1));
        pool.return_units(2);
        assert_eq!(pool.available.load(Ordering::SeqCst), 2);
    }
}
