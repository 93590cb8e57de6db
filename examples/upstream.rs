//! An axum gateway calling three backends through one upstream, one of
//! them made flaky by `FaultLayer`: the flaky one is ejected, the callers
//! see no failure (each failed attempt is retried on another backend),
//! and once it is healed it comes back after its ejection time. Prints
//! each endpoint's state after each phase, and the ejection and return
//! events. Run: `cargo run --example upstream` (it ends by itself).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};
use tower_hardening::core::EventKind;
use tower_hardening::fault::FaultLayer;
use tower_hardening::upstream::{HardenedUpstream, HttpPushback, SetEndpoint};
use tower_hardening::{BoxError, HardeningHandle, SystemHardening, SystemHardeningConfig};

type Endpoint =
    BoxCloneService<http::Request<Full<Bytes>>, http::Response<hyper::body::Incoming>, BoxError>;
type Backends = HardenedUpstream<
    Endpoint,
    http::Request<Full<Bytes>>,
    tower_hardening::classify::HttpStatuses,
    HttpPushback,
>;

/// A backend answering its own name.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", get(move || async move { name }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The gateway's one route: asks the upstream, answers what it said.
async fn gateway(State(backends): State<Backends>) -> (StatusCode, String) {
    let mut backends = backends;
    let request = http::Request::get("/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = async {
        let response = backends.ready().await?.call(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    // A client wants `Err`; a gateway turns it into its own answer.
    answer
        .await
        .unwrap_or_else(|err| (StatusCode::BAD_GATEWAY, err.to_string()))
}

fn print_endpoints(handle: &HardeningHandle, phase: &str) {
    let health = handle.service_health("backends").expect("configured");
    println!("-- {phase}: upstream {}", health.status.as_str());
    for endpoint in &health.endpoints {
        println!(
            "   {:<24} {:<11} failure rate {:>3.0}% over {:>3} calls, ejected {} time(s){}",
            endpoint.uri,
            endpoint.state,
            endpoint.failure_rate * 100.0,
            endpoint.calls,
            endpoint.ejections,
            endpoint
                .out_for
                .map(|d| format!(", back in {:.1}s", d.as_secs_f64()))
                .unwrap_or_default(),
        );
    }
}

/// `n` calls to the gateway; how many were answered 200.
async fn drive(gateway: SocketAddr, n: usize) -> usize {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut ok = 0;
    for _ in 0..n {
        let request = http::Request::get(format!("http://{gateway}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(response) = client.request(request).await {
            ok += usize::from(response.status() == StatusCode::OK);
        }
    }
    ok
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let a = backend("a").await;
    let b = backend("b (flaky)").await;
    let c = backend("c").await;
    let flaky = format!("http://{b}");

    let config = SystemHardeningConfig::from_toml_str(&format!(
        r#"
        [upstreams.backends]
        endpoints = ["http://{a}", "http://{b}", "http://{c}"]
        timeout = "1s"
        [upstreams.backends.outlier]
        consecutive_failures = 3
        base_ejection_time = "2s"
        "#
    ))?;
    let hardening = SystemHardening::builder(config).build()?;

    // Backend b, as the gateway sees it: 80% of its calls fail.
    let faults = FaultLayer::builder()
        .name("backend-b")
        .error_rate(0.8)
        .build()?;
    let flaky_faults = faults.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let backends = hardening.http_upstream("backends", move |uri| {
        let endpoint = SetEndpoint::new(uri, client.clone()).expect("a validated uri");
        if uri == flaky {
            Endpoint::new(faults.layer(endpoint).map_err(BoxError::from))
        } else {
            Endpoint::new(endpoint.map_err(BoxError::from))
        }
    })?;
    let handle = hardening.start();
    let mut events = handle.subscribe();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_addr = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(gateway))
        .with_state(backends)
        .nest_service("/hardening", handle.endpoints());
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("gateway on http://{gateway_addr}/ (dashboard: /hardening/dashboard)");

    let ok = drive(gateway_addr, 60).await;
    println!("phase 1: {ok} of 60 calls answered 200 while b fails 80% of its calls");
    print_endpoints(&handle, "b flaky");

    flaky_faults.disable();
    println!("b healed; waiting out its ejection time");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let ok = drive(gateway_addr, 60).await;
    println!("phase 2: {ok} of 60 calls answered 200");
    print_endpoints(&handle, "b healed");

    while let Ok(event) = events.try_recv() {
        match event.kind() {
            EventKind::EndpointEjected {
                endpoint,
                duration,
                reason,
                ..
            } => println!("event: {endpoint} ejected for {duration:?} ({reason})"),
            EventKind::EndpointReturned { endpoint } => println!("event: {endpoint} returned"),
            _ => {}
        }
    }
    handle.shutdown().await;
    Ok(())
}
