//! How long to wait before the next attempt.
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_recovery::Backoff;
//!
//! // Any duration is accepted; the arithmetic saturates instead of panicking.
//! let huge = Backoff::exponential(Duration::from_secs(1), Duration::MAX);
//! assert_eq!(huge.base(200), Duration::MAX);
//! assert_eq!(huge.total(u32::MAX), Duration::MAX);
//! ```

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
///
/// Durations are never refused for being large: every sum and product
/// saturates at `Duration::MAX`, and a wait too long for the clock to
/// reach is a wait that never ends (tokio's timers treat it so).
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
            Backoff::Exponential { initial, max } => {
                // In nanoseconds, u128: 2^127 times any duration either fits
                // or is over the cap, and nothing on the way can panic.
                let doublings = n.saturating_sub(1).min(127);
                match initial.as_nanos().checked_mul(1u128 << doublings) {
                    Some(nanos) if nanos < max.as_nanos() => from_nanos(nanos),
                    _ => max,
                }
            }
        }
    }

    /// The sum of the waits before retries `1..=retries`, before jitter,
    /// saturating at `Duration::MAX`. Takes constant time whatever
    /// `retries` is.
    pub fn total(&self, retries: u32) -> Duration {
        match *self {
            Backoff::Constant(wait) => wait.saturating_mul(retries),
            Backoff::Exponential { initial, max } => {
                let mut total = Duration::ZERO;
                for n in 1..=retries {
                    let wait = self.base(n);
                    total = total.saturating_add(wait);
                    if wait >= max || total == Duration::MAX {
                        // Every later wait is `max`.
                        let rest = retries - n;
                        return total.saturating_add(max.saturating_mul(rest));
                    }
                    if initial.is_zero() {
                        // Doubling zero stays zero.
                        return total;
                    }
                }
                total
            }
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
            Jitter::Full => scale(base, rng.next_f64()),
            Jitter::Equal => (base / 2).saturating_add(scale(base / 2, rng.next_f64())),
        }
    }
}

/// A duration of `nanos` nanoseconds, which the caller knows is below
/// some `Duration`'s.
fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9.
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, subsec)
}

/// `duration * fraction` for a fraction in `[0, 1]`, never above
/// `duration` and never panicking (`Duration::mul_f64` panics when
/// rounding carries a huge duration past `Duration::MAX`).
fn scale(duration: Duration, fraction: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * fraction)
        .unwrap_or(duration)
        .min(duration)
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
    fn durations_near_the_maximum_never_panic() {
        let mut rng = HasherRng::default();
        for backoff in [
            Backoff::exponential(Duration::MAX, Duration::MAX),
            Backoff::exponential(Duration::from_secs(1), Duration::MAX),
            Backoff::constant(Duration::MAX),
        ] {
            for n in [1, 2, 63, 64, 65, u32::MAX] {
                for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
                    for _ in 0..100 {
                        assert!(backoff.delay(n, jitter, &mut rng) <= backoff.base(n));
                    }
                }
            }
            assert_eq!(backoff.total(u32::MAX), Duration::MAX);
        }
    }

    #[test]
    fn doubling_past_32_retries_keeps_doubling() {
        let backoff = Backoff::exponential(Duration::from_nanos(1), Duration::MAX);
        assert_eq!(backoff.base(41), Duration::from_nanos(1 << 40));
        assert!(backoff.base(64) > backoff.base(63));
        assert_eq!(backoff.base(128), Duration::MAX);
    }

    #[test]
    fn total_sums_the_capped_waits() {
        let backoff = Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2));
        // 50 + 100 + 200 + 400 + 800 + 1600, then 2000 each.
        assert_eq!(backoff.total(2), Duration::from_millis(150));
        assert_eq!(backoff.total(8), Duration::from_millis(3150 + 4000));
        assert_eq!(backoff.total(0), Duration::ZERO);
        assert_eq!(
            Backoff::exponential(Duration::ZERO, Duration::from_secs(1)).total(u32::MAX),
            Duration::ZERO
        );
        assert_eq!(
            Backoff::constant(Duration::from_secs(3)).total(4),
            Duration::from_secs(12)
        );
        assert_eq!(
            Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)).total(u32::MAX),
            Duration::from_secs(1 + 2 + 4 + 8 + 16)
                .saturating_add(Duration::from_secs(30).saturating_mul(u32::MAX - 5))
        );
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
