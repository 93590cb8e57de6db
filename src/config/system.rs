use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::service::positive_duration;
use super::{ConfigError, ServiceConfig, UpstreamConfig, units};

/// The whole configuration: the seed's `SystemHardeningConfig` plus a
/// section per service.
///
/// Field names are snake case; the seed's camelCase keys
/// (`enableHealthMonitoring`, `healthCheckIntervalMs`, `maxResourceMemory`,
/// ...) are accepted as aliases, so the seed's example parses as written.
/// Unknown keys are refused. Every constructor calls
/// [`validate`](Self::validate); a value built by hand should be validated
/// before use.
///
/// ```
/// use std::time::Duration;
/// use tower_hardening::config::SystemHardeningConfig;
///
/// let config = SystemHardeningConfig::from_toml_str(r#"
///     health_check_interval = "10s"
///     max_resource_memory = "512MiB"
///     recoverable_services = ["audio-processing"]
///
///     [services.audio-processing.breaker]
///     failure_rate_threshold = 0.25
///     sliding_window = { time = "60s" }
/// "#)?;
/// assert_eq!(config.health_check_interval, Duration::from_secs(10));
/// assert_eq!(config.max_resource_memory, Some(512 * 1024 * 1024));
/// assert_eq!(config.service("audio-processing").breaker.failure_rate_threshold, 0.25);
/// assert_eq!(config.service("model-inference").breaker.failure_rate_threshold, 0.5); // default
/// # Ok::<(), tower_hardening::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemHardeningConfig {
    /// Run service health checks and derive health statuses.
    #[serde(alias = "enableHealthMonitoring")]
    pub enable_health_monitoring: bool,
    /// Measure CPU, memory and event-loop latency.
    #[serde(alias = "enablePerformanceMonitoring")]
    pub enable_performance_monitoring: bool,
    /// Rebuild recoverable services that turn unhealthy.
    #[serde(alias = "enableErrorRecovery")]
    pub enable_error_recovery: bool,
    /// Manage resources: per-service admission control (the `limit`
    /// sections), shedding under memory pressure, and the `memory` pool
    /// made from `max_resource_memory`. Off, none of them runs: memory is
    /// still measured and reported in health, nothing is shed, and only
    /// the pools given to the builder in code serve `request_resource`.
    #[serde(alias = "enableResourceManagement")]
    pub enable_resource_management: bool,
    /// How often health is checked (default 30 s).
    #[serde(
        alias = "healthCheckIntervalMs",
        alias = "healthCheckInterval",
        with = "units::duration"
    )]
    pub health_check_interval: Duration,
    /// How often performance is measured (default 5 s).
    #[serde(
        alias = "performanceCheckIntervalMs",
        alias = "performanceCheckInterval",
        with = "units::duration"
    )]
    pub performance_check_interval: Duration,
    /// The memory budget in bytes for resources and the memory-pressure
    /// rule; `None` means the machine's total memory.
    #[serde(alias = "maxResourceMemory", with = "units::optional_byte_size")]
    pub max_resource_memory: Option<u64>,
    /// Services the recovery manager may rebuild.
    #[serde(alias = "recoverableServices")]
    pub recoverable_services: Vec<String>,
    /// Rebuild attempts per incident before the recovery manager gives up
    /// (the seed's default, 3); at least 1.
    #[serde(alias = "maxRecoveryAttempts")]
    pub max_recovery_attempts: u32,
    /// The wait before the second rebuild attempt, doubled for each one
    /// after (default 1 s).
    #[serde(alias = "recoveryBackoff", with = "units::duration")]
    pub recovery_backoff: Duration,
    /// The longest wait between rebuild attempts (default 60 s).
    #[serde(alias = "maxRecoveryBackoff", with = "units::duration")]
    pub max_recovery_backoff: Duration,
    /// How long a service's `health_check`, `initialize` or `shutdown` may
    /// take before it counts as failed (default 5 s).
    #[serde(alias = "healthCheckTimeout", with = "units::duration")]
    pub health_check_timeout: Duration,
    /// Failed health checks in a row that make a service unhealthy (one
    /// failed check makes it degraded); at least 1, default 3.
    #[serde(alias = "unhealthyAfterFailedChecks")]
    pub unhealthy_after_failed_checks: u32,
    /// Memory use (of the limit) above which the process is degraded and
    /// LOW-priority work is shed; in [0.1, 1), default 0.80. Each shedding
    /// level clears 5 points below its mark.
    #[serde(alias = "memoryWarning")]
    pub memory_warning: f64,
    /// Memory use (of the limit) above which the process is unhealthy and
    /// everything below CRITICAL is shed; in (memory_warning, 1], default
    /// 0.95. NORMAL is shed from halfway between the two marks.
    #[serde(alias = "memoryCritical")]
    pub memory_critical: f64,
    /// Performance alerts: crossing one makes the process degraded.
    #[serde(alias = "performanceThresholds")]
    pub performance_thresholds: PerformanceThresholds,
    /// How long the in-process metrics collector keeps history (default
    /// 1 h).
    #[serde(alias = "metricsRetention", with = "units::duration")]
    pub metrics_retention: Duration,
    /// The width of one stored metrics bucket (default 10 s).
    #[serde(alias = "metricsResolution", with = "units::duration")]
    pub metrics_resolution: Duration,
    /// How many series the in-process collector keeps (what it refuses
    /// is counted in `hardening_metrics_dropped_series_total`). A service
    /// with every part on makes about 45. Unset: 1,000, or 64 per
    /// configured service and upstream where that is more.
    #[serde(alias = "metricsMaxSeries")]
    pub metrics_max_series: Option<usize>,
    /// Whether health answers include inner error texts (they can leak
    /// internals; default off).
    #[serde(alias = "exposeDetails")]
    pub expose_details: bool,
    /// Per-service sections, by service name.
    pub services: BTreeMap<String, ServiceConfig>,
    /// Upstreams: dependencies reached at several endpoints, by name. Each
    /// is a service too (`[services.<name>]` sets its breaker, admission
    /// and overall timeout).
    pub upstreams: BTreeMap<String, UpstreamConfig>,
}

/// Performance thresholds; each, once crossed, raises an alert event and
/// makes the overall status degraded until it falls back below 90% of the
/// threshold (hysteresis).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceThresholds {
    /// Process CPU use in percent of one core (default 90; a process using
    /// two cores fully reads 200).
    #[serde(alias = "processCpuPercent")]
    pub process_cpu_percent: f64,
    /// Process memory in percent of the memory limit (default 85).
    #[serde(alias = "memoryPercent")]
    pub memory_percent: f64,
    /// 99th percentile of the event loop's timer lateness (default 100 ms).
    #[serde(alias = "eventLoopP99", with = "units::duration")]
    pub event_loop_p99: Duration,
}

impl Default for PerformanceThresholds {
    fn default() -> Self {
        PerformanceThresholds {
            process_cpu_percent: 90.0,
            memory_percent: 85.0,
            event_loop_p99: Duration::from_millis(100),
        }
    }
}

impl Default for SystemHardeningConfig {
    /// Everything on, health every 30 s, performance every 5 s, no memory
    /// budget beyond the machine's, no recoverable services.
    fn default() -> Self {
        SystemHardeningConfig {
            enable_health_monitoring: true,
            enable_performance_monitoring: true,
            enable_error_recovery: true,
            enable_resource_management: true,
            health_check_interval: Duration::from_secs(30),
            performance_check_interval: Duration::from_secs(5),
            max_resource_memory: None,
            recoverable_services: Vec::new(),
            max_recovery_attempts: 3,
            recovery_backoff: Duration::from_secs(1),
            max_recovery_backoff: Duration::from_secs(60),
            health_check_timeout: Duration::from_secs(5),
            unhealthy_after_failed_checks: 3,
            memory_warning: 0.80,
            memory_critical: 0.95,
            performance_thresholds: PerformanceThresholds::default(),
            metrics_retention: Duration::from_secs(3600),
            metrics_resolution: Duration::from_secs(10),
            metrics_max_series: None,
            expose_details: false,
            services: BTreeMap::new(),
            upstreams: BTreeMap::new(),
        }
    }
}

impl SystemHardeningConfig {
    /// The collector's series cap: `metrics_max_series`, or 1,000 or 64
    /// per configured service and upstream, whichever is more.
    pub fn max_series(&self) -> usize {
        self.metrics_max_series
            .unwrap_or_else(|| (64 * (self.services.len() + self.upstreams.len())).max(1_000))
    }

    /// Parses and validates TOML.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|err| ConfigError::parse("toml", ".", err.to_string()))?;
        let config: Self = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            ConfigError::parse("toml", err.path().to_string(), err.inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates JSON.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            ConfigError::parse("json", err.path().to_string(), err.inner().to_string())
        })?;
        deserializer
            .end()
            .map_err(|err| ConfigError::parse("json", ".", err.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a `.toml` or `.json` file, chosen by its extension, then
    /// parses and validates it.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let file_error = |message: String| ConfigError::file(path, message);
        let extension = path
            .extension()
            .and_then(|ext| ext.to_str())
            .map(str::to_ascii_lowercase);
        let parse: fn(&str) -> Result<Self, ConfigError> = match extension.as_deref() {
            Some("toml") => Self::from_toml_str,
            Some("json") => Self::from_json_str,
            _ => {
                return Err(file_error(
                    "unknown kind of file: expected a .toml or .json extension".to_owned(),
                ));
            }
        };
        let text = std::fs::read_to_string(path).map_err(|err| file_error(err.to_string()))?;
        parse(&text)
    }

    /// The section for `name`, or the defaults when it has none.
    pub fn service(&self, name: &str) -> ServiceConfig {
        self.services.get(name).cloned().unwrap_or_default()
    }

    /// Checks every value against what is allowed; the error names the
    /// field, the value and what is allowed.
    ///
    /// The result depends on the configuration alone, never on the machine
    /// that runs it: a file valid in CI is valid in production. Each
    /// service's layer sections are checked by the layers' own builders
    /// (one source of limits). [`validate_for_this_machine`](Self::validate_for_this_machine)
    /// adds the checks against this machine.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive_duration("health_check_interval", self.health_check_interval)?;
        positive_duration(
            "performance_check_interval",
            self.performance_check_interval,
        )?;
        if let Some(bytes) = self.max_resource_memory
            && (bytes == 0 || i64::try_from(bytes).is_err())
        {
            // The `memory` pool counts in i64.
            return Err(ConfigError::invalid(
                "max_resource_memory",
                bytes,
                "a size above zero and at most i64::MAX bytes (8 EiB)",
            ));
        }
        if self.max_recovery_attempts == 0 {
            return Err(ConfigError::invalid(
                "max_recovery_attempts",
                0,
                "at least 1",
            ));
        }
        positive_duration("recovery_backoff", self.recovery_backoff)?;
        if self.max_recovery_backoff < self.recovery_backoff {
            return Err(ConfigError::invalid(
                "max_recovery_backoff",
                format_args!("{:?}", self.max_recovery_backoff),
                format!("at least recovery_backoff ({:?})", self.recovery_backoff),
            ));
        }
        positive_duration("health_check_timeout", self.health_check_timeout)?;
        if self.unhealthy_after_failed_checks == 0 {
            return Err(ConfigError::invalid(
                "unhealthy_after_failed_checks",
                0,
                "at least 1",
            ));
        }
        if !(self.memory_warning >= 0.1 && self.memory_warning < 1.0) {
            return Err(ConfigError::invalid(
                "memory_warning",
                self.memory_warning,
                "a fraction of the memory limit in [0.1, 1)",
            ));
        }
        if !(self.memory_critical > self.memory_warning && self.memory_critical <= 1.0) {
            return Err(ConfigError::invalid(
                "memory_critical",
                self.memory_critical,
                format!(
                    "a fraction above memory_warning ({}) and at most 1",
                    self.memory_warning
                ),
            ));
        }
        let thresholds = &self.performance_thresholds;
        if !(thresholds.process_cpu_percent > 0.0 && thresholds.process_cpu_percent.is_finite()) {
            return Err(ConfigError::invalid(
                "performance_thresholds.process_cpu_percent",
                thresholds.process_cpu_percent,
                "a percentage above 0",
            ));
        }
        if !(thresholds.memory_percent > 0.0 && thresholds.memory_percent <= 100.0) {
            return Err(ConfigError::invalid(
                "performance_thresholds.memory_percent",
                thresholds.memory_percent,
                "a percentage in (0, 100]",
            ));
        }
        positive_duration(
            "performance_thresholds.event_loop_p99",
            thresholds.event_loop_p99,
        )?;
        self.validate_metrics()?;
        for (index, name) in self.recoverable_services.iter().enumerate() {
            check_service_name(&format!("recoverable_services[{index}]"), name)?;
        }
        for (name, section) in &self.services {
            check_service_name("services", name)?;
            section.validate(&format!("services.{name}"))?;
        }
        for (name, section) in &self.upstreams {
            check_service_name("upstreams", name)?;
            section.validate(&format!("upstreams.{name}"), self.services.get(name))?;
        }
        Ok(())
    }
}

impl SystemHardeningConfig {
    /// The collector's settings, checked by its own builder so the two
    /// never disagree.
    #[cfg(feature = "metrics")]
    fn validate_metrics(&self) -> Result<(), ConfigError> {
        positive_duration("metrics_resolution", self.metrics_resolution)?;
        if self.metrics_max_series == Some(0) {
            return Err(ConfigError::invalid(
                "metrics_max_series",
                0,
                "at least 1 (unset: 1,000, or 64 per configured service and upstream)",
            ));
        }
        crate::metrics::MetricsCollector::builder()
            .retention(self.metrics_retention)
            .resolution(self.metrics_resolution)
            .validate()
            .map_err(|err| {
                let (field, value) = match err.field() {
                    "resolution" => ("metrics_resolution", self.metrics_resolution),
                    _ => ("metrics_retention", self.metrics_retention),
                };
                let allowed = err
                    .allowed()
                    .replace("one resolution", "metrics_resolution")
                    .replace(
                        "resolutions (raise the resolution)",
                        "times metrics_resolution (raise metrics_resolution)",
                    );
                ConfigError::invalid(
                    field,
                    humantime::format_duration(value),
                    format!(
                        "{allowed}; metrics_resolution is {}",
                        humantime::format_duration(self.metrics_resolution)
                    ),
                )
            })
    }

    /// Without the `metrics` feature no collector is built.
    #[cfg(not(feature = "metrics"))]
    fn validate_metrics(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// [`validate`](Self::validate), then the checks that depend on the
    /// machine: `max_resource_memory` at most this machine's memory (or its
    /// cgroup's limit, when smaller).
    pub fn validate_for_this_machine(&self) -> Result<(), ConfigError> {
        self.validate()?;
        if let Some(bytes) = self.max_resource_memory {
            let total = machine_memory_bytes();
            if total > 0 && bytes > total {
                return Err(ConfigError::invalid(
                    "max_resource_memory",
                    bytesize::ByteSize::b(bytes),
                    format!(
                        "at most this machine's memory ({})",
                        bytesize::ByteSize::b(total)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The seed's camelCase keys at the top level and the snake-case fields
/// they stand for (the `alias`es above). Layering a file under the
/// environment renames them first: figment would otherwise see one field
/// under two names.
pub(crate) const TOP_LEVEL_ALIASES: &[(&str, &str)] = &[
    ("enableHealthMonitoring", "enable_health_monitoring"),
    (
        "enablePerformanceMonitoring",
        "enable_performance_monitoring",
    ),
    ("enableErrorRecovery", "enable_error_recovery"),
    ("enableResourceManagement", "enable_resource_management"),
    ("healthCheckIntervalMs", "health_check_interval"),
    ("healthCheckInterval", "health_check_interval"),
    ("performanceCheckIntervalMs", "performance_check_interval"),
    ("performanceCheckInterval", "performance_check_interval"),
    ("maxResourceMemory", "max_resource_memory"),
    ("recoverableServices", "recoverable_services"),
    ("maxRecoveryAttempts", "max_recovery_attempts"),
    ("recoveryBackoff", "recovery_backoff"),
    ("maxRecoveryBackoff", "max_recovery_backoff"),
    ("healthCheckTimeout", "health_check_timeout"),
    (
        "unhealthyAfterFailedChecks",
        "unhealthy_after_failed_checks",
    ),
    ("memoryWarning", "memory_warning"),
    ("memoryCritical", "memory_critical"),
    ("performanceThresholds", "performance_thresholds"),
    ("metricsRetention", "metrics_retention"),
    ("metricsResolution", "metrics_resolution"),
    ("metricsMaxSeries", "metrics_max_series"),
    ("exposeDetails", "expose_details"),
];

/// The camelCase keys of `performance_thresholds`.
pub(crate) const THRESHOLD_ALIASES: &[(&str, &str)] = &[
    ("processCpuPercent", "process_cpu_percent"),
    ("memoryPercent", "memory_percent"),
    ("eventLoopP99", "event_loop_p99"),
];

/// The name events about the whole process carry (memory pressure,
/// shedding, performance alerts).
pub(crate) const PROCESS: &str = "process";

/// The pool `max_resource_memory` makes, whose events and metrics carry
/// its name.
pub(crate) const MEMORY_POOL: &str = "memory";

/// Names no service may take: events and metrics use them for the process
/// and the memory pool, so a service of that name would be mistaken for
/// them (a "process unhealthy" alert, the memory pool's figures).
pub const RESERVED_SERVICE_NAMES: &[&str] = &[PROCESS, MEMORY_POOL];

/// Refuses an empty or reserved service name at `field`.
pub(crate) fn check_service_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(ConfigError::invalid(
            field,
            format_args!("{name:?}"),
            "a non-empty service name",
        ));
    }
    if RESERVED_SERVICE_NAMES.contains(&name) {
        return Err(ConfigError::invalid(
            field,
            format_args!("{name:?}"),
            format!(
                "a service name other than the reserved {}",
                RESERVED_SERVICE_NAMES
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        ));
    }
    Ok(())
}

/// Total memory of this machine in bytes, or of the cgroup the process
/// runs in when that is smaller; 0 if it cannot be read.
fn machine_memory_bytes() -> u64 {
    let Ok(mut system) = sysinfo::System::new() else {
        return 0;
    };
    system.refresh_memory();
    let total = system.total_memory();
    match system.cgroup_limits() {
        Some(limits) if limits.total_memory > 0 => total.min(limits.total_memory),
        _ => total,
    }
}
