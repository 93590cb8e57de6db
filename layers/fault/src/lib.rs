//! Fault injection for any `tower::Service`: how to test that your
//! hardening works before production tests it for you.
//!
//! [`FaultLayer`] sits where the dependency is (below the breaker and the
//! timeout) and, on each call, at the rates you set:
//!
//! - fails it with [`InjectedFault`] instead of calling the service;
//! - answers with an HTTP status ([`FaultBuilder::http_status`]) or a gRPC
//!   status ([`FaultBuilder::grpc_status`]) instead of calling it, or
//!   fails it with that status as an [`InjectedStatus`] error
//!   ([`StatusError`], for a stack that answers errors itself);
//! - never answers (a hang: only a timeout above ends it);
//! - or adds latency before the answer.
//!
//! Errors, statuses and hangs are exclusive (one roll decides which, if
//! any); latency is rolled on its own and may add to a real answer.
//! [`FaultHandle`] changes every rate at run time and switches injection
//! off (one atomic load per call then). The models are Polly's chaos
//! strategies and Envoy's fault filter.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_fault::{FaultLayer, InjectedFault};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let layer = FaultLayer::builder().name("audio").error_rate(1.0).build()?;
//! let faults = layer.handle();
//! let mut svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//!
//! let err = svc.ready().await?.call(1).await.unwrap_err();
//! assert!(err.is::<InjectedFault>());
//!
//! faults.disable(); // takes effect on the next call
//! assert_eq!(svc.ready().await?.call(2).await?, 2);
//! assert_eq!(faults.stats().errors, 1);
//! # Ok(())
//! # }
//! ```

mod layer;
mod response;
mod service;
mod state;

pub mod error;
pub mod future;

pub use error::{ConfigError, InjectedFault, InjectedStatus};
pub use layer::{FaultBuilder, FaultLayer};
pub use response::{GrpcStatus, HttpStatus, InjectResponse, NoResponse, StatusError};
pub use service::Fault;
pub use state::{FaultHandle, FaultStats};
