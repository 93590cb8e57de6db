//! Runs one layer's success path `N` times on a current-thread runtime:
//! `instructions <row> <N>`. `.ci/instructions` runs it under valgrind's
//! callgrind with two values of `N` and divides the difference of the
//! instruction counts by the difference of the calls, which leaves the
//! instructions of one call: a figure that does not move with the
//! machine's load, unlike the criterion benches.
//!
//! Every row wraps the same trivial service as the criterion benches.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_hardening_breaker::{CircuitBreakerLayer, SlidingWindow};
use tower_hardening_core::{BoxError, Priority};
use tower_hardening_http_bench::Mode;
use tower_hardening_limit::{ResourceLimitLayer, ResourcePool};
use tower_hardening_metrics::{MetricsCollector, MetricsLayer};
use tower_hardening_recovery::RetryLayer;

/// The rows, in the order `.ci/instructions` reports them.
const ROWS: &[&str] = &[
    "bare",
    "breaker",
    "breaker_time_window",
    "retry",
    "metrics",
    "metrics_collector",
    "admission",
    "tower_concurrency_limit",
    "tower_stack",
    "stack",
    "stack_collector",
    "axum_bare",
    "axum_tower",
    "axum_hardened",
    "ratelimit",
];

fn bare() -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|x: u64| async move { Ok::<_, Infallible>(black_box(x)) })
}

/// The measured loop: callgrind counts only what runs inside this
/// function (`--toggle-collect='*drive*'`), so it is never inlined.
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

/// The HTTP rows' loop: one `GET /` through the app with `oneshot`, its
/// response body read to the end (where the stacks' end-of-stream work
/// runs).
#[inline(never)]
fn drive_http(runtime: &tokio::runtime::Runtime, app: axum::Router, calls: u64) {
    use http_body_util::BodyExt;
    runtime.block_on(async {
        for _ in 0..calls {
            let response = app
                .clone()
                .oneshot(tower_hardening_http_bench::get_root())
                .await
                .expect("infallible");
            assert!(response.status().is_success(), "{}", response.status());
            black_box(response.into_body().collect().await.expect("a body"));
        }
    });
}

/// The app of an HTTP row. The hardened one records into its
/// hardening's collector; its monitor is not started (its ticks would
/// be counted with the calls).
fn http_row(rt: &tokio::runtime::Runtime, mode: Mode, calls: u64) -> Result<(), String> {
    let hardening = tower_hardening_http_bench::hardening().map_err(|e| e.to_string())?;
    let app = tower_hardening_http_bench::http_app(mode, &hardening).map_err(|e| e.to_string())?;
    // As `axum::serve` does for each connection: handlers become routes
    // (and layers are applied) once, not on every request.
    drive_http(rt, app.with_state(()), calls);
    Ok(())
}

fn breaker(window: SlidingWindow) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("bench")
        .sliding_window(window)
        .build()
        .expect("valid settings")
}

fn pool() -> ResourcePool {
    ResourcePool::builder("bench")
        .capacity(1_000)
        .build()
        .expect("valid settings")
}

fn stack() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    ServiceBuilder::new()
        .layer(MetricsLayer::new("bench"))
        .layer(ResourceLimitLayer::new(pool()).priority(|_: &u64| Priority::NORMAL))
        .layer(RetryLayer::builder().name("bench").build().expect("valid"))
        .layer(breaker(SlidingWindow::count(100)))
        .timeout(Duration::from_secs(2))
        .service(bare())
}

/// A retry policy that never retries (but clones the request, as any
/// does): tower's half of the stack comparison, as in `benches/stack.rs`.
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

/// tower's built-ins: `ConcurrencyLimit` + `Retry` + `Timeout`.
fn tower_stack() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    ServiceBuilder::new()
        .concurrency_limit(1_000)
        .layer(tower::retry::RetryLayer::new(Never))
        .timeout(Duration::from_secs(2))
        .service(bare())
}

fn run(rt: &tokio::runtime::Runtime, row: &str, calls: u64) -> Result<(), String> {
    // Layers that spawn a task (the collector's ticker) need the runtime.
    let _entered = rt.enter();
    let collector = || MetricsCollector::builder().build().expect("valid settings");
    match row {
        "bare" => drive(rt, bare(), calls),
        "breaker" => drive(rt, breaker(SlidingWindow::count(100)).layer(bare()), calls),
        "breaker_time_window" => {
            let layer = breaker(SlidingWindow::time(Duration::from_secs(60)));
            drive(rt, layer.layer(bare()), calls);
        }
        "retry" => {
            let layer = RetryLayer::builder().name("bench").build().expect("valid");
            drive(rt, layer.layer(bare()), calls);
        }
        "metrics" => drive(rt, MetricsLayer::new("bench").layer(bare()), calls),
        "metrics_collector" => {
            let collector = collector();
            let layer = metrics::with_local_recorder(&collector, || MetricsLayer::new("bench"));
            drive(rt, layer.layer(bare()), calls);
        }
        "admission" => {
            let layer = ResourceLimitLayer::new(pool()).priority(|_: &u64| Priority::NORMAL);
            drive(rt, layer.layer(bare()), calls);
        }
        "tower_concurrency_limit" => {
            drive(
                rt,
                tower::limit::ConcurrencyLimit::new(bare(), 1_000),
                calls,
            );
        }
        "tower_stack" => drive(rt, tower_stack(), calls),
        "stack" => drive(rt, stack(), calls),
        "stack_collector" => {
            let collector = collector();
            drive(rt, metrics::with_local_recorder(&collector, stack), calls);
        }
        "axum_bare" => http_row(rt, Mode::Bare, calls)?,
        "axum_tower" => http_row(rt, Mode::Tower, calls)?,
        "axum_hardened" => http_row(rt, Mode::Hardened, calls)?,
        "ratelimit" => {
            let layer = tower_hardening_ratelimit::RateLimitLayer::builder("bench")
                .rate(tower_hardening_ratelimit::Rate::per_second(1_000_000_000))
                .burst(1_000_000_000)
                .build()
                .expect("valid settings")
                .any_request(Priority::NORMAL)
                .expect("global");
            drive(rt, layer.layer(bare()), calls);
        }
        "rows" => println!("{}", ROWS.join(" ")),
        other => {
            return Err(format!(
                "unknown row `{other}`; one of: {}",
                ROWS.join(", ")
            ));
        }
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let row = args.next().unwrap_or_else(|| "rows".to_owned());
    let calls = match args.next().map(|n| n.parse::<u64>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(error)) => {
            eprintln!("the number of calls: {error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    if let Err(error) = run(&runtime, &row, calls) {
        eprintln!("{error}");
        std::process::exit(2);
    }
}
