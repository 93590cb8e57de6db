//! The services the hardening manages: the seed's registered services.

use std::future::Future;
use std::pin::Pin;

use tower_hardening_core::BoxError;

/// A boxed, `Send` future: what [`ManagedService`]'s methods return, so the
/// trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A dependency whose lifecycle the hardening manages: the monitor checks
/// its health, and the recovery manager restarts it (`shutdown`, then
/// `initialize`) when it turns unhealthy.
///
/// Object-safe: methods return boxed futures. `health_check` and
/// `shutdown` default to `Ok`. Every call runs under the configuration's
/// `health_check_timeout`: a call that takes longer counts as failed, and
/// never holds up the monitor.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use tower_hardening::{BoxError, ManagedService, managed::BoxFuture};
///
/// struct AudioBackend {
///     connected: AtomicBool,
/// }
///
/// impl ManagedService for AudioBackend {
///     fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>> {
///         Box::pin(async move {
///             self.connected.store(true, Ordering::SeqCst); // connect, load models, ...
///             Ok(())
///         })
///     }
///
///     fn health_check(&self) -> BoxFuture<'_, Result<(), BoxError>> {
///         Box::pin(async move {
///             if self.connected.load(Ordering::SeqCst) { Ok(()) } else { Err("not connected".into()) }
///         })
///     }
/// }
/// # let _ = Arc::new(AudioBackend { connected: AtomicBool::new(false) });
/// ```
pub trait ManagedService: Send + Sync + 'static {
    /// Brings the service up: at start, and after `shutdown` in a recovery.
    fn initialize(&self) -> BoxFuture<'_, Result<(), BoxError>>;

    /// Tells whether the service works now. Called every
    /// `health_check_interval`.
    fn health_check(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }

    /// Takes the service down: before a rebuild, and at `shutdown()`.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}
