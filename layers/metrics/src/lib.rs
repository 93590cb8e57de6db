//! Metrics for tower-hardening: a layer that measures every request, and
//! an in-process collector that remembers recent history.
//!
//! - [`MetricsLayer`] emits, through the `metrics` facade (so every
//!   exporter of that ecosystem works), per service:
//!   `hardening_requests_total{service, outcome}`,
//!   `hardening_request_duration_seconds{service, outcome}` and
//!   `hardening_requests_in_flight{service}`. `outcome` is `success`,
//!   `failure` (by the classifier), `rejected` (a `CircuitOpen`,
//!   `Overloaded`, `QueueTimeout` or `Recovering` from an inner layer) or
//!   `ignored` (the classifier's `Ignored`, or a client's request body
//!   that broke or stalled: not the service's doing either way), or
//!   `fallback` (a fallback below answered in place of a refusal or a
//!   failure; see [`MetricsLayer::counting_fallbacks`]).
//! - [`MetricsCollector`] is a `metrics::Recorder` that keeps each series
//!   as a ring of time buckets over a bounded retention period, answers
//!   window queries (count, sum, rate, mean, min, max, quantiles within
//!   1% from logarithmic sketches kept in coarser tiers as they age),
//!   caps the number of series, and renders Prometheus text. Recording
//!   touches only the calling thread's stripe of a series, so many cores
//!   record without sharing a cache line; the worst case with the default
//!   settings is under 64 MiB ([`MetricsCollector::memory_bound_bytes`]).
//!
//! # Every metric the library emits
//!
//! | name | type | unit | labels | emitted by |
//! | --- | --- | --- | --- | --- |
//! | `hardening_requests_total` | counter | requests | `service`, `outcome` | [`MetricsLayer`] |
//! | `hardening_request_duration_seconds` | histogram | seconds | `service`, `outcome` | [`MetricsLayer`] |
//! | `hardening_requests_in_flight` | gauge | requests | `service` | [`MetricsLayer`] |
//! | `hardening_circuit_state` | gauge | state index (0 closed, 1 open, 2 half-open, 3 forced-open, 4 disabled, 5 metrics-only) | `breaker` | circuit breaker |
//! | `hardening_circuit_transitions_total` | counter | transitions | `breaker`, `from`, `to` | circuit breaker |
//! | `hardening_circuit_rejected_total` | counter | calls | `breaker` | circuit breaker |
//! | `hardening_retries_total` | counter | retries | `service` | retry |
//! | `hardening_retry_budget_exhausted_total` | counter | requests | `service` | retry |
//! | `hardening_retry_gave_up_total` | counter | requests | `service` | retry |
//! | `hardening_recovery_attempts_total` | counter | build attempts | `service`, `result` | recover |
//!
//! The names are constants in [`names`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_metrics::{MetricsCollector, MetricsLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let collector = MetricsCollector::builder()
//!     .retention(Duration::from_secs(3600))
//!     .resolution(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! // In an application: `collector.install()` once, before building layers.
//! let layer = metrics::with_local_recorder(&collector, || MetricsLayer::new("audio-processing"));
//! let mut svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! for i in 0..10 {
//!     svc.ready().await.unwrap().call(i).await.unwrap();
//! }
//! let done = collector
//!     .query("hardening_requests_total")
//!     .label("service", "audio-processing")
//!     .label("outcome", "success")
//!     .window(Duration::from_secs(60));
//! assert_eq!(done.sum(), 10.0);
//! assert!(collector.render_prometheus().contains("hardening_requests_in_flight{service=\"audio-processing\"} 0"));
//! # }
//! ```

mod collector;
mod describe;
mod eos;
mod layer;
mod service;

pub mod future;

pub use collector::{
    CollectorBuilder, EXPORTED_QUANTILES, HistoryPoint, MetricsCollector, Query, SeriesKind,
};
pub use describe::describe_all;
pub use eos::{EosMetricsFuture, EosMetricsLayer, EosMetricsService, MetricsBody};
pub use layer::{MetricsBuilder, MetricsLayer};
pub use service::MetricsService;
pub use tower_hardening_core::{Rejection, RejectionKind, names, rejection_of};
