use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::service::positive_duration;
use super::{ConfigError, ServiceConfig, units};

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
    /// Run the resource pools and admission control.
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
    /// Per-service sections, by service name.
    pub services: BTreeMap<String, ServiceConfig>,
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
            services: BTreeMap::new(),
        }
    }
}

impl SystemHardeningConfig {
    /// Parses and validates TOML.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|err| ConfigError::Parse {
            field: ".".to_owned(),
            format: "toml",
            message: err.to_string(),
        })?;
        let config: Self =
            serde_path_to_error::deserialize(deserializer).map_err(|err| ConfigError::Parse {
                field: err.path().to_string(),
                format: "toml",
                message: err.inner().to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates JSON.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            ConfigError::Parse {
                field: err.path().to_string(),
                format: "json",
                message: err.inner().to_string(),
            }
        })?;
        deserializer.end().map_err(|err| ConfigError::Parse {
            field: ".".to_owned(),
            format: "json",
            message: err.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a `.toml` or `.json` file, chosen by its extension, then
    /// parses and validates it.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let file_error = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
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
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive_duration("health_check_interval", self.health_check_interval)?;
        positive_duration(
            "performance_check_interval",
            self.performance_check_interval,
        )?;
        if let Some(bytes) = self.max_resource_memory {
            if bytes == 0 {
                return Err(ConfigError::invalid(
                    "max_resource_memory",
                    0,
                    "a size above zero",
                ));
            }
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
        for (index, name) in self.recoverable_services.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("recoverable_services[{index}]"),
                    format_args!("{name:?}"),
                    "a non-empty service name",
                ));
            }
        }
        for (name, section) in &self.services {
            if name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "services",
                    format_args!("a section named {name:?}"),
                    "non-empty service names",
                ));
            }
            section.validate(&format!("services.{name}"))?;
        }
        Ok(())
    }
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
