//! The retry budget: tower's `TpsBudget` arithmetic (deposits expire
//! after `ttl`, in ten windows; a retry withdraws `1 / ratio` deposits;
//! `min_per_second * ttl` retries are always in reserve) without its
//! mutex and clock on every deposit.
//!
//! A deposit is one uncontended atomic add on the calling thread's
//! stripe, whose count of first attempts only grows (it is also the
//! layer's count of first attempts, with or without a budget). A stripe
//! reads the clock on its 1st, 2nd, 4th and 8th deposit of a window and
//! then every 16th; when the window has moved on, the stripe's earlier
//! deposits are committed to the window it last saw (one short lock per
//! stripe per window). A withdraw (a retry: rare) takes the lock, reads
//! the clock and adds up the windows and the stripes.
//!
//! The approximations are on the safe side. Deposits made since a
//! stripe's last clock reading (at most 15 per stripe) count as made in
//! the window of that reading, so they expire early (or are never
//! counted, when that window has already passed), never late. A
//! withdrawal counts for 11 windows, so at least a whole `ttl`.

#[cfg(loom)]
use loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};
#[cfg(not(loom))]
use std::sync::Mutex;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tower_hardening_core::stripe::Striped;
#[cfg(not(loom))]
use tower_hardening_core::sync::lock;

#[cfg(loom)]
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Windows a `ttl` is divided into (as tower's `TpsBudget`).
const WINDOWS: usize = 10;
/// Deposits on a stripe between two readings of the clock.
const CHECK_EVERY: u64 = 16;

#[derive(Debug, Default)]
struct Stripe {
    /// First attempts started on this stripe, ever.
    made: AtomicU64,
    /// `made` when the stripe last committed its deposits: the deposits
    /// since are `made - committed`. Only grows (`fetch_max`), so two
    /// threads sharing a stripe never commit a deposit twice.
    committed: AtomicU64,
    /// The window of the stripe's last clock reading.
    window: AtomicU64,
}

impl Stripe {
    fn pending(&self) -> u64 {
        self.made
            .load(Ordering::Relaxed)
            .saturating_sub(self.committed.load(Ordering::Relaxed))
    }
}

/// One slot more than the windows: a withdrawal counts for 11 windows (at
/// least the whole `ttl`, however late in its window it was made), a
/// deposit for 10 (at most `ttl`).
const SLOTS: usize = WINDOWS + 1;

#[derive(Debug, Clone, Copy)]
struct Slot {
    window: u64,
    deposited: i64,
    withdrawn: i64,
}

#[derive(Debug)]
struct Ring {
    /// The amounts of `window`, kept in slot `window % SLOTS`.
    slots: [Slot; SLOTS],
}

impl Ring {
    fn slot(&mut self, window: u64) -> Option<&mut Slot> {
        let slot = &mut self.slots[(window % SLOTS as u64) as usize];
        if slot.window != window {
            if slot.window != u64::MAX && slot.window > window {
                // Older than what the slot holds: already expired.
                return None;
            }
            *slot = Slot {
                window,
                deposited: 0,
                withdrawn: 0,
            };
        }
        Some(slot)
    }
}

/// A retry budget shared by every clone of a retry layer, and its count
/// of first attempts.
#[derive(Debug)]
pub(crate) struct StripedBudget {
    /// `false`: no budget (every retry allowed); first attempts are
    /// still counted.
    limited: bool,
    #[cfg_attr(loom, expect(dead_code, reason = "the model's clock stands in"))]
    start: Instant,
    #[cfg_attr(loom, expect(dead_code, reason = "the model's clock stands in"))]
    window_nanos: u128,
    stripes: Striped<Stripe>,
    ring: Mutex<Ring>,
    reserve: i64,
    deposit_amount: i64,
    withdraw_amount: i64,
    /// Under loom, the window the model's clock reads.
    #[cfg(loom)]
    model_window: AtomicU64,
}

impl StripedBudget {
    /// `ttl` from 1 s to 60 s, `ratio` from 0 to 1000 (checked by the
    /// builder).
    pub(crate) fn new(ttl: Duration, min_per_second: u32, ratio: f32) -> Self {
        // The amounts of tower's `TpsBudget`, so the two allow the same.
        let (deposit_amount, withdraw_amount) = if ratio == 0.0 {
            (0, 1)
        } else if ratio <= 1.0 {
            (1, (1.0 / ratio) as i64)
        } else {
            (1_000, (1_000.0 / ratio) as i64)
        };
        let reserve = i64::from(min_per_second)
            .saturating_mul(ttl.as_secs() as i64)
            .saturating_mul(withdraw_amount);
        StripedBudget {
            limited: true,
            start: Instant::now(),
            window_nanos: (ttl / WINDOWS as u32).as_nanos().max(1),
            stripes: Striped::default(),
            ring: Mutex::new(Ring {
                slots: [Slot {
                    window: u64::MAX,
                    deposited: 0,
                    withdrawn: 0,
                }; SLOTS],
            }),
            reserve,
            deposit_amount,
            withdraw_amount,
            #[cfg(loom)]
            model_window: AtomicU64::new(0),
        }
    }

    /// No budget: every retry is allowed.
    pub(crate) fn unlimited() -> Self {
        StripedBudget {
            limited: false,
            ..StripedBudget::new(Duration::from_secs(1), 0, 0.0)
        }
    }

    /// First attempts so far (exact once they have all started).
    pub(crate) fn first_attempts(&self) -> u64 {
        self.stripes.iter().fold(0u64, |sum, s| {
            sum.saturating_add(s.made.load(Ordering::Relaxed))
        })
    }

    #[cfg(not(loom))]
    fn window_now(&self) -> u64 {
        let window = self.start.elapsed().as_nanos() / self.window_nanos;
        u64::try_from(window).unwrap_or(u64::MAX - 1)
    }

    /// Under loom the clock is the model's: an input it sets, so that
    /// every interleaving is replayed with the same readings.
    #[cfg(loom)]
    fn window_now(&self) -> u64 {
        self.model_window.load(Ordering::Acquire)
    }

    /// A first attempt earns its share, on the stripe of `thread` (a
    /// [`stripe::thread_number`](tower_hardening_core::stripe::thread_number)).
    #[inline]
    pub(crate) fn deposit(&self, thread: usize) {
        let stripe = self.stripes.at(thread);
        let made = stripe.made.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.limited || self.deposit_amount == 0 {
            return;
        }
        // The clock is read on a stripe's 1st, 2nd, 4th and 8th deposit
        // of a window, then every 16th: a quiet stripe is exact, a busy
        // one reads the clock once per 16 deposits.
        // `pending` is 0 when a thread sharing the stripe has committed
        // past this deposit already: nothing to check then.
        let pending = made.saturating_sub(stripe.committed.load(Ordering::Relaxed));
        if pending.is_power_of_two() || (pending != 0 && pending.is_multiple_of(CHECK_EVERY)) {
            self.check(stripe, made);
        }
    }

    #[cold]
    fn check(&self, stripe: &Stripe, made: u64) {
        let now = self.window_now();
        let seen = stripe.window.load(Ordering::Relaxed);
        if now != seen {
            // The deposit just made belongs to `now`; the earlier ones to
            // the window the stripe saw last.
            let before = made - 1;
            let committed = stripe.committed.fetch_max(before, Ordering::Relaxed);
            if committed > before {
                // A thread sharing the stripe committed past this deposit
                // (and read the clock later): its reading stands.
                return;
            }
            // Released after `committed` moved: a withdrawal that reads the
            // new window also reads the deposits it took out of `pending`
            // (on a weakly ordered CPU it could otherwise count them as
            // pending in the new window although they belong to an
            // expired one).
            stripe.window.store(now, Ordering::Release);
            self.commit(&mut lock(&self.ring), seen, before - committed);
        }
    }

    fn commit(&self, ring: &mut Ring, window: u64, deposits: u64) {
        let amount = i64::try_from(deposits)
            .unwrap_or(i64::MAX)
            .saturating_mul(self.deposit_amount);
        if let Some(slot) = ring.slot(window) {
            slot.deposited = slot.deposited.saturating_add(amount);
        }
    }

    /// Whether a retry may be made now; takes it from the budget if so.
    pub(crate) fn withdraw(&self) -> bool {
        if !self.limited {
            return true;
        }
        let mut ring = lock(&self.ring);
        let now = self.window_now();
        let age = |window: u64| (window != u64::MAX && window <= now).then(|| now - window);
        let deposit_counts = |window| age(window).is_some_and(|age| age < WINDOWS as u64);
        let withdrawal_counts = |window| age(window).is_some_and(|age| age <= WINDOWS as u64);
        let mut balance = self.reserve;
        for slot in &ring.slots {
            if deposit_counts(slot.window) {
                balance = balance.saturating_add(slot.deposited);
            }
            if withdrawal_counts(slot.window) {
                balance = balance.saturating_sub(slot.withdrawn);
            }
        }
        for stripe in self.stripes.iter() {
            if deposit_counts(stripe.window.load(Ordering::Acquire)) {
                let deposits = i64::try_from(stripe.pending()).unwrap_or(i64::MAX);
                balance = balance.saturating_add(deposits.saturating_mul(self.deposit_amount));
            }
        }
        if balance >= self.withdraw_amount {
            if let Some(slot) = ring.slot(now) {
                slot.withdrawn = slot.withdrawn.saturating_add(self.withdraw_amount);
            }
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_hardening_core::stripe;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn empty_allows_nothing() {
        let budget = StripedBudget::new(SECOND, 0, 1.0);
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_allow_their_ratio() {
        let budget = StripedBudget::new(Duration::from_secs(10), 0, 0.5);
        for _ in 0..100 {
            budget.deposit(stripe::thread_number());
        }
        for i in 0..50 {
            assert!(budget.withdraw(), "retry {i}");
        }
        assert!(!budget.withdraw(), "100 deposits at 50% allow 50 retries");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_ttl() {
        let budget = StripedBudget::new(SECOND, 0, 1.0);
        for _ in 0..100 {
            budget.deposit(stripe::thread_number());
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(budget.withdraw(), "still within the ttl");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!budget.withdraw(), "expired");
        // Deposits keep flowing after a quiet spell: they count again.
        for _ in 0..32 {
            budget.deposit(stripe::thread_number());
        }
        assert!(budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_refills_by_itself() {
        let budget = StripedBudget::new(SECOND, 5, 0.2);
        for _ in 0..5 {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw(), "5 a second, and no deposit");
        tokio::time::advance(Duration::from_millis(1_100)).await;
        assert!(budget.withdraw(), "the withdrawals expired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_withdrawal_counts_for_a_whole_ttl() {
        let budget = StripedBudget::new(SECOND, 10, 1.0);
        // Late in the first window (windows are 100 ms).
        tokio::time::advance(Duration::from_millis(99)).await;
        for _ in 0..10 {
            assert!(budget.withdraw());
        }
        // 901 ms later: less than a ttl since those withdrawals.
        tokio::time::advance(Duration::from_millis(901)).await;
        assert!(!budget.withdraw(), "10 a second means 10 in any second");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(budget.withdraw());
    }

    /// A runtime on paused time, for tests that deposit from threads.
    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn threads_deposit_without_losing_any() {
        let runtime = paused_runtime();
        let _guard = runtime.enter();
        let budget = StripedBudget::new(Duration::from_secs(60), 0, 1.0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..10_000).for_each(|_| budget.deposit(stripe::thread_number())));
            }
        });
        let mut allowed = 0;
        while budget.withdraw() {
            allowed += 1;
        }
        assert_eq!(allowed, 40_000);
    }

    #[test]
    fn counts_first_attempts_with_or_without_a_budget() {
        let runtime = paused_runtime();
        let _guard = runtime.enter();
        for budget in [
            StripedBudget::new(SECOND, 0, 1.0),
            StripedBudget::unlimited(),
        ] {
            std::thread::scope(|s| {
                for _ in 0..3 {
                    s.spawn(|| (0..1_000).for_each(|_| budget.deposit(stripe::thread_number())));
                }
            });
            assert_eq!(budget.first_attempts(), 3_000);
        }
        let unlimited = StripedBudget::unlimited();
        assert!((0..1_000).all(|_| unlimited.withdraw()));
    }

    #[test]
    fn matches_towers_amounts() {
        let ours = StripedBudget::new(Duration::from_secs(10), 10, 0.2);
        assert_eq!((ours.deposit_amount, ours.withdraw_amount), (1, 5));
        assert_eq!(ours.reserve, 10 * 10 * 5);
        let ours = StripedBudget::new(Duration::from_secs(10), 0, 10.0);
        assert_eq!((ours.deposit_amount, ours.withdraw_amount), (1_000, 100));
    }
}

/// Model checks with loom (`RUSTFLAGS="--cfg loom" cargo test -p
/// tower-hardening-recovery --lib --release loom_`, as `.ci/run` does).
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two threads sharing one stripe deposit while the clock moves to the
    /// next window: every deposit is counted once, in a window's slot or
    /// as pending on the stripe, never twice and never lost (no window
    /// expires here).
    #[test]
    fn loom_deposits_on_a_shared_stripe_count_once() {
        loom::model(|| {
            let budget = Arc::new(StripedBudget::new(Duration::from_secs(10), 0, 1.0));
            let depositors: Vec<_> = (0..2)
                .map(|_| {
                    let budget = budget.clone();
                    thread::spawn(move || {
                        for _ in 0..2 {
                            budget.deposit(0);
                        }
                    })
                })
                .collect();
            budget.model_window.store(1, Ordering::Release);
            for depositor in depositors {
                depositor.join().unwrap();
            }
            let stripe = budget.stripes.at(0);
            let made = stripe.made.load(Ordering::Acquire);
            let ring = lock(&budget.ring);
            let committed: i64 = ring
                .slots
                .iter()
                .filter(|slot| slot.window != u64::MAX)
                .map(|slot| slot.deposited)
                .sum();
            assert_eq!(made, 4);
            assert_eq!(
                committed + i64::try_from(stripe.pending()).unwrap(),
                4,
                "committed {committed}, pending {}",
                stripe.pending()
            );
        });
    }
}
