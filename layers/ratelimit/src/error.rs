//! The refusal a rate limiter returns: core's [`RateLimited`], which every
//! other tower-hardening layer recognises (never a breaker failure, never
//! retried, `rejected` in metrics), and the quota it names.

pub use tower_hardening_core::{RateLimited, RatePolicy};
