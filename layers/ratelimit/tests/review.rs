//! Hostile review: who chooses a request's key, and what a spraying
//! client costs the others.

use std::convert::Infallible;
use std::net::SocketAddr;

use tower::{Layer, ServiceExt, service_fn};
use tower_hardening_core::BoxError;
use tower_hardening_ratelimit::{KeyMode, Rate, RateLimitLayer, RateLimited};

fn limiter(trusted: &[&str]) -> RateLimitLayer {
    RateLimitLayer::builder("api")
        .rate(Rate::per_hour(1))
        .burst(1)
        .key(KeyMode::PeerIp)
        .trusted_proxies(trusted.iter().map(|net| net.parse().unwrap()))
        .build()
        .unwrap()
}

/// Whether one GET from `peer` with these `X-Forwarded-For` bytes is
/// served (`false`: rate limited).
async fn served(layer: &RateLimitLayer, peer: &str, forwarded: Option<&[u8]>) -> bool {
    let service = layer.layer(service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(())
    }));
    let mut request = http::Request::new(());
    request
        .extensions_mut()
        .insert(SocketAddr::new(peer.parse().unwrap(), 40_000));
    if let Some(forwarded) = forwarded {
        request.headers_mut().insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(forwarded).unwrap(),
        );
    }
    match service.oneshot(request).await {
        Ok(()) => true,
        Err(error) => {
            let error: BoxError = error;
            assert!(error.is::<RateLimited>(), "{error}");
            false
        }
    }
}

/// A proxy that writes the client's port (Azure's Application Gateway,
/// some ingress controllers: `203.0.113.1:51234`, `[2001:db8::1]:443`)
/// must not make every client behind it one key.
#[tokio::test]
async fn forwarded_entries_with_a_port_are_the_client_not_the_proxy() {
    let layer = limiter(&["10.0.0.0/8"]);
    assert!(served(&layer, "10.0.0.1", Some(b"198.51.100.1:51234")).await);
    assert!(
        served(&layer, "10.0.0.1", Some(b"198.51.100.2:51235")).await,
        "a second client behind the proxy was counted against the first's key"
    );
    assert!(served(&layer, "10.0.0.1", Some(b"[2001:db8::1]:443")).await);
    assert!(!served(&layer, "10.0.0.1", Some(b"198.51.100.1:60000")).await);
}

/// A byte that is no visible ASCII in the part of the header the client
/// wrote (`obs-text`, which HTTP allows) must not move the client out of
/// its own key into the proxy's: the proxy's appended entry is still the
/// client.
#[tokio::test]
async fn a_client_byte_in_forwarded_for_does_not_escape_its_key() {
    let layer = limiter(&["10.0.0.0/8"]);
    assert!(served(&layer, "10.0.0.1", Some(b"198.51.100.7")).await);
    // The same client, its header prefixed with a byte of its choosing.
    assert!(
        !served(&layer, "10.0.0.1", Some(b"caf\xe9, 198.51.100.7")).await,
        "the client escaped its own quota with a non-ASCII byte"
    );
}

/// Trusting every address (`0.0.0.0/0`, `::/0`) is believing every
/// client's own `X-Forwarded-For`: the client chooses its key. The builder
/// must refuse it, naming the field.
#[test]
fn trusting_every_address_is_refused() {
    for everyone in ["0.0.0.0/0", "::/0"] {
        let built = RateLimitLayer::builder("api")
            .rate(Rate::per_hour(1))
            .key(KeyMode::PeerIp)
            .trusted_proxies([everyone.parse().unwrap()])
            .build();
        let err = built.expect_err(everyone);
        assert_eq!(err.field(), "trusted_proxies", "{err}");
    }
}

/// A client sending a new key with every request fills the store, then
/// spends the one overflow bucket every new client shares: a legitimate
/// client arriving then is refused on its first request.
#[tokio::test]
#[ignore = "reproduces: a sprayer refilling the store within the once-a-second sweep (max_keys 100, a fast 100/s quota; the docs say only slow quotas) makes a new client's first request share and lose the overflow bucket"]
async fn a_new_client_is_served_while_another_sprays_keys() {
    let layer = RateLimitLayer::builder("api")
        .rate(Rate::per_second(100))
        .burst(5)
        .key(KeyMode::Header(http::HeaderName::from_static("x-api-key")))
        .max_keys(100)
        .build()
        .unwrap();
    let service = layer.layer(service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(())
    }));
    let call = |key: String| {
        let service = service.clone();
        async move {
            let mut request = http::Request::new(());
            request
                .headers_mut()
                .insert("x-api-key", key.parse().unwrap());
            service.oneshot(request).await.is_ok()
        }
    };
    for n in 0..1_000 {
        call(format!("spray-{n}")).await;
    }
    assert!(
        call("legitimate".to_owned()).await,
        "a client's first request was refused"
    );
}
