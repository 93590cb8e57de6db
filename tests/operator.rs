//! What an operator loads: `/metrics` as Prometheus' own checker reads
//! it, and the alert rules and Grafana dashboard in `deploy/` querying
//! only metrics that a running stack exports.
//!
//! `promtool` comes with Debian's `prometheus` package (`.ci/run` installs
//! it); without it the check says so and skips, unless `REQUIRE_PROMTOOL`
//! is set.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::{HardeningHandle, SystemHardening};

struct NoOp;

impl tower_hardening::ManagedService for NoOp {
    fn initialize(
        &self,
    ) -> tower_hardening::managed::BoxFuture<'_, Result<(), tower_hardening::BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A stack with every part switched on (breaker, retry, admission, a
/// recoverable service, a resource pool), served on 127.0.0.1, after a
/// few successes and failures and a performance tick.
async fn live_stack() -> (SocketAddr, HardeningHandle) {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        performance_check_interval = "100ms"
        health_check_interval = "100ms"
        metrics_resolution = "100ms"
        max_resource_memory = "1GiB"
        recoverable_services = ["model-inference"]
        [services.model-inference]
        criticality = "critical"
        [services.model-inference.breaker]
        minimum_calls = 100
        [services.model-inference.retry]
        max_attempts = 2
        initial_backoff = "1ms"
        [services.model-inference.limit]
        max_concurrency = 4
        [services.audio-processing]
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config)
        .service("model-inference", NoOp)
        .build()
        .unwrap();
    let model = hardening
        .http_layer("model-inference")
        .unwrap()
        .map_body(Body::new);
    let audio = hardening
        .http_layer("audio-processing")
        .unwrap()
        .map_body(Body::new);
    let handle = hardening.start();
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    let app = Router::new()
        .route(
            "/model",
            get(move || {
                let failing = flag.load(Ordering::SeqCst);
                async move {
                    if failing {
                        (StatusCode::INTERNAL_SERVER_ERROR, "model crashed")
                    } else {
                        (StatusCode::OK, "a cat")
                    }
                }
            })
            .layer(model),
        )
        .route("/audio", get(|| async { "transcribed" }).layer(audio))
        .nest_service("/hardening", handle.endpoints());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    for path in ["/model", "/audio", "/model"] {
        get_text(address, path).await;
    }
    failing.store(true, Ordering::SeqCst);
    get_text(address, "/model").await;
    // A performance and a health tick, and a collector tick.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    (address, handle)
}

async fn get_text(address: SocketAddr, path: &str) -> String {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(
            http::Request::get(format!("http://{address}{path}"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .expect("the server answers");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The metric families of a Prometheus text exposition, by `# TYPE` line,
/// and those with a `# HELP` line.
fn families(exposition: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut typed = BTreeSet::new();
    let mut helped = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name)) => {
                typed.insert(name.to_owned());
            }
            (Some("#"), Some("HELP"), Some(name)) => {
                helped.insert(name.to_owned());
            }
            _ => {}
        }
    }
    (typed, helped)
}

/// Every `hardening_*` name in a query, without a summary's `_sum` /
/// `_count` suffix.
fn metric_names(query: &str, into: &mut BTreeSet<String>) {
    let bytes = query.as_bytes();
    let mut i = 0;
    while let Some(found) = query[i..].find("hardening_") {
        let start = i + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            let name = &query[start..end];
            let name = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            into.insert(name.to_owned());
        }
        i = end;
    }
}

/// The `expr` of every rule in a Prometheus rules file: a one-line value,
/// or a `|` block of the lines indented below it.
fn rule_expressions(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut expressions = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(at) = line.find("expr:") else {
            continue;
        };
        if line.trim_start().starts_with('#') {
            continue;
        }
        let value = line[at + "expr:".len()..].trim();
        if value == "|" || value == ">" || value == "|-" || value == ">-" {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[index + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            expressions.push(block.join(" "));
        } else {
            expressions.push(value.to_owned());
        }
    }
    expressions
}

/// The `expr` of every target of every panel (rows' panels included).
fn grafana_expressions(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => into.push(expr.clone()),
                    _ => grafana_expressions(value, into),
                }
            }
        }
        serde_json::Value::Array(values) => {
            for value in values {
                grafana_expressions(value, into);
            }
        }
        _ => {}
    }
}

fn repository_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_has_help_text_and_promtool_accepts_it() {
    let (address, handle) = live_stack().await;
    let exposition = get_text(address, "/hardening/metrics").await;
    let (typed, helped) = families(&exposition);
    assert!(typed.len() >= 20, "only {typed:?}");
    let without: Vec<&String> = typed.difference(&helped).collect();
    assert!(without.is_empty(), "no # HELP for {without:?}");

    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(promtool) = promtool else {
        assert!(
            std::env::var_os("REQUIRE_PROMTOOL").is_none(),
            "REQUIRE_PROMTOOL is set but no promtool was found"
        );
        eprintln!("SKIPPED: no promtool (install Debian's `prometheus` package; .ci/run does)");
        handle.shutdown().await;
        return;
    };
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promtool runs");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(exposition.as_bytes()).await.unwrap();
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("promtool answers within 30 s")
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{exposition}"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_and_the_grafana_dashboard_query_only_exported_metrics() {
    let (address, handle) = live_stack().await;
    let exposition = get_text(address, "/hardening/metrics").await;
    let (exported, _) = families(&exposition);

    let rules = rule_expressions(&repository_file("deploy/prometheus/alerts.yml"));
    assert!(rules.len() >= 6, "{rules:?}");
    let mut dashboard = Vec::new();
    let grafana: serde_json::Value =
        serde_json::from_str(&repository_file("deploy/grafana/tower-hardening.json"))
            .expect("the Grafana dashboard is JSON");
    grafana_expressions(&grafana, &mut dashboard);
    assert!(dashboard.len() >= 10, "{dashboard:?}");

    for (file, expressions) in [("alerts.yml", &rules), ("tower-hardening.json", &dashboard)] {
        let mut queried = BTreeSet::new();
        for expr in expressions {
            let before = queried.len();
            metric_names(expr, &mut queried);
            assert!(queried.len() > before || !expr.is_empty(), "{file}: {expr}");
        }
        let missing: Vec<&String> = queried.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} queries {missing:?}, not in /metrics:\n{exposition}"
        );
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_history_is_the_collectors_past_interval_by_interval() {
    let (address, handle) = live_stack().await;
    let history: serde_json::Value =
        serde_json::from_str(&get_text(address, "/hardening/dashboard/history?minutes=5").await)
            .unwrap();
    assert_eq!(history["minutes"], 5);
    // 5 minutes of 100 ms intervals are 3,000: folded by 9 into at most 360
    // points of 0.9 s.
    let step = history["step_seconds"].as_f64().unwrap();
    assert!((step - 0.9).abs() < 1e-9, "{history}");
    let points = history["times"].as_array().unwrap().len();
    // About 1.3 s of history so far.
    assert!((2..=4).contains(&points), "{points} points");
    let model = history["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "model-inference")
        .unwrap();
    // The rates add up to the calls made: 2 successes and 1 failure (the
    // failing call is retried once: two failed attempts below the
    // metrics layer are one request to it).
    let calls = |outcome: &str| -> f64 {
        let values = model["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == outcome)
            .unwrap()["values"]
            .as_array()
            .unwrap();
        assert_eq!(values.len(), points);
        values.iter().map(|v| v.as_f64().unwrap() * step).sum()
    };
    assert!((calls("success") - 2.0).abs() < 1e-6, "{model}");
    assert!((calls("failure") - 1.0).abs() < 1e-6, "{model}");
    assert!(
        model["p99_ms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.is_number())
    );
    assert!(
        model["circuit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == 0.0)
    );
    let memory = history["process"]["memory_bytes"].as_array().unwrap();
    assert!(memory.iter().any(|v| v.as_f64().is_some_and(|b| b > 0.0)));
    assert!(history["process"]["memory_warning_bytes"].as_u64().unwrap() > 0);
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"].is_string())
    );
    // Only the offered windows: anything else is the default.
    let other: serde_json::Value = serde_json::from_str(
        &get_text(address, "/hardening/dashboard/history?minutes=99999").await,
    )
    .unwrap();
    assert_eq!(other["minutes"], 15);
    handle.shutdown().await;
}

#[test]
fn names_are_found_in_queries_and_rule_blocks() {
    let mut names = BTreeSet::new();
    metric_names(
        r#"sum(rate(hardening_requests_total{outcome="failure"}[5m])) / xhardening_no + hardening_request_duration_seconds_sum"#,
        &mut names,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "hardening_request_duration_seconds",
            "hardening_requests_total"
        ]
    );
    let rules = "      - alert: A\n        expr: |\n          a\n            / b\n        for: 5m\n      - alert: B\n        expr: c > 1\n";
    assert_eq!(rule_expressions(rules), ["a / b", "c > 1"]);
}
