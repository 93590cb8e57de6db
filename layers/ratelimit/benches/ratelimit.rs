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
use std::future::{Ready, ready};
use std::hint::black_box;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::{GlobalKeyExtractor, PeerIpKeyExtractor};
use tower_hardening_bench_support::{criterion, current_thread, one_task, two_tasks, two_workers};
use tower_hardening_ratelimit::{KeyMode, Rate, RateLimitLayer};

type Body = axum::body::Body;

/// The trivial HTTP service every limiter wraps.
#[derive(Clone, Copy)]
struct Hello;

impl Service<http::Request<()>> for Hello {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        black_box(&request);
        ready(Ok(http::Response::new(Body::empty())))
    }
}

/// `u64` in, `u64` out: request `i` comes from client `i % 8`.
#[derive(Clone)]
struct Adapter<S>(S);

impl<S, E> Service<u64> for Adapter<S>
where
    S: Service<http::Request<()>, Response = http::Response<Body>, Error = E>,
    S::Future: Send + 'static,
    E: std::fmt::Debug + Send + 'static,
{
    type Response = u64;
    type Error = E;
    type Future = futures_map::Map<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, i: u64) -> Self::Future {
        let peer = SocketAddr::from(([192, 0, 2, (i % 8) as u8 + 1], 40_000));
        let mut request = http::Request::new(());
        request.extensions_mut().insert(peer);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        futures_map::Map {
            future: self.0.call(request),
            i,
        }
    }
}

mod futures_map {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    pin_project_lite::pin_project! {
        pub struct Map<F> {
            #[pin]
            pub(crate) future: F,
            pub(crate) i: u64,
        }
    }

    impl<F, R, E> Future for Map<F>
    where
        F: Future<Output = Result<http::Response<R>, E>>,
    {
        type Output = Result<u64, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let response = ready!(this.future.poll(cx))?;
            assert!(response.status().is_success(), "nobody is refused here");
            Poll::Ready(Ok(*this.i))
        }
    }
}

fn ours(key: KeyMode) -> RateLimitLayer {
    RateLimitLayer::builder("bench")
        .rate(Rate::per_second(1_000_000_000))
        .burst(1_000_000_000)
        .key(key)
        .build()
        .unwrap()
}

fn governor_global() -> GovernorLayer<
    GlobalKeyExtractor,
    governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>,
    Body,
> {
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1_000_000_000)
        .key_extractor(GlobalKeyExtractor)
        .finish()
        .unwrap();
    GovernorLayer::new(config)
}

fn governor_peer_ip() -> GovernorLayer<
    PeerIpKeyExtractor,
    governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>,
    Body,
> {
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1_000_000_000)
        .finish()
        .unwrap();
    GovernorLayer::new(config)
}

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

fn tower_rate_limit() -> tower::limit::RateLimitLayer {
    tower::limit::RateLimitLayer::new(u64::MAX / 2, Duration::from_secs(1))
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
