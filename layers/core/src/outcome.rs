/// How a finished call counts towards a breaker's window, a retry decision
/// and the request metrics.
///
/// ```
/// use tower_hardening_core::Outcome;
///
/// assert!(Outcome::Failure.is_failure());
/// assert!(!Outcome::Ignored.is_failure());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call did what was asked.
    Success,
    /// The call failed in a way that says something about the dependency's
    /// health (a 5xx, an `Unavailable` status, an I/O error).
    Failure,
    /// The call is not evidence either way (a cancelled request, a 4xx the
    /// caller caused) and is not recorded.
    Ignored,
}

impl Outcome {
    /// `true` for [`Outcome::Failure`].
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure)
    }

    /// `true` for [`Outcome::Success`].
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }
}
