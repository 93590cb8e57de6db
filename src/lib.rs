//! Hardening for any `tower::Service`: circuit breaking, retries and
//! recovery, priority-based resource limits and metrics, tied to the
//! health of the whole process.
//!
//! This is the facade crate. It re-exports each layer crate behind a cargo
//! feature of the same name (all on by default):
//!
//! | module | feature | crate | status |
//! | --- | --- | --- | --- |
//! | [`core`] | always | `tower-hardening-core` | outcomes, classifiers, priorities, rejection errors, events |
//! | `breaker` | `breaker` | `tower-hardening-breaker` | built: the circuit breaker layer |
//! | `recovery` | `recovery` | `tower-hardening-recovery` | built: retry and recover layers |
//! | `limit` | `limit` | `tower-hardening-limit` | built: resource pools and admission |
//! | `metrics` | `metrics` | `tower-hardening-metrics` | built: metrics layer and in-process collector |
//! | [`config`] | always | this crate | the seed's `SystemHardeningConfig`, TOML/JSON, validation |
//!
//! ```
//! use tower_hardening::config::SystemHardeningConfig;
//! use tower_hardening::core::Priority;
//!
//! let config = SystemHardeningConfig::from_toml_str(r#"
//!     performance_check_interval = "1s"
//!     [services.model-inference]
//!     criticality = "high"
//! "#)?;
//! assert_eq!(config.service("model-inference").criticality, Priority::HIGH);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
                feature = "fault"
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
    pub mod stack;

    pub use builder_ext::{NormalPriority, ServiceBuilderExt};
    pub use handle::{HardeningHandle, Requirements, ResourceStats, UnknownName};
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

pub use tower_hardening_core::{BoxError, Priority};

/// The guide: the README, with the seed's usage section in Rust, how
/// health is decided, the one right order for metrics, best practices,
/// troubleshooting and what to alert on. Its examples are compiled and run
/// as doc tests.
#[cfg(feature = "full")]
#[doc = include_str!("../README.md")]
pub mod guide {}
