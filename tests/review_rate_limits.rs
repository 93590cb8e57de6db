//! Hostile review of rate limits and fallbacks through the facade: the
//! fallback mark, the settings `validate` must refuse, and the counts.

use tower::{Layer, Service, ServiceExt, service_fn};
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::names;
use tower_hardening::recovery::{Cause, FallbackLayer};
use tower_hardening::{BoxError, HardeningHandle, SystemHardening};

fn outcomes(handle: &HardeningHandle, service: &str, outcome: &str) -> f64 {
    handle
        .metrics()
        .query(names::REQUESTS_TOTAL)
        .label(names::LABEL_SERVICE, service)
        .label(names::LABEL_OUTCOME, outcome)
        .sum()
}

/// A handler that calls a dependency through a fallback of its own (a
/// `FallbackLayer` alone) and then answers from its own work: the outer
/// stack's answer is no fallback's, and must be counted `success`.
#[tokio::test(start_paused = true)]
async fn a_fallback_inside_a_handler_does_not_mark_the_handlers_answer() {
    let config = SystemHardeningConfig::from_toml_str("[services.outer]").unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let handle = hardening.handle();
    let handler = service_fn(|x: u32| async move {
        // The dependency is down; its own fallback answers at once.
        let dependency = FallbackLayer::new(|_: Cause| 0u32).layer(service_fn(|_: u32| async {
            Err::<u32, BoxError>("dependency down".into())
        }));
        let cached = dependency.oneshot(x).await?;
        Ok::<u32, BoxError>(x + cached)
    });
    let mut outer = hardening
        .layer("outer")
        .unwrap()
        .fallback(|_: Cause| u32::MAX)
        .layer(handler);
    assert_eq!(outer.ready().await.unwrap().call(7).await.unwrap(), 7);
    assert_eq!(
        outcomes(&handle, "outer", "fallback"),
        0.0,
        "the handler's own answer was counted as the outer fallback's"
    );
    assert_eq!(outcomes(&handle, "outer", "success"), 1.0);
    assert_eq!(
        hardening.layer("outer").unwrap().fallback_stats().answered,
        0
    );
}

/// A rate-limited request answered by the fallback is one `fallback`,
/// never also `rejected`.
#[tokio::test(start_paused = true)]
async fn a_rate_limited_request_answered_by_the_fallback_counts_once() {
    let config = SystemHardeningConfig::from_toml_str(
        r#"
        [services.api.rate_limit]
        rate = "1/h"
        [services.api.fallback]
        on = ["rate_limited"]
        "#,
    )
    .unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let handle = hardening.handle();
    let mut api = hardening
        .layer("api")
        .unwrap()
        .fallback(|_: Cause| 0u32)
        .layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
    assert_eq!(api.ready().await.unwrap().call(5).await.unwrap(), 5);
    assert_eq!(api.ready().await.unwrap().call(6).await.unwrap(), 0);
    assert_eq!(outcomes(&handle, "api", "success"), 1.0);
    assert_eq!(outcomes(&handle, "api", "fallback"), 1.0);
    assert_eq!(outcomes(&handle, "api", "rejected"), 0.0);
    assert_eq!(
        handle.breaker("api").unwrap().snapshot().failures,
        0,
        "a refusal is no breaker failure"
    );
}

/// `validate` (at load) refuses trusting every address, naming the field.
#[test]
fn trusting_every_address_is_refused_at_load() {
    for everyone in ["0.0.0.0/0", "::/0"] {
        let err = SystemHardeningConfig::from_toml_str(&format!(
            r#"
            [services.api.rate_limit]
            rate = "100/s"
            key = "peer-ip"
            trusted_proxies = ["10.0.0.0/8", "{everyone}"]
            "#
        ))
        .unwrap_err();
        assert_eq!(
            err.field(),
            "services.api.rate_limit.trusted_proxies",
            "{err}"
        );
        assert!(err.to_string().contains(everyone), "{err}");
    }
}

/// `validate` names the per-priority fields as they are written, for
/// what the parser refuses and for what only `build` refuses (a burst
/// the rate takes more than ten years to refill).
#[test]
fn per_priority_settings_are_refused_by_their_own_names() {
    let cases = [
        ("low", r#"rate = "0/s""#, "rate"),
        (
            "high",
            r#"rate = "1/h"
            burst = 4294967295"#,
            "burst",
        ),
        (
            "critical",
            r#"rate = "10/s"
            burst = 0"#,
            "burst",
        ),
    ];
    for (priority, section, field) in cases {
        let err = SystemHardeningConfig::from_toml_str(&format!(
            r#"
            [services.api.rate_limit]
            rate = "100/s"
            [services.api.rate_limit.priorities.{priority}]
            {section}
            "#
        ))
        .unwrap_err();
        assert_eq!(
            err.field(),
            format!("services.api.rate_limit.priorities.{priority}.{field}"),
            "{err}"
        );
    }
    for (rate, burst) in [
        ("1e9/s", "1"),
        ("100/ms", "1"),
        ("1/d", "1"),
        ("1/h", "4294967295"),
    ] {
        let err = SystemHardeningConfig::from_toml_str(&format!(
            r#"
            [services.api.rate_limit]
            rate = "{rate}"
            burst = {burst}
            "#
        ))
        .unwrap_err();
        assert!(err.field().starts_with("services.api.rate_limit."), "{err}");
    }
}
