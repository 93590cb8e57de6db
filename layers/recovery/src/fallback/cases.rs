//! When a fallback answers, and why it was asked.

use std::fmt;
use std::str::FromStr;

use tower_hardening_core::{Rejection, RejectionKind};

/// Why a fallback is asked to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// A hardening layer refused the request (open breaker, shed or full
    /// admission, rate limit, queue timeout, a service being rebuilt).
    Refused(Rejection),
    /// The request failed after its retries: an error, or a response the
    /// classifier counts as a failure.
    Failed,
}

impl Cause {
    /// The case this cause falls under.
    pub fn case(&self) -> FallbackCase {
        match self {
            Cause::Refused(rejection) => match rejection.kind {
                RejectionKind::CircuitOpen => FallbackCase::CircuitOpen,
                RejectionKind::RateLimited => FallbackCase::RateLimited,
                RejectionKind::QueueTimeout => FallbackCase::QueueTimeout,
                RejectionKind::Recovering | RejectionKind::RecoveryFailed => {
                    FallbackCase::Recovering
                }
                _ => FallbackCase::Overloaded,
            },
            Cause::Failed => FallbackCase::Failure,
        }
    }
}

/// One kind of case a fallback may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackCase {
    /// The breaker refused (`CircuitOpen`).
    CircuitOpen,
    /// Admission refused: full queue, shedding, a closed pool
    /// (`Overloaded`, `PoolClosed`, `Unsatisfiable`).
    Overloaded,
    /// A rate limit refused (`RateLimited`).
    RateLimited,
    /// The request waited too long for admission (`QueueTimeout`).
    QueueTimeout,
    /// The service is being rebuilt, or could not be (`Recovering`,
    /// `RecoveryFailed`).
    Recovering,
    /// The request failed after its retries.
    Failure,
}

impl FallbackCase {
    /// Every case.
    pub const ALL: [FallbackCase; 6] = [
        FallbackCase::CircuitOpen,
        FallbackCase::Overloaded,
        FallbackCase::RateLimited,
        FallbackCase::QueueTimeout,
        FallbackCase::Recovering,
        FallbackCase::Failure,
    ];

    /// The case's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackCase::CircuitOpen => "circuit_open",
            FallbackCase::Overloaded => "overloaded",
            FallbackCase::RateLimited => "rate_limited",
            FallbackCase::QueueTimeout => "queue_timeout",
            FallbackCase::Recovering => "recovering",
            FallbackCase::Failure => "failure",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for FallbackCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the names of fallback cases are, for error messages.
pub const CASE_NAMES: &str =
    "circuit_open, overloaded, rate_limited, queue_timeout, recovering, failure";

/// Why a string is no [`FallbackCase`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseCaseError {
    given: String,
}

impl fmt::Display for ParseCaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is no fallback case: expected one of {CASE_NAMES}",
            self.given
        )
    }
}

impl std::error::Error for ParseCaseError {}

impl FromStr for FallbackCase {
    type Err = ParseCaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FallbackCase::ALL
            .into_iter()
            .find(|case| case.as_str() == s.trim())
            .ok_or_else(|| ParseCaseError {
                given: s.chars().take(64).collect(),
            })
    }
}

/// Which cases a fallback answers (default: every one). A client's own
/// error (a request body that broke or stalled) is never one.
///
/// ```
/// use tower_hardening_recovery::{FallbackCase, FallbackOn};
///
/// let on = FallbackOn::none().with(FallbackCase::CircuitOpen).with(FallbackCase::RateLimited);
/// assert!(on.contains(FallbackCase::CircuitOpen));
/// assert!(!on.contains(FallbackCase::Failure));
/// assert!(FallbackOn::default().contains(FallbackCase::Failure));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FallbackOn(u8);

impl FallbackOn {
    /// No case: the fallback never answers.
    pub const fn none() -> Self {
        FallbackOn(0)
    }

    /// Every case.
    pub fn all() -> Self {
        FallbackCase::ALL.into_iter().fold(Self::none(), Self::with)
    }

    /// Every refusal, and no failure.
    pub fn refusals() -> Self {
        Self::all().without(FallbackCase::Failure)
    }

    /// These cases and `case`.
    #[must_use]
    pub fn with(self, case: FallbackCase) -> Self {
        FallbackOn(self.0 | case.bit())
    }

    /// These cases but `case`.
    #[must_use]
    pub fn without(self, case: FallbackCase) -> Self {
        FallbackOn(self.0 & !case.bit())
    }

    /// Whether `case` is one of them.
    pub fn contains(self, case: FallbackCase) -> bool {
        self.0 & case.bit() != 0
    }

    /// Whether there is no case.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Default for FallbackOn {
    fn default() -> Self {
        Self::all()
    }
}

impl FromIterator<FallbackCase> for FallbackOn {
    fn from_iter<I: IntoIterator<Item = FallbackCase>>(iter: I) -> Self {
        iter.into_iter().fold(Self::none(), Self::with)
    }
}

impl fmt::Debug for FallbackOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(FallbackCase::ALL.into_iter().filter(|c| self.contains(*c)))
            .finish()
    }
}
