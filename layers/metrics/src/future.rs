//! The metrics layer's response future.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_hardening_metrics::MetricsLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut svc = MetricsLayer::new("echo")
//!     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! // Counted when the future finishes; in flight until then.
//! let future = svc.ready().await.unwrap().call(7);
//! assert_eq!(future.await.unwrap(), 7);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_hardening_core::fallback;
use tower_hardening_core::sync::on_unwind;
use tower_hardening_core::{BoxError, Classify, Outcome, client_body_error_of, rejection_of};

use crate::layer::{Handles, HeldHandles, SharedHandles};

/// Keeps the in-flight gauge honest: decremented however the request ends
/// (finished, cancelled, or unwound by a panic, which counts as a failure
/// where the unwind passes; see `tower_hardening_core::sync::on_unwind`).
#[derive(Debug)]
pub(crate) struct InFlight {
    handles: HeldHandles,
    /// The clock's raw reading at the start.
    started: u64,
    finished: bool,
}

impl InFlight {
    /// A request starts: in flight from now, through the calling thread's
    /// copy of the handles.
    #[inline]
    pub(crate) fn begin(handles: &SharedHandles) -> Self {
        let handles = handles.get();
        handles.in_flight.increment(1.0);
        let started = handles.clock.raw();
        InFlight {
            handles,
            started,
            finished: false,
        }
    }

    pub(crate) fn finish(
        mut self,
        outcome: fn(&Handles) -> &(metrics::Counter, metrics::Histogram),
    ) {
        self.finished = true;
        let handles = &self.handles;
        let (count, duration) = outcome(handles);
        count.increment(1);
        let nanos = handles
            .clock
            .delta_as_nanos(self.started, handles.clock.raw());
        duration.record(nanos as f64 / 1e9);
        handles.in_flight.decrement(1.0);
    }

    pub(crate) fn panicked(self) {
        self.finish(|handles| &handles.failure);
    }
}

impl Drop for InFlight {
    /// Cancelled: no longer in flight, and no outcome to count.
    fn drop(&mut self) {
        if !self.finished {
            self.handles.in_flight.decrement(1.0);
        }
    }
}

pin_project! {
    /// The response future of [`MetricsService`](crate::MetricsService).
    #[derive(Debug)]
    pub struct MetricsFuture<F, C> {
        #[pin]
        future: F,
        in_flight: Option<InFlight>,
        classifier: C,
    }
}

impl<F, C> MetricsFuture<F, C> {
    pub(crate) fn new(future: F, in_flight: Option<InFlight>, classifier: C) -> Self {
        MetricsFuture {
            future,
            in_flight,
            classifier,
        }
    }
}

impl<F, C, T, E> Future for MetricsFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let future = this.future;
        let in_flight = this.in_flight;
        // A fallback below marks its answer on this thread in this poll
        // (`tower_hardening_core::fallback`); read only by a classifier
        // that counts fallbacks (a constant: free for the others).
        let watch = <C as Classify<T, BoxError>>::COUNTS_FALLBACKS;
        if watch {
            fallback::clear_mark();
        }
        let result = ready!(on_unwind(in_flight, InFlight::panicked, || future.poll(cx)))
            .map_err(Into::into);
        let fell_back = watch && fallback::take_mark();
        let outcome: fn(&Handles) -> &(metrics::Counter, metrics::Histogram) = match &result {
            Ok(_) if fell_back => |h| &h.fallback,
            Err(error) if rejection_of(&**error).is_some() => |h| &h.rejected,
            Err(error) if client_body_error_of(&**error).is_some() => |h| &h.ignored,
            _ => match this.classifier.classify(&result) {
                Outcome::Failure => |h| &h.failure,
                Outcome::Success => |h| &h.success,
                Outcome::Ignored => |h| &h.ignored,
            },
        };
        if let Some(in_flight) = in_flight.take() {
            in_flight.finish(outcome);
        }
        Poll::Ready(result)
    }
}
