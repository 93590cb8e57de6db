//! The HTTP surface of a running hardening: health and readiness probes,
//! Prometheus metrics, and a live dashboard, as one tower service.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /health` | the [`HealthStatus`](crate::HealthStatus) as JSON; 200 healthy or degraded, 503 unhealthy |
//! | `GET /health/live` | 200 while the monitor runs, 503 once it stopped |
//! | `GET /health/ready` | the [`Readiness`](crate::health::Readiness) as JSON; 200 ready, 503 not (starting, shutting down, monitor dead, memory critical, or a service with `readiness = true` open or unhealthy; an open breaker otherwise fails health, not readiness) |
//! | `GET /metrics` | Prometheus text of every figure the library records |
//! | `GET /dashboard` | a self-contained HTML page (no CDN, no script from elsewhere) polling `dashboard/data` |
//! | `GET /dashboard/data` | the dashboard's JSON: the figures now and the last 50 events |
//! | `GET /dashboard/history?minutes=15` | the charts' JSON: the collector's retained history over the last 5, 15 or 60 minutes (at most 360 points a series), and the events kept in that window |
//!
//! `HEAD` is answered like `GET` without a body; any other method is 405
//! with `Allow`, any other path 404. No endpoint reads the request body,
//! and every answer is bounded: the collector caps its series (1,000 by
//! default), a history at most 360 points a series, the dashboard keeps
//! the last 500 events, each text at most 300 bytes. Inner error texts appear in `/health`, `/health/ready` and
//! the dashboard only with `expose_details = true`.
//!
//! ```
//! use axum::Router;
//! use tower_hardening::SystemHardening;
//! use tower_hardening::config::SystemHardeningConfig;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_hardening::BoxError> {
//! let handle = SystemHardening::builder(SystemHardeningConfig::default()).build()?.start();
//! let app: Router = Router::new().nest_service("/hardening", handle.endpoints());
//! # let _ = app;
//! # handle.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod dashboard;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tower_hardening_core::HealthState;
use tower_service::Service;

use crate::HardeningHandle;

/// The endpoints of a hardening, from [`HardeningHandle::endpoints`].
#[derive(Debug, Clone)]
pub struct Endpoints {
    handle: HardeningHandle,
}

impl HardeningHandle {
    /// The health, readiness, metrics and dashboard endpoints (see the
    /// [`endpoints`](crate::endpoints) module), as a tower service to
    /// mount (`Router::nest_service("/hardening", handle.endpoints())`) or
    /// serve with hyper.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            handle: self.clone(),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let body: Bytes = body.into();
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(_) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "could not encode the answer",
        ),
    }
}

impl Endpoints {
    fn answer(&self, method: &Method, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        let known = matches!(
            path,
            "/health"
                | "/health/live"
                | "/health/ready"
                | "/metrics"
                | "/dashboard"
                | "/dashboard/data"
                | "/dashboard/history"
        );
        if !known {
            return respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found");
        }
        if method != Method::GET && method != Method::HEAD {
            let mut response = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "method not allowed",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let shared = &self.handle.shared;
        match path {
            "/health" => {
                let health = self.handle.health();
                let status = if health.status == HealthState::Unhealthy {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                if shared.config.expose_details {
                    json(status, &*health)
                } else {
                    json(status, &health.without_details())
                }
            }
            "/health/live" => {
                let alive = self.handle.alive();
                let (status, text) = if alive {
                    (StatusCode::OK, "alive")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "the monitor is not running")
                };
                respond(status, "text/plain; charset=utf-8", text)
            }
            "/health/ready" => {
                let mut readiness = self.handle.readiness();
                if !shared.config.expose_details {
                    // Reasons may quote inner errors: keep what precedes
                    // the first colon (the service, the kind of cause).
                    for reason in &mut readiness.reasons {
                        if let Some((head, _)) = reason.split_once(':') {
                            *reason = head.to_owned();
                        }
                    }
                }
                let status = if readiness.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(status, &readiness)
            }
            "/metrics" => {
                // Read at the scrape: a monitor that died cannot say so.
                let alive = if self.handle.alive() { 1.0 } else { 0.0 };
                metrics::with_local_recorder(&*shared.recorder, || {
                    metrics::gauge!(tower_hardening_core::names::MONITOR_ALIVE).set(alive);
                    // Series over the collector's cap are missing: say how many.
                    metrics::counter!(tower_hardening_core::names::METRICS_DROPPED_SERIES_TOTAL)
                        .absolute(shared.collector.dropped_series());
                });
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    shared.collector.render_prometheus(),
                )
            }
            "/dashboard" => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                Bytes::from_static(dashboard::PAGE.as_bytes()),
            ),
            "/dashboard/history" => {
                // One of the offered windows; anything else is the default.
                let minutes = query
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .find_map(|pair| pair.strip_prefix("minutes="))
                    .and_then(|m| m.parse::<u64>().ok())
                    .filter(|m| dashboard::WINDOWS.contains(m))
                    .unwrap_or(15);
                json(StatusCode::OK, &dashboard::history(&self.handle, minutes))
            }
            _ => json(StatusCode::OK, &dashboard::data(&self.handle)),
        }
    }
}

impl<B> Service<Request<B>> for Endpoints {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Answers from the path and method alone: the body is never read.
    fn call(&mut self, request: Request<B>) -> Self::Future {
        let uri = request.uri();
        let mut response = self.answer(request.method(), uri.path(), uri.query());
        if request.method() == Method::HEAD {
            // The length GET would send, then no body.
            let length = http_body::Body::size_hint(response.body()).exact().unwrap_or(0);
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            *response.body_mut() = Full::new(Bytes::new());
        }
        ready(Ok(response))
    }
}

/// A recent event, as the dashboard shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RecentEvent {
    #[serde(serialize_with = "crate::health::ser::time")]
    pub(crate) at: std::time::SystemTime,
    pub(crate) service: Arc<str>,
    /// What the event is about: `circuit`, `shed`, `memory`, `recovery`,
    /// `health`, `rejected`, `retry`, `lease`, `performance`.
    pub(crate) kind: &'static str,
    pub(crate) text: String,
    /// An inner error's text, sent only with `expose_details`.
    pub(crate) detail: Option<String>,
    pub(crate) level: &'static str,
}
