use std::fmt;

/// The health of one service or of the whole process.
///
/// Ordered from best to worst, so the overall status is the `max` of its
/// parts.
///
/// ```
/// use tower_hardening_core::HealthState;
///
/// let overall = [HealthState::Healthy, HealthState::Degraded].into_iter().max();
/// assert_eq!(overall, Some(HealthState::Degraded));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum HealthState {
    /// Everything works within its limits.
    #[default]
    Healthy,
    /// Working, but something is near a limit or failing part of the time.
    Degraded,
    /// Not able to serve.
    Unhealthy,
}

impl HealthState {
    /// The state's name in lower case, as used in labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
