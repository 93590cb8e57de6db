//! Configuration: the seed's `SystemHardeningConfig`, per-service sections,
//! parsing from TOML or JSON, and validation that names what was wrong.
//!
//! ```
//! use tower_hardening::config::SystemHardeningConfig;
//!
//! // The seed's own example, as JSON with its camelCase keys.
//! let config = SystemHardeningConfig::from_json_str(r#"{
//!     "enableHealthMonitoring": true,
//!     "enablePerformanceMonitoring": true,
//!     "enableErrorRecovery": true,
//!     "enableResourceManagement": true,
//!     "healthCheckIntervalMs": 30000,
//!     "performanceCheckIntervalMs": 5000,
//!     "maxResourceMemory": "1GB",
//!     "recoverableServices": ["audio-processing", "model-inference"]
//! }"#)?;
//! assert_eq!(config.max_resource_memory, Some(1_000_000_000));
//!
//! let err = SystemHardeningConfig::from_toml_str("health_check_interval = 0").unwrap_err();
//! assert_eq!(err.field(), "health_check_interval");
//! # Ok::<(), tower_hardening::config::ConfigError>(())
//! ```

pub(crate) mod classify;
mod env;
mod rate_limit;
mod service;
mod system;
mod units;
mod upstream;

pub use classify::{ClassifyConfig, GrpcCodeName};
pub use rate_limit::{FallbackConfig, PriorityRate, PriorityRates, RateLimitConfig};
pub use service::{
    BreakerConfig, FaultConfig, JitterConfig, LimitConfig, RetryConfig, ServiceConfig, WindowConfig,
};
// Read by the facade's monitor and builder, which are built only with
// every layer's feature on.
#[cfg_attr(
    not(all(
        feature = "breaker",
        feature = "recovery",
        feature = "limit",
        feature = "metrics",
        feature = "fault",
        feature = "ratelimit"
    )),
    expect(
        unused_imports,
        reason = "the facade's monitor and builder need every layer"
    )
)]
pub(crate) use system::{MEMORY_POOL, PROCESS, check_service_name};
pub use system::{PerformanceThresholds, RESERVED_SERVICE_NAMES, SystemHardeningConfig};
use system::{THRESHOLD_ALIASES, TOP_LEVEL_ALIASES};
pub use tower_hardening_core::{ConfigError, ConfigErrorKind};
pub use upstream::{
    HedgeConfig, HedgeDelayConfig, OutlierConfig, UpstreamConfig, UpstreamRetryConfig,
};
