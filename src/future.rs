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
use crate::recovery::{retryable, Call, Recovery};
use crate::replay::{Collected, ReplayBody};
use crate::respond::{
    error_response, readable_stream, too_large, unwatched_failed, watch, watch_racing,
};
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
    #[project_replace = StateReplace]
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
        // The first attempt, when it may be hedged: its call, and once its hedge delay passed
        // with no response, the hedge's beside it. (Boxed: the one whose response comes
        // second races on in the body.)
        Racing {
            first: Pin<Box<Call<S, ReqBody>>>,
            hedge: Option<Pin<Box<Call<S, ReqBody>>>>,
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
                    let clock = Clock::new(sent, timing, None);
                    if timing.hedge.is_some() {
                        state.set(State::Racing {
                            first: Box::pin(recovery.first_as_call(fut)),
                            hedge: None,
                            clock,
                            recovery: Some(recovery),
                        });
                    } else {
                        state.set(State::Calling {
                            fut,
                            clock,
                            recovery: Some(recovery),
                        });
                    }
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
                            // Not armed for this attempt (see `Racing`), nor due before its
                            // headers (idle, keep-alive).
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
                                fut: Box::pin(before_stream(recovery, first, None)),
                            });
                        }
                    }
                }
                StateProj::Racing {
                    first,
                    hedge,
                    mut clock,
                    recovery,
                } => {
                    let raced = if let Poll::Ready(result) = first.as_mut().poll(cx) {
                        Raced::First(result.map_err(|err| {
                            let err: BoxError = err.into();
                            StreamFailure::new(FailureClass::Connect, describe(&*err))
                        }))
                    } else if let Some(Poll::Ready(result)) =
                        hedge.as_mut().map(|call| call.as_mut().poll(cx))
                    {
                        let racing = recovery.as_mut().expect("polled after completion");
                        match hedge_answer(result, racing) {
                            Ok(response) => Raced::Hedge(response),
                            Err(failure) => {
                                // The first attempt races on alone.
                                racing.racer_failed(failure, true);
                                *hedge = None;
                                continue;
                            }
                        }
                    } else {
                        match std::task::ready!(clock.as_mut().poll_due(cx)) {
                            Due::Hedge => {
                                clock.as_mut().no_hedge();
                                let racing = recovery.as_mut().expect("polled after completion");
                                if hedge.is_none() {
                                    *hedge = racing.hedge().map(Box::pin);
                                }
                                continue;
                            }
                            Due::FirstToken => Raced::First(Err(StreamFailure::new(
                                FailureClass::Stall,
                                format!(
                                    "no response headers within the first-token deadline of {}",
                                    human(clock.timing().first_token.unwrap_or_default())
                                ),
                            ))),
                            // Not due before the attempt's headers (idle, keep-alive).
                            Due::Idle | Due::KeepAlive => continue,
                        }
                    };
                    let StateReplace::Racing {
                        first,
                        hedge,
                        recovery,
                        ..
                    } = state
                        .as_mut()
                        .project_replace(State::Ready { response: None })
                    else {
                        unreachable!("the state was Racing")
                    };
                    let mut recovery = recovery.expect("polled after completion");
                    match raced {
                        // The hedge's event stream came first: it goes to the client, and the
                        // first attempt races on in the body.
                        Raced::Hedge(response) => {
                            recovery.swap_racers();
                            return Poll::Ready(Ok(watch_racing(response, recovery, Some(first))));
                        }
                        Raced::First(Ok(response)) if response.status().is_success() => {
                            return Poll::Ready(Ok(watch_racing(response, recovery, hedge)));
                        }
                        Raced::First(Ok(mut response))
                            if !retryable(response.status())
                                && response.status() != StatusCode::BAD_REQUEST =>
                        {
                            // A client error: the hedge would get the same.
                            recovery.race_won(false);
                            recovery.pass_on(&mut response);
                            let (dialect, config) =
                                (Some(recovery.dialect()), recovery.config.clone());
                            state.set(State::PassingOnError {
                                fut: Box::pin(async move {
                                    Ok(pass_on_error(response, dialect, &config).await)
                                }),
                            });
                        }
                        Raced::First(first) => {
                            state.set(State::Recovering {
                                fut: Box::pin(before_stream(recovery, first, hedge)),
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

/// What came first in a race before the first attempt's headers.
enum Raced<R> {
    /// The first attempt's response, or its failure.
    First(Result<R, StreamFailure>),
    /// The hedge's event stream.
    Hedge(R),
}

/// The hedge's response if it is an event stream the layer can read, else the failure it
/// amounts to.
fn hedge_answer<R, E, S, P>(
    result: Result<Response<R>, E>,
    recovery: &Recovery<S, P>,
) -> Result<Response<R>, StreamFailure>
where
    E: Into<BoxError>,
{
    match result {
        Ok(response) if response.status().is_success() => {
            if readable_stream(response.headers()) {
                Ok(response)
            } else {
                Err(StreamFailure::new(
                    FailureClass::Malformed,
                    "the hedge did not answer with a readable event stream",
                ))
            }
        }
        Ok(response) => {
            let status = response.status();
            Err(StreamFailure::new(
                recovery.status_class(status, &[]),
                format!("the hedge answered HTTP {}", status.as_u16()),
            ))
        }
        Err(err) => {
            let err: BoxError = err.into();
            Err(StreamFailure::new(FailureClass::Connect, describe(&*err)))
        }
    }
}
