//! Upstreams over real sockets: three axum backends on 127.0.0.1, a
//! hyper-util client behind `SetEndpoint`, the facade's `http_upstream`.
//! Each test runs for a few seconds of real time at most.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_hardening::core::{EventKind, HealthState, RejectionKind, rejection_of};
use tower_hardening::monitor::{ManualReadings, MemoryReading};
use tower_hardening::upstream::{HardenedUpstream, SetEndpoint};
use tower_hardening::{BoxError, SystemHardening, SystemHardeningConfig};

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type Endpoint = tower::util::BoxCloneService<
    http::Request<Full<Bytes>>,
    http::Response<hyper::body::Incoming>,
    BoxError,
>;
type Upstream = HardenedUpstream<
    Endpoint,
    http::Request<Full<Bytes>>,
    tower_hardening::classify::HttpStatuses,
    tower_hardening::upstream::HttpPushback,
>;

/// What a backend answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// 500 on every call.
    Fail,
    /// Every call `by` late.
    Slow(Duration),
    /// Every `every`-th call `by` late.
    SometimesSlow {
        every: u32,
        by: Duration,
    },
    /// 503 with `Retry-After: 2`.
    RetryAfter2,
}

/// One axum backend whose connections all close when it is killed.
struct Backend {
    addr: SocketAddr,
    uri: String,
    mode: Arc<Mutex<Mode>>,
    hits: Arc<Mutex<Vec<Instant>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    async fn start() -> Arc<Backend> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Backend {
            addr,
            uri: format!("http://{addr}"),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            hits: Arc::default(),
            task: Mutex::new(None),
        });
        backend.serve(listener);
        backend
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let mode = self.mode.clone();
        let hits = self.hits.clone();
        let count = Arc::new(AtomicU32::new(0));
        // `/warm` opens the client's connection before a test: a first call
        // that pays for connecting would make peak-EWMA shun the backend.
        let app = Router::new().route("/warm", get(|| async { "ok" })).route(
            "/",
            get(move || {
                let mode = *mode.lock().unwrap();
                hits.lock().unwrap().push(Instant::now());
                let n = count.fetch_add(1, Ordering::Relaxed);
                async move {
                    match mode {
                        Mode::Ok => (StatusCode::OK, [("retry-after", "0")], "ok"),
                        Mode::Fail => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [("retry-after", "0")],
                            "no",
                        ),
                        Mode::Slow(by) => {
                            tokio::time::sleep(by).await;
                            (StatusCode::OK, [("retry-after", "0")], "ok")
                        }
                        Mode::SometimesSlow { every, by } => {
                            if n % every == every - 1 {
                                tokio::time::sleep(by).await;
                            }
                            (StatusCode::OK, [("retry-after", "0")], "ok")
                        }
                        Mode::RetryAfter2 => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "2")],
                            "later",
                        ),
                    }
                }
            }),
        );
        // Connections live in a set the accept task owns: aborting the
        // task closes every one of them, as a killed process would.
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// Stops listening and closes every connection: connections are
    /// refused from now on.
    async fn kill(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    async fn restart(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

/// Counts, per endpoint URI, the attempts the upstream sent and the ones
/// that ended in an error (connection refused or reset).
#[derive(Clone, Default)]
struct Attempts {
    sent: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Attempts {
    fn to(&self, uri: &str) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, _)| u == uri)
            .count()
    }

    fn failed_to(&self, uri: &str) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, failed)| u == uri && *failed)
            .count()
    }
}

fn quiet() -> ManualReadings {
    let readings = ManualReadings::default();
    readings.set_memory(MemoryReading {
        process_rss: 100 << 20,
        system_total: 8 << 30,
        system_used: 2 << 30,
        ..Default::default()
    });
    readings
}

/// The upstream `model` over `backends`, configured by `toml` (added under
/// `[upstreams.model]`, after the endpoints), through one hyper-util
/// client.
async fn upstream(
    backends: &[&Arc<Backend>],
    toml: &str,
    services: &str,
) -> (SystemHardening, Upstream, Attempts) {
    let endpoints = backends
        .iter()
        .map(|b| format!("\"{}\"", b.uri))
        .collect::<Vec<_>>()
        .join(", ");
    let config = SystemHardeningConfig::from_toml_str(&format!(
        "{services}\n[upstreams.model]\nendpoints = [{endpoints}]\n{toml}"
    ))
    .unwrap();
    let hardening = SystemHardening::builder(config)
        .readings(quiet())
        .build()
        .unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build_http();
    for backend in backends {
        let warm = http::Request::get(format!("{}/warm", backend.uri))
            .body(Full::new(Bytes::new()))
            .unwrap();
        client.request(warm).await.unwrap();
    }
    let attempts = Attempts::default();
    let counted = attempts.clone();
    let upstream = hardening
        .http_upstream("model", move |uri| {
            let endpoint = SetEndpoint::new(uri, client.clone()).unwrap();
            let counted = counted.clone();
            let uri = uri.to_owned();
            Endpoint::new(tower::service_fn(move |request| {
                let call = endpoint.clone().oneshot(request);
                let counted = counted.clone();
                let uri = uri.clone();
                async move {
                    let result = call.await.map_err(BoxError::from);
                    counted.sent.lock().unwrap().push((uri, result.is_err()));
                    result
                }
            }))
        })
        .unwrap();
    (hardening, upstream, attempts)
}

fn get_root() -> http::Request<Full<Bytes>> {
    http::Request::get("/")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// One call: `Ok(status)` or the error.
///
/// (`ready().await?.call()` rather than `oneshot`: tower's `Oneshot` names
/// `S: Service<Req>` in its type, which an `async` block that must be
/// `Send` cannot prove for a `BoxError` service, a known rustc
/// limitation.)
async fn call(upstream: &Upstream) -> Result<StatusCode, BoxError> {
    let mut upstream = upstream.clone();
    let response = upstream.ready().await?.call(get_root()).await?;
    Ok(response.status())
}

async fn three() -> [Arc<Backend>; 3] {
    [
        Backend::start().await,
        Backend::start().await,
        Backend::start().await,
    ]
}

/// The socket tests run one at a time: on a busy CPU one slow call makes
/// peak-EWMA avoid that backend for a while, which a test that needs it
/// chosen cannot wait for.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes the live backends slower than any spike the dead one may be
/// remembered for: peak-EWMA keeps a backend whose one call was slow (a
/// busy machine) out of the choice for seconds, and a kill test needs the
/// dead one chosen.
fn slow_down_the_others(others: &[&Arc<Backend>]) {
    for backend in others {
        backend.set(Mode::Slow(Duration::from_millis(100)));
    }
}

const EJECT_AFTER_5: &str =
    "[upstreams.model.outlier]\nconsecutive_failures = 5\nbase_ejection_time = \"1s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_ejected_within_five_calls_and_callers_see_no_failure() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let [a, b, c] = three().await;
    let (hardening, upstream, attempts) = upstream(
        &[&a, &b, &c],
        "[upstreams.model.outlier]\nconsecutive_failures = 5\n",
        "",
    )
    .await;
    let mut events = hardening.handle().subscribe();
    let mut ok = 0;
    let total = 1_000;
    for i in 0..total {
        if i == 200 {
            b.kill().await;
            slow_down_the_others(&[&a, &c]);
        }
        if i > 200 && attempts.failed_to(&b.uri) >= 5 {
            // Ejected (for 30 s): the others answer quickly again.
            a.set(Mode::Ok);
            c.set(Mode::Ok);
        }
        if call(&upstream).await.is_ok_and(|s| s == StatusCode::OK) {
            ok += 1;
        }
    }
    assert!(ok * 1000 >= total * 999, "{ok} of {total} succeeded");
    assert!(
        attempts.failed_to(&b.uri) <= 5,
        "{} failed attempts reached the dead backend",
        attempts.failed_to(&b.uri)
    );
    let health = hardening.handle().service_health("model").unwrap();
    let dead = health.endpoints.iter().find(|e| *e.uri == *b.uri).unwrap();
    assert_eq!(
        attempts.failed_to(&b.uri),
        5,
        "refusals are quick: once chosen after the kill, it is chosen until ejected"
    );
    assert_eq!(dead.state, "ejected", "{health:?}");
    let mut saw_ejection = false;
    while let Ok(event) = events.try_recv() {
        if let EventKind::EndpointEjected { endpoint, .. } = event.kind() {
            saw_ejection |= **endpoint == *b.uri;
        }
    }
    assert!(saw_ejection);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_killed_backend_is_in_rotation_again_after_its_ejection_time() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let [a, b, c] = three().await;
    let (_hardening, upstream, attempts) = upstream(&[&a, &b, &c], EJECT_AFTER_5, "").await;
    for _ in 0..30 {
        call(&upstream).await.unwrap();
    }
    b.kill().await;
    slow_down_the_others(&[&a, &c]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while attempts.failed_to(&b.uri) < 5 {
        assert!(
            Instant::now() < deadline,
            "the dead backend was never chosen"
        );
        assert_eq!(call(&upstream).await.unwrap(), StatusCode::OK);
    }
    a.set(Mode::Ok);
    c.set(Mode::Ok);
    let hits = b.hits();
    b.restart().await;
    // Ejected for 1 s: nothing reaches it before.
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        assert_eq!(call(&upstream).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(b.hits(), hits, "nothing reaches an ejected backend");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = Instant::now() + Duration::from_secs(2);
    while b.hits() == hits && Instant::now() < back {
        assert_eq!(call(&upstream).await.unwrap(), StatusCode::OK);
    }
    assert!(b.hits() > hits, "back in rotation after its ejection time");
    assert!(attempts.to(&b.uri) > 5);
}

/// The latencies of `calls` calls made by `tasks` tasks at once.
async fn latencies(upstream: &Upstream, tasks: usize, calls: usize) -> Vec<Duration> {
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let upstream = upstream.clone();
        set.spawn(async move {
            let mut took = Vec::new();
            for _ in 0..calls / tasks {
                let started = Instant::now();
                assert_eq!(call(&upstream).await.unwrap(), StatusCode::OK);
                took.push(started.elapsed());
            }
            took
        });
    }
    let mut all = Vec::new();
    while let Some(took) = set.join_next().await {
        all.extend(took.unwrap());
    }
    all.sort();
    all
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_after_30ms_keeps_p99_under_100ms_when_5_percent_of_calls_are_500ms_late() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let slow = Mode::SometimesSlow {
        every: 20,
        by: Duration::from_millis(500),
    };
    let without = {
        let [a, b, c] = three().await;
        for backend in [&a, &b, &c] {
            backend.set(slow);
        }
        let (_h, upstream, _) = upstream(&[&a, &b, &c], "", "").await;
        latencies(&upstream, 10, 200).await
    };
    let with = {
        let [a, b, c] = three().await;
        for backend in [&a, &b, &c] {
            backend.set(slow);
        }
        // Two hedges: one late answer and a late hedge together are 5% of
        // 5% of the calls, too many for a p99 over 200 calls.
        let (_h, upstream, _) = upstream(
            &[&a, &b, &c],
            "[upstreams.model.hedge]\ndelay = \"30ms\"\nmax_hedges = 2\n",
            "",
        )
        .await;
        latencies(&upstream, 10, 200).await
    };
    assert!(
        p99(&without) >= Duration::from_millis(450),
        "without: {:?}",
        p99(&without)
    );
    assert!(
        p99(&with) < Duration::from_millis(100),
        "with: {:?}",
        p99(&with)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_slow_on_every_call_gets_under_5_percent_of_the_calls() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let [a, b, c] = three().await;
    c.set(Mode::Slow(Duration::from_millis(100)));
    let (_h, upstream, attempts) = upstream(&[&a, &b, &c], "", "").await;
    latencies(&upstream, 4, 40).await;
    let warm = attempts.to(&c.uri);
    latencies(&upstream, 4, 400).await;
    let share = (attempts.to(&c.uri) - warm) as f64 / 400.0;
    assert!(
        share < 0.05,
        "the slow backend got {:.1}% of the calls",
        share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_2_keeps_every_attempt_off_that_backend_for_2s() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let [a, b, c] = three().await;
    c.set(Mode::RetryAfter2);
    let (hardening, upstream, _) = upstream(
        &[&a, &b, &c],
        "[upstreams.model.outlier]\nenabled = false\n",
        "",
    )
    .await;
    let until = Instant::now() + Duration::from_millis(4_500);
    while Instant::now() < until {
        assert_eq!(
            call(&upstream).await.unwrap(),
            StatusCode::OK,
            "retried elsewhere"
        );
        let first = c.hits.lock().unwrap().first().copied();
        if c.hits() == 1 && first.is_some_and(|at| at.elapsed() < Duration::from_millis(1_900)) {
            let health = hardening.handle().service_health("model").unwrap();
            let pushed = health.endpoints.iter().find(|e| *e.uri == *c.uri).unwrap();
            assert_eq!(pushed.state, "pushed_back");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hits = c.hits.lock().unwrap().clone();
    assert!(
        hits.len() >= 2,
        "called again once the 2 s were over: {hits:?}"
    );
    for pair in hits.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1_990),
            "called again after {gap:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_failing_opens_the_breaker_and_callers_fail_fast() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let [a, b, c] = three().await;
    for backend in [&a, &b, &c] {
        backend.set(Mode::Fail);
    }
    let (hardening, upstream, _) = upstream(
        &[&a, &b, &c],
        "",
        "[services.model.breaker]\nminimum_calls = 10\nwait_in_open = \"30s\"\n",
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            call(&upstream).await.unwrap(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let hits = a.hits() + b.hits() + c.hits();
    let started = Instant::now();
    for _ in 0..100 {
        let err = call(&upstream).await.unwrap_err();
        assert_eq!(
            rejection_of(&*err).map(|r| r.kind),
            Some(RejectionKind::CircuitOpen),
            "{err}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        a.hits() + b.hits() + c.hits(),
        hits,
        "nothing reached a backend"
    );
    assert_eq!(
        hardening
            .handle()
            .service_health("model")
            .unwrap()
            .circuit_state,
        Some(tower_hardening::core::CircuitState::Open)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_replaced_under_load_fail_no_request() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let [a, b, c] = three().await;
    let d = Backend::start().await;
    let (_h, upstream, attempts) = upstream(&[&a, &b], "", "").await;
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    let stop = Instant::now() + Duration::from_millis(1_500);
    for _ in 0..4 {
        let upstream = upstream.clone();
        let failures = failures.clone();
        let done = done.clone();
        set.spawn(async move {
            while Instant::now() < stop {
                match call(&upstream).await {
                    Ok(StatusCode::OK) => {}
                    other => {
                        eprintln!("{other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let handle = upstream.endpoints().clone();
    tokio::time::sleep(Duration::from_millis(400)).await;
    handle
        .set_endpoints([c.uri.as_str(), d.uri.as_str()])
        .unwrap();
    // The removed ones go away for good, as drained instances do.
    a.kill().await;
    b.kill().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(handle.remove(&c.uri));
    handle.insert(a.uri.as_str()).unwrap();
    a.restart().await;
    while set.join_next().await.is_some() {}
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {}",
        done.load(Ordering::Relaxed)
    );
    assert!(attempts.to(&c.uri) > 0 && attempts.to(&d.uri) > 0);
}

#[tokio::test]
async fn upstream_configuration_is_checked() {
    for (toml, field) in [
        ("[upstreams.m]", "upstreams.m.endpoints"),
        (
            "[upstreams.m]\nendpoints = [\"not a uri\"]",
            "upstreams.m.endpoints[0]",
        ),
        (
            "[upstreams.m]\nendpoints = [\"/path-only\"]",
            "upstreams.m.endpoints[0]",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\", \"http://a:1\"]",
            "upstreams.m.endpoints[1]",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\"]\ntimeout = \"0s\"",
            "upstreams.m.timeout",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\"]\n[upstreams.m.outlier]\nfailure_rate = 1.5",
            "upstreams.m.outlier.failure_rate",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\"]\n[upstreams.m.outlier]\nmax_ejection_percent = 101",
            "upstreams.m.outlier.max_ejection_percent",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\"]\n[upstreams.m.outlier]\nbase_ejection_time = 0",
            "upstreams.m.outlier.base_ejection_time",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\"]\n[upstreams.m.retry]\nmax_attempts = 0",
            "upstreams.m.retry.max_attempts",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\"]\n[upstreams.m.retry]\nbudget_ratio = -1.0",
            "upstreams.m.retry.budget_ratio",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\"]\n[upstreams.m.hedge]\nmax_hedges = 0",
            "upstreams.m.hedge.max_hedges",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\"]\n[upstreams.m.hedge]\ndelay = \"0ms\"",
            "upstreams.m.hedge.delay",
        ),
        (
            "[upstreams.m]\nendpoints = [\"http://a:1\"]\n[services.m.retry]",
            "services.m.retry",
        ),
        (
            "[upstreams.process]\nendpoints = [\"http://a:1\"]",
            "upstreams",
        ),
    ] {
        let err = SystemHardeningConfig::from_toml_str(toml).unwrap_err();
        assert_eq!(err.field(), field, "{toml:?}: {err}");
    }
    let err = SystemHardeningConfig::from_toml_str(
        "[upstreams.m]\nendpoints = [\"http://a:1\"]\n[upstreams.m.hedge]\ndelay = \"soon\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("p95"), "{err}");
}

/// In-process endpoints on the paused clock: health, readiness and events
/// of an upstream whose endpoints go out.
#[tokio::test(start_paused = true)]
async fn health_counts_an_upstream_unhealthy_only_when_every_endpoint_is_out() {
    let config = SystemHardeningConfig::from_toml_str(
        "health_check_interval = \"1s\"\n\
         [services.model]\nreadiness = true\n[services.model.breaker]\nenabled = false\n\
         [upstreams.model]\nendpoints = [\"http://a:1\", \"http://b:1\"]\n\
         [upstreams.model.outlier]\nconsecutive_failures = 2\nmax_ejection_percent = 100\n",
    )
    .unwrap();
    let hardening = SystemHardening::builder(config)
        .readings(quiet())
        .build()
        .unwrap();
    let down = Arc::new(Mutex::new(Vec::<String>::new()));
    let failing = down.clone();
    let upstream = hardening
        .upstream("model", move |uri| {
            let failing = failing.clone();
            let uri = uri.to_owned();
            tower::service_fn(move |_: ()| {
                let down = failing.lock().unwrap().contains(&uri);
                async move {
                    if down {
                        Err::<(), BoxError>("connection refused".into())
                    } else {
                        Ok(())
                    }
                }
            })
        })
        .unwrap();
    let handle = hardening.start();
    let tick = async || {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    };
    tick().await;
    assert!(handle.ready());
    down.lock().unwrap().push("http://a:1".to_owned());
    for _ in 0..20 {
        let _ = upstream.clone().oneshot(()).await;
    }
    tick().await;
    let health = handle.service_health("model").unwrap();
    assert_eq!(health.status, HealthState::Degraded, "{health:?}");
    assert!(handle.ready(), "one endpoint out: still ready");
    down.lock().unwrap().push("http://b:1".to_owned());
    for _ in 0..20 {
        let _ = upstream.clone().oneshot(()).await;
    }
    tick().await;
    let health = handle.service_health("model").unwrap();
    assert_eq!(health.status, HealthState::Unhealthy, "{health:?}");
    assert!(health.endpoints.iter().all(|e| e.state == "ejected"));
    assert!(
        !handle.ready(),
        "every endpoint out: not ready (readiness = true)"
    );
    // The dashboard's JSON lists them, and the events it shows name them.
    let response = handle
        .endpoints()
        .oneshot(http::Request::get("/dashboard/data").body(()).unwrap())
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let data: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let model = data["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "model")
        .unwrap();
    assert_eq!(model["endpoints"].as_array().unwrap().len(), 2, "{model}");
    assert_eq!(model["endpoints"][0]["state"], "ejected", "{model}");
    let texts: Vec<&str> = data["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("endpoint http://a:1 ejected for 30s")),
        "{texts:?}"
    );
    // Both come back after the ejection time.
    down.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(31)).await;
    let health = handle.service_health("model").unwrap();
    assert!(
        health.endpoints.iter().all(|e| e.state == "healthy"),
        "{health:?}"
    );
    handle.shutdown().await;
}

#[test]
#[allow(
    clippy::result_large_err,
    reason = "figment's Jail decides the closure's error type"
)]
fn an_upstream_is_configured_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env(
            "HARDENING_UPSTREAMS__MODEL_INFERENCE__ENDPOINTS",
            "[\"http://10.0.0.1:7001\", \"http://10.0.0.2:7001\"]",
        );
        jail.set_env(
            "HARDENING_UPSTREAMS__MODEL_INFERENCE__OUTLIER__CONSECUTIVE_FAILURES",
            "3",
        );
        let config = SystemHardeningConfig::from_env("HARDENING").unwrap();
        let upstream = &config.upstreams["model-inference"];
        assert_eq!(upstream.endpoints.len(), 2);
        assert_eq!(upstream.outlier.consecutive_failures, 3);
        Ok(())
    });
}

/// A request that is not `Clone`.
#[derive(Debug)]
struct NotClone(u32);

macro_rules! upstream_spawns {
    ($name:ident, $error:ty) => {
        #[tokio::test]
        async fn $name() {
            let config = SystemHardeningConfig::from_toml_str(
                "[upstreams.api]\nendpoints = [\"http://a:1\", \"http://b:1\"]\n\
                 [upstreams.api.hedge]\ndelay = \"30ms\"",
            )
            .unwrap();
            let hardening = SystemHardening::builder(config)
                .readings(quiet())
                .build()
                .unwrap();
            let svc = hardening
                .upstream("api", |_| {
                    tower::service_fn(|x: u32| async move { Ok::<u32, $error>(x + 1) })
                })
                .unwrap();
            let answer = tokio::spawn(svc.clone().oneshot(41))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(answer, 42);
            let mut svc = svc;
            let answer = tokio::spawn(async move { svc.ready().await?.call(41).await })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(answer, 42);
        }
    };
}

upstream_spawns!(an_upstream_over_box_error_spawns, BoxError);
upstream_spawns!(an_upstream_over_io_error_spawns, std::io::Error);
upstream_spawns!(an_upstream_over_infallible_spawns, std::convert::Infallible);

#[tokio::test]
async fn an_upstream_of_requests_without_a_copy_spawns_and_sends_each_once() {
    let config =
        SystemHardeningConfig::from_toml_str("[upstreams.api]\nendpoints = [\"http://a:1\"]")
            .unwrap();
    let hardening = SystemHardening::builder(config)
        .readings(quiet())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let mut svc = hardening
        .upstream_with(
            "api",
            |builder| builder,
            move |_| {
                let counted = counted.clone();
                tower::service_fn(move |x: NotClone| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    async move { Err::<u32, BoxError>(format!("refused {}", x.0).into()) }
                })
            },
        )
        .unwrap();
    let err = tokio::spawn(async move { svc.ready().await?.call(NotClone(1)).await })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.to_string(), "refused 1");
    assert_eq!(calls.load(Ordering::Relaxed), 1, "no copy: sent once");
}

// ---- Review: run-time endpoints and cancellation under the facade ----

/// The documented way to make an HTTP endpoint (`SetEndpoint::new(uri,
/// client).expect("validated by the configuration")`) panics when the
/// handle adds an endpoint the configuration never saw: a run-time URI
/// with no scheme, or garbage, must be a clear error.
#[tokio::test]
async fn inserting_a_bad_uri_at_run_time_is_an_error_not_a_panic() {
    let config = SystemHardeningConfig::from_toml_str(
        "[upstreams.api]\nendpoints = [\"http://127.0.0.1:1\"]",
    )
    .unwrap();
    let hardening = SystemHardening::builder(config)
        .readings(quiet())
        .build()
        .unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let upstream = hardening
        .http_upstream::<Full<Bytes>, _>("api", move |uri| {
            SetEndpoint::new(uri, client.clone()).expect("validated by the configuration")
        })
        .unwrap();
    let handle = upstream.endpoints().clone();
    for bad in ["not a uri", "/path-only", ""] {
        let handle = handle.clone();
        let inserted =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || handle.insert(bad)));
        assert!(
            matches!(inserted, Ok(Err(_))),
            "{bad:?}: an error, not a panic nor an endpoint"
        );
    }
    assert_eq!(handle.endpoints().len(), 1);
    // One bad URI among good ones: nothing changes.
    let err = handle
        .set_endpoints(["http://127.0.0.1:2", "garbage"])
        .unwrap_err();
    assert!(err.to_string().contains("\"garbage\""), "{err}");
    let uris: Vec<_> = handle.endpoints().into_iter().map(|e| e.uri).collect();
    assert_eq!(uris, vec![Arc::from("http://127.0.0.1:1")]);
    handle.insert("http://127.0.0.1:3").unwrap();
    assert_eq!(handle.endpoints().len(), 2);
}

/// A half-open breaker over a hedging upstream: the caller gives up while
/// the attempt and its hedge are both in flight. One probe permit was
/// taken and comes back; admission and the in-flight gauge return to 0.
#[tokio::test(start_paused = true)]
async fn a_caller_giving_up_mid_hedge_on_a_half_open_breaker_returns_every_permit() {
    let config = SystemHardeningConfig::from_toml_str(
        "[services.api]\n[services.api.breaker]\nhalf_open_permits = 1\n\
         [services.api.limit]\nmax_concurrency = 4\n\
         [upstreams.api]\nendpoints = [\"http://a:1\", \"http://b:1\", \"http://c:1\"]\n\
         [upstreams.api.hedge]\ndelay = \"10ms\"\nmax_hedges = 2\n",
    )
    .unwrap();
    let hardening = SystemHardening::builder(config)
        .readings(quiet())
        .build()
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let counted = started.clone();
    let upstream = hardening
        .upstream("api", move |_| {
            let counted = counted.clone();
            tower::service_fn(move |x: u32| {
                counted.fetch_add(1, Ordering::Relaxed);
                async move {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok::<u32, BoxError>(x)
                }
            })
        })
        .unwrap();
    let handle = hardening.start();
    let breaker = upstream.breaker();
    breaker.half_open();
    let call = tokio::spawn(upstream.clone().oneshot(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        started.load(Ordering::Relaxed),
        3,
        "the attempt and two hedges"
    );
    assert_eq!(
        breaker.snapshot().probes_in_flight,
        1,
        "one probe, not three"
    );
    call.abort();
    let _ = call.await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        breaker.snapshot().probes_in_flight,
        0,
        "the probe permit is back"
    );
    let response = handle
        .endpoints()
        .oneshot(http::Request::get("/metrics").body(()).unwrap())
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let in_flight = text
        .lines()
        .find(|l| l.starts_with("hardening_requests_in_flight{") && l.contains("service=\"api\""))
        .unwrap_or_else(|| panic!("no in-flight gauge in {text}"));
    assert!(in_flight.ends_with(" 0"), "{in_flight}");
    let stats = handle.resource_stats();
    assert_eq!(stats.active_allocations, 0, "{stats:?}");
    handle.shutdown().await;
}

/// Two spellings of one endpoint (scheme and host are case-insensitive;
/// an empty path is `/`) are one backend counted twice: its ejection,
/// the ejection cap and the load spread all go wrong. Refused like an
/// exact duplicate.
#[test]
fn one_endpoint_spelled_twice_is_refused() {
    for endpoints in [
        "[\"http://a:1\", \"HTTP://A:1\"]",
        "[\"http://a:1\", \"http://a:1/\"]",
    ] {
        let err = SystemHardeningConfig::from_toml_str(&format!(
            "[upstreams.m]\nendpoints = {endpoints}"
        ))
        .unwrap_err();
        assert_eq!(
            err.field(),
            "upstreams.m.endpoints[1]",
            "{endpoints}: {err}"
        );
    }
}

/// Every endpoint removed at run time: the upstream is unhealthy, and the
/// reason says there is none (not that they are "out").
#[tokio::test(start_paused = true)]
async fn an_upstream_with_no_endpoint_left_is_unhealthy_saying_so() {
    let config = SystemHardeningConfig::from_toml_str(
        "health_check_interval = \"1s\"\n[services.api]\nreadiness = true\n\
         [upstreams.api]\nendpoints = [\"http://a:1\"]\n",
    )
    .unwrap();
    let hardening = SystemHardening::builder(config)
        .readings(quiet())
        .build()
        .unwrap();
    let upstream = hardening
        .upstream("api", |_| {
            tower::service_fn(|x: u32| async move { Ok::<u32, BoxError>(x) })
        })
        .unwrap();
    let handle = hardening.start();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(handle.ready());
    upstream
        .endpoints()
        .set_endpoints(Vec::<String>::new())
        .unwrap();
    let err = upstream.clone().oneshot(1).await.unwrap_err();
    assert_eq!(
        rejection_of(&*err).map(|r| r.kind),
        Some(RejectionKind::NoHealthyEndpoint)
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let health = handle.service_health("api").unwrap();
    assert_eq!(health.status, HealthState::Unhealthy, "{health:?}");
    let reason = health.reason.clone().unwrap_or_default();
    assert!(reason.contains("no endpoint"), "{reason:?}");
    assert!(!handle.ready());
    handle.shutdown().await;
}

/// A dependency asking callers to wait is no failure: one endpoint (the
/// plain hardened client) answering 503 with `Retry-After: 2` makes the
/// upstream degraded, never unhealthy, so a replica whose readiness
/// counts the upstream stays ready. Were it unready, every replica
/// calling that dependency would leave the load balancer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_endpoint_pushing_back_leaves_the_replica_ready() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let backend = Backend::start().await;
    backend.set(Mode::RetryAfter2);
    let (hardening, upstream, _) = upstream(
        &[&backend],
        "",
        "health_check_interval = \"100ms\"\n[services.model]\nreadiness = true\n",
    )
    .await;
    let handle = hardening.start();
    let _ = call(&upstream).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = handle.service_health("model").unwrap();
    assert_eq!(health.endpoints[0].state, "pushed_back", "{health:?}");
    assert_eq!(health.status, HealthState::Degraded, "{health:?}");
    assert!(handle.ready(), "pushing back is no failure: still ready");
    handle.shutdown().await;
}
