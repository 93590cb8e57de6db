//! `ratelimit`: the pass path of a rate limiter (every request within
//! its quota), ours against `tower_governor` and tower's `RateLimit`, in
//! the same run.
//!
//! Each limiter wraps the same trivial HTTP service behind the same
//! adapter (a `u64` becomes an `http::Request<()>` carrying the peer's
//! address as a `SocketAddr` and as axum's `ConnectInfo`, and the
//! response becomes the `u64` again), so the rows differ by the limiter
//! alone. Quotas are far above what the loop can send: nobody is refused.
//! tower's `RateLimit` is not `Clone` (a shared one takes a `Buffer`):
//! with two tasks each has its own, which only flatters it; the others
//! share one limiter between tasks.
//!
//! - `global`: one quota for everything (ours `key = "global"`,
//!   tower_governor's `GlobalKeyExtractor`, tower's `RateLimit`).
//! - `peer_ip`: a quota per peer address, eight clients in turn (ours
//!   `key = "peer-ip"`, tower_governor's `PeerIpKeyExtractor`).
//!
//! One task: current-thread runtime; two tasks: two workers sharing one
//! limiter.
//!
//! Run: `cargo bench -p tower-hardening-ratelimit --bench ratelimit`

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service};
use tower_hardening_bench_support::{criterion, current_thread, one_task, two_tasks, two_workers};
use tower_hardening_ratelimit::KeyMode;

#[path = "peers/mod.rs"]
mod peers;
use peers::{Adapter, Body, Hello, governor_global, governor_peer_ip, ours, tower_rate_limit};

/// tower's `RateLimit` is not `Clone` (sharing one takes a `Buffer`):
/// each task gets a limiter of its own, which only flatters it.
struct PerTask(tower::limit::RateLimit<Hello>);

impl Clone for PerTask {
    fn clone(&self) -> Self {
        PerTask(tower_rate_limit().layer(Hello))
    }
}

impl Service<http::Request<()>> for PerTask {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        self.0.call(request)
    }
}

fn ratelimit(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("ratelimit_global");
    let mut svc = Adapter(Hello);
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    let mut svc = rt.block_on(async { Adapter(tower_rate_limit().layer(Hello)) });
    group.bench_function("tower_rate_limit", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    let mut svc = Adapter(governor_global().layer(Hello));
    group.bench_function("tower_governor", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    let mut svc = Adapter(ours(KeyMode::Global).layer(Hello));
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    group.finish();

    let mut group = c.benchmark_group("ratelimit_peer_ip");
    let mut svc = Adapter(governor_peer_ip().layer(Hello));
    group.bench_function("tower_governor", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    let mut svc = Adapter(ours(KeyMode::PeerIp).layer(Hello));
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| one_task(&rt, &mut svc, n))
    });
    group.finish();

    let rt = two_workers();
    let mut group = c.benchmark_group("ratelimit_global_two_tasks");
    let svc = Adapter(Hello);
    group.bench_function("bare_service", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = rt.block_on(async { Adapter(PerTask(tower_rate_limit().layer(Hello))) });
    group.bench_function("tower_rate_limit", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = Adapter(governor_global().layer(Hello));
    group.bench_function("tower_governor", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = Adapter(ours(KeyMode::Global).layer(Hello));
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    group.finish();

    let mut group = c.benchmark_group("ratelimit_peer_ip_two_tasks");
    let svc = Adapter(governor_peer_ip().layer(Hello));
    group.bench_function("tower_governor", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    let svc = Adapter(ours(KeyMode::PeerIp).layer(Hello));
    group.bench_function("tower_hardening", |b| {
        b.iter_custom(|n| two_tasks(&rt, &svc, n))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = ratelimit
}
criterion_main!(benches);
