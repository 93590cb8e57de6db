//! Snapshots of a breaker's window under writes from many more threads
//! than cores and operator resets from another thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_breaker::{CircuitBreakerLayer, CircuitState, SlidingWindow};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(8)
        .enable_time()
        .build()
        .unwrap()
}

fn breaker(window: SlidingWindow) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("review2")
        .sliding_window(window)
        .minimum_calls(1)
        .failure_rate_threshold(1.0)
        .slow_call_rate_threshold(1.0)
        .slow_call_duration(Duration::from_micros(50))
        .build()
        .unwrap()
}

/// Spawns `tasks` tasks calling through `layer` in a loop until `stop`;
/// one call in three fails. Returns the join handles.
fn hammer(
    rt: &tokio::runtime::Runtime,
    layer: &CircuitBreakerLayer,
    tasks: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|t| {
            let mut svc = layer.layer(service_fn(|fail: bool| async move {
                if fail {
                    Err(std::io::Error::other("down"))
                } else {
                    Ok(())
                }
            }));
            let stop = stop.clone();
            rt.spawn(async move {
                let mut k = t;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    if let Ok(ready) = svc.ready().await {
                        let _ = ready.call(k % 3 == 0).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    if k % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect()
}

/// A snapshot is what `service_health()` and `/metrics` read. Under writes
/// racing operator resets and 1 ms rollovers (time) or a one-slot window
/// (count), a reading must be possible: failures <= calls, slow <= calls,
/// rates in [0, 1]. (window.rs promises no reading counts a call the
/// window does not hold.) After the writers stop: a 1 ms time window is
/// empty once its period passed; any window after `reset()` and N
/// sequential calls holds exactly those N.
///
/// A one-slot count window read as `calls: 1048575, failures: 1048574`
/// here: the snapshot passed on a reading torn by a writer mid-update,
/// which trip checks refuse. Now a snapshot re-reads (or clamps).
fn possible_readings(window: SlidingWindow, label: &str, quiet: Duration, slots: u64) {
    let rt = runtime();
    let layer = breaker(window);
    let handle = layer.handle();
    handle.metrics_only();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = hammer(&rt, &layer, 48, &stop);
    let bad = Arc::new(AtomicU64::new(0));
    let readings = Arc::new(AtomicU64::new(0));
    let first_bad = Arc::new(std::sync::Mutex::new(None::<String>));
    let reader = {
        let (handle, stop, bad, readings, first_bad) = (
            handle.clone(),
            stop.clone(),
            bad.clone(),
            readings.clone(),
            first_bad.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = handle.snapshot();
                readings.fetch_add(1, Ordering::Relaxed);
                let rate_ok = |r: Option<f64>| r.is_none_or(|r| (0.0..=1.0).contains(&r));
                if s.failures > s.calls
                    || s.slow_calls > s.calls
                    || s.calls > slots
                    || !rate_ok(s.failure_rate)
                    || !rate_ok(s.slow_call_rate)
                {
                    bad.fetch_add(1, Ordering::Relaxed);
                    first_bad.lock().unwrap().get_or_insert(format!("{s:?}"));
                }
            }
        })
    };
    let operator = {
        let (handle, stop) = (handle.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match i % 4 {
                    0 => handle.reset(),
                    1 => handle.metrics_only(),
                    2 => handle.reset(),
                    _ => handle.metrics_only(),
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    operator.join().unwrap();
    reader.join().unwrap();
    rt.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "{label}: impossible snapshots among {} readings, first: {:?}",
        readings.load(Ordering::Relaxed),
        first_bad.lock().unwrap()
    );
    handle.metrics_only();
    std::thread::sleep(quiet);
    let s = handle.snapshot();
    assert_eq!(
        (s.calls, s.failures),
        (0, 0),
        "{label}: after writers stopped and the window passed: {s:?}"
    );
    // Exactly what is recorded after the writers stopped.
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err(std::io::Error::other("down"))
        } else {
            Ok(())
        }
    }));
    let n = slots.min(10);
    let expected_failures = (0..n).filter(|i| i % 2 == 0).count() as u64;
    rt.block_on(async {
        for i in 0..n {
            let _ = svc.ready().await.unwrap().call(i % 2 == 0).await;
        }
    });
    let s = handle.snapshot();
    assert_eq!(s.state, CircuitState::MetricsOnly);
    assert_eq!(
        (s.calls, s.failures),
        (n, expected_failures),
        "{label}: {s:?}"
    );
}

#[test]
fn a_one_slot_count_windows_snapshots_are_possible_readings() {
    possible_readings(SlidingWindow::count(1), "count(1)", Duration::ZERO, 1);
}
