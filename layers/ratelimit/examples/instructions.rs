//! Instruction counts of the rate limiters' pass path, for callgrind:
//! `instructions <row> <N>` runs one row's loop `N` times on a
//! current-thread runtime; under valgrind's callgrind with two values of
//! `N`, the difference of the counts divided by the difference of the
//! calls is one call's instructions, a figure the machine's load does not
//! move (unlike the criterion bench `ratelimit`, whose rows these are).
//!
//! ```text
//! cargo build --release -p tower-hardening-ratelimit --example instructions
//! for row in $(target/release/examples/instructions rows); do
//!   for n in 2000 22000; do
//!     valgrind --tool=callgrind --toggle-collect='*drive*' --callgrind-out-file=cg \
//!       target/release/examples/instructions $row $n >/dev/null 2>&1
//!     awk '/^(summary|totals):/ { print $2; exit }' cg
//!   done
//! done
//! ```

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::{GlobalKeyExtractor, PeerIpKeyExtractor};
use tower_hardening_ratelimit::{KeyMode, Rate, RateLimitLayer};

const ROWS: &[&str] = &[
    "bare",
    "tower_rate_limit",
    "tower_governor_global",
    "tower_hardening_global",
    "tower_governor_peer_ip",
    "tower_hardening_peer_ip",
];

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

fn tower_rate_limit() -> tower::limit::RateLimitLayer {
    tower::limit::RateLimitLayer::new(u64::MAX / 2, Duration::from_secs(1))
}

/// The measured loop: callgrind counts only what runs inside it.
#[inline(never)]
fn drive<S>(runtime: &tokio::runtime::Runtime, mut svc: S, calls: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    runtime.block_on(async {
        for i in 0..calls {
            let ready = svc.ready().await.expect("ready");
            black_box(ready.call(i).await.expect("a success"));
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let row = args.next().unwrap_or_else(|| "rows".to_owned());
    let calls: u64 = args
        .next()
        .map_or(0, |n| n.parse().expect("a number of calls"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _entered = rt.enter();
    match row.as_str() {
        "bare" => drive(&rt, Adapter(Hello), calls),
        "tower_rate_limit" => drive(&rt, Adapter(tower_rate_limit().layer(Hello)), calls),
        "tower_governor_global" => drive(&rt, Adapter(governor_global().layer(Hello)), calls),
        "tower_hardening_global" => drive(&rt, Adapter(ours(KeyMode::Global).layer(Hello)), calls),
        "tower_governor_peer_ip" => drive(&rt, Adapter(governor_peer_ip().layer(Hello)), calls),
        "tower_hardening_peer_ip" => drive(&rt, Adapter(ours(KeyMode::PeerIp).layer(Hello)), calls),
        _ => println!("{}", ROWS.join(" ")),
    }
}
