//! The upstream's handle: its endpoints' state, and changing them at run
//! time.

use std::fmt;
use std::sync::Arc;

use tower::discover::{Change, Discover};

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
    pub fn set_endpoints<U: Into<Arc<str>>>(
        &self,
        uris: impl IntoIterator<Item = U>,
    ) -> Result<(), NoEndpointMaker> {
        let make = self.shared.make.as_ref().ok_or(NoEndpointMaker)?;
        let endpoints = uris
            .into_iter()
            .map(|uri| {
                let uri: Arc<str> = uri.into();
                let service = make(&uri);
                (uri, service)
            })
            .collect();
        self.shared.set(endpoints);
        Ok(())
    }

    /// Adds the endpoint `uri`, made by the upstream's endpoint function
    /// (replacing one with the same URI, whose record starts afresh).
    pub fn insert(&self, uri: impl Into<Arc<str>>) -> Result<(), NoEndpointMaker> {
        let make = self.shared.make.as_ref().ok_or(NoEndpointMaker)?;
        let uri: Arc<str> = uri.into();
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
