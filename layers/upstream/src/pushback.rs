//! Server pushback: an endpoint asking callers to stay away for a while
//! (HTTP 503 or 429 with `Retry-After`), or telling gRPC clients when,
//! or whether, to retry (`grpc-retry-pushback-ms`).
//!
//! ```
//! use std::time::Duration;
//! use tower_hardening_upstream::{HttpPushback, Pushback, ReadPushback};
//!
//! let response = http::Response::builder()
//!     .status(503)
//!     .header("retry-after", "2")
//!     .body(())
//!     .unwrap();
//! assert_eq!(
//!     HttpPushback.pushback(&response),
//!     Some(Pushback::RetryAfter(Duration::from_secs(2)))
//! );
//!
//! // A failed gRPC call with a negative pushback: do not retry.
//! let response = http::Response::builder()
//!     .header("grpc-status", "14")
//!     .header("grpc-retry-pushback-ms", "-1")
//!     .body(())
//!     .unwrap();
//! assert_eq!(HttpPushback.pushback(&response), Some(Pushback::DoNotRetry));
//! ```

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, StatusCode};

/// The longest pushback honoured: a `Retry-After` of a year (or of
/// 99999999999 seconds) keeps the endpoint away for five minutes, then it
/// is tried again. Outlier ejection still takes out an endpoint that keeps
/// refusing.
pub const MAX_PUSHBACK: Duration = Duration::from_secs(300);

/// What an endpoint's answer asked of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Send nothing more to this endpoint for this long (at most
    /// [`MAX_PUSHBACK`]); a retry goes to another endpoint.
    RetryAfter(Duration),
    /// Do not retry this request at all (a negative or malformed
    /// `grpc-retry-pushback-ms`).
    DoNotRetry,
}

/// Reads the pushback in an endpoint's response.
pub trait ReadPushback<Res>: Clone + Send + Sync + 'static {
    /// The pushback `response` carries, if any.
    fn pushback(&self, response: &Res) -> Option<Pushback>;
}

/// Reads no pushback: for responses that cannot carry one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPushback;

impl<Res> ReadPushback<Res> for NoPushback {
    fn pushback(&self, _: &Res) -> Option<Pushback> {
        None
    }
}

/// Reads HTTP and gRPC pushback from an `http::Response`'s head:
///
/// - `grpc-retry-pushback-ms` (a trailers-only gRPC answer carries it in
///   its head): a non-negative number of milliseconds keeps the endpoint
///   away that long; a negative or malformed value means do not retry.
///   Read only beside a failing `grpc-status` in the same head. Trailers
///   that come after a streamed body are not read.
/// - A 503 or 429 with `Retry-After`, in seconds or as an HTTP date:
///   the endpoint is kept away until then. Values beyond
///   [`MAX_PUSHBACK`] are cut to it; a value that is neither (negative,
///   garbage) is no pushback, and the answer counts as the failure it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpPushback;

impl<B> ReadPushback<http::Response<B>> for HttpPushback {
    fn pushback(&self, response: &http::Response<B>) -> Option<Pushback> {
        pushback_of(response.status(), response.headers(), SystemTime::now())
    }
}

/// The pushback in a response's status and headers, `now` being the time
/// an HTTP date is measured from.
pub fn pushback_of(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Pushback> {
    if let Some(value) = headers.get("grpc-retry-pushback-ms") {
        // Only a failed call pushes back: an OK status (or none in the
        // head) with the header is a server's mistake, not a refusal.
        let failed = headers
            .get("grpc-status")
            .is_some_and(|code| code.as_bytes() != b"0");
        return failed.then(|| grpc_pushback(value));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        let value = headers.get(http::header::RETRY_AFTER)?;
        return retry_after(value, now).map(Pushback::RetryAfter);
    }
    None
}

/// A `grpc-retry-pushback-ms` value: milliseconds to wait, or (negative,
/// malformed) do not retry, as gRPC's retry design says.
pub fn grpc_pushback(value: &HeaderValue) -> Pushback {
    let text = value.to_str().map(str::trim).unwrap_or("");
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: a number too large for u64 is still "very long".
        let millis = text.parse::<u64>().unwrap_or(u64::MAX);
        return Pushback::RetryAfter(Duration::from_millis(millis).min(MAX_PUSHBACK));
    }
    Pushback::DoNotRetry
}

/// A `Retry-After` value: delay-seconds or an HTTP date (after `now`),
/// at most [`MAX_PUSHBACK`]; `None` when it is neither, or zero.
pub fn retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let after = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: a number too large for u64 is still "very long".
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).ok()?
    };
    (!after.is_zero()).then(|| after.min(MAX_PUSHBACK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn retry_after_in_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after(&value("2"), now), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after(&value(" 7 "), now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&value(&date), now),
            Some(Duration::from_secs(30))
        );
        // A date in the past, zero: no pushback.
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&value(&past), now), None);
        assert_eq!(retry_after(&value("0"), now), None);
    }

    #[test]
    fn absurd_retry_after_values_are_cut_or_ignored() {
        let now = SystemTime::now();
        assert_eq!(retry_after(&value("99999999999"), now), Some(MAX_PUSHBACK));
        assert_eq!(
            retry_after(&value("999999999999999999999999999999"), now),
            Some(MAX_PUSHBACK)
        );
        let far = httpdate::fmt_http_date(now + Duration::from_secs(86_400 * 365));
        assert_eq!(retry_after(&value(&far), now), Some(MAX_PUSHBACK));
        for garbage in ["-5", "soon", "", "1.5", "+3", "Mon, 99 Foo 2020"] {
            assert_eq!(retry_after(&value(garbage), now), None, "{garbage:?}");
        }
    }

    #[test]
    fn only_503_and_429_carry_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, value("2"));
        let now = SystemTime::now();
        let two = Some(Pushback::RetryAfter(Duration::from_secs(2)));
        assert_eq!(
            pushback_of(StatusCode::SERVICE_UNAVAILABLE, &headers, now),
            two
        );
        assert_eq!(
            pushback_of(StatusCode::TOO_MANY_REQUESTS, &headers, now),
            two
        );
        assert_eq!(
            pushback_of(StatusCode::INTERNAL_SERVER_ERROR, &headers, now),
            None
        );
        assert_eq!(pushback_of(StatusCode::OK, &headers, now), None);
    }

    #[test]
    fn grpc_pushback_values() {
        assert_eq!(
            grpc_pushback(&value("250")),
            Pushback::RetryAfter(Duration::from_millis(250))
        );
        assert_eq!(
            grpc_pushback(&value("0")),
            Pushback::RetryAfter(Duration::ZERO)
        );
        assert_eq!(
            grpc_pushback(&value("99999999999999999999")),
            Pushback::RetryAfter(MAX_PUSHBACK)
        );
        for bad in ["-1", "-99999999999999999999999", "abc", "", "1.5"] {
            assert_eq!(grpc_pushback(&value(bad)), Pushback::DoNotRetry, "{bad:?}");
        }
        // The gRPC header wins over the HTTP status, beside a failing
        // grpc-status only.
        let mut headers = HeaderMap::new();
        headers.insert("grpc-retry-pushback-ms", value("-1"));
        assert_eq!(
            pushback_of(StatusCode::OK, &headers, SystemTime::now()),
            None
        );
        headers.insert("grpc-status", value("0"));
        assert_eq!(
            pushback_of(StatusCode::OK, &headers, SystemTime::now()),
            None
        );
        headers.insert("grpc-status", value("14"));
        assert_eq!(
            pushback_of(StatusCode::OK, &headers, SystemTime::now()),
            Some(Pushback::DoNotRetry)
        );
    }
}
