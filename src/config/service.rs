use std::time::Duration;

use serde::Deserialize;
use tower_hardening_core::Priority;

use super::ConfigError;
use super::units;

/// Per-service settings: the layers `SystemHardening::layer(name)` builds
/// for that service, and how much it matters.
///
/// A section you write switches its part on unless it says
/// `enabled = false`: `[services.api.limit] max_concurrency = 2` limits
/// `api` to two calls at once. A section you do not write leaves its part
/// as [`ServiceConfig::default`] has it: the breaker on, admission,
/// retries and faults off. The same holds in code: a section's own
/// `Default` is on, `ServiceConfig::default()` turns the ones that are off
/// without a section off.
///
/// ```
/// use tower_hardening::config::{LimitConfig, ServiceConfig, SystemHardeningConfig};
///
/// let config = SystemHardeningConfig::from_toml_str(r#"
///     [services.api.limit]
///     max_concurrency = 2
/// "#)?;
/// assert!(config.service("api").limit.enabled);
/// assert!(!config.service("api").retry.enabled); // not written: off
///
/// let written_in_code = LimitConfig { max_concurrency: 2, ..LimitConfig::default() };
/// assert_eq!(config.service("api").limit, written_in_code);
/// assert!(!ServiceConfig::default().limit.enabled);
/// # Ok::<(), tower_hardening::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// How much the service matters to the process: its requests' default
    /// priority and its weight in the overall health status.
    #[serde(with = "units::priority")]
    pub criticality: Priority,
    /// Whether this service's trouble takes the instance out of rotation:
    /// with `true`, `/health/ready` fails while its breaker is open (or
    /// forced open) or it is unhealthy. Default `false`: an open breaker
    /// makes health degraded or unhealthy (for alerts) but leaves
    /// readiness alone, since a dependency every replica shares would
    /// otherwise take every replica out of a load balancer at once. Opt in
    /// only for what this instance alone can get wrong (a local model, its
    /// own cache), not for a shared upstream.
    pub readiness: bool,
    /// A deadline for each call (tower's `TimeoutLayer`); a timeout is a
    /// failure to the breaker. `None`: no deadline.
    ///
    /// It measures the service, not the client: it starts once the
    /// service has what it needs. A body buffered for retries is read
    /// before (under `body_timeout`); for a body the handler streams
    /// itself, the deadline starts when the body has been read to its end
    /// (or dropped), and the upload before it is bounded by
    /// `upload_timeout` instead.
    #[serde(with = "units::optional_duration")]
    pub timeout: Option<Duration>,
    /// How long a client may take to send a request body that is buffered
    /// for retries (HTTP and gRPC stacks). It is read before admission, so
    /// a slow client holds no slot; past this it is answered 408.
    #[serde(with = "units::duration")]
    pub body_timeout: Duration,
    /// How long a handler may take reading a request body it streams
    /// itself (one not buffered), from its first read to the body's end
    /// (time queued for admission does not count); past this reading it
    /// fails, and the request is answered 408.
    #[serde(with = "units::duration")]
    pub upload_timeout: Duration,
    /// How long a streamed response (a gRPC server stream) may hold its
    /// admission units; after this they are given back and the stream goes
    /// on uncounted. A value above a year counts as a year.
    #[serde(with = "units::duration")]
    pub stream_timeout: Duration,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Retries (off unless the section is written).
    pub retry: RetryConfig,
    /// Admission control (off unless the section is written).
    pub limit: LimitConfig,
    /// Fault injection, for testing the hardening (off unless the section
    /// is written).
    pub fault: FaultConfig,
    /// Which response statuses are failures, and which are ignored (the
    /// protocol's own rule unless written).
    pub classify: super::ClassifyConfig,
    /// Rate limits (off unless the section is written).
    pub rate_limit: super::RateLimitConfig,
    /// Which cases a fallback set in code answers (every one unless
    /// written).
    pub fallback: super::FallbackConfig,
}

impl Default for ServiceConfig {
    /// What a service without sections gets: NORMAL criticality, no
    /// timeout, the default breaker, and no admission, rate limit, retries nor faults
    /// (each section's own default is on: writing it switches it on).
    fn default() -> Self {
        ServiceConfig {
            criticality: Priority::NORMAL,
            readiness: false,
            timeout: None,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            upload_timeout: DEFAULT_UPLOAD_TIMEOUT,
            stream_timeout: DEFAULT_STREAM_TIMEOUT,
            breaker: BreakerConfig::default(),
            retry: RetryConfig {
                enabled: false,
                ..RetryConfig::default()
            },
            limit: LimitConfig {
                enabled: false,
                ..LimitConfig::default()
            },
            fault: FaultConfig {
                enabled: false,
                ..FaultConfig::default()
            },
            classify: super::ClassifyConfig::default(),
            rate_limit: super::RateLimitConfig {
                enabled: false,
                ..super::RateLimitConfig::default()
            },
            fallback: super::FallbackConfig::default(),
        }
    }
}

impl ServiceConfig {
    pub(crate) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(timeout) = self.timeout {
            positive_duration(&format!("{prefix}.timeout"), timeout)?;
        }
        positive_duration(&format!("{prefix}.body_timeout"), self.body_timeout)?;
        positive_duration(&format!("{prefix}.upload_timeout"), self.upload_timeout)?;
        positive_duration(&format!("{prefix}.stream_timeout"), self.stream_timeout)?;
        self.breaker.validate(&format!("{prefix}.breaker"))?;
        self.retry.validate(&format!("{prefix}.retry"))?;
        self.limit.validate(&format!("{prefix}.limit"))?;
        self.fault.validate(&format!("{prefix}.fault"))?;
        self.classify.validate(&format!("{prefix}.classify"))?;
        self.rate_limit.validate(&format!("{prefix}.rate_limit"))?;
        self.fallback.validate(&format!("{prefix}.fallback"))?;
        if self.fault.hang_rate > 0.0 && self.timeout.is_none() {
            return Err(ConfigError::invalid(
                format!("{prefix}.fault.hang_rate"),
                self.fault.hang_rate,
                "0 unless the service has a `timeout` (nothing else ends a hung call)",
            ));
        }
        Ok(())
    }
}

/// `body_timeout` unless configured.
pub(crate) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// `upload_timeout` unless configured.
pub(crate) const DEFAULT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// `stream_timeout` unless configured.
pub(crate) const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(300);

/// A breaker's sliding window: the last N calls, or the calls of the last
/// period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// The last N calls (`{ count = 100 }`).
    Count(u32),
    /// The calls of the last period (`{ time = "60s" }`).
    Time(#[serde(with = "units::duration")] Duration),
}

/// Circuit breaker settings (see `tower_hardening::breaker`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Whether the service gets a breaker at all.
    pub enabled: bool,
    /// Opens when the failure rate is at or above this; in (0, 1].
    pub failure_rate_threshold: f64,
    /// Opens when the slow-call rate is at or above this; in (0, 1].
    pub slow_call_rate_threshold: f64,
    /// A call slower than this counts as slow, whatever its outcome.
    /// `None` (the default): no call is slow, and the breaker never reads
    /// the clock on the closed path.
    #[serde(with = "units::optional_duration")]
    pub slow_call_duration: Option<Duration>,
    /// Which calls the rates are computed over.
    pub sliding_window: WindowConfig,
    /// No decision before this many calls are in the window; at least 1.
    pub minimum_calls: u32,
    /// How long to stay open before letting probes through.
    #[serde(with = "units::duration")]
    pub wait_in_open: Duration,
    /// Each consecutive trip doubles the wait, up to this.
    #[serde(with = "units::duration")]
    pub max_wait_in_open: Duration,
    /// How many probe calls half-open lets through; at least 1.
    pub half_open_permits: u32,
    /// How long a half-open probe may take to its verdict (a stream's
    /// trailers); a later one is a failed probe and frees its permit.
    #[serde(with = "units::duration")]
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: None,
            sliding_window: WindowConfig::Count(100),
            minimum_calls: 20,
            wait_in_open: Duration::from_secs(30),
            max_wait_in_open: Duration::from_secs(300),
            half_open_permits: 5,
            probe_timeout: Duration::from_secs(10),
        }
    }
}

impl BreakerConfig {
    /// Checked by the breaker's own builder, so the two never disagree.
    #[cfg(feature = "breaker")]
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.to_builder("config-check").validate().map_err(|err| {
            let key = match (err.field(), self.sliding_window) {
                ("sliding_window", WindowConfig::Count(_)) => "sliding_window.count",
                ("sliding_window", WindowConfig::Time(_)) => "sliding_window.time",
                (field, _) => field,
            };
            at_key(&err, prefix, key)
        })
    }

    /// Without the `breaker` feature no breaker is built from this section.
    #[cfg(not(feature = "breaker"))]
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

#[cfg(feature = "breaker")]
impl BreakerConfig {
    /// A breaker builder with these settings, named `name`; add a
    /// classifier or an event sink, then `build()`.
    ///
    /// ```
    /// use tower_hardening::config::SystemHardeningConfig;
    ///
    /// let config = SystemHardeningConfig::from_toml_str(r#"
    ///     [services.model-inference.breaker]
    ///     failure_rate_threshold = 0.25
    /// "#)?;
    /// let layer = config.service("model-inference").breaker.to_builder("model-inference").build()?;
    /// assert_eq!(layer.handle().name(), "model-inference");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_builder(&self, name: &str) -> crate::breaker::BreakerBuilder {
        use crate::breaker::{CircuitBreakerLayer, SlidingWindow};

        let builder = CircuitBreakerLayer::builder()
            .name(name)
            .failure_rate_threshold(self.failure_rate_threshold)
            .slow_call_rate_threshold(self.slow_call_rate_threshold)
            .sliding_window(match self.sliding_window {
                WindowConfig::Count(n) => SlidingWindow::count(n),
                WindowConfig::Time(period) => SlidingWindow::time(period),
            })
            .minimum_calls(self.minimum_calls)
            .wait_in_open(self.wait_in_open)
            .max_wait_in_open(self.max_wait_in_open)
            .half_open_permits(self.half_open_permits)
            .probe_timeout(self.probe_timeout);
        match self.slow_call_duration {
            Some(duration) => builder.slow_call_duration(duration),
            None => builder,
        }
    }
}

/// How retries spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitterConfig {
    /// Exactly the backoff.
    None,
    /// Uniform in [0, backoff].
    Full,
    /// Half the backoff plus uniform in [0, backoff / 2].
    Equal,
}

/// Retry settings (see `tower_hardening::recovery`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Whether failed calls are retried at all: on when the section is
    /// written, unless it says `enabled = false`.
    pub enabled: bool,
    /// Attempts in total, the first included; at least 1.
    pub max_attempts: u32,
    /// The first backoff.
    #[serde(with = "units::duration")]
    pub initial_backoff: Duration,
    /// The largest backoff.
    #[serde(with = "units::duration")]
    pub max_backoff: Duration,
    /// How backoffs are spread.
    pub jitter: JitterConfig,
    /// Extra load retries may add, as a fraction of first attempts; from 0
    /// to 1000 (0.2: at most 20% more calls).
    pub budget_ratio: f64,
    /// Retries per second always allowed, whatever the ratio.
    pub budget_min_per_second: u32,
    /// How long a deposit to the budget lasts.
    #[serde(with = "units::duration")]
    pub budget_ttl: Duration,
    /// Whether an HTTP request carrying an `Idempotency-Key` header may be
    /// retried whatever its method. Off: a client could otherwise make any
    /// `POST` run several times; turn it on only if the service
    /// deduplicates by that key.
    pub trust_idempotency_key: bool,
}

impl Default for RetryConfig {
    /// A written section's defaults: on, 3 attempts, 50 ms to 2 s of full
    /// jitter, a budget of 20% plus 10 a second over 10 s.
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            jitter: JitterConfig::Full,
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            budget_ttl: Duration::from_secs(10),
            trust_idempotency_key: false,
        }
    }
}

impl RetryConfig {
    /// Checked by the retry layer's own builder, so the two never disagree.
    #[cfg(feature = "recovery")]
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.to_builder("config-check").validate().map_err(|err| {
            let key = match err.field() {
                "backoff" if self.max_backoff < self.initial_backoff => "max_backoff",
                "backoff" => "initial_backoff",
                "budget.ratio" => "budget_ratio",
                "budget.ttl" => "budget_ttl",
                "budget.min_per_second" => "budget_min_per_second",
                field => field,
            };
            at_key(&err, prefix, key)
        })
    }

    /// Without the `recovery` feature no retry layer is built from this
    /// section.
    #[cfg(not(feature = "recovery"))]
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

#[cfg(feature = "recovery")]
impl RetryConfig {
    /// A retry builder with these settings, named `name` (whether to use
    /// it at all is `enabled`'s call); add a classifier, then `build()`.
    ///
    /// ```
    /// use tower_hardening::config::SystemHardeningConfig;
    ///
    /// let config = SystemHardeningConfig::from_toml_str(r#"
    ///     [services.model-inference.retry]
    ///     max_attempts = 4
    ///     initial_backoff = "20ms"
    /// "#)?;
    /// let retry = config.service("model-inference").retry.to_builder("model-inference").build()?;
    /// assert_eq!(retry.handle().name(), "model-inference");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_builder(&self, name: &str) -> crate::recovery::RetryBuilder {
        use crate::recovery::{Backoff, Jitter, RetryBudget, RetryLayer};

        RetryLayer::builder()
            .name(name)
            .max_attempts(self.max_attempts)
            .backoff(Backoff::exponential(self.initial_backoff, self.max_backoff))
            .jitter(match self.jitter {
                JitterConfig::None => Jitter::None,
                JitterConfig::Full => Jitter::Full,
                JitterConfig::Equal => Jitter::Equal,
            })
            .budget(RetryBudget::new(
                self.budget_ttl,
                self.budget_min_per_second,
                self.budget_ratio as f32,
            ))
    }
}

/// Admission control settings (see `tower_hardening::limit`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    /// Whether requests go through admission control at all: on when the
    /// section is written, unless it says `enabled = false`.
    pub enabled: bool,
    /// Requests served at once; at least 1.
    pub max_concurrency: u32,
    /// Requests waiting at most; beyond it they are refused.
    pub max_queue: u32,
    /// How long a request may wait for admission.
    #[serde(with = "units::duration")]
    pub queue_timeout: Duration,
}

impl Default for LimitConfig {
    /// A written section's defaults: on, 256 at once, 1,000 waiting, 5 s
    /// to wait.
    fn default() -> Self {
        LimitConfig {
            enabled: true,
            max_concurrency: 256,
            max_queue: 1_000,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

impl LimitConfig {
    /// Checked by the pool's own builder, so the two never disagree.
    #[cfg(feature = "limit")]
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.to_pool_builder("config-check")
            .validate()
            .map_err(|err| {
                let key = match err.field() {
                    "capacity" => "max_concurrency",
                    field => field,
                };
                at_key(&err, prefix, key)
            })
    }

    /// Without the `limit` feature no pool is built from this section.
    #[cfg(not(feature = "limit"))]
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

#[cfg(feature = "limit")]
impl LimitConfig {
    /// A pool builder with these settings (capacity `max_concurrency`),
    /// named `name`; build it and give it to a `ResourceLimitLayer`.
    ///
    /// ```
    /// use tower_hardening::config::SystemHardeningConfig;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = SystemHardeningConfig::from_toml_str(r#"
    ///     [services.audio-processing.limit]
    ///     max_concurrency = 8
    ///     queue_timeout = "2s"
    /// "#)?;
    /// let pool = config.service("audio-processing").limit.to_pool_builder("audio-processing").build()?;
    /// assert_eq!(pool.stats().capacity, 8);
    /// # Ok(())
    /// # }
    /// ```
    pub fn to_pool_builder(&self, name: &str) -> crate::limit::PoolBuilder {
        crate::limit::ResourcePool::builder(name)
            .capacity(u64::from(self.max_concurrency))
            .max_queue(self.max_queue as usize)
            .queue_timeout(self.queue_timeout)
    }
}

/// Fault injection settings (see `tower_hardening::fault`): the share of
/// calls that fail, hang, get a status instead of an answer, or get
/// latency. Switchable at run time through `ServiceLayer::faults()`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Whether faults are injected at start: on when the section is
    /// written, unless it says `enabled = false` (the handle can switch
    /// them on later).
    pub enabled: bool,
    /// Share of calls failed with `InjectedFault`.
    pub error_rate: f64,
    /// Share of calls left hanging (a timeout above ends them).
    pub hang_rate: f64,
    /// Share of calls answered with `status` (HTTP and gRPC stacks; the
    /// plain `layer()` stack has no response to make, and lets them
    /// through).
    /// At run time: `FaultHandle::set_status_rate`.
    pub status_rate: f64,
    /// The HTTP status (or gRPC code) of injected answers. Unset, each
    /// protocol's "unavailable": 503 from `http_layer`, 14 UNAVAILABLE from
    /// `grpc_layer`. A status that is no gRPC code (above 16) is
    /// UNAVAILABLE to gRPC; a gRPC code (0 to 16) is 503 to HTTP.
    pub status: Option<u16>,
    /// Share of calls given `latency` more.
    pub latency_rate: f64,
    /// The latency added.
    #[serde(with = "units::duration")]
    pub latency: Duration,
}

impl Default for FaultConfig {
    /// A written section's defaults: on, with every rate 0 (nothing
    /// injected until a rate is set), status per protocol (503 for HTTP,
    /// 14 UNAVAILABLE for gRPC).
    fn default() -> Self {
        FaultConfig {
            enabled: true,
            error_rate: 0.0,
            hang_rate: 0.0,
            status_rate: 0.0,
            status: None,
            latency_rate: 0.0,
            latency: Duration::ZERO,
        }
    }
}

impl FaultConfig {
    /// Checked by the fault layer's own builder.
    #[cfg(feature = "fault")]
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(status) = self.status
            && !(status <= 16 || (100..=599).contains(&status))
        {
            return Err(ConfigError::invalid(
                format!("{prefix}.status"),
                status,
                "an HTTP status (100 to 599) or a gRPC code (0 to 16)",
            ));
        }
        self.to_builder("config-check").validate().map_err(|err| {
            let key = match err.field() {
                "latency" => "latency_rate",
                field => field,
            };
            at_key(&err, prefix, key)
        })
    }

    /// Without the `fault` feature no fault layer is built.
    #[cfg(not(feature = "fault"))]
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }

    /// A fault layer builder with these settings, named `name`.
    #[cfg(feature = "fault")]
    pub fn to_builder(&self, name: &str) -> crate::fault::FaultBuilder {
        let mut builder = crate::fault::FaultLayer::builder()
            .name(name)
            .error_rate(self.error_rate)
            .hang_rate(self.hang_rate)
            .latency(self.latency_rate, self.latency);
        if !self.enabled {
            builder = builder.disabled();
        }
        // 503 is HTTP's "unavailable"; the gRPC stack answers it as 14
        // UNAVAILABLE (it is no gRPC code).
        builder.status_rate(self.status_rate, self.status.unwrap_or(503))
    }
}

/// A builder's error, placed at the configuration key that set the value.
#[allow(dead_code, reason = "unused when no layer feature is on")]
fn at_key(err: &ConfigError, prefix: &str, key: &str) -> ConfigError {
    ConfigError::invalid(format!("{prefix}.{key}"), err.value(), err.allowed())
}

pub(crate) fn positive_duration(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::invalid(field, "0s", "a duration above zero"))
    } else {
        Ok(())
    }
}
