//! Hardening for any `tower::Service`: circuit breaking, retries and
//! recovery, priority-based resource limits, fault injection and metrics,
//! tied to the health of the whole process.
//!
//! ```
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_hardening::{SystemHardening, SystemHardeningConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower_hardening::BoxError> {
//! let config = SystemHardeningConfig::from_toml_str("[services.model-inference]\ntimeout = \"2s\"")?;
//! let hardening = SystemHardening::builder(config).build()?;
//! let model = ServiceBuilder::new()
//!     .layer(hardening.layer("model-inference")?) // metrics, admission, retry, breaker, timeout
//!     .service(service_fn(|prompt: String| async move { Ok::<_, std::io::Error>(prompt.len()) }));
//! let handle = hardening.start(); // the monitor: health, performance, recovery
//! assert_eq!(model.oneshot("a cat".into()).await?, 5);
//! println!("{:?}", handle.health().status);
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The [`guide`] is the README: the whole API in the seed's order, how
//! health is decided, the right order for metrics, axum and tonic,
//! operations. This crate re-exports each layer crate behind a cargo
//! feature of the same name (all on by default, with `serde`):
//!
//! | module | feature | crate | what |
//! | --- | --- | --- | --- |
//! | [`core`] | always | `tower-hardening-core` | outcomes, classifiers, priorities, rejection errors, events, tracing |
//! | `breaker` | `breaker` | `tower-hardening-breaker` | the circuit breaker layer |
//! | `recovery` | `recovery` | `tower-hardening-recovery` | retry and recover |
//! | `limit` | `limit` | `tower-hardening-limit` | resource pools and admission |
//! | `metrics` | `metrics` | `tower-hardening-metrics` | metrics layer and in-process collector |
//! | `fault` | `fault` | `tower-hardening-fault` | fault injection |
//! | `upstream` | `upstream` | `tower-hardening-upstream` (and the facade's `SystemHardening::upstream`) | one service over several endpoints: outlier ejection, load-aware choice, retries to another endpoint, pushback, hedging |
//! | [`config`] | always | this crate | `SystemHardeningConfig`: TOML, JSON, environment, validation |
//!
//! `SystemHardening`, its handle, endpoints, monitor and stacks need all
//! five layer features.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
pub mod managed;
pub mod responses;

/// Items that need every layer (the default features).
macro_rules! with_every_layer {
    ($($item:item)*) => {
        $(
            #[cfg(all(
                feature = "breaker",
                feature = "recovery",
                feature = "limit",
                feature = "metrics",
                feature = "fault",
                feature = "ratelimit"
            ))]
            $item
        )*
    };
}

with_every_layer! {
    mod builder_ext;
    pub mod endpoints;
    mod handle;
    mod hardening;
    pub mod health;
    pub mod monitor;
    pub mod performance;
    mod recovery_manager;
    mod shared;
    pub mod classify;
    pub mod stack;
    pub mod client_body;

    pub use builder_ext::{NormalPriority, ServiceBuilderExt, StackSource};
    pub use handle::{
        HardeningHandle, PoolFigures, PoolUnit, Requirements, ResourceStats, UnknownName,
    };
    pub use hardening::{SystemHardening, SystemHardeningBuilder};
    pub use health::{HealthStatus, ServiceHealth};
    pub use performance::PerformanceSnapshot;
}

pub use config::SystemHardeningConfig;
pub use managed::ManagedService;
pub use responses::{error_response, grpc_error_response};

/// The shared vocabulary: re-export of `tower-hardening-core`.
pub use tower_hardening_core as core;

/// The circuit breaker layer: re-export of `tower-hardening-breaker`.
#[cfg(feature = "breaker")]
pub use tower_hardening_breaker as breaker;

/// Retry and recovery layers: re-export of `tower-hardening-recovery`.
#[cfg(feature = "recovery")]
pub use tower_hardening_recovery as recovery;

/// Resource pools and admission control: re-export of `tower-hardening-limit`.
#[cfg(feature = "limit")]
pub use tower_hardening_limit as limit;

/// The metrics layer and collector: re-export of `tower-hardening-metrics`.
#[cfg(feature = "metrics")]
pub use tower_hardening_metrics as metrics;

/// Fault injection: re-export of `tower-hardening-fault`.
#[cfg(feature = "fault")]
pub use tower_hardening_fault as fault;

#[cfg(feature = "upstream")]
pub mod upstream;

/// Rate limits: re-export of `tower-hardening-ratelimit`.
#[cfg(feature = "ratelimit")]
pub use tower_hardening_ratelimit as ratelimit;

pub use tower_hardening_core::{BoxError, Priority};

/// The guide (`docs/guide.md`): every layer, the seed's usage section in
/// Rust, how health is decided, the one right order for metrics, the
/// dashboard, best practices, troubleshooting, what to alert on and the
/// configuration. Its examples are compiled and run as doc tests. Built
/// with the default features (it needs every layer, as the facade does).
#[cfg(all(
    feature = "breaker",
    feature = "recovery",
    feature = "limit",
    feature = "metrics",
    feature = "fault",
    feature = "ratelimit"
))]
#[doc = include_str!("../docs/guide.md")]
pub mod guide {}

/// The README's examples, compiled as doc tests.
#[cfg(all(
    doctest,
    feature = "breaker",
    feature = "recovery",
    feature = "limit",
    feature = "metrics",
    feature = "fault"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Rate limits and fallbacks (`docs/rate-limits-and-fallbacks.md`): the
/// configuration, the keys, bounded state, priorities, the 429 and its
/// header fields, and fallbacks. Its examples are compiled and run as doc
/// tests.
#[cfg(all(
    feature = "breaker",
    feature = "recovery",
    feature = "limit",
    feature = "metrics",
    feature = "fault",
    feature = "ratelimit"
))]
#[doc = include_str!("../docs/rate-limits-and-fallbacks.md")]
pub mod rate_limits_and_fallbacks {}
