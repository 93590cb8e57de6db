use std::sync::Arc;

use tower_hardening_core::stripe::{CachePadded, PerStripe};

use metrics::{Counter, Gauge, Histogram, Unit};
use tower_hardening_core::fallback::CountingFallbacks;
use tower_hardening_core::{ConfigError, ErrorsAsFailures, names};
use tower_layer::Layer;

use crate::service::MetricsService;

/// Per-request metrics for one service: counts and durations by outcome,
/// and the number in flight.
///
/// The metric handles are registered once, when the layer is made, with
/// the recorder in force then (the global one, or a local one inside
/// `metrics::with_local_recorder`): install the recorder first. Nothing is
/// allocated per request.
#[derive(Debug, Clone)]
pub struct MetricsLayer<C = ErrorsAsFailures> {
    handles: SharedHandles,
    classifier: C,
}

/// The handles, one copy per stripe: a request's future counts a
/// reference on its thread's copy, not on one every core shares.
pub(crate) type SharedHandles = Arc<PerStripe<Handles>>;

/// A request's reference to the handles (its thread's copy).
pub(crate) type HeldHandles = Arc<CachePadded<Handles>>;

/// The registered handles, shared by every clone and every request.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    /// quanta's TSC clock: a fraction of the cost of `Instant::now` where
    /// the CPU has a usable TSC (it falls back to the OS clock otherwise).
    pub(crate) clock: quanta::Clock,
    pub(crate) in_flight: Gauge,
    pub(crate) success: (Counter, Histogram),
    pub(crate) failure: (Counter, Histogram),
    pub(crate) rejected: (Counter, Histogram),
    pub(crate) ignored: (Counter, Histogram),
    pub(crate) fallback: (Counter, Histogram),
}

/// Builds a [`MetricsLayer`]: `MetricsLayer::builder().name("audio")
/// .classifier(..).build()?`, the shape of every tower-hardening layer.
///
/// ```
/// use tower_hardening_core::HttpServerErrors;
/// use tower_hardening_metrics::MetricsLayer;
///
/// let layer = MetricsLayer::builder()
///     .name("audio-processing")
///     .classifier(HttpServerErrors::default())
///     .build()
///     .unwrap();
/// # let _ = layer;
/// let err = MetricsLayer::builder().name(" ").build().unwrap_err();
/// assert_eq!(err.field(), "name");
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct MetricsBuilder<C = ErrorsAsFailures> {
    name: Arc<str>,
    classifier: C,
}

impl<C> MetricsBuilder<C> {
    /// The `service` label of every metric (default `"service"`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// What counts as a failure (see [`MetricsLayer::classifier`]).
    pub fn classifier<C2>(self, classifier: C2) -> MetricsBuilder<C2> {
        MetricsBuilder {
            name: self.name,
            classifier,
        }
    }

    /// Checks the name and registers the metric handles with the recorder
    /// in force now.
    pub fn build(self) -> Result<MetricsLayer<C>, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::new(
                "metrics",
                "name",
                &*self.name,
                "a non-empty name",
            ));
        }
        Ok(MetricsLayer::new(self.name).classifier(self.classifier))
    }
}

impl MetricsLayer {
    /// A builder: name `"service"`, every `Err` a failure.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder {
            name: Arc::from("service"),
            classifier: ErrorsAsFailures,
        }
    }

    /// Metrics labelled `service = name`; every `Err` is a failure until
    /// [`classifier`](Self::classifier) says otherwise. The same as
    /// `builder().name(name).build()` without the check of the name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        let name: Arc<str> = name.into();
        metrics::describe_counter!(
            names::REQUESTS_TOTAL,
            Unit::Count,
            "Requests finished, by outcome (success, failure, rejected by a hardening layer, ignored: not evidence either way, such as a client body that failed)."
        );
        metrics::describe_histogram!(
            names::REQUEST_DURATION_SECONDS,
            Unit::Seconds,
            "Request duration in seconds, by outcome."
        );
        metrics::describe_gauge!(
            names::REQUESTS_IN_FLIGHT,
            Unit::Count,
            "Requests started and not yet finished, cancelled or panicked."
        );
        let pair = |outcome: &'static str| {
            (
                metrics::counter!(names::REQUESTS_TOTAL, names::LABEL_SERVICE => name.clone(), names::LABEL_OUTCOME => outcome),
                metrics::histogram!(names::REQUEST_DURATION_SECONDS, names::LABEL_SERVICE => name.clone(), names::LABEL_OUTCOME => outcome),
            )
        };
        MetricsLayer {
            handles: Arc::new(PerStripe::new(Handles {
                clock: quanta::Clock::new(),
                in_flight: metrics::gauge!(names::REQUESTS_IN_FLIGHT, names::LABEL_SERVICE => name.clone()),
                success: pair("success"),
                failure: pair("failure"),
                rejected: pair("rejected"),
                ignored: pair("ignored"),
                fallback: pair("fallback"),
            })),
            classifier: ErrorsAsFailures,
        }
    }
}

impl<C> MetricsLayer<C> {
    pub(crate) fn into_parts(self) -> (SharedHandles, C) {
        (self.handles, self.classifier)
    }

    /// Counts an answer that a fallback layer below gave in place of a
    /// refusal or a failure (`tower_hardening_recovery::FallbackLayer`,
    /// or any layer that calls
    /// [`fallback::mark_answered`](tower_hardening_core::fallback::mark_answered))
    /// as outcome `fallback`: classifies with
    /// [`CountingFallbacks`](tower_hardening_core::fallback::CountingFallbacks)
    /// around the classifier. Without it a metrics layer pays nothing for
    /// fallbacks; with it, a thread-local read and write per poll.
    ///
    /// ```
    /// use tower_hardening_metrics::MetricsLayer;
    ///
    /// let layer = MetricsLayer::new("api").counting_fallbacks();
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn counting_fallbacks(self) -> MetricsLayer<CountingFallbacks<C>> {
        MetricsLayer {
            handles: self.handles,
            classifier: CountingFallbacks(self.classifier),
        }
    }

    /// What counts as a failure: any
    /// [`Classify`](tower_hardening_core::Classify) over the response and a
    /// boxed error. `Ignored` results (and a client body that failed) count
    /// as `ignored`; rejections
    /// by other hardening layers count as `rejected` whatever it says
    /// (and a fallback's answer as `fallback`, see
    /// [`counting_fallbacks`](Self::counting_fallbacks)).
    #[must_use]
    pub fn classifier<C2>(self, classifier: C2) -> MetricsLayer<C2> {
        MetricsLayer {
            handles: self.handles,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for MetricsLayer<C> {
    type Service = MetricsService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService::new(inner, self.handles.clone(), self.classifier.clone())
    }
}
