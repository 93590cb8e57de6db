//! The measuring loops every tower-hardening bench shares, so each bench
//! file holds only what it measures.
//!
//! ```
//! use tower_hardening_bench_support::{bare, current_thread, one_task};
//!
//! let rt = current_thread();
//! let mut svc = bare();
//! let elapsed = one_task(&rt, &mut svc, 1_000);
//! assert!(elapsed.as_nanos() > 0);
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use tower::{Service, ServiceExt, service_fn};

/// The criterion settings every bench uses: 1 s warm-up, 3 s of
/// measurement.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The trivial service every bench wraps: returns its input.
pub fn bare() -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send
{
    service_fn(|x: u64| async move { Ok::<_, Infallible>(black_box(x)) })
}

/// A current-thread runtime with time enabled.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A runtime with two worker threads.
pub fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Times `iters` sequential `ready().await` + `call().await` rounds on
/// `svc`, in one task.
pub fn one_task<S>(rt: &tokio::runtime::Runtime, svc: &mut S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            black_box(svc.ready().await.unwrap().call(i).await.unwrap());
        }
        start.elapsed()
    })
}

/// Times `iters` rounds split between two tasks, each with its own clone
/// of `svc`, on `rt` (use [`two_workers`]).
pub fn two_tasks<S>(rt: &tokio::runtime::Runtime, svc: &S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
{
    n_tasks(rt, svc, 2, iters)
}

/// Times `iters` rounds split between `tasks` tasks, each with its own
/// clone of `svc`, on `rt` (four tasks on [`two_workers`] oversubscribe
/// them).
pub fn n_tasks<S>(rt: &tokio::runtime::Runtime, svc: &S, tasks: u64, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
{
    rt.block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let mut svc = svc.clone();
                tokio::spawn(async move {
                    for i in 0..iters / tasks {
                        black_box(svc.ready().await.unwrap().call(i).await.unwrap());
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
        start.elapsed()
    })
}
