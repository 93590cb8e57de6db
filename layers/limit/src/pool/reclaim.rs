//! Lease records: what a grant holds, giving it back (by the lease, or by
//! id and owner), and taking it back when its TTL passes or the pool shuts
//! down, with the background task that does so on time.
//!
//! A TTL so long that the clock cannot represent its expiry means the
//! lease never expires: nothing here adds a duration to an instant without
//! checking.
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_limit::{Acquire, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let pool = ResourcePool::builder("gpu")
//!     .capacity(1)
//!     .lease_ttl(Duration::from_secs(60))
//!     .build()
//!     .unwrap();
//! let id = pool.acquire(Acquire::new("job")).await.unwrap().detach();
//! tokio::time::sleep(Duration::from_secs(61)).await;
//! assert_eq!(pool.stats().reclaimed_total, 1);
//! assert!(pool.release(id, "job").is_err()); // already taken back
//! # }
//! ```

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;
use tower_hardening_core::{Event, EventKind};

use super::error::ReleaseError;
use super::resource::Acquire;
use super::state::{Grant, PoolInner, State};

/// A tracked lease: who holds what, until when.
#[derive(Debug)]
pub(crate) struct LeaseRecord {
    pub(crate) owner: Arc<str>,
    pub(crate) units: u64,
    pub(crate) resources: Vec<usize>,
    /// `None`: no TTL, or one beyond what the clock can represent.
    pub(crate) expires: Option<Instant>,
}

impl State {
    /// Removes a lease record and its expiry.
    pub(super) fn remove_lease(&mut self, id: u64) -> Option<LeaseRecord> {
        let record = self.leases.remove(&id)?;
        if let Some(at) = record.expires {
            self.expiries.remove(&(at, id));
        }
        Some(record)
    }
}

impl PoolInner {
    /// Gives a grant an id, marks its resources held, and records it as a
    /// lease if `tracked`.
    pub(super) fn record_grant(
        &self,
        state: &mut State,
        request: &Acquire,
        resources: Vec<usize>,
        tracked: bool,
    ) -> Grant {
        let lease = state.next_id();
        for &index in &resources {
            state.slots[index].holder = Some(lease);
        }
        if tracked {
            let expires = self
                .settings
                .lease_ttl
                .and_then(|ttl| Instant::now().checked_add(ttl));
            state.leases.insert(
                lease,
                LeaseRecord {
                    owner: request.owner.clone(),
                    units: request.units,
                    resources: resources.clone(),
                    expires,
                },
            );
            if let Some(at) = expires {
                // The reclaim task sleeps until the earliest expiry: wake
                // it only when this one comes sooner.
                let sooner = state.expiries.first().is_none_or(|&(first, _)| at < first);
                state.expiries.insert((at, lease));
                if sooner {
                    self.lease_added.notify_one();
                }
            }
        }
        Grant {
            lease,
            units: request.units,
            resources,
        }
    }

    /// Frees what a grant holds, without serving anyone (callers
    /// dispatch).
    pub(super) fn free(&self, state: &mut State, grant: &Grant) {
        if self.named {
            for &index in &grant.resources {
                if state.slots[index].holder == Some(grant.lease) {
                    state.slots[index].holder = None;
                }
            }
        } else {
            self.put_back(grant.units);
        }
    }

    /// Releases what a grant holds (its lease record too, if it has one).
    /// Returns false if it was already released or reclaimed.
    pub(crate) fn release_grant(&self, grant: &Grant, tracked: bool) -> bool {
        let mut state = self.lock();
        if tracked && state.remove_lease(grant.lease).is_none() {
            return false;
        }
        self.free(&mut state, grant);
        self.dispatch(&mut state);
        true
    }

    /// Releases a tracked lease by id for `owner`.
    pub(crate) fn release_by_id(&self, id: u64, owner: &str) -> Result<(), ReleaseError> {
        let mut state = self.lock();
        let Some(record) = state.leases.get(&id) else {
            return Err(ReleaseError::UnknownLease {
                pool: self.name().clone(),
                lease: id,
            });
        };
        if &*record.owner != owner {
            return Err(ReleaseError::WrongOwner {
                pool: self.name().clone(),
                lease: id,
                given: owner.into(),
            });
        }
        let record = state.remove_lease(id).expect("checked above");
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
        let mut announce = None;
        while let Some(&(at, id)) = state.expiries.first() {
            if at > now {
                break;
            }
            announce = announce.or(self.reclaim(&mut state, id));
        }
        self.dispatch(&mut state);
        let next = state.expiries.first().map(|&(at, _)| at);
        drop(state);
        self.announce(announce);
        next
    }

    /// Publishes (and traces) an event, with the pool's lock released.
    pub(super) fn announce(&self, event: Option<Event>) {
        if let Some(event) = event {
            tower_hardening_core::publish(self.settings.events.as_ref(), || event);
        }
    }

    /// Takes every lease back (shutdown), serving nobody; returns the
    /// event to announce once the lock is released.
    pub(super) fn reclaim_all(&self, state: &mut State) -> Option<Event> {
        let ids: Vec<u64> = state.leases.keys().copied().collect();
        let mut announce = None;
        for id in ids {
            announce = announce.or(self.reclaim(state, id));
        }
        announce
    }

    /// Takes a lease back; returns its event if this second's is not out
    /// yet (announced by the caller once the lock is released).
    fn reclaim(&self, state: &mut State, id: u64) -> Option<Event> {
        let record = state.remove_lease(id)?;
        let grant = Grant {
            lease: id,
            units: record.units,
            resources: record.resources,
        };
        self.free(state, &grant);
        self.reclaimed_total.fetch_add(1, Ordering::Relaxed);
        // At most one event (one log line) a second, as sheds and
        // exhausted retries: in an incident every lease may expire at
        // once, and `reclaimed_total` counts them all.
        let second = self.created.elapsed().as_secs() + 1;
        let last = self.reclaim_second.load(Ordering::Relaxed);
        (second > last
            && self
                .reclaim_second
                .compare_exchange(last, second, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok())
        .then(|| {
            Event::new(
                self.name().clone(),
                EventKind::LeaseReclaimed {
                    lease_id: id,
                    owner: record.owner,
                },
            )
        })
    }
}

/// Sleeps until the next lease expiry, reclaims, repeats. Holds the pool
/// only weakly: when the pool is dropped its `Drop` wakes this task, which
/// then ends.
pub(super) async fn reclaim_expired(pool: Weak<PoolInner>, wake: Arc<Notify>) {
    loop {
        // Registered before looking, so a lease added meanwhile is not missed.
        let woken = wake.notified();
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            if pool.is_closed() {
                return;
            }
            pool.reclaim_expired()
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = woken => {}
                }
            }
            None => woken.await,
        }
    }
}
