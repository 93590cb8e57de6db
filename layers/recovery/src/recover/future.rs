//! The response future of [`Recover`](crate::Recover).
//!
//! ```
//! use tower::{Service, ServiceExt};
//! use tower_hardening_recovery::{Recover, Recovering};
//!
//! # #[derive(Clone)] struct Model;
//! # impl Service<u32> for Model {
//! #     type Response = u32;
//! #     type Error = std::io::Error;
//! #     type Future = std::future::Ready<Result<u32, std::io::Error>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
//! #         std::task::Poll::Ready(Ok(()))
//! #     }
//! #     fn call(&mut self, x: u32) -> Self::Future { std::future::ready(Ok(x)) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_hardening_recovery::ConfigError> {
//! let (_handle, mut svc) = Recover::builder().build(|| async { Ok::<_, std::io::Error>(Model) })?;
//! // The first call starts the build and is refused with a retry hint.
//! let future: tower_hardening_recovery::RecoverFuture<_, _, _, _> = svc.ready().await.unwrap().call(1);
//! let err = future.await.unwrap_err();
//! assert!(err.downcast_ref::<Recovering>().unwrap().retry_after().is_some());
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_hardening_core::sync::on_unwind;
use tower_hardening_core::{BoxError, Classify};

use super::state::Shared;

/// The state and the generation of the service a call went to.
pub(crate) type Tracked<S, F, C> = (Arc<Shared<S, F, C>>, u64);

pin_project! {
    /// The response future of [`Recover`](crate::Recover).
    pub struct RecoverFuture<Fut, S, F, C> {
        #[pin]
        kind: Kind<Fut, S, F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<Fut, S, F, C> {
        Called {
            #[pin]
            future: Fut,
            // Set when failed calls are counted.
            tracked: Option<Tracked<S, F, C>>,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<Fut, S, F, C> RecoverFuture<Fut, S, F, C> {
    pub(crate) fn called(future: Fut, tracked: Option<Tracked<S, F, C>>) -> Self {
        RecoverFuture {
            kind: Kind::Called { future, tracked },
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        RecoverFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<Fut, S, F, C> std::fmt::Debug for RecoverFuture<Fut, S, F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoverFuture").finish_non_exhaustive()
    }
}

impl<Fut, T, Err, S, F, FFut, E, C> Future for RecoverFuture<Fut, S, F, C>
where
    Fut: Future<Output = Result<T, Err>>,
    Err: Into<BoxError>,
    S: Clone + Send + 'static,
    F: Fn() -> FFut + Send + Sync + 'static,
    FFut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, tracked } => {
                // A panic in the inner service is a failed call, counted
                // where it happens (the future may be dropped much later).
                let polled = on_unwind(
                    tracked,
                    |(shared, generation)| {
                        if let Some(limit) = shared.settings.after_consecutive_failures
                            && shared.generation() == generation
                            && shared.call_failed(limit)
                        {
                            let _ = shared.broken(generation);
                        }
                    },
                    || future.poll(cx),
                );
                let result = ready!(polled).map_err(Into::into);
                if let Some((shared, generation)) = tracked.take()
                    && shared.call_finished(generation, &result)
                {
                    let _ = shared.broken(generation);
                }
                Poll::Ready(result)
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("RecoverFuture polled after completion"))),
        }
    }
}
