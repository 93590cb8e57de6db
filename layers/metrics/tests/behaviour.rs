//! The metrics layer and collector, with the numbers from the issue.

use std::collections::HashMap;
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening_breaker::CircuitBreakerLayer;
use tower_hardening_metrics::{MetricsCollector, MetricsLayer};

#[derive(Debug)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

async fn settle() {
    // Lets the collector's ticker see a clock advance.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

// 1.
#[tokio::test(start_paused = true)]
async fn a_thousand_calls_are_counted_by_outcome_and_in_flight_returns_to_zero() {
    let collector = MetricsCollector::builder().build().unwrap();
    let metrics =
        metrics::with_local_recorder(&collector, || MetricsLayer::new("audio-processing"));
    let breaker = CircuitBreakerLayer::builder()
        .name("audio")
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    // Requests are (fail, panic, hang): the inner service obeys.
    let mut svc = metrics.layer(breaker.layer(service_fn(
        |(fail, panic, hang): (bool, bool, bool)| async move {
            if panic {
                panic!("handler panicked");
            }
            if hang {
                std::future::pending::<()>().await;
            }
            if fail { Err(Boom) } else { Ok(()) }
        },
    )));
    breaker_handle.metrics_only(); // never opens on its own in this test
    for i in 0..900 {
        let fail = i % 9 < 2; // 200 of 900
        let _ = svc.ready().await.unwrap().call((fail, false, false)).await;
    }
    breaker_handle.force_open();
    for _ in 0..100 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call((false, false, false))
            .await
            .unwrap_err();
        assert!(err.is::<tower_hardening_breaker::CircuitOpen>());
    }
    breaker_handle.reset();
    // Cancelled and panicked calls leave the in-flight gauge too.
    for _ in 0..5 {
        let call = svc.ready().await.unwrap().call((false, false, true));
        assert!(
            tokio::time::timeout(Duration::from_millis(1), call)
                .await
                .is_err()
        );
    }
    for _ in 0..3 {
        let call = svc.ready().await.unwrap().call((false, true, false));
        assert!(tokio::spawn(call).await.unwrap_err().is_panic());
    }

    let total = |outcome: &str| {
        collector
            .query("hardening_requests_total")
            .label("service", "audio-processing")
            .label("outcome", outcome)
            .sum()
    };
    assert_eq!(total("success"), 700.0);
    assert_eq!(
        total("failure"),
        200.0 + 3.0,
        "the three panics count as failures"
    );
    assert_eq!(total("rejected"), 100.0);
    let durations = collector
        .query("hardening_request_duration_seconds")
        .label("service", "audio-processing");
    assert_eq!(durations.count(), 1_003);
    assert!(
        collector
            .render_prometheus()
            .contains("hardening_requests_in_flight{service=\"audio-processing\"} 0\n"),
        "back to zero"
    );
}

// 2.
#[tokio::test(start_paused = true)]
async fn retention_and_windows_bound_what_queries_see() {
    let collector = MetricsCollector::builder()
        .retention(Duration::from_secs(300))
        .resolution(Duration::from_secs(10))
        .build()
        .unwrap();
    let counter = metrics::with_local_recorder(&collector, || metrics::counter!("jobs_total"));
    settle().await;
    // One increment every 10 s for 400 s.
    for _ in 0..40 {
        counter.increment(1);
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
    }
    let q = |window: Duration| collector.query("jobs_total").window(window).sum();
    assert_eq!(
        q(Duration::from_secs(60)),
        5.0,
        "a 60 s window sees the last 60 s only"
    );
    assert_eq!(
        collector.query("jobs_total").sum(),
        29.0,
        "the default window is the 300 s retention (the current, empty bucket and 29 before it)"
    );
    assert_eq!(
        q(Duration::from_secs(3_600)),
        29.0,
        "nothing older than the retention"
    );
    assert!(
        (collector
            .query("jobs_total")
            .window(Duration::from_secs(60))
            .rate_per_sec()
            - 5.0 / 60.0)
            .abs()
            < 1e-9
    );
    // After a quiet retention period, everything is gone.
    tokio::time::advance(Duration::from_secs(301)).await;
    settle().await;
    assert_eq!(collector.query("jobs_total").count(), 0);
}

#[tokio::test(start_paused = true)]
async fn gauges_are_sampled_once_per_interval() {
    let collector = MetricsCollector::builder()
        .retention(Duration::from_secs(300))
        .resolution(Duration::from_secs(10))
        .build()
        .unwrap();
    let queue = metrics::with_local_recorder(&collector, || metrics::gauge!("queue_depth"));
    settle().await;
    for depth in [4.0, 8.0, 2.0] {
        queue.set(depth);
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
    }
    queue.increment(1.0);
    let q = collector
        .query("queue_depth")
        .window(Duration::from_secs(30));
    assert_eq!(q.count(), 3, "one sample per interval");
    assert_eq!(q.mean(), Some((4.0 + 8.0 + 2.0) / 3.0));
    assert_eq!(q.max(), Some(8.0));
    assert!(
        collector.render_prometheus().contains("queue_depth 3\n"),
        "the value now"
    );
}

// 3.
#[tokio::test(start_paused = true)]
async fn quantiles_of_a_uniform_distribution_are_within_one_percent() {
    let collector = MetricsCollector::builder().build().unwrap();
    let histogram =
        metrics::with_local_recorder(&collector, || metrics::histogram!("latency_seconds"));
    // 10,000 samples spread evenly over [0.001, 10] seconds, shuffled.
    let mut samples: Vec<f64> = (1..=10_000).map(|i| f64::from(i) / 1_000.0).collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..samples.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        samples.swap(i, (state % (i as u64 + 1)) as usize);
    }
    for sample in &samples {
        histogram.record(*sample);
    }
    let q = collector.query("latency_seconds");
    for (quantile, exact) in [(0.5, 5.0), (0.99, 9.9)] {
        let estimate = q.quantile(quantile).unwrap();
        let error = (estimate - exact).abs() / exact;
        assert!(
            error < 0.01,
            "p{}: {estimate} vs {exact} ({:.3}% off)",
            quantile * 100.0,
            error * 100.0
        );
    }
    assert_eq!(q.count(), 10_000);
    assert_eq!(q.max(), Some(10.0));
}

// 4.
#[tokio::test(start_paused = true)]
async fn memory_stays_within_the_stated_bound() {
    let collector = MetricsCollector::builder()
        .retention(Duration::from_secs(3600))
        .resolution(Duration::from_secs(10))
        .max_series(1_000)
        .build()
        .unwrap();
    let bound = collector.memory_bound_bytes();
    let histogram = metrics::with_local_recorder(&collector, || metrics::histogram!("big_seconds"));
    for i in 0..1_000u32 {
        histogram.record(f64::from(i % 1_000 + 1) / 1_000.0);
    }
    let after_thousand = collector.memory_bytes();
    for i in 0..1_000_000u32 {
        histogram.record(f64::from(i % 1_000 + 1) / 1_000.0);
    }
    let after_million = collector.memory_bytes();
    assert_eq!(
        after_million, after_thousand,
        "a sketch does not grow with its sample count"
    );

    metrics::with_local_recorder(&collector, || {
        for i in 0..10_000 {
            metrics::counter!("per_tenant_total", "tenant" => i.to_string()).increment(1);
        }
    });
    assert_eq!(collector.series().len(), 1_000, "capped at max_series");
    assert_eq!(collector.dropped_series(), 10_000 - 999);
    let used = collector.memory_bytes();
    assert!(used <= bound, "{used} bytes used, bound {bound}");
    eprintln!(
        "memory: {after_million} bytes after 1M samples in one series, {used} bytes with 1,000 series; bound {bound}"
    );
}

// 4b. Issue #12: the worst case with the default settings is under
// 64 MiB. A few series are driven to their worst (every interval of two
// retention periods, every sketch full across a huge range) and measured;
// the bound is what 1,000 of them take.
#[tokio::test(start_paused = true)]
async fn worst_case_memory_with_the_defaults_is_under_64_mib() {
    let defaults = MetricsCollector::builder().build().unwrap();
    let bound = defaults.memory_bound_bytes();
    assert!(bound < 64 << 20, "bound {bound} bytes");

    let series = 3;
    let collector = MetricsCollector::builder()
        .max_series(series)
        .build()
        .unwrap();
    let histograms: Vec<_> = metrics::with_local_recorder(&collector, || {
        (0..series)
            .map(|i| metrics::histogram!("worst_seconds", "i" => i.to_string()))
            .collect()
    });
    // 600 magnitudes from 1e-9 to 1e9: more than any sketch may hold.
    let values: Vec<f64> = (0..600)
        .map(|i| 1e-9 * 10f64.powf(f64::from(i) * 0.03))
        .collect();
    let mut peak = 0;
    for _interval in 0..720 {
        for histogram in &histograms {
            for v in &values {
                histogram.record(*v);
            }
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        let used = collector.memory_bytes();
        peak = peak.max(used);
    }
    let per_series_bound = bound / 1_000;
    assert!(
        peak <= series * per_series_bound,
        "{peak} bytes for {series} series, bound {per_series_bound} each"
    );
    eprintln!(
        "worst case: {} bytes per series measured, {per_series_bound} bound; 1,000 series: {:.1} MiB bound",
        peak / series,
        bound as f64 / f64::from(1 << 20)
    );
}

// 4d. A short window sees only its own intervals, not the older part of
// a coarser sketch group.
#[tokio::test(start_paused = true)]
async fn a_one_minute_window_forgets_a_spike_just_before_it() {
    let collector = MetricsCollector::builder().build().unwrap();
    let histogram =
        metrics::with_local_recorder(&collector, || metrics::histogram!("spike_seconds"));
    // Intervals 0-14: everything at 0.9 s. Intervals 15-19 (the last
    // minute): 0.01 to 1.00 s, evenly.
    for interval in 0..20 {
        for k in 0..100 {
            let value = if interval < 15 {
                0.9
            } else {
                0.01 * f64::from(k + 1)
            };
            histogram.record(value);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
    }
    let q = collector
        .query("spike_seconds")
        .window(Duration::from_secs(60));
    assert_eq!(q.count(), 500);
    let p50 = q.quantile(0.5).unwrap();
    assert!(
        (p50 - 0.5).abs() <= 0.01,
        "p50 {p50}: only the last minute counts"
    );
}

// 4c. Quantiles stay within 1% over windows that reach into older
// (coarser) sketch tiers, when the distribution is the same throughout.
#[tokio::test(start_paused = true)]
async fn quantiles_over_long_windows_are_within_one_percent() {
    let collector = MetricsCollector::builder().build().unwrap();
    let histogram =
        metrics::with_local_recorder(&collector, || metrics::histogram!("long_seconds"));
    let mut all = Vec::new();
    for interval in 0..300u32 {
        for i in 0..200u32 {
            let v = 0.001 * f64::from((i * 7919 + interval * 31) % 5_000 + 1);
            histogram.record(v);
            all.push(v);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
    }
    all.sort_by(f64::total_cmp);
    for minutes in [1u64, 5, 20, 49] {
        let q = collector
            .query("long_seconds")
            .window(Duration::from_secs(minutes * 60));
        for p in [0.5, 0.9, 0.99] {
            let estimate = q.quantile(p).unwrap();
            let exact = all[(p * (all.len() - 1) as f64) as usize];
            let error = (estimate - exact).abs() / exact;
            assert!(error < 0.015, "{minutes} min p{p}: {estimate} vs {exact}");
        }
    }
    assert_eq!(collector.query("long_seconds").count(), 60_000);
}

// 5.
#[tokio::test(start_paused = true)]
async fn prometheus_text_parses_and_carries_the_request_metrics() {
    let collector = MetricsCollector::builder().build().unwrap();
    let layer =
        metrics::with_local_recorder(&collector, || MetricsLayer::new("model \"inference\""));
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        if fail { Err(Boom) } else { Ok(()) }
    }));
    for i in 0..30 {
        let _ = svc.ready().await.unwrap().call(i % 3 == 0).await;
    }
    let text = collector.render_prometheus();
    let samples = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let service = r#"service="model \"inference\"""#;
    assert_eq!(
        samples[&format!("hardening_requests_total{{outcome=\"success\",{service}}}")],
        20.0
    );
    assert_eq!(
        samples[&format!("hardening_requests_total{{outcome=\"failure\",{service}}}")],
        10.0
    );
    assert_eq!(
        samples
            [&format!("hardening_request_duration_seconds_count{{outcome=\"success\",{service}}}")],
        20.0
    );
    assert!(samples.contains_key(&format!(
        "hardening_request_duration_seconds{{outcome=\"success\",{service},quantile=\"0.99\"}}"
    )));
    assert_eq!(
        samples[&format!("hardening_requests_in_flight{{{service}}}")],
        0.0
    );
    assert!(text.contains("# TYPE hardening_requests_total counter"));
    assert!(text.contains("# TYPE hardening_request_duration_seconds summary"));
    assert!(text.contains("# HELP hardening_requests_in_flight "));
}

/// A small parser of the Prometheus text format: comment lines must be
/// HELP or TYPE with a known type; sample lines are `name{labels} value`
/// with a valid metric name, well-formed quoted and escaped label values,
/// and a float value. Returns `name{labels}` (labels sorted) -> value.
fn parse_prometheus(text: &str) -> Result<HashMap<String, f64>, String> {
    let valid_name = |name: &str| {
        !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut samples = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), Some(_)) if valid_name(name) => {}
                (
                    Some("TYPE"),
                    Some(name),
                    Some("counter" | "gauge" | "summary" | "histogram" | "untyped"),
                ) if valid_name(name) => {}
                _ => return Err(format!("line {n}: bad comment {line:?}")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("line {n}: no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| format!("line {n}: bad value {v:?}"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("line {n}: unclosed labels"))?;
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if !valid_name(&key) || chars.next() != Some('"') {
                        return Err(format!("line {n}: bad label in {body:?}"));
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                _ => return Err(format!("line {n}: bad escape")),
                            },
                            Some('"') => break,
                            Some(c) => value.push(c),
                            None => return Err(format!("line {n}: unterminated label value")),
                        }
                    }
                    labels.push(format!("{key}=\"{}\"", value.replace('"', "\\\"")));
                    match chars.next() {
                        Some(',') | None => {}
                        Some(c) => return Err(format!("line {n}: unexpected {c:?} after a label")),
                    }
                }
                labels.sort_by_key(|l| if l.starts_with("quantile=") { 1 } else { 0 });
                let quantile: Vec<_> = labels
                    .iter()
                    .filter(|l| l.starts_with("quantile="))
                    .cloned()
                    .collect();
                let mut rest: Vec<_> = labels
                    .into_iter()
                    .filter(|l| !l.starts_with("quantile="))
                    .collect();
                rest.sort();
                rest.extend(quantile);
                (name, rest)
            }
        };
        if !valid_name(name) {
            return Err(format!("line {n}: bad metric name {name:?}"));
        }
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{}}}", labels.join(","))
        };
        samples.insert(key, value);
    }
    Ok(samples)
}

#[test]
fn bad_settings_are_refused_with_the_field() {
    let err = MetricsCollector::builder()
        .max_series(0)
        .build_with_ticker()
        .err()
        .unwrap();
    assert_eq!(err.field(), "max_series");
    let err = MetricsCollector::builder()
        .retention(Duration::from_secs(1))
        .resolution(Duration::from_secs(10))
        .build_with_ticker()
        .err()
        .unwrap();
    assert_eq!(err.field(), "retention");
    let err = MetricsCollector::builder().build().err().unwrap();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test]
async fn fanout_keeps_a_prometheus_recorder_working_alongside() {
    let collector = MetricsCollector::builder().build().unwrap();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus_handle = prometheus.handle();
    let both = collector.fanout_with(prometheus);
    metrics::with_local_recorder(&both, || {
        metrics::counter!("hardening_requests_total", "service" => "a", "outcome" => "success")
            .increment(3);
    });
    assert_eq!(collector.query("hardening_requests_total").sum(), 3.0);
    assert!(
        prometheus_handle
            .render()
            .contains("hardening_requests_total{service=\"a\",outcome=\"success\"} 3")
    );
}

/// Under a `catch_unwind` above the layer (tower-http's `CatchPanic`), the
/// future is dropped after the unwind ended: the panic must still count as
/// a failure, once, and leave the in-flight gauge.
#[tokio::test(start_paused = true)]
async fn panics_under_catch_unwind_count_as_failures() {
    use futures_util::FutureExt;
    use std::panic::AssertUnwindSafe;

    let collector = MetricsCollector::builder().build().unwrap();
    let layer = metrics::with_local_recorder(&collector, || {
        MetricsLayer::builder().name("panicky").build().unwrap()
    });
    let mut svc = layer.layer(service_fn(|_: ()| async {
        panic!("handler panicked");
        #[allow(unreachable_code)]
        Ok::<(), Boom>(())
    }));
    let mut held = Vec::new();
    for _ in 0..4 {
        let call = svc.ready().await.unwrap().call(());
        let mut caught = Box::pin(AssertUnwindSafe(call).catch_unwind());
        assert!(caught.as_mut().await.is_err());
        held.push(caught); // still alive, as under CatchPanic
    }
    let total = |outcome: &str| {
        collector
            .query("hardening_requests_total")
            .label("service", "panicky")
            .label("outcome", outcome)
            .sum()
    };
    assert_eq!(total("failure"), 4.0);
    assert!(
        collector
            .render_prometheus()
            .contains("hardening_requests_in_flight{service=\"panicky\"} 0\n")
    );
    drop(held);
    assert_eq!(
        total("failure"),
        4.0,
        "dropping them later counts nothing more"
    );
    assert_eq!(total("success"), 0.0);
}

/// A gRPC stream whose trailers say UNAVAILABLE is a failure, counted when
/// its body ends; in flight until then.
#[tokio::test(start_paused = true)]
async fn grpc_trailers_are_counted_at_end_of_stream() {
    use http_body_util::{BodyExt, StreamBody};
    use tower_hardening_core::GrpcErrors;

    let collector = MetricsCollector::builder().build().unwrap();
    let layer = metrics::with_local_recorder(&collector, || {
        MetricsLayer::new("streams")
            .classifier(GrpcErrors::default())
            .at_end_of_stream()
    });
    let mut svc = layer.layer(service_fn(|status: &'static str| async move {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static(status));
        let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::io::Error>> = vec![
            Ok(http_body::Frame::data(bytes::Bytes::from_static(b"chunk"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        Ok::<_, std::io::Error>(http::Response::new(StreamBody::new(
            futures_util::stream::iter(frames),
        )))
    }));
    let total = |outcome: &str| {
        collector
            .query("hardening_requests_total")
            .label("service", "streams")
            .label("outcome", outcome)
            .sum()
    };
    let response = svc.ready().await.unwrap().call("14").await.unwrap();
    assert_eq!(
        total("failure") + total("success"),
        0.0,
        "not counted at the head"
    );
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(total("failure"), 1.0);
    let response = svc.ready().await.unwrap().call("0").await.unwrap();
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(total("success"), 1.0);
}

// Issue #12: recording from many threads into one series' stripes loses
// nothing, and a read sees every sample recorded before it.
#[test]
fn many_threads_record_into_one_series_exactly() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let collector = runtime.block_on(async { MetricsCollector::builder().build().unwrap() });
    let (counter, histogram, gauge) = metrics::with_local_recorder(&collector, || {
        (
            metrics::counter!("calls_total"),
            metrics::histogram!("call_seconds"),
            metrics::gauge!("in_flight"),
        )
    });
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (counter, histogram, gauge) = (&counter, &histogram, &gauge);
            s.spawn(move || {
                for i in 0..50_000u32 {
                    gauge.increment(1.0);
                    counter.increment(1);
                    histogram.record(f64::from(t * 50_000 + i + 1));
                    gauge.decrement(1.0);
                }
            });
        }
    });
    assert_eq!(collector.query("calls_total").count(), 200_000);
    assert_eq!(collector.query("calls_total").sum(), 200_000.0);
    let q = collector.query("call_seconds");
    assert_eq!(q.count(), 200_000);
    assert_eq!(q.sum(), (1..=200_000u64).sum::<u64>() as f64);
    assert_eq!((q.min(), q.max()), (Some(1.0), Some(200_000.0)));
    let p50 = q.quantile(0.5).unwrap();
    assert!((p50 - 100_000.0).abs() <= 1_000.0, "p50 {p50}");
    assert!(
        collector.render_prometheus().contains("in_flight 0\n"),
        "every increment undone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fallbacks_answer_counts_as_fallback_only_when_counted() {
    use tower_hardening_core::fallback;

    let collector = MetricsCollector::builder().build().unwrap();
    let count = |outcome: &str| {
        collector
            .query("hardening_requests_total")
            .label("service", "prices")
            .label("outcome", outcome)
            .sum()
    };
    // An inner service whose answer a fallback marked (what
    // `FallbackLayer` does), and one whose answer is its own.
    let inner = service_fn(|fell_back: bool| async move {
        tokio::task::yield_now().await;
        if fell_back {
            fallback::mark_answered();
        }
        Ok::<_, Boom>(())
    });
    let counting = metrics::with_local_recorder(&collector, || {
        MetricsLayer::new("prices").counting_fallbacks()
    });
    let mut svc = counting.layer(inner);
    for fell_back in [true, false, true] {
        svc.ready().await.unwrap().call(fell_back).await.unwrap();
    }
    assert_eq!((count("fallback"), count("success")), (2.0, 1.0));

    // Not counting: a fallback's answer is a success like any other, and
    // a mark left by a fallback nobody watched leaks into nothing.
    let plain = metrics::with_local_recorder(&collector, || MetricsLayer::new("prices"));
    let mut svc = plain.layer(inner);
    svc.ready().await.unwrap().call(true).await.unwrap();
    assert_eq!((count("fallback"), count("success")), (2.0, 2.0));
    let mut svc = counting.layer(inner);
    svc.ready().await.unwrap().call(false).await.unwrap();
    assert_eq!((count("fallback"), count("success")), (2.0, 3.0));
}
