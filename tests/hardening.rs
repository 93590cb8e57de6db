//! `SystemHardening`: the seed's usage, health rules, recovery, the
//! monitor's robustness, event-loop latency, memory pressure, shutdown and
//! configuration from the environment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::{CircuitState, EventKind, HealthState, RejectionKind, rejection_of};
use tower_hardening::health::RecoveryState;
use tower_hardening::limit::{Resource, ResourcePool};
use tower_hardening::managed::BoxFuture;
use tower_hardening::monitor::{ManualReadings, MemoryReading};
use tower_hardening::{
    BoxError, HardeningHandle, ManagedService, Priority, Requirements, SystemHardening,
};

/// A backend that is broken until `initialize` runs (when `heals`), and
/// counts its lifecycle calls.
#[derive(Clone, Default)]
struct Backend {
    broken: Arc<AtomicBool>,
    heals: Arc<AtomicBool>,
    initialized: Arc<AtomicU32>,
    shut_down: Arc<AtomicU32>,
    hang_checks: Arc<AtomicBool>,
}

impl ManagedService for Backend {
    fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let n = self.initialized.fetch_add(1, Ordering::SeqCst);
            // The first initialize (at start) always works.
            if n == 0 || self.heals.load(Ordering::SeqCst) {
                self.broken.store(false, Ordering::SeqCst);
                Ok(())
            } else {
                Err("model file is corrupt".into())
            }
        })
    }

    fn health_check(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            if self.hang_checks.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.shut_down.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// Lets the monitor task catch up with what just happened (paused time:
/// the runtime runs every ready task before the clock moves).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn config(toml: &str) -> SystemHardeningConfig {
    SystemHardeningConfig::from_toml_str(toml).expect("valid test configuration")
}

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

type Call = Box<dyn FnMut(bool) -> BoxFuture<'static, Result<(), BoxError>> + Send>;

/// A hardened service whose calls fail when asked to, or while `backend`
/// is broken.
fn hardened(hardening: &HardeningHandle, name: &str, backend: Option<Backend>) -> Call {
    let layer = hardening.layer(name).expect("a known service");
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |fail: bool| {
            let broken = backend
                .as_ref()
                .is_some_and(|b| b.broken.load(Ordering::SeqCst));
            async move {
                // A concrete error type: with `BoxError` here, rustc cannot
                // prove the boxed future `Send` (the same holds for tower's
                // own `Timeout`; rust-lang/rust#110338).
                if fail || broken {
                    Err(std::io::Error::other("backend failed"))
                } else {
                    Ok(())
                }
            }
        }));
    Box::new(move |fail| {
        let svc = svc.clone();
        Box::pin(async move { svc.oneshot(fail).await })
    })
}

const SEED: &str = r#"{
    "enableHealthMonitoring": true,
    "enablePerformanceMonitoring": true,
    "enableErrorRecovery": true,
    "enableResourceManagement": true,
    "healthCheckIntervalMs": 30000,
    "performanceCheckIntervalMs": 5000,
    "maxResourceMemory": "1GB",
    "recoverableServices": ["audio-processing", "model-inference"]
}"#;

// 1. The seed's usage section, in Rust.
#[tokio::test(start_paused = true)]
async fn the_seed_usage_section() {
    let config = SystemHardeningConfig::from_json_str(SEED).unwrap();
    let cpu = ResourcePool::builder("cpu")
        .resources((0..8).map(|i| Resource::new(format!("core-{i}")).attr("core", i)))
        .build()
        .unwrap();
    let hardening = SystemHardening::builder(config)
        .service("audio-processing", Backend::default())
        .service("model-inference", Backend::default())
        .pool(cpu)
        .readings(quiet_readings())
        .build()
        .unwrap();
    let _audio = hardening.layer("audio-processing").unwrap();
    let handle = hardening.start();
    settle().await;

    // getHealthStatus
    let health = handle.health();
    assert_eq!(health.status, HealthState::Healthy);
    assert_eq!(health.memory.limit, 1_000_000_000);
    assert!((health.memory.percentage - 10.48576).abs() < 0.001);

    // getServiceHealth
    let audio = handle.service_health("audio-processing").unwrap();
    assert_eq!(audio.status, HealthState::Healthy);
    assert_eq!(audio.circuit_state, Some(CircuitState::Closed));
    assert_eq!(
        handle
            .service_health("model-inference")
            .unwrap()
            .circuit_state,
        None,
        "no stack built for it yet"
    );
    assert!(handle.service_health("nobody").is_none());

    // requestResource('cpu', 'task-123', 2, { core: 0 })
    let lease = handle
        .request_resource(
            "cpu",
            "task-123",
            Priority(2),
            Requirements::new().require("core", 0),
        )
        .await
        .unwrap();
    assert_eq!(lease.resources()[0].name(), "core-0");
    let id = lease.detach();
    let stats = handle.resource_stats();
    assert_eq!(
        (
            stats.pools["cpu"].stats.available,
            stats.pools["cpu"].stats.active_leases
        ),
        (7, 1)
    );
    assert_eq!(stats.active_allocations, 1);
    // releaseResource: owner-checked
    assert!(handle.release_resource("cpu", id, "task-999").is_err());
    handle.release_resource("cpu", id, "task-123").unwrap();
    assert_eq!(handle.resource_stats().pools["cpu"].stats.available, 8);
    let err = handle
        .request_resource("gpu", "task-1", Priority::NORMAL, Requirements::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no resource pool `gpu`"), "{err}");
    // The memory pool is made from max_resource_memory.
    assert_eq!(stats.pools["memory"].stats.capacity, 1_000_000_000);

    // getPerformanceMetrics
    tokio::time::sleep(Duration::from_secs(5)).await;
    let performance = handle.performance().expect("measured");
    assert_eq!(performance.memory.rss, 100 << 20);
    assert!(performance.runtime.workers >= 1);
    assert!(performance.services.contains_key("audio-processing"));

    assert!(handle.ready());
    handle.shutdown().await;
    assert!(!handle.ready());
}

// 2. A breaker opening degrades the process (or makes it unhealthy when the
// service is critical); each change is one event.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_degrades_or_fails_the_process() {
    let hardening = SystemHardening::builder(config(
        r#"
        [services.audio.breaker]
        sliding_window = { count = 4 }
        minimum_calls = 4
        wait_in_open = "10s"
        half_open_permits = 1
        [services.model]
        criticality = "critical"
        [services.model.breaker]
        sliding_window = { count = 4 }
        minimum_calls = 4
        wait_in_open = "10s"
        half_open_permits = 1
        "#,
    ))
    .readings(quiet_readings())
    .build()
    .unwrap();
    let handle = hardening.start();
    let mut events = handle.subscribe();
    let mut audio = hardened(&handle, "audio", None);
    let mut model = hardened(&handle, "model", None);
    settle().await;
    assert_eq!(handle.health().status, HealthState::Healthy);

    for _ in 0..4 {
        let _ = audio(true).await;
    }
    settle().await;
    assert_eq!(
        handle.service_health("audio").unwrap().status,
        HealthState::Unhealthy
    );
    assert_eq!(
        handle.health().status,
        HealthState::Degraded,
        "audio is not critical"
    );
    assert!(handle.ready());

    for _ in 0..4 {
        let _ = model(true).await;
    }
    settle().await;
    assert_eq!(
        handle.health().status,
        HealthState::Unhealthy,
        "model is critical"
    );
    // Health is for alerts; readiness is this instance's ability to
    // serve (see `an_open_breaker_fails_readiness_only_for_services_that_opt_in`).
    assert!(handle.ready(), "{:?}", handle.readiness());

    tokio::time::sleep(Duration::from_secs(10)).await;
    audio(false).await.unwrap();
    model(false).await.unwrap();
    settle().await;
    assert_eq!(handle.health().status, HealthState::Healthy);
    assert!(handle.ready());

    // The process's changes: one event each, a chain with no repeats.
    let mut process = Vec::new();
    let mut audio_changes = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::HealthChanged { from, to } = *event.kind() {
            match event.service() {
                "process" => process.push((from, to)),
                "audio" => audio_changes.push((from, to)),
                _ => {}
            }
        }
    }
    use HealthState::*;
    assert_eq!(process.first(), Some(&(Healthy, Degraded)));
    assert_eq!(process.get(1), Some(&(Degraded, Unhealthy)));
    assert_eq!(process.last().map(|c| c.1), Some(Healthy));
    for chain in [&process, &audio_changes] {
        for pair in chain.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "a chain of changes: {chain:?}");
        }
        assert!(chain.iter().all(|(from, to)| from != to), "{chain:?}");
    }
    assert_eq!(audio_changes.first(), Some(&(Healthy, Unhealthy)));
    assert_eq!(audio_changes.last().map(|c| c.1), Some(Healthy));
    handle.shutdown().await;
}

const RECOVERABLE: &str = r#"
    recoverable_services = ["audio"]
    max_recovery_attempts = 3
    recovery_backoff = "1s"
    [services.audio.breaker]
    sliding_window = { count = 4 }
    minimum_calls = 4
    wait_in_open = "30s"
    half_open_permits = 2
"#;

// 3a. A service whose calls fail until it is re-initialised recovers.
#[tokio::test(start_paused = true)]
async fn a_recoverable_service_is_restarted_and_its_breaker_closes() {
    let backend = Backend::default();
    backend.heals.store(true, Ordering::SeqCst);
    let hardening = SystemHardening::builder(config(RECOVERABLE))
        .service("audio", backend.clone())
        .readings(quiet_readings())
        .build()
        .unwrap();
    let handle = hardening.start();
    let mut events = handle.subscribe();
    let mut audio = hardened(&handle, "audio", Some(backend.clone()));
    settle().await;
    assert_eq!(backend.initialized.load(Ordering::SeqCst), 1);

    backend.broken.store(true, Ordering::SeqCst);
    for _ in 0..4 {
        assert!(audio(false).await.is_err());
    }
    settle().await;
    // Shut down and initialized again; the breaker probes.
    assert_eq!(backend.shut_down.load(Ordering::SeqCst), 1);
    assert_eq!(backend.initialized.load(Ordering::SeqCst), 2);
    let audio_health = handle.service_health("audio").unwrap();
    assert_eq!(audio_health.circuit_state, Some(CircuitState::HalfOpen));
    assert_eq!(audio_health.recovery, RecoveryState::Probing);

    audio(false).await.unwrap();
    audio(false).await.unwrap();
    settle().await;
    let audio_health = handle.service_health("audio").unwrap();
    assert_eq!(audio_health.circuit_state, Some(CircuitState::Closed));
    assert_eq!(audio_health.status, HealthState::Healthy);
    assert_eq!(audio_health.recovery_attempts, 1);
    assert_eq!(audio_health.recovery, RecoveryState::Idle);

    let mut steps = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::RecoveryStep { attempt, step } = event.kind() {
            steps.push((*attempt, format!("{step:?}")));
        }
    }
    assert_eq!(
        steps,
        [(1, "Started".to_owned()), (1, "Succeeded".to_owned())]
    );
    let attempts = handle
        .metrics()
        .query("hardening_recovery_attempts_total")
        .label("service", "audio")
        .label("result", "success")
        .sum();
    assert_eq!(attempts, 1.0);
    handle.shutdown().await;
}

// 3b. One that never recovers stops after max_recovery_attempts.
#[tokio::test(start_paused = true)]
async fn a_service_that_never_recovers_gives_up_after_the_attempts() {
    let backend = Backend::default();
    let hardening = SystemHardening::builder(config(RECOVERABLE))
        .service("audio", backend.clone())
        .readings(quiet_readings())
        .build()
        .unwrap();
    let handle = hardening.start();
    let mut audio = hardened(&handle, "audio", Some(backend.clone()));
    settle().await;
    backend.broken.store(true, Ordering::SeqCst);
    for _ in 0..4 {
        let _ = audio(false).await;
    }
    // Attempts at once, after 1 s, after 2 s more.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let audio_health = handle.service_health("audio").unwrap();
    assert_eq!(audio_health.recovery, RecoveryState::GaveUp);
    assert_eq!(audio_health.recovery_attempts, 3);
    assert_eq!(audio_health.status, HealthState::Unhealthy);
    let reason = audio_health.reason.unwrap();
    assert!(
        reason.contains("recovery gave up after 3 attempts") && reason.contains("corrupt"),
        "{reason}"
    );
    assert_eq!(backend.initialized.load(Ordering::SeqCst), 1 + 3);
    // It stays given up: no fourth attempt.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(backend.initialized.load(Ordering::SeqCst), 4);
    assert_eq!(audio_health.circuit_state, Some(CircuitState::ForcedOpen));
    handle.shutdown().await;
}

// 4. A hung health check fails after its timeout; the monitor goes on.
#[tokio::test(start_paused = true)]
async fn a_hung_health_check_fails_and_the_monitor_keeps_ticking() {
    let backend = Backend::default();
    backend.hang_checks.store(true, Ordering::SeqCst);
    let hardening = SystemHardening::builder(config(
        r#"
        health_check_interval = "1s"
        health_check_timeout = "200ms"
        unhealthy_after_failed_checks = 3
        "#,
    ))
    .service("audio", backend)
    .readings(quiet_readings())
    .build()
    .unwrap();
    let handle = hardening.start();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let audio = handle.service_health("audio").unwrap();
    assert_eq!(audio.failed_checks, 1);
    assert_eq!(audio.status, HealthState::Degraded);
    assert!(audio.reason.unwrap().contains("timed out after 200ms"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let audio = handle.service_health("audio").unwrap();
    assert_eq!(audio.failed_checks, 3);
    assert_eq!(audio.status, HealthState::Unhealthy);
    handle.shutdown().await;
}

// 5. A blocked worker shows as event-loop latency. Real time: the point is
// a real thread blocked for real.
#[tokio::test(flavor = "current_thread")]
async fn a_blocked_worker_shows_as_event_loop_latency() {
    let hardening = SystemHardening::builder(config(r#"performance_check_interval = "300ms""#))
        .readings(quiet_readings())
        .build()
        .unwrap();
    let handle = hardening.start();
    tokio::time::sleep(Duration::from_millis(120)).await;
    std::thread::sleep(Duration::from_millis(200));
    let blocked_at = std::time::SystemTime::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let performance = handle.performance();
        if let Some(performance) = performance.filter(|p| p.measured_at > blocked_at) {
            assert!(
                performance.event_loop.max >= Duration::from_millis(150),
                "{:?}",
                performance.event_loop
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no performance tick"
        );
    }
    handle.shutdown().await;
}

// 6. Memory pressure sheds LOW, then NORMAL, never CRITICAL, and clears
// with hysteresis.
#[tokio::test(start_paused = true)]
async fn memory_pressure_sheds_by_priority_with_hysteresis() {
    let readings = quiet_readings();
    let hardening = SystemHardening::builder(config(
        r#"
        max_resource_memory = 1000
        performance_check_interval = "1s"
        memory_warning = 0.80
        memory_critical = 0.95
        "#,
    ))
    .pool(ResourcePool::builder("cpu").capacity(100).build().unwrap())
    .readings(readings.clone())
    .build()
    .unwrap();
    let handle = hardening.start();
    let mut events = handle.subscribe();
    let ask = |priority: Priority| {
        let handle = handle.clone();
        async move {
            handle
                .request_resource("cpu", "t", priority, Requirements::new())
                .await
                .map(drop)
        }
    };
    let set = |rss: u64| {
        readings.set_memory(MemoryReading {
            process_rss: rss,
            system_total: 1 << 30,
            ..Default::default()
        })
    };
    let tick = || tokio::time::sleep(Duration::from_secs(1));

    set(500);
    tick().await;
    assert_eq!(handle.health().shedding_below, None);
    assert!(ask(Priority::LOW).await.is_ok());

    set(850); // past the warning mark: LOW goes
    tick().await;
    assert_eq!(handle.health().shedding_below, Some(Priority::NORMAL));
    let err = ask(Priority::LOW).await.unwrap_err();
    assert_eq!(
        rejection_of(&*err).map(|r| r.kind),
        Some(RejectionKind::Overloaded)
    );
    assert!(ask(Priority::NORMAL).await.is_ok());
    assert_eq!(handle.health().status, HealthState::Degraded);

    set(900); // past halfway: NORMAL goes
    tick().await;
    assert!(ask(Priority::NORMAL).await.is_err());
    assert!(ask(Priority::HIGH).await.is_ok());

    set(990); // past the critical mark: everything but CRITICAL
    tick().await;
    assert!(ask(Priority::HIGH).await.is_err());
    assert!(
        ask(Priority::CRITICAL).await.is_ok(),
        "CRITICAL is never shed"
    );
    assert_eq!(handle.health().status, HealthState::Unhealthy);

    set(780); // below the warning mark, but within the hysteresis
    tick().await;
    assert_eq!(handle.health().shedding_below, Some(Priority::NORMAL));
    assert!(ask(Priority::LOW).await.is_err());
    set(700);
    tick().await;
    assert_eq!(handle.health().shedding_below, None);
    assert!(ask(Priority::LOW).await.is_ok());

    let mut shed = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::Shed { priority } = event.kind() {
            shed.push(*priority);
        }
    }
    assert_eq!(shed, [Priority::LOW, Priority::NORMAL, Priority::HIGH]);
    handle.shutdown().await;
}

// 7. After shutdown: no task of the library alive, every lease released,
// pools refuse with a clear error, and a second shutdown returns at once.
#[tokio::test(start_paused = true)]
async fn shutdown_leaves_nothing_behind() {
    let backend = Backend::default();
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let hardening = SystemHardening::builder(config(
        r#"
        recoverable_services = ["audio"]
        performance_check_interval = "1s"
        "#,
    ))
    .service("audio", backend.clone())
    .pool(ResourcePool::builder("cpu").capacity(4).build().unwrap())
    .readings(quiet_readings())
    .build()
    .unwrap();
    let handle = hardening.start();
    let mut audio = hardened(&handle, "audio", None);
    audio(false).await.unwrap();
    let held = handle
        .request_resource("cpu", "t", Priority::NORMAL, Requirements::new().units(3))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            > tasks_before
    );

    handle.shutdown().await;
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        tasks_before,
        "the monitor and its probe are gone"
    );
    assert_eq!(backend.shut_down.load(Ordering::SeqCst), 1);
    assert!(held.is_reclaimed());
    assert_eq!(handle.resource_stats().pools["cpu"].stats.in_use, 0);
    let err = handle
        .request_resource("cpu", "t", Priority::CRITICAL, Requirements::new())
        .await
        .unwrap_err();
    assert_eq!(
        rejection_of(&*err).map(|r| r.kind),
        Some(RejectionKind::PoolClosed)
    );
    assert_eq!(err.to_string(), "pool `cpu` is shut down");
    let err = audio(false).await.unwrap_err();
    assert_eq!(
        rejection_of(&*err).map(|r| r.kind),
        Some(RejectionKind::PoolClosed)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(1), handle.shutdown())
            .await
            .is_ok(),
        "a second shutdown returns at once"
    );
    assert_eq!(
        backend.shut_down.load(Ordering::SeqCst),
        1,
        "services shut down once"
    );
}

// 8. The environment wins over the file; a bad value names its variable.
#[test]
#[allow(
    clippy::result_large_err,
    reason = "figment's Jail decides the closure's error type"
)]
fn environment_overrides_the_file_and_bad_values_name_the_variable() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "hardening.toml",
            r#"
            health_check_interval = "30s"
            [services.audio-processing.breaker]
            minimum_calls = 10
            "#,
        )?;
        jail.set_env("HARDENING_HEALTH_CHECK_INTERVAL", "10s");
        jail.set_env(
            "HARDENING_SERVICES__AUDIO_PROCESSING__BREAKER__MINIMUM_CALLS",
            "5",
        );
        let config =
            SystemHardeningConfig::from_path_and_env("hardening.toml", "HARDENING").unwrap();
        assert_eq!(config.health_check_interval, Duration::from_secs(10));
        assert_eq!(config.service("audio-processing").breaker.minimum_calls, 5);

        jail.set_env("HARDENING_HEALTH_CHECK_INTERVAL", "soon");
        let err =
            SystemHardeningConfig::from_path_and_env("hardening.toml", "HARDENING").unwrap_err();
        assert_eq!(err.field(), "HARDENING_HEALTH_CHECK_INTERVAL", "{err}");
        assert!(err.to_string().contains("soon"), "{err}");

        jail.set_env("HARDENING_HEALTH_CHECK_INTERVAL", "0");
        let err = SystemHardeningConfig::from_env("HARDENING").unwrap_err();
        assert_eq!(err.field(), "HARDENING_HEALTH_CHECK_INTERVAL", "{err}");
        assert!(err.to_string().contains("above zero"), "{err}");

        jail.set_env("HARDENING_HEALTH_CHECK_INTERVAL", "10s");
        jail.set_env(
            "HARDENING_SERVICES__AUDIO_PROCESSING__BREAKER__FAILURE_RATE_THRESHOLD",
            "2",
        );
        let err = SystemHardeningConfig::from_env("HARDENING").unwrap_err();
        assert_eq!(
            err.field(),
            "HARDENING_SERVICES__AUDIO_PROCESSING__BREAKER__FAILURE_RATE_THRESHOLD",
            "{err}"
        );
        Ok(())
    });
}

#[tokio::test]
async fn a_layer_for_an_unknown_service_is_an_error_naming_it() {
    let hardening = SystemHardening::builder(SystemHardeningConfig::default())
        .service("audio", Backend::default())
        .build()
        .unwrap();
    assert!(hardening.layer("audio").is_ok(), "registered: the defaults");
    let err = hardening.layer("vidoe").unwrap_err();
    assert!(err.to_string().contains("no service `vidoe`"), "{err}");
}

/// A monitor future dropped by whoever ran it (a `select!` that ended)
/// does not leave `shutdown()` waiting for it: the steps still run.
#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_for_a_monitor_that_was_dropped() {
    let backend = Backend::default();
    let hardening = SystemHardening::builder(SystemHardeningConfig::default())
        .service("audio", backend.clone())
        .pool(ResourcePool::builder("cpu").capacity(1).build().unwrap())
        .readings(quiet_readings())
        .build()
        .unwrap();
    let (handle, monitor) = hardening.into_parts();
    let task = tokio::spawn(monitor);
    settle().await;
    task.abort();
    let _ = task.await;
    tokio::time::timeout(Duration::from_secs(1), handle.shutdown())
        .await
        .expect("shutdown returns");
    assert_eq!(backend.shut_down.load(Ordering::SeqCst), 1);
    let err = handle
        .request_resource("cpu", "t", Priority::NORMAL, Requirements::new())
        .await
        .unwrap_err();
    assert_eq!(
        rejection_of(&*err).map(|r| r.kind),
        Some(RejectionKind::PoolClosed)
    );
}

/// A shutdown given up on half-way (its caller timed out) still completes,
/// and a later call returns once it has.
#[tokio::test(start_paused = true)]
async fn a_cancelled_shutdown_still_completes() {
    struct SlowShutdown;
    impl ManagedService for SlowShutdown {
        fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>> {
            Box::pin(async { Ok(()) })
        }
        fn shutdown(&self) -> BoxFuture<'_, Result<(), BoxError>> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(())
            })
        }
    }
    let hardening = SystemHardening::builder(SystemHardeningConfig::default())
        .service("slow", SlowShutdown)
        .readings(quiet_readings())
        .build()
        .unwrap();
    let handle = hardening.handle();
    drop(hardening); // never started
    assert!(
        tokio::time::timeout(Duration::from_millis(10), handle.shutdown())
            .await
            .is_err()
    );
    tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .expect("the second call returns once the steps are done");
}

/// A panic in the application's health check is a failed check; the
/// monitor goes on.
#[tokio::test(start_paused = true)]
async fn a_panicking_health_check_is_a_failed_check() {
    struct Panicky;
    impl ManagedService for Panicky {
        fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>> {
            Box::pin(async { Ok(()) })
        }
        fn health_check(&self) -> BoxFuture<'_, Result<(), BoxError>> {
            Box::pin(async { panic!("bug in the health check") })
        }
    }
    let hardening = SystemHardening::builder(config(r#"health_check_interval = "1s""#))
        .service("panicky", Panicky)
        .readings(quiet_readings())
        .build()
        .unwrap();
    let handle = hardening.start();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let health = handle.service_health("panicky").unwrap();
    assert_eq!(health.failed_checks, 2);
    assert!(health.reason.unwrap().contains("health check panicked"));
    handle.shutdown().await;
}

/// The issue's own call: `require("core", "0")` against resources whose
/// `core` attribute is the number 0.
#[tokio::test(start_paused = true)]
async fn a_requirement_written_as_text_matches_a_number() {
    let cpu = ResourcePool::builder("cpu")
        .resources((0..8).map(|i| Resource::new(format!("core-{i}")).attr("core", i)))
        .build()
        .unwrap();
    let handle = SystemHardening::builder(SystemHardeningConfig::default())
        .pool(cpu)
        .readings(quiet_readings())
        .build()
        .unwrap()
        .start();
    let lease = handle
        .request_resource(
            "cpu",
            "task-123",
            Priority(2),
            Requirements::new().require("core", "0"),
        )
        .await
        .unwrap();
    assert_eq!(lease.resources()[0].name(), "core-0");
    let id = lease.detach();
    handle.release_resource("cpu", id, "task-123").unwrap();
    handle.shutdown().await;
}

/// `service_health(name)` reads its breaker's window live, like the
/// circuit state: 13 calls read 13 at once, not the 6 of the last tick.
#[tokio::test(start_paused = true)]
async fn service_health_reads_calls_live() {
    let handle = SystemHardening::builder(config(
        r#"
        health_check_interval = "60s"
        performance_check_interval = "60s"
        [services.audio.breaker]
        sliding_window = { count = 20 }
        minimum_calls = 10
        "#,
    ))
    .readings(quiet_readings())
    .build()
    .unwrap()
    .start();
    let mut audio = hardened(&handle, "audio", None);
    settle().await;
    for _ in 0..6 {
        audio(false).await.unwrap();
    }
    settle().await;
    assert_eq!(handle.service_health("audio").unwrap().calls, 6);
    for _ in 0..7 {
        audio(false).await.unwrap();
    }
    let live = handle.service_health("audio").unwrap();
    assert_eq!(live.calls, 13, "{live:?}");
    assert_eq!(live.failure_rate, Some(0.0), "{live:?}");
    handle.shutdown().await;
}

/// A service whose admission is switched off has no admission pool in
/// `/metrics` (it showed one of 1,099,511,627,776 units); one with
/// admission on shows its pool.
#[tokio::test(start_paused = true)]
async fn admission_switched_off_shows_no_pool() {
    let handle = SystemHardening::builder(config(
        r#"
        performance_check_interval = "1s"
        [services.audio]
        [services.api.limit]
        max_concurrency = 4
        "#,
    ))
    .readings(quiet_readings())
    .build()
    .unwrap()
    .start();
    let mut audio = hardened(&handle, "audio", None);
    let mut api = hardened(&handle, "api", None);
    audio(false).await.unwrap();
    api(false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let text = handle.metrics().render_prometheus();
    assert!(!text.contains("1099511627776"), "{text}");
    assert!(!text.contains("audio/admission"), "{text}");
    assert!(text.contains("pool=\"api/admission\""), "{text}");
    handle.shutdown().await;
}

/// One flaky dependency must not take every replica out of rotation: an
/// open breaker of a critical service makes health unhealthy (for alerts)
/// but readiness stays true, unless the service opts in with
/// `readiness = true`.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_readiness_only_for_services_that_opt_in() {
    let breaker = r#"
        sliding_window = { count = 4 }
        minimum_calls = 4
        wait_in_open = "10s"
        half_open_permits = 1
    "#;
    let handle = SystemHardening::builder(config(&format!(
        r#"
        [services.model]
        criticality = "critical"
        [services.model.breaker]
        {breaker}
        [services.db]
        readiness = true
        [services.db.breaker]
        {breaker}
        "#
    )))
    .readings(quiet_readings())
    .build()
    .unwrap()
    .start();
    let mut model = hardened(&handle, "model", None);
    let mut db = hardened(&handle, "db", None);
    settle().await;
    assert!(handle.ready(), "{:?}", handle.readiness());

    for _ in 0..4 {
        let _ = model(true).await;
    }
    settle().await;
    assert_eq!(
        handle.health().status,
        HealthState::Unhealthy,
        "alerts see it"
    );
    assert!(handle.ready(), "{:?}", handle.readiness());

    for _ in 0..4 {
        let _ = db(true).await;
    }
    let readiness = handle.readiness();
    assert!(!readiness.ready);
    assert!(
        readiness.reasons.iter().any(|r| r.contains("`db`")),
        "{readiness:?}"
    );
    assert!(
        !readiness.reasons.iter().any(|r| r.contains("`model`")),
        "{readiness:?}"
    );
    handle.shutdown().await;
}

/// The dashboard's process figures as JSON.
async fn dashboard_process(handle: &HardeningHandle) -> serde_json::Value {
    use http_body_util::BodyExt;
    let response = handle
        .endpoints()
        .oneshot(
            http::Request::get("/dashboard/data")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let data: serde_json::Value = serde_json::from_slice(&body).unwrap();
    data["process"].clone()
}

/// Before the first performance reading (and with performance monitoring
/// off, for good) nothing is measured: RSS and event-loop p99 read "not
/// measured yet" (`null`), not 0 B and 0 ns.
#[tokio::test(start_paused = true)]
async fn performance_before_the_first_reading_is_not_measured() {
    for (toml, settled) in [("", false), ("enable_performance_monitoring = false", true)] {
        let handle = SystemHardening::builder(config(toml))
            .readings(quiet_readings())
            .build()
            .unwrap()
            .start();
        if settled {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        assert!(handle.performance().is_none(), "{toml}");
        let process = dashboard_process(&handle).await;
        assert!(process["rss_bytes"].is_null(), "{toml}: {process}");
        assert!(process["event_loop_p99_ms"].is_null(), "{toml}: {process}");
        assert!(process["cpu_percent"].is_null(), "{toml}: {process}");
        handle.shutdown().await;
    }
    // Once measured, the figures are there.
    let handle = SystemHardening::builder(config(""))
        .readings(quiet_readings())
        .build()
        .unwrap()
        .start();
    settle().await;
    let process = dashboard_process(&handle).await;
    assert_eq!(process["rss_bytes"], 100 << 20, "{process}");
    assert!(process["event_loop_p99_ms"].is_number(), "{process}");
    handle.shutdown().await;
}
