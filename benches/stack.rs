//! `stack`: the whole stack, one task and two tasks (issue #12's first
//! measurement). Every row wraps the same trivial service, built once;
//! "two tasks" runs two tasks on a two-worker runtime, each with its own
//! clone, and reports wall time per call (perfect scaling halves the
//! one-task figure).
//!
//! - `bare`: the service alone.
//! - `tower`: tower's built-ins, `ConcurrencyLimit` + `Retry` (a policy
//!   that never retries) + `Timeout`.
//! - `tower_resilience`: tower-resilience's bulkhead + retry + circuit
//!   breaker + tower `Timeout`.
//! - `hardening`: metrics + admission + retry + breaker + tower `Timeout`,
//!   no recorder.
//! - `hardening_collector`: the same, recording into a `MetricsCollector`.
//!
//! "Four tasks" runs four tasks on the same two workers (oversubscribed):
//! it must never be worse than two.
//!
//! Run: `cargo bench -p tower-hardening --bench stack`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Service, ServiceBuilder};
use tower_hardening::breaker::CircuitBreakerLayer;
use tower_hardening::limit::{ResourceLimitLayer, ResourcePool};
use tower_hardening::metrics::{MetricsCollector, MetricsLayer};
use tower_hardening::recovery::RetryLayer;
use tower_hardening::{BoxError, Priority};
use tower_hardening_bench_support::{
    bare, criterion, current_thread, n_tasks, one_task, two_tasks, two_workers,
};

/// A policy that never retries (but clones the request, as any does).
#[derive(Clone)]
struct Never;

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Never {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _: &mut Req, _: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

fn tower_stack() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send
{
    ServiceBuilder::new()
        .concurrency_limit(1_000)
        .layer(tower::retry::RetryLayer::new(Never))
        .timeout(Duration::from_secs(2))
        .service(bare())
}

fn resilience_stack()
-> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    use tower_resilience::{bulkhead, circuitbreaker, retry};
    ServiceBuilder::new()
        .map_err(BoxError::from)
        .layer(
            bulkhead::BulkheadLayer::builder()
                .max_concurrent_calls(1_000)
                .build()
                .unwrap(),
        )
        .map_err(BoxError::from)
        .layer(
            retry::RetryLayer::<u64, u64, BoxError>::builder()
                .max_attempts(3)
                .build(),
        )
        .map_err(BoxError::from)
        .layer(
            circuitbreaker::CircuitBreakerLayer::builder()
                .failure_rate_threshold(0.5)
                .sliding_window_size(100)
                .build()
                .unwrap(),
        )
        .timeout(Duration::from_secs(2))
        .service(bare())
}

/// Builds our stack; its metrics handles go to the recorder in force.
fn our_stack() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    let pool = ResourcePool::builder("bench")
        .capacity(1_000)
        .build()
        .unwrap();
    ServiceBuilder::new()
        .layer(MetricsLayer::new("bench"))
        .layer(ResourceLimitLayer::new(pool).priority(|_: &u64| Priority::NORMAL))
        .layer(RetryLayer::builder().name("bench").build().unwrap())
        .layer(
            CircuitBreakerLayer::builder()
                .name("bench")
                .build()
                .unwrap(),
        )
        .timeout(Duration::from_secs(2))
        .service(bare())
}

fn stack(c: &mut Criterion) {
    let one = current_thread();
    let two = two_workers();
    let collector = one.block_on(async { MetricsCollector::builder().build().unwrap() });

    let mut group = c.benchmark_group("stack_one_task");
    let mut svc = bare();
    group.bench_function("bare", |b| b.iter_custom(|n| one_task(&one, &mut svc, n)));
    let mut svc = tower_stack();
    group.bench_function("tower", |b| b.iter_custom(|n| one_task(&one, &mut svc, n)));
    let mut svc = one.block_on(async { resilience_stack() });
    group.bench_function("tower_resilience", |b| {
        b.iter_custom(|n| one_task(&one, &mut svc, n))
    });
    let mut svc = our_stack();
    group.bench_function("hardening", |b| {
        b.iter_custom(|n| one_task(&one, &mut svc, n))
    });
    let mut svc = metrics::with_local_recorder(&collector, our_stack);
    group.bench_function("hardening_collector", |b| {
        b.iter_custom(|n| one_task(&one, &mut svc, n))
    });
    group.finish();

    let mut group = c.benchmark_group("stack_two_tasks");
    let svc = bare();
    group.bench_function("bare", |b| b.iter_custom(|n| two_tasks(&two, &svc, n)));
    let svc = tower_stack();
    group.bench_function("tower", |b| b.iter_custom(|n| two_tasks(&two, &svc, n)));
    let svc = two.block_on(async { resilience_stack() });
    group.bench_function("tower_resilience", |b| {
        b.iter_custom(|n| two_tasks(&two, &svc, n))
    });
    let svc = our_stack();
    group.bench_function("hardening", |b| b.iter_custom(|n| two_tasks(&two, &svc, n)));
    let svc = metrics::with_local_recorder(&collector, our_stack);
    group.bench_function("hardening_collector", |b| {
        b.iter_custom(|n| two_tasks(&two, &svc, n))
    });
    group.finish();

    let mut group = c.benchmark_group("stack_four_tasks");
    let svc = tower_stack();
    group.bench_function("tower", |b| b.iter_custom(|n| n_tasks(&two, &svc, 4, n)));
    let svc = our_stack();
    group.bench_function("hardening", |b| {
        b.iter_custom(|n| n_tasks(&two, &svc, 4, n))
    });
    let svc = metrics::with_local_recorder(&collector, our_stack);
    group.bench_function("hardening_collector", |b| {
        b.iter_custom(|n| n_tasks(&two, &svc, 4, n))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = stack
}
criterion_main!(benches);
