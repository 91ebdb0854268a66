//! The response future of [`MidStreamFallback`](crate::MidStreamFallback).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::FallbackBody;
use crate::config::Config;
use crate::dialect::{describe_error_body, Dialect, ErrorKind, StreamFailure};
use crate::error::BoxError;
use crate::error::FailureClass;
use crate::error::FallbackError;
use crate::plan::RetryPlanner;
use crate::recovery::{client_error, retryable, unwatched_failure, Recovery};
use crate::replay::{Collected, ReplayBody};
use crate::stream::{describe, is_event_stream, Watch};
use crate::transcript::Transcript;

/// The most of a failed response's body kept to hand back if every fallback fails too.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

type BoxResponseFuture<ResBody> =
    Pin<Box<dyn Future<Output = Result<Response<FallbackBody<ResBody>>, Infallible>> + Send>>;

pin_project! {
    /// Response future of [`MidStreamFallback`](crate::MidStreamFallback).
    pub struct ResponseFuture<S, P, ReqBody, ResBody>
    where
        S: Service<Request<ReplayBody<ReqBody>>>,
    {
        #[pin]
        state: State<S, P, ReqBody, ResBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, P, ReqBody, ResBody>
    where
        S: Service<Request<ReplayBody<ReqBody>>>,
    {
        // Not watched: the inner service's response, as it comes.
        Passthrough { #[pin] fut: S::Future, dialect: Option<Dialect> },
        // Collecting the request body for replay.
        Collecting {
            #[pin]
            body: ReqBody,
            collected: Collected,
            start: Option<Start<S, P>>,
        },
        // The first attempt, on the service that was made ready.
        Calling { #[pin] fut: S::Future, recovery: Option<Recovery<S, P>> },
        // The first attempt failed before the stream: further attempts.
        Recovering { fut: BoxResponseFuture<ResBody> },
        // A response the layer made itself.
        Ready { response: Option<Response<FallbackBody<ResBody>>> },
    }
}

/// What the first attempt needs once the request body is in.
pub(crate) struct Start<S, P> {
    pub(crate) service: S,
    pub(crate) planner: P,
    pub(crate) parts: Parts,
    pub(crate) dialect: Dialect,
    pub(crate) config: Arc<Config>,
    pub(crate) span: tracing::Span,
}

impl<S, P, ReqBody, ResBody> ResponseFuture<S, P, ReqBody, ResBody>
where
    S: Service<Request<ReplayBody<ReqBody>>>,
    ReqBody: Body,
{
    pub(crate) fn passthrough(fut: S::Future, dialect: Option<Dialect>) -> Self {
        ResponseFuture {
            state: State::Passthrough { fut, dialect },
        }
    }

    pub(crate) fn collecting(body: ReqBody, start: Start<S, P>) -> Self {
        ResponseFuture {
            state: State::Collecting {
                body,
                collected: Collected::default(),
                start: Some(start),
            },
        }
    }

    pub(crate) fn ready(response: Response<FallbackBody<ResBody>>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }
}

impl<S, P, ReqBody, ResBody> std::fmt::Debug for ResponseFuture<S, P, ReqBody, ResBody>
where
    S: Service<Request<ReplayBody<ReqBody>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, P, ReqBody, ResBody> Future for ResponseFuture<S, P, ReqBody, ResBody>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    P: RetryPlanner + Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<FallbackBody<ResBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Passthrough { fut, dialect } => {
                    return Poll::Ready(Ok(match std::task::ready!(fut.poll(cx)) {
                        Ok(response) => response.map(FallbackBody::plain),
                        Err(err) => {
                            let err: BoxError = err.into();
                            unwatched_failed(*dialect, describe(&*err))
                        }
                    }));
                }
                StateProj::Collecting {
                    mut body,
                    collected,
                    start,
                } => {
                    let limit = start
                        .as_ref()
                        .expect("polled after completion")
                        .config
                        .max_request_bytes;
                    let read = loop {
                        match std::task::ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    if !collected.push_within(data, limit) {
                                        break Err(None);
                                    }
                                }
                            }
                            Some(Err(err)) => break Err(Some(err.into())),
                            None if collected.over() => break Err(None),
                            None => break Ok(collected.take()),
                        }
                    };
                    let Start {
                        service,
                        planner,
                        parts,
                        dialect,
                        config,
                        span,
                    } = start.take().expect("polled after completion");
                    let body = match read {
                        Ok(bytes) => bytes,
                        Err(None) => return Poll::Ready(Ok(too_large(dialect, limit))),
                        Err(Some(err)) => {
                            let err: BoxError = err;
                            return Poll::Ready(Ok(error_response(
                                dialect,
                                StatusCode::BAD_REQUEST,
                                &ErrorKind::BadRequest,
                                &format!("could not read the request body: {}", describe(&*err)),
                            )));
                        }
                    };
                    let original = Request::from_parts(parts, body);
                    let mut recovery =
                        Recovery::new(service, planner, original, dialect, config, span);
                    let fut = recovery.call_first();
                    state.set(State::Calling {
                        fut,
                        recovery: Some(recovery),
                    });
                }
                StateProj::Calling { fut, recovery } => {
                    let result = {
                        let span = recovery.as_ref().map(Recovery::attempt_span);
                        let _entered = span.map(tracing::Span::enter);
                        std::task::ready!(fut.poll(cx))
                    };
                    let mut recovery = recovery.take().expect("polled after completion");
                    match result {
                        Ok(response) if response.status().is_success() => {
                            return Poll::Ready(Ok(watch(response, recovery)));
                        }
                        Ok(mut response)
                            if !retryable(response.status()) || !recovery.can_retry() =>
                        {
                            recovery.pass_on(&mut response);
                            return Poll::Ready(Ok(response.map(FallbackBody::plain)));
                        }
                        first => {
                            state.set(State::Recovering {
                                fut: Box::pin(before_stream(recovery, first)),
                            });
                        }
                    }
                }
                StateProj::Recovering { fut } => return fut.as_mut().poll(cx),
                StateProj::Ready { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")))
                }
            }
        }
    }
}

/// Wraps a successful response: an event stream is watched, anything else passes through.
fn watch<S, P, ReqBody, ResBody>(
    mut response: Response<ResBody>,
    mut recovery: Recovery<S, P>,
) -> Response<FallbackBody<ResBody>>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    P: RetryPlanner + Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    if !is_event_stream(response.headers()) {
        recovery.pass_on(&mut response);
        return response.map(FallbackBody::plain);
    }
    recovery.respond(&mut response);
    let (mut parts, body) = response.into_parts();
    // The relayed stream may differ in length from the upstream's.
    parts.headers.remove(header::CONTENT_LENGTH);
    let watched = Watch::new(body, recovery);
    Response::from_parts(parts, FallbackBody::watched(Box::pin(watched)))
}

/// Attempts after a failure before any response reached the client. Gives back the original
/// failed response (its body kept up to 64 KiB) if every attempt fails, or a 502 in the
/// client's dialect if the original failure had no response.
async fn before_stream<S, P, ReqBody, ResBody>(
    mut recovery: Recovery<S, P>,
    first: Result<Response<ResBody>, S::Error>,
) -> Result<Response<FallbackBody<ResBody>>, Infallible>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    P: RetryPlanner + Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let dialect = recovery.dialect();
    let transcript = Transcript::new(0);
    // The first attempt's failed response, handed back if every fallback fails too.
    let mut original: Option<Response<Bytes>> = None;
    let mut is_first = true;
    let mut outcome = first;
    loop {
        let failure = match outcome {
            Ok(response) if response.status().is_success() => {
                return Ok(watch(response, recovery));
            }
            Ok(response) => {
                let status = response.status();
                let class = recovery.status_class(status);
                let (mut parts, body) = response.into_parts();
                let bytes = Limited::new(body, ERROR_BODY_LIMIT)
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .ok();
                let (error_type, message) = bytes
                    .as_deref()
                    .map(describe_error_body)
                    .unwrap_or_default();
                let detail = match (&error_type, &message) {
                    (Some(t), Some(m)) => format!("{t}: {m} (HTTP {})", status.as_u16()),
                    (None, Some(m)) => format!("{m} (HTTP {})", status.as_u16()),
                    _ => format!("HTTP {status}"),
                };
                if let (true, Some(bytes)) = (is_first, bytes) {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    original = Some(Response::from_parts(parts, bytes));
                }
                StreamFailure {
                    class,
                    detail,
                    error_type: error_type.map(Into::into),
                }
            }
            Err(err) => {
                let err: BoxError = err.into();
                StreamFailure::new(FailureClass::Connect, describe(&*err))
            }
        };
        is_first = false;
        match recovery.on_failure(failure, &transcript) {
            Ok((request, _strategy)) => outcome = recovery.call(request).await,
            Err(err) => {
                return Ok(match original.take() {
                    Some(original) => {
                        let mut response = original.map(FallbackBody::full);
                        response.extensions_mut().insert(err);
                        response
                    }
                    None => gave_up(dialect, err),
                });
            }
        }
    }
}

/// 502 in the client's dialect, naming the original failure; the error in its extensions.
fn gave_up<B>(dialect: Dialect, err: FallbackError) -> Response<FallbackBody<B>> {
    let (kind, message) = client_error(&err);
    let mut response = error_response(dialect, StatusCode::BAD_GATEWAY, &kind, &message);
    response.extensions_mut().insert(err);
    response
}

/// 502 for a request the layer does not watch whose inner service failed, in the dialect its
/// path names (plain text otherwise), with the error in its extensions.
pub(crate) fn unwatched_failed<B>(
    dialect: Option<Dialect>,
    detail: String,
) -> Response<FallbackBody<B>> {
    let err = unwatched_failure(detail);
    match dialect {
        Some(dialect) => gave_up(dialect, err),
        None => {
            let mut response = Response::new(FallbackBody::full(Bytes::from(format!(
                "upstream unavailable: {}\n",
                err.client_message()
            ))));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response.extensions_mut().insert(err);
            response
        }
    }
}

pub(crate) fn too_large<B>(dialect: Dialect, limit: usize) -> Response<FallbackBody<B>> {
    error_response(
        dialect,
        StatusCode::PAYLOAD_TOO_LARGE,
        &ErrorKind::TooLarge,
        &format!(
            "the request body exceeds this gateway's limit of {limit} bytes (tower-midstream max_request_bytes)"
        ),
    )
}

fn error_response<B>(
    dialect: Dialect,
    status: StatusCode,
    kind: &ErrorKind,
    message: &str,
) -> Response<FallbackBody<B>> {
    let body = dialect.spec().error_body(kind, message);
    let mut response = Response::new(FallbackBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
