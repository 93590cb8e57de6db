//! Retry and recovery layers for tower-hardening — **not built yet**.
//!
//! This crate will hold `RetryLayer` (a `tower::retry::Policy` with
//! exponential backoff, jitter and a retry budget shared by every clone,
//! never retrying `tower_hardening_core` rejections, with replayable HTTP
//! bodies) and `RecoverLayer` (rebuilds a broken inner service from a
//! factory with backoff, failing fast with
//! [`Recovering`] meanwhile).
//! Today it only re-exports the rejection type it will return.
//!
//! ```
//! use tower_hardening_recovery::Recovering;
//!
//! let err = Recovering::new("model-inference", 1);
//! assert_eq!(err.attempt(), 1);
//! ```

pub use tower_hardening_core::Recovering;
