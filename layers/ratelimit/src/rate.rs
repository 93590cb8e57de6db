//! A rate as people write it: `"100/s"`, `"600/m"`, `"5000/h"`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// So many requests per second, minute or hour.
///
/// ```
/// use std::time::Duration;
/// use tower_hardening_ratelimit::Rate;
///
/// let rate: Rate = "100/s".parse().unwrap();
/// assert_eq!(rate.count(), 100);
/// assert_eq!(rate.per(), Duration::from_secs(1));
/// assert_eq!("600/m".parse::<Rate>().unwrap().per(), Duration::from_secs(60));
/// assert!("0/s".parse::<Rate>().is_err());
/// assert!("lots".parse::<Rate>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    per: Duration,
}

/// The fastest rate: one request a nanosecond is where GCRA's clock stops.
const MAX_PER_SECOND: u32 = 1_000_000_000;

impl Rate {
    /// `count` requests per second.
    pub fn per_second(count: u32) -> Self {
        Rate {
            count,
            per: Duration::from_secs(1),
        }
    }

    /// `count` requests per minute.
    pub fn per_minute(count: u32) -> Self {
        Rate {
            count,
            per: Duration::from_secs(60),
        }
    }

    /// `count` requests per hour.
    pub fn per_hour(count: u32) -> Self {
        Rate {
            count,
            per: Duration::from_secs(3600),
        }
    }

    /// Requests per [`per`](Self::per).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period the count is for.
    pub fn per(&self) -> Duration {
        self.per
    }

    /// The time one request's worth of quota takes to come back, or why
    /// the rate is not one.
    pub(crate) fn interval(&self) -> Result<Duration, &'static str> {
        if self.count == 0 {
            return Err("a count above 0");
        }
        let interval = self.per / self.count;
        if interval.is_zero() {
            return Err("at most 1000000000/s");
        }
        Ok(interval)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Why a string is no [`Rate`]: says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseRateError {
    given: String,
    allowed: &'static str,
}

impl ParseRateError {
    /// What is allowed.
    pub fn allowed(&self) -> &'static str {
        self.allowed
    }
}

impl fmt::Display for ParseRateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is no rate: expected {}", self.given, self.allowed)
    }
}

impl std::error::Error for ParseRateError {}

/// What a rate looks like, for error messages.
pub const RATE_FORMAT: &str = "COUNT/UNIT with a count from 1 and a unit s, m or h (\"100/s\", \"600/m\"), at most 1000000000/s";

impl FromStr for Rate {
    type Err = ParseRateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |allowed| ParseRateError {
            given: s.chars().take(64).collect(),
            allowed,
        };
        let (count, unit) = s.trim().split_once('/').ok_or_else(|| error(RATE_FORMAT))?;
        let count: u32 = count.trim().parse().map_err(|_| error(RATE_FORMAT))?;
        let rate = match unit.trim() {
            "s" | "sec" | "second" => Rate::per_second(count),
            "m" | "min" | "minute" => Rate::per_minute(count),
            "h" | "hour" => Rate::per_hour(count),
            _ => return Err(error(RATE_FORMAT)),
        };
        rate.interval().map_err(error)?;
        if rate.per == Duration::from_secs(1) && count > MAX_PER_SECOND {
            return Err(error(RATE_FORMAT));
        }
        Ok(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_no_rate() {
        for bad in [
            "",
            "100",
            "100/",
            "/s",
            "0/s",
            "-1/s",
            "1.5/s",
            "100/d",
            "100/s/s",
            "4294967296/s",
            "2000000000/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
        assert_eq!("1/h".parse::<Rate>().unwrap(), Rate::per_hour(1));
        assert_eq!(" 20 / m ".parse::<Rate>().unwrap(), Rate::per_minute(20));
        assert_eq!(Rate::per_minute(20).to_string(), "20/m");
    }
}
