//! Reading and steering a recoverable service from outside.
//!
//! ```
//! use tower_hardening_recovery::{Recover, RecoverState};
//!
//! # #[derive(Clone)] struct Model;
//! let (handle, _service) = Recover::builder()
//!     .name("model-inference")
//!     .build(|| async { Ok::<_, std::io::Error>(Model) })?;
//! assert_eq!(handle.name(), "model-inference");
//! assert_eq!(handle.state(), RecoverState::Idle);
//! # Ok::<(), tower_hardening_recovery::ConfigError>(())
//! ```

use std::sync::Arc;

use super::state::{Control, RecoverState, RecoverStats};

/// Reads and steers a recoverable service: its state, its counters, and
/// [`trigger`](Self::trigger) to rebuild it now. Cheap to clone; one type
/// whatever the service, so handles of different services can be kept
/// together.
#[derive(Clone)]
pub struct RecoverHandle {
    pub(crate) control: Arc<dyn Control>,
}

impl std::fmt::Debug for RecoverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoverHandle")
            .field("name", self.control.name())
            .field("state", &self.control.state())
            .finish()
    }
}

impl RecoverHandle {
    /// The service's name.
    pub fn name(&self) -> &str {
        self.control.name()
    }

    /// Where the service is now.
    pub fn state(&self) -> RecoverState {
        self.control.state()
    }

    /// Build attempts, successes, failures and rebuilds so far.
    pub fn stats(&self) -> RecoverStats {
        self.control.stats()
    }

    /// Drops the current service and builds a new one, from attempt 1:
    /// from `Ready` (a rebuild), from `Failed` (start over), from `Idle`,
    /// and from `Rebuilding` too, cancelling the attempt under way (one
    /// that hangs, say) or the backoff it waits. Calls fail fast with
    /// `Recovering` meanwhile.
    ///
    /// Needs a tokio runtime; without one the service is `Failed`.
    pub fn trigger(&self) {
        self.control.clone().trigger();
    }
}
