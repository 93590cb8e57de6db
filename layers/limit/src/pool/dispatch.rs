//! Serving waiters: queueing a request, answering it when units come
//! back, taking the answer, leaving the queue, and refusing waiters when
//! the pool sheds or shuts down.
//!
//! A capacity pool serves the best waiter while it fits and stops at the
//! first that does not, so a large request is not starved by small ones:
//! each grant costs a look at the front of each priority level in use. A
//! named pool walks waiters in the same order and skips those whose
//! resources are busy, stopping once no resource is free.
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_limit::{Acquire, QueueTimeout, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let pool = ResourcePool::builder("slots")
//!     .capacity(1)
//!     .queue_timeout(Duration::from_secs(2))
//!     .build()
//!     .unwrap();
//! let _holder = pool.acquire(Acquire::new("holder")).await.unwrap();
//! let err = pool.acquire(Acquire::new("late")).await.unwrap_err();
//! let timeout = err.downcast_ref::<QueueTimeout>().unwrap();
//! assert_eq!(timeout.retry_after(), Some(Duration::from_secs(2)));
//! # }
//! ```

use std::sync::atomic::Ordering;
use std::task::Waker;

use tokio::time::Instant;
use tower_hardening_core::{BoxError, Priority};

use super::error::PoolClosed;
use super::queue::Waiter;
use super::resource::Acquire;
use super::state::{Grant, PoolInner, State};

impl PoolInner {
    /// Publishes the queue's count for the lock-free fast path.
    fn publish_waiting(&self, state: &State) {
        self.waiting.store(state.queue.waiting(), Ordering::SeqCst);
    }

    /// Puts a request in the queue; `Err` if the queue is full.
    pub(crate) fn enqueue(&self, request: Acquire, tracked: bool) -> Result<u64, BoxError> {
        let mut state = self.lock();
        if let Err(refusal) = self.recheck(&request) {
            drop(state);
            return Err(self.refused(request.priority, refusal));
        }
        if state.queue.waiting() >= self.settings.max_queue {
            let priority = request.priority;
            drop(state);
            return Err(self.refuse(priority, "its queue is full"));
        }
        let id = state.next_id();
        state
            .queue
            .push(id, Waiter::new(request, tracked, Instant::now()));
        self.publish_waiting(&state);
        // Units may have come back between the fast path and here.
        self.dispatch(&mut state);
        Ok(id)
    }

    /// Polls a waiter: its answer if it has one, else stores the waker.
    pub(crate) fn poll_waiter(&self, id: u64, waker: &Waker) -> Option<Result<Grant, BoxError>> {
        let mut state = self.lock();
        let waiter = state.queue.get_mut(id)?;
        if waiter.answer.is_some() {
            return state.queue.take(id).and_then(|waiter| waiter.answer);
        }
        if !waiter.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            waiter.waker = Some(waker.clone());
        }
        None
    }

    /// A waiter gave up (timeout or cancellation): leaves the queue; a
    /// grant made to it at that very moment goes back to the pool.
    pub(crate) fn abandon(&self, id: u64, timed_out: bool) {
        let mut state = self.lock();
        let Some(waiter) = state.queue.take(id) else {
            return;
        };
        self.publish_waiting(&state);
        if timed_out {
            self.timed_out_total.fetch_add(1, Ordering::Relaxed);
            *state.timed_out.entry(waiter.request.priority).or_default() += 1;
        }
        if let Some(Ok(grant)) = waiter.answer {
            // A tracked grant reclaimed meanwhile (shutdown, TTL) was freed
            // then; freeing it again would free someone else's units.
            if !waiter.tracked || state.remove_lease(grant.lease).is_some() {
                self.free(&mut state, &grant);
            }
        }
        self.dispatch(&mut state);
    }

    /// Serves waiters, best first: highest (aged) priority, then oldest.
    pub(super) fn dispatch(&self, state: &mut State) {
        if state.queue.waiting() == 0 {
            return;
        }
        let now = Instant::now();
        if self.named {
            self.dispatch_named(state, now);
        } else {
            self.dispatch_units(state, now);
        }
        self.publish_waiting(state);
    }

    fn dispatch_units(&self, state: &mut State, now: Instant) {
        while let Some(id) = state.queue.best(now, self.settings.aging) {
            let waiter = state.queue.get(id).expect("best is queued");
            let (units, tracked) = (waiter.request.units, waiter.tracked);
            let capacity = self.capacity();
            if units > capacity {
                // The pool shrank below it: it could only block the queue.
                let error = self.unsatisfiable(format!(
                    "it asks for {units} units and the pool's capacity is now {capacity}"
                ));
                state.queue.answer(id, Err(error));
                continue;
            }
            if !self.take_free(units) {
                break;
            }
            self.granted_total.add(1);
            let request = state.queue.get(id).expect("still queued").request.clone();
            let grant = self.record_grant(state, &request, Vec::new(), tracked);
            state.queue.answer(id, Ok(grant));
        }
    }

    fn dispatch_named(&self, state: &mut State, now: Instant) {
        let mut free = state.free_healthy();
        let mut order = state.queue.in_order(now, self.settings.aging);
        while free > 0 {
            let Some(id) = order.next(&state.queue) else {
                break;
            };
            let waiter = state.queue.get(id).expect("in order is queued");
            let Some(resources) = state.pick(&waiter.request) else {
                continue;
            };
            let (request, tracked) = (waiter.request.clone(), waiter.tracked);
            free = free.saturating_sub(resources.len());
            self.granted_total.add(1);
            let grant = self.record_grant(state, &request, resources, tracked);
            state.queue.answer(id, Ok(grant));
        }
        state.queue.tidy_all();
    }

    /// Refuses requests below `priority`, waiting ones included.
    pub(crate) fn shed_below(&self, priority: Priority) {
        self.shed_below
            .store(u16::from(priority.0) + 1, Ordering::Release);
        // Waiters below the line are refused now, not at their timeout.
        let mut state = self.lock();
        let refused = state.queue.refuse_below(Some(priority), |waiter| {
            self.overloaded(waiter, "shedding lower priorities")
        });
        self.publish_waiting(&state);
        for &priority in &refused {
            self.rejected_total.fetch_add(1, Ordering::Relaxed);
            *state.rejected.entry(priority).or_default() += 1;
        }
        drop(state);
        // Published with the lock released (and at most once a second per
        // priority).
        for priority in refused {
            self.publish_shed(priority);
        }
    }

    pub(crate) fn stop_shedding(&self) {
        self.shed_below.store(0, Ordering::Release);
    }

    /// Closes the pool: reclaims every lease, refuses every waiter.
    pub(crate) fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let mut state = self.lock();
        let announce = self.reclaim_all(&mut state);
        let pool = self.name().clone();
        state
            .queue
            .refuse_below(None, |_| Box::new(PoolClosed::new(pool.clone())));
        self.publish_waiting(&state);
        drop(state);
        self.announce(announce);
        self.lease_added.notify_one();
    }
}
