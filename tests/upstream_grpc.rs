//! A tonic client over an upstream of three gRPC backends on 127.0.0.1
//! (tonic-health servers): a killed backend is ejected, and a backend
//! answering UNAVAILABLE with `grpc-retry-pushback-ms` is left alone for
//! that long. tonic's request body is not `Clone`, so gRPC calls are not
//! retried: the failures a caller sees are bounded by the ejection, not
//! hidden by retries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::Service;
use tower_hardening::monitor::{ManualReadings, MemoryReading};
use tower_hardening::{SystemHardening, SystemHardeningConfig};

/// A tonic-health backend; `pushback` makes it answer UNAVAILABLE with a
/// 2 s pushback, trailers-only, without calling the health service.
struct Backend {
    uri: String,
    pushback: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<Instant>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    async fn start() -> Arc<Backend> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let backend = Arc::new(Backend {
            uri: format!("http://{addr}"),
            pushback: Arc::default(),
            hits: Arc::default(),
            task: Mutex::new(None),
        });
        let (_reporter, health) = tonic_health::server::health_reporter();
        let pushback = backend.pushback.clone();
        let hits = backend.hits.clone();
        let service = tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            hits.lock().unwrap().push(Instant::now());
            let mut health = health.clone();
            let pushback = pushback.load(Ordering::Relaxed);
            async move {
                if pushback {
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "14")
                        .header("grpc-message", "later")
                        .header("grpc-retry-pushback-ms", "2000")
                        .body(tonic::body::Body::empty())
                        .unwrap();
                    return Ok(response);
                }
                health.call(request).await
            }
        });
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = TowerToHyperService::new(service.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *backend.task.lock().unwrap() = Some(task);
        backend
    }

    async fn kill(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
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

type Upstream = tower_hardening::upstream::HardenedUpstream<
    Channel,
    http::Request<tonic::body::Body>,
    tower_hardening::classify::GrpcStatuses,
    tower_hardening::upstream::HttpPushback,
>;

async fn upstream(backends: &[&Arc<Backend>]) -> (SystemHardening, HealthClient<Upstream>) {
    let endpoints = backends
        .iter()
        .map(|b| format!("\"{}\"", b.uri))
        .collect::<Vec<_>>()
        .join(", ");
    let config = SystemHardeningConfig::from_toml_str(&format!(
        "[services.health.breaker]\nenabled = false\n\
         [upstreams.health]\nendpoints = [{endpoints}]\ntimeout = \"1s\"\n\
         [upstreams.health.outlier]\nconsecutive_failures = 5\n"
    ))
    .unwrap();
    let hardening = SystemHardening::builder(config)
        .readings(quiet())
        .build()
        .unwrap();
    // Connected before the first call: a first call that pays for
    // connecting would make peak-EWMA shun that backend for a while.
    let mut channels = std::collections::HashMap::new();
    for backend in backends {
        let channel = Channel::from_shared(backend.uri.clone())
            .unwrap()
            .connect_timeout(Duration::from_millis(200))
            .connect()
            .await
            .unwrap();
        channels.insert(backend.uri.clone(), channel);
    }
    let upstream = hardening
        .grpc_upstream("health", move |uri| channels[uri].clone())
        .unwrap();
    (hardening, HealthClient::new(upstream))
}

/// The two tests run one at a time: a busy CPU makes one call slow, and
/// peak-EWMA then avoids that backend, which the kill test needs chosen.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_grpc_backend_is_ejected_within_five_failed_calls() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let [a, b, c] = [
        Backend::start().await,
        Backend::start().await,
        Backend::start().await,
    ];
    let (hardening, mut client) = upstream(&[&a, &b, &c]).await;
    for _ in 0..60 {
        client.check(check()).await.expect("serving");
    }
    b.kill().await;
    let mut failed = 0;
    for _ in 0..300 {
        if client.check(check()).await.is_err() {
            failed += 1;
        }
    }
    // Not retried (the body cannot be copied): each failure is a call
    // that reached the dead backend before its ejection. (A backend whose
    // one call was slow, on a busy machine, may not be chosen at all after
    // the kill: peak-EWMA remembers the spike; then nothing failed.)
    assert!(failed <= 5, "{failed} calls failed");
    let health = hardening.handle().service_health("health").unwrap();
    let dead = health.endpoints.iter().find(|e| *e.uri == *b.uri).unwrap();
    if failed > 0 {
        assert_eq!(
            failed, 5,
            "refusals are quick: once chosen, it is chosen until ejected"
        );
        assert_eq!(dead.state, "ejected", "{health:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retry_pushback_keeps_calls_off_that_backend() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let [a, b, c] = [
        Backend::start().await,
        Backend::start().await,
        Backend::start().await,
    ];
    c.pushback.store(true, Ordering::Relaxed);
    let (_hardening, mut client) = upstream(&[&a, &b, &c]).await;
    let until = Instant::now() + Duration::from_millis(4_500);
    let mut unavailable = 0;
    while Instant::now() < until {
        if let Err(status) = client.check(check()).await {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            unavailable += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hits = c.hits.lock().unwrap().clone();
    assert!(!hits.is_empty());
    assert_eq!(
        unavailable,
        hits.len(),
        "each call to it failed, and only those"
    );
    for pair in hits.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1_990),
            "called again after {gap:?}"
        );
    }
}
