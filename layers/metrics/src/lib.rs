//! The metrics layer and collector for tower-hardening — **not built yet**.
//!
//! This crate will hold `MetricsLayer` (request counts, durations and
//! in-flight gauges through the `metrics` facade, with rejections from the
//! other layers counted as `rejected`) and `MetricsCollector` (an
//! in-process `metrics::Recorder` with bounded retention, window queries,
//! quantiles and Prometheus text export). Today it only re-exports the
//! function it will use to recognise rejections.
//!
//! ```
//! use tower_hardening_metrics::rejection_of;
//!
//! let err: Box<dyn std::error::Error + Send + Sync> = "boom".into();
//! assert!(rejection_of(&*err).is_none());
//! ```

pub use tower_hardening_core::{Rejection, RejectionKind, rejection_of};
