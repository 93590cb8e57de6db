//! The dashboard in a real browser: headless Chromium loads it from a
//! running server and runs its script; the rendered DOM shows a panel per
//! service with its circuit state, and every chart with a time axis, a
//! value axis and data points drawn from the server's history. A hostile
//! service name stays text. A screenshot is saved to `target/dashboard.png`.
//!
//! `.ci/run` installs Debian's `chromium` when it is missing; where it
//! cannot be installed this test says so and skips.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_hardening::SystemHardening;
use tower_hardening::config::SystemHardeningConfig;

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
}

async fn run_chromium(browser: &Path, profile: &Path, extra: &[String], url: &str) -> String {
    let mut command = tokio::process::Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("chromium finishes within a minute")
        .expect("chromium runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_a_tile_per_service_in_a_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("REQUIRE_CHROMIUM").is_none(),
            "REQUIRE_CHROMIUM is set but no Chromium was found"
        );
        eprintln!(
            "SKIPPED: no Chromium at /usr/bin/chromium (install Debian's `chromium` package; .ci/run does)"
        );
        return;
    };
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        performance_check_interval = "200ms"
        metrics_resolution = "200ms"
        [services.audio-processing.limit]
        max_concurrency = 4
        [services.model-inference]
        criticality = "critical"
        [services.model-inference.limit]
        max_concurrency = 4
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let service = |name| {
        ServiceBuilder::new()
            .layer(hardening.layer(name).unwrap())
            .service(service_fn(|_: ()| async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok::<_, std::io::Error>(())
            }))
    };
    let (audio, model) = (service("audio-processing"), service("model-inference"));
    let handle = hardening.start();
    for _ in 0..20 {
        audio.clone().oneshot(()).await.unwrap();
        model.clone().oneshot(()).await.unwrap();
    }
    handle.breaker("model-inference").unwrap().force_open();
    // A few collector intervals and performance readings of history.
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let app = Router::new().nest_service("/hardening", handle.endpoints());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{address}/hardening/dashboard");

    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let profile = target.join("chromium-profile");
    let dom = run_chromium(&browser, &profile, &["--dump-dom".to_owned()], &url).await;
    assert!(dom.contains("data-service=\"audio-processing\""), "{dom}");
    assert!(dom.contains("data-service=\"model-inference\""), "{dom}");
    let tile = |name: &str| {
        let start = dom.find(&format!("data-service=\"{name}\"")).unwrap();
        dom[start..].split('>').next().unwrap().to_owned()
    };
    assert!(
        tile("audio-processing").contains("data-circuit=\"closed\""),
        "{}",
        tile("audio-processing")
    );
    assert!(
        tile("model-inference").contains("data-circuit=\"forced_open\""),
        "{}",
        tile("model-inference")
    );
    assert!(
        dom.contains("id=\"status\" class=\"badge unhealthy\""),
        "the critical service is down: {dom}"
    );

    // Every chart is drawn from the server's history: a time axis, a
    // value axis (a state band has none), and data points.
    let page = dom.split("<script").next().unwrap();
    let charts: Vec<&str> = page
        .split("<svg class=\"chart")
        .skip(1)
        .map(|rest| rest.split("</svg>").next().unwrap())
        .collect();
    // Per service: the breaker band and three charts; the process: five.
    assert_eq!(charts.len(), 2 * 4 + 5, "{dom}");
    for chart in &charts {
        let label = chart
            .split("aria-label=\"")
            .nth(1)
            .and_then(|l| l.split('"').next())
            .unwrap_or("?");
        assert!(
            chart.contains("class=\"axis x\"") && chart.contains("</text>"),
            "{label}: no time axis: {chart}"
        );
        if !chart.starts_with(" band") {
            assert!(
                chart.contains("class=\"axis y\""),
                "{label}: no value axis: {chart}"
            );
        }
        let points: usize = chart
            .split("data-points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert!(points > 0, "{label}: no data points: {chart}");
    }
    // Real figures, not zeros: the audio requests and the process's memory.
    let highest = |label: &str| -> f64 {
        charts
            .iter()
            .find(|c| c.contains(&format!("aria-label=\"{label}\"")))
            .and_then(|c| c.split("data-max=\"").nth(1))
            .and_then(|m| m.split('"').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(highest("requests per second by outcome") > 0.0, "{dom}");
    assert!(highest("memory against its limit") > 0.0, "{dom}");

    let screenshot = target.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    run_chromium(
        &browser,
        &profile,
        &[
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,900".to_owned(),
            "--hide-scrollbars".to_owned(),
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&screenshot).expect("a screenshot was saved");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_service_name_is_text_in_the_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("REQUIRE_CHROMIUM").is_none(),
            "REQUIRE_CHROMIUM is set but no Chromium was found"
        );
        eprintln!("SKIPPED: no Chromium at /usr/bin/chromium");
        return;
    };
    // Every place a name lands: a panel's attribute and heading, a chart's
    // legend, the events list and its filter.
    let hostile = r#"x"><img src=x onerror="document.title=42">"#;
    let config = SystemHardeningConfig::from_toml_str(&format!(
        "metrics_resolution = \"200ms\"\n[services.'{hostile}']\n"
    ))
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let service = ServiceBuilder::new()
        .layer(hardening.layer(hostile).unwrap())
        .service(service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }));
    let handle = hardening.start();
    service.oneshot(()).await.unwrap();
    handle.breaker(hostile).unwrap().force_open(); // an event naming it
    tokio::time::sleep(Duration::from_millis(600)).await;

    let app = Router::new().nest_service("/hardening", handle.endpoints());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{address}/hardening/dashboard");
    let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chromium-profile-hostile");
    let dom = run_chromium(&browser, &profile, &["--dump-dom".to_owned()], &url).await;
    let page = dom.split("<script").next().unwrap();
    assert!(page.contains("forced_open"), "the page rendered: {dom}");
    assert!(
        page.contains("&lt;img src=x onerror="),
        "the name is shown as text: {page}"
    );
    assert!(!page.contains("<img"), "the name became an element: {page}");
    assert!(
        dom.contains("<title>tower-hardening dashboard</title>"),
        "a script ran: {dom}"
    );
    handle.shutdown().await;
}
