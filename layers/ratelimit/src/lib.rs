//! Rate limits for tower services: a quota per service, per client
//! address or per header value, on governor's GCRA (lock-free, one atomic
//! word per key).
//!
//! - **Keys.** [`KeyMode::Global`] (one quota for the service),
//!   [`KeyMode::PeerIp`] (the connection's peer: a `SocketAddr` in the
//!   request's extensions, axum's `ConnectInfo<SocketAddr>` with the
//!   feature `axum`, tonic's `TcpConnectInfo` with `tonic`; IPv6 by /64;
//!   `X-Forwarded-For` only when the peer is a declared trusted proxy), or
//!   [`KeyMode::Header`] (`x-api-key`). A request a keyed limiter finds no
//!   key for (no peer address installed, no header, a value over
//!   [`MAX_KEY_LEN`] bytes) counts against one bucket shared by all such
//!   requests, and the first one logs a warning: never a panic, never a
//!   bucket of its own.
//! - **Bounded.** At most `max_keys` keys per quota. While full, new keys
//!   share one overflow bucket; no tracked key is evicted. A key back at
//!   rest is forgotten by [`RateLimitHandle::forget_idle`] (the facade's
//!   monitor calls it every tick) or by the limiter itself when full (at
//!   most once a second). So a client sending a new key per request gets
//!   one client's quota, memory stays flat, and no other client loses its
//!   state.
//! - **Priorities.** One quota for LOW to HIGH; any priority can have its
//!   own ([`RateLimitBuilder::priority_rate`]); CRITICAL is never limited
//!   unless given one.
//! - **Refusals.** Core's [`RateLimited`] with the limiter's own wait as
//!   `retry_after` and the quota as a [`RatePolicy`]: the facade answers
//!   429 with `Retry-After`, `RateLimit-Policy` and `RateLimit`, or gRPC
//!   RESOURCE_EXHAUSTED; breakers and retries leave it alone, metrics count
//!   it as `rejected`. The limiter never waits: `poll_ready` is the inner
//!   service's.
//!
//! ```
//! use std::net::SocketAddr;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_core::{RateLimited, rejection_of, RejectionKind};
//! use tower_hardening_ratelimit::{KeyMode, Rate, RateLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = RateLimitLayer::builder("api")
//!     .rate(Rate::per_minute(2))
//!     .key(KeyMode::PeerIp)
//!     .build()
//!     .unwrap();
//! let mut svc = layer.layer(service_fn(|_: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>("hello")
//! }));
//! let from = |peer: &str| {
//!     let mut request = http::Request::new(());
//!     request.extensions_mut().insert(peer.parse::<SocketAddr>().unwrap());
//!     request
//! };
//! for _ in 0..2 {
//!     assert!(svc.ready().await.unwrap().call(from("192.0.2.1:5000")).await.is_ok());
//! }
//! let refused = svc.ready().await.unwrap().call(from("192.0.2.1:5001")).await.unwrap_err();
//! let rejection = rejection_of(&*refused).unwrap();
//! assert_eq!(rejection.kind, RejectionKind::RateLimited);
//! assert!(rejection.retry_after.unwrap().as_secs() >= 29); // one request every 30 s
//! // Another client has its own quota.
//! assert!(svc.ready().await.unwrap().call(from("192.0.2.2:5000")).await.is_ok());
//! # }
//! ```

mod cells;
mod handle;
mod key;
mod layer;
mod priority;
mod rate;
mod service;
mod state;

pub mod error;
pub mod future;

pub use error::{RateLimited, RatePolicy};
pub use handle::RateLimitHandle;
pub use key::{
    AnyRequest, HttpKeys, IpNet, KEY_FORMAT, KeyMode, KeyOf, MAX_KEY_LEN, ParseIpNetError,
    ParseKeyError, PeerAddrFn, RequestKey, peer_addr,
};
pub use layer::{DEFAULT_MAX_KEYS, RateLimitBuilder, RateLimitLayer};
pub use priority::{ExtensionPriority, FixedPriority, PriorityOf};
pub use rate::{ParseRateError, RATE_FORMAT, Rate};
pub use service::RateLimit;
pub use state::RateLimitStats;
