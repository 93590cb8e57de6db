//! The pool's counters after `set_capacity` shrinks it below what is
//! held.

use tower_hardening_limit::{Acquire, ResourcePool};

/// `in_use` counts the units held, even after `set_capacity` shrank the
/// pool below them (it used to report the new capacity: 2 of 5 leased).
#[tokio::test]
async fn in_use_counts_units_held_after_a_shrink() {
    let pool = ResourcePool::builder("units").capacity(5).build().unwrap();
    let mut leases = Vec::new();
    for i in 0..5 {
        leases.push(pool.acquire(Acquire::new(format!("o{i}"))).await.unwrap());
    }
    pool.set_capacity(2);
    let stats = pool.stats();
    assert_eq!(stats.active_leases, 5);
    assert_eq!(
        stats.in_use, 5,
        "five units are leased; stats says in_use = {} (capacity {}, available {})",
        stats.in_use, stats.capacity, stats.available
    );
    drop(leases);
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.available), (0, 2));
}
