//! Upstreams: one `tower::Service` over the several endpoints of a
//! dependency (instances of a model server, replicas of an API), as
//! Envoy, Finagle and gRPC's own client call them.
//!
//! - **Per-endpoint health** ([`OutlierPolicy`]): consecutive failures
//!   and a failure rate eject an endpoint for the base ejection time
//!   times the number of its ejections; it returns on its own; never more
//!   than `max_ejection_percent` of the endpoints are out, and with every
//!   endpoint out all are called (Envoy's panic routing). What is a
//!   failure is core's [`Classify`](tower_hardening_core::Classify):
//!   connection refused or reset, TLS errors, timeouts, 5xx, failing gRPC
//!   statuses.
//! - **Load-aware choice**: power of two choices over tower's
//!   [`PeakEwma`](tower::load::PeakEwma) cost among the endpoints in
//!   rotation.
//! - **Retries to another endpoint** within a retry budget (tower's
//!   `TpsBudget`), and **server pushback**: a 503 or 429 `Retry-After`
//!   keeps attempts off that endpoint until then, gRPC's
//!   `grpc-retry-pushback-ms` is obeyed ([`pushback`]).
//! - **Hedging** of idempotent requests: after a fixed delay or the
//!   observed p95, one more attempt to another endpoint; the first good
//!   answer wins, the other is dropped.
//! - **Endpoints change at run time** ([`UpstreamHandle::set_endpoints`],
//!   `insert`, `remove`, or a tower `Discover` stream with
//!   [`UpstreamHandle::follow`]) without failing requests in flight.
//!
//! Why not tower's `p2c::Balance` itself: it owns its endpoints behind
//! `&mut self` (one caller at a time, so it needs a `Buffer` task in front
//! to be shared), chooses the endpoint inside `poll_ready`, and cannot be
//! told "not that one" for one request, which a retry to another endpoint
//! and a hedge to a different endpoint both need. Making an ejected
//! endpoint report not-ready would take it out for every request but could
//! not keep a retry off the endpoint that just failed. So this crate keeps
//! tower's parts that fit — the `PeakEwma` load measure (each attempt is
//! tracked by it), `Discover` and `Change` for endpoint changes, the
//! `TpsBudget` retry budget, `Elapsed` for attempt timeouts — and does
//! the two-random-choices comparison itself, over the endpoints a request
//! may use.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceExt, service_fn};
//! use tower_hardening_upstream::{HedgeDelay, OutlierPolicy, Upstream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_hardening_core::BoxError> {
//! let upstream = Upstream::builder("model-inference")
//!     .outlier(OutlierPolicy {
//!         consecutive_failures: 2,
//!         base_ejection_time: Duration::from_secs(30),
//!         ..OutlierPolicy::default()
//!     })
//!     .max_attempts(3)
//!     .hedge(HedgeDelay::Fixed(Duration::from_millis(30)), 1)
//!     .clone_requests()
//!     .build(["a", "b", "c"], |uri| {
//!         let down = uri == "b";
//!         service_fn(move |n: u32| async move {
//!             if down { Err("connection refused") } else { Ok(n * 2) }
//!         })
//!     });
//! let handle = upstream.handle();
//! for n in 0..20 {
//!     // `b` fails, but each failed attempt is retried on another endpoint.
//!     assert_eq!(upstream.clone().oneshot(n).await?, n * 2);
//! }
//! for endpoint in handle.endpoints() {
//!     // `b` is ejected once it has failed twice in a row (if it was
//!     // chosen twice: the others answer faster).
//!     println!("{}: {} ({:.0}% failed)", endpoint.uri, endpoint.state.as_str(), endpoint.failure_rate * 100.0);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! **What it needs of your types**: the endpoint service `S: Service<Req> +
//! Clone + Send + 'static` with `S::Error: Into<BoxError>`; `Req: Send +
//! 'static`. Retries and hedges need a copy of the request
//! ([`UpstreamBuilder::clone_requests`] or
//! [`replay_with`](UpstreamBuilder::replay_with)); without one, each
//! request is sent once (hyper's `Incoming` body, say), and everything
//! else (choice, ejection, pushback) still works.

mod builder;
mod endpoint;
mod endpoint_uri;
pub mod future;
mod handle;
mod latency;
mod outlier;
pub mod pushback;
mod service;
mod shared;
mod snapshot;

pub use builder::{HedgeDelay, UpstreamBuilder};
pub use endpoint_uri::{InvalidEndpoint, SetEndpoint};
pub use handle::{EndpointChangeError, NoEndpointMaker, UpstreamHandle};
pub use outlier::{EjectionReason, OutlierPolicy};
pub use pushback::{HttpPushback, MAX_PUSHBACK, NoPushback, Pushback, ReadPushback};
pub use service::Upstream;
pub use snapshot::{EndpointSnapshot, EndpointState};
pub use tower_hardening_core::NoHealthyEndpoint;
