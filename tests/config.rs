//! Configuration parsing and validation: the seed's example, the example
//! file, and bad inputs whose errors must name the field.

use std::time::Duration;

use tower_hardening::config::{ConfigError, SystemHardeningConfig, WindowConfig};
use tower_hardening::core::Priority;

#[test]
fn seed_example_parses_as_written() {
    // The seed's TypeScript example object, as JSON with camelCase keys.
    let config = SystemHardeningConfig::from_json_str(
        r#"{
            "enableHealthMonitoring": true,
            "enablePerformanceMonitoring": true,
            "enableErrorRecovery": true,
            "enableResourceManagement": true,
            "healthCheckIntervalMs": 30000,
            "performanceCheckIntervalMs": 5000,
            "maxResourceMemory": "1GB",
            "recoverableServices": ["audio-processing", "model-inference"]
        }"#,
    )
    .expect("the seed's example configuration is valid");
    assert!(config.enable_health_monitoring);
    assert!(config.enable_performance_monitoring);
    assert!(config.enable_error_recovery);
    assert!(config.enable_resource_management);
    assert_eq!(config.health_check_interval, Duration::from_secs(30));
    assert_eq!(config.performance_check_interval, Duration::from_secs(5));
    assert_eq!(config.max_resource_memory, Some(1_000_000_000));
    assert_eq!(
        config.recoverable_services,
        vec!["audio-processing".to_owned(), "model-inference".to_owned()]
    );
}

#[test]
fn example_file_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hardening.toml");
    let config = SystemHardeningConfig::from_path(path).expect("examples/hardening.toml is valid");
    assert_eq!(config.max_resource_memory, Some(1 << 30));
    let audio = config.service("audio-processing");
    assert_eq!(audio.criticality, Priority::HIGH);
    assert_eq!(audio.timeout, Some(Duration::from_secs(10)));
    assert_eq!(audio.breaker.max_wait_in_open, Duration::from_secs(300));
    assert!(audio.retry.enabled);
    assert_eq!(audio.limit.max_concurrency, 8);
    let model = config.service("model-inference");
    assert_eq!(
        model.breaker.sliding_window,
        WindowConfig::Time(Duration::from_secs(60))
    );
    assert_eq!(model.breaker.minimum_calls, 10);
}

#[test]
fn defaults_are_valid_and_match_the_seed() {
    let config = SystemHardeningConfig::default();
    config.validate().expect("defaults are safe to run");
    assert_eq!(config.health_check_interval, Duration::from_secs(30));
    assert_eq!(config.performance_check_interval, Duration::from_secs(5));
    assert_eq!(SystemHardeningConfig::from_toml_str("").unwrap(), config);
    assert_eq!(SystemHardeningConfig::from_json_str("{}").unwrap(), config);
}

#[test]
fn durations_and_sizes_take_every_documented_form() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        health_check_interval = 1500
        performance_check_interval = "500ms"
        max_resource_memory = 4096
        "#,
    )
    .unwrap();
    assert_eq!(config.health_check_interval, Duration::from_millis(1500));
    assert_eq!(
        config.performance_check_interval,
        Duration::from_millis(500)
    );
    assert_eq!(config.max_resource_memory, Some(4096));

    let config = SystemHardeningConfig::from_json_str(
        r#"{ "healthCheckInterval": "2m", "maxResourceMemory": "512MiB" }"#,
    )
    .unwrap();
    assert_eq!(config.health_check_interval, Duration::from_secs(120));
    assert_eq!(config.max_resource_memory, Some(512 * 1024 * 1024));
}

/// Parses `toml`, expects an error, and checks that both `field()` and the
/// message name `field`.
fn refused_toml(toml: &str, field: &str) -> ConfigError {
    let err = SystemHardeningConfig::from_toml_str(toml)
        .expect_err(&format!("expected {toml:?} to be refused"));
    let message = err.to_string();
    assert!(
        err.field().contains(field) && message.contains(field),
        "error for {toml:?} should name `{field}`; field() = {:?}, message = {message}",
        err.field()
    );
    err
}

fn refused_json(json: &str, field: &str) -> ConfigError {
    let err = SystemHardeningConfig::from_json_str(json)
        .expect_err(&format!("expected {json:?} to be refused"));
    let message = err.to_string();
    assert!(
        err.field().contains(field) && message.contains(field),
        "error for {json:?} should name `{field}`; field() = {:?}, message = {message}",
        err.field()
    );
    err
}

#[test]
fn zero_intervals_are_refused() {
    let err = refused_toml("health_check_interval = 0", "health_check_interval");
    assert!(err.to_string().contains("above zero"), "{err}");
    refused_toml(
        r#"performance_check_interval = "0s""#,
        "performance_check_interval",
    );
    // camelCase alias: the error names the canonical field.
    refused_json(r#"{"healthCheckIntervalMs": 0}"#, "health_check_interval");
}

#[test]
fn unparseable_values_are_refused() {
    let err = refused_toml(r#"health_check_interval = "soon""#, "health_check_interval");
    assert!(
        err.to_string().contains("\"soon\""),
        "the value is echoed: {err}"
    );
    refused_toml(
        "performance_check_interval = -5",
        "performance_check_interval",
    );
    let err = refused_toml(
        r#"max_resource_memory = "12 parsecs""#,
        "max_resource_memory",
    );
    assert!(err.to_string().contains("12 parsecs"), "{err}");
    refused_json(r#"{"maxResourceMemory": -1}"#, "maxResourceMemory");
    refused_toml(
        r#"enable_health_monitoring = "yes""#,
        "enable_health_monitoring",
    );
    refused_toml(
        r#"[services.a]
criticality = "urgent!!""#,
        "services.a.criticality",
    );
}

#[test]
fn memory_limit_above_the_machine_is_refused_only_when_asked() {
    // Validation depends on the configuration alone: a file valid in CI is
    // valid on a smaller production machine, and the reverse.
    let config = SystemHardeningConfig::from_toml_str(r#"max_resource_memory = "1PiB""#)
        .expect("not checked against this machine unless asked");
    let err = config.validate_for_this_machine().unwrap_err();
    assert_eq!(err.field(), "max_resource_memory");
    assert!(err.to_string().contains("this machine's memory"), "{err}");
    refused_toml("max_resource_memory = 0", "max_resource_memory");
}

#[test]
fn the_configuration_and_the_builders_agree() {
    // Values a builder refuses are refused by the configuration, named by
    // the configuration's key: one source of limits.
    refused_toml(
        "[services.a.breaker]\nsliding_window = { count = 2000000 }",
        "services.a.breaker.sliding_window.count",
    );
    refused_toml(
        "[services.a.retry]\nbudget_ttl = \"90s\"",
        "services.a.retry.budget_ttl",
    );
    refused_toml(
        "[services.a.limit]\nmax_queue = 4000000000",
        "services.a.limit.max_queue",
    );
    // And values the builders take, the configuration takes: a 100 ms time
    // window (the configuration once asked for at least 1 s).
    let config = SystemHardeningConfig::from_toml_str(
        "[services.a.breaker]\nsliding_window = { time = \"100ms\" }",
    )
    .unwrap();
    config.service("a").breaker.to_builder("a").build().unwrap();
}

#[test]
fn unknown_keys_are_refused() {
    let err = refused_toml("health_check_intervall = \"1s\"", "health_check_intervall");
    assert!(err.to_string().contains("unknown field"), "{err}");
    refused_json(
        r#"{"enableHealthMonitorin": true}"#,
        "enableHealthMonitorin",
    );
    refused_toml(
        "[services.audio.breaker]\nfailure_threshold = 0.5",
        "services.audio.breaker.failure_threshold",
    );
}

#[test]
fn empty_service_names_are_refused() {
    refused_toml(
        r#"recoverable_services = ["audio", " "]"#,
        "recoverable_services[1]",
    );
    refused_toml("[services.\"\"]\ntimeout = \"1s\"", "services");
}

#[test]
fn thresholds_outside_their_range_are_refused() {
    let err = refused_toml(
        "[services.a.breaker]\nfailure_rate_threshold = 1.5",
        "services.a.breaker.failure_rate_threshold",
    );
    assert!(
        err.to_string().contains("1.5") && err.to_string().contains("(0, 1]"),
        "{err}"
    );
    refused_toml(
        "[services.a.breaker]\nslow_call_rate_threshold = 0.0",
        "services.a.breaker.slow_call_rate_threshold",
    );
    refused_toml(
        "[services.a.retry]\nbudget_ratio = -0.1",
        "services.a.retry.budget_ratio",
    );
}

#[test]
fn breaker_shape_errors_are_refused() {
    refused_toml(
        "[services.a.breaker]\nhalf_open_permits = 0",
        "services.a.breaker.half_open_permits",
    );
    refused_toml(
        "[services.a.breaker]\nsliding_window = { count = 0 }",
        "services.a.breaker.sliding_window.count",
    );
    refused_toml(
        "[services.a.breaker]\nsliding_window = { count = 10 }\nminimum_calls = 11",
        "services.a.breaker.minimum_calls",
    );
    refused_toml(
        "[services.a.breaker]\nwait_in_open = \"60s\"\nmax_wait_in_open = \"30s\"",
        "services.a.breaker.max_wait_in_open",
    );
}

#[test]
fn retry_limit_and_timeout_errors_are_refused() {
    refused_toml(
        "[services.a.retry]\nmax_attempts = 0",
        "services.a.retry.max_attempts",
    );
    refused_toml(
        "[services.a.retry]\ninitial_backoff = \"1s\"\nmax_backoff = \"10ms\"",
        "services.a.retry.max_backoff",
    );
    refused_toml(
        "[services.a.limit]\nmax_concurrency = 0",
        "services.a.limit.max_concurrency",
    );
    refused_toml("[services.a]\ntimeout = 0", "services.a.timeout");
}

#[test]
fn syntax_errors_and_files_are_reported() {
    let err = SystemHardeningConfig::from_toml_str("health_check_interval = ").unwrap_err();
    assert!(err.to_string().contains("toml"), "{err}");
    let err = SystemHardeningConfig::from_json_str("{} trailing").unwrap_err();
    assert!(err.to_string().contains("json"), "{err}");

    let err = SystemHardeningConfig::from_path("hardening.yaml").unwrap_err();
    assert_eq!(err.field(), "path");
    assert!(err.to_string().contains(".toml or .json"), "{err}");
    let err = SystemHardeningConfig::from_path("/nonexistent/hardening.toml").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/hardening.toml"),
        "{err}"
    );
}

#[test]
fn a_config_built_by_hand_is_validated_on_request() {
    let mut config = SystemHardeningConfig::default();
    config
        .services
        .entry("a".into())
        .or_default()
        .breaker
        .failure_rate_threshold = f64::NAN;
    let err = config.validate().unwrap_err();
    assert_eq!(err.field(), "services.a.breaker.failure_rate_threshold");
}

// ---------------------------------------------------------------------
// What a written configuration does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::config::{FaultConfig, LimitConfig, RetryConfig, ServiceConfig};
use tower_hardening::core::{EventKind, RejectionKind, rejection_of};
use tower_hardening::monitor::{ManualReadings, MemoryReading};
use tower_hardening::stack::ServiceLayer;
use tower_hardening::{BoxError, ManagedService, Requirements, SystemHardening};

fn parsed(toml: &str) -> SystemHardeningConfig {
    SystemHardeningConfig::from_toml_str(toml).expect("a valid test configuration")
}

/// Memory readings that never press.
fn quiet_readings() -> ManualReadings {
    let readings = ManualReadings::default();
    readings.set_memory(MemoryReading {
        process_rss: 100 << 20,
        system_total: 8 << 30,
        system_used: 2 << 30,
        ..Default::default()
    });
    readings
}

/// A registered service that does nothing.
struct Idle;

impl ManagedService for Idle {
    fn initialize(&self) -> tower_hardening::managed::BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Calls a plain stack `calls` times at once; each call holds
/// its admission until every call has started or been refused. Returns
/// how many were refused as overloaded.
async fn refused_of_concurrent(layer: ServiceLayer, calls: usize) -> usize {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let inner = {
        let gate = gate.clone();
        service_fn(move |()| {
            let gate = gate.clone();
            async move {
                let _ = gate.acquire().await.map(|permit| permit.forget());
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let svc = ServiceBuilder::new().layer(layer).service(inner);
    let mut calls: Vec<_> = (0..calls)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    gate.add_permits(calls.len());
    let mut refused = 0;
    for call in calls.drain(..) {
        if let Err(err) = call.await.expect("no panic") {
            assert_eq!(
                rejection_of(&*err).map(|r| r.kind),
                Some(RejectionKind::Overloaded),
                "{err}"
            );
            refused += 1;
        }
    }
    refused
}

/// Calls a plain stack once with an inner service that always
/// fails; returns how many times the inner service was called.
async fn attempts_of_a_failing_call(layer: ServiceLayer) -> u32 {
    let calls = Arc::new(AtomicU32::new(0));
    let inner = {
        let calls = calls.clone();
        service_fn(move |()| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(std::io::Error::other("backend failed")) }
        })
    };
    let svc = ServiceBuilder::new().layer(layer).service(inner);
    let _ = svc.oneshot(()).await;
    calls.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn a_written_section_switches_its_part_on() {
    let config = parsed(
        r#"
        [services.limited.limit]
        max_concurrency = 2
        max_queue = 0

        [services.retried.retry]
        max_attempts = 3
        initial_backoff = "1ms"

        [services.faulty.fault]
        error_rate = 1.0

        [services.plain]
        timeout = "1s"
        "#,
    );
    assert!(config.service("limited").limit.enabled);
    assert!(config.service("retried").retry.enabled);
    assert!(config.service("faulty").fault.enabled);
    assert!(!config.service("plain").limit.enabled, "no section: off");
    assert!(!config.service("plain").retry.enabled, "no section: off");
    assert!(!config.service("plain").fault.enabled, "no section: off");

    let hardening = SystemHardening::builder(config)
        .readings(quiet_readings())
        .build()
        .unwrap();
    assert_eq!(
        refused_of_concurrent(hardening.layer("limited").unwrap(), 3).await,
        1
    );
    assert_eq!(
        refused_of_concurrent(hardening.layer("plain").unwrap(), 3).await,
        0
    );
    assert_eq!(
        attempts_of_a_failing_call(hardening.layer("retried").unwrap()).await,
        3
    );
    assert_eq!(
        attempts_of_a_failing_call(hardening.layer("plain").unwrap()).await,
        1
    );
    assert_eq!(
        attempts_of_a_failing_call(hardening.layer("faulty").unwrap()).await,
        0,
        "every call failed by the fault layer, none reached the service"
    );
}

#[tokio::test(start_paused = true)]
async fn a_section_that_says_enabled_false_stays_off() {
    let config = parsed(
        r#"
        [services.limited.limit]
        enabled = false
        max_concurrency = 2
        max_queue = 0

        [services.retried.retry]
        enabled = false
        max_attempts = 3

        [services.faulty.fault]
        enabled = false
        error_rate = 1.0

        [services.unbroken.breaker]
        enabled = false
        "#,
    );
    let hardening = SystemHardening::builder(config)
        .readings(quiet_readings())
        .build()
        .unwrap();
    assert_eq!(
        refused_of_concurrent(hardening.layer("limited").unwrap(), 3).await,
        0
    );
    assert_eq!(
        attempts_of_a_failing_call(hardening.layer("retried").unwrap()).await,
        1
    );
    assert_eq!(
        attempts_of_a_failing_call(hardening.layer("faulty").unwrap()).await,
        1
    );
}

#[test]
fn sections_built_in_code_are_on_and_absent_sections_off() {
    // Writing a section in Rust is writing a section.
    let limit = LimitConfig {
        max_concurrency: 2,
        ..LimitConfig::default()
    };
    assert!(limit.enabled);
    assert!(RetryConfig::default().enabled);
    assert!(FaultConfig::default().enabled);
    // A service without sections has admission, retries and faults off.
    let service = ServiceConfig::default();
    assert!(!service.limit.enabled && !service.retry.enabled && !service.fault.enabled);
    assert!(service.breaker.enabled, "the breaker is on by default");
    // And the parsed form agrees with the code.
    assert_eq!(parsed("[services.a]").service("a"), service);
    assert_eq!(
        parsed("[services.a.limit]\nmax_concurrency = 2")
            .service("a")
            .limit,
        limit
    );
}

#[tokio::test(start_paused = true)]
async fn resource_management_off_never_sheds_nor_limits() {
    let readings = quiet_readings();
    let hardening = SystemHardening::builder(parsed(
        r#"
        enable_resource_management = false
        max_resource_memory = 1000
        performance_check_interval = "1s"

        [services.api]
        criticality = "low"

        [services.api.limit]
        max_concurrency = 1
        max_queue = 0
        "#,
    ))
    .pool(
        tower_hardening::limit::ResourcePool::builder("cpu")
            .capacity(100)
            .build()
            .unwrap(),
    )
    .readings(readings.clone())
    .build()
    .unwrap();
    let layer = hardening.layer("api").unwrap();
    assert_eq!(
        refused_of_concurrent(layer.clone(), 3).await,
        0,
        "no admission control"
    );
    let running = hardening.start();
    let mut events = running.subscribe();
    // Memory far past the critical mark.
    readings.set_memory(MemoryReading {
        process_rss: 990,
        system_total: 1 << 30,
        ..Default::default()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(running.health().shedding_below, None, "nothing is shed");
    assert_eq!(
        refused_of_concurrent(layer, 3).await,
        0,
        "memory pressure sheds nothing"
    );
    running
        .request_resource(
            "cpu",
            "t",
            tower_hardening::Priority::LOW,
            Requirements::new(),
        )
        .await
        .expect("a LOW request for a pool is not shed");
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event.kind(),
                EventKind::Shed { .. } | EventKind::MemoryPressure { .. }
            ),
            "{event:?}"
        );
    }
    running.shutdown().await;
}

#[test]
fn validate_refuses_what_the_metrics_collector_refuses() {
    // 14 days of 10 s buckets is more than the collector keeps.
    let err = refused_toml(r#"metrics_retention = "14days""#, "metrics_retention");
    assert!(err.to_string().contains("14days"), "{err}");
    assert!(err.to_string().contains("100,000"), "{err}");
    let err = refused_toml(r#"metrics_resolution = "500us""#, "metrics_resolution");
    assert!(err.to_string().contains("500us"), "{err}");
    assert!(err.to_string().contains("1ms"), "{err}");
    // A value built by hand is refused by validate(), not only at build.
    let config = SystemHardeningConfig {
        metrics_resolution: Duration::from_micros(500),
        ..SystemHardeningConfig::default()
    };
    assert_eq!(config.validate().unwrap_err().field(), "metrics_resolution");
}

#[test]
fn reserved_service_names_are_refused() {
    for name in ["process", "memory"] {
        let err = refused_toml(&format!("[services.{name}]\ntimeout = \"1s\""), "services");
        assert!(
            err.to_string().contains(name) && err.to_string().contains("reserved"),
            "{err}"
        );
        refused_toml(
            &format!("recoverable_services = [\"{name}\"]"),
            "recoverable_services[0]",
        );
        let err = SystemHardening::builder(SystemHardeningConfig::default())
            .service(name, Idle)
            .build()
            .expect_err("a reserved name is refused in code too");
        assert!(
            err.to_string().contains(name) && err.to_string().contains("reserved"),
            "{err}"
        );
    }
}

#[test]
#[allow(
    clippy::result_large_err,
    reason = "figment's Jail decides the closure's error type"
)]
fn the_environment_overrides_a_file_in_either_naming() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "camel.json",
            r#"{ "healthCheckIntervalMs": 30000,
                 "performanceThresholds": { "processCpuPercent": 50 } }"#,
        )?;
        jail.create_file(
            "camel.toml",
            "healthCheckIntervalMs = 30000\n[performanceThresholds]\nprocessCpuPercent = 50\n",
        )?;
        jail.create_file(
            "snake.toml",
            "health_check_interval = 30000\n[performance_thresholds]\nprocess_cpu_percent = 50\n",
        )?;
        jail.set_env("HARDENING_HEALTH_CHECK_INTERVAL", "10s");
        jail.set_env(
            "HARDENING_PERFORMANCE_THRESHOLDS__PROCESS_CPU_PERCENT",
            "70",
        );
        for file in ["camel.json", "camel.toml", "snake.toml"] {
            let config = SystemHardeningConfig::from_path_and_env(file, "HARDENING")
                .unwrap_or_else(|err| panic!("{file}: {err}"));
            assert_eq!(
                config.health_check_interval,
                Duration::from_secs(10),
                "{file}"
            );
            assert_eq!(
                config.performance_thresholds.process_cpu_percent, 70.0,
                "{file}"
            );
        }

        // A bad value over a camelCase file names the variable.
        jail.set_env("HARDENING_HEALTH_CHECK_INTERVAL", "soon");
        let err = SystemHardeningConfig::from_path_and_env("camel.json", "HARDENING").unwrap_err();
        assert_eq!(err.field(), "HARDENING_HEALTH_CHECK_INTERVAL", "{err}");
        assert!(err.to_string().contains("soon"), "{err}");
        jail.set_env("HARDENING_HEALTH_CHECK_INTERVAL", "0");
        let err = SystemHardeningConfig::from_path_and_env("camel.toml", "HARDENING").unwrap_err();
        assert_eq!(err.field(), "HARDENING_HEALTH_CHECK_INTERVAL", "{err}");

        // A file that writes one key in both namings is refused, naming both.
        jail.create_file(
            "both.toml",
            "healthCheckIntervalMs = 30000\nhealth_check_interval = \"20s\"\n",
        )?;
        jail.set_env("HARDENING_HEALTH_CHECK_INTERVAL", "10s");
        let err = SystemHardeningConfig::from_path_and_env("both.toml", "HARDENING").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("healthCheckIntervalMs") && message.contains("health_check_interval"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn the_ci_script_writes_nothing_under_target() {
    // With CARGO_TARGET_DIR set, target/ need not exist: logs go to a
    // directory the script makes, and binaries are found where cargo put
    // them.
    for script in [".ci/run", ".ci/instructions"] {
        let path = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or_default();
            assert!(
                !code.contains(" target/") && !code.contains("=target/"),
                "{script}:{}: {line}",
                number + 1
            );
        }
    }
}

// ---------------------------------------------------------------------
// Properties over generated configurations: what validate() accepts,
// build() and start() accept; a file in either naming with the
// environment over it reads as the same keys written in one file.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tower_hardening::config::{BreakerConfig, JitterConfig, PerformanceThresholds};

/// Mostly `valid` (values that agree with each other), now and then
/// `wild` (anything of the type): about one wild value in a generated
/// configuration, so both sides of every limit are tried.
fn mostly<T: std::fmt::Debug>(
    valid: impl Strategy<Value = T> + 'static,
    wild: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![60 => valid, 1 => wild].boxed()
}

/// Any duration: zero, sub-millisecond, ordinary, and far past what a
/// timer can take.
fn wild_duration() -> BoxedStrategy<Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (1u64..1_000_000).prop_map(Duration::from_micros),
        (1u64..400_000).prop_map(Duration::from_secs),
        any::<u64>().prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_secs),
    ]
    .boxed()
}

fn duration(valid: std::ops::Range<u64>) -> BoxedStrategy<Duration> {
    mostly(valid.prop_map(Duration::from_millis), wild_duration())
}

fn wild_fraction() -> BoxedStrategy<f64> {
    prop_oneof![
        -1.0f64..3.0,
        Just(0.0),
        Just(1.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0)
    ]
    .boxed()
}

fn fraction(valid: std::ops::RangeInclusive<f64>) -> BoxedStrategy<f64> {
    mostly(valid, wild_fraction())
}

fn count(valid: std::ops::Range<u32>) -> BoxedStrategy<u32> {
    mostly(
        valid,
        prop_oneof![Just(0u32), any::<u32>(), 0u32..2_000_000],
    )
}

fn switch() -> BoxedStrategy<bool> {
    any::<bool>().boxed()
}

prop_compose! {
    fn any_breaker()(
        enabled in switch(),
        failure_rate_threshold in fraction(0.01..=1.0),
        slow_call_rate_threshold in fraction(0.01..=1.0),
        slow_call_duration in proptest::option::of(duration(1..10_000)),
        window in prop_oneof![
            count(20..1_000).prop_map(WindowConfig::Count),
            duration(1..120_000).prop_map(WindowConfig::Time),
        ],
        minimum_calls in count(1..20),
        wait_in_open in duration(1..30_000),
        max_wait_in_open in duration(30_000..300_000),
        half_open_permits in count(1..10),
        probe_timeout in duration(1..30_000),
    ) -> BreakerConfig {
        BreakerConfig {
            enabled, failure_rate_threshold, slow_call_rate_threshold, slow_call_duration,
            sliding_window: window, minimum_calls, wait_in_open, max_wait_in_open, half_open_permits,
            probe_timeout,
        }
    }
}

prop_compose! {
    fn any_retry()(
        enabled in switch(),
        max_attempts in count(1..5),
        initial_backoff in duration(1..50),
        max_backoff in duration(50..2_000),
        jitter in prop_oneof![Just(JitterConfig::None), Just(JitterConfig::Full), Just(JitterConfig::Equal)],
        budget_ratio in mostly(0.0f64..10.0, prop_oneof![wild_fraction(), 0.0f64..2000.0]),
        budget_min_per_second in count(0..100),
        budget_ttl in duration(1_000..60_000),
        trust_idempotency_key in any::<bool>(),
    ) -> RetryConfig {
        RetryConfig {
            enabled, max_attempts, initial_backoff, max_backoff, jitter, budget_ratio,
            budget_min_per_second, budget_ttl, trust_idempotency_key,
        }
    }
}

prop_compose! {
    fn any_limit()(
        enabled in switch(),
        max_concurrency in count(1..100),
        max_queue in count(0..1_000),
        queue_timeout in duration(1..5_000),
    ) -> LimitConfig {
        LimitConfig { enabled, max_concurrency, max_queue, queue_timeout }
    }
}

prop_compose! {
    fn any_fault()(
        enabled in switch(),
        error_rate in fraction(0.0..=1.0),
        hang_rate in mostly(Just(0.0), wild_fraction()),
        status_rate in fraction(0.0..=1.0),
        status in proptest::option::of(mostly(100u16..600, prop_oneof![0u16..20, any::<u16>()])),
        latency_rate in fraction(0.0..=1.0),
        latency in duration(0..1_000),
    ) -> FaultConfig {
        FaultConfig { enabled, error_rate, hang_rate, status_rate, status, latency_rate, latency }
    }
}

prop_compose! {
    fn any_service()(
        criticality in any::<u8>(),
        timeout in proptest::option::of(duration(1..10_000)),
        breaker in any_breaker(),
        retry in any_retry(),
        limit in any_limit(),
        fault in any_fault(),
    ) -> ServiceConfig {
        ServiceConfig {
            criticality: Priority(criticality), timeout, breaker, retry, limit, fault,
            ..ServiceConfig::default()
        }
    }
}

fn any_service_name() -> BoxedStrategy<String> {
    mostly(
        prop_oneof![Just("api".to_owned()), Just("model-inference".to_owned())],
        prop_oneof![
            Just("process".to_owned()),
            Just("memory".to_owned()),
            Just(" ".to_owned())
        ],
    )
}

prop_compose! {
    fn any_top_level()(
        switches in any::<[bool; 5]>(),
        health_check_interval in duration(1..60_000),
        performance_check_interval in duration(1..60_000),
        max_resource_memory in proptest::option::of(mostly(1u64..(1 << 40), prop_oneof![Just(0u64), any::<u64>()])),
        max_recovery_attempts in count(1..5),
        recovery_backoff in duration(1..1_000),
        max_recovery_backoff in duration(1_000..60_000),
        health_check_timeout in duration(1..10_000),
        unhealthy_after_failed_checks in count(1..5),
        marks in (fraction(0.1..=0.8), fraction(0.85..=1.0)),
    ) -> SystemHardeningConfig {
        SystemHardeningConfig {
            enable_health_monitoring: switches[0],
            enable_performance_monitoring: switches[1],
            enable_error_recovery: switches[2],
            enable_resource_management: switches[3],
            expose_details: switches[4],
            health_check_interval,
            performance_check_interval,
            max_resource_memory,
            max_recovery_attempts,
            recovery_backoff,
            max_recovery_backoff,
            health_check_timeout,
            unhealthy_after_failed_checks,
            memory_warning: marks.0,
            memory_critical: marks.1,
            ..SystemHardeningConfig::default()
        }
    }
}

prop_compose! {
    fn any_config()(
        top in any_top_level(),
        thresholds in (
            mostly(1.0f64..400.0, wild_fraction()),
            mostly(1.0f64..=100.0, wild_fraction().prop_map(|f| f * 150.0)),
            duration(1..1_000),
        ),
        metrics in (duration(60_000..86_400_000), duration(1_000..60_000)),
        recoverable in proptest::collection::vec(any_service_name(), 0..3),
        services in proptest::collection::btree_map(any_service_name(), any_service(), 0..3),
    ) -> SystemHardeningConfig {
        SystemHardeningConfig {
            performance_thresholds: PerformanceThresholds {
                process_cpu_percent: thresholds.0,
                memory_percent: thresholds.1,
                event_loop_p99: thresholds.2,
            },
            metrics_retention: metrics.0,
            metrics_resolution: metrics.1,
            recoverable_services: recoverable,
            services,
            ..top
        }
    }
}

/// Builds, makes every stack of every configured service, starts the
/// monitor on a paused clock, calls each service once, and shuts down:
/// none of it may fail or panic for a configuration validate() accepted.
fn builds_and_starts(config: SystemHardeningConfig) {
    let names: Vec<String> = config.services.keys().cloned().collect();
    // Recoverable services are rebuilt through the services registered
    // in code: register each one named (build() refuses a name that
    // matches none).
    let mut builder = SystemHardening::builder(config.clone()).readings(quiet_readings());
    let recoverable: std::collections::BTreeSet<&String> =
        config.recoverable_services.iter().collect();
    for name in recoverable {
        builder = builder.service(name.clone(), Idle);
    }
    let hardening = builder.build().unwrap_or_else(|err| {
        panic!("validate() accepted what build() refused: {err}\n{config:#?}")
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut layers = Vec::new();
        for name in &names {
            layers.push(hardening.layer(name).unwrap_or_else(|err| {
                panic!("validate() accepted a section layer({name}) refused: {err}")
            }));
            hardening.http_layer(name).unwrap();
            hardening.grpc_layer(name).unwrap();
        }
        let handle = hardening.start();
        for layer in layers {
            let svc = ServiceBuilder::new()
                .layer(layer)
                .service(service_fn(|()| async { Ok::<_, std::io::Error>(()) }));
            // A fault's latency or a retry's backoff may be long: the
            // paused clock skips it, and a bound keeps a hang finite.
            let _ = tokio::time::timeout(Duration::from_secs(3600), svc.oneshot(())).await;
        }
        // A few ticks of each kind (intervals of a millisecond are
        // valid, so a longer stretch costs real time).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = handle.health();
        handle.shutdown().await;
    });
}

/// Runs `test` on a thread with a large stack: the generated strategies
/// nest deeply, beyond a test thread's 2 MiB in a debug build.
fn with_large_stack(test: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(test)
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

#[test]
fn any_configuration_validate_accepts_builds_and_starts() {
    with_large_stack(any_configuration_validate_accepts_builds_and_starts_body);
}

fn any_configuration_validate_accepts_builds_and_starts_body() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let accepted = AtomicU32::new(0);
    runner
        .run(&any_config(), |config| {
            if config.validate().is_ok() {
                accepted.fetch_add(1, Ordering::Relaxed);
                builds_and_starts(config);
            }
            Ok(())
        })
        .unwrap();
    // Not a vacuous property: a good share of the cases were valid.
    let accepted = accepted.into_inner();
    assert!(
        accepted >= 16,
        "only {accepted} of 256 generated configurations were valid"
    );
}

/// A top-level or threshold key as the file (either naming) and the
/// environment write it.
struct LayeredKey {
    snake: &'static str,
    camel: &'static str,
    /// Under `performance_thresholds`.
    nested: bool,
}

const LAYERED_KEYS: &[LayeredKey] = &[
    LayeredKey {
        snake: "health_check_interval",
        camel: "healthCheckIntervalMs",
        nested: false,
    },
    LayeredKey {
        snake: "performance_check_interval",
        camel: "performanceCheckInterval",
        nested: false,
    },
    LayeredKey {
        snake: "metrics_resolution",
        camel: "metricsResolution",
        nested: false,
    },
    LayeredKey {
        snake: "max_recovery_attempts",
        camel: "maxRecoveryAttempts",
        nested: false,
    },
    LayeredKey {
        snake: "enable_resource_management",
        camel: "enableResourceManagement",
        nested: false,
    },
    LayeredKey {
        snake: "memory_warning",
        camel: "memoryWarning",
        nested: false,
    },
    LayeredKey {
        snake: "memory_critical",
        camel: "memoryCritical",
        nested: false,
    },
    LayeredKey {
        snake: "process_cpu_percent",
        camel: "processCpuPercent",
        nested: true,
    },
];

/// A value for a key, written alike in TOML and in a variable (figment
/// reads `10s` as a string, `1500` as an integer, `0.5` as a float).
fn layered_value(key: &LayeredKey) -> BoxedStrategy<String> {
    match key.snake {
        "max_recovery_attempts" => (0u32..5).prop_map(|n| n.to_string()).boxed(),
        "enable_resource_management" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        "memory_warning" | "memory_critical" | "process_cpu_percent" => prop_oneof![
            (0u32..=100).prop_map(|n| format!("{:.2}", f64::from(n) / 100.0)),
            Just("90.0".to_owned())
        ]
        .boxed(),
        _ => prop_oneof![
            (0u64..50).prop_map(|n| (n * 100).to_string()),
            (0u64..50).prop_map(|n| format!("{}ms", n * 100)),
            (0u64..1_000).prop_map(|n| format!("{n}us")),
            Just("soon".to_owned()),
        ]
        .boxed(),
    }
}

/// `value` as a TOML literal.
fn toml_literal(value: &str) -> String {
    if value.parse::<f64>().is_ok() || value == "true" || value == "false" {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

/// Writes `entries` (key, value) as TOML, the nested ones under
/// `table`.
fn toml_of(entries: &[(&LayeredKey, String, &'static str)], table: &str) -> String {
    let mut top = String::new();
    let mut nested = String::new();
    for (key, value, name) in entries {
        let line = format!("{name} = {}\n", toml_literal(value));
        if key.nested {
            nested.push_str(&line)
        } else {
            top.push_str(&line)
        }
    }
    if !nested.is_empty() {
        top.push_str(&format!("[{table}]\n{nested}"));
    }
    top
}

/// Where a generated key is written: nowhere, the file, the environment,
/// or both.
fn any_layering() -> BoxedStrategy<Vec<(u8, String, String)>> {
    LAYERED_KEYS
        .iter()
        .map(|key| (0u8..4, layered_value(key), layered_value(key)))
        .collect::<Vec<_>>()
        .boxed()
}

#[test]
fn the_environment_over_a_file_in_either_naming_reads_as_one_file() {
    with_large_stack(the_environment_over_a_file_body);
}

#[allow(
    clippy::result_large_err,
    reason = "figment's Jail decides the closure's error type"
)]
fn the_environment_over_a_file_body() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(any_layering(), any::<bool>()), |(layering, camel)| {
            let mut file = Vec::new();
            let mut merged = Vec::new();
            let mut env = Vec::new();
            for (key, (place, file_value, env_value)) in LAYERED_KEYS.iter().zip(&layering) {
                let in_file = *place == 1 || *place == 3;
                let in_env = *place >= 2;
                if in_file {
                    file.push((
                        key,
                        file_value.clone(),
                        if camel { key.camel } else { key.snake },
                    ));
                }
                if in_env {
                    let var = if key.nested {
                        format!(
                            "HARDENING_PERFORMANCE_THRESHOLDS__{}",
                            key.snake.to_uppercase()
                        )
                    } else {
                        format!("HARDENING_{}", key.snake.to_uppercase())
                    };
                    env.push((var, env_value.clone()));
                    merged.push((key, env_value.clone(), key.snake));
                } else if in_file {
                    merged.push((key, file_value.clone(), key.snake));
                }
            }
            let file_text = toml_of(
                &file,
                if camel {
                    "performanceThresholds"
                } else {
                    "performance_thresholds"
                },
            );
            let one_file =
                SystemHardeningConfig::from_toml_str(&toml_of(&merged, "performance_thresholds"));
            let layered = std::sync::Mutex::new(None);
            figment::Jail::expect_with(|jail| {
                jail.create_file("hardening.toml", &file_text)?;
                for (var, value) in &env {
                    jail.set_env(var, value);
                }
                *layered.lock().unwrap() = Some(SystemHardeningConfig::from_path_and_env(
                    "hardening.toml",
                    "HARDENING",
                ));
                Ok(())
            });
            let layered = layered.into_inner().unwrap().unwrap();
            let context = format!("file:\n{file_text}\nenvironment: {env:?}");
            match (&layered, &one_file) {
                (Ok(layered), Ok(one)) => {
                    prop_assert_eq!(layered, one, "{}", context);
                    builds_and_starts(layered.clone());
                }
                (Err(err), Err(expected)) => {
                    // A value the environment set is named by its variable.
                    let set_by_env = env.iter().find(|(var, _)| {
                        var.to_ascii_lowercase()
                            .replace("hardening_", "")
                            .replace("__", ".")
                            == expected.field()
                    });
                    if let Some((var, _)) = set_by_env {
                        prop_assert_eq!(err.field(), var.as_str(), "{} ({})", context, err);
                    }
                }
                _ => prop_assert!(
                    false,
                    "{}\nlayered: {:?}\none file: {:?}",
                    context,
                    layered.as_ref().map(drop),
                    one_file.as_ref().map(drop)
                ),
            }
            Ok(())
        })
        .unwrap();
}
