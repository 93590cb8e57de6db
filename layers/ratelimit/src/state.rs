//! The limiter shared by every clone of a rate-limited service: one
//! governor `RateLimiter` per quota, a quota per priority.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use tower_hardening_core::{Priority, RateLimited, RatePolicy};

use crate::cells::{BoundedCells, SharedCells};
use crate::key::RequestKey;
use crate::rate::Rate;

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> = RateLimiter<u64, SharedCells, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One quota and its state.
#[derive(Debug)]
pub(crate) struct Quotas<C: Clock> {
    policy: RatePolicy,
    /// Global: every request. Keyed: requests without a key.
    shared: Direct<C>,
    keyed: Option<Keyed<C>>,
    /// The keyed store, for its figures and sweeps.
    cells: Option<Arc<BoundedCells>>,
}

impl<C: Clock + Clone> Quotas<C> {
    fn new(
        policy: &'static str,
        rate: Rate,
        burst: u32,
        keyed: Option<usize>,
        clock: &C,
    ) -> Option<Self> {
        let quota = Quota::with_period(rate.interval().ok()?)?.allow_burst(NonZeroU32::new(burst)?);
        let cells = keyed.map(|max_keys| Arc::new(BoundedCells::new(max_keys)));
        Some(Quotas {
            policy: RatePolicy::new(policy, u64::from(rate.count()), rate.per()),
            shared: RateLimiter::direct_with_clock(quota, clock.clone()),
            keyed: cells
                .as_ref()
                .map(|cells| RateLimiter::new(quota, SharedCells(cells.clone()), clock.clone())),
            cells,
        })
    }
}

/// Figures of a limiter, from [`RateLimitHandle::stats`](crate::RateLimitHandle::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Requests refused since the start.
    pub limited: u64,
    /// Keys tracked now (every quota together).
    pub keys: usize,
    /// Requests whose key the full store had no room for: counted against
    /// the shared overflow bucket.
    pub overflowed: u64,
    /// Requests a keyed limiter found no key for (no peer address, no
    /// header): counted against one shared bucket.
    pub missing_key: u64,
}

/// The state behind a rate limiter (see the crate docs).
#[derive(Debug)]
pub(crate) struct RateLimitState<C: Clock = DefaultClock> {
    pub(crate) name: Arc<str>,
    quotas: Vec<Quotas<C>>,
    /// Which quota each priority (LOW, NORMAL, HIGH, CRITICAL and above)
    /// draws from; `None`: not limited.
    by_priority: [Option<u8>; 4],
    clock: C,
    origin: C::Instant,
    limited: AtomicU64,
    missing_key: AtomicU64,
    warned_missing: AtomicBool,
}

/// The configuration of one quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaConfig {
    pub(crate) rate: Rate,
    pub(crate) burst: u32,
}

impl<C: Clock + Clone> RateLimitState<C> {
    /// `base` for LOW to HIGH (and CRITICAL if `critical_limited`), each
    /// entry of `per_priority` in place of it for its priority. Checked
    /// by the builder before.
    pub(crate) fn new(
        name: Arc<str>,
        base: QuotaConfig,
        per_priority: &[(Priority, QuotaConfig)],
        keyed: Option<usize>,
        clock: C,
    ) -> Option<Self> {
        let mut quotas = vec![Quotas::new(
            "default", base.rate, base.burst, keyed, &clock,
        )?];
        let mut by_priority = [Some(0), Some(0), Some(0), None];
        for (priority, quota) in per_priority {
            let slot = slot(*priority);
            quotas.push(Quotas::new(
                POLICY_NAMES[slot],
                quota.rate,
                quota.burst,
                keyed,
                &clock,
            )?);
            by_priority[slot] = Some(u8::try_from(quotas.len() - 1).ok()?);
        }
        Some(RateLimitState {
            name,
            quotas,
            by_priority,
            origin: clock.now(),
            clock,
            limited: AtomicU64::new(0),
            missing_key: AtomicU64::new(0),
            warned_missing: AtomicBool::new(false),
        })
    }

    /// Whether requests of `priority` are limited at all.
    #[inline]
    pub(crate) fn limits(&self, priority: Priority) -> bool {
        self.by_priority[slot(priority)].is_some()
    }

    /// Counts one request of `priority` with `key`: `Ok` if it conforms,
    /// the refusal (with the limiter's own wait) otherwise.
    #[inline]
    pub(crate) fn check(&self, priority: Priority, key: RequestKey) -> Result<(), RateLimited> {
        let Some(index) = self.by_priority[slot(priority)] else {
            return Ok(());
        };
        let quotas = &self.quotas[usize::from(index)];
        let decision = match (key, &quotas.keyed) {
            (RequestKey::Key(key), Some(keyed)) => {
                let decision = keyed.check_key(&key);
                // A full store refused a new key (its overflow bucket is
                // spent): forget what is at rest, and ask once more. A
                // tracked key refused stays refused: its cell is not at
                // rest, so no sweep removes it.
                if decision.is_err() && self.sweep_if_full(quotas) {
                    keyed.check_key(&key)
                } else {
                    decision
                }
            }
            (RequestKey::Missing, Some(_)) => {
                self.missing_key.fetch_add(1, Ordering::Relaxed);
                self.warn_missing();
                quotas.shared.check()
            }
            _ => quotas.shared.check(),
        };
        decision.map_err(|not_until| self.refusal(quotas, &not_until))
    }

    #[cold]
    fn refusal(&self, quotas: &Quotas<C>, not_until: &NotUntil<C::Instant>) -> RateLimited {
        self.limited.fetch_add(1, Ordering::Relaxed);
        let wait = not_until.wait_time_from(self.clock.now());
        RateLimited::new(self.name.clone(), wait).with_policy(quotas.policy)
    }

    /// A full store forgets its cells at rest, at most once a second, when
    /// a request was refused (an overflowing new key is refused once the
    /// overflow bucket is spent).
    /// Whether it swept.
    #[cold]
    fn sweep_if_full(&self, quotas: &Quotas<C>) -> bool {
        let (Some(keyed), Some(cells)) = (&quotas.keyed, &quotas.cells) else {
            return false;
        };
        let sweep = cells.wants_sweep(self.clock.now().duration_since(self.origin));
        if sweep {
            keyed.retain_recent();
        }
        sweep
    }

    #[cold]
    fn warn_missing(&self) {
        if !self.warned_missing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                service = %self.name,
                "rate limit keyed by peer address or header found a request without one: such requests share one bucket (for the peer address, serve with axum's `into_make_service_with_connect_info::<SocketAddr>()`, or put a `SocketAddr` in the request's extensions)"
            );
        }
    }

    /// Forgets every key whose cell is back at rest (indistinguishable
    /// from a new key), and gives back the memory the map no longer needs.
    pub(crate) fn forget_idle(&self) {
        for quotas in &self.quotas {
            if let Some(keyed) = &quotas.keyed {
                keyed.retain_recent();
                keyed.shrink_to_fit();
            }
        }
    }

    pub(crate) fn stats(&self) -> RateLimitStats {
        let keyed = self.quotas.iter().filter_map(|q| q.cells.as_ref());
        let (keys, overflowed) = keyed.fold((0, 0), |(keys, overflowed), store| {
            (
                keys + store.keys(),
                overflowed + store.overflowed.load(Ordering::Relaxed),
            )
        });
        RateLimitStats {
            limited: self.limited.load(Ordering::Relaxed),
            keys,
            overflowed,
            missing_key: self.missing_key.load(Ordering::Relaxed),
        }
    }

    /// The longest wait any quota can impose (its burst's worth).
    #[cfg(test)]
    pub(crate) fn policies(&self) -> Vec<RatePolicy> {
        self.quotas.iter().map(|q| q.policy).collect()
    }
}

/// The priority's slot: LOW, NORMAL, HIGH, CRITICAL (and above).
fn slot(priority: Priority) -> usize {
    usize::from(priority.0.min(3))
}

const POLICY_NAMES: [&str; 4] = ["low", "normal", "high", "critical"];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(
        rate: Rate,
        burst: u32,
        per_priority: &[(Priority, QuotaConfig)],
        keyed: Option<usize>,
    ) -> (RateLimitState<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        clock.advance(Duration::from_secs(1));
        let state = RateLimitState::new(
            Arc::from("api"),
            QuotaConfig { rate, burst },
            per_priority,
            keyed,
            clock.clone(),
        )
        .unwrap();
        (state, clock)
    }

    #[test]
    fn a_burst_then_the_limiters_own_wait() {
        let (state, clock) = limiter(Rate::per_second(100), 20, &[], None);
        for _ in 0..20 {
            state.check(Priority::NORMAL, RequestKey::Global).unwrap();
        }
        let refused = state
            .check(Priority::NORMAL, RequestKey::Global)
            .unwrap_err();
        assert_eq!(refused.retry_after(), Duration::from_millis(10));
        assert_eq!(refused.policy().unwrap().quota(), 100);
        assert_eq!(refused.policy().unwrap().window(), Duration::from_secs(1));
        clock.advance(Duration::from_millis(10));
        state.check(Priority::NORMAL, RequestKey::Global).unwrap();
        assert_eq!(state.stats().limited, 1);
    }

    #[test]
    fn critical_is_never_limited_unless_configured() {
        let (state, _) = limiter(Rate::per_hour(1), 1, &[], None);
        state.check(Priority::LOW, RequestKey::Global).unwrap();
        assert!(state.check(Priority::HIGH, RequestKey::Global).is_err());
        for _ in 0..1000 {
            state.check(Priority::CRITICAL, RequestKey::Global).unwrap();
            state.check(Priority(9), RequestKey::Global).unwrap();
        }
        let own = QuotaConfig {
            rate: Rate::per_hour(2),
            burst: 2,
        };
        let (state, _) = limiter(
            Rate::per_hour(1),
            1,
            &[(Priority::CRITICAL, own), (Priority::HIGH, own)],
            None,
        );
        state.check(Priority::NORMAL, RequestKey::Global).unwrap();
        // HIGH has a bucket of its own, apart from NORMAL's.
        state.check(Priority::HIGH, RequestKey::Global).unwrap();
        state.check(Priority::HIGH, RequestKey::Global).unwrap();
        let refused = state.check(Priority::HIGH, RequestKey::Global).unwrap_err();
        assert_eq!(refused.policy().unwrap().name(), "high");
        state.check(Priority::CRITICAL, RequestKey::Global).unwrap();
        state.check(Priority::CRITICAL, RequestKey::Global).unwrap();
        assert!(state.check(Priority::CRITICAL, RequestKey::Global).is_err());
        assert_eq!(state.policies().len(), 3);
    }

    #[test]
    fn a_spraying_client_costs_the_others_nothing() {
        let (state, clock) = limiter(Rate::per_minute(2), 2, &[], Some(100));
        let legit = RequestKey::Key(1);
        let limited = RequestKey::Key(2);
        state.check(Priority::NORMAL, legit).unwrap();
        for _ in 0..2 {
            state.check(Priority::NORMAL, limited).unwrap();
        }
        assert!(state.check(Priority::NORMAL, limited).is_err());

        // A new key per request, a hundred times the bound.
        let mut served = 0;
        for key in 1_000..11_000u64 {
            if state.check(Priority::NORMAL, RequestKey::Key(key)).is_ok() {
                served += 1;
            }
            clock.advance(Duration::from_micros(1));
        }
        let stats = state.stats();
        assert_eq!(stats.keys, 100, "memory stays bounded");
        // The sprayer got the 98 free cells and then one shared bucket.
        assert!(served <= 98 + 2, "served {served}");
        assert!(stats.overflowed >= 9_900);
        // No tracked key lost its state: the limited one is still limited
        // (an eviction would have handed it a fresh quota), the other
        // still has its second request.
        assert!(state.check(Priority::NORMAL, limited).is_err());
        state.check(Priority::NORMAL, legit).unwrap();
    }

    #[test]
    fn idle_keys_are_forgotten_and_a_full_store_sweeps_itself() {
        let (state, clock) = limiter(Rate::per_second(10), 1, &[], Some(10));
        for key in 0..10u64 {
            state.check(Priority::NORMAL, RequestKey::Key(key)).unwrap();
        }
        assert_eq!(state.stats().keys, 10);
        // Full: a new key shares the overflow bucket, then is refused.
        state.check(Priority::NORMAL, RequestKey::Key(100)).unwrap();
        assert!(state.check(Priority::NORMAL, RequestKey::Key(101)).is_err());
        clock.advance(Duration::from_secs(2));
        // The refusal above swept when nothing was at rest; a second later
        // a new key refused by the spent overflow bucket sweeps again,
        // finds room, and is served.
        state.check(Priority::NORMAL, RequestKey::Key(102)).unwrap();
        state.check(Priority::NORMAL, RequestKey::Key(103)).unwrap();
        assert!(state.stats().keys < 10, "{:?}", state.stats());

        clock.advance(Duration::from_secs(2));
        state.forget_idle();
        assert_eq!(state.stats().keys, 0);
    }

    #[test]
    fn requests_without_a_key_share_one_bucket() {
        let (state, _) = limiter(Rate::per_hour(1), 1, &[], Some(10));
        state.check(Priority::NORMAL, RequestKey::Missing).unwrap();
        assert!(state.check(Priority::NORMAL, RequestKey::Missing).is_err());
        state.check(Priority::NORMAL, RequestKey::Key(1)).unwrap();
        assert_eq!(state.stats().missing_key, 2);
    }
}
