//! The `rate_limit` and `fallback` sections of a service.

use serde::Deserialize;

use super::ConfigError;

/// Rate limit settings (see `tower_hardening::ratelimit`): off unless the
/// section is written.
///
/// ```
/// use tower_hardening::config::SystemHardeningConfig;
///
/// let config = SystemHardeningConfig::from_toml_str(r#"
///     [services.api.rate_limit]
///     rate = "100/s"
///     burst = 20
///     key = "peer-ip"
///     max_keys = 100000
///
///     [services.api.rate_limit.priorities.high]
///     rate = "1000/s"
/// "#)?;
/// let rate_limit = config.service("api").rate_limit;
/// assert!(rate_limit.enabled);
/// assert_eq!(rate_limit.rate.as_deref(), Some("100/s"));
///
/// let err = SystemHardeningConfig::from_toml_str(r#"
///     [services.api.rate_limit]
///     rate = "0/s"
/// "#).unwrap_err();
/// assert_eq!(err.field(), "services.api.rate_limit.rate");
/// # Ok::<(), tower_hardening::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Whether requests are rate limited: on when the section is written,
    /// unless it says `enabled = false`.
    pub enabled: bool,
    /// The quota: `"COUNT/UNIT"` with a unit `s`, `m` or `h` (`"100/s"`);
    /// required when enabled.
    pub rate: Option<String>,
    /// Requests allowed at once after a quiet spell; at least 1. Unset: the
    /// rate's count.
    pub burst: Option<u32>,
    /// What a request is counted against: `"global"` (the whole service),
    /// `"peer-ip"` (the client's address; IPv6 by /64) or `"header:NAME"`
    /// (`"header:x-api-key"`). Keyed limits need the HTTP or gRPC stack.
    pub key: String,
    /// The most keys tracked at once; while full, new keys share one
    /// bucket (none tracked is evicted). At least 1.
    pub max_keys: usize,
    /// Proxies (addresses or networks, `"10.0.0.0/8"`) whose
    /// `X-Forwarded-For` is believed with `key = "peer-ip"`. Empty: the
    /// header is never read.
    pub trusted_proxies: Vec<String>,
    /// A quota of its own per priority (its own buckets). CRITICAL is never
    /// limited unless given one here.
    pub priorities: PriorityRates,
}

impl Default for RateLimitConfig {
    /// A written section's defaults: on, global, 100 000 keys at most; the
    /// rate must be written.
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            rate: None,
            burst: None,
            key: "global".to_owned(),
            max_keys: 100_000,
            trusted_proxies: Vec::new(),
            priorities: PriorityRates::default(),
        }
    }
}

/// The quotas of their own some priorities have.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityRates {
    /// LOW's quota.
    pub low: Option<PriorityRate>,
    /// NORMAL's quota.
    pub normal: Option<PriorityRate>,
    /// HIGH's quota.
    pub high: Option<PriorityRate>,
    /// CRITICAL's quota (and above): without one, never limited.
    pub critical: Option<PriorityRate>,
}

/// One priority's quota.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRate {
    /// `"COUNT/UNIT"`, as `rate_limit.rate`.
    pub rate: String,
    /// As `rate_limit.burst`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl PriorityRates {
    /// The quotas written, by priority.
    pub fn iter(&self) -> impl Iterator<Item = (tower_hardening_core::Priority, &PriorityRate)> {
        use tower_hardening_core::Priority;
        [
            (Priority::LOW, &self.low),
            (Priority::NORMAL, &self.normal),
            (Priority::HIGH, &self.high),
            (Priority::CRITICAL, &self.critical),
        ]
        .into_iter()
        .filter_map(|(priority, rate)| rate.as_ref().map(|rate| (priority, rate)))
    }
}

#[cfg(feature = "ratelimit")]
impl RateLimitConfig {
    /// A rate limiter builder with these settings, named `name`, or the
    /// first setting it refuses (placed under `prefix`).
    pub(crate) fn to_builder(
        &self,
        name: &str,
        prefix: &str,
    ) -> Result<crate::ratelimit::RateLimitBuilder, ConfigError> {
        use crate::ratelimit::{IpNet, KEY_FORMAT, KeyMode, RATE_FORMAT, Rate, RateLimitLayer};

        let rate = |field: String, value: Option<&str>| -> Result<Rate, ConfigError> {
            let value = value.ok_or_else(|| ConfigError::invalid(&field, "none", RATE_FORMAT))?;
            value
                .parse::<Rate>()
                .map_err(|_| ConfigError::invalid(&field, format!("{value:?}"), RATE_FORMAT))
        };
        let burst = |field: String, value: Option<u32>| match value {
            Some(0) => Err(ConfigError::invalid(field, 0, "a burst of at least 1")),
            _ => Ok(()),
        };
        let base = rate(format!("{prefix}.rate"), self.rate.as_deref())?;
        burst(format!("{prefix}.burst"), self.burst)?;
        let key: KeyMode = self.key.parse().map_err(|_| {
            ConfigError::invalid(
                format!("{prefix}.key"),
                format!("{:?}", self.key),
                KEY_FORMAT,
            )
        })?;
        if self.max_keys == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_keys"),
                0,
                "at least 1 (new keys beyond it share one bucket)",
            ));
        }
        let proxies = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(index, proxy)| {
                proxy.parse::<IpNet>().map_err(|_| {
                    ConfigError::invalid(
                        format!("{prefix}.trusted_proxies[{index}]"),
                        format!("{proxy:?}"),
                        "an IP address or ADDRESS/PREFIX (\"10.0.0.0/8\")",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = RateLimitLayer::builder(name)
            .rate(base)
            .key(key)
            .max_keys(self.max_keys)
            .trusted_proxies(proxies);
        if let Some(burst) = self.burst {
            builder = builder.burst(burst);
        }
        for (priority, quota) in self.priorities.iter() {
            let at = format!("{prefix}.priorities.{priority}");
            let own = rate(format!("{at}.rate"), Some(&quota.rate))?;
            burst(format!("{at}.burst"), quota.burst)?;
            builder = builder.priority_rate(priority, own, quota.burst.unwrap_or(own.count()));
        }
        Ok(builder)
    }

    /// What `build` refuses, refused here first.
    pub(crate) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        self.to_builder("config-check", prefix)?
            .build()
            .map(drop)
            .map_err(|err| {
                ConfigError::invalid(
                    format!("{prefix}.{}", err.field()),
                    err.value(),
                    err.allowed(),
                )
            })
    }
}

#[cfg(not(feature = "ratelimit"))]
impl RateLimitConfig {
    /// Without the `ratelimit` feature no limiter is built from this
    /// section.
    pub(crate) fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Which cases a fallback set in code answers (`ServiceLayer::fallback`,
/// `HttpServiceLayer::fallback`). Without a fallback in code the section
/// has nothing to answer with.
///
/// ```
/// use tower_hardening::config::SystemHardeningConfig;
///
/// let config = SystemHardeningConfig::from_toml_str(r#"
///     [services.api.fallback]
///     on = ["circuit_open", "rate_limited"]
/// "#)?;
/// assert_eq!(config.service("api").fallback.on.len(), 2);
/// let err = SystemHardeningConfig::from_toml_str(r#"
///     [services.api.fallback]
///     on = ["always"]
/// "#).unwrap_err();
/// assert_eq!(err.field(), "services.api.fallback.on[0]");
/// # Ok::<(), tower_hardening::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// Whether the fallback set in code answers at all (default on).
    pub enabled: bool,
    /// The cases it answers: `circuit_open`, `overloaded`, `rate_limited`,
    /// `queue_timeout`, `recovering`, `failure` (after the retries).
    /// Default every one. A client's own error (a broken body) never falls
    /// back.
    pub on: Vec<String>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            enabled: true,
            on: [
                "circuit_open",
                "overloaded",
                "rate_limited",
                "queue_timeout",
                "recovering",
                "failure",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

#[cfg(feature = "recovery")]
impl FallbackConfig {
    /// The cases, or the first name that is none.
    pub(crate) fn cases(&self, prefix: &str) -> Result<crate::recovery::FallbackOn, ConfigError> {
        use crate::recovery::{CASE_NAMES, FallbackCase, FallbackOn};

        if !self.enabled {
            return Ok(FallbackOn::none());
        }
        self.on
            .iter()
            .enumerate()
            .map(|(index, name)| {
                name.parse::<FallbackCase>().map_err(|_| {
                    ConfigError::invalid(
                        format!("{prefix}.on[{index}]"),
                        format!("{name:?}"),
                        format!("one of {CASE_NAMES}"),
                    )
                })
            })
            .collect()
    }

    pub(crate) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.cases(prefix).map(drop)
    }
}

#[cfg(not(feature = "recovery"))]
impl FallbackConfig {
    pub(crate) fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}
