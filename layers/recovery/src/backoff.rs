//! How long to wait before the next attempt.

use std::time::Duration;

use tower::util::rng::{HasherRng, Rng};

/// The wait before retry number `n` (from 1), before jitter.
///
/// ```
/// use std::time::Duration;
/// use tower_hardening_recovery::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2));
/// assert_eq!(backoff.base(1), Duration::from_millis(50));
/// assert_eq!(backoff.base(2), Duration::from_millis(100));
/// assert_eq!(backoff.base(3), Duration::from_millis(200));
/// assert_eq!(backoff.base(20), Duration::from_secs(2)); // capped
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// `initial * 2^(n - 1)`, capped at `max`.
    Exponential {
        /// The first wait.
        initial: Duration,
        /// The longest wait.
        max: Duration,
    },
    /// The same wait every time.
    Constant(Duration),
}

impl Backoff {
    /// `initial`, doubled for each further retry, capped at `max`.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff::Exponential { initial, max }
    }

    /// `wait` before every retry.
    pub fn constant(wait: Duration) -> Self {
        Backoff::Constant(wait)
    }

    /// The wait before retry `n` (1 for the first retry), before jitter.
    pub fn base(&self, n: u32) -> Duration {
        match *self {
            Backoff::Constant(wait) => wait,
            Backoff::Exponential { initial, max } => initial
                .checked_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
                .unwrap_or(max)
                .min(max),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        match *self {
            Backoff::Exponential { initial, max } if max < initial => {
                Err("an exponential backoff whose max is at least its initial wait")
            }
            _ => Ok(()),
        }
    }

    /// The wait before retry `n` with `jitter` applied, drawing from `rng`.
    pub(crate) fn delay(&self, n: u32, jitter: Jitter, rng: &mut HasherRng) -> Duration {
        let base = self.base(n);
        match jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(rng.next_f64()),
            Jitter::Equal => base / 2 + (base / 2).mul_f64(rng.next_f64()),
        }
    }
}

/// How waits are spread so that clients that failed together do not retry
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Exactly the backoff.
    None,
    /// Uniform in `[0, backoff]` (the default; spreads retries the most).
    #[default]
    Full,
    /// `backoff / 2` plus uniform in `[0, backoff / 2]`.
    Equal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds() {
        let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = HasherRng::default();
        for n in 1..10 {
            let base = backoff.base(n);
            assert_eq!(backoff.delay(n, Jitter::None, &mut rng), base);
            for _ in 0..100 {
                let full = backoff.delay(n, Jitter::Full, &mut rng);
                assert!(full <= base);
                let equal = backoff.delay(n, Jitter::Equal, &mut rng);
                assert!(equal >= base / 2 && equal <= base);
            }
        }
    }

    #[test]
    fn huge_retry_numbers_saturate_at_the_cap() {
        let backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(backoff.base(u32::MAX), Duration::from_secs(30));
        assert_eq!(
            Backoff::constant(Duration::from_millis(5)).base(7),
            Duration::from_millis(5)
        );
    }
}
