//! The HTTP load harness: a hello-world axum route served bare and behind
//! `http_layer` with every layer on (metrics into the collector,
//! admission, retries, breaker, a timeout, fault injection present but
//! off), measured alternately in the same run over loopback, with a
//! bounded number of requests.
//!
//! Run: `cargo run --release --example http_load -- --rounds 5 --requests 20000 --connections 32`
//!
//! Each round sends `requests` GETs from `connections` concurrent
//! keep-alive connections to one server, then the same to the other; the
//! servers run on a runtime of their own (one worker), the client on
//! another (one worker), so both get a core. Prints each round and the
//! medians: requests per second and p99 latency, bare and hardened.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::{BoxError, SystemHardening};

async fn hello() -> &'static str {
    "hello, world"
}

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Serves `app` on 127.0.0.1 from the current runtime.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// Sends `requests` GETs over `connections` concurrent connections;
/// returns requests per second and the p99 latency.
async fn load(url: String, requests: usize, connections: usize) -> (f64, Duration) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            let share = requests / connections + usize::from(i < requests % connections);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(share);
                for _ in 0..share {
                    let begun = Instant::now();
                    let request = http::Request::get(&url).body(Empty::new()).unwrap();
                    let response = client.request(request).await.expect("an answer");
                    assert!(response.status().is_success(), "{}", response.status());
                    let _ = response.into_body().collect().await;
                    latencies.push(begun.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let p99 = latencies[((latencies.len() as f64 * 0.99).ceil() as usize).max(1) - 1];
    (requests as f64 / elapsed.as_secs_f64(), p99)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() -> Result<(), BoxError> {
    let rounds = arg("--rounds", 5).max(1);
    let connections = arg("--connections", 32).clamp(1, 1_000);
    let requests = arg("--requests", 20_000).max(connections * 10);

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    let (bare, hardened, handle) = server_rt.block_on(async {
        let config = SystemHardeningConfig::from_toml_str(
            r#"
            [services.hello]
            timeout = "1s"
            [services.hello.retry]
            enabled = true
            [services.hello.limit]
            enabled = true
            max_concurrency = 1000
            "#,
        )?;
        let hardening = SystemHardening::builder(config).build()?;
        let layer = hardening.http_layer("hello")?.map_body(Body::new);
        let handle = hardening.start();
        let bare = serve(Router::new().route("/", get(hello))).await;
        let hardened = serve(Router::new().route("/", get(hello).layer(layer))).await;
        Ok::<_, BoxError>((bare, hardened, handle))
    })?;

    println!("{rounds} rounds of {requests} GETs over {connections} connections, alternating");
    let (mut bare_rps, mut bare_p99, mut ours_rps, mut ours_p99) = (vec![], vec![], vec![], vec![]);
    client_rt.block_on(async {
        // Warm both up.
        load(format!("http://{bare}/"), requests / 10, connections).await;
        load(format!("http://{hardened}/"), requests / 10, connections).await;
        for round in 1..=rounds {
            let (rps, p99) = load(format!("http://{bare}/"), requests, connections).await;
            bare_rps.push(rps);
            bare_p99.push(p99.as_secs_f64() * 1e3);
            let (rps2, p992) = load(format!("http://{hardened}/"), requests, connections).await;
            ours_rps.push(rps2);
            ours_p99.push(p992.as_secs_f64() * 1e3);
            println!(
                "round {round}: bare {rps:>8.0} req/s p99 {:>6.2} ms | hardened {rps2:>8.0} req/s p99 {:>6.2} ms",
                p99.as_secs_f64() * 1e3,
                p992.as_secs_f64() * 1e3
            );
        }
    });
    let (br, bp, hr, hp) = (
        median(bare_rps),
        median(bare_p99),
        median(ours_rps),
        median(ours_p99),
    );
    println!();
    println!("median  bare     {br:>8.0} req/s  p99 {bp:>6.2} ms");
    println!("median  hardened {hr:>8.0} req/s  p99 {hp:>6.2} ms");
    println!(
        "hardened keeps {:.1}% of the bare throughput (target >= 95%); p99 {:+.1}% (target <= +10%)",
        hr * 100.0 / br,
        (hp / bp - 1.0) * 100.0
    );
    let requests_seen = handle
        .metrics()
        .query("hardening_requests_total")
        .label("service", "hello")
        .sum();
    println!("the hardened stack counted {requests_seen} requests");
    server_rt.block_on(handle.shutdown());
    Ok(())
}
