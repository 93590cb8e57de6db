//! Adaptive capacity: measure latency, drive the pool's capacity between a
//! minimum and a maximum.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_limit::{AdaptiveLimit, ResourceLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = ResourceLimitLayer::adaptive(
//!     AdaptiveLimit::aimd().initial(10).latency_threshold(Duration::from_millis(100)),
//! )
//! .unwrap()
//! .priority(|_: &u32| Default::default());
//! let mut svc = layer.layer(service_fn(|x: u32| async move {
//!     tokio::time::sleep(Duration::from_millis(200)).await; // slow: a congestion signal
//!     Ok::<_, std::io::Error>(x)
//! }));
//! svc.ready().await.unwrap().call(1).await.unwrap();
//! assert_eq!(layer.adaptive_limit(), Some(9)); // 10 * 0.9
//! # }
//! ```

mod controller;
mod limit;

pub(crate) use controller::Controller;
pub use limit::AdaptiveLimit;
