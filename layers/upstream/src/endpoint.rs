//! One endpoint of an upstream: its service, its load (tower's
//! `PeakEwma`), its outlier record, and when it is out of rotation.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::load::{CompleteOnResponse, Load, PeakEwma};
use tower_hardening_core::sync::lock;
use tower_service::Service;

use crate::outlier::Record;

/// A service that returns the future it is given: wrapped in tower's
/// [`PeakEwma`], it measures any attempt's latency and counts it as
/// pending while it runs, without owning the endpoint's service (which
/// each attempt clones and drives itself).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Track;

impl<F, T, E> Service<F> for Track
where
    F: Future<Output = Result<T, E>>,
{
    type Response = T;
    type Error = E;
    type Future = F;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: F) -> F {
        attempt
    }
}

/// The metric handles of one endpoint.
#[derive(Debug)]
pub(crate) struct EndpointMetrics {
    pub(crate) success: metrics::Counter,
    pub(crate) failure: metrics::Counter,
    pub(crate) ignored: metrics::Counter,
    pub(crate) ejected: metrics::Gauge,
}

#[derive(Debug)]
struct Inner<S> {
    service: S,
    load: PeakEwma<Track, CompleteOnResponse>,
}

/// One endpoint: shared by the upstream's list and every attempt in
/// flight to it, so removing it from the list fails nothing in flight.
#[derive(Debug)]
pub(crate) struct Endpoint<S> {
    pub(crate) id: u64,
    pub(crate) uri: Arc<str>,
    inner: Mutex<Inner<S>>,
    pub(crate) record: Mutex<Record>,
    /// Until when it is ejected, as a [`Clock`](crate::outlier::Clock)
    /// stamp; 0 in rotation.
    pub(crate) ejected_until: AtomicU64,
    /// Until when it asked to be left alone (pushback); 0 none.
    pub(crate) pushback_until: AtomicU64,
    /// Whether it left the upstream's list: its attempts still in flight
    /// finish, and their outcomes eject nothing.
    pub(crate) removed: AtomicBool,
    pub(crate) metrics: EndpointMetrics,
}

impl<S> Endpoint<S> {
    pub(crate) fn new(
        id: u64,
        uri: Arc<str>,
        service: S,
        default_rtt: Duration,
        decay: Duration,
        metrics: EndpointMetrics,
    ) -> Self {
        let decay_ns = (decay.as_nanos() as f64).max(1.0);
        Endpoint {
            id,
            uri,
            inner: Mutex::new(Inner {
                service,
                load: PeakEwma::new(Track, default_rtt, decay_ns, CompleteOnResponse::default()),
            }),
            record: Mutex::new(Record::new()),
            ejected_until: AtomicU64::new(0),
            pushback_until: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            metrics,
        }
    }

    /// The endpoint's peak-EWMA cost: latency estimate times pending
    /// attempts plus one.
    pub(crate) fn load(&self) -> tower::load::peak_ewma::Cost {
        lock(&self.inner).load.load()
    }

    /// A clone of the service for one attempt, and `attempt` made from it,
    /// tracked by the load estimate until it answers or is dropped.
    pub(crate) fn start<A, F, T, E>(
        &self,
        attempt: A,
    ) -> impl Future<Output = Result<T, E>> + use<A, S, F, T, E>
    where
        S: Clone,
        A: FnOnce(S) -> F,
        F: Future<Output = Result<T, E>>,
    {
        let mut inner = lock(&self.inner);
        let service = inner.service.clone();
        inner.load.call(attempt(service))
    }
}
