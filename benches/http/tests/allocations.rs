//! Allocations per request: a counting global allocator (stats_alloc)
//! around `GET /` through each app (`oneshot`, the body read to the end),
//! after a warm-up. BENCHMARKS.md names each allocation `http_layer` adds
//! to a bare axum request; this test keeps the count there.

use std::alloc::System;

use http_body_util::BodyExt;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::ServiceExt;
use tower_hardening_http_bench::{Mode, get_root, hardening, http_app};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const REQUESTS: usize = 1_000;

/// Allocations (and reallocations) per request through `mode`'s app.
fn allocations_per_request(mode: Mode) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hardening = hardening().unwrap();
        // As `axum::serve` does for each connection.
        let app = http_app(mode, &hardening).unwrap().with_state(());
        let one = || {
            let app = app.clone();
            async move {
                let response = app.oneshot(get_root()).await.unwrap();
                assert!(response.status().is_success());
                response.into_body().collect().await.unwrap();
            }
        };
        for _ in 0..100 {
            one().await;
        }
        let region = Region::new(GLOBAL);
        for _ in 0..REQUESTS {
            one().await;
        }
        let change = region.change();
        (change.allocations + change.reallocations) as f64 / REQUESTS as f64
    })
}

/// How many values axum puts in a request's extensions before the
/// handler (it depends on axum's features: `matched-path` adds one).
fn extension_values() -> usize {
    use axum::Router;
    use axum::routing::get;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = Router::new().route(
            "/",
            get(|request: http::Request<axum::body::Body>| async move {
                request.extensions().len().to_string()
            }),
        );
        let response = app.oneshot(get_root()).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        std::str::from_utf8(&body).unwrap().parse().unwrap()
    })
}

#[test]
fn http_layer_allocations_per_request() {
    let bare = allocations_per_request(Mode::Bare);
    let tower = allocations_per_request(Mode::Tower);
    let hardened = allocations_per_request(Mode::Hardened);
    println!(
        "allocations per request: bare {bare:.2}, tower's built-ins {tower:.2}, http_layer {hardened:.2}"
    );
    // The copy kept for a retry clones each extension value axum put in
    // the request. The collector allocates now and then as time moves (a
    // new bucket), hence the tolerance of a twentieth per request.
    let allowed = EXTRA_ALLOWED + extension_values().saturating_sub(1) as f64;
    let extra = hardened - bare;
    assert!(
        extra <= allowed + 0.05,
        "http_layer adds {extra:.2} allocations to a bare request, more than the {allowed} BENCHMARKS.md accounts for"
    );
}

/// The allocations `http_layer` adds to a bare `GET`, as BENCHMARKS.md
/// lists them: the copy of the request kept for a retry (its extensions
/// map, the one extension value axum puts there with its default
/// features — one more for each further value —, the shared buffer of
/// its URI), the request body handed to the handler as axum's `Body` (boxed by
/// `map_body(Body::new)`), the response body boxed by axum (its type is
/// the stack's), and axum's own per-request clone and boxed future of any
/// route layer that is not zero-sized (tower's built-ins pay those two
/// as well).
const EXTRA_ALLOWED: f64 = 7.0;
