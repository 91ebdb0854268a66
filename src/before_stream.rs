//! Before the stream: further attempts after the first failed before any response reached
//! the client, and a failed response passed on as it came (its body read within bounds, to
//! take secrets out of it).

use std::borrow::Cow;
use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use crate::backoff::retry_after;
use crate::body::FallbackBody;
use crate::clock::human;
use crate::config::Config;
use crate::dialect::{describe_error_body, Dialect, ErrorKind, StreamFailure};
use crate::error::{BoxError, FailureClass};
use crate::plan::RetryPlanner;
use crate::recovery::{Call, Recovery};
use crate::replay::ReplayBody;
use crate::respond::{error_response, gave_up, plain_text, readable_stream, watch_racing};
use crate::transcript::Transcript;
use crate::untrusted::{describe, Redactor};

/// The most of a failed response's body kept to hand back if every fallback fails too.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Attempts after a failure before any response reached the client. Gives back the original
/// failed response (its body kept up to 64 KiB) if every attempt fails, or a 502 in the
/// client's dialect if the original failure had no response, or no whole body.
///
/// Every wait is bounded: reading a failed response's body by the idle timeout (what was read
/// by then is described in the error), each attempt's response headers by its first-token
/// deadline.
///
/// `rival`: the first attempt's hedge, still racing: the first attempt's failure is recorded
/// (it is not a client error) and the hedge goes on as the next attempt, without a plan.
pub(crate) async fn before_stream<S, P, ReqBody, ResBody>(
    mut recovery: Recovery<S, P>,
    first: Result<Response<ResBody>, StreamFailure>,
    mut rival: Option<Pin<Box<Call<S, ReqBody>>>>,
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
    let mut outcome = first;
    loop {
        let failure = match outcome {
            // From a target of another dialect, only an event stream the layer can read and
            // translate may reach the client.
            Ok(response)
                if response.status().is_success()
                    && recovery.attempt_dialect() != dialect
                    && !readable_stream(response.headers()) =>
            {
                StreamFailure::new(
                    FailureClass::Malformed,
                    "a fallback of another dialect did not answer with a readable event stream",
                )
            }
            Ok(response) if response.status().is_success() => {
                return Ok(watch_racing(response, recovery, rival));
            }
            Ok(response) => {
                let status = response.status();
                let retry_after = retry_after(response.headers());
                let (mut parts, body) = response.into_parts();
                let read = read_error_body(body, idle).await;
                let class = recovery.status_class(status, read.bytes());
                if is_first && !worth_a_plan(class) {
                    // A client error (a 400 other than a prompt too long): the client gets it
                    // as it came, after one call.
                    let mut response =
                        respond_read(parts, read, Some(dialect), &recovery.config.redactor);
                    // The hedge would get the same.
                    recovery.race_won(false);
                    recovery.pass_on(&mut response);
                    return Ok(response);
                }
                let (error_type, message) =
                    describe_error_body(read.bytes(), &recovery.config.redactor);
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
                    retry_after,
                }
            }
            Err(failure) => failure,
        };
        is_first = false;
        if let Some(hedge) = rival.take() {
            recovery.racer_failed(failure, false);
            let (sent, timing) = recovery.deadlines();
            outcome = within(sent, timing.first_token, hedge).await;
            continue;
        }
        let failure = failure.redacted(&recovery.config.redactor);
        match recovery.on_failure(failure, &transcript) {
            Ok((request, _strategy)) => {
                let call = recovery.call(request);
                let (sent, timing) = recovery.deadlines();
                outcome = within(sent, timing.first_token, call).await;
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

/// An attempt's response, or its failure: a connection error, or no headers within its
/// first-token deadline (which counts from `sent`, after any wait its plan asked for).
async fn within<F, B, E>(
    sent: tokio::time::Instant,
    first_token: Option<Duration>,
    call: F,
) -> Result<Response<B>, StreamFailure>
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    let answered = match first_token {
        Some(deadline) => tokio::time::timeout_at(sent + deadline, call).await,
        None => Ok(call.await),
    };
    match answered {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => {
            let err: BoxError = err.into();
            Err(StreamFailure::new(FailureClass::Connect, describe(&*err)))
        }
        Err(_) => Err(StreamFailure::new(
            FailureClass::Stall,
            format!(
                "the fallback sent no response headers within the first-token deadline of {}",
                human(first_token.unwrap_or_default())
            ),
        )),
    }
}

/// A failed response the client gets as the upstream sent it, except that its body is read
/// (up to 64 KiB, within the idle timeout) to take secrets out of it: an upstream may quote the
/// key it was sent. A body that cannot be read whole becomes an error with the same status,
/// saying so: in the client's dialect, or plain text for a request of no known dialect.
pub(crate) async fn pass_on_error<ResBody>(
    response: Response<ResBody>,
    dialect: Option<Dialect>,
    config: &Config,
) -> Response<FallbackBody<ResBody>>
where
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let read = read_error_body(body, config.idle_timeout).await;
    respond_read(parts, read, dialect, &config.redactor)
}

/// Whether a failure of the first attempt goes to the planner: a retryable status, a prompt
/// too long for the model, or no response at all. Other statuses go to the client as they came.
fn worth_a_plan(class: FailureClass) -> bool {
    match class {
        FailureClass::Status(status) => crate::recovery::retryable(status),
        _ => true,
    }
}

/// A failed response with its body as read: redacted, or an error saying why it could not be
/// read whole.
fn respond_read<ResBody>(
    mut parts: http::response::Parts,
    read: ErrorBody,
    dialect: Option<Dialect>,
    redactor: &Redactor,
) -> Response<FallbackBody<ResBody>> {
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
        Some(bytes) => {
            Response::from_parts(parts, FallbackBody::full(redact_body(bytes, redactor)))
        }
        None => {
            let why = why.unwrap_or_default();
            let mut response = match dialect {
                Some(dialect) => error_response(dialect, parts.status, &ErrorKind::Upstream, &why),
                None => plain_text(parts.status, &why),
            };
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
