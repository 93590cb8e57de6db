//! What an upstream reports of each endpoint.

use std::sync::Arc;
use std::time::Duration;

/// An endpoint's state, as [`UpstreamHandle::endpoints`](crate::UpstreamHandle::endpoints)
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// In rotation.
    Healthy,
    /// Out of rotation by outlier ejection, back on its own after
    /// `remaining`.
    Ejected {
        /// How long until it returns.
        remaining: Duration,
    },
    /// It asked callers to stay away (`Retry-After`, gRPC pushback) for
    /// `remaining` more.
    PushedBack {
        /// How long until it is called again.
        remaining: Duration,
    },
}

impl EndpointState {
    /// The state's name: `healthy`, `ejected` or `pushed_back`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Ejected { .. } => "ejected",
            EndpointState::PushedBack { .. } => "pushed_back",
        }
    }
}

/// One endpoint's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSnapshot {
    /// The endpoint's URI, as configured.
    pub uri: Arc<str>,
    /// In rotation, ejected or pushing back.
    pub state: EndpointState,
    /// The failure rate over its last calls (the outlier window), 0 to 1;
    /// the window starts afresh at each ejection.
    pub failure_rate: f64,
    /// Calls in that window.
    pub calls: usize,
    /// Times it has been ejected.
    pub ejections: u32,
    /// Its mean attempt latency (an exponentially weighted mean), once it
    /// has answered.
    pub latency: Option<Duration>,
}
