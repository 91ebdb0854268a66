//! The response future of [`MidStreamFallback`](crate::MidStreamFallback).

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
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
use crate::stream::{content_coding, describe, human, is_event_stream, redact_failure, Watch};
use crate::transcript::Transcript;
use crate::untrusted::{escaped, Redactor};

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
        Passthrough {
            #[pin]
            fut: S::Future,
            dialect: Option<Dialect>,
            config: Arc<Config>,
        },
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
        // The first attempt failed for good: its error body, read within bounds and redacted.
        PassingOnError { fut: BoxResponseFuture<ResBody> },
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
    pub(crate) fn passthrough(
        fut: S::Future,
        dialect: Option<Dialect>,
        config: Arc<Config>,
    ) -> Self {
        ResponseFuture {
            state: State::Passthrough {
                fut,
                dialect,
                config,
            },
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
                StateProj::Passthrough {
                    fut,
                    dialect,
                    config,
                } => {
                    return Poll::Ready(Ok(match std::task::ready!(fut.poll(cx)) {
                        Ok(response) => response.map(FallbackBody::plain),
                        Err(err) => {
                            let err: BoxError = err.into();
                            unwatched_failed(*dialect, describe(&*err), &config.redactor)
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
                            let (dialect, config) = (recovery.dialect(), recovery.config.clone());
                            state.set(State::PassingOnError {
                                fut: Box::pin(async move {
                                    Ok(pass_on_error(response, dialect, &config).await)
                                }),
                            });
                        }
                        first => {
                            state.set(State::Recovering {
                                fut: Box::pin(before_stream(recovery, first)),
                            });
                        }
                    }
                }
                StateProj::Recovering { fut } | StateProj::PassingOnError { fut } => {
                    return fut.as_mut().poll(cx)
                }
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
    if let Some(coding) = content_coding(response.headers()) {
        // Compressed bytes are not readable SSE, and no event of ours may be written into
        // them: the response passes on as it came (a decompression layer inside this one
        // gets such responses watched).
        tracing::debug!(
            target: "tower_midstream",
            content_encoding = %escaped(coding),
            "an encoded event stream passes through unwatched"
        );
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
/// client's dialect if the original failure had no response, or no whole body.
///
/// Every wait is bounded by the idle timeout: reading a failed response's body (what was read
/// by then is described in the error), and each fallback's response headers.
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
    let idle = recovery.config.idle_timeout;
    let transcript = Transcript::new(0);
    // The first attempt's failed response, handed back if every fallback fails too.
    let mut original: Option<Response<Bytes>> = None;
    let mut is_first = true;
    // `None`: the attempt sent no response headers within the idle timeout.
    let mut outcome = Some(first);
    loop {
        let failure = match outcome {
            Some(Ok(response)) if response.status().is_success() => {
                return Ok(watch(response, recovery));
            }
            Some(Ok(response)) => {
                let status = response.status();
                let class = recovery.status_class(status);
                let (mut parts, body) = response.into_parts();
                let read = read_error_body(body, idle).await;
                let (error_type, message) = describe_error_body(read.bytes());
                let mut detail = match (&error_type, &message) {
                    (Some(t), Some(m)) => format!("{t}: {m} (HTTP {})", status.as_u16()),
                    (None, Some(m)) => format!("{m} (HTTP {})", status.as_u16()),
                    _ => format!("HTTP {status}"),
                };
                if let ErrorBody::Partial { bytes, why } = &read {
                    detail.push_str(&format!("; its body {why} after {} bytes", bytes.len()));
                }
                if let (true, Some(bytes)) = (is_first, read.usable()) {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    let bytes = redact_body(bytes, &recovery.config.redactor);
                    original = Some(Response::from_parts(parts, bytes));
                }
                StreamFailure {
                    class,
                    detail,
                    error_type: error_type.map(Into::into),
                }
            }
            Some(Err(err)) => {
                let err: BoxError = err.into();
                StreamFailure::new(FailureClass::Connect, describe(&*err))
            }
            None => StreamFailure::new(
                FailureClass::Stall,
                format!(
                    "the fallback sent no response headers within {}",
                    human(idle.unwrap_or_default())
                ),
            ),
        };
        is_first = false;
        let failure = redact_failure(failure, &recovery.config.redactor);
        match recovery.on_failure(failure, &transcript) {
            Ok((request, _strategy)) => {
                let call = recovery.call(request);
                outcome = match idle {
                    Some(idle) => tokio::time::timeout(idle, call).await.ok(),
                    None => Some(call.await),
                };
            }
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

/// A failed response the client gets as the upstream sent it, except that its body is read
/// (up to 64 KiB, within the idle timeout) to take secrets out of it: an upstream may quote the
/// key it was sent. A body that cannot be read whole becomes an error in the client's dialect
/// with the same status, saying so.
async fn pass_on_error<ResBody>(
    response: Response<ResBody>,
    dialect: Dialect,
    config: &Config,
) -> Response<FallbackBody<ResBody>>
where
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let read = read_error_body(body, config.idle_timeout).await;
    let why = match &read {
        ErrorBody::Partial { bytes, why } => Some(format!(
            "the upstream answered HTTP {} and its error body {why} after {} bytes",
            parts.status.as_u16(),
            bytes.len()
        )),
        ErrorBody::Whole(_) => None,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    match read.usable() {
        Some(bytes) => Response::from_parts(
            parts,
            FallbackBody::full(redact_body(bytes, &config.redactor)),
        ),
        None => {
            let why = why.unwrap_or_default();
            let mut response = error_response(dialect, parts.status, &ErrorKind::Upstream, &why);
            std::mem::swap(response.extensions_mut(), &mut parts.extensions);
            response
        }
    }
}

fn redact_body(bytes: Bytes, redactor: &Redactor) -> Bytes {
    match redactor.redact_bytes(&bytes) {
        Cow::Borrowed(_) => bytes,
        Cow::Owned(redacted) => Bytes::from(redacted),
    }
}

/// A failed response's body, as far as it was read.
enum ErrorBody {
    Whole(Bytes),
    /// Cut short: over the limit, broken, or not finished within the idle timeout.
    Partial {
        bytes: Bytes,
        why: String,
    },
}

impl ErrorBody {
    fn bytes(&self) -> &[u8] {
        match self {
            ErrorBody::Whole(bytes) | ErrorBody::Partial { bytes, .. } => bytes,
        }
    }

    /// The body to hand back to the client: whole, or at least one complete JSON value (an
    /// upstream that sent its error and then held the connection).
    fn usable(self) -> Option<Bytes> {
        match self {
            ErrorBody::Whole(bytes) => Some(bytes),
            ErrorBody::Partial { bytes, .. } => {
                serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
                    .is_ok()
                    .then_some(bytes)
            }
        }
    }
}

/// Reads up to [`ERROR_BODY_LIMIT`] bytes of `body`, for no longer than `idle` in all.
async fn read_error_body<B>(body: B, idle: Option<Duration>) -> ErrorBody
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let deadline = idle.map(|idle| tokio::time::Instant::now() + idle);
    let mut body = std::pin::pin!(body);
    let mut read = BytesMut::new();
    let why = loop {
        let frame = match deadline {
            Some(at) => match tokio::time::timeout_at(at, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    break format!(
                        "did not complete within {}",
                        human(idle.unwrap_or_default())
                    )
                }
            },
            None => body.frame().await,
        };
        match frame {
            None => return ErrorBody::Whole(read.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = ERROR_BODY_LIMIT - read.len();
                    if data.len() > room {
                        read.extend_from_slice(&data[..room]);
                        break format!("exceeded {ERROR_BODY_LIMIT} bytes");
                    }
                    read.extend_from_slice(&data);
                }
            }
            Some(Err(err)) => {
                let err: BoxError = err.into();
                break format!("broke ({})", describe(&*err));
            }
        }
    };
    ErrorBody::Partial {
        bytes: read.freeze(),
        why,
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
/// path names (plain text otherwise), with the error (escaped by `describe`, redacted here)
/// in its extensions.
pub(crate) fn unwatched_failed<B>(
    dialect: Option<Dialect>,
    detail: String,
    redactor: &Redactor,
) -> Response<FallbackBody<B>> {
    let detail = match redactor.redact(&detail) {
        Cow::Owned(redacted) => redacted,
        Cow::Borrowed(_) => detail,
    };
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
