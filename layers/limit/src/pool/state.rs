//! The shared state of a pool: free units, waiters, leases. No tower
//! types; the fast path for interchangeable units is atomics only, and the
//! mutex is taken only when someone waits, for named resources, and for
//! tracked leases.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tower_hardening_core::{BoxError, Event, EventKind, EventSink, Overloaded, Priority};

use super::error::{PoolClosed, Unsatisfiable};
use super::resource::{Acquire, AttrValue, Resource};

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) max_queue: usize,
    pub(crate) queue_timeout: Duration,
    pub(crate) lease_ttl: Option<Duration>,
    pub(crate) aging: Option<Duration>,
    pub(crate) events: Option<EventSink>,
}

#[derive(Debug)]
struct Slot {
    resource: Resource,
    healthy: bool,
    holder: Option<u64>,
}

/// What a granted waiter or lease holds.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) lease: u64,
    pub(crate) units: u64,
    pub(crate) resources: Vec<usize>,
}

#[derive(Debug)]
struct Waiter {
    seq: u64,
    priority: Priority,
    enqueued: Instant,
    request: Acquire,
    /// Whether the grant becomes a tracked lease (owner, id, TTL).
    tracked: bool,
    grant: Option<Result<Grant, BoxError>>,
    waker: Option<Waker>,
}

#[derive(Debug)]
pub(crate) struct LeaseRecord {
    pub(crate) owner: Arc<str>,
    pub(crate) units: u64,
    pub(crate) resources: Vec<usize>,
    pub(crate) expires: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    slots: Vec<Slot>,
    waiters: HashMap<u64, Waiter>,
    leases: HashMap<u64, LeaseRecord>,
    next_id: u64,
    rejected: BTreeMap<Priority, u64>,
    timed_out: BTreeMap<Priority, u64>,
}

/// Shared by a pool's handles, its leases, permits and waiters.
#[derive(Debug)]
pub(crate) struct PoolInner {
    pub(crate) settings: Settings,
    /// Named pool (resources) or capacity pool (interchangeable units).
    named: bool,
    /// Free units (capacity pools); may go below zero after `set_capacity`
    /// shrinks a pool whose units are in use.
    available: AtomicI64,
    capacity: AtomicU64,
    waiting: AtomicUsize,
    /// Requests below this priority are refused (0: nothing is shed).
    shed_below: AtomicU8,
    closed: AtomicBool,
    granted_total: AtomicU64,
    rejected_total: AtomicU64,
    timed_out_total: AtomicU64,
    reclaimed_total: AtomicU64,
    state: Mutex<State>,
    /// Wakes the reclaim task: a lease with a TTL was added, or the pool
    /// closed or was dropped.
    pub(crate) lease_added: Arc<Notify>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.lease_added.notify_one();
    }
}

/// A read of a pool's counters, from [`ResourcePool::stats`](crate::ResourcePool::stats).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Units (or resources) the pool has.
    pub capacity: u64,
    /// Units free now (the seed's "ready"); 0 when a shrunk pool is still
    /// over its new capacity.
    pub available: u64,
    /// Units held now.
    pub in_use: u64,
    /// Tracked leases held now (per-request permits of the layer are not
    /// leases; they show in `in_use`).
    pub active_leases: usize,
    /// Requests waiting.
    pub queued: usize,
    /// Requests waiting, by priority.
    pub queued_by_priority: BTreeMap<Priority, usize>,
    /// Grants so far.
    pub granted_total: u64,
    /// Requests refused (full queue, shedding, shut down) so far.
    pub rejected_total: u64,
    /// Refusals by priority.
    pub rejected_by_priority: BTreeMap<Priority, u64>,
    /// Requests that waited past the queue timeout so far.
    pub timed_out_total: u64,
    /// Timeouts by priority.
    pub timed_out_by_priority: BTreeMap<Priority, u64>,
    /// Leases taken back (TTL passed, or pool shut down) so far.
    pub reclaimed_total: u64,
    /// Names of resources marked unhealthy.
    pub unhealthy: Vec<String>,
}

impl PoolInner {
    pub(crate) fn new(settings: Settings, resources: Option<Vec<Resource>>, capacity: u64) -> Self {
        let named = resources.is_some();
        let slots: Vec<Slot> = resources
            .unwrap_or_default()
            .into_iter()
            .map(|resource| Slot {
                resource,
                healthy: true,
                holder: None,
            })
            .collect();
        let capacity = if named { slots.len() as u64 } else { capacity };
        PoolInner {
            settings,
            named,
            available: AtomicI64::new(i64::try_from(capacity).unwrap_or(i64::MAX)),
            capacity: AtomicU64::new(capacity),
            waiting: AtomicUsize::new(0),
            shed_below: AtomicU8::new(0),
            closed: AtomicBool::new(false),
            granted_total: AtomicU64::new(0),
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

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.settings.name
    }

    pub(crate) fn is_named(&self) -> bool {
        self.named
    }

    /// Refuses at once what can never be granted, what is shed, and
    /// anything once the pool is closed.
    pub(crate) fn precheck(&self, request: &Acquire) -> Result<(), BoxError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Box::new(PoolClosed {
                pool: self.name().clone(),
            }));
        }
        if request.units == 0 {
            return Err(self.unsatisfiable("a request must ask for at least 1 unit".to_owned()));
        }
        if self.named {
            let state = self.lock();
            let matching = state
                .slots
                .iter()
                .filter(|slot| slot.resource.matches(&request.requirements))
                .count() as u64;
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
            let capacity = self.capacity.load(Ordering::Acquire);
            if request.units > capacity {
                return Err(self.unsatisfiable(format!(
                    "it asks for {} units and the pool's capacity is {capacity}",
                    request.units
                )));
            }
        }
        let shed = self.shed_below.load(Ordering::Acquire);
        if shed > 0 && request.priority.0 < shed - 1 {
            return Err(self.refuse(request.priority, "shedding lower priorities"));
        }
        Ok(())
    }

    fn unsatisfiable(&self, reason: String) -> BoxError {
        Box::new(Unsatisfiable {
            pool: self.name().clone(),
            reason,
        })
    }

    fn refuse(&self, priority: Priority, reason: &'static str) -> BoxError {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        *self.lock().rejected.entry(priority).or_default() += 1;
        if let Some(events) = &self.settings.events {
            events.emit_with(|| Event::new(self.name().clone(), EventKind::Shed { priority }));
        }
        Box::new(
            Overloaded::new(self.name().clone())
                .with_priority(priority)
                .with_reason(reason),
        )
    }

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
    #[inline]
    pub(crate) fn try_take_units(&self, units: u64) -> bool {
        if self.named || self.waiting.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let units = i64::try_from(units).unwrap_or(i64::MAX);
        let mut free = self.available.load(Ordering::Acquire);
        while free >= units {
            match self.available.compare_exchange_weak(
                free,
                free - units,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.granted_total.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => free = actual,
            }
        }
        false
    }

    /// Gives units back (capacity pools) and serves waiters if any.
    #[inline]
    pub(crate) fn return_units(&self, units: u64) {
        self.available
            .fetch_add(i64::try_from(units).unwrap_or(i64::MAX), Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let mut state = self.lock();
            self.dispatch(&mut state);
        }
    }

    /// Grants at once, as a tracked lease, if nobody waits and it fits.
    pub(crate) fn try_grant_now(&self, request: &Acquire, tracked: bool) -> Option<Grant> {
        if !self.named {
            if !self.try_take_units(request.units) {
                return None;
            }
            let mut state = self.lock();
            return Some(self.record_grant(&mut state, request, Vec::new(), tracked));
        }
        let mut state = self.lock();
        if !state.waiters.is_empty() {
            return None;
        }
        let resources = pick(&state.slots, request)?;
        self.granted_total.fetch_add(1, Ordering::Relaxed);
        Some(self.record_grant(&mut state, request, resources, tracked))
    }

    fn record_grant(
        &self,
        state: &mut State,
        request: &Acquire,
        resources: Vec<usize>,
        tracked: bool,
    ) -> Grant {
        state.next_id += 1;
        let lease = state.next_id;
        for &index in &resources {
            state.slots[index].holder = Some(lease);
        }
        if tracked {
            let expires = self.settings.lease_ttl.map(|ttl| Instant::now() + ttl);
            state.leases.insert(
                lease,
                LeaseRecord {
                    owner: request.owner.clone(),
                    units: request.units,
                    resources: resources.clone(),
                    expires,
                },
            );
            if expires.is_some() {
                self.lease_added.notify_one();
            }
        }
        Grant {
            lease,
            units: request.units,
            resources,
        }
    }

    /// Puts a request in the queue; `Err` if the queue is full.
    pub(crate) fn enqueue(&self, request: Acquire, tracked: bool) -> Result<u64, BoxError> {
        let mut state = self.lock();
        if state.waiters.len() >= self.settings.max_queue {
            let priority = request.priority;
            drop(state);
            return Err(self.refuse(priority, "its queue is full"));
        }
        state.next_id += 1;
        let id = state.next_id;
        state.waiters.insert(
            id,
            Waiter {
                seq: id,
                priority: request.priority,
                enqueued: Instant::now(),
                request,
                tracked,
                grant: None,
                waker: None,
            },
        );
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Units may have come back between the fast path and here.
        self.dispatch(&mut state);
        Ok(id)
    }

    /// Polls a waiter: its grant (or refusal) if it has one, else stores
    /// the waker.
    pub(crate) fn poll_waiter(&self, id: u64, waker: &Waker) -> Option<Result<Grant, BoxError>> {
        let mut state = self.lock();
        let waiter = state.waiters.get_mut(&id)?;
        match waiter.grant.take() {
            Some(result) => {
                state.waiters.remove(&id);
                Some(result)
            }
            None => {
                if !waiter.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    waiter.waker = Some(waker.clone());
                }
                None
            }
        }
    }

    /// A waiter gave up (timeout or cancellation): leaves the queue; a
    /// grant made to it at that very moment goes back to the pool.
    pub(crate) fn abandon(&self, id: u64, timed_out: bool) {
        let mut state = self.lock();
        let Some(waiter) = state.waiters.remove(&id) else {
            return;
        };
        if waiter.grant.is_none() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        if timed_out {
            self.timed_out_total.fetch_add(1, Ordering::Relaxed);
            *state.timed_out.entry(waiter.priority).or_default() += 1;
        }
        if let Some(Ok(grant)) = waiter.grant {
            self.free(&mut state, &grant);
            state.leases.remove(&grant.lease);
        }
        self.dispatch(&mut state);
    }

    /// Serves waiters, best first: highest (aged) priority, then oldest.
    /// A capacity pool stops at the first waiter that does not fit, so a
    /// large request is not starved by small ones; a named pool skips
    /// waiters whose required resources are busy.
    fn dispatch(&self, state: &mut State) {
        if state.waiters.is_empty() {
            return;
        }
        let now = Instant::now();
        let aging = self.settings.aging;
        let mut order: Vec<(Priority, u64, u64)> = state
            .waiters
            .iter()
            .filter(|(_, w)| w.grant.is_none())
            .map(|(id, w)| (effective(w.priority, w.enqueued, now, aging), w.seq, *id))
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, id) in order {
            let (request, tracked) = {
                let waiter = &state.waiters[&id];
                (waiter.request.clone(), waiter.tracked)
            };
            let resources = if self.named {
                match pick(&state.slots, &request) {
                    Some(resources) => resources,
                    None => continue,
                }
            } else {
                let units = i64::try_from(request.units).unwrap_or(i64::MAX);
                let free = self.available.load(Ordering::Acquire);
                if free < units {
                    break;
                }
                self.available.fetch_sub(units, Ordering::AcqRel);
                Vec::new()
            };
            self.granted_total.fetch_add(1, Ordering::Relaxed);
            let grant = self.record_grant(state, &request, resources, tracked);
            let waiter = state.waiters.get_mut(&id).expect("listed above");
            waiter.grant = Some(Ok(grant));
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if let Some(waker) = waiter.waker.take() {
                waker.wake();
            }
        }
    }

    fn free(&self, state: &mut State, grant: &Grant) {
        if self.named {
            for &index in &grant.resources {
                if state.slots[index].holder == Some(grant.lease) {
                    state.slots[index].holder = None;
                }
            }
        } else {
            self.available.fetch_add(
                i64::try_from(grant.units).unwrap_or(i64::MAX),
                Ordering::SeqCst,
            );
        }
    }

    /// Releases what a grant holds (its lease record too, if it has one).
    /// Returns false if it was already released or reclaimed.
    pub(crate) fn release_grant(&self, grant: &Grant, tracked: bool) -> bool {
        let mut state = self.lock();
        if tracked && state.leases.remove(&grant.lease).is_none() {
            return false;
        }
        self.free(&mut state, grant);
        self.dispatch(&mut state);
        true
    }

    /// Releases a tracked lease by id for `owner`.
    pub(crate) fn release_by_id(&self, id: u64, owner: &str) -> Result<(), super::ReleaseError> {
        let mut state = self.lock();
        let Some(record) = state.leases.get(&id) else {
            return Err(super::ReleaseError::UnknownLease {
                pool: self.name().clone(),
                lease: id,
            });
        };
        if &*record.owner != owner {
            return Err(super::ReleaseError::WrongOwner {
                pool: self.name().clone(),
                lease: id,
                given: owner.into(),
            });
        }
        let record = state.leases.remove(&id).expect("checked above");
        let grant = Grant {
            lease: id,
            units: record.units,
            resources: record.resources,
        };
        self.free(&mut state, &grant);
        self.dispatch(&mut state);
        Ok(())
    }

    pub(crate) fn lease_is_active(&self, id: u64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    /// Reclaims every lease whose TTL has passed; returns the next expiry.
    pub(crate) fn reclaim_expired(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut state = self.lock();
        let expired: Vec<u64> = state
            .leases
            .iter()
            .filter(|(_, record)| record.expires.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.reclaim(&mut state, id);
        }
        self.dispatch(&mut state);
        state
            .leases
            .values()
            .filter_map(|record| record.expires)
            .min()
    }

    fn reclaim(&self, state: &mut State, id: u64) {
        let Some(record) = state.leases.remove(&id) else {
            return;
        };
        let grant = Grant {
            lease: id,
            units: record.units,
            resources: record.resources,
        };
        self.free(state, &grant);
        self.reclaimed_total.fetch_add(1, Ordering::Relaxed);
        if let Some(events) = &self.settings.events {
            events.emit(Event::new(
                self.name().clone(),
                EventKind::LeaseReclaimed {
                    lease_id: id,
                    owner: record.owner,
                },
            ));
        }
    }

    /// Closes the pool: reclaims every lease, refuses every waiter.
    pub(crate) fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let mut state = self.lock();
        let ids: Vec<u64> = state.leases.keys().copied().collect();
        for id in ids {
            self.reclaim(&mut state, id);
        }
        let pool = self.name().clone();
        for waiter in state.waiters.values_mut() {
            if waiter.grant.is_none() {
                waiter.grant = Some(Err(Box::new(PoolClosed { pool: pool.clone() })));
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                if let Some(waker) = waiter.waker.take() {
                    waker.wake();
                }
            }
        }
        self.lease_added.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn set_capacity(&self, capacity: u64) {
        if self.named {
            return;
        }
        let old = self.capacity.swap(capacity, Ordering::AcqRel);
        let delta =
            i64::try_from(capacity).unwrap_or(i64::MAX) - i64::try_from(old).unwrap_or(i64::MAX);
        self.available.fetch_add(delta, Ordering::SeqCst);
        if delta > 0 && self.waiting.load(Ordering::SeqCst) > 0 {
            let mut state = self.lock();
            self.dispatch(&mut state);
        }
    }

    pub(crate) fn set_healthy(&self, name: &str, healthy: bool) -> bool {
        let mut state = self.lock();
        let Some(slot) = state
            .slots
            .iter_mut()
            .find(|slot| &*slot.resource.name == name)
        else {
            return false;
        };
        slot.healthy = healthy;
        if healthy {
            self.dispatch(&mut state);
        }
        true
    }

    pub(crate) fn unhealthy_among(&self, resources: &[usize]) -> Vec<String> {
        let state = self.lock();
        resources
            .iter()
            .filter(|&&i| !state.slots[i].healthy)
            .map(|&i| state.slots[i].resource.name.to_string())
            .collect()
    }

    pub(crate) fn resource(&self, index: usize) -> Resource {
        self.lock().slots[index].resource.clone()
    }

    pub(crate) fn shed_below(&self, priority: Priority) {
        self.shed_below
            .store(priority.0.saturating_add(1), Ordering::Release);
        // Waiters below the line are refused now, not at their timeout.
        let mut state = self.lock();
        let pool = self.name().clone();
        let mut refused = Vec::new();
        for waiter in state.waiters.values_mut() {
            if waiter.grant.is_none() && waiter.priority < priority {
                waiter.grant = Some(Err(Box::new(
                    Overloaded::new(pool.clone())
                        .with_priority(waiter.priority)
                        .with_reason("shedding lower priorities"),
                )));
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                refused.push(waiter.priority);
                if let Some(waker) = waiter.waker.take() {
                    waker.wake();
                }
            }
        }
        for priority in refused {
            self.rejected_total.fetch_add(1, Ordering::Relaxed);
            *state.rejected.entry(priority).or_default() += 1;
        }
    }

    pub(crate) fn stop_shedding(&self) {
        self.shed_below.store(0, Ordering::Release);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let state = self.lock();
        let capacity = self.capacity.load(Ordering::Acquire);
        let available = if self.named {
            state
                .slots
                .iter()
                .filter(|slot| slot.holder.is_none() && slot.healthy)
                .count() as u64
        } else {
            u64::try_from(self.available.load(Ordering::Acquire)).unwrap_or(0)
        };
        let in_use = if self.named {
            state
                .slots
                .iter()
                .filter(|slot| slot.holder.is_some())
                .count() as u64
        } else {
            capacity.saturating_sub(available)
        };
        let mut queued_by_priority = BTreeMap::new();
        for waiter in state.waiters.values().filter(|w| w.grant.is_none()) {
            *queued_by_priority.entry(waiter.priority).or_default() += 1;
        }
        PoolStats {
            capacity,
            available,
            in_use,
            active_leases: state.leases.len(),
            queued: queued_by_priority.values().sum(),
            queued_by_priority,
            granted_total: self.granted_total.load(Ordering::Relaxed),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
            rejected_by_priority: state.rejected.clone(),
            timed_out_total: self.timed_out_total.load(Ordering::Relaxed),
            timed_out_by_priority: state.timed_out.clone(),
            reclaimed_total: self.reclaimed_total.load(Ordering::Relaxed),
            unhealthy: state
                .slots
                .iter()
                .filter(|slot| !slot.healthy)
                .map(|slot| slot.resource.name.to_string())
                .collect(),
        }
    }
}

/// A waiter's priority raised one level per `aging` interval waited.
fn effective(
    priority: Priority,
    enqueued: Instant,
    now: Instant,
    aging: Option<Duration>,
) -> Priority {
    match aging {
        Some(step) if !step.is_zero() => {
            let levels = now.saturating_duration_since(enqueued).as_nanos() / step.as_nanos();
            Priority(
                priority
                    .0
                    .saturating_add(u8::try_from(levels).unwrap_or(u8::MAX)),
            )
        }
        _ => priority,
    }
}

/// Free, healthy resources matching the request, if enough.
fn pick(slots: &[Slot], request: &Acquire) -> Option<Vec<usize>> {
    let chosen: Vec<usize> = slots
        .iter()
        .enumerate()
        .filter(|(_, slot)| {
            slot.holder.is_none() && slot.healthy && slot.resource.matches(&request.requirements)
        })
        .map(|(index, _)| index)
        .take(usize::try_from(request.units).unwrap_or(usize::MAX))
        .collect();
    (chosen.len() as u64 == request.units).then_some(chosen)
}

fn describe(requirements: &[(Arc<str>, AttrValue)]) -> String {
    if requirements.is_empty() {
        return "no requirement".to_owned();
    }
    requirements
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
