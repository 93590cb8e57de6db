//! What every clone of an upstream and its handle share: the endpoint
//! list, the outlier rules applied across it, the choice of an endpoint,
//! the retry budget and the observed latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower_hardening_core::sync::lock;
use tower_hardening_core::{Event, EventKind, EventSink, Outcome, names, publish};

use crate::endpoint::{Endpoint, EndpointMetrics};
use crate::latency::LatencyWindow;
use crate::outlier::{Clock, EjectionReason, OutlierPolicy, later};
use crate::snapshot::{EndpointSnapshot, EndpointState};

/// Makes an endpoint's service from its URI.
pub(crate) type MakeEndpoint<S> = dyn Fn(&str) -> S + Send + Sync;

/// Which endpoints a choice may take.
type Admits<'a, S> = dyn Fn(&Endpoint<S>) -> bool + 'a;

/// The label of an endpoint that was not configured at build time.
const OTHER: &str = "other";

pub(crate) struct Shared<S> {
    pub(crate) name: Arc<str>,
    pub(crate) endpoints: ArcSwap<Vec<Arc<Endpoint<S>>>>,
    /// Serialises changes of the list and ejection decisions (both rare).
    changes: Mutex<()>,
    next_id: AtomicU64,
    pub(crate) clock: Clock,
    pub(crate) policy: OutlierPolicy,
    /// The endpoints configured at build time: the only `endpoint` labels.
    configured: Vec<Arc<str>>,
    pub(crate) events: Option<EventSink>,
    recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
    pub(crate) make: Option<Arc<MakeEndpoint<S>>>,
    pub(crate) latency: LatencyWindow,
    pub(crate) budget: TpsBudget,
    pub(crate) hedges_total: metrics::Counter,
    default_rtt: Duration,
    decay: Duration,
    /// Whether endpoints added at run time must be URIs.
    pub(crate) require_uris: bool,
}

impl<S> std::fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field(
                "endpoints",
                &self
                    .endpoints
                    .load()
                    .iter()
                    .map(|e| e.uri.clone())
                    .collect::<Vec<_>>(),
            )
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What building the shared state needs.
pub(crate) struct SharedParts<S> {
    pub(crate) name: Arc<str>,
    pub(crate) policy: OutlierPolicy,
    pub(crate) events: Option<EventSink>,
    pub(crate) recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
    pub(crate) make: Option<Arc<MakeEndpoint<S>>>,
    pub(crate) budget: TpsBudget,
    pub(crate) default_rtt: Duration,
    pub(crate) decay: Duration,
    pub(crate) require_uris: bool,
}

impl<S> Shared<S> {
    pub(crate) fn new(parts: SharedParts<S>, endpoints: Vec<(Arc<str>, S)>) -> Self {
        let hedges_total = with_recorder(
            parts.recorder.as_deref(),
            || metrics::counter!(names::UPSTREAM_HEDGES_TOTAL, names::LABEL_SERVICE => parts.name.clone()),
        );
        let shared = Shared {
            configured: endpoints.iter().map(|(uri, _)| uri.clone()).collect(),
            name: parts.name,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            changes: Mutex::new(()),
            next_id: AtomicU64::new(1),
            clock: Clock::new(),
            policy: parts.policy,
            events: parts.events,
            recorder: parts.recorder,
            make: parts.make,
            latency: LatencyWindow::new(),
            budget: parts.budget,
            hedges_total,
            default_rtt: parts.default_rtt,
            decay: parts.decay,
            require_uris: parts.require_uris,
        };
        shared.set(endpoints);
        shared
    }

    fn endpoint(&self, uri: Arc<str>, service: S) -> Arc<Endpoint<S>> {
        let label: Arc<str> = if self.configured.contains(&uri) {
            uri.clone()
        } else {
            Arc::from(OTHER)
        };
        let name = self.name.clone();
        let metrics = with_recorder(self.recorder.as_deref(), || {
            let attempts = |outcome: &'static str| {
                metrics::counter!(
                    names::UPSTREAM_ATTEMPTS_TOTAL,
                    names::LABEL_SERVICE => name.clone(),
                    names::LABEL_ENDPOINT => label.clone(),
                    names::LABEL_OUTCOME => outcome
                )
            };
            EndpointMetrics {
                success: attempts("success"),
                failure: attempts("failure"),
                ignored: attempts("ignored"),
                ejected: metrics::gauge!(
                    names::UPSTREAM_ENDPOINT_EJECTED,
                    names::LABEL_SERVICE => name.clone(),
                    names::LABEL_ENDPOINT => label.clone()
                ),
            }
        });
        // Shown from the start, at its current count: the gauge counts
        // the ejected endpoints under its label (several under `other`).
        metrics.ejected.increment(0.0);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Arc::new(Endpoint::new(
            id,
            uri,
            service,
            self.default_rtt,
            self.decay,
            metrics,
        ))
    }

    /// Replaces the list. An endpoint already in it (same URI) keeps its
    /// service, record and ejection; a new one starts healthy; a removed
    /// one finishes what it has in flight.
    pub(crate) fn set(&self, endpoints: Vec<(Arc<str>, S)>) {
        let _changes = lock(&self.changes);
        let current = self.endpoints.load_full();
        let mut next: Vec<Arc<Endpoint<S>>> = Vec::with_capacity(endpoints.len());
        for (uri, service) in endpoints {
            if next.iter().any(|e| e.uri == uri) {
                continue;
            }
            match current.iter().find(|e| e.uri == uri) {
                Some(kept) => next.push(kept.clone()),
                None => next.push(self.endpoint(uri, service)),
            }
        }
        for gone in current
            .iter()
            .filter(|e| !next.iter().any(|n| n.id == e.id))
        {
            gone_from_list(gone);
        }
        self.endpoints.store(Arc::new(next));
    }

    /// Adds one endpoint, or replaces the one with this URI (with a fresh
    /// record: a new service is a new instance).
    pub(crate) fn insert(&self, uri: Arc<str>, service: S) {
        let _changes = lock(&self.changes);
        let current = self.endpoints.load_full();
        let mut next: Vec<Arc<Endpoint<S>>> = Vec::with_capacity(current.len() + 1);
        for endpoint in current.iter() {
            if endpoint.uri == uri {
                gone_from_list(endpoint);
            } else {
                next.push(endpoint.clone());
            }
        }
        next.push(self.endpoint(uri, service));
        self.endpoints.store(Arc::new(next));
    }

    /// Removes the endpoint with this URI; whether there was one.
    pub(crate) fn remove(&self, uri: &str) -> bool {
        let _changes = lock(&self.changes);
        let current = self.endpoints.load_full();
        let mut next: Vec<Arc<Endpoint<S>>> = Vec::with_capacity(current.len());
        for endpoint in current.iter() {
            if &*endpoint.uri == uri {
                gone_from_list(endpoint);
            } else {
                next.push(endpoint.clone());
            }
        }
        let removed = next.len() != current.len();
        self.endpoints.store(Arc::new(next));
        removed
    }

    /// Whether `endpoint` is in rotation at `now`; an ejection whose time
    /// is over ends here (the endpoint returns on its own).
    pub(crate) fn in_rotation(&self, endpoint: &Endpoint<S>, now: Instant) -> bool {
        let until = endpoint.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if self.clock.stamp(now) < until {
            return false;
        }
        if endpoint
            .ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Back in rotation since its ejection ended, however much
            // later that is noticed: the decay of its count runs from then.
            lock(&endpoint.record).returned(self.clock.instant(until));
            endpoint.metrics.ejected.decrement(1.0);
            publish(self.events.as_ref(), || {
                Event::new(
                    self.name.clone(),
                    EventKind::EndpointReturned {
                        endpoint: endpoint.uri.clone(),
                    },
                )
            });
        }
        true
    }

    /// Whether `endpoint` asked to be left alone until after `now`.
    fn pushed_back(&self, endpoint: &Endpoint<S>, now: Instant) -> bool {
        let until = endpoint.pushback_until.load(Ordering::Acquire);
        until != 0 && self.clock.stamp(now) < until
    }

    /// Keeps attempts off `endpoint` for `duration`.
    pub(crate) fn push_back(&self, endpoint: &Endpoint<S>, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        let until = self.clock.stamp(later(Instant::now(), duration));
        endpoint.pushback_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Chooses an endpoint for an attempt: power of two choices over the
    /// peak-EWMA load, among the endpoints in rotation that are not
    /// pushing back and not in `tried`. With none, a tried one may serve
    /// (`allow_tried`: a retry of a one-endpoint upstream); with every
    /// endpoint ejected, ejected ones are called (panic routing). Pushback
    /// is always honoured: with every endpoint pushing back, the error is
    /// when the first one ends.
    pub(crate) fn pick(
        &self,
        tried: &[u64],
        allow_tried: bool,
    ) -> Result<Arc<Endpoint<S>>, Option<Duration>> {
        let now = Instant::now();
        let list = self.endpoints.load();
        let fresh = |e: &Endpoint<S>| !tried.contains(&e.id);
        let healthy = |e: &Endpoint<S>| self.in_rotation(e, now) && !self.pushed_back(e, now);
        let choices: [&Admits<'_, S>; 2] =
            [&|e| fresh(e) && healthy(e), &|e| allow_tried && healthy(e)];
        for admits in choices {
            if let Some(chosen) = p2c(&list, admits) {
                return Ok(chosen);
            }
        }
        if list.iter().any(|e| healthy(e)) {
            // Only tried ones are healthy, and this choice may not take
            // them (a hedge): no endpoint, rather than an ejected one.
            return Err(None);
        }
        // Every endpoint is ejected or pushing back: the ejected ones are
        // called anyway (panic routing); pushback is always honoured.
        let panic: [&Admits<'_, S>; 2] = [&|e| fresh(e) && !self.pushed_back(e, now), &|e| {
            allow_tried && !self.pushed_back(e, now)
        }];
        for admits in panic {
            if let Some(chosen) = p2c(&list, admits) {
                return Ok(chosen);
            }
        }
        let first_back = list
            .iter()
            .map(|e| e.pushback_until.load(Ordering::Acquire))
            .filter(|until| *until != 0)
            .min()
            .map(|until| self.clock.instant(until).saturating_duration_since(now));
        Err(first_back)
    }

    /// Records an attempt's outcome; ejects the endpoint when its record
    /// says so and the ejection cap allows.
    pub(crate) fn record(&self, endpoint: &Endpoint<S>, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Success => endpoint.metrics.success.increment(1),
            Outcome::Failure => endpoint.metrics.failure.increment(1),
            Outcome::Ignored => endpoint.metrics.ignored.increment(1),
        }
        let reason = lock(&endpoint.record).record(&self.policy, outcome, latency);
        if let Some(reason) = reason {
            self.eject(endpoint, reason);
        }
    }

    fn eject(&self, endpoint: &Endpoint<S>, reason: EjectionReason) {
        let _changes = lock(&self.changes);
        if endpoint.removed.load(Ordering::Acquire) {
            // Left the list (an attempt sent before it did failed late):
            // nothing to take out of rotation.
            return;
        }
        let now = Instant::now();
        if !self.in_rotation(endpoint, now) {
            // Already out (failures of attempts sent before it was ejected,
            // or of panic routing): the ejection stands as it is.
            return;
        }
        let list = self.endpoints.load();
        let out = list
            .iter()
            .filter(|e| e.id != endpoint.id && !self.in_rotation(e, now))
            .count();
        let total = list.len().max(1);
        if out >= self.policy.max_ejected(total) {
            return;
        }
        let ejections = lock(&endpoint.record).ejected(&self.policy, now);
        let duration = self.policy.ejection_time(ejections);
        endpoint
            .ejected_until
            .store(self.clock.stamp(later(now, duration)), Ordering::Release);
        endpoint.metrics.ejected.increment(1.0);
        publish(self.events.as_ref(), || {
            Event::new(
                self.name.clone(),
                EventKind::EndpointEjected {
                    endpoint: endpoint.uri.clone(),
                    duration,
                    ejections,
                    reason: reason.as_str(),
                },
            )
        });
    }

    /// Takes one token from the retry budget (a retry or a hedge).
    pub(crate) fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }

    /// Each endpoint's state now.
    pub(crate) fn snapshot(&self) -> Vec<EndpointSnapshot> {
        let now = Instant::now();
        self.endpoints
            .load()
            .iter()
            .map(|e| {
                let in_rotation = self.in_rotation(e, now);
                let stamp = e.ejected_until.load(Ordering::Acquire);
                let pushback = e.pushback_until.load(Ordering::Acquire);
                let record = lock(&e.record);
                let state = if !in_rotation && stamp != 0 {
                    EndpointState::Ejected {
                        remaining: self.clock.instant(stamp).saturating_duration_since(now),
                    }
                } else if pushback != 0 && self.clock.stamp(now) < pushback {
                    EndpointState::PushedBack {
                        remaining: self.clock.instant(pushback).saturating_duration_since(now),
                    }
                } else {
                    EndpointState::Healthy
                };
                EndpointSnapshot {
                    uri: e.uri.clone(),
                    state,
                    failure_rate: record.failure_rate(),
                    calls: record.calls(),
                    ejections: record.ejections,
                    latency: record.latency,
                }
            })
            .collect()
    }

    /// Whether every endpoint is out (ejected or pushing back), or there
    /// is none: the upstream cannot serve on its own evidence.
    pub(crate) fn all_out(&self) -> bool {
        let now = Instant::now();
        self.endpoints
            .load()
            .iter()
            .all(|e| !self.in_rotation(e, now) || self.pushed_back(e, now))
    }
}

/// `endpoint` left the list (the `changes` lock held): late outcomes of
/// its attempts in flight eject nothing, and it no longer counts as
/// ejected.
fn gone_from_list<S>(endpoint: &Endpoint<S>) {
    endpoint.removed.store(true, Ordering::Release);
    // A return noticed at the same moment wins or loses this swap: the
    // gauge goes down once.
    if endpoint.ejected_until.swap(0, Ordering::AcqRel) != 0 {
        endpoint.metrics.ejected.decrement(1.0);
    }
}

/// Power of two choices, as tower's `p2c::Balance` does it: two distinct
/// admitted endpoints at random, the one with the lower peak-EWMA cost.
fn p2c<S>(list: &[Arc<Endpoint<S>>], admits: &Admits<'_, S>) -> Option<Arc<Endpoint<S>>> {
    let admitted = list.iter().filter(|e| admits(e)).count();
    match admitted {
        0 => None,
        1 => list.iter().find(|e| admits(e)).cloned(),
        n => {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let mut nth = list.iter().filter(|e| admits(e));
            let (first, second) = if a < b { (a, b) } else { (b, a) };
            let x = nth.nth(first)?;
            let y = nth.nth(second - first - 1)?;
            if x.load() <= y.load() {
                Some(x.clone())
            } else {
                Some(y.clone())
            }
        }
    }
}

fn with_recorder<T>(
    recorder: Option<&(dyn metrics::Recorder + Send + Sync)>,
    f: impl FnOnce() -> T,
) -> T {
    match recorder {
        Some(recorder) => metrics::with_local_recorder(recorder, f),
        None => f(),
    }
}
