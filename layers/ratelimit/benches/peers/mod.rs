//! What the rate-limit bench (`benches/ratelimit.rs`) and its
//! instruction counts (`examples/instructions.rs`) both measure: the
//! trivial HTTP service every limiter wraps, the `u64` adapter, and the
//! limiters (ours, tower_governor's, tower's `RateLimit`), built alike.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::{GlobalKeyExtractor, PeerIpKeyExtractor};
use tower_hardening_ratelimit::{KeyMode, Rate, RateLimitLayer};

pub(crate) type Body = axum::body::Body;

/// The trivial HTTP service every limiter wraps.
#[derive(Clone, Copy)]
pub(crate) struct Hello;

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
pub(crate) struct Adapter<S>(pub(crate) S);

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

pub(crate) mod futures_map {
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

pub(crate) fn ours(key: KeyMode) -> RateLimitLayer {
    RateLimitLayer::builder("bench")
        .rate(Rate::per_second(1_000_000_000))
        .burst(1_000_000_000)
        .key(key)
        .build()
        .unwrap()
}

pub(crate) fn governor_global() -> GovernorLayer<
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

pub(crate) fn governor_peer_ip() -> GovernorLayer<
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

pub(crate) fn tower_rate_limit() -> tower::limit::RateLimitLayer {
    tower::limit::RateLimitLayer::new(u64::MAX / 2, Duration::from_secs(1))
}
