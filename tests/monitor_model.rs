//! Model-based property test of the monitor: random sequences of health
//! checks (passing, failing, hanging, panicking), memory readings up and
//! down (and a panicking one), calls that move the breaker, an operator's
//! `force_open` / `disable` / `reset`, `trigger_recovery`, rebuilds that
//! work or fail, with monitoring on or off, run against a real
//! `SystemHardening` on tokio's paused clock and against a small
//! reference model written here. After every step the handle's
//! `health()`, `service_health()`, `ready()` and the breaker's state must
//! match the model, and an operator's choice must stand whatever
//! automation did.
//!
//! The model is the specification in a few lines: one critical service
//! `db`; a breaker that trips on one failure, stays open 2 s, and closes
//! or reopens on one probe; a failed `initialize` or two failed checks in
//! a row make the service unhealthy, a passing check clears both; a
//! recoverable service that turns unhealthy by itself is rebuilt once
//! (its breaker held forced open, then half-open), unless a person owns
//! the breaker, whose state no rebuild changes.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::{CircuitState, HealthState};
use tower_hardening::health::RecoveryState;
use tower_hardening::managed::BoxFuture;
use tower_hardening::monitor::{CpuReading, MemoryReading, Readings};
use tower_hardening::{BoxError, HardeningHandle, ManagedService, SystemHardening};

const SERVICE: &str = "db";
/// The memory limit (`max_resource_memory`).
const LIMIT: u64 = 1_000_000;
const WAIT_IN_OPEN_MS: u64 = 2_000;
/// A slow `initialize`: within `health_check_timeout` (300 ms), and over
/// before the next health tick, but long enough for an operator to act
/// while the rebuild is under way.
const SLOW_INITIALIZE_MS: u64 = 250;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    Pass,
    Fail,
    Hang,
    Panic,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Memory {
    /// Percent of the limit.
    At(u64),
    /// The readings source panics.
    Panic,
}

#[derive(Debug, Clone)]
enum Op {
    /// The service's health checks from now on.
    Checks(Check),
    /// Whether `initialize` works from now on, and whether it takes
    /// `SLOW_INITIALIZE_MS` (long enough for an operator to act while a
    /// rebuild is under way).
    Initialize {
        works: bool,
        slow: bool,
    },
    Memory(Memory),
    /// A call through the service's stack; `true`: it succeeds.
    Call(bool),
    /// One health-check interval passes.
    Tick,
    ForceOpen,
    Disable,
    Reset,
    TriggerRecovery,
}

#[derive(Debug, Clone, Copy)]
struct Params {
    recoverable: bool,
    monitoring: bool,
    starts_working: bool,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => prop::sample::select(vec![Check::Pass, Check::Fail, Check::Hang, Check::Panic]).prop_map(Op::Checks),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(works, slow)| Op::Initialize { works, slow }),
        1 => prop::sample::select(vec![
            Memory::At(10),
            Memory::At(85),
            Memory::At(99),
            Memory::Panic
        ])
        .prop_map(Op::Memory),
        3 => any::<bool>().prop_map(Op::Call),
        5 => Just(Op::Tick),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::Reset),
        1 => Just(Op::TriggerRecovery),
    ]
}

fn params() -> impl Strategy<Value = Params> {
    (
        any::<bool>(),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(recoverable, monitoring, starts_working)| Params {
            recoverable,
            monitoring,
            starts_working,
        })
}

// ---------------------------------------------------------------------
// The system under test's inputs.

/// The dependency's behaviour, set by the test.
#[derive(Clone)]
struct Dependency {
    check: Arc<Mutex<Check>>,
    initialize_works: Arc<AtomicBool>,
    initialize_slow: Arc<AtomicBool>,
}

impl ManagedService for Dependency {
    fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        let works = self.initialize_works.load(Ordering::SeqCst);
        let slow = self.initialize_slow.load(Ordering::SeqCst);
        Box::pin(async move {
            if slow {
                tokio::time::sleep(Duration::from_millis(SLOW_INITIALIZE_MS)).await;
            }
            if works {
                Ok(())
            } else {
                Err("connection refused".into())
            }
        })
    }

    fn health_check(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        let check = *self.check.lock().unwrap();
        Box::pin(async move {
            match check {
                Check::Pass => Ok(()),
                Check::Fail => Err("ping failed".into()),
                Check::Hang => std::future::pending().await,
                Check::Panic => panic!("the health check broke"),
            }
        })
    }
}

/// Memory at a percentage of the limit, or a panic (`u8::MAX`).
#[derive(Clone, Default)]
struct TestReadings {
    percent: Arc<AtomicU8>,
}

impl Readings for TestReadings {
    fn memory(&mut self) -> MemoryReading {
        let percent = self.percent.load(Ordering::SeqCst);
        assert!(percent != u8::MAX, "the memory probe broke");
        MemoryReading {
            process_rss: LIMIT / 100 * u64::from(percent),
            system_total: 8 * LIMIT,
            ..Default::default()
        }
    }

    fn cpu(&mut self) -> CpuReading {
        CpuReading::default()
    }
}

// ---------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Owner {
    Breaker,
    Recovery,
    Operator,
}

#[derive(Debug, Clone)]
struct Model {
    params: Params,
    check: Check,
    initialize_works: bool,
    initialize_slow: bool,
    /// A rebuild under way: when it ends, and whether it works.
    rebuilding: Option<(u64, bool, bool)>,
    /// Milliseconds since start.
    now: u64,
    memory: Memory,
    failed_checks: u32,
    init_failed: bool,
    recovery: RecoveryState,
    recovery_attempts: u32,
    breaker: CircuitState,
    owner: Owner,
    open_until: u64,
    /// The last good memory reading (percent), once one was made.
    memory_read: Option<u64>,
    memory_failed: bool,
    /// The operator's last choice while it stands.
    operator_choice: Option<CircuitState>,
    /// Whether the breaker changed state since the recovery gave up.
    moved_since_gave_up: bool,
}

const UNHEALTHY_AFTER: u32 = 2;
const MAX_ATTEMPTS: u32 = 1;

impl Model {
    fn new(params: Params) -> Self {
        let mut model = Model {
            params,
            check: Check::Pass,
            initialize_works: params.starts_working,
            initialize_slow: false,
            rebuilding: None,
            now: 0,
            memory: Memory::At(10),
            failed_checks: 0,
            init_failed: !params.starts_working,
            recovery: RecoveryState::Idle,
            recovery_attempts: 0,
            breaker: CircuitState::Closed,
            owner: Owner::Breaker,
            open_until: 0,
            memory_read: None,
            memory_failed: false,
            operator_choice: None,
            moved_since_gave_up: false,
        };
        if params.monitoring {
            model.read_memory();
        }
        model.evaluate();
        model
    }

    fn read_memory(&mut self) {
        match self.memory {
            Memory::At(percent) => {
                self.memory_read = Some(percent);
                self.memory_failed = false;
            }
            Memory::Panic => self.memory_failed = true,
        }
    }

    fn status(&self) -> (HealthState, bool) {
        let mut status = HealthState::Healthy;
        let mut automatic = false;
        match self.breaker {
            CircuitState::Open => {
                status = HealthState::Unhealthy;
                automatic = true;
            }
            CircuitState::ForcedOpen => status = HealthState::Unhealthy,
            CircuitState::HalfOpen => status = HealthState::Degraded,
            _ => {}
        }
        if self.init_failed {
            status = HealthState::Unhealthy;
            automatic = true;
        }
        if self.failed_checks >= UNHEALTHY_AFTER {
            status = HealthState::Unhealthy;
            automatic = true;
        } else if self.failed_checks > 0 {
            status = status.max(HealthState::Degraded);
        }
        if self.recovery == RecoveryState::GaveUp {
            status = HealthState::Unhealthy;
        }
        (status, automatic)
    }

    fn overall(&self) -> HealthState {
        // The service is critical: its status is the process's.
        let mut overall = self.status().0;
        if let Some(percent) = self.memory_read {
            if percent >= 95 {
                overall = HealthState::Unhealthy;
            } else if percent >= 80 {
                overall = overall.max(HealthState::Degraded);
            }
        }
        if self.memory_failed {
            overall = overall.max(HealthState::Degraded);
        }
        overall
    }

    fn ready(&self) -> bool {
        // The service opted in (`readiness = true`) and is critical: the
        // process is unhealthy exactly when it is, or memory is critical.
        self.overall() != HealthState::Unhealthy
            && !matches!(self.breaker, CircuitState::Open | CircuitState::ForcedOpen)
    }

    /// The monitor's rules, then the recovery they call for (which runs
    /// to its end at once: every lifecycle call here is immediate).
    fn evaluate(&mut self) {
        if self.breaker == CircuitState::Closed
            && self.recovery == RecoveryState::GaveUp
            && self.moved_since_gave_up
        {
            self.recovery = RecoveryState::Idle;
        }
        let (status, automatic) = self.status();
        if status == HealthState::Healthy && self.recovery == RecoveryState::Probing {
            self.recovery = RecoveryState::Idle;
        }
        if status == HealthState::Unhealthy && automatic && self.params.recoverable {
            self.recover(false);
        }
    }

    fn recover(&mut self, manual: bool) {
        if self.rebuilding.is_some() {
            return;
        }
        let first_attempt = match self.recovery {
            RecoveryState::Probing if !manual => self.recovery_attempts,
            RecoveryState::GaveUp if !manual => return,
            _ => 0,
        };
        self.recovery_attempts = first_attempt;
        // The hold: never over a person's choice.
        let held = match self.owner {
            Owner::Operator => false,
            Owner::Recovery => true,
            Owner::Breaker => {
                self.set_breaker(CircuitState::ForcedOpen);
                self.owner = Owner::Recovery;
                true
            }
        };
        if first_attempt >= MAX_ATTEMPTS {
            self.give_up();
            return;
        }
        self.recovery_attempts = first_attempt + 1;
        self.recovery = RecoveryState::Recovering {
            attempt: first_attempt + 1,
        };
        if self.initialize_slow {
            self.rebuilding = Some((self.now + SLOW_INITIALIZE_MS, self.initialize_works, held));
        } else {
            self.rebuilt(self.initialize_works, held);
        }
    }

    fn rebuilt(&mut self, works: bool, held: bool) {
        self.rebuilding = None;
        if !works {
            self.give_up();
            return;
        }
        // Released only if the recovery still holds it.
        if held && self.owner == Owner::Recovery {
            self.set_breaker(CircuitState::HalfOpen);
            self.owner = Owner::Breaker;
        }
        self.recovery = RecoveryState::Probing;
        self.init_failed = false;
        self.failed_checks = 0;
        self.evaluate();
    }

    fn give_up(&mut self) {
        self.recovery_attempts = MAX_ATTEMPTS;
        self.recovery = RecoveryState::GaveUp;
        self.moved_since_gave_up = false;
        self.evaluate();
    }

    /// Time passes to `until`: a rebuild ending before it ends.
    fn pass(&mut self, until: u64) {
        if let Some((ends, works, held)) = self.rebuilding
            && ends <= until
        {
            self.now = ends;
            self.rebuilt(works, held);
        }
        self.now = until;
    }

    fn check(&mut self) {
        // No check while a rebuild is under way.
        if !self.params.monitoring || self.rebuilding.is_some() {
            return;
        }
        match self.check {
            Check::Pass => {
                self.failed_checks = 0;
                self.init_failed = false;
            }
            _ => self.failed_checks += 1,
        }
        self.read_memory();
        self.evaluate();
    }

    /// The breaker moves by its own rules: a person's reset no longer
    /// stands once it did.
    fn breaker_moves(&mut self, to: CircuitState, now: u64) {
        self.set_breaker(to);
        self.owner = Owner::Breaker;
        if self.operator_choice == Some(CircuitState::Closed) {
            self.operator_choice = None;
        }
        if to == CircuitState::Open {
            self.open_until = now + WAIT_IN_OPEN_MS;
        }
        self.evaluate();
    }

    /// Whether the call is let through.
    fn call(&mut self, works: bool, now: u64) -> bool {
        match self.breaker {
            CircuitState::Closed => {
                if !works {
                    self.breaker_moves(CircuitState::Open, now);
                }
                true
            }
            CircuitState::Open if now < self.open_until => false,
            CircuitState::Open | CircuitState::HalfOpen => {
                let to = if works {
                    CircuitState::Closed
                } else {
                    CircuitState::Open
                };
                self.breaker_moves(to, now);
                true
            }
            CircuitState::Disabled | CircuitState::MetricsOnly => true,
            _ => false,
        }
    }

    fn set_breaker(&mut self, to: CircuitState) {
        if to != self.breaker {
            self.moved_since_gave_up = true;
        }
        self.breaker = to;
    }

    fn operator(&mut self, state: CircuitState) {
        self.set_breaker(state);
        self.owner = Owner::Operator;
        self.operator_choice = Some(state);
        self.evaluate();
    }
}

// ---------------------------------------------------------------------
// The run.

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

async fn call(handle: &HardeningHandle, works: bool) -> Result<(), BoxError> {
    ServiceBuilder::new()
        .layer(handle.layer(SERVICE).expect("a known service"))
        .service(service_fn(move |(): ()| async move {
            if works {
                Ok(())
            } else {
                Err(std::io::Error::other("backend failed"))
            }
        }))
        .oneshot(())
        .await
}

fn configuration(params: Params) -> SystemHardeningConfig {
    let recoverable = if params.recoverable { "\"db\"" } else { "" };
    SystemHardeningConfig::from_toml_str(&format!(
        r#"
        enable_health_monitoring = {monitoring}
        enable_performance_monitoring = false
        health_check_interval = "1s"
        health_check_timeout = "300ms"
        unhealthy_after_failed_checks = {UNHEALTHY_AFTER}
        max_recovery_attempts = {MAX_ATTEMPTS}
        max_resource_memory = {LIMIT}
        recoverable_services = [{recoverable}]
        [services.db]
        criticality = "critical"
        readiness = true
        [services.db.breaker]
        sliding_window = {{ count = 1 }}
        minimum_calls = 1
        failure_rate_threshold = 1.0
        wait_in_open = "{WAIT_IN_OPEN_MS}ms"
        max_wait_in_open = "{WAIT_IN_OPEN_MS}ms"
        half_open_permits = 1
        "#,
        monitoring = params.monitoring,
    ))
    .expect("valid model configuration")
}

fn compare(handle: &HardeningHandle, model: &Model, step: &str) -> Result<(), TestCaseError> {
    let breaker = handle.breaker(SERVICE).expect("built before start");
    let service = handle.service_health(SERVICE).expect("a known service");
    let health = handle.health();
    prop_assert_eq!(breaker.state(), model.breaker, "breaker after {}", step);
    prop_assert_eq!(
        service.status,
        model.status().0,
        "service after {}: {:?}",
        step,
        service.reason
    );
    prop_assert_eq!(service.recovery, model.recovery, "recovery after {}", step);
    prop_assert_eq!(
        service.recovery_attempts,
        model.recovery_attempts,
        "attempts after {}",
        step
    );
    prop_assert_eq!(
        service.failed_checks,
        model.failed_checks,
        "checks after {}",
        step
    );
    prop_assert_eq!(
        health.status,
        model.overall(),
        "health after {}: {:?}",
        step,
        health.reasons
    );
    prop_assert_eq!(handle.ready(), model.ready(), "ready after {}", step);
    prop_assert!(handle.alive(), "the monitor died after {}", step);
    // The operator wins, whatever the model says.
    if let Some(choice) = model.operator_choice {
        prop_assert_eq!(
            breaker.state(),
            choice,
            "the operator's choice after {}",
            step
        );
    }
    Ok(())
}

fn run(params: Params, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let dependency = Dependency {
            check: Arc::new(Mutex::new(Check::Pass)),
            initialize_works: Arc::new(AtomicBool::new(params.starts_working)),
            initialize_slow: Arc::default(),
        };
        let readings = TestReadings::default();
        readings.percent.store(10, Ordering::SeqCst);
        let hardening = SystemHardening::builder(configuration(params))
            .service(SERVICE, dependency.clone())
            .readings(readings.clone())
            .build()
            .expect("builds");
        hardening.layer(SERVICE).expect("a known service");
        let start = Instant::now();
        let handle = hardening.start();
        // Observations half-way between health ticks.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut model = Model::new(params);
        compare(&handle, &model, "start")?;
        let mut ticks = 0u64;
        for op in ops {
            model.now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            match op {
                Op::Checks(check) => {
                    *dependency.check.lock().unwrap() = check;
                    model.check = check;
                }
                Op::Initialize { works, slow } => {
                    dependency.initialize_works.store(works, Ordering::SeqCst);
                    dependency.initialize_slow.store(slow, Ordering::SeqCst);
                    model.initialize_works = works;
                    model.initialize_slow = slow;
                }
                Op::Memory(memory) => {
                    let percent = match memory {
                        Memory::At(percent) => percent as u8,
                        Memory::Panic => u8::MAX,
                    };
                    readings.percent.store(percent, Ordering::SeqCst);
                    model.memory = memory;
                }
                Op::Call(works) => {
                    let now = model.now;
                    let let_through = model.call(works, now);
                    let result = call(&handle, works).await;
                    prop_assert_eq!(result.is_ok(), let_through && works, "call: {:?}", result);
                }
                Op::Tick => {
                    ticks += 1;
                    tokio::time::sleep_until(start + Duration::from_millis(ticks * 1_000 + 500))
                        .await;
                    // A hung check fails at its timeout.
                    let answered = if model.check == Check::Hang { 300 } else { 0 };
                    model.pass(ticks * 1_000 + answered);
                    model.check();
                    model.pass(ticks * 1_000 + 500);
                }
                Op::ForceOpen => {
                    handle.force_open(SERVICE).unwrap();
                    model.operator(CircuitState::ForcedOpen);
                }
                Op::Disable => {
                    handle.disable(SERVICE).unwrap();
                    model.operator(CircuitState::Disabled);
                }
                Op::Reset => {
                    handle.reset(SERVICE).unwrap();
                    model.operator(CircuitState::Closed);
                }
                Op::TriggerRecovery => {
                    handle.trigger_recovery(SERVICE).unwrap();
                    model.recover(true);
                }
            }
            settle().await;
            compare(&handle, &model, &format!("{op:?}"))?;
        }
        handle.shutdown().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn the_monitor_matches_its_model(params in params(), ops in prop::collection::vec(op(), 1..40)) {
        run(params, ops)?;
    }
}
