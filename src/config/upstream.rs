//! `[upstreams.<name>]`: a dependency reached at several endpoints.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::ConfigError;
use super::service::positive_duration;
use super::units;

/// An upstream: a named dependency with several endpoints, reached
/// through one service (see [`SystemHardening::upstream`](crate::SystemHardening::upstream)).
///
/// The whole upstream is also a service of the same name: its breaker,
/// admission, fault injection, criticality, readiness and overall
/// `timeout` come from `[services.<name>]` as for any service (the
/// defaults without one). The keys here say how its endpoints are called:
/// each attempt's `timeout`, outlier ejection, retries to another
/// endpoint and hedging. `[services.<name>.retry]` is refused for an
/// upstream: it retries itself, endpoint by endpoint.
///
/// ```
/// use std::time::Duration;
/// use tower_hardening::config::{HedgeDelayConfig, SystemHardeningConfig};
///
/// let config = SystemHardeningConfig::from_toml_str(r#"
///     [upstreams.model-inference]
///     endpoints = ["http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003"]
///     timeout = "2s"
///     [upstreams.model-inference.outlier]
///     consecutive_failures = 5
///     base_ejection_time = "30s"
///     max_ejection_percent = 50
///     [upstreams.model-inference.retry]
///     max_attempts = 3
///     [upstreams.model-inference.hedge]
///     delay = "p95"
///     max_hedges = 1
/// "#)?;
/// let upstream = &config.upstreams["model-inference"];
/// assert_eq!(upstream.endpoints.len(), 3);
/// assert_eq!(upstream.hedge.delay, HedgeDelayConfig::P95);
/// assert!(upstream.hedge.enabled); // written: on
/// # Ok::<(), tower_hardening::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// The endpoints' URIs (`http://host:port`); at least one. The handle
    /// changes them at run time.
    pub endpoints: Vec<String>,
    /// A deadline for each attempt to one endpoint; one that passes it is
    /// that endpoint's failure, and may be retried on another. `None`: no
    /// deadline per attempt (`[services.<name>] timeout` bounds the whole
    /// call, retries and hedges included).
    #[serde(with = "units::optional_duration")]
    pub timeout: Option<Duration>,
    /// Outlier ejection (on unless `enabled = false`).
    pub outlier: OutlierConfig,
    /// Retries to another endpoint (on unless `enabled = false`).
    pub retry: UpstreamRetryConfig,
    /// Hedging of idempotent requests (off unless the section is written).
    pub hedge: HedgeConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            endpoints: Vec::new(),
            timeout: None,
            outlier: OutlierConfig::default(),
            retry: UpstreamRetryConfig::default(),
            hedge: HedgeConfig {
                enabled: false,
                ..HedgeConfig::default()
            },
        }
    }
}

/// When an endpoint is ejected; Envoy's names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Whether endpoints are ejected at all.
    pub enabled: bool,
    /// Failures in a row that eject an endpoint (default 5; 0: not by this
    /// rule).
    pub consecutive_failures: u32,
    /// The failure rate over an endpoint's last 100 calls that ejects it,
    /// in (0, 1]; none by default.
    pub failure_rate: Option<f64>,
    /// Calls in that window before the rate is trusted (default 20).
    pub failure_rate_minimum_calls: u32,
    /// The first ejection's length; the n-th lasts n times as long, at
    /// most 300 s (default 30 s).
    #[serde(with = "units::duration")]
    pub base_ejection_time: Duration,
    /// The most endpoints out at once, in percent (default 50); one may
    /// always be. With every endpoint out, all are called.
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: None,
            failure_rate_minimum_calls: 20,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }
}

/// Retries of a failed attempt on another endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamRetryConfig {
    /// Whether failed attempts are retried.
    pub enabled: bool,
    /// Attempts per request, the first included (default 3).
    pub max_attempts: u32,
    /// Retries and hedges allowed per request, over 10 s (default 0.2).
    pub budget_ratio: f32,
    /// Retries and hedges always allowed per second (default 10).
    pub budget_min_per_second: u32,
}

impl Default for UpstreamRetryConfig {
    fn default() -> Self {
        UpstreamRetryConfig {
            enabled: true,
            max_attempts: 3,
            budget_ratio: 0.2,
            budget_min_per_second: 10,
        }
    }
}

/// Hedging: a second attempt to another endpoint when the first is slow.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeConfig {
    /// Whether idempotent requests are hedged.
    pub enabled: bool,
    /// How long without an answer before the hedge: `"p95"` (the
    /// upstream's observed 95th percentile; no hedge before 20 answers)
    /// or a duration (default `"p95"`).
    pub delay: HedgeDelayConfig,
    /// Hedges per request (default 1).
    pub max_hedges: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            enabled: true,
            delay: HedgeDelayConfig::P95,
            max_hedges: 1,
        }
    }
}

/// A hedging delay: `"p95"` or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeDelayConfig {
    /// The upstream's observed 95th percentile latency.
    P95,
    /// A fixed delay.
    Fixed(Duration),
}

impl<'de> Deserialize<'de> for HedgeDelayConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Delay;

        impl Visitor<'_> for Delay {
            type Value = HedgeDelayConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"p95\", a duration such as \"30ms\", or an integer number of milliseconds",
                )
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(HedgeDelayConfig::Fixed(Duration::from_millis(v)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|ms| HedgeDelayConfig::Fixed(Duration::from_millis(ms)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v.trim().eq_ignore_ascii_case("p95") {
                    return Ok(HedgeDelayConfig::P95);
                }
                humantime::parse_duration(v.trim())
                    .map(HedgeDelayConfig::Fixed)
                    .map_err(|err| {
                        E::custom(format_args!(
                            "invalid hedge delay {v:?} ({err}): expected \"p95\" or a duration such as \"30ms\""
                        ))
                    })
            }
        }

        d.deserialize_any(Delay)
    }
}

impl UpstreamConfig {
    pub(crate) fn validate(
        &self,
        prefix: &str,
        service: Option<&super::ServiceConfig>,
    ) -> Result<(), ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::invalid(
                format!("{prefix}.endpoints"),
                "[]",
                "at least one endpoint URI, such as \"http://127.0.0.1:7001\"",
            ));
        }
        let mut seen: Vec<http::Uri> = Vec::with_capacity(self.endpoints.len());
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            let field = format!("{prefix}.endpoints[{index}]");
            let uri: Result<http::Uri, _> = endpoint.parse();
            let uri = match uri {
                Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => uri,
                _ => {
                    return Err(ConfigError::invalid(
                        field,
                        format_args!("{endpoint:?}"),
                        "a URI with a scheme and an authority, such as \"http://127.0.0.1:7001\"",
                    ));
                }
            };
            // One endpoint however it is spelled: scheme and host compare
            // without case, and an empty path is `/`.
            let same = |other: &http::Uri| {
                other.scheme() == uri.scheme()
                    && other.authority() == uri.authority()
                    && other.path() == uri.path()
                    && other.query() == uri.query()
            };
            let twice = seen.iter().any(same);
            seen.push(uri);
            if twice {
                return Err(ConfigError::invalid(
                    field,
                    format_args!("{endpoint:?}"),
                    "each endpoint once",
                ));
            }
        }
        if let Some(timeout) = self.timeout {
            positive_duration(&format!("{prefix}.timeout"), timeout)?;
        }
        let outlier = &self.outlier;
        if let Some(rate) = outlier.failure_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            return Err(ConfigError::invalid(
                format!("{prefix}.outlier.failure_rate"),
                rate,
                "a fraction in (0, 1]",
            ));
        }
        if outlier.failure_rate_minimum_calls == 0 || outlier.failure_rate_minimum_calls > 100 {
            return Err(ConfigError::invalid(
                format!("{prefix}.outlier.failure_rate_minimum_calls"),
                outlier.failure_rate_minimum_calls,
                "from 1 to 100 (the window's size)",
            ));
        }
        positive_duration(
            &format!("{prefix}.outlier.base_ejection_time"),
            outlier.base_ejection_time,
        )?;
        if outlier.max_ejection_percent > 100 {
            return Err(ConfigError::invalid(
                format!("{prefix}.outlier.max_ejection_percent"),
                outlier.max_ejection_percent,
                "a percentage from 0 to 100",
            ));
        }
        let retry = &self.retry;
        if retry.max_attempts == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.retry.max_attempts"),
                0,
                "at least 1 (the first attempt counts)",
            ));
        }
        if !(retry.budget_ratio >= 0.0 && retry.budget_ratio <= 1000.0) {
            return Err(ConfigError::invalid(
                format!("{prefix}.retry.budget_ratio"),
                retry.budget_ratio,
                "a ratio from 0 to 1000",
            ));
        }
        if retry.budget_min_per_second >= i32::MAX as u32 {
            return Err(ConfigError::invalid(
                format!("{prefix}.retry.budget_min_per_second"),
                retry.budget_min_per_second,
                "below 2^31 - 1",
            ));
        }
        if let HedgeDelayConfig::Fixed(delay) = self.hedge.delay {
            positive_duration(&format!("{prefix}.hedge.delay"), delay)?;
        }
        if self.hedge.enabled && self.hedge.max_hedges == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.hedge.max_hedges"),
                0,
                "at least 1 (or `enabled = false`)",
            ));
        }
        if let Some(service) = service
            && service.retry.enabled
        {
            let name = prefix.trim_start_matches("upstreams.");
            return Err(ConfigError::invalid(
                format!("services.{name}.retry"),
                "a retry section",
                format!(
                    "none for an upstream: it retries on another endpoint as `[{prefix}.retry]` says"
                ),
            ));
        }
        Ok(())
    }

    /// The outlier rules for the upstream layer.
    #[cfg(feature = "upstream")]
    pub fn outlier_policy(&self) -> crate::upstream::OutlierPolicy {
        let outlier = &self.outlier;
        crate::upstream::OutlierPolicy {
            enabled: outlier.enabled,
            consecutive_failures: outlier.consecutive_failures,
            failure_rate: outlier.failure_rate,
            failure_rate_minimum_calls: outlier.failure_rate_minimum_calls,
            base_ejection_time: outlier.base_ejection_time,
            max_ejection_percent: outlier.max_ejection_percent,
            ..crate::upstream::OutlierPolicy::default()
        }
    }
}
