//! The recoverable service.
//!
//! ```
//! use tower::{Service, ServiceExt, service_fn};
//! use tower_hardening_recovery::{Recover, RecoverState};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (handle, mut svc) = Recover::builder()
//!     .build(|| async {
//!         Ok::<_, std::io::Error>(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) }))
//!     })
//!     .unwrap();
//! let _ = svc.ready().await.unwrap().call(0).await; // starts the build
//! tokio::task::yield_now().await;
//! assert_eq!(handle.state(), RecoverState::Ready);
//! assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
//! assert!(svc.get_ref().is_some());
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tower_hardening_core::{BoxError, Classify, ErrorsAsFailures};
use tower_service::Service;

use super::builder::RecoverBuilder;
use super::future::RecoverFuture;
use super::handle::RecoverHandle;
use super::state::{Admission, Shared};

/// A service built (and rebuilt) from a factory: calls the service the
/// factory built last, and fails fast with `Recovering` (or
/// `RecoveryFailed`) while there is none.
///
/// It is not a `tower::Layer`: it makes its service from a factory rather
/// than wrapping one, so it goes innermost, given to
/// `ServiceBuilder::service`. Every clone shares the one built service,
/// which must be `Clone`.
///
/// `poll_ready` never fails: a broken inner service (one whose
/// `poll_ready` fails) is dropped and rebuilt, and this call fails with
/// `Recovering` from its response future.
pub struct Recover<S, F, C = ErrorsAsFailures> {
    shared: Arc<Shared<S, F, C>>,
    current: Option<(u64, S)>,
    refused: Option<BoxError>,
}

impl Recover<(), ()> {
    /// A builder with the defaults listed on [`RecoverBuilder`]. (The
    /// service and factory types are decided by
    /// [`RecoverBuilder::build`].)
    pub fn builder() -> RecoverBuilder {
        RecoverBuilder::default()
    }
}

impl<S, F, C> Recover<S, F, C> {
    pub(crate) fn new(shared: Arc<Shared<S, F, C>>) -> Self {
        Recover {
            shared,
            current: None,
            refused: None,
        }
    }

    /// The copy of the built service this clone calls, if it took one
    /// (it does when `poll_ready` finds the service ready).
    pub fn get_ref(&self) -> Option<&S> {
        self.current.as_ref().map(|(_, service)| service)
    }

    /// The copy of the built service this clone calls, mutably.
    pub fn get_mut(&mut self) -> Option<&mut S> {
        self.current.as_mut().map(|(_, service)| service)
    }

    /// The copy of the built service this clone calls, unwrapped.
    pub fn into_inner(self) -> Option<S> {
        self.current.map(|(_, service)| service)
    }
}

impl<S, F, Fut, E, C> Recover<S, F, C>
where
    S: Clone + Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
    C: Send + Sync + 'static,
{
    /// A handle on the state every clone shares.
    pub fn handle(&self) -> RecoverHandle {
        RecoverHandle {
            control: self.shared.clone(),
        }
    }
}

impl<S, F, C> Clone for Recover<S, F, C> {
    fn clone(&self) -> Self {
        Recover::new(self.shared.clone())
    }
}

impl<S, F, C> std::fmt::Debug for Recover<S, F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recover")
            .field("name", &self.shared.settings.name)
            .field("generation", &self.current.as_ref().map(|(g, _)| *g))
            .finish_non_exhaustive()
    }
}

impl<S, F, Fut, E, C, Req> Service<Req> for Recover<S, F, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
    C: Classify<S::Response, BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RecoverFuture<S::Future, S, F, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.refused.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.shared.admit(self.current.as_ref().map(|(g, _)| *g)) {
            Admission::Unchanged => {}
            Admission::Serve(generation, service) => self.current = Some((generation, service)),
            Admission::Refuse(error) => {
                self.current = None;
                self.refused = Some(error);
                return Poll::Ready(Ok(()));
            }
        }
        let (generation, service) = self.current.as_mut().expect("admitted with a service");
        match ready!(service.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => {
                let generation = *generation;
                self.current = None;
                self.refused = Some(self.shared.broken(generation));
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(error) = self.refused.take() {
            return RecoverFuture::refused(error);
        }
        let (generation, service) = self
            .current
            .as_mut()
            .expect("Recover::call without poll_ready returning Ready(Ok) first");
        let tracked = self
            .shared
            .settings
            .after_consecutive_failures
            .map(|_| (self.shared.clone(), *generation));
        RecoverFuture::called(service.call(request), tracked)
    }
}
