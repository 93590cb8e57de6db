//! Model-based property test: random sequences of calls (started,
//! finished with an outcome, cancelled), clock advances and manual state
//! changes, run against the real breaker and against a small reference
//! model of the state machine written here; every observable result must
//! agree, over 1,000 cases.
//!
//! The model is the specification in a few lines: a count window of the
//! last N recorded calls; trip on a failure or slow call (or any call
//! while the window is filling) when the window
//! holds at least `minimum_calls` and a rate reaches its threshold; open
//! for `wait * 2^(consecutive trips - 1)` capped; half-open admits
//! `permits` probes, reopens as soon as failures (or slow calls) reach the
//! threshold of `permits`, closes when all `permits` probes succeeded
//! enough; a call admitted under one state never counts towards another;
//! cancelled and ignored calls are never recorded, and a cancelled or
//! ignored probe hands its permit back.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt;
use proptest::prelude::*;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_breaker::{
    BreakerHandle, CircuitBreakerLayer, CircuitOpen, CircuitState, SlidingWindow,
};
use tower_hardening_core::{BoxError, Outcome};

const SLOW_MS: u64 = 100;
/// The breaker's default probe deadline.
const PROBE_TIMEOUT_MS: u64 = 10_000;
const WAIT_MS: u64 = 1_000;
const MAX_WAIT_MS: u64 = 4_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Success,
    Failure,
    Ignored,
}

#[derive(Debug, Clone)]
enum Op {
    Start,
    Finish(usize, End),
    Cancel(usize),
    Advance(u64),
    ForceOpen,
    Disable,
    MetricsOnly,
    Reset,
}

#[derive(Debug, Clone, Copy)]
struct Params {
    window: u32,
    minimum: u32,
    failure_threshold: f64,
    slow_threshold: f64,
    permits: u32,
}

fn params() -> impl Strategy<Value = Params> {
    (
        1u32..=8,
        prop::sample::select(vec![0.25, 0.5, 1.0]),
        prop::sample::select(vec![0.5, 1.0]),
        1u32..=3,
    )
        .prop_flat_map(|(window, failure_threshold, slow_threshold, permits)| {
            (1..=window).prop_map(move |minimum| Params {
                window,
                minimum,
                failure_threshold,
                slow_threshold,
                permits,
            })
        })
}

fn op() -> impl Strategy<Value = Op> {
    let end = prop_oneof![Just(End::Success), Just(End::Failure), Just(End::Ignored)];
    prop_oneof![
        8 => Just(Op::Start),
        8 => (0usize..8, end).prop_map(|(i, e)| Op::Finish(i, e)),
        2 => (0usize..8).prop_map(Op::Cancel),
        4 => prop_oneof![Just(50u64), Just(99), Just(101), Just(500), Just(1_000), Just(2_500)].prop_map(Op::Advance),
        1 => prop_oneof![Just(Op::ForceOpen), Just(Op::Disable), Just(Op::MetricsOnly), Just(Op::Reset)],
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Windowed,
    Probe,
    Untracked,
}

#[derive(Debug)]
struct ModelCall {
    generation: u64,
    kind: Kind,
    started_ms: u64,
}

#[derive(Debug)]
struct Model {
    p: Params,
    now_ms: u64,
    state: CircuitState,
    generation: u64,
    window: VecDeque<(bool, bool)>,
    open_until_ms: u64,
    consecutive_opens: u32,
    probes_free: u32,
    probe_failures: u32,
    probe_successes: u32,
    probe_slow: u32,
    /// When the last probe was let through.
    last_probe_ms: u64,
}

impl Model {
    fn new(p: Params) -> Self {
        Model {
            p,
            now_ms: 0,
            state: CircuitState::Closed,
            generation: 0,
            window: VecDeque::new(),
            open_until_ms: 0,
            consecutive_opens: 0,
            probes_free: 0,
            probe_failures: 0,
            probe_successes: 0,
            probe_slow: 0,
            last_probe_ms: 0,
        }
    }

    fn counts(&self) -> (u32, u32, u32) {
        let calls = self.window.len() as u32;
        let failures = self.window.iter().filter(|(f, _)| *f).count() as u32;
        let slow = self.window.iter().filter(|(_, s)| *s).count() as u32;
        (calls, failures, slow)
    }

    fn reaches(count: u32, of: u32, threshold: f64) -> bool {
        of > 0 && f64::from(count) / f64::from(of) >= threshold
    }

    fn go(&mut self, to: CircuitState) {
        self.generation += 1;
        self.state = to;
    }

    fn open(&mut self) {
        self.consecutive_opens += 1;
        let wait = (WAIT_MS << (self.consecutive_opens - 1).min(20)).min(MAX_WAIT_MS);
        self.open_until_ms = self.now_ms + wait;
        self.go(CircuitState::Open);
    }

    /// Ok(call) if admitted, Err(retry_after ms) if rejected.
    fn start(&mut self) -> Result<ModelCall, u64> {
        if self.state == CircuitState::Open && self.now_ms >= self.open_until_ms {
            self.probes_free = self.p.permits;
            self.probe_failures = 0;
            self.probe_successes = 0;
            self.probe_slow = 0;
            self.go(CircuitState::HalfOpen);
        }
        let call = |kind| ModelCall {
            generation: self.generation,
            kind,
            started_ms: self.now_ms,
        };
        match self.state {
            CircuitState::Closed | CircuitState::MetricsOnly => Ok(call(Kind::Windowed)),
            CircuitState::Disabled => Ok(call(Kind::Untracked)),
            // No end is known: the open wait is the hint.
            CircuitState::ForcedOpen => Err(WAIT_MS),
            CircuitState::Open => Err(self.open_until_ms - self.now_ms),
            CircuitState::HalfOpen => {
                if self.probes_free == 0 {
                    if self.now_ms >= self.last_probe_ms + PROBE_TIMEOUT_MS {
                        // Every probe outlived its deadline: failed probes,
                        // found so by this caller; the breaker reopens.
                        self.open();
                        return Err(self.open_until_ms - self.now_ms);
                    }
                    // Every probe is decided within the probe deadline.
                    Err(PROBE_TIMEOUT_MS)
                } else {
                    self.probes_free -= 1;
                    self.last_probe_ms = self.now_ms;
                    Ok(call(Kind::Probe))
                }
            }
        }
    }

    fn end(&mut self, call: ModelCall, end: Option<End>) {
        let slow = self.now_ms - call.started_ms > SLOW_MS;
        let current = call.generation == self.generation;
        match call.kind {
            Kind::Untracked => {}
            Kind::Windowed => {
                let failure = match end {
                    Some(End::Success) => false,
                    Some(End::Failure) => true,
                    _ => return,
                };
                if !current {
                    return;
                }
                let grew = self.window.len() < self.p.window as usize;
                self.window.push_back((failure, slow));
                if self.window.len() > self.p.window as usize {
                    self.window.pop_front();
                }
                let (calls, failures, slows) = self.counts();
                if (failure || slow || grew)
                    && self.state == CircuitState::Closed
                    && calls >= self.p.minimum
                    && (Self::reaches(failures, calls, self.p.failure_threshold)
                        || Self::reaches(slows, calls, self.p.slow_threshold))
                {
                    self.open();
                }
            }
            Kind::Probe => {
                if !current || self.state != CircuitState::HalfOpen {
                    return;
                }
                match end {
                    None | Some(End::Ignored) => self.probes_free += 1,
                    Some(outcome) => {
                        if outcome == End::Failure {
                            self.probe_failures += 1;
                        } else {
                            self.probe_successes += 1;
                        }
                        if slow {
                            self.probe_slow += 1;
                        }
                        let permits = self.p.permits;
                        if Self::reaches(self.probe_failures, permits, self.p.failure_threshold)
                            || Self::reaches(self.probe_slow, permits, self.p.slow_threshold)
                        {
                            self.open();
                        } else if self.probe_failures + self.probe_successes >= permits {
                            self.consecutive_opens = 0;
                            self.window.clear();
                            self.go(CircuitState::Closed);
                        }
                    }
                }
            }
        }
    }

    fn manual(&mut self, to: CircuitState) {
        if matches!(to, CircuitState::Closed | CircuitState::MetricsOnly) {
            self.window.clear();
        }
        if to == CircuitState::Closed {
            self.consecutive_opens = 0;
        }
        self.go(to);
    }
}

#[derive(Debug)]
struct TestError(&'static str);

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TestError {}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

struct RealCall {
    outcome: oneshot::Sender<End>,
    future: ResponseFuture,
}

fn run_case(p: Params, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let layer = CircuitBreakerLayer::builder()
            .name("model")
            .sliding_window(SlidingWindow::count(p.window))
            .minimum_calls(p.minimum)
            .failure_rate_threshold(p.failure_threshold)
            .slow_call_rate_threshold(p.slow_threshold)
            .slow_call_duration(Duration::from_millis(SLOW_MS))
            .wait_in_open(Duration::from_millis(WAIT_MS))
            .max_wait_in_open(Duration::from_millis(MAX_WAIT_MS))
            .half_open_permits(p.permits)
            .classifier(|result: &Result<(), BoxError>| match result {
                Ok(()) => Outcome::Success,
                Err(e) if matches!(e.downcast_ref(), Some(TestError("ignored"))) => {
                    Outcome::Ignored
                }
                Err(_) => Outcome::Failure,
            })
            .build()
            .unwrap();
        let handle: BreakerHandle = layer.handle();
        let mut svc = layer.layer(service_fn(|rx: oneshot::Receiver<End>| async move {
            match rx.await {
                Ok(End::Success) => Ok(()),
                Ok(End::Failure) => Err(TestError("boom")),
                Ok(End::Ignored) | Err(_) => Err(TestError("ignored")),
            }
        }));
        let mut model = Model::new(p);
        let mut real_calls: Vec<RealCall> = Vec::new();
        let mut model_calls: Vec<ModelCall> = Vec::new();

        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Start => {
                    let expected = model.start();
                    let (tx, rx) = oneshot::channel();
                    svc.ready()
                        .now_or_never()
                        .expect("always ready")
                        .expect("never fails");
                    let mut future: ResponseFuture = Box::pin(svc.call(rx));
                    let polled = (&mut future).now_or_never();
                    match (expected, polled) {
                        (Ok(call), None) => {
                            model_calls.push(call);
                            real_calls.push(RealCall {
                                outcome: tx,
                                future,
                            });
                        }
                        (Err(retry_ms), Some(Err(err))) => {
                            let open = err.downcast_ref::<CircuitOpen>();
                            prop_assert!(open.is_some(), "step {step}: rejection is CircuitOpen");
                            prop_assert_eq!(
                                open.unwrap().retry_after(),
                                Some(Duration::from_millis(retry_ms)).filter(|d| !d.is_zero()),
                                "step {}: retry_after",
                                step
                            );
                        }
                        (expected, polled) => {
                            return Err(TestCaseError::fail(format!(
                                "step {step}: model {expected:?}, real {:?}",
                                polled.map(|r| r.map_err(|e| e.to_string()))
                            )));
                        }
                    }
                }
                Op::Finish(index, end) => {
                    if real_calls.is_empty() {
                        continue;
                    }
                    let index = index % real_calls.len();
                    let RealCall { outcome, future } = real_calls.remove(index);
                    let call = model_calls.remove(index);
                    outcome.send(end).unwrap();
                    let result = future.await;
                    prop_assert_eq!(result.is_ok(), end == End::Success, "step {}", step);
                    model.end(call, Some(end));
                }
                Op::Cancel(index) => {
                    if real_calls.is_empty() {
                        continue;
                    }
                    let index = index % real_calls.len();
                    drop(real_calls.remove(index));
                    let call = model_calls.remove(index);
                    model.end(call, None);
                }
                Op::Advance(ms) => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    model.now_ms += ms;
                }
                Op::ForceOpen => {
                    handle.force_open();
                    model.manual(CircuitState::ForcedOpen);
                }
                Op::Disable => {
                    handle.disable();
                    model.manual(CircuitState::Disabled);
                }
                Op::MetricsOnly => {
                    handle.metrics_only();
                    model.manual(CircuitState::MetricsOnly);
                }
                Op::Reset => {
                    handle.reset();
                    model.manual(CircuitState::Closed);
                }
            }
            let snapshot = handle.snapshot();
            prop_assert_eq!(snapshot.state, model.state, "step {}: state", step);
            let (calls, failures, slow) = model.counts();
            prop_assert_eq!(
                (snapshot.calls, snapshot.failures, snapshot.slow_calls),
                (u64::from(calls), u64::from(failures), u64::from(slow)),
                "step {}: window counts",
                step
            );
            if model.state == CircuitState::HalfOpen {
                prop_assert_eq!(
                    snapshot.probes_in_flight,
                    p.permits - model.probes_free,
                    "step {}",
                    step
                );
            }
            if model.state == CircuitState::Open {
                prop_assert_eq!(
                    snapshot.until_probe,
                    Some(Duration::from_millis(
                        model.open_until_ms.saturating_sub(model.now_ms)
                    )),
                    "step {}",
                    step
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn breaker_matches_the_reference_model(p in params(), ops in prop::collection::vec(op(), 1..120)) {
        run_case(p, ops)?;
    }
}
