//! The operator and the monitor: an operator's breaker choice outlives
//! every recovery, health is re-derived from fresh evidence, a panicking
//! readings source or a dead monitor never reads as a frozen `Healthy`,
//! and with monitoring off nothing monitoring switched on stays on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::{CircuitState, HealthState, RejectionKind, rejection_of};
use tower_hardening::health::RecoveryState;
use tower_hardening::managed::BoxFuture;
use tower_hardening::monitor::{CpuReading, ManualReadings, MemoryReading, Readings};
use tower_hardening::{BoxError, HardeningHandle, ManagedService, SystemHardening};

/// A dependency whose lifecycle calls do what the test says.
#[derive(Clone, Default)]
struct Dependency {
    /// Initialize calls that fail before one works.
    failing_inits: Arc<AtomicU32>,
    /// Health checks fail while set.
    checks_fail: Arc<AtomicBool>,
    /// How long `initialize` takes.
    init_takes_ms: Arc<AtomicU32>,
    initialized: Arc<AtomicU32>,
}

impl ManagedService for Dependency {
    fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.initialized.fetch_add(1, Ordering::SeqCst);
            let takes = self.init_takes_ms.load(Ordering::SeqCst);
            if takes > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(takes))).await;
            }
            let failing = self.failing_inits.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_inits.store(failing - 1, Ordering::SeqCst);
                return Err("connection refused".into());
            }
            Ok(())
        })
    }

    fn health_check(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            if self.checks_fail.load(Ordering::SeqCst) {
                Err("ping failed".into())
            } else {
                Ok(())
            }
        })
    }
}

fn config(toml: &str) -> SystemHardeningConfig {
    SystemHardeningConfig::from_toml_str(toml).expect("valid test configuration")
}

fn memory_at(readings: &ManualReadings, percent: u64) {
    readings.set_memory(MemoryReading {
        process_rss: percent * 10,
        system_total: 1_000,
        system_used: 500,
        ..Default::default()
    });
}

fn readings_at(percent: u64) -> ManualReadings {
    let readings = ManualReadings::default();
    memory_at(&readings, percent);
    readings
}

/// Lets the monitor catch up (paused time: every ready task runs before
/// the clock moves).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Calls through `service`'s stack; `fail` makes the inner call fail.
async fn call(handle: &HardeningHandle, service: &str, fail: bool) -> Result<(), BoxError> {
    ServiceBuilder::new()
        .layer(handle.layer(service).expect("a known service"))
        .service(service_fn(move |(): ()| async move {
            if fail {
                Err(std::io::Error::other("backend failed"))
            } else {
                Ok(())
            }
        }))
        .oneshot(())
        .await
}

const RECOVERABLE: &str = r#"
    health_check_interval = "1s"
    unhealthy_after_failed_checks = 2
    recoverable_services = ["db"]
    max_recovery_attempts = 3
    recovery_backoff = "1s"
    [services.db.breaker]
    sliding_window = { count = 2 }
    minimum_calls = 2
    wait_in_open = "30s"
"#;

/// An operator drains `db` for maintenance (forced open, straight on the
/// breaker); its checks fail meanwhile and the recovery manager rebuilds
/// it. The breaker stays forced open: the rebuild never lets traffic in.
#[tokio::test(start_paused = true)]
async fn a_recovery_leaves_an_operators_force_open_alone() {
    let db = Dependency::default();
    let handle = SystemHardening::builder(config(RECOVERABLE))
        .service("db", db.clone())
        .readings(readings_at(10))
        .build()
        .unwrap()
        .start();
    call(&handle, "db", false).await.unwrap();
    settle().await;
    let breaker = handle.breaker("db").unwrap();
    breaker.force_open();
    db.checks_fail.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    db.checks_fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(db.initialized.load(Ordering::SeqCst), 2, "rebuilt once");
    assert_eq!(breaker.state(), CircuitState::ForcedOpen);
    let err = call(&handle, "db", false).await.unwrap_err();
    assert_eq!(
        rejection_of(&*err).map(|r| r.kind),
        Some(RejectionKind::CircuitOpen)
    );
    // Through the handle's own operator call, the same.
    handle.reset("db").unwrap();
    handle.force_open("db").unwrap();
    db.checks_fail.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    db.checks_fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(db.initialized.load(Ordering::SeqCst), 3, "rebuilt again");
    assert_eq!(breaker.state(), CircuitState::ForcedOpen);
    handle.shutdown().await;
}

/// A recovery holds the breaker forced open while `initialize` takes
/// 3 s; an operator forces it open too, straight on the breaker (no
/// change of state to see, but a new generation). The successful rebuild
/// leaves it forced open: the drain stands.
#[tokio::test(start_paused = true)]
async fn an_operators_force_open_during_a_recovery_hold_stands() {
    let db = Dependency::default();
    let handle = SystemHardening::builder(config(RECOVERABLE))
        .service("db", db.clone())
        .readings(readings_at(10))
        .build()
        .unwrap()
        .start();
    settle().await;
    db.init_takes_ms.store(3_000, Ordering::SeqCst);
    let _ = call(&handle, "db", true).await;
    let _ = call(&handle, "db", true).await;
    settle().await;
    let breaker = handle.breaker("db").unwrap();
    assert_eq!(
        breaker.state(),
        CircuitState::ForcedOpen,
        "held for the rebuild"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    breaker.force_open();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(db.initialized.load(Ordering::SeqCst), 2, "rebuilt");
    assert_eq!(
        breaker.state(),
        CircuitState::ForcedOpen,
        "the operator's drain stands"
    );
    handle.shutdown().await;
}

/// A recovery is under way (the breaker held open while `initialize`
/// takes 3 s); the operator resets the breaker meanwhile. The successful
/// rebuild leaves it closed, not half-open.
#[tokio::test(start_paused = true)]
async fn an_operators_reset_during_a_recovery_stays_closed() {
    for through_the_handle in [false, true] {
        let db = Dependency::default();
        let handle = SystemHardening::builder(config(RECOVERABLE))
            .service("db", db.clone())
            .readings(readings_at(10))
            .build()
            .unwrap()
            .start();
        settle().await;
        db.init_takes_ms.store(3_000, Ordering::SeqCst);
        let _ = call(&handle, "db", true).await;
        let _ = call(&handle, "db", true).await;
        settle().await;
        let breaker = handle.breaker("db").unwrap();
        assert_eq!(
            breaker.state(),
            CircuitState::ForcedOpen,
            "held for the rebuild"
        );
        assert!(matches!(
            handle.service_health("db").unwrap().recovery,
            RecoveryState::Recovering { .. }
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        if through_the_handle {
            handle.reset("db").unwrap();
        } else {
            breaker.reset();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(db.initialized.load(Ordering::SeqCst), 2);
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(
            handle.service_health("db").unwrap().status,
            HealthState::Healthy
        );
        handle.shutdown().await;
    }
}

/// The operator's `disable` also survives a rebuild and its success.
#[tokio::test(start_paused = true)]
async fn a_recovery_leaves_an_operators_disable_alone() {
    let db = Dependency::default();
    let handle = SystemHardening::builder(config(RECOVERABLE))
        .service("db", db.clone())
        .readings(readings_at(10))
        .build()
        .unwrap()
        .start();
    settle().await;
    handle.disable("db").unwrap();
    db.checks_fail.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    db.checks_fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(db.initialized.load(Ordering::SeqCst), 2);
    assert_eq!(
        handle.breaker("db").unwrap().state(),
        CircuitState::Disabled
    );
    handle.shutdown().await;
}

/// A critical service that is not recoverable fails its first
/// `initialize` (a transient start-up failure), then passes every check:
/// the first passing check clears the failure, and it stays cleared
/// through 600 checks.
#[tokio::test(start_paused = true)]
async fn a_passing_check_clears_a_failed_initialize() {
    let db = Dependency::default();
    db.failing_inits.store(1, Ordering::SeqCst);
    let handle = SystemHardening::builder(config(
        r#"
        health_check_interval = "1s"
        [services.db]
        criticality = "critical"
        readiness = true
        "#,
    ))
    .service("db", db.clone())
    .readings(readings_at(10))
    .build()
    .unwrap()
    .start();
    settle().await;
    assert_eq!(
        handle.service_health("db").unwrap().status,
        HealthState::Unhealthy
    );
    assert!(!handle.ready());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        handle.service_health("db").unwrap().status,
        HealthState::Healthy
    );
    assert_eq!(handle.health().status, HealthState::Healthy);
    assert!(handle.ready());
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        handle.service_health("db").unwrap().status,
        HealthState::Healthy
    );
    assert!(handle.ready());
    assert_eq!(db.initialized.load(Ordering::SeqCst), 1, "never rebuilt");
    handle.shutdown().await;
}

/// Readings that panic while told to, else read `figures`.
#[derive(Clone, Default)]
struct PanickyReadings {
    figures: ManualReadings,
    panic: Arc<AtomicBool>,
}

impl Readings for PanickyReadings {
    fn memory(&mut self) -> MemoryReading {
        assert!(!self.panic.load(Ordering::SeqCst), "the memory probe broke");
        self.figures.memory()
    }

    fn cpu(&mut self) -> CpuReading {
        assert!(!self.panic.load(Ordering::SeqCst), "the cpu probe broke");
        self.figures.cpu()
    }
}

/// The issue's own numbers: the readings panic once; 30 s later a
/// critical service failing every check and memory at 99% read
/// unhealthy and not ready. While the readings keep panicking, health
/// says memory cannot be read.
#[tokio::test(start_paused = true)]
async fn a_panicking_reading_is_a_failed_reading_and_the_monitor_goes_on() {
    let db = Dependency::default();
    let readings = PanickyReadings {
        figures: readings_at(10),
        panic: Arc::default(),
    };
    let handle = SystemHardening::builder(config(
        r#"
        health_check_interval = "1s"
        performance_check_interval = "1s"
        [services.db]
        criticality = "critical"
        "#,
    ))
    .service("db", db.clone())
    .readings(readings.clone())
    .build()
    .unwrap()
    .start();
    settle().await;
    assert_eq!(handle.health().status, HealthState::Healthy);
    readings.panic.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let health = handle.health();
    assert_ne!(health.status, HealthState::Healthy, "{health:?}");
    assert!(
        health
            .reasons
            .iter()
            .any(|r| r.contains("memory reading failed")),
        "{:?}",
        health.reasons
    );
    readings.panic.store(false, Ordering::SeqCst);
    memory_at(&readings.figures, 99);
    db.checks_fail.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let health = handle.health();
    assert_eq!(health.status, HealthState::Unhealthy);
    assert_eq!(health.services["db"].status, HealthState::Unhealthy);
    assert!(health.memory.percentage > 98.0);
    assert!(!handle.ready());
    assert!(handle.alive());
    handle.shutdown().await;
}

/// A monitor that dies anyway (here: aborted) is neither live nor ready,
/// and health says it stopped, not a frozen `Healthy`.
#[tokio::test(start_paused = true)]
async fn a_monitor_that_died_is_neither_live_nor_ready() {
    let hardening = SystemHardening::builder(config(r#"health_check_interval = "1s""#))
        .service("db", Dependency::default())
        .readings(readings_at(10))
        .build()
        .unwrap();
    let (handle, monitor) = hardening.into_parts();
    let task = tokio::spawn(monitor);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(handle.alive());
    assert!(handle.ready());
    assert_eq!(handle.health().status, HealthState::Healthy);
    task.abort();
    let _ = task.await;
    assert!(!handle.alive());
    assert!(!handle.ready());
    let readiness = handle.readiness();
    assert!(
        readiness.reasons.iter().any(|r| r.contains("monitor")),
        "{readiness:?}"
    );
    let health = handle.health();
    assert_eq!(health.status, HealthState::Unhealthy);
    assert!(
        health.reasons.iter().any(|r| r.contains("monitor")),
        "{health:?}"
    );
    let live = handle
        .endpoints()
        .oneshot(
            http::Request::get("/health/live")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(live.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    handle.shutdown().await;
}

/// With both monitors off, a memory spike at start-up sheds nothing (and
/// so nothing is left shedding when memory falls): nothing reads memory
/// again to clear it.
#[tokio::test(start_paused = true)]
async fn with_both_monitors_off_a_start_up_memory_spike_sheds_nothing() {
    let readings = readings_at(99);
    let handle = SystemHardening::builder(config(
        r#"
        enable_health_monitoring = false
        enable_performance_monitoring = false
        [services.api]
        criticality = "low"
        [services.api.limit]
        enabled = true
        max_concurrency = 10
        "#,
    ))
    .readings(readings.clone())
    .build()
    .unwrap()
    .start();
    settle().await;
    memory_at(&readings, 10);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(handle.health().shedding_below, None);
    let low_priority = ServiceBuilder::new()
        .layer(handle.layer("api").unwrap())
        .service(service_fn(|(): ()| async { Ok::<_, std::io::Error>(()) }));
    low_priority
        .oneshot(())
        .await
        .expect("low-priority work is admitted");
    handle.shutdown().await;
}

/// A hundred leases expiring at once are one `LeaseReclaimed` event (one
/// `warn` line), as rejections are gated, not a hundred; the counter
/// carries the total.
#[tokio::test(start_paused = true)]
async fn lease_reclaims_are_published_at_most_once_a_second() {
    use tower_hardening::core::EventKind;
    use tower_hardening::limit::ResourcePool;
    use tower_hardening::{Priority, Requirements};

    let began = std::time::Instant::now();
    let sink = tower_hardening::core::EventSink::new(1_024);
    let mut events = sink.subscribe();
    let pool = ResourcePool::builder("gpu")
        .capacity(100)
        .lease_ttl(Duration::from_secs(1))
        .events(sink)
        .build()
        .unwrap();
    let handle = SystemHardening::builder(config(r#"health_check_interval = "1s""#))
        .pool(pool)
        .readings(readings_at(10))
        .build()
        .unwrap()
        .start();
    for task in 0..100 {
        let _lease_id = handle
            .request_resource(
                "gpu",
                &format!("task-{task}"),
                Priority::NORMAL,
                Requirements::new(),
            )
            .await
            .unwrap()
            .detach();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(handle.resource_stats().reclaimed_total, 100);
    let mut reclaimed = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event.kind(), EventKind::LeaseReclaimed { .. }) {
            reclaimed += 1;
        }
    }
    // One a second of the pool's (real) time.
    let seconds = began.elapsed().as_secs() + 1;
    assert!(
        (1..=seconds).contains(&reclaimed),
        "{reclaimed} reclaim events in {seconds} s"
    );
    handle.shutdown().await;
}

/// A service's latency in `performance()` is that of the calls that
/// reached it: while its breaker refuses (in microseconds), the figures
/// alerts read stay the service's own, not pulled down to nothing. (Real
/// time: the metrics layer measures with the CPU's clock, which tokio's
/// paused time does not move; about half a second.)
#[tokio::test]
async fn refusals_do_not_pull_a_services_latency_down() {
    let hardening = SystemHardening::builder(config(
        "performance_check_interval = \"100ms\"\n[services.api]",
    ))
    .readings(readings_at(10))
    .build()
    .unwrap();
    let layer = hardening.layer("api").unwrap();
    let handle = hardening.start();
    let slow = || {
        ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(|(): ()| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, BoxError>(())
            }))
    };
    for _ in 0..10 {
        slow().oneshot(()).await.unwrap();
    }
    // Fifty refusals, answered at once.
    layer.breaker().force_open();
    for _ in 0..50 {
        assert!(slow().oneshot(()).await.is_err());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let performance = handle.performance().expect("a reading");
    let api = &performance.services["api"];
    let p50 = api.p50.expect("calls were made");
    assert!(
        p50 >= Duration::from_millis(15),
        "the median of the calls that reached the service, not of the refusals: {p50:?}"
    );
    assert!(api.rejected_rate > 0.0);
    handle.shutdown().await;
}
