//! Every configuration key changes behaviour: for each key, a test loads
//! a TOML configuration the way a user writes it, with the key at its
//! default and at a written value, and shows the difference through the
//! public API (health, breaker snapshots, pool and retry figures, metrics,
//! calls through the stacks). Time runs on tokio's paused clock.
//!
//! [`KEYS`] maps each key to the test that shows it;
//! [`every_key_serde_accepts_has_a_test`] fails when a key is added
//! without one.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::breaker::ProbeTimedOut;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::{
    CircuitState, EventKind, HealthState, RecoveryStep, RejectionKind, names, rejection_of,
};
use tower_hardening::managed::BoxFuture;
use tower_hardening::monitor::{CpuReading, ManualReadings, MemoryReading};
use tower_hardening::recovery::ReplayBody;
use tower_hardening::stack::ServiceLayer;
use tower_hardening::{BoxError, HardeningHandle, ManagedService, SystemHardening};

#[tokio::test(start_paused = true)]
async fn metrics_max_series_caps_the_collector() {
    // Unset, the cap grows with the services configured: 64 each.
    let mut many = String::new();
    for i in 0..40 {
        many.push_str(&format!("[services.s{i}]\n"));
    }
    let config = SystemHardeningConfig::from_toml_str(&many).unwrap();
    assert_eq!(config.max_series(), 2_560);
    let config = SystemHardeningConfig::from_toml_str("[services.api]").unwrap();
    assert_eq!(config.max_series(), 1_000);
    // Written, it is what the collector keeps: the one request's series
    // is refused and counted past a cap of 1.
    for (toml, kept) in [
        ("[services.api]", 1),
        ("metrics_max_series = 1\n[services.api]", 0),
    ] {
        let handle = one_call_then(toml, Duration::from_secs(1)).await;
        let requests = handle
            .metrics()
            .query(names::REQUESTS_TOTAL)
            .label(names::LABEL_SERVICE, "api")
            .count();
        assert_eq!(requests, kept, "{toml}");
        assert!(
            kept == 1 || handle.metrics().dropped_series() > 0,
            "{toml}: refused series are counted"
        );
        handle.shutdown().await;
    }
    let error = SystemHardeningConfig::from_toml_str("metrics_max_series = 0").unwrap_err();
    assert!(error.to_string().contains("metrics_max_series"), "{error}");
}

// ---------------------------------------------------------------------
// The keys and the tests that show them.

/// Each key serde accepts (snake case; `*` for a service name, `=` for an
/// enum's variants), and the test that shows it changes behaviour.
const KEYS: &[(&str, &str)] = &[
    (
        "enable_health_monitoring",
        "enable_health_monitoring_runs_the_checks",
    ),
    (
        "enable_performance_monitoring",
        "enable_performance_monitoring_measures",
    ),
    (
        "enable_error_recovery",
        "enable_error_recovery_rebuilds_services",
    ),
    (
        "enable_resource_management",
        "enable_resource_management_makes_the_memory_pool_and_admission",
    ),
    (
        "health_check_interval",
        "health_check_interval_sets_when_checks_run",
    ),
    (
        "performance_check_interval",
        "performance_check_interval_sets_how_often_performance_is_measured",
    ),
    (
        "max_resource_memory",
        "max_resource_memory_is_the_memory_limit",
    ),
    (
        "recoverable_services",
        "recoverable_services_are_the_ones_rebuilt",
    ),
    (
        "max_recovery_attempts",
        "max_recovery_attempts_bounds_the_rebuilds",
    ),
    ("recovery_backoff", "recovery_backoff_spaces_the_rebuilds"),
    (
        "max_recovery_backoff",
        "max_recovery_backoff_caps_the_spacing",
    ),
    (
        "health_check_timeout",
        "health_check_timeout_fails_slow_checks",
    ),
    (
        "unhealthy_after_failed_checks",
        "unhealthy_after_failed_checks_counts_failures",
    ),
    ("memory_warning", "memory_warning_degrades"),
    ("memory_critical", "memory_critical_makes_unhealthy"),
    (
        "performance_thresholds",
        "performance_thresholds_raise_alerts",
    ),
    (
        "performance_thresholds.process_cpu_percent",
        "performance_thresholds_raise_alerts",
    ),
    (
        "performance_thresholds.memory_percent",
        "performance_thresholds_raise_alerts",
    ),
    (
        "performance_thresholds.event_loop_p99",
        "event_loop_p99_threshold_raises_an_alert",
    ),
    ("metrics_retention", "metrics_retention_forgets_old_samples"),
    (
        "metrics_resolution",
        "metrics_resolution_sets_the_bucket_width",
    ),
    (
        "metrics_max_series",
        "metrics_max_series_caps_the_collector",
    ),
    ("expose_details", "expose_details_shows_inner_errors"),
    ("services", "timeout_ends_slow_calls"),
    (
        "services.*.criticality",
        "criticality_decides_overall_health_and_priority",
    ),
    (
        "services.*.readiness",
        "readiness_lets_an_open_breaker_fail_readiness",
    ),
    ("services.*.timeout", "timeout_ends_slow_calls"),
    (
        "services.*.body_timeout",
        "body_timeout_bounds_the_wait_for_a_kept_body",
    ),
    (
        "services.*.upload_timeout",
        "upload_timeout_bounds_a_streamed_upload",
    ),
    (
        "services.*.stream_timeout",
        "stream_timeout_gives_a_streams_admission_back",
    ),
    ("services.*.breaker", "breaker_keys_change_when_it_opens"),
    (
        "services.*.breaker.enabled",
        "breaker_keys_change_when_it_opens",
    ),
    (
        "services.*.breaker.failure_rate_threshold",
        "breaker_keys_change_when_it_opens",
    ),
    (
        "services.*.breaker.slow_call_rate_threshold",
        "breaker_keys_change_when_it_opens",
    ),
    (
        "services.*.breaker.slow_call_duration",
        "breaker_keys_change_when_it_opens",
    ),
    (
        "services.*.breaker.sliding_window",
        "breaker_keys_change_when_it_opens",
    ),
    (
        "services.*.breaker.sliding_window=count",
        "sliding_window_count_bounds_the_calls_kept",
    ),
    (
        "services.*.breaker.sliding_window=time",
        "breaker_keys_change_when_it_opens",
    ),
    (
        "services.*.breaker.minimum_calls",
        "breaker_keys_change_when_it_opens",
    ),
    (
        "services.*.breaker.wait_in_open",
        "wait_in_open_sets_when_probes_start",
    ),
    (
        "services.*.breaker.max_wait_in_open",
        "max_wait_in_open_caps_the_doubled_wait",
    ),
    (
        "services.*.breaker.half_open_permits",
        "half_open_permits_bounds_the_probes",
    ),
    (
        "services.*.breaker.probe_timeout",
        "probe_timeout_fails_a_late_probe",
    ),
    ("services.*.retry", "retry_keys_change_the_attempts"),
    ("services.*.retry.enabled", "retry_keys_change_the_attempts"),
    (
        "services.*.retry.max_attempts",
        "retry_keys_change_the_attempts",
    ),
    (
        "services.*.retry.initial_backoff",
        "retry_backoffs_change_the_waits",
    ),
    (
        "services.*.retry.max_backoff",
        "retry_backoffs_change_the_waits",
    ),
    ("services.*.retry.jitter", "jitter_spreads_the_waits"),
    ("services.*.retry.jitter=none", "jitter_spreads_the_waits"),
    ("services.*.retry.jitter=full", "jitter_spreads_the_waits"),
    ("services.*.retry.jitter=equal", "jitter_spreads_the_waits"),
    (
        "services.*.retry.budget_ratio",
        "retry_budget_keys_change_the_retries_allowed",
    ),
    (
        "services.*.retry.budget_min_per_second",
        "retry_budget_keys_change_the_retries_allowed",
    ),
    (
        "services.*.retry.budget_ttl",
        "retry_budget_keys_change_the_retries_allowed",
    ),
    (
        "services.*.retry.trust_idempotency_key",
        "trust_idempotency_key_makes_keyed_posts_retryable",
    ),
    ("services.*.limit", "limit_keys_change_admission"),
    ("services.*.limit.enabled", "limit_keys_change_admission"),
    (
        "services.*.limit.max_concurrency",
        "limit_keys_change_admission",
    ),
    ("services.*.limit.max_queue", "limit_keys_change_admission"),
    (
        "services.*.limit.queue_timeout",
        "queue_timeout_ends_the_wait",
    ),
    ("services.*.fault", "fault_keys_change_what_is_injected"),
    (
        "services.*.fault.enabled",
        "fault_keys_change_what_is_injected",
    ),
    (
        "services.*.fault.error_rate",
        "fault_keys_change_what_is_injected",
    ),
    (
        "services.*.fault.hang_rate",
        "fault_keys_change_what_is_injected",
    ),
    (
        "services.*.fault.latency_rate",
        "fault_keys_change_what_is_injected",
    ),
    (
        "services.*.fault.latency",
        "fault_keys_change_what_is_injected",
    ),
    (
        "services.*.fault.status_rate",
        "fault_status_keys_change_the_answer",
    ),
    (
        "services.*.fault.status",
        "fault_status_keys_change_the_answer",
    ),
    (
        "services.*.classify",
        "classify_keys_change_what_counts_as_a_failure",
    ),
    (
        "services.*.classify.http_failures",
        "classify_keys_change_what_counts_as_a_failure",
    ),
    (
        "services.*.classify.http_ignored",
        "classify_keys_change_what_counts_as_a_failure",
    ),
    (
        "services.*.classify.grpc_failures",
        "classify_keys_change_what_counts_as_a_failure",
    ),
    (
        "services.*.classify.grpc_ignored",
        "classify_keys_change_what_counts_as_a_failure",
    ),
    ("upstreams", "upstream_endpoints_are_the_ones_called"),
    (
        "upstreams.*.endpoints",
        "upstream_endpoints_are_the_ones_called",
    ),
    (
        "upstreams.*.timeout",
        "upstream_timeout_bounds_each_attempt",
    ),
    (
        "upstreams.*.outlier",
        "upstream_outlier_keys_change_ejection",
    ),
    (
        "upstreams.*.outlier.enabled",
        "upstream_outlier_keys_change_ejection",
    ),
    (
        "upstreams.*.outlier.consecutive_failures",
        "upstream_outlier_keys_change_ejection",
    ),
    (
        "upstreams.*.outlier.failure_rate",
        "upstream_outlier_keys_change_ejection",
    ),
    (
        "upstreams.*.outlier.failure_rate_minimum_calls",
        "upstream_outlier_keys_change_ejection",
    ),
    (
        "upstreams.*.outlier.base_ejection_time",
        "upstream_outlier_keys_change_ejection",
    ),
    (
        "upstreams.*.outlier.max_ejection_percent",
        "upstream_max_ejection_percent_caps_the_ejected",
    ),
    (
        "upstreams.*.retry",
        "upstream_retry_keys_change_the_attempts",
    ),
    (
        "upstreams.*.retry.enabled",
        "upstream_retry_keys_change_the_attempts",
    ),
    (
        "upstreams.*.retry.max_attempts",
        "upstream_retry_keys_change_the_attempts",
    ),
    (
        "upstreams.*.retry.budget_ratio",
        "upstream_retry_keys_change_the_attempts",
    ),
    (
        "upstreams.*.retry.budget_min_per_second",
        "upstream_retry_keys_change_the_attempts",
    ),
    ("upstreams.*.hedge", "upstream_hedge_keys_change_hedging"),
    (
        "upstreams.*.hedge.enabled",
        "upstream_hedge_keys_change_hedging",
    ),
    (
        "upstreams.*.hedge.delay",
        "upstream_hedge_keys_change_hedging",
    ),
    (
        "upstreams.*.hedge.max_hedges",
        "upstream_hedge_keys_change_hedging",
    ),
    (
        "services.*.rate_limit",
        "rate_limit_keys_change_what_is_refused",
    ),
    (
        "services.*.rate_limit.enabled",
        "rate_limit_keys_change_what_is_refused",
    ),
    (
        "services.*.rate_limit.rate",
        "rate_limit_keys_change_what_is_refused",
    ),
    (
        "services.*.rate_limit.burst",
        "rate_limit_keys_change_what_is_refused",
    ),
    (
        "services.*.rate_limit.key",
        "rate_limit_key_keys_change_who_shares_a_quota",
    ),
    (
        "services.*.rate_limit.max_keys",
        "rate_limit_key_keys_change_who_shares_a_quota",
    ),
    (
        "services.*.rate_limit.trusted_proxies",
        "rate_limit_key_keys_change_who_shares_a_quota",
    ),
    (
        "services.*.rate_limit.priorities",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.low",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.low.rate",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.low.burst",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.normal",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.normal.rate",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.normal.burst",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.high",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.high.rate",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.high.burst",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.critical",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.critical.rate",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.rate_limit.priorities.critical.burst",
        "rate_limit_priorities_have_quotas_of_their_own",
    ),
    (
        "services.*.fallback",
        "fallback_keys_choose_the_cases_it_answers",
    ),
    (
        "services.*.fallback.enabled",
        "fallback_keys_choose_the_cases_it_answers",
    ),
    (
        "services.*.fallback.on",
        "fallback_keys_choose_the_cases_it_answers",
    ),
];

/// The seed's camelCase spellings and the keys they stand for, with a
/// value other than the default: [`camel_case_aliases_set_their_keys`]
/// shows each sets its key (whose own test shows what it does).
const ALIASES: &[(&str, &str, &str)] = &[
    (
        "enableHealthMonitoring",
        "enable_health_monitoring",
        "false",
    ),
    (
        "enablePerformanceMonitoring",
        "enable_performance_monitoring",
        "false",
    ),
    ("enableErrorRecovery", "enable_error_recovery", "false"),
    (
        "enableResourceManagement",
        "enable_resource_management",
        "false",
    ),
    ("healthCheckIntervalMs", "health_check_interval", "1500"),
    ("healthCheckInterval", "health_check_interval", "\"2s\""),
    (
        "performanceCheckIntervalMs",
        "performance_check_interval",
        "1500",
    ),
    (
        "performanceCheckInterval",
        "performance_check_interval",
        "\"2s\"",
    ),
    ("maxResourceMemory", "max_resource_memory", "\"1GB\""),
    ("recoverableServices", "recoverable_services", "[\"a\"]"),
    ("maxRecoveryAttempts", "max_recovery_attempts", "5"),
    ("recoveryBackoff", "recovery_backoff", "\"2s\""),
    ("maxRecoveryBackoff", "max_recovery_backoff", "\"2m\""),
    ("healthCheckTimeout", "health_check_timeout", "\"2s\""),
    (
        "unhealthyAfterFailedChecks",
        "unhealthy_after_failed_checks",
        "5",
    ),
    ("memoryWarning", "memory_warning", "0.7"),
    ("memoryCritical", "memory_critical", "0.9"),
    (
        "performanceThresholds",
        "performance_thresholds",
        "{\"memory_percent\": 50}",
    ),
    (
        "performance_thresholds.processCpuPercent",
        "performance_thresholds.process_cpu_percent",
        "50",
    ),
    (
        "performance_thresholds.memoryPercent",
        "performance_thresholds.memory_percent",
        "50",
    ),
    (
        "performance_thresholds.eventLoopP99",
        "performance_thresholds.event_loop_p99",
        "\"1s\"",
    ),
    ("metricsRetention", "metrics_retention", "\"2h\""),
    ("metricsResolution", "metrics_resolution", "\"20s\""),
    ("metricsMaxSeries", "metrics_max_series", "5000"),
    ("exposeDetails", "expose_details", "true"),
];

/// The keys serde accepts at `path` (`*` for a service name), read from
/// the error it gives for an unknown key there: serde's derive lists
/// every field and alias of the struct (every variant of an enum) in
/// that message, so a field added to any section appears here without
/// anyone listing it.
fn serde_keys(path: &str) -> Vec<String> {
    // The JSON that puts an unknown key (an unknown variant for `=`) at
    // `path`.
    let (path, variants) = match path.split_once('=') {
        Some((path, _)) => (path, true),
        None => (path, false),
    };
    let mut json = if variants {
        "\"no_such_variant\"".to_owned()
    } else {
        "{\"no_such_key\": 1}".to_owned()
    };
    if variants && path.ends_with("sliding_window") {
        json = "{\"no_such_variant\": 1}".to_owned();
    }
    for part in path.split('.').filter(|p| !p.is_empty()).rev() {
        let part = if part == "*" { "a" } else { part };
        json = format!("{{\"{part}\": {json}}}");
    }
    let err = SystemHardeningConfig::from_json_str(&json).expect_err(&json);
    let message = err.to_string();
    let expected = message
        .rsplit("expected")
        .next()
        .unwrap_or_default()
        .to_owned();
    let keys: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!keys.is_empty(), "no keys listed for {json}: {message}");
    keys
}

/// Fails when a key is added to any section without a test.
///
/// The keys come from serde itself (see [`serde_keys`]): for each struct
/// of the configuration and each enum, the unknown-key error lists what
/// the derive accepts. Every snake-case key listed must be in [`KEYS`],
/// every camelCase one in [`ALIASES`], and every key in those tables must
/// still be accepted; every test [`KEYS`] names must be a function of this
/// file. A new field in `SystemHardeningConfig`, `PerformanceThresholds`,
/// `ServiceConfig` or a section, or a new variant of `WindowConfig` or
/// `JitterConfig`, fails here until its row (and its test) is written. A
/// new section (a struct-valued field) also needs its row in `SECTIONS`
/// below: the test fails on its struct-valued key until then, because
/// the key is missing from `KEYS`.
#[test]
fn every_key_serde_accepts_has_a_test() {
    const SECTIONS: &[&str] = &[
        "",
        "performance_thresholds",
        "services.*",
        "services.*.breaker",
        "services.*.retry",
        "services.*.limit",
        "services.*.fault",
        "services.*.classify",
        "services.*.rate_limit",
        "services.*.rate_limit.priorities",
        "services.*.rate_limit.priorities.low",
        "services.*.rate_limit.priorities.normal",
        "services.*.rate_limit.priorities.high",
        "services.*.rate_limit.priorities.critical",
        "services.*.fallback",
        "services.*.breaker.sliding_window=",
        "services.*.retry.jitter=",
        "upstreams.*",
        "upstreams.*.outlier",
        "upstreams.*.retry",
        "upstreams.*.hedge",
    ];
    let source = include_str!("config_keys.rs");
    let mut accepted = Vec::new();
    let mut aliases = Vec::new();
    for section in SECTIONS {
        for key in serde_keys(section) {
            let full = match (section.is_empty(), section.ends_with('=')) {
                (true, _) => key.clone(),
                (false, true) => format!("{section}{key}"),
                (false, false) => format!("{section}.{key}"),
            };
            if key.chars().any(|c| c.is_ascii_uppercase()) {
                aliases.push(full);
            } else {
                accepted.push(full);
            }
        }
    }
    for key in &accepted {
        assert!(
            KEYS.iter().any(|(k, _)| k == key),
            "`{key}` has no test: add a test that shows it changes behaviour and its row in KEYS"
        );
    }
    for (key, test) in KEYS {
        assert!(
            accepted.contains(&(*key).to_owned()),
            "`{key}` is in KEYS but serde no longer accepts it"
        );
        assert!(
            source.contains(&format!("fn {test}(")),
            "`{key}`'s test `{test}` is not in this file"
        );
    }
    for alias in &aliases {
        assert!(
            ALIASES.iter().any(|(a, _, _)| a == alias),
            "`{alias}` is accepted but missing from ALIASES"
        );
    }
    for (alias, key, _) in ALIASES {
        assert!(
            aliases.contains(&(*alias).to_owned()),
            "`{alias}` not accepted"
        );
        assert!(
            KEYS.iter().any(|(k, _)| k == key),
            "`{alias}` names `{key}`"
        );
    }
}

#[test]
fn camel_case_aliases_set_their_keys() {
    fn json(path: &str, value: &str) -> String {
        match path.split_once('.') {
            Some((outer, inner)) => format!(r#"{{"{outer}": {{"{inner}": {value}}}}}"#),
            None => format!(r#"{{"{path}": {value}}}"#),
        }
    }
    for (alias, key, value) in ALIASES {
        let by_alias = SystemHardeningConfig::from_json_str(&json(alias, value))
            .unwrap_or_else(|err| panic!("{alias} = {value}: {err}"));
        let by_key = SystemHardeningConfig::from_json_str(&json(key, value))
            .unwrap_or_else(|err| panic!("{key} = {value}: {err}"));
        assert_eq!(by_alias, by_key, "{alias} sets {key}");
        assert_ne!(
            by_alias,
            SystemHardeningConfig::default(),
            "{alias} = {value}"
        );
    }
}

// ---------------------------------------------------------------------
// Helpers.

fn parsed(toml: &str) -> SystemHardeningConfig {
    SystemHardeningConfig::from_toml_str(toml)
        .unwrap_or_else(|err| panic!("a valid test configuration: {err}\n{toml}"))
}

/// Memory readings: `rss` of a machine of `total` bytes.
fn readings(rss: u64, total: u64) -> ManualReadings {
    let readings = ManualReadings::default();
    readings.set_memory(MemoryReading {
        process_rss: rss,
        system_total: total,
        system_used: total / 4,
        ..Default::default()
    });
    readings
}

fn quiet() -> ManualReadings {
    readings(100 << 20, 8 << 30)
}

fn hardening(toml: &str) -> SystemHardening {
    SystemHardening::builder(parsed(toml))
        .readings(quiet())
        .build()
        .unwrap()
}

/// A registered service whose health check and rebuilds do what the test
/// says; counts its `initialize` calls.
#[derive(Clone, Default)]
struct Backend {
    check_fails: Arc<AtomicBool>,
    check_takes: Duration,
    rebuild_fails: bool,
    inits: Arc<AtomicU32>,
}

impl ManagedService for Backend {
    fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let n = self.inits.fetch_add(1, Ordering::SeqCst);
            if n > 0 && self.rebuild_fails {
                Err("rebuild failed".into())
            } else {
                Ok(())
            }
        })
    }

    fn health_check(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            tokio::time::sleep(self.check_takes).await;
            if self.check_fails.load(Ordering::SeqCst) {
                Err("secret-backend-text: connection refused".into())
            } else {
                Ok(())
            }
        })
    }
}

fn failing_backend() -> Backend {
    let backend = Backend::default();
    backend.check_fails.store(true, Ordering::SeqCst);
    backend
}

/// Starts `toml` with `backend` registered as `db`, runs the paused clock
/// for `run`, and returns the handle.
async fn started_with(toml: &str, backend: &Backend, run: Duration) -> HardeningHandle {
    let handle = SystemHardening::builder(parsed(toml))
        .readings(quiet())
        .service("db", backend.clone())
        .build()
        .unwrap()
        .start();
    tokio::time::sleep(run).await;
    handle
}

/// What a call asks of the inner service.
#[derive(Debug, Clone, Copy)]
enum Call {
    Succeed,
    Fail,
    /// Succeeds after this long.
    Slow(Duration),
}

/// The inner service: does what each call asks, counting the calls.
#[derive(Clone, Default)]
struct Inner {
    calls: Arc<AtomicU32>,
}

impl Inner {
    fn stack(
        &self,
        layer: &ServiceLayer,
    ) -> impl Service<Call, Response = (), Error = BoxError, Future: Send> + Clone + Send + use<>
    {
        let calls = self.calls.clone();
        ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(move |call: Call| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    match call {
                        Call::Succeed => Ok(()),
                        Call::Fail => Err(std::io::Error::other("backend failed")),
                        Call::Slow(duration) => {
                            tokio::time::sleep(duration).await;
                            Ok(())
                        }
                    }
                }
            }))
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Sends `calls` one after the other through `name`'s stack; returns
/// the inner service's call count and the results.
async fn run_calls(
    hardening: &SystemHardening,
    name: &str,
    calls: &[Call],
) -> (u32, Vec<Result<(), BoxError>>) {
    let inner = Inner::default();
    let svc = inner.stack(&hardening.layer(name).unwrap());
    let mut results = Vec::new();
    for call in calls {
        results.push(svc.clone().oneshot(*call).await);
    }
    (inner.calls(), results)
}

fn repeat(call: Call, n: usize) -> Vec<Call> {
    vec![call; n]
}

fn rejection(result: &Result<(), BoxError>) -> Option<RejectionKind> {
    result
        .as_ref()
        .err()
        .and_then(|err| rejection_of(&**err))
        .map(|r| r.kind)
}

// ---------------------------------------------------------------------
// System keys: monitoring and recovery.

#[tokio::test(start_paused = true)]
async fn enable_health_monitoring_runs_the_checks() {
    let base = "health_check_interval = \"1s\"\n";
    for (toml, checked) in [
        (base.to_owned(), true),
        (format!("{base}enable_health_monitoring = false"), false),
    ] {
        let handle = started_with(&toml, &failing_backend(), Duration::from_millis(3500)).await;
        let db = handle.service_health("db").unwrap();
        assert_eq!(db.last_check.is_some(), checked, "{toml}");
        assert_eq!(db.failed_checks > 0, checked, "{toml}");
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn health_check_interval_sets_when_checks_run() {
    for (toml, checks) in [("", 0), ("health_check_interval = \"1s\"", 2)] {
        let handle = started_with(toml, &failing_backend(), Duration::from_millis(2500)).await;
        assert_eq!(
            handle.service_health("db").unwrap().failed_checks,
            checks,
            "{toml:?}"
        );
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn unhealthy_after_failed_checks_counts_failures() {
    let base = "health_check_interval = \"1s\"\n";
    for (toml, status) in [
        (base.to_owned(), HealthState::Degraded),
        (
            format!("{base}unhealthy_after_failed_checks = 1"),
            HealthState::Unhealthy,
        ),
    ] {
        let handle = started_with(&toml, &failing_backend(), Duration::from_millis(1500)).await;
        assert_eq!(
            handle.service_health("db").unwrap().status,
            status,
            "{toml}"
        );
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn health_check_timeout_fails_slow_checks() {
    let backend = Backend {
        check_takes: Duration::from_secs(2),
        ..Backend::default()
    };
    let base = "health_check_interval = \"1s\"\n";
    for (toml, failed) in [
        (base.to_owned(), false),
        (format!("{base}health_check_timeout = \"1s\""), true),
    ] {
        let handle = started_with(&toml, &backend, Duration::from_millis(3500)).await;
        let db = handle.service_health("db").unwrap();
        assert!(db.last_check.is_some(), "{toml}");
        assert_eq!(db.failed_checks > 0, failed, "{toml}");
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn expose_details_shows_inner_errors() {
    let base = "health_check_interval = \"1s\"\n";
    for (toml, shown) in [
        (base.to_owned(), false),
        (format!("{base}expose_details = true"), true),
    ] {
        let handle = started_with(&toml, &failing_backend(), Duration::from_millis(1500)).await;
        let response = handle
            .endpoints()
            .oneshot(
                http::Request::get("/health")
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("\"db\""), "{body}");
        assert_eq!(
            body.contains("secret-backend-text"),
            shown,
            "{toml}: {body}"
        );
        // Hidden, the reason says what the operator can do (nothing is
        // logged without a tracing subscriber).
        assert!(!body.contains("see server logs"), "{body}");
        assert_eq!(
            body.contains("set `expose_details = true`"),
            !shown,
            "{toml}: {body}"
        );
        handle.shutdown().await;
    }
}

/// Starts a recoverable (when `recoverable`) `db` whose checks fail from
/// the start and whose rebuilds fail when `rebuild_fails`; returns its
/// `initialize` calls after `run`.
async fn inits_after(toml: &str, recoverable: bool, rebuild_fails: bool, run: Duration) -> u32 {
    let backend = Backend {
        rebuild_fails,
        ..failing_backend()
    };
    let toml = format!(
        "health_check_interval = \"1s\"\nunhealthy_after_failed_checks = 1\n{}{toml}",
        if recoverable {
            "recoverable_services = [\"db\"]\n"
        } else {
            ""
        }
    );
    let handle = started_with(&toml, &backend, run).await;
    handle.shutdown().await;
    backend.inits.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn enable_error_recovery_rebuilds_services() {
    let run = Duration::from_millis(1500);
    assert_eq!(inits_after("", true, false, run).await, 2, "rebuilt once");
    assert_eq!(
        inits_after("enable_error_recovery = false", true, false, run).await,
        1,
        "never rebuilt"
    );
}

#[tokio::test(start_paused = true)]
async fn recoverable_services_are_the_ones_rebuilt() {
    let run = Duration::from_millis(1500);
    assert_eq!(inits_after("", true, false, run).await, 2);
    assert_eq!(inits_after("", false, false, run).await, 1);
}

#[tokio::test(start_paused = true)]
async fn max_recovery_attempts_bounds_the_rebuilds() {
    // Every rebuild fails: start-up plus one `initialize` per attempt.
    let run = Duration::from_secs(60);
    assert_eq!(inits_after("", true, true, run).await, 1 + 3);
    assert_eq!(
        inits_after("max_recovery_attempts = 1", true, true, run).await,
        1 + 1
    );
}

#[tokio::test(start_paused = true)]
async fn recovery_backoff_spaces_the_rebuilds() {
    // The first check fails at 1 s; attempts at 1 s, 2 s, 4 s by default.
    let run = Duration::from_secs(6);
    assert_eq!(inits_after("", true, true, run).await, 1 + 3);
    assert_eq!(
        inits_after(
            "recovery_backoff = \"10s\"\nmax_recovery_backoff = \"10s\"",
            true,
            true,
            run
        )
        .await,
        1 + 1
    );
}

#[tokio::test(start_paused = true)]
async fn max_recovery_backoff_caps_the_spacing() {
    // Attempts at 1, 2, 4, 8, ... s by default; every second when capped.
    let run = Duration::from_millis(6500);
    let base = "max_recovery_attempts = 6\n";
    assert_eq!(inits_after(base, true, true, run).await, 1 + 3);
    let capped = inits_after(
        &format!("{base}max_recovery_backoff = \"1s\""),
        true,
        true,
        run,
    )
    .await;
    assert_eq!(
        capped,
        1 + 6,
        "capped at 1 s: attempts at 1, 2, 3, 4, 5, 6 s"
    );
}

// ---------------------------------------------------------------------
// System keys: memory and performance.

/// Starts `toml` on memory readings of `rss` of 1000 bytes and lets the
/// first reading happen.
async fn started_on_memory(toml: &str, rss: u64) -> HardeningHandle {
    let handle = SystemHardening::builder(parsed(toml))
        .readings(readings(rss, 1000))
        .build()
        .unwrap()
        .start();
    tokio::time::sleep(Duration::from_millis(10)).await;
    handle
}

#[tokio::test(start_paused = true)]
async fn memory_warning_degrades() {
    for (toml, status) in [
        ("", HealthState::Healthy),
        ("memory_warning = 0.6", HealthState::Degraded),
    ] {
        let handle = started_on_memory(toml, 700).await;
        assert_eq!(handle.health().status, status, "{toml:?}");
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn memory_critical_makes_unhealthy() {
    for (toml, status) in [
        ("", HealthState::Degraded),
        ("memory_critical = 0.85", HealthState::Unhealthy),
    ] {
        let handle = started_on_memory(toml, 900).await;
        assert_eq!(handle.health().status, status, "{toml:?}");
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn max_resource_memory_is_the_memory_limit() {
    for (toml, limit) in [
        ("", 8u64 << 30),
        ("max_resource_memory = \"1MB\"", 1_000_000),
    ] {
        let handle = SystemHardening::builder(parsed(toml))
            .readings(quiet())
            .build()
            .unwrap()
            .start();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(handle.health().memory.limit, limit, "{toml:?}");
        if toml.is_empty() {
            // The memory pool is the machine's (sysinfo's), not the readings'.
            assert_ne!(
                handle.resource_stats().pools["memory"].stats.capacity,
                1_000_000
            );
        } else {
            assert_eq!(
                handle.resource_stats().pools["memory"].stats.capacity,
                limit
            );
        }
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn enable_resource_management_makes_the_memory_pool_and_admission() {
    let base = "[services.api.limit]\nmax_concurrency = 1\nmax_queue = 0\n";
    for (toml, managed) in [
        (base.to_owned(), true),
        (format!("enable_resource_management = false\n{base}"), false),
    ] {
        let hardening = hardening(&toml);
        assert_eq!(
            hardening
                .handle()
                .resource_stats()
                .pools
                .contains_key("memory"),
            managed,
            "{toml}"
        );
        let refused = refused_of_concurrent(&hardening, "api", 3).await;
        assert_eq!(refused, if managed { 2 } else { 0 }, "{toml}");
    }
}

#[tokio::test(start_paused = true)]
async fn enable_performance_monitoring_measures() {
    for (toml, measured) in [("", true), ("enable_performance_monitoring = false", false)] {
        let handle = started_on_memory(toml, 100).await;
        assert_eq!(handle.performance().is_some(), measured, "{toml:?}");
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn performance_check_interval_sets_how_often_performance_is_measured() {
    // The event-loop probe wakes every 50 ms; each reading covers the
    // probes since the one before: 5 s of them, or 1 s.
    for (toml, probes) in [
        ("", 99..=101),
        ("performance_check_interval = \"1s\"", 19..=21),
    ] {
        let handle = started_on_memory(toml, 100).await;
        tokio::time::sleep(Duration::from_millis(5500)).await;
        let samples = handle.performance().expect("measured").event_loop.samples;
        assert!(probes.contains(&samples), "{toml:?}: {samples}");
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn performance_thresholds_raise_alerts() {
    // 50% CPU and 75% of the memory limit: under the defaults (90, 85).
    let cases = [
        ("", None),
        (
            "performance_thresholds = { process_cpu_percent = 40 }",
            Some("process_cpu_percent"),
        ),
        (
            "performance_thresholds = { memory_percent = 70 }",
            Some("memory_percent"),
        ),
    ];
    for (toml, alert) in cases {
        let handle = SystemHardening::builder(parsed(toml))
            .readings({
                let readings = readings(750, 1000);
                readings.set_cpu(CpuReading {
                    process: 50.0,
                    system: 10.0,
                });
                readings
            })
            .build()
            .unwrap()
            .start();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let alerts = handle.performance().expect("measured").alerts.clone();
        match alert {
            None => {
                assert!(alerts.is_empty(), "{toml:?}: {alerts:?}");
                assert_eq!(handle.health().status, HealthState::Healthy);
            }
            Some(metric) => {
                assert_eq!(alerts.len(), 1, "{toml:?}: {alerts:?}");
                assert!(alerts[0].starts_with(metric), "{toml:?}: {alerts:?}");
                assert_eq!(handle.health().status, HealthState::Degraded);
            }
        }
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn event_loop_p99_threshold_raises_an_alert() {
    let base = "performance_check_interval = \"1s\"\n";
    for (toml, alerted) in [
        (base.to_owned(), true),
        (
            format!("{base}performance_thresholds = {{ event_loop_p99 = \"1s\" }}"),
            false,
        ),
    ] {
        let hardening = SystemHardening::builder(parsed(&toml))
            .readings(quiet())
            .build()
            .unwrap();
        let mut events = hardening.handle().subscribe();
        let handle = hardening.start();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The clock jumps 600 ms at once: the probe's timer fires that
        // late, as if a worker had been blocked.
        tokio::time::advance(Duration::from_millis(600)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut seen = false;
        while let Ok(event) = events.try_recv() {
            if let EventKind::PerformanceAlert {
                metric: "event_loop_p99_seconds",
                active: true,
                ..
            } = event.kind()
            {
                seen = true;
            }
        }
        assert_eq!(seen, alerted, "{toml}");
        handle.shutdown().await;
    }
}

/// Sends one call through `api` at the start, then lets `run` pass;
/// returns the handle.
async fn one_call_then(toml: &str, run: Duration) -> HardeningHandle {
    let hardening = hardening(toml);
    run_calls(&hardening, "api", &[Call::Succeed]).await;
    let handle = hardening.start();
    tokio::time::sleep(run).await;
    handle
}

#[tokio::test(start_paused = true)]
async fn metrics_retention_forgets_old_samples() {
    for (toml, kept) in [
        ("[services.api]", 1),
        ("metrics_retention = \"1m\"\n[services.api]", 0),
    ] {
        let handle = one_call_then(toml, Duration::from_secs(120)).await;
        let requests = handle
            .metrics()
            .query(names::REQUESTS_TOTAL)
            .label(names::LABEL_SERVICE, "api")
            .count();
        assert_eq!(requests, kept, "{toml}");
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_resolution_sets_the_bucket_width() {
    // A 5 s window holds whole buckets: the 10 s one the call is in, or
    // five 1 s ones after it.
    for (toml, seen) in [
        ("[services.api]", 1),
        ("metrics_resolution = \"1s\"\n[services.api]", 0),
    ] {
        let handle = one_call_then(toml, Duration::from_secs(8)).await;
        let requests = handle
            .metrics()
            .query(names::REQUESTS_TOTAL)
            .label(names::LABEL_SERVICE, "api")
            .window(Duration::from_secs(5))
            .count();
        assert_eq!(requests, seen, "{toml}");
        handle.shutdown().await;
    }
}

// ---------------------------------------------------------------------
// Service keys.

#[tokio::test(start_paused = true)]
async fn readiness_lets_an_open_breaker_fail_readiness() {
    // A critical service's open circuit makes health unhealthy; readiness
    // fails only when the service opted in.
    for (toml, ready) in [
        ("[services.api]\ncriticality = \"critical\"", true),
        (
            "[services.api]\ncriticality = \"critical\"\nreadiness = true",
            false,
        ),
    ] {
        let hardening = hardening(toml);
        hardening.layer("api").unwrap();
        let handle = hardening.start();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(handle.ready(), "{toml}: {:?}", handle.readiness());
        handle.force_open("api").unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(handle.health().status, HealthState::Unhealthy, "{toml}");
        assert_eq!(handle.ready(), ready, "{toml}: {:?}", handle.readiness());
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn criticality_decides_overall_health_and_priority() {
    // A critical service's open circuit makes the process unhealthy.
    for (toml, overall) in [
        ("[services.api]", HealthState::Degraded),
        (
            "[services.api]\ncriticality = \"critical\"",
            HealthState::Unhealthy,
        ),
    ] {
        let hardening = hardening(toml);
        hardening.layer("api").unwrap();
        let handle = hardening.start();
        handle.force_open("api").unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(handle.health().status, overall, "{toml}");
        handle.shutdown().await;
    }
    // Under memory pressure (LOW shed), a low-criticality service's calls
    // are refused.
    for (toml, refused) in [
        ("[services.api]", None),
        (
            "[services.api]\ncriticality = \"low\"",
            Some(RejectionKind::Overloaded),
        ),
    ] {
        let hardening = SystemHardening::builder(parsed(toml))
            .readings(readings(850, 1000))
            .build()
            .unwrap();
        let layer = hardening.layer("api").unwrap();
        let handle = hardening.start();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(handle.health().shedding_below.is_some());
        let result = Inner::default().stack(&layer).oneshot(Call::Succeed).await;
        assert_eq!(rejection(&result), refused, "{toml}");
        handle.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn timeout_ends_slow_calls() {
    for (toml, ends) in [
        ("[services.api]", false),
        ("[services.api]\ntimeout = \"1s\"", true),
    ] {
        let hardening = hardening(toml);
        let started = Instant::now();
        let (_, results) =
            run_calls(&hardening, "api", &[Call::Slow(Duration::from_secs(2))]).await;
        assert_eq!(results[0].is_err(), ends, "{toml:?}");
        let took = started.elapsed();
        let expected = Duration::from_secs(if ends { 1 } else { 2 });
        assert_eq!(took, expected, "{toml:?}");
    }
}

/// Runs `calls` through `api` configured by `toml` and returns the
/// breaker's state after them.
async fn state_after(toml: &str, calls: &[Call]) -> CircuitState {
    let hardening = hardening(&format!("[services.api.breaker]\n{toml}"));
    run_calls(&hardening, "api", calls).await;
    hardening.layer("api").unwrap().breaker().state()
}

#[tokio::test(start_paused = true)]
async fn breaker_keys_change_when_it_opens() {
    let slow = Call::Slow(Duration::from_secs(2));
    let thirty_percent: Vec<Call> = (0..20)
        .map(|i| if i >= 14 { Call::Fail } else { Call::Succeed })
        .collect();
    let sixty_percent_slow: Vec<Call> = (0..20)
        .map(|i| if i >= 8 { slow } else { Call::Succeed })
        .collect();
    let mut nine_then_one = repeat(Call::Fail, 9);
    nine_then_one.push(slow); // 2 s pass before the window's tenth call
    nine_then_one.push(Call::Fail);
    use CircuitState::{Closed, Disabled, Open};
    let cases: &[(&str, &str, Vec<Call>, CircuitState, CircuitState)] = &[
        // (key = written value, calls, state by default, state as written)
        (
            "enabled = false",
            "",
            repeat(Call::Fail, 30),
            Open,
            Disabled,
        ),
        (
            "failure_rate_threshold = 0.25",
            "",
            thirty_percent,
            Closed,
            Open,
        ),
        (
            "slow_call_rate_threshold = 0.5",
            "slow_call_duration = \"1s\"",
            sixty_percent_slow,
            Closed,
            Open,
        ),
        (
            "slow_call_duration = \"1s\"",
            "",
            repeat(slow, 20),
            Closed,
            Open,
        ),
        ("minimum_calls = 5", "", repeat(Call::Fail, 5), Closed, Open),
        (
            "sliding_window = { time = \"1s\" }",
            "minimum_calls = 10",
            nine_then_one,
            Open,
            Closed,
        ),
    ];
    for (written, base, calls, by_default, as_written) in cases {
        assert_eq!(
            state_after(base, calls).await,
            *by_default,
            "{base} (default)"
        );
        assert_eq!(
            state_after(&format!("{base}\n{written}"), calls).await,
            *as_written,
            "{base} {written}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn sliding_window_count_bounds_the_calls_kept() {
    for (toml, kept) in [("", 30), ("sliding_window = { count = 10 }", 10)] {
        let hardening = hardening(&format!(
            "[services.api.breaker]\nminimum_calls = 10\n{toml}"
        ));
        run_calls(&hardening, "api", &repeat(Call::Succeed, 30)).await;
        let snapshot = hardening.layer("api").unwrap().breaker().snapshot();
        assert_eq!(snapshot.calls, kept, "{toml:?}");
    }
}

/// `api`'s layer after five failures opened its breaker
/// (`minimum_calls = 5`, plus `toml`).
async fn opened(toml: &str) -> (SystemHardening, ServiceLayer) {
    let hardening = hardening(&format!(
        "[services.api.breaker]\nminimum_calls = 5\n{toml}"
    ));
    run_calls(&hardening, "api", &repeat(Call::Fail, 5)).await;
    let layer = hardening.layer("api").unwrap();
    assert_eq!(layer.breaker().state(), CircuitState::Open);
    (hardening, layer)
}

#[tokio::test(start_paused = true)]
async fn wait_in_open_sets_when_probes_start() {
    for (toml, probed) in [("", false), ("wait_in_open = \"5s\"", true)] {
        let (hardening, _layer) = opened(toml).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (calls, results) = run_calls(&hardening, "api", &[Call::Succeed]).await;
        assert_eq!(calls == 1, probed, "{toml:?}");
        if !probed {
            assert_eq!(rejection(&results[0]), Some(RejectionKind::CircuitOpen));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn max_wait_in_open_caps_the_doubled_wait() {
    let base = "wait_in_open = \"1s\"\nhalf_open_permits = 1\n";
    for (toml, longest) in [
        (base.to_owned(), Duration::from_secs(2)),
        (
            format!("{base}max_wait_in_open = \"1s\""),
            Duration::from_secs(1),
        ),
    ] {
        let (hardening, layer) = opened(&toml).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The probe fails: open again, for twice as long unless capped.
        run_calls(&hardening, "api", &[Call::Fail]).await;
        let snapshot = layer.breaker().snapshot();
        assert_eq!(snapshot.state, CircuitState::Open, "{toml}");
        let wait = snapshot.until_probe.expect("open");
        assert!(
            wait <= longest && wait > longest - Duration::from_millis(100),
            "{toml}: {wait:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_permits_bounds_the_probes() {
    for (toml, probes) in [("", 5), ("half_open_permits = 2", 2)] {
        let (_hardening, layer) = opened(&format!("wait_in_open = \"1s\"\n{toml}")).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let inner = Inner::default();
        let svc = inner.stack(&layer);
        let calls: Vec<_> = (0..8)
            .map(|_| tokio::spawn(svc.clone().oneshot(Call::Slow(Duration::from_secs(1)))))
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(inner.calls(), probes, "{toml:?}");
        assert_eq!(layer.breaker().snapshot().probes_in_flight, probes);
        for call in calls {
            let _ = call.await;
        }
    }
}

/// Calls `api` `calls` times at once, each holding its admission until
/// all have started; returns how many were refused as overloaded.
async fn refused_of_concurrent(hardening: &SystemHardening, name: &str, calls: usize) -> usize {
    let inner = Inner::default();
    let svc = inner.stack(&hardening.layer(name).unwrap());
    let calls: Vec<_> = (0..calls)
        .map(|_| tokio::spawn(svc.clone().oneshot(Call::Slow(Duration::from_millis(10)))))
        .collect();
    let mut refused = 0;
    for call in calls {
        let result = call.await.expect("no panic");
        if let Some(kind) = rejection(&result) {
            assert_eq!(kind, RejectionKind::Overloaded);
            refused += 1;
        }
    }
    refused
}

#[tokio::test(start_paused = true)]
async fn limit_keys_change_admission() {
    let cases = [
        // (toml, refused of three at once)
        ("[services.api]", 0),
        ("[services.api.limit]\nmax_queue = 0", 0),
        (
            "[services.api.limit]\nmax_queue = 0\nmax_concurrency = 2",
            1,
        ),
        ("[services.api.limit]\nmax_concurrency = 1", 0),
        (
            "[services.api.limit]\nmax_concurrency = 1\nmax_queue = 1",
            1,
        ),
        (
            "[services.api.limit]\nmax_concurrency = 1\nmax_queue = 0",
            2,
        ),
        (
            "[services.api.limit]\nmax_concurrency = 1\nmax_queue = 0\nenabled = false",
            0,
        ),
    ];
    for (toml, refused) in cases {
        let hardening = hardening(toml);
        assert_eq!(
            refused_of_concurrent(&hardening, "api", 3).await,
            refused,
            "{toml:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_ends_the_wait() {
    let base = "[services.api.limit]\nmax_concurrency = 1\n";
    for (toml, timed_out) in [
        (base.to_owned(), false),
        (format!("{base}queue_timeout = \"1s\""), true),
    ] {
        let hardening = hardening(&toml);
        let svc = Inner::default().stack(&hardening.layer("api").unwrap());
        let first = tokio::spawn(svc.clone().oneshot(Call::Slow(Duration::from_secs(2))));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = svc.oneshot(Call::Succeed).await;
        assert_eq!(
            rejection(&second) == Some(RejectionKind::QueueTimeout),
            timed_out,
            "{toml}"
        );
        assert_eq!(second.is_ok(), !timed_out, "{toml}");
        first.await.unwrap().unwrap();
    }
}

/// The inner service's call count and the time taken for one failing
/// call through `api`'s stack.
async fn one_failing_call(toml: &str) -> (u32, Duration) {
    let hardening = hardening(toml);
    let started = Instant::now();
    let (calls, _) = run_calls(&hardening, "api", &[Call::Fail]).await;
    (calls, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn retry_keys_change_the_attempts() {
    for (toml, attempts) in [
        ("[services.api]", 1),
        ("[services.api.retry]", 3),
        ("[services.api.retry]\nenabled = false", 1),
        ("[services.api.retry]\nmax_attempts = 2", 2),
    ] {
        assert_eq!(one_failing_call(toml).await.0, attempts, "{toml:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_backoffs_change_the_waits() {
    let base = "[services.api.retry]\njitter = \"none\"\nmax_attempts = 4\n";
    let ms = Duration::from_millis;
    for (toml, waited) in [
        // 50 + 100 + 200 ms
        (String::new(), ms(350)),
        // 100 + 200 + 400 ms
        ("initial_backoff = \"100ms\"".to_owned(), ms(700)),
        // 50 + 60 + 60 ms
        ("max_backoff = \"60ms\"".to_owned(), ms(170)),
    ] {
        let (calls, took) = one_failing_call(&format!("{base}{toml}")).await;
        assert_eq!(calls, 4);
        assert_eq!(took, waited, "{toml:?}");
    }
}

/// No breaker: every retry counts as a call to the breaker, which would
/// open and refuse the rest.
const UNBROKEN: &str = "[services.api.breaker]\nenabled = false\n";

#[tokio::test(start_paused = true)]
async fn jitter_spreads_the_waits() {
    // One retry after 100 ms of backoff, before jitter, 40 times.
    let waits = async |jitter: &str| {
        let hardening = hardening(&format!(
            "{UNBROKEN}[services.api.retry]\nmax_attempts = 2\ninitial_backoff = \"100ms\"\n{jitter}"
        ));
        let svc = Inner::default().stack(&hardening.layer("api").unwrap());
        let mut waits = Vec::new();
        for _ in 0..40 {
            let started = Instant::now();
            let _ = svc.clone().oneshot(Call::Fail).await;
            waits.push(started.elapsed());
        }
        waits
    };
    let backoff = Duration::from_millis(100);
    let half = backoff / 2;
    let none = waits("jitter = \"none\"").await;
    assert!(none.iter().all(|w| *w == backoff), "{none:?}");
    let equal = waits("jitter = \"equal\"").await;
    assert!(
        equal.iter().all(|w| *w >= half && *w <= backoff),
        "{equal:?}"
    );
    assert!(equal.iter().any(|w| *w != backoff), "{equal:?}");
    // Full jitter is the default: some waits below half the backoff (all
    // 40 above it has a chance of 2^-40).
    for full in [waits("").await, waits("jitter = \"full\"").await] {
        assert!(full.iter().all(|w| *w <= backoff), "{full:?}");
        assert!(full.iter().any(|w| *w < half), "{full:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_budget_keys_change_the_retries_allowed() {
    // 30 failing requests, one retry each if the budget allows.
    let retries = async |toml: &str| {
        let hardening = hardening(&format!(
            "{UNBROKEN}[services.api.retry]\nmax_attempts = 2\ninitial_backoff = \"1ms\"\n{toml}"
        ));
        run_calls(&hardening, "api", &repeat(Call::Fail, 30)).await;
        hardening.layer("api").unwrap().retry().stats().retries
    };
    // Defaults: a reserve of 10/s over 10 s covers every retry.
    assert_eq!(retries("").await, 30);
    // 1/s over 10 s, plus 20% of 30 deposits.
    let one_per_second = retries("budget_min_per_second = 1").await;
    assert!(one_per_second < 30, "{one_per_second}");
    // The reserve is min_per_second times the ttl.
    let short_ttl = retries("budget_min_per_second = 1\nbudget_ttl = \"1s\"").await;
    assert!(short_ttl < one_per_second, "{short_ttl} < {one_per_second}");
    // No reserve: only the ratio of deposits.
    let fifth = retries("budget_min_per_second = 0").await;
    let all = retries("budget_min_per_second = 0\nbudget_ratio = 1.0").await;
    assert!(fifth < all, "{fifth} < {all}");
    assert!(fifth <= 7, "{fifth}");
}

#[tokio::test(start_paused = true)]
async fn fault_keys_change_what_is_injected() {
    let second = Duration::from_secs(1);
    let cases = [
        // (toml, calls reaching the service, the call fails, time taken)
        ("[services.api.fault]", 1, false, Duration::ZERO),
        (
            "[services.api.fault]\nerror_rate = 1.0",
            0,
            true,
            Duration::ZERO,
        ),
        (
            "[services.api.fault]\nerror_rate = 1.0\nenabled = false",
            1,
            false,
            Duration::ZERO,
        ),
        (
            "[services.api]\ntimeout = \"1s\"\n[services.api.fault]\nhang_rate = 1.0",
            0,
            true,
            second,
        ),
        (
            "[services.api.fault]\nlatency = \"2s\"",
            1,
            false,
            Duration::ZERO,
        ),
        (
            "[services.api.fault]\nlatency_rate = 1.0",
            1,
            false,
            Duration::ZERO,
        ),
        (
            "[services.api.fault]\nlatency_rate = 1.0\nlatency = \"2s\"",
            1,
            false,
            2 * second,
        ),
    ];
    for (toml, reached, fails, took) in cases {
        let hardening = hardening(toml);
        let started = Instant::now();
        let (calls, results) = run_calls(&hardening, "api", &[Call::Succeed]).await;
        assert_eq!(calls, reached, "{toml}");
        assert_eq!(results[0].is_err(), fails, "{toml}");
        assert_eq!(started.elapsed(), took, "{toml}");
    }
}

#[tokio::test(start_paused = true)]
async fn fault_status_keys_change_the_answer() {
    for (toml, status) in [
        ("[services.api.fault]\nstatus = 418", 200),
        ("[services.api.fault]\nstatus_rate = 1.0", 503),
        ("[services.api.fault]\nstatus_rate = 1.0\nstatus = 418", 418),
    ] {
        let hardening = hardening(toml);
        let svc = ServiceBuilder::new()
            .layer(hardening.http_layer("api").unwrap())
            .service(service_fn(|_: http::Request<_>| async {
                Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default()))
            }));
        let response = svc
            .oneshot(
                http::Request::get("/")
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{toml}");
    }
}

/// `status` unset means each protocol's "unavailable" (issue 19, item
/// 15): 503 from the HTTP stack, 14 UNAVAILABLE from the gRPC stack; and
/// the handle's method has the key's name, `set_status_rate`.
#[tokio::test(start_paused = true)]
async fn fault_status_defaults_to_each_protocols_unavailable() {
    assert_eq!(
        tower_hardening::config::FaultConfig::default().status,
        None,
        "no HTTP status written as the default for gRPC too"
    );
    let hardening = hardening("[services.api.fault]\nstatus_rate = 0.0");
    let http = hardening.http_layer("api").unwrap();
    http.faults().set_status_rate(1.0);
    let grpc = hardening.grpc_layer("api").unwrap();
    let ok = || {
        service_fn(|_: http::Request<_>| async {
            Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default()))
        })
    };
    let request = || {
        http::Request::get("/")
            .body(Full::<Bytes>::default())
            .unwrap()
    };

    let response = tower::Layer::layer(&http, ok())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let response = tower::Layer::layer(&grpc, ok())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a trailers-only gRPC answer");
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(
        hardening.handle().faults("api").unwrap().stats().responses,
        2
    );
}

// ---------------------------------------------------------------------
// Service keys: the client's body, streamed responses, probes and
// idempotency keys, through the HTTP and gRPC stacks.

/// A body fed by a channel: it ends when its sender is dropped, and
/// stalls while the sender is kept and sends nothing (a client that does
/// not send what it declared, a stream with nothing to say yet).
/// `declared`: the size it promises up front (a `Content-Length`).
struct Channel {
    rx: mpsc::UnboundedReceiver<Bytes>,
    declared: Option<u64>,
}

fn channel(declared: Option<u64>) -> (mpsc::UnboundedSender<Bytes>, Channel) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Channel { rx, declared })
}

/// An empty body (what an injected fault answers with).
impl Default for Channel {
    fn default() -> Self {
        channel(Some(0)).1
    }
}

/// A body that has all of `data` and then ends.
fn sent(data: &'static [u8]) -> Channel {
    let (tx, body) = channel(Some(data.len() as u64));
    tx.send(Bytes::from_static(data)).unwrap();
    body
}

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|data| data.map(|data| Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        self.declared.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// Sends `request` through `api`'s HTTP stack to a handler that reads the
/// request body to its end and answers `status` (500 if reading failed). Returns the answer's status, as a task, and the handler's
/// call count.
fn spawn_http(
    hardening: &SystemHardening,
    status: u16,
    request: http::Request<Channel>,
) -> (JoinHandle<u16>, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(hardening.http_layer("api").unwrap())
        .service(service_fn(
            move |request: http::Request<ReplayBody<Channel>>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    let read = request.into_body().collect().await.is_ok();
                    let response = http::Response::builder()
                        .status(if read { status } else { 500 })
                        .body(Full::<Bytes>::default())
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            },
        ));
    let answer = tokio::spawn(async move { svc.oneshot(request).await.unwrap().status().as_u16() });
    (answer, calls)
}

#[tokio::test(start_paused = true)]
async fn body_timeout_bounds_the_wait_for_a_kept_body() {
    let (second, ms) = (Duration::from_secs(1), Duration::from_millis);
    for (toml, deadline) in [("", 10 * second), ("body_timeout = \"1s\"", second)] {
        // Retries on: a GET's body of known size is kept for them, read
        // in full before the service is called.
        let hardening = hardening(&format!("[services.api]\n{toml}\n[services.api.retry]"));
        let (client, body) = channel(Some(10));
        client.send(Bytes::from_static(b"abc")).unwrap(); // 3 of 10 bytes
        let started = Instant::now();
        let request = http::Request::get("/search").body(body).unwrap();
        let (answer, calls) = spawn_http(&hardening, 200, request);
        tokio::time::sleep_until(started + deadline - ms(100)).await;
        assert!(
            !answer.is_finished(),
            "{toml:?}: still waiting for the body"
        );
        tokio::time::sleep_until(started + deadline + ms(100)).await;
        assert!(answer.is_finished(), "{toml:?}: answered at the deadline");
        assert_eq!(answer.await.unwrap(), 408, "{toml:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "{toml:?}: the service never saw it"
        );
        drop(client);
    }
}

#[tokio::test(start_paused = true)]
async fn upload_timeout_bounds_a_streamed_upload() {
    let (second, ms) = (Duration::from_secs(1), Duration::from_millis);
    for (toml, deadline) in [("", 60 * second), ("upload_timeout = \"1s\"", second)] {
        // A POST is not retried: its body goes to the handler as it comes.
        let hardening = hardening(&format!("[services.api]\n{toml}"));
        let (client, body) = channel(Some(10));
        client.send(Bytes::from_static(b"abc")).unwrap(); // 3 of 10 bytes
        let started = Instant::now();
        let request = http::Request::post("/upload").body(body).unwrap();
        let (answer, calls) = spawn_http(&hardening, 200, request);
        tokio::time::sleep_until(started + deadline - ms(100)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "{toml:?}: the handler reads it"
        );
        assert!(!answer.is_finished(), "{toml:?}: still reading the body");
        tokio::time::sleep_until(started + deadline + ms(100)).await;
        assert!(answer.is_finished(), "{toml:?}: answered at the deadline");
        assert_eq!(answer.await.unwrap(), 408, "{toml:?}");
        drop(client);
    }
}

/// `upload_timeout` counts from the handler's first read of the body:
/// a POST queued for admission longer than the bound, whose body then
/// arrives at once, is served, not answered 408 (the queue is the
/// server's, not the client's).
#[tokio::test(start_paused = true)]
async fn upload_timeout_does_not_count_time_queued_for_admission() {
    let (second, ms) = (Duration::from_secs(1), Duration::from_millis);
    let hardening = hardening(
        "[services.api]\nupload_timeout = \"2s\"\n\
         [services.api.limit]\nmax_concurrency = 1\nqueue_timeout = \"30s\"",
    );
    let svc = ServiceBuilder::new()
        .layer(hardening.http_layer("api").unwrap())
        .service(service_fn(
            |request: http::Request<ReplayBody<Channel>>| async move {
                if request.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                let read = request.into_body().collect().await.is_ok();
                let status = if read { 200 } else { 500 };
                let response = http::Response::builder()
                    .status(status)
                    .body(Full::<Bytes>::default())
                    .unwrap();
                Ok::<_, Infallible>(response)
            },
        ));
    // Holds the only slot for 3 s.
    let slow = tokio::spawn(
        svc.clone()
            .oneshot(http::Request::get("/slow").body(sent(b"")).unwrap()),
    );
    tokio::time::sleep(ms(10)).await;
    let (client, body) = channel(Some(3));
    let upload = tokio::spawn(
        svc.clone()
            .oneshot(http::Request::post("/upload").body(body).unwrap()),
    );
    // Admitted at 3 s; the client sends its body 100 ms after that.
    tokio::time::sleep(3 * second + ms(100)).await;
    client.send(Bytes::from_static(b"abc")).unwrap();
    drop(client);
    let status = upload.await.unwrap().unwrap().status().as_u16();
    assert_eq!(
        status, 200,
        "queued 3 s with upload_timeout 2s, then sent at once"
    );
    assert_eq!(slow.await.unwrap().unwrap().status().as_u16(), 200);
}

#[tokio::test(start_paused = true)]
async fn stream_timeout_gives_a_streams_admission_back() {
    let (second, ms) = (Duration::from_secs(1), Duration::from_millis);
    for (toml, deadline) in [("", 300 * second), ("stream_timeout = \"1s\"", second)] {
        let hardening = hardening(&format!(
            "[services.api]\n{toml}\n[services.api.limit]\nmax_concurrency = 1\nmax_queue = 0"
        ));
        let layer = hardening.grpc_layer("api").unwrap();
        let pool = layer.pool().clone();
        // A server-streaming handler: each call's stream is fed by the
        // test through its sender.
        let streams = Arc::new(Mutex::new(Vec::new()));
        let senders = streams.clone();
        let svc = ServiceBuilder::new().layer(layer).service(service_fn(
            move |_: http::Request<ReplayBody<Full<Bytes>>>| {
                let (tx, body) = channel(None);
                senders.lock().unwrap().push(tx);
                async move { Ok::<_, Infallible>(http::Response::new(body)) }
            },
        ));
        let call = || {
            http::Request::post("/feed.Feed/Subscribe")
                .header("content-type", "application/grpc")
                .body(Full::<Bytes>::default())
                .unwrap()
        };
        let started = Instant::now();
        let response = svc.clone().oneshot(call()).await.unwrap();
        assert_eq!(response.headers().get("grpc-status"), None);
        assert_eq!(
            pool.stats().in_use,
            1,
            "{toml:?}: the stream holds its unit"
        );
        // The client reads the stream as it comes.
        let frames = Arc::new(AtomicU32::new(0));
        let read = frames.clone();
        let reader = tokio::spawn(async move {
            let mut body = Box::pin(response.into_body());
            while let Some(frame) = body.frame().await {
                if frame.is_ok_and(|frame| frame.is_data()) {
                    read.fetch_add(1, Ordering::SeqCst);
                }
            }
        });

        tokio::time::sleep_until(started + deadline - ms(100)).await;
        assert_eq!(pool.stats().in_use, 1, "{toml:?}: held before the deadline");
        let refused = svc.clone().oneshot(call()).await.unwrap();
        assert_eq!(
            refused.headers()["grpc-status"],
            "8",
            "{toml:?}: RESOURCE_EXHAUSTED while the stream counts"
        );

        tokio::time::sleep_until(started + deadline + ms(100)).await;
        assert_eq!(
            pool.stats().in_use,
            0,
            "{toml:?}: given back at the deadline"
        );
        let admitted = svc.clone().oneshot(call()).await.unwrap();
        assert_eq!(admitted.headers().get("grpc-status"), None, "{toml:?}");
        // The first stream goes on, uncounted.
        streams.lock().unwrap()[0]
            .send(Bytes::from_static(b"update"))
            .unwrap();
        tokio::time::sleep(ms(10)).await;
        assert_eq!(
            frames.load(Ordering::SeqCst),
            1,
            "{toml:?}: still streaming"
        );
        assert!(!reader.is_finished());
        streams.lock().unwrap().clear();
        reader.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn probe_timeout_fails_a_late_probe() {
    let (second, ms) = (Duration::from_secs(1), Duration::from_millis);
    for (toml, deadline) in [("", 10 * second), ("probe_timeout = \"2s\"", 2 * second)] {
        let (_hardening, layer) = opened(&format!(
            "wait_in_open = \"1s\"\nhalf_open_permits = 1\n{toml}"
        ))
        .await;
        tokio::time::sleep(ms(1500)).await;
        // The probe would take 30 s.
        let started = Instant::now();
        let probe = tokio::spawn(
            Inner::default()
                .stack(&layer)
                .oneshot(Call::Slow(30 * second)),
        );
        tokio::time::sleep_until(started + deadline - ms(100)).await;
        let snapshot = layer.breaker().snapshot();
        assert_eq!(snapshot.state, CircuitState::HalfOpen, "{toml:?}");
        assert_eq!(snapshot.probes_in_flight, 1, "{toml:?}: the probe is out");
        assert!(!probe.is_finished(), "{toml:?}");

        tokio::time::sleep_until(started + deadline + ms(100)).await;
        assert!(probe.is_finished(), "{toml:?}: failed at the deadline");
        let error = probe.await.unwrap().expect_err("a late probe fails");
        assert!(error.is::<ProbeTimedOut>(), "{toml:?}: {error}");
        let snapshot = layer.breaker().snapshot();
        assert_eq!(snapshot.state, CircuitState::Open, "{toml:?}: reopened");
        assert_eq!(snapshot.probes_in_flight, 0, "{toml:?}: permit freed");
    }
}

#[tokio::test(start_paused = true)]
async fn trust_idempotency_key_makes_keyed_posts_retryable() {
    let base = "[services.api.retry]\ninitial_backoff = \"1ms\"\n";
    // (written, the request's method and idempotency key, calls the
    // handler sees when every attempt answers 503)
    let cases = [
        ("", "GET", None, 3),
        ("", "POST", None, 1),
        ("", "POST", Some("42"), 1),
        ("trust_idempotency_key = true", "GET", None, 3),
        ("trust_idempotency_key = true", "POST", None, 1),
        ("trust_idempotency_key = true", "POST", Some("42"), 3),
    ];
    for (toml, method, key, attempts) in cases {
        let hardening = hardening(&format!("{base}{toml}"));
        let mut request = http::Request::builder().method(method).uri("/charge");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let request = request.body(sent(b"amount=10")).unwrap();
        let (answer, calls) = spawn_http(&hardening, 503, request);
        assert_eq!(answer.await.unwrap(), 503, "{toml:?} {method} {key:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            attempts,
            "{toml:?} {method} {key:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn recovery_rebuilds_report_their_steps() {
    // The events agree with the counts above: one `Started` per attempt.
    let backend = Backend {
        rebuild_fails: true,
        ..failing_backend()
    };
    let hardening = SystemHardening::builder(parsed(
        "health_check_interval = \"1s\"\nunhealthy_after_failed_checks = 1\n\
         recoverable_services = [\"db\"]\nmax_recovery_attempts = 2",
    ))
    .readings(quiet())
    .service("db", backend.clone())
    .build()
    .unwrap();
    let mut events = hardening.handle().subscribe();
    let handle = hardening.start();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut started = 0;
    while let Ok(event) = events.try_recv() {
        if let EventKind::RecoveryStep {
            step: RecoveryStep::Started,
            ..
        } = event.kind()
        {
            started += 1;
        }
    }
    assert_eq!(started, 2);
    assert_eq!(handle.service_health("db").unwrap().recovery_attempts, 2);
    handle.shutdown().await;
}

/// What the service's breaker, retries and metrics make of `calls`
/// answers with HTTP `status` (and `grpc-status` `grpc`, through the gRPC
/// stack, when given): (breaker failures, retries, metrics outcome).
async fn classified(toml: &str, status: u16, grpc: Option<u16>) -> (u64, u64, &'static str) {
    let hardening = hardening(toml);
    let answer = move |_: http::Request<_>| async move {
        let mut response = http::Response::new(Full::<Bytes>::default());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if let Some(code) = grpc {
            response.headers_mut().insert("grpc-status", code.into());
        }
        Ok::<_, Infallible>(response)
    };
    let request = || {
        http::Request::get("/")
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    if grpc.is_some() {
        let layer = hardening.grpc_layer("api").unwrap();
        tower::Layer::layer(&layer, service_fn(answer))
            .oneshot(request())
            .await
            .unwrap();
    } else {
        let layer = hardening.http_layer("api").unwrap();
        tower::Layer::layer(&layer, service_fn(answer))
            .oneshot(request())
            .await
            .unwrap();
    }
    let failures = hardening
        .handle()
        .breaker("api")
        .unwrap()
        .snapshot()
        .failures;
    let retries = hardening.layer("api").unwrap().retry().stats().retries;
    let handle = hardening.handle();
    let outcome = ["success", "failure", "ignored", "rejected"]
        .into_iter()
        .find(|outcome| {
            handle
                .metrics()
                .query(names::REQUESTS_TOTAL)
                .label(names::LABEL_SERVICE, "api")
                .label(names::LABEL_OUTCOME, outcome)
                .sum()
                > 0.0
        })
        .unwrap_or("none");
    (failures, retries, outcome)
}

/// A service says which statuses are its failures (issue: "a 502 from my
/// dependency is not my failure"); the breaker, the retries and the
/// metrics agree, over HTTP and gRPC; bad values are refused naming the
/// key and the value.
#[tokio::test(start_paused = true)]
async fn classify_keys_change_what_counts_as_a_failure() {
    let retry = "[services.api.retry]\n";
    for (classify, status, grpc, expected) in [
        ("", 502, None, (3, 2, "failure")),
        ("[services.api.classify]", 502, None, (3, 2, "failure")),
        (
            "[services.api.classify]\nhttp_ignored = [502]",
            502,
            None,
            (0, 0, "ignored"),
        ),
        (
            "[services.api.classify]\nhttp_ignored = [502]",
            503,
            None,
            (3, 2, "failure"),
        ),
        (
            "[services.api.classify]\nhttp_failures = [500, 504]",
            503,
            None,
            (0, 0, "success"),
        ),
        (
            "[services.api.classify]\nhttp_failures = [404]",
            404,
            None,
            (3, 2, "failure"),
        ),
        ("", 200, Some(5), (0, 0, "success")),
        (
            "[services.api.classify]\ngrpc_failures = [\"NOT_FOUND\"]",
            200,
            Some(5),
            (3, 2, "failure"),
        ),
        (
            "[services.api.classify]\ngrpc_failures = [5]",
            200,
            Some(5),
            (3, 2, "failure"),
        ),
        ("", 200, Some(14), (3, 2, "failure")),
        (
            "[services.api.classify]\ngrpc_ignored = [\"unavailable\"]",
            200,
            Some(14),
            (0, 0, "ignored"),
        ),
    ] {
        let toml = format!("{retry}{classify}");
        assert_eq!(
            classified(&toml, status, grpc).await,
            expected,
            "{toml} ({status}, {grpc:?})"
        );
    }
    for (toml, key, value) in [
        ("http_failures = [700]", "http_failures", "700"),
        ("http_ignored = [99]", "http_ignored", "99"),
        (
            "http_failures = [502]\nhttp_ignored = [502]",
            "http_ignored",
            "502",
        ),
        (
            "grpc_failures = [\"UNAVAILABEL\"]",
            "grpc_failures",
            "UNAVAILABEL",
        ),
        ("grpc_failures = [17]", "grpc_failures", "17"),
        ("grpc_failures = [\"OK\"]", "grpc_failures", "OK"),
        ("grpc_ignored = [-1]", "grpc_ignored", "-1"),
        (
            "grpc_failures = [14]\ngrpc_ignored = [\"UNAVAILABLE\"]",
            "grpc_ignored",
            "14",
        ),
    ] {
        let err = SystemHardeningConfig::from_toml_str(&format!("[services.api.classify]\n{toml}"))
            .expect_err(toml)
            .to_string();
        assert!(
            err.contains(&format!("services.api.classify.{key}")) && err.contains(value),
            "{toml}: {err}"
        );
    }
}

// ---------------------------------------------------------------------
// Upstreams: in-process endpoints, on the paused clock.

/// Endpoints that answer as the test says, counting their calls.
#[derive(Clone, Default)]
struct Endpoints {
    /// Endpoints that refuse every call, and endpoints that answer late.
    failing: Arc<Mutex<Vec<String>>>,
    slow: Arc<Mutex<Vec<(String, Duration)>>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Endpoints {
    fn fail(&self, uri: &str) {
        self.failing.lock().unwrap().push(uri.to_owned());
    }

    fn slow(&self, uri: &str, by: Duration) {
        self.slow.lock().unwrap().push((uri.to_owned(), by));
    }

    fn calls_to(&self, uri: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|u| *u == uri)
            .count()
    }

    fn total(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn make(
        &self,
    ) -> impl Fn(&str) -> tower::util::BoxCloneService<u32, u32, BoxError> + Send + Sync + 'static
    {
        let endpoints = self.clone();
        move |uri: &str| {
            let endpoints = endpoints.clone();
            let uri = uri.to_owned();
            tower::util::BoxCloneService::new(service_fn(move |n: u32| {
                let endpoints = endpoints.clone();
                let uri = uri.clone();
                async move {
                    endpoints.calls.lock().unwrap().push(uri.clone());
                    let slow = endpoints
                        .slow
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(u, _)| *u == uri)
                        .map(|(_, by)| *by);
                    if let Some(by) = slow {
                        tokio::time::sleep(by).await;
                    }
                    if endpoints.failing.lock().unwrap().contains(&uri) {
                        Err(BoxError::from(std::io::Error::from(
                            std::io::ErrorKind::ConnectionRefused,
                        )))
                    } else {
                        Ok(n)
                    }
                }
            }))
        }
    }
}

const A: &str = "http://a:1";
const B: &str = "http://b:1";
const C: &str = "http://c:1";

/// The upstream `model` of `toml` (its `[upstreams.model]` header and
/// endpoints are added) over `endpoints`, with no breaker (whose opening
/// would hide what the keys do).
fn upstream_of(
    toml: &str,
    uris: &[&str],
    endpoints: &Endpoints,
) -> (
    SystemHardening,
    tower_hardening::upstream::HardenedUpstream<
        tower::util::BoxCloneService<u32, u32, BoxError>,
        u32,
    >,
) {
    let list = uris
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let toml = format!(
        "[services.model.breaker]\nenabled = false\n[upstreams.model]\nendpoints = [{list}]\n{toml}"
    );
    let hardening = hardening(&toml);
    let service = hardening.upstream("model", endpoints.make()).unwrap();
    (hardening, service)
}

fn ejected(hardening: &SystemHardening) -> usize {
    hardening
        .handle()
        .service_health("model")
        .unwrap()
        .endpoints
        .iter()
        .filter(|e| e.state == "ejected")
        .count()
}

#[tokio::test(start_paused = true)]
async fn upstream_endpoints_are_the_ones_called() {
    let endpoints = Endpoints::default();
    let (_h, svc) = upstream_of("", &[A, B], &endpoints);
    for n in 0..40 {
        svc.clone().oneshot(n).await.unwrap();
    }
    assert_eq!(endpoints.calls_to(A) + endpoints.calls_to(B), 40);
    let endpoints = Endpoints::default();
    let (_h, svc) = upstream_of("", &[B], &endpoints);
    for n in 0..40 {
        svc.clone().oneshot(n).await.unwrap();
    }
    assert_eq!((endpoints.calls_to(A), endpoints.calls_to(B)), (0, 40));
    // Without the section, no upstream.
    let hardening = hardening("");
    assert!(
        hardening
            .upstream::<u32, _>("model", Endpoints::default().make())
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_timeout_bounds_each_attempt() {
    for (toml, took) in [
        ("", Duration::from_secs(1)),
        ("timeout = \"50ms\"", Duration::from_millis(50)),
    ] {
        let endpoints = Endpoints::default();
        endpoints.slow(A, Duration::from_secs(1));
        let (_h, svc) = upstream_of(toml, &[A, B], &endpoints);
        // A is chosen first while neither has answered yet (ties go to the
        // first); with a timeout its attempt ends and B answers.
        let started = Instant::now();
        svc.clone().oneshot(0).await.unwrap();
        assert_eq!(started.elapsed(), took, "{toml:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn upstream_outlier_keys_change_ejection() {
    // A refuses every call; 40 calls; how many reach it.
    let calls_to_a = async |toml: &str, pause: Option<Duration>| {
        let endpoints = Endpoints::default();
        endpoints.fail(A);
        let (_h, svc) = upstream_of(toml, &[A, B], &endpoints);
        for n in 0..40 {
            svc.clone().oneshot(n).await.unwrap();
        }
        if let Some(pause) = pause {
            tokio::time::advance(pause).await;
            for n in 0..40 {
                svc.clone().oneshot(n).await.unwrap();
            }
        }
        endpoints.calls_to(A)
    };
    assert_eq!(calls_to_a("", None).await, 5);
    assert!(calls_to_a("[upstreams.model.outlier]\nenabled = false", None).await > 5);
    assert_eq!(
        calls_to_a("[upstreams.model.outlier]\nconsecutive_failures = 2", None).await,
        2
    );
    let by_rate = "[upstreams.model.outlier]\nconsecutive_failures = 0\nfailure_rate = 0.5\n";
    assert_eq!(calls_to_a(by_rate, None).await, 20);
    assert_eq!(
        calls_to_a(&format!("{by_rate}failure_rate_minimum_calls = 4"), None).await,
        4
    );
    // Out for 30 s by default: 10 s later still out; with 5 s, back (and
    // out again after 5 more failures).
    assert_eq!(calls_to_a("", Some(Duration::from_secs(10))).await, 5);
    assert_eq!(
        calls_to_a(
            "[upstreams.model.outlier]\nbase_ejection_time = \"5s\"",
            Some(Duration::from_secs(10))
        )
        .await,
        10
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_max_ejection_percent_caps_the_ejected() {
    for (toml, out) in [
        ("", 1),
        ("[upstreams.model.outlier]\nmax_ejection_percent = 100", 2),
    ] {
        let endpoints = Endpoints::default();
        endpoints.fail(A);
        endpoints.fail(B);
        let (hardening, svc) = upstream_of(
            &format!("[upstreams.model.retry]\nenabled = false\n{toml}"),
            &[A, B],
            &endpoints,
        );
        for n in 0..40 {
            let _ = svc.clone().oneshot(n).await;
        }
        assert_eq!(ejected(&hardening), out, "{toml:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn upstream_retry_keys_change_the_attempts() {
    let no_outliers = "[upstreams.model.outlier]\nenabled = false\n";
    for (toml, attempts) in [
        ("", 3),
        ("[upstreams.model.retry]\nenabled = false", 1),
        ("[upstreams.model.retry]\nmax_attempts = 2", 2),
        // No tokens but the per-second floor: the floor pays.
        ("[upstreams.model.retry]\nbudget_ratio = 0.0", 3),
        (
            "[upstreams.model.retry]\nbudget_ratio = 0.0\nbudget_min_per_second = 0",
            1,
        ),
        // No floor: the first request's own deposit pays one retry at a
        // ratio of 1, none at the default 0.2.
        ("[upstreams.model.retry]\nbudget_min_per_second = 0", 1),
        (
            "[upstreams.model.retry]\nbudget_min_per_second = 0\nbudget_ratio = 1.0",
            2,
        ),
    ] {
        let endpoints = Endpoints::default();
        for uri in [A, B, C] {
            endpoints.fail(uri);
        }
        let (_h, svc) = upstream_of(&format!("{no_outliers}{toml}"), &[A, B, C], &endpoints);
        let _ = svc.oneshot(0).await.unwrap_err();
        assert_eq!(endpoints.total(), attempts, "{toml:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn upstream_hedge_keys_change_hedging() {
    for (toml, attempts) in [
        ("", 1),
        // The default delay is p95, which needs 20 answers first.
        ("[upstreams.model.hedge]", 1),
        ("[upstreams.model.hedge]\ndelay = \"30ms\"", 2),
        ("[upstreams.model.hedge]\ndelay = 30", 2),
        (
            "[upstreams.model.hedge]\ndelay = \"30ms\"\nenabled = false",
            1,
        ),
        (
            "[upstreams.model.hedge]\ndelay = \"30ms\"\nmax_hedges = 2",
            3,
        ),
    ] {
        let endpoints = Endpoints::default();
        for uri in [A, B, C] {
            endpoints.slow(uri, Duration::from_millis(200));
        }
        let (_h, svc) = upstream_of(toml, &[A, B, C], &endpoints);
        svc.oneshot(0).await.unwrap();
        assert_eq!(endpoints.total(), attempts, "{toml:?}");
    }
}

// ---------------------------------------------------------------------
// Rate limits and fallbacks.

/// The statuses `requests` get through `service`'s HTTP stack, one after
/// another (each request: its peer address, then headers).
async fn http_statuses(
    hardening: &SystemHardening,
    service: &str,
    requests: &[(&str, &[(&str, &str)])],
) -> Vec<u16> {
    let layer = hardening.http_layer(service).unwrap();
    let mut svc = tower::Layer::layer(
        &layer,
        service_fn(|_: http::Request<ReplayBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default()))
        }),
    );
    let mut statuses = Vec::new();
    for (peer, headers) in requests {
        let mut request = http::Request::new(Full::<Bytes>::default());
        request.extensions_mut().insert(
            format!("{peer}:4000")
                .parse::<std::net::SocketAddr>()
                .unwrap(),
        );
        for (name, value) in *headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let response = svc.ready().await.unwrap().call(request).await.unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test(start_paused = true)]
async fn rate_limit_keys_change_what_is_refused() {
    const NONE: &[(&str, &str)] = &[];
    let five: &[(&str, &[(&str, &str)])] = &[("192.0.2.1", NONE); 5];
    let cases = [
        ("[services.api]", [200; 5]),
        (
            "[services.api.rate_limit]\nrate = \"2/h\"",
            [200, 200, 429, 429, 429],
        ),
        (
            "[services.api.rate_limit]\nrate = \"2/h\"\nburst = 4",
            [200, 200, 200, 200, 429],
        ),
        (
            "[services.api.rate_limit]\nrate = \"1/h\"",
            [200, 429, 429, 429, 429],
        ),
        (
            "[services.api.rate_limit]\nrate = \"1/h\"\nenabled = false",
            [200; 5],
        ),
    ];
    for (toml, expected) in cases {
        let hardening = hardening(toml);
        assert_eq!(
            http_statuses(&hardening, "api", five).await,
            expected,
            "{toml}"
        );
    }
    // What the limiter refuses, validation refuses first, naming the key.
    for (toml, field) in [
        ("rate = \"0/s\"", "services.api.rate_limit.rate"),
        ("rate = \"lots\"", "services.api.rate_limit.rate"),
        ("burst = 3", "services.api.rate_limit.rate"),
        ("rate = \"1/s\"\nburst = 0", "services.api.rate_limit.burst"),
        (
            "rate = \"1/h\"\nburst = 4294967295",
            "services.api.rate_limit.burst",
        ),
        (
            "rate = \"1/s\"\n[services.api.rate_limit.priorities.low]\nrate = \"1/h\"\nburst = 4000000000",
            "services.api.rate_limit.priorities.low.burst",
        ),
        (
            "rate = \"1/s\"\nkey = \"cookie\"",
            "services.api.rate_limit.key",
        ),
        (
            "rate = \"1/s\"\nkey = \"header:\"",
            "services.api.rate_limit.key",
        ),
        (
            "rate = \"1/s\"\nmax_keys = 0",
            "services.api.rate_limit.max_keys",
        ),
        (
            "rate = \"1/s\"\ntrusted_proxies = [\"10.0.0.0/99\"]",
            "services.api.rate_limit.trusted_proxies[0]",
        ),
        (
            "rate = \"1/s\"\n[services.api.rate_limit.priorities.high]\nrate = \"0/m\"",
            "services.api.rate_limit.priorities.high.rate",
        ),
    ] {
        let err =
            SystemHardeningConfig::from_toml_str(&format!("[services.api.rate_limit]\n{toml}"))
                .unwrap_err();
        assert_eq!(err.field(), field, "{toml}: {err}");
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limit_key_keys_change_who_shares_a_quota() {
    let base = "[services.api.rate_limit]\nrate = \"1/h\"\n";
    let two_clients: &[(&str, &[(&str, &str)])] = &[
        ("192.0.2.1", &[("x-api-key", "a")]),
        ("192.0.2.2", &[("x-api-key", "b")]),
        ("192.0.2.2", &[("x-api-key", "c")]),
    ];
    for (toml, expected) in [
        (base.to_owned(), [200, 429, 429]),
        (format!("{base}key = \"global\""), [200, 429, 429]),
        (format!("{base}key = \"peer-ip\""), [200, 200, 429]),
        (format!("{base}key = \"header:x-api-key\""), [200, 200, 200]),
        // One key tracked at most: the others share one bucket.
        (
            format!("{base}key = \"header:x-api-key\"\nmax_keys = 1"),
            [200, 200, 429],
        ),
    ] {
        let hardening = hardening(&toml);
        assert_eq!(
            http_statuses(&hardening, "api", two_clients).await,
            expected,
            "{toml}"
        );
    }
    // X-Forwarded-For counts only from a trusted proxy.
    let via_proxy: &[(&str, &[(&str, &str)])] = &[
        ("10.0.0.1", &[("x-forwarded-for", "198.51.100.1")]),
        ("10.0.0.1", &[("x-forwarded-for", "198.51.100.2")]),
    ];
    for (toml, expected) in [
        (format!("{base}key = \"peer-ip\""), [200, 429]),
        (
            format!("{base}key = \"peer-ip\"\ntrusted_proxies = [\"10.0.0.0/8\"]"),
            [200, 200],
        ),
    ] {
        let hardening = hardening(&toml);
        assert_eq!(
            http_statuses(&hardening, "api", via_proxy).await,
            expected,
            "{toml}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limit_priorities_have_quotas_of_their_own() {
    let base = "[services.api.rate_limit]\nrate = \"1/h\"\n";
    const NONE: &[(&str, &str)] = &[];
    let three: &[(&str, &[(&str, &str)])] = &[("192.0.2.1", NONE); 3];
    for level in ["low", "normal", "high", "critical"] {
        for (toml, expected) in [
            // Not given: CRITICAL is never limited, the others share one quota.
            (
                format!("{base}[services.api]\ncriticality = \"{level}\""),
                if level == "critical" {
                    [200; 3]
                } else {
                    [200, 429, 429]
                },
            ),
            (
                format!(
                    "[services.api]\ncriticality = \"{level}\"\n{base}[services.api.rate_limit.priorities.{level}]\nrate = \"2/h\""
                ),
                [200, 200, 429],
            ),
            (
                format!(
                    "[services.api]\ncriticality = \"{level}\"\n{base}[services.api.rate_limit.priorities.{level}]\nrate = \"1/h\"\nburst = 3"
                ),
                [200, 200, 200],
            ),
        ] {
            let hardening = hardening(&toml);
            assert_eq!(
                http_statuses(&hardening, "api", three).await,
                expected,
                "{toml}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fallback_keys_choose_the_cases_it_answers() {
    let fallback_status = |toml: &str| {
        let hardening = hardening(toml);
        async move {
            let layer = hardening.http_layer("api").unwrap().fallback(|_| {
                let mut response = http::Response::new(Full::<Bytes>::default());
                *response.status_mut() = http::StatusCode::NON_AUTHORITATIVE_INFORMATION;
                response
            });
            layer.breaker().force_open();
            let mut svc = tower::Layer::layer(
                &layer,
                service_fn(|_: http::Request<ReplayBody<Full<Bytes>>>| async {
                    Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default()))
                }),
            );
            let response = svc
                .ready()
                .await
                .unwrap()
                .call(http::Request::new(Full::<Bytes>::default()))
                .await
                .unwrap();
            response.status().as_u16()
        }
    };
    for (toml, status) in [
        ("[services.api]", 203),
        ("[services.api.fallback]", 203),
        ("[services.api.fallback]\non = [\"circuit_open\"]", 203),
        (
            "[services.api.fallback]\non = [\"rate_limited\", \"failure\"]",
            503,
        ),
        ("[services.api.fallback]\nenabled = false", 503),
    ] {
        assert_eq!(fallback_status(toml).await, status, "{toml}");
    }
    let err = SystemHardeningConfig::from_toml_str("[services.api.fallback]\non = [\"always\"]")
        .unwrap_err();
    assert_eq!(err.field(), "services.api.fallback.on[0]");
}
