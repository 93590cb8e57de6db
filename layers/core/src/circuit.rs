use std::fmt;

/// The state of a circuit breaker.
///
/// It lives in core (not in the breaker crate) because events, health
/// snapshots and the monitor report it without depending on the breaker.
///
/// ```
/// use tower_hardening_core::CircuitState;
///
/// assert!(CircuitState::Open.rejects_calls());
/// assert!(!CircuitState::MetricsOnly.rejects_calls());
/// assert_eq!(CircuitState::HalfOpen.to_string(), "half_open");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls flow and are recorded; the breaker opens when a rate crosses
    /// its threshold.
    Closed,
    /// Calls are rejected with `CircuitOpen` until the wait is over.
    Open,
    /// A limited number of probe calls decide whether to close or reopen.
    HalfOpen,
    /// Held open by an operator (or the recovery manager) until reset.
    ForcedOpen,
    /// Calls flow and nothing is recorded.
    Disabled,
    /// Calls flow and are recorded, but the breaker never opens.
    MetricsOnly,
}

impl CircuitState {
    /// All states, in a fixed order (the order of [`CircuitState::as_index`]).
    pub const ALL: [CircuitState; 6] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
        CircuitState::ForcedOpen,
        CircuitState::Disabled,
        CircuitState::MetricsOnly,
    ];

    /// The state's name in snake case, as used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::Disabled => "disabled",
            CircuitState::MetricsOnly => "metrics_only",
        }
    }

    /// A small stable number for the state (0 = closed ... 5 =
    /// metrics-only), used as the value of the breaker's state gauge.
    pub fn as_index(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
            CircuitState::ForcedOpen => 3,
            CircuitState::Disabled => 4,
            CircuitState::MetricsOnly => 5,
        }
    }

    /// The state for an index from [`CircuitState::as_index`].
    pub fn from_index(index: u8) -> Option<CircuitState> {
        CircuitState::ALL.get(usize::from(index)).copied()
    }

    /// Whether a call arriving in this state is rejected outright (half-open
    /// admits a limited number of probes, so it does not count here).
    pub fn rejects_calls(self) -> bool {
        matches!(self, CircuitState::Open | CircuitState::ForcedOpen)
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips() {
        for state in CircuitState::ALL {
            assert_eq!(CircuitState::from_index(state.as_index()), Some(state));
        }
        assert_eq!(CircuitState::from_index(6), None);
    }
}
