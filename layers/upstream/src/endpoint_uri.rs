//! Sending an HTTP request to one endpoint: its scheme and authority set
//! on each attempt, so one client (hyper-util's, for one) serves every
//! endpoint.

use std::task::{Context, Poll};

use http::uri::{Authority, Scheme};
use tower_service::Service;

/// Sets each request's scheme and authority to an endpoint's, keeping its
/// path and query (after the endpoint's own base path, if it has one:
/// `http://host:7001/api` sends `/v1/models` to `/api/v1/models`), and
/// calls `inner` (a hyper-util `Client`, say).
///
/// ```
/// use tower::{ServiceExt, service_fn};
/// use tower_hardening_upstream::SetEndpoint;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let client = service_fn(|request: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(request.uri().to_string())
/// });
/// let endpoint = SetEndpoint::new("http://10.0.0.2:7001", client)?;
/// let request = http::Request::get("/v1/models?limit=2").body(())?;
/// assert_eq!(endpoint.oneshot(request).await?, "http://10.0.0.2:7001/v1/models?limit=2");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SetEndpoint<S> {
    scheme: Scheme,
    authority: Authority,
    /// The endpoint's base path without its trailing `/` (`/api` for
    /// `http://host:7001/api/`), put before each request's path; empty
    /// for none.
    base: String,
    inner: S,
}

impl<S> SetEndpoint<S> {
    /// Sends to the endpoint `uri` (`http://host:port`) through `inner`.
    pub fn new(uri: &str, inner: S) -> Result<Self, InvalidEndpoint> {
        let invalid = || InvalidEndpoint(uri.to_owned());
        let parts = uri
            .parse::<http::Uri>()
            .map_err(|_| invalid())?
            .into_parts();
        let base = parts
            .path_and_query
            .as_ref()
            .map_or("", |base| base.path().trim_end_matches('/'))
            .to_owned();
        Ok(SetEndpoint {
            scheme: parts.scheme.unwrap_or(Scheme::HTTP),
            authority: parts.authority.ok_or_else(invalid)?,
            base,
            inner,
        })
    }
}

/// An endpoint URI without an authority (`host:port`), or no URI at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEndpoint(String);

impl InvalidEndpoint {
    /// The URI as it was given.
    pub fn uri(&self) -> &str {
        &self.0
    }
}

/// Whether `uri` has a scheme and an authority (`http://10.0.0.2:7001`),
/// as [`UpstreamBuilder::require_uris`](crate::UpstreamBuilder::require_uris)
/// requires of endpoints added at run time.
pub(crate) fn check_uri(uri: &str) -> Result<(), InvalidEndpoint> {
    match uri.parse::<http::Uri>() {
        Ok(parsed) if parsed.scheme().is_some() && parsed.authority().is_some() => Ok(()),
        _ => Err(InvalidEndpoint(uri.to_owned())),
    }
}

impl std::fmt::Display for InvalidEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "endpoint {:?} is no uri with an authority, such as \"http://127.0.0.1:7001\"",
            self.0
        )
    }
}

impl std::error::Error for InvalidEndpoint {}

impl<S, B> Service<http::Request<B>> for SetEndpoint<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        // An endpoint with a base path (`http://host:7001/api`) gets it
        // before the request's path: `/v1/models` goes to `/api/v1/models`.
        if !self.base.is_empty()
            && let Some(path) = &parts.path_and_query
            && let Ok(joined) = format!("{}{}", self.base, path).parse()
        {
            parts.path_and_query = Some(joined);
        }
        // Scheme, authority and path are all set: the parts make a URI.
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        self.inner.call(request)
    }
}
