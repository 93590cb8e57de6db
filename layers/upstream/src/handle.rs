//! The upstream's handle: its endpoints' state, and changing them at run
//! time.

use std::fmt;
use std::sync::Arc;

use tower::discover::{Change, Discover};

use crate::endpoint_uri::{InvalidEndpoint, check_uri};
use crate::shared::Shared;
use crate::snapshot::EndpointSnapshot;

/// Reads and changes an upstream's endpoints; cheap to clone.
///
/// A change never fails a request in flight: an attempt holds the
/// endpoint it was sent to until it ends, and a removed endpoint is only
/// no longer chosen.
pub struct UpstreamHandle<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S> Clone for UpstreamHandle<S> {
    fn clone(&self) -> Self {
        UpstreamHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for UpstreamHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

/// [`UpstreamHandle::set_endpoints`] or [`insert`](UpstreamHandle::insert)
/// was given URIs, and the upstream was built without a function that
/// makes an endpoint's service from its URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoEndpointMaker;

impl fmt::Display for NoEndpointMaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this upstream has no function to make an endpoint from a uri; insert services instead",
        )
    }
}

impl std::error::Error for NoEndpointMaker {}

/// Why [`UpstreamHandle::set_endpoints`] or
/// [`insert`](UpstreamHandle::insert) changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointChangeError {
    /// The upstream has no function to make an endpoint from a URI.
    NoEndpointMaker(NoEndpointMaker),
    /// A URI with no scheme or authority, in an upstream built with
    /// [`require_uris`](crate::UpstreamBuilder::require_uris).
    Invalid(InvalidEndpoint),
}

impl fmt::Display for EndpointChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointChangeError::NoEndpointMaker(err) => err.fmt(f),
            EndpointChangeError::Invalid(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for EndpointChangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EndpointChangeError::NoEndpointMaker(err) => Some(err),
            EndpointChangeError::Invalid(err) => Some(err),
        }
    }
}

impl From<NoEndpointMaker> for EndpointChangeError {
    fn from(err: NoEndpointMaker) -> Self {
        EndpointChangeError::NoEndpointMaker(err)
    }
}

impl From<InvalidEndpoint> for EndpointChangeError {
    fn from(err: InvalidEndpoint) -> Self {
        EndpointChangeError::Invalid(err)
    }
}

impl<S> UpstreamHandle<S> {
    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Each endpoint's state, figures and latency.
    pub fn endpoints(&self) -> Vec<EndpointSnapshot> {
        self.shared.snapshot()
    }

    /// Whether every endpoint is out of rotation (ejected or pushing
    /// back), or there is none.
    pub fn all_out(&self) -> bool {
        self.shared.all_out()
    }

    /// Replaces the endpoints by `uris`, each made by the upstream's
    /// endpoint function. One already there keeps its service and record.
    /// With one URI refused (see
    /// [`require_uris`](crate::UpstreamBuilder::require_uris)), nothing
    /// changes.
    pub fn set_endpoints<U: Into<Arc<str>>>(
        &self,
        uris: impl IntoIterator<Item = U>,
    ) -> Result<(), EndpointChangeError> {
        let make = self.shared.make.as_ref().ok_or(NoEndpointMaker)?;
        let uris: Vec<Arc<str>> = uris.into_iter().map(Into::into).collect();
        if self.shared.require_uris {
            for uri in &uris {
                check_uri(uri)?;
            }
        }
        let endpoints = uris
            .into_iter()
            .map(|uri| {
                let service = make(&uri);
                (uri, service)
            })
            .collect();
        self.shared.set(endpoints);
        Ok(())
    }

    /// Adds the endpoint `uri`, made by the upstream's endpoint function
    /// (replacing one with the same URI, whose record starts afresh).
    pub fn insert(&self, uri: impl Into<Arc<str>>) -> Result<(), EndpointChangeError> {
        let make = self.shared.make.as_ref().ok_or(NoEndpointMaker)?;
        let uri: Arc<str> = uri.into();
        if self.shared.require_uris {
            check_uri(&uri)?;
        }
        let service = make(&uri);
        self.shared.insert(uri, service);
        Ok(())
    }

    /// Adds the endpoint `uri` with its service.
    pub fn insert_service(&self, uri: impl Into<Arc<str>>, service: S) {
        self.shared.insert(uri.into(), service);
    }

    /// Removes the endpoint `uri`; whether it was there. Attempts in
    /// flight to it finish.
    pub fn remove(&self, uri: &str) -> bool {
        self.shared.remove(uri)
    }

    /// Follows a tower [`Discover`] stream: each `Insert` adds (or
    /// replaces) an endpoint named by its key, each `Remove` removes one.
    /// The future ends when the stream ends (`Ok`) or fails (the stream's
    /// error: the endpoints stay as they were, and nothing follows the
    /// stream any more — log it, and follow a new one); spawn it.
    pub async fn follow<D>(self, discover: D) -> Result<(), D::Error>
    where
        D: Discover<Service = S> + Unpin,
        D::Key: fmt::Display,
    {
        let mut discover = discover;
        while let Some(change) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut discover).poll_discover(cx)).await
        {
            match change? {
                Change::Insert(key, service) => self.insert_service(key.to_string(), service),
                Change::Remove(key) => {
                    self.remove(&key.to_string());
                }
            }
        }
        Ok(())
    }
}
