use std::sync::Arc;

use crate::state::{RateLimitState, RateLimitStats};

/// A rate limiter's figures and upkeep, shared with every clone of its
/// layer and services.
///
/// ```
/// use tower_hardening_ratelimit::RateLimitLayer;
///
/// let layer = RateLimitLayer::builder("api").rate("10/s".parse().unwrap()).build().unwrap();
/// let handle = layer.handle().expect("the limiter is on");
/// assert_eq!(handle.stats().limited, 0);
/// handle.forget_idle(); // what the monitor's tick does
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitHandle {
    pub(crate) state: Arc<RateLimitState>,
}

impl RateLimitHandle {
    /// Requests refused, keys tracked, requests counted against the
    /// overflow bucket and against the bucket of requests without a key.
    pub fn stats(&self) -> RateLimitStats {
        self.state.stats()
    }

    /// Forgets every key back at rest (its quota whole again, so a new
    /// request from it is treated exactly as before), and gives back the
    /// memory. Cheap to call often; the facade's monitor calls it on every
    /// health tick.
    pub fn forget_idle(&self) {
        self.state.forget_idle();
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }
}
