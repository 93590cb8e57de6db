//! The circuit breaker layer for tower-hardening — **not built yet**.
//!
//! ```
//! use tower_hardening_breaker::CircuitState;
//! assert!(CircuitState::Open.rejects_calls());
//! ```

pub use tower_hardening_core::{CircuitOpen, CircuitState};
