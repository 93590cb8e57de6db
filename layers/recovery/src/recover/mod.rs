//! Rebuilding a broken inner service from a factory.

mod layer;
mod service;
mod state;

pub use layer::{RecoverHandle, RecoverLayer, RecoverPair};
pub use service::{Recover, RecoverFuture};
pub use state::{RecoverState, RecoverStats};
