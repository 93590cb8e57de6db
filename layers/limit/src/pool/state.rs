//! The state every handle, lease, permit and waiter of one pool shares:
//! the settings, the atomics of the lock-free fast path, and the mutex
//! over the queue, the named slots and the lease records. No tower types.
//!
//! The other concepts each have a file that adds to [`PoolInner`]:
//! `units.rs` (free units, lock-free), `queue.rs` and `dispatch.rs`
//! (waiters by priority), `slots.rs` (named resources), `reclaim.rs`
//! (lease records, release by id, TTL), `stats.rs` (counters).
//!
//! ```
//! use tower_hardening_limit::{Acquire, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots").capacity(2).build().unwrap();
//! let same = pool.clone(); // every clone shares one state
//! let _lease = pool.acquire(Acquire::new("a")).await.unwrap();
//! assert_eq!(same.stats().in_use, 1);
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tower_hardening_core::{BoxError, EventSink, Overloaded, Priority, sync};

use super::error::{PoolClosed, Unsatisfiable};
use super::queue::WaitQueue;
use super::reclaim::LeaseRecord;
use super::resource::{Acquire, Resource};
use super::slots::{Slot, describe};

/// The longest `Retry-After` hint a refusal carries: the queue timeout,
/// but no more than this (a queue timeout of an hour is no reason to tell
/// clients to stay away for an hour).
const MAX_RETRY_HINT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) max_queue: usize,
    pub(crate) queue_timeout: Duration,
    pub(crate) lease_ttl: Option<Duration>,
    pub(crate) aging: Option<Duration>,
    pub(crate) events: Option<EventSink>,
}

/// Why a request that passed `precheck` was refused under the lock.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    Closed,
    Shed,
}

/// What a granted waiter or lease holds.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) lease: u64,
    pub(crate) units: u64,
    pub(crate) resources: Vec<usize>,
}

/// What the pool's mutex guards.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) slots: Vec<Slot>,
    pub(super) queue: WaitQueue,
    pub(super) leases: HashMap<u64, LeaseRecord>,
    /// Lease expiries, soonest first.
    pub(super) expiries: BTreeSet<(Instant, u64)>,
    /// Ids of waiters and leases alike; a waiter's id is also its place in
    /// arrival order.
    pub(super) next_id: u64,
    pub(super) rejected: BTreeMap<Priority, u64>,
    pub(super) timed_out: BTreeMap<Priority, u64>,
}

impl State {
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// Shared by a pool's handles, its leases, permits and waiters.
#[derive(Debug)]
pub(crate) struct PoolInner {
    pub(crate) settings: Settings,
    /// Named pool (resources) or capacity pool (interchangeable units).
    pub(super) named: bool,
    /// Free units (capacity pools); below zero only after `set_capacity`
    /// shrank a pool whose units are in use. Taken only by compare-and-swap
    /// against a value of at least the units taken, so grants never
    /// exceed the capacity.
    pub(super) available: AtomicI64,
    pub(super) capacity: AtomicU64,
    /// Waiters not yet answered; mirrors the queue's count so the fast
    /// path can read it without the lock.
    pub(super) waiting: AtomicUsize,
    /// Requests below this priority minus one are refused (0: nothing is
    /// shed); a `u16` so that shedding below 255 is representable.
    pub(super) shed_below: AtomicU16,
    /// Priorities whose refusal was published this second (a bit each):
    /// under overload every request is refused, and one event per
    /// priority per second tells as much as thousands.
    shed_published: [AtomicU64; 4],
    /// The second (since `created`) the bits above belong to.
    shed_second: AtomicU64,
    /// The second (since `created`, plus one) a `LeaseReclaimed` was last
    /// published in.
    pub(super) reclaim_second: AtomicU64,
    pub(super) created: std::time::Instant,
    pub(super) closed: AtomicBool,
    pub(super) granted_total: tower_hardening_core::stripe::StripedCounter,
    pub(super) rejected_total: AtomicU64,
    pub(super) timed_out_total: AtomicU64,
    pub(super) reclaimed_total: AtomicU64,
    pub(super) state: Mutex<State>,
    /// Wakes the reclaim task: a lease with a TTL was added, or the pool
    /// closed or was dropped.
    pub(crate) lease_added: Arc<Notify>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.lease_added.notify_one();
    }
}

impl PoolInner {
    pub(crate) fn new(settings: Settings, resources: Option<Vec<Resource>>, capacity: u64) -> Self {
        let named = resources.is_some();
        let slots: Vec<Slot> = resources
            .unwrap_or_default()
            .into_iter()
            .map(Slot::new)
            .collect();
        let capacity = if named { slots.len() as u64 } else { capacity };
        PoolInner {
            settings,
            named,
            available: AtomicI64::new(i64::try_from(capacity).unwrap_or(i64::MAX)),
            capacity: AtomicU64::new(capacity),
            waiting: AtomicUsize::new(0),
            shed_below: AtomicU16::new(0),
            shed_published: Default::default(),
            shed_second: AtomicU64::new(0),
            reclaim_second: AtomicU64::new(0),
            created: std::time::Instant::now(),
            closed: AtomicBool::new(false),
            granted_total: tower_hardening_core::stripe::StripedCounter::new(),
            rejected_total: AtomicU64::new(0),
            timed_out_total: AtomicU64::new(0),
            reclaimed_total: AtomicU64::new(0),
            state: Mutex::new(State {
                slots,
                ..State::default()
            }),
            lease_added: Arc::new(Notify::new()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.settings.name
    }

    pub(crate) fn is_named(&self) -> bool {
        self.named
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The pool's capacity now (units, or resources of a named pool).
    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Acquire)
    }

    /// The `Retry-After` hint of a refusal or a queue timeout: the queue
    /// timeout (by then the queue has turned over), at most a minute.
    /// Never zero: the builder refuses a zero queue timeout.
    pub(crate) fn retry_hint(&self) -> Duration {
        self.settings.queue_timeout.min(MAX_RETRY_HINT)
    }

    /// Refuses at once what can never be granted, what is shed, and
    /// anything once the pool is closed.
    pub(crate) fn precheck(&self, request: &Acquire) -> Result<(), BoxError> {
        if self.is_closed() {
            return Err(Box::new(PoolClosed::new(self.name().clone())));
        }
        if request.units == 0 {
            return Err(self.unsatisfiable("a request must ask for at least 1 unit".to_owned()));
        }
        if self.named {
            let matching = self.lock().matching(request);
            if matching < request.units {
                return Err(self.unsatisfiable(format!(
                    "it asks for {} resource(s) matching {}, and the pool has {matching}",
                    request.units,
                    describe(&request.requirements)
                )));
            }
        } else {
            if !request.requirements.is_empty() {
                return Err(self.unsatisfiable(
                    "a capacity pool has no resources with attributes to require".to_owned(),
                ));
            }
            let capacity = self.capacity();
            if request.units > capacity {
                return Err(self.unsatisfiable(format!(
                    "it asks for {} units and the pool's capacity is {capacity}",
                    request.units
                )));
            }
        }
        if self.sheds(request.priority) {
            return Err(self.refuse(request.priority, "shedding lower priorities"));
        }
        Ok(())
    }

    pub(super) fn sheds(&self, priority: Priority) -> bool {
        let shed = self.shed_below.load(Ordering::Acquire);
        shed > 0 && u16::from(priority.0) < shed - 1
    }

    pub(super) fn unsatisfiable(&self, reason: String) -> BoxError {
        Box::new(Unsatisfiable::new(self.name().clone(), reason))
    }

    /// An `Overloaded` refusal with the pool's retry hint.
    pub(super) fn overloaded(&self, priority: Priority, reason: &'static str) -> BoxError {
        Box::new(
            Overloaded::new(self.name().clone())
                .with_priority(priority)
                .with_reason(reason)
                .with_retry_after(self.retry_hint()),
        )
    }

    /// Counts and publishes a refusal; takes the lock, so call it without.
    pub(super) fn refuse(&self, priority: Priority, reason: &'static str) -> BoxError {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        *self.lock().rejected.entry(priority).or_default() += 1;
        self.publish_shed(priority);
        self.overloaded(priority, reason)
    }

    /// Publishes a `Shed` event for `priority`, at most once per priority
    /// per second.
    pub(super) fn publish_shed(&self, priority: Priority) {
        let second = self.created.elapsed().as_secs();
        let seen = self.shed_second.load(Ordering::Relaxed);
        if second > seen
            && self
                .shed_second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            for word in &self.shed_published {
                word.store(0, Ordering::Relaxed);
            }
        }
        let (word, bit) = (usize::from(priority.0 / 64), 1u64 << (priority.0 % 64));
        if self.shed_published[word].fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            use tower_hardening_core::{Event, EventKind};
            tower_hardening_core::publish(self.settings.events.as_ref(), || {
                Event::new(self.name().clone(), EventKind::Shed { priority })
            });
        }
    }

    /// Grants at once if nobody waits and it fits (`tracked`: as a lease
    /// with owner, id and TTL).
    ///
    /// `Some(Err(..))` if the pool closed, or began shedding the request's
    /// priority, after `precheck`: re-checked under the lock where the
    /// grant is recorded, so no grant outlives `shutdown` or `shed_below`.
    pub(crate) fn try_grant_now(
        &self,
        request: &Acquire,
        tracked: bool,
    ) -> Option<Result<Grant, BoxError>> {
        if !self.named {
            if !self.try_take_units(request.units) {
                return None;
            }
            let mut state = self.lock();
            if let Err(refusal) = self.recheck(request) {
                drop(state);
                // The units were never granted: back, serving waiters.
                self.return_units(request.units);
                return Some(Err(self.refused(request.priority, refusal)));
            }
            return Some(Ok(self.record_grant(
                &mut state,
                request,
                Vec::new(),
                tracked,
            )));
        }
        let mut state = self.lock();
        if let Err(refusal) = self.recheck(request) {
            drop(state);
            return Some(Err(self.refused(request.priority, refusal)));
        }
        if state.queue.waiting() > 0 {
            return None;
        }
        let resources = state.pick(request)?;
        self.granted_total.add(1);
        Some(Ok(
            self.record_grant(&mut state, request, resources, tracked)
        ))
    }

    /// The checks `precheck` made without the lock that a concurrent
    /// `shutdown` or `shed_below` can change: made again under the lock
    /// (both set their flag before they take it, so a holder of the lock
    /// sees the flag or is swept by them afterwards).
    pub(super) fn recheck(&self, request: &Acquire) -> Result<(), Refusal> {
        if self.is_closed() {
            Err(Refusal::Closed)
        } else if self.sheds(request.priority) {
            Err(Refusal::Shed)
        } else {
            Ok(())
        }
    }

    /// The error of a refusal found by [`recheck`](Self::recheck); counts
    /// and publishes a shed refusal. Takes the lock: call it without.
    pub(super) fn refused(&self, priority: Priority, refusal: Refusal) -> BoxError {
        match refusal {
            Refusal::Closed => Box::new(PoolClosed::new(self.name().clone())),
            Refusal::Shed => self.refuse(priority, "shedding lower priorities"),
        }
    }
}
