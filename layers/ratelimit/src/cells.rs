//! The keyed state: one GCRA cell per key, at most `max_keys` of them.
//!
//! governor's own keyed store grows with every key it is shown. This one
//! is bounded, and its policy when full is chosen so that a client who
//! sends a new key with every request (a "spraying" client) costs the
//! other clients nothing:
//!
//! - a key already tracked keeps its cell: nothing is ever evicted while
//!   it may still hold a debt (evicting a limited key would hand its
//!   client a fresh quota, the very thing spraying is after);
//! - while the map is full, requests with keys it does not hold all share
//!   one overflow cell with the same quota: a sprayer gets one client's
//!   quota, not one per key, and memory stays flat;
//! - a cell back at rest (its next-allowed time passed: indistinguishable
//!   from a new key) is forgotten by a sweep: the monitor's tick, or the
//!   store itself when a new key finds it full (at most once a second).

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;

/// One key's GCRA state: its theoretical arrival time, in nanoseconds
/// from the limiter's start (0: never used).
#[derive(Debug, Default)]
pub(crate) struct Cell(AtomicU64);

impl Cell {
    /// governor's `InMemoryState::measure_and_replace_one`: a CAS loop.
    fn measure<T, F, E>(&self, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            let (result, next) = f(NonZeroU64::new(prev).map(|n| Nanos::from(n.get())))?;
            match self.0.compare_exchange_weak(
                prev,
                next.as_u64(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(result),
                Err(actual) => prev = actual,
            }
        }
    }

    fn at_rest_before(&self, drop_below: Nanos) -> bool {
        self.0.load(Ordering::Relaxed) <= drop_below.as_u64()
    }
}

/// How often a full store may sweep itself on the request path.
const SELF_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The bounded keyed store (see the module docs).
#[derive(Debug)]
pub(crate) struct BoundedCells {
    /// Hashed with a per-process random seed: a client cannot pick keys
    /// that pile up in one bucket of the map.
    map: DashMap<u64, Cell, foldhash::fast::RandomState>,
    /// Cells in the map (exact: counted before an insert, given back when
    /// the insert finds the key there or a sweep removes a cell).
    len: AtomicUsize,
    max_keys: usize,
    /// Shared by the keys the map has no room for.
    overflow: Cell,
    /// Requests counted against `overflow`.
    pub(crate) overflowed: AtomicU64,
    /// When a full store last swept itself (the clock's nanoseconds + 1;
    /// 0 never).
    last_sweep: AtomicU64,
}

impl BoundedCells {
    pub(crate) fn new(max_keys: usize) -> Self {
        BoundedCells {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            len: AtomicUsize::new(0),
            max_keys,
            overflow: Cell::default(),
            overflowed: AtomicU64::new(0),
            last_sweep: AtomicU64::new(0),
        }
    }

    /// Keys tracked now.
    pub(crate) fn keys(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the store is full and may sweep itself now (`now`: the
    /// limiter clock's nanoseconds): true for one caller a second.
    pub(crate) fn wants_sweep(&self, now: Nanos) -> bool {
        if self.len.load(Ordering::Relaxed) < self.max_keys {
            return false;
        }
        let last = self.last_sweep.load(Ordering::Relaxed);
        let now = now.as_u64().saturating_add(1);
        let every = SELF_SWEEP_EVERY.as_nanos() as u64;
        (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The store as governor holds it; the limiter keeps another reference
/// for its figures and sweeps.
#[derive(Debug)]
pub(crate) struct SharedCells(pub(crate) Arc<BoundedCells>);

impl StateStore for SharedCells {
    type Key = u64;

    #[inline]
    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<u64> for SharedCells {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        self.0.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.keys()
    }

    fn is_empty(&self) -> bool {
        self.0.keys() == 0
    }
}

impl BoundedCells {
    #[inline]
    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(cell) = self.map.get(key) {
            return cell.measure(f);
        }
        // Room is taken before the insert, so racing inserts never pass
        // the bound.
        if self.len.fetch_add(1, Ordering::Relaxed) >= self.max_keys {
            self.len.fetch_sub(1, Ordering::Relaxed);
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return self.overflow.measure(f);
        }
        match self.map.entry(*key) {
            dashmap::Entry::Occupied(entry) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                entry.get().measure(f)
            }
            dashmap::Entry::Vacant(entry) => entry.insert(Cell::default()).measure(f),
        }
    }
}

impl BoundedCells {
    /// Forgets the cells at rest before `drop_below`.
    fn retain_recent(&self, drop_below: Nanos) {
        self.map.retain(|_, cell| {
            let keep = !cell.at_rest_before(drop_below);
            if !keep {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
    }
}
