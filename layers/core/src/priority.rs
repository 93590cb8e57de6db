use std::fmt;
use std::str::FromStr;

/// How important a request (or a resource request) is; higher is more
/// important.
///
/// Four named levels cover most services, and they are numbers:
///
/// | level | number | meaning |
/// | --- | --- | --- |
/// | [`LOW`](Priority::LOW) | `Priority(0)` | background work, shed first |
/// | [`NORMAL`](Priority::NORMAL) | `Priority(1)` | ordinary traffic, the default |
/// | [`HIGH`](Priority::HIGH) | `Priority(2)` | traffic that should survive overload |
/// | [`CRITICAL`](Priority::CRITICAL) | `Priority(3)` | served if anything is; never shed |
///
/// So the seed's `requestResource('cpu', 'task-123', 2, …)` is
/// `Priority(2)`, that is `Priority::HIGH`. Any `u8` is allowed and ranks
/// by its value (higher is served first from a queue): a value above 3
/// ranks above [`Priority::CRITICAL`], and like it is never shed. Prefer
/// the names; a number is for a level of your own above `CRITICAL`.
///
/// ```
/// use tower_hardening_core::Priority;
///
/// assert!(Priority::HIGH > Priority::NORMAL);
/// assert_eq!(Priority(2), Priority::HIGH);
/// assert_eq!(Priority::default(), Priority::NORMAL);
/// assert_eq!("high".parse::<Priority>(), Ok(Priority::HIGH));
/// assert_eq!("7".parse::<Priority>(), Ok(Priority(7)));
/// assert!("urgent!!".parse::<Priority>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u8);

impl Priority {
    /// Background work, shed first.
    pub const LOW: Priority = Priority(0);
    /// Ordinary traffic (the default).
    pub const NORMAL: Priority = Priority(1);
    /// Traffic that should survive overload.
    pub const HIGH: Priority = Priority(2);
    /// Traffic that must be served if anything is (health checks, control).
    pub const CRITICAL: Priority = Priority(3);

    /// The next level up, saturating at `u8::MAX` (used by queue aging).
    pub fn raised(self) -> Priority {
        Priority(self.0.saturating_add(1))
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Priority::LOW => f.write_str("low"),
            Priority::NORMAL => f.write_str("normal"),
            Priority::HIGH => f.write_str("high"),
            Priority::CRITICAL => f.write_str("critical"),
            Priority(other) => write!(f, "{other}"),
        }
    }
}

impl From<u8> for Priority {
    fn from(value: u8) -> Self {
        Priority(value)
    }
}

/// The error for a string that is neither a priority name nor a number
/// from 0 to 255.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsePriorityError {
    given: String,
}

impl fmt::Display for ParsePriorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cap what we echo: the input may come from an untrusted header.
        let shown: String = self.given.chars().take(32).collect();
        write!(
            f,
            "invalid priority {shown:?}: expected low, normal, high, critical or a number from 0 to 255"
        )
    }
}

impl std::error::Error for ParsePriorityError {}

impl FromStr for Priority {
    type Err = ParsePriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let named = [
            ("low", Priority::LOW),
            ("normal", Priority::NORMAL),
            ("high", Priority::HIGH),
            ("critical", Priority::CRITICAL),
        ];
        if let Some((_, priority)) = named
            .iter()
            .find(|(name, _)| trimmed.eq_ignore_ascii_case(name))
        {
            return Ok(*priority);
        }
        trimmed
            .parse::<u8>()
            .map(Priority)
            .map_err(|_| ParsePriorityError {
                given: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(" Critical ".parse::<Priority>(), Ok(Priority::CRITICAL));
        assert_eq!("LOW".parse::<Priority>(), Ok(Priority::LOW));
        assert_eq!("255".parse::<Priority>(), Ok(Priority(255)));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in ["", "-1", "256", "1e3", "high-ish", "\u{0}", "९"] {
            let err = bad.parse::<Priority>().unwrap_err();
            assert!(err.to_string().contains("invalid priority"), "{err}");
        }
        let long = "x".repeat(10_000);
        assert!(long.parse::<Priority>().unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn orders_by_importance() {
        let mut levels = vec![
            Priority::CRITICAL,
            Priority::LOW,
            Priority::HIGH,
            Priority::NORMAL,
        ];
        levels.sort();
        assert_eq!(
            levels,
            vec![
                Priority::LOW,
                Priority::NORMAL,
                Priority::HIGH,
                Priority::CRITICAL
            ]
        );
        assert_eq!(Priority(u8::MAX).raised(), Priority(u8::MAX));
    }
}
