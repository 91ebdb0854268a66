//! The response future of [`MidStreamFallback`](crate::MidStreamFallback).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::before_stream::{before_stream, pass_on_error};
use crate::body::FallbackBody;
use crate::clock::{human, Clock, Due};
use crate::config::Config;
use crate::dialect::{Dialect, ErrorKind, StreamFailure};
use crate::error::BoxError;
use crate::error::FailureClass;
use crate::plan::RetryPlanner;
use crate::recovery::{retryable, Recovery};
use crate::replay::{Collected, ReplayBody};
use crate::respond::{error_response, too_large, unwatched_failed, watch};
use crate::untrusted::describe;

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
        // The first attempt, on the service that was made ready, within its first-token
        // deadline.
        Calling {
            #[pin]
            fut: S::Future,
            #[pin]
            clock: Clock,
            recovery: Option<Recovery<S, P>>,
        },
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
                    let response = match std::task::ready!(fut.poll(cx)) {
                        Ok(response) if response.status().is_success() => response,
                        Ok(response) => {
                            // An error body may quote a key: read (bounded) and redacted, as
                            // on the watched path.
                            let (dialect, config) = (*dialect, config.clone());
                            state.set(State::PassingOnError {
                                fut: Box::pin(async move {
                                    Ok(pass_on_error(response, dialect, &config).await)
                                }),
                            });
                            continue;
                        }
                        Err(err) => {
                            let err: BoxError = err.into();
                            return Poll::Ready(Ok(unwatched_failed(
                                *dialect,
                                describe(&*err),
                                &config.redactor,
                            )));
                        }
                    };
                    return Poll::Ready(Ok(response.map(FallbackBody::plain)));
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
                    let (sent, timing) = recovery.deadlines();
                    state.set(State::Calling {
                        fut,
                        clock: Clock::new(sent, timing, None),
                        recovery: Some(recovery),
                    });
                }
                StateProj::Calling {
                    fut,
                    mut clock,
                    recovery,
                } => {
                    let polled = {
                        let span = recovery.as_ref().map(Recovery::attempt_span);
                        let _entered = span.map(tracing::Span::enter);
                        fut.poll(cx)
                    };
                    let result = match polled {
                        Poll::Ready(result) => result.map_err(|err| {
                            let err: BoxError = err.into();
                            StreamFailure::new(FailureClass::Connect, describe(&*err))
                        }),
                        Poll::Pending => match std::task::ready!(clock.as_mut().poll_due(cx)) {
                            Due::FirstToken => Err(StreamFailure::new(
                                FailureClass::Stall,
                                format!(
                                    "no response headers within the first-token deadline of {}",
                                    human(clock.timing().first_token.unwrap_or_default())
                                ),
                            )),
                            // Hedging comes with its own commit; until then the deadline passes.
                            _ => {
                                clock.no_hedge();
                                continue;
                            }
                        },
                    };
                    let mut recovery = recovery.take().expect("polled after completion");
                    match result {
                        Ok(response) if response.status().is_success() => {
                            return Poll::Ready(Ok(watch(response, recovery)));
                        }
                        // A retryable status goes on below even with no attempt left, so that
                        // giving up records it like any other failure.
                        // A 400 is read first: it may say the prompt is too long for the model.
                        Ok(mut response)
                            if !retryable(response.status())
                                && response.status() != StatusCode::BAD_REQUEST =>
                        {
                            recovery.pass_on(&mut response);
                            let (dialect, config) =
                                (Some(recovery.dialect()), recovery.config.clone());
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
