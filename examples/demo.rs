//! The main demo: an axum service whose "model-inference" dependency goes
//! down for a while, protected by a circuit breaker configured from
//! `examples/hardening.toml`.
//!
//! It prints each second's responses, every breaker transition as it
//! happens, and the breaker's final snapshot. Runs in about four seconds:
//!
//! ```text
//! cargo run --release --example demo
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tower::{ServiceBuilder, ServiceExt};
use tower_hardening::BoxError;
use tower_hardening::breaker::{CircuitOpen, SlidingWindow};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::{EventKind, EventSink, HttpServerErrors};

/// Maps the breaker's rejection to `503` with `Retry-After`.
async fn on_error(err: BoxError) -> impl IntoResponse {
    match err.downcast_ref::<CircuitOpen>() {
        Some(open) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                "retry-after",
                open.retry_after()
                    .map_or(1, |d| d.as_secs().max(1))
                    .to_string(),
            )],
        ),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("retry-after", "0".to_owned())],
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hardening.toml");
    let config = SystemHardeningConfig::from_path(path)?;
    println!("loaded {path}: {} service sections", config.services.len());

    // The file's settings, with the waits shortened so the demo is quick.
    let events = EventSink::new(256);
    let mut transitions = events.subscribe();
    let breaker = config
        .service("model-inference")
        .breaker
        .to_builder("model-inference")
        .sliding_window(SlidingWindow::count(20))
        .minimum_calls(10)
        .wait_in_open(Duration::from_millis(400))
        .max_wait_in_open(Duration::from_millis(1_600))
        .half_open_permits(3)
        .classifier(HttpServerErrors::default())
        .events(events)
        .build()?;
    let handle = breaker.handle();

    // The dependency: down between 0.6 s and 2.2 s.
    let healthy = Arc::new(AtomicBool::new(true));
    let calls_reaching_dependency = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = {
        let healthy = healthy.clone();
        let calls = calls_reaching_dependency.clone();
        Router::new()
            .route(
                "/infer",
                get(move || {
                    let healthy = healthy.load(Ordering::Relaxed);
                    calls.fetch_add(1, Ordering::Relaxed);
                    async move {
                        if healthy {
                            (StatusCode::OK, "a cat")
                        } else {
                            (StatusCode::BAD_GATEWAY, "model backend unreachable")
                        }
                    }
                }),
            )
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(on_error))
                    .layer(breaker),
            )
    };

    tokio::spawn(async move {
        while let Ok(event) = transitions.recv().await {
            if let EventKind::CircuitTransition { from, to } = event.kind() {
                println!("    breaker `{}`: {from} -> {to}", event.service());
            }
        }
    });

    println!(
        "20 requests a second; . ok, E dependency error (502), x rejected by the breaker (503)"
    );
    let start = Instant::now();
    let mut line = String::new();
    let mut second = 0;
    for i in 0..80u32 {
        let elapsed = start.elapsed();
        healthy.store(
            !(Duration::from_millis(600)..Duration::from_millis(2_200)).contains(&elapsed),
            Ordering::Relaxed,
        );
        let response = app
            .clone()
            .oneshot(Request::get("/infer").body(Body::empty())?)
            .await?;
        line.push(match response.status() {
            StatusCode::OK => '.',
            StatusCode::SERVICE_UNAVAILABLE => 'x',
            _ => 'E',
        });
        if i % 20 == 19 {
            println!("t={second}s  {line}");
            line.clear();
            second += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let snapshot = handle.snapshot();
    println!();
    println!("final state:           {}", snapshot.state);
    println!("calls in window:       {}", snapshot.calls);
    println!(
        "failure rate:          {}",
        snapshot
            .failure_rate
            .map_or("n/a (below minimum calls)".to_owned(), |r| format!(
                "{:.0}%",
                r * 100.0
            ))
    );
    println!("rejected (fast fails): {}", snapshot.rejected_total);
    println!(
        "requests that reached the dependency: {} of 80",
        calls_reaching_dependency.load(Ordering::Relaxed)
    );
    Ok(())
}
