//! When a request's units come back: when its response arrives (the
//! default), or when an `http::Response`'s body has been sent to the end.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_limit::{ResourceLimitLayer, ResourcePool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = ResourcePool::builder("streams").capacity(1).build().unwrap();
//! let mut svc = ResourceLimitLayer::new(pool.clone())
//!     .release_on_body_end()
//!     .layer(service_fn(|_: http::Request<()>| async {
//!         Ok::<_, std::io::Error>(http::Response::new(String::from("body")))
//!     }));
//! let response = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(pool.stats().in_use, 1); // the body still holds the unit
//! drop(response);
//! assert_eq!(pool.stats().in_use, 0);
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::permit::Permit;

/// The units a response holds; opaque. Dropping it gives them back.
#[derive(Debug)]
pub struct Held {
    // Kept for its `Drop`, which returns the units.
    _permit: Permit,
}

impl Held {
    pub(crate) fn new(permit: Permit) -> Self {
        Held { _permit: permit }
    }
}

/// Decides when a request's units come back, given its response.
pub trait ReleaseOn<Res>: Clone {
    /// The response the layer returns.
    type Response;

    /// Gives the units back now, or attaches them to the response.
    fn attach(&self, response: Res, held: Held) -> Self::Response;
}

/// Units come back as soon as the response arrives (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct OnResponse;

impl<Res> ReleaseOn<Res> for OnResponse {
    type Response = Res;

    #[inline]
    fn attach(&self, response: Res, held: Held) -> Res {
        drop(held);
        response
    }
}

/// Units come back when the `http::Response` body has been read to its
/// end (or dropped), so a streaming response counts for its whole life.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnBodyEnd;

impl<B> ReleaseOn<http::Response<B>> for OnBodyEnd {
    type Response = http::Response<HoldingBody<B>>;

    fn attach(&self, response: http::Response<B>, held: Held) -> Self::Response {
        response.map(|body| HoldingBody {
            body,
            held: Some(held),
        })
    }
}

pin_project! {
    /// A response body that holds its request's units until it ends or is
    /// dropped.
    #[derive(Debug)]
    pub struct HoldingBody<B> {
        #[pin]
        body: B,
        held: Option<Held>,
    }
}

impl<B: Body> Body for HoldingBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // The end, or an error: the units are not needed any more.
            this.held.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
