//! Before the stream: further attempts after the first failed before any response reached
//! the client, and a failed response passed on as it came (its body read within bounds, to
//! take secrets out of it).

use std::borrow::Cow;
use std::convert::Infallible;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use crate::body::FallbackBody;
use crate::clock::human;
use crate::config::Config;
use crate::dialect::{describe_error_body, Dialect, ErrorKind, StreamFailure};
use crate::error::{BoxError, FailureClass};
use crate::plan::RetryPlanner;
use crate::recovery::Recovery;
use crate::replay::ReplayBody;
use crate::respond::{error_response, gave_up, readable_stream, watch};
use crate::transcript::Transcript;
use crate::untrusted::{describe, Redactor};

/// The most of a failed response's body kept to hand back if every fallback fails too.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Attempts after a failure before any response reached the client. Gives back the original
/// failed response (its body kept up to 64 KiB) if every attempt fails, or a 502 in the
/// client's dialect if the original failure had no response, or no whole body.
///
/// Every wait is bounded by the idle timeout: reading a failed response's body (what was read
/// by then is described in the error), and each fallback's response headers.
pub(crate) async fn before_stream<S, P, ReqBody, ResBody>(
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
            // From a target of another dialect, only an event stream the layer can read and
            // translate may reach the client.
            Some(Ok(response))
                if response.status().is_success()
                    && recovery.attempt_dialect() != dialect
                    && !readable_stream(response.headers()) =>
            {
                StreamFailure::new(
                    FailureClass::Malformed,
                    "a fallback of another dialect did not answer with a readable event stream",
                )
            }
            Some(Ok(response)) if response.status().is_success() => {
                return Ok(watch(response, recovery));
            }
            Some(Ok(response)) => {
                let status = response.status();
                let class = recovery.status_class(status);
                let (mut parts, body) = response.into_parts();
                let read = read_error_body(body, idle).await;
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
        let failure = failure.redacted(&recovery.config.redactor);
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
pub(crate) async fn pass_on_error<ResBody>(
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
