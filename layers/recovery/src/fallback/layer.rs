use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tower_hardening_core::ErrorsAsFailures;
use tower_layer::Layer;
use tower_service::Service;

use super::answer::{FnAnswer, NoFallback, ServiceAnswer};
use super::cases::{Cause, FallbackOn};
use super::service::Fallback;

/// Answers in place of a refusal or a failure: see the [module docs](crate::fallback).
/// `A` is where answers come from; `C` which responses are failures.
#[derive(Debug, Clone)]
pub struct FallbackLayer<A, C = ErrorsAsFailures> {
    answer: A,
    on: FallbackOn,
    classifier: C,
    counts: Arc<FallbackCounts>,
}

/// What every clone of a fallback shares.
#[derive(Debug)]
pub(crate) struct Shared<A, C> {
    pub(crate) answer: A,
    pub(crate) on: FallbackOn,
    pub(crate) classifier: C,
    pub(crate) counts: Arc<FallbackCounts>,
}

/// How often a fallback answered, and how often it failed and the
/// original error surfaced.
#[derive(Debug, Default)]
pub struct FallbackCounts {
    answered: AtomicU64,
    failed: AtomicU64,
}

impl FallbackCounts {
    pub(crate) fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures now.
    pub fn stats(&self) -> FallbackStats {
        FallbackStats {
            answered: self.answered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// A fallback's figures, from [`FallbackLayer::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FallbackStats {
    /// Requests the fallback answered.
    pub answered: u64,
    /// Requests the fallback was asked to answer and could not (it failed
    /// or panicked): the original error surfaced.
    pub failed: u64,
}

impl FallbackLayer<NoFallback> {
    /// A fallback answering with `answer(cause)`, a closure that makes the
    /// inner service's response type (a default or cached response).
    pub fn new<F>(answer: F) -> FallbackLayer<FnAnswer<F>> {
        FallbackLayer::from_answer(FnAnswer::new(answer))
    }

    /// A fallback answering with `service`, called with the [`Cause`]
    /// (a clone of it per answer, driven to readiness first).
    pub fn service<S>(service: S) -> FallbackLayer<ServiceAnswer<S>>
    where
        S: Service<Cause> + Clone,
    {
        FallbackLayer::from_answer(ServiceAnswer::new(service))
    }
}

impl<A> FallbackLayer<A> {
    /// A fallback answering from any [`Answer`](super::Answer) source.
    pub fn from_answer(answer: A) -> Self {
        FallbackLayer {
            answer,
            on: FallbackOn::default(),
            classifier: ErrorsAsFailures,
            counts: Arc::default(),
        }
    }
}

impl<A, C> FallbackLayer<A, C> {
    /// Which cases the fallback answers (default: every refusal and every
    /// failure).
    #[must_use]
    pub fn on(mut self, on: FallbackOn) -> Self {
        self.on = on;
        self
    }

    /// Which `Ok` responses are failures the fallback answers in place of
    /// (default: none, only errors): any
    /// [`Classify`](tower_hardening_core::Classify).
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> FallbackLayer<A, C2> {
        FallbackLayer {
            answer: self.answer,
            on: self.on,
            classifier,
            counts: self.counts,
        }
    }

    /// Counts into `counts` (shared with something else that reads them).
    #[must_use]
    pub fn counts(mut self, counts: Arc<FallbackCounts>) -> Self {
        self.counts = counts;
        self
    }

    /// How often the fallback answered, and failed to.
    pub fn stats(&self) -> FallbackStats {
        self.counts.stats()
    }
}

impl<S, A: Clone, C: Clone> Layer<S> for FallbackLayer<A, C> {
    type Service = Fallback<S, A, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::new(
            inner,
            Arc::new(Shared {
                answer: self.answer.clone(),
                on: self.on,
                classifier: self.classifier.clone(),
                counts: self.counts.clone(),
            }),
        )
    }
}
