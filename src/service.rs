//! The middleware service.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::attempt::Attempt;
use crate::body::FallbackBody;
use crate::config::Config;
use crate::dialect::Dialect;
use crate::error::BoxError;
use crate::future::{ResponseFuture, Start};
use crate::plan::RetryPlanner;
use crate::replay::ReplayBody;
use crate::respond::{too_large, unwatched_failed};
use crate::untrusted::describe;

/// Insert into a request's extensions to turn fallback off for it: the request and its
/// response pass through, before the stream (a retryable status is not retried) and during it
/// (a failure reaches the client as it happened). Two things still hold for it, as for every
/// request through the layer: the inner service finds an [`Attempt`](crate::Attempt) in its
/// extensions (number 1, target unknown, since the body is not read), and an error response's
/// body is read (bounded) and redacted before it reaches the client. An error of the inner
/// service, when there is no response to pass on, becomes a 502: the layer never fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoFallback;

/// Middleware that keeps streamed LLM responses alive when the upstream fails mid-stream.
///
/// See the [crate documentation](crate) for what it does and where it goes in a stack, and
/// [`MidStreamFallbackLayer`](crate::MidStreamFallbackLayer) for its options.
///
/// It never fails (its error type is [`Infallible`]), so it fits where axum wants a service
/// that answers every request (`Router::layer`, `route_service`), whatever fails inside it:
/// an error of the inner service (a `tower::timeout` elapsed, a connection refused) is a
/// failure like any other, retried on a fallback, and when none is left the client gets a 502
/// in its dialect naming it, with the [`FallbackError`](crate::FallbackError) in the
/// response's extensions. That holds for requests the layer does not watch too (their 502 is
/// plain text unless their path names a dialect), and for an inner service that fails to
/// become ready: the next request gets the 502.
#[derive(Debug)]
pub struct MidStreamFallback<S, P> {
    inner: S,
    planner: P,
    config: Arc<Config>,
    /// The inner service failed to become ready: the next call answers with this.
    not_ready: Option<BoxError>,
}

impl<S: Clone, P: Clone> Clone for MidStreamFallback<S, P> {
    fn clone(&self) -> Self {
        MidStreamFallback {
            inner: self.inner.clone(),
            planner: self.planner.clone(),
            config: self.config.clone(),
            not_ready: None,
        }
    }
}

impl<S, P> MidStreamFallback<S, P> {
    /// Wraps `inner`, with default options and `planner`.
    pub fn new(inner: S, planner: P) -> Self {
        MidStreamFallback::from_parts(inner, planner, Arc::new(Config::default()))
    }

    pub(crate) fn from_parts(inner: S, planner: P, config: Arc<Config>) -> Self {
        MidStreamFallback {
            inner,
            planner,
            config,
            not_ready: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The dialect the layer watches `req` as, if any.
    fn dialect_of<B>(&self, req: &Request<B>) -> Option<Dialect> {
        if let Some(d) = req.extensions().get::<Dialect>() {
            return Some(*d);
        }
        if req.method() != Method::POST {
            return None;
        }
        self.config
            .dialect
            .or_else(|| Dialect::from_path(req.uri().path()))
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for MidStreamFallback<S, P>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    P: RetryPlanner + Clone + Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<FallbackBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S, P, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none() {
            if let Err(err) = std::task::ready!(self.inner.poll_ready(cx)) {
                self.not_ready = Some(err.into());
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let dialect = self.dialect_of(&req);
        if let Some(err) = self.not_ready.take() {
            let response = unwatched_failed(dialect, describe(&*err), &self.config.redactor);
            return ResponseFuture::ready(response);
        }
        // Use the service that was made ready; leave a clone for the next call.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let dialect = match dialect {
            Some(d) if req.extensions().get::<NoFallback>().is_none() => d,
            _ => {
                // Its body is not collected, so the target is not known; the attempt still is,
                // so that an inner service taking one always finds it.
                let mut req = req.map(ReplayBody::streaming);
                req.extensions_mut().insert(Attempt::first(None));
                let fut = service.call(req);
                return ResponseFuture::passthrough(fut, dialect, self.config.clone());
            }
        };
        let (parts, body) = req.into_parts();
        let limit = self.config.max_request_bytes;
        // Far too large: answer without reading. Somewhat too large: read it and drop it
        // first (see `drain_limit`), so that the client sees the 413.
        if body.size_hint().lower() > crate::replay::drain_limit(limit) as u64 {
            return ResponseFuture::ready(too_large(dialect, limit));
        }
        ResponseFuture::collecting(
            body,
            Start {
                service,
                planner: self.planner.clone(),
                parts,
                dialect,
                config: self.config.clone(),
                span: crate::trace::request_span(dialect),
            },
        )
    }
}
