use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_hardening_core::BoxError;
use tower_service::Service;

use super::state::{Admission, Shared};

/// The service [`RecoverLayer::service`](crate::RecoverLayer::service)
/// makes: calls the service the factory built last, and fails fast with
/// `Recovering` (or `RecoveryFailed`) while there is none.
///
/// `poll_ready` only fails if... never: a broken inner service (one whose
/// `poll_ready` fails) is dropped and rebuilt, and this call fails with
/// `Recovering` from its response future.
pub struct Recover<S, F> {
    shared: Arc<Shared<S, F>>,
    current: Option<(u64, S)>,
    refused: Option<BoxError>,
}

impl<S, F> Recover<S, F> {
    pub(crate) fn new(shared: Arc<Shared<S, F>>) -> Self {
        Recover {
            shared,
            current: None,
            refused: None,
        }
    }
}

impl<S, F> Clone for Recover<S, F> {
    fn clone(&self) -> Self {
        Recover::new(self.shared.clone())
    }
}

impl<S, F> std::fmt::Debug for Recover<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recover")
            .field("name", &self.shared.settings.name)
            .field("generation", &self.current.as_ref().map(|(g, _)| *g))
            .finish_non_exhaustive()
    }
}

impl<S, F, Fut, E, Req> Service<Req> for Recover<S, F>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RecoverFuture<S::Future, S, F>;

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
                self.shared.broken(generation);
                self.refused = Some(Box::new(tower_hardening_core::Recovering::new(
                    self.shared.settings.name.clone(),
                    1,
                )));
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
        RecoverFuture::called(service.call(request), self.shared.clone(), *generation)
    }
}

pin_project! {
    /// The response future of [`Recover`].
    pub struct RecoverFuture<Fut, S, F> {
        #[pin]
        kind: Kind<Fut, S, F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<Fut, S, F> {
        Called {
            #[pin]
            future: Fut,
            shared: Arc<Shared<S, F>>,
            generation: u64,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<Fut, S, F> RecoverFuture<Fut, S, F> {
    fn called(future: Fut, shared: Arc<Shared<S, F>>, generation: u64) -> Self {
        RecoverFuture {
            kind: Kind::Called {
                future,
                shared,
                generation,
            },
        }
    }

    fn refused(error: BoxError) -> Self {
        RecoverFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<Fut, S, F> std::fmt::Debug for RecoverFuture<Fut, S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoverFuture").finish_non_exhaustive()
    }
}

impl<Fut, T, Err, S, F, FFut, E> Future for RecoverFuture<Fut, S, F>
where
    Fut: Future<Output = Result<T, Err>>,
    Err: Into<BoxError>,
    S: Clone + Send + 'static,
    F: Fn() -> FFut + Send + Sync + 'static,
    FFut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                shared,
                generation,
            } => {
                let result = ready!(future.poll(cx));
                shared.call_finished(*generation, result.is_err());
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("RecoverFuture polled after completion"))),
        }
    }
}
