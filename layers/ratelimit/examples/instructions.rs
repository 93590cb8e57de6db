//! Instruction counts of the rate limiters' pass path, for callgrind:
//! `instructions <row> <N>` runs one row's loop `N` times on a
//! current-thread runtime; under valgrind's callgrind with two values of
//! `N`, the difference of the counts divided by the difference of the
//! calls is one call's instructions, a figure the machine's load does not
//! move (unlike the criterion bench `ratelimit`, whose rows these are).
//!
//! ```text
//! cargo build --release -p tower-hardening-ratelimit --example instructions
//! for row in $(target/release/examples/instructions rows); do
//!   for n in 2000 22000; do
//!     valgrind --tool=callgrind --toggle-collect='*drive*' --callgrind-out-file=cg \
//!       target/release/examples/instructions $row $n >/dev/null 2>&1
//!     awk '/^(summary|totals):/ { print $2; exit }' cg
//!   done
//! done
//! ```

use std::hint::black_box;

use tower::{Layer, Service, ServiceExt};
use tower_hardening_ratelimit::KeyMode;

#[path = "../benches/peers/mod.rs"]
mod peers;
use peers::{Adapter, Hello, governor_global, governor_peer_ip, ours, tower_rate_limit};

const ROWS: &[&str] = &[
    "bare",
    "tower_rate_limit",
    "tower_governor_global",
    "tower_hardening_global",
    "tower_governor_peer_ip",
    "tower_hardening_peer_ip",
];

/// The measured loop: callgrind counts only what runs inside it.
#[inline(never)]
fn drive<S>(runtime: &tokio::runtime::Runtime, mut svc: S, calls: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    runtime.block_on(async {
        for i in 0..calls {
            let ready = svc.ready().await.expect("ready");
            black_box(ready.call(i).await.expect("a success"));
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let row = args.next().unwrap_or_else(|| "rows".to_owned());
    let calls: u64 = args
        .next()
        .map_or(0, |n| n.parse().expect("a number of calls"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _entered = rt.enter();
    match row.as_str() {
        "bare" => drive(&rt, Adapter(Hello), calls),
        "tower_rate_limit" => drive(&rt, Adapter(tower_rate_limit().layer(Hello)), calls),
        "tower_governor_global" => drive(&rt, Adapter(governor_global().layer(Hello)), calls),
        "tower_hardening_global" => drive(&rt, Adapter(ours(KeyMode::Global).layer(Hello)), calls),
        "tower_governor_peer_ip" => drive(&rt, Adapter(governor_peer_ip().layer(Hello)), calls),
        "tower_hardening_peer_ip" => drive(&rt, Adapter(ours(KeyMode::PeerIp).layer(Hello)), calls),
        _ => println!("{}", ROWS.join(" ")),
    }
}
