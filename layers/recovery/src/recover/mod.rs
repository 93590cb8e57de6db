//! Rebuilding a broken inner service from a factory.
//!
//! [`Recover`] is a service, not a layer: it builds its inner service from
//! a factory (lazily, at the first call) and rebuilds it with backoff when
//! it breaks: a failed `poll_ready`, too many failed calls in a row, or
//! [`RecoverHandle::trigger`]. Each attempt has a timeout, and a factory
//! that panics counts as a failed attempt, so a recovery always ends:
//! `Ready`, or `Failed` until triggered again.
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_recovery::{Backoff, Recover, RecoverState};
//!
//! # #[derive(Clone)] struct Model;
//! # async fn connect_model() -> Result<Model, std::io::Error> { Ok(Model) }
//! let (handle, service) = Recover::builder()
//!     .name("model-inference")
//!     .max_attempts(5)
//!     .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)))
//!     .attempt_timeout(Duration::from_secs(5))
//!     .build(connect_model)?;
//! assert_eq!(handle.state(), RecoverState::Idle);
//! # let _ = service;
//! # Ok::<(), tower_hardening_recovery::ConfigError>(())
//! ```

mod builder;
mod future;
mod handle;
mod service;
mod state;

pub use builder::{RecoverBuilder, RecoverPair};
pub use future::RecoverFuture;
pub use handle::RecoverHandle;
pub use service::Recover;
pub use state::{RecoverState, RecoverStats};
