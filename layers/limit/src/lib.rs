//! Resource pools and admission control for tower-hardening — **not built
//! yet**.
//!
//! This crate will hold `ResourcePool` (priority-ordered, weighted,
//! lease-tracked units: the seed's Resource Manager with
//! `requestResource` / `releaseResource` / `getResourceStats`) and
//! `ResourceLimitLayer` (per-request admission through a pool, fixed or
//! adaptive capacity, shedding under memory pressure). Today it only
//! re-exports the rejection types it will return.
//!
//! ```
//! use tower_hardening_limit::{Overloaded, Priority};
//!
//! let err = Overloaded::new("cpu").with_priority(Priority::LOW);
//! assert_eq!(err.priority(), Some(Priority::LOW));
//! ```

pub use tower_hardening_core::{Overloaded, Priority, QueueTimeout};
