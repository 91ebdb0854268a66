//! The responses the layer hands the client: a successful one wrapped (watched when it is an
//! event stream it can read), and the ones it makes itself, each in the client's dialect.

use std::borrow::Cow;
use std::pin::Pin;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use crate::body::FallbackBody;
use crate::dialect::{Dialect, ErrorKind};
use crate::error::{BoxError, FallbackError};
use crate::plan::RetryPlanner;
use crate::recovery::{client_error, unwatched_failure, Call, Recovery};
use crate::replay::ReplayBody;
use crate::stream::Watch;
use crate::untrusted::{escaped, Redactor};

/// Wraps a successful response: an event stream is watched, anything else passes through.
pub(crate) fn watch<S, P, ReqBody, ResBody>(
    response: Response<ResBody>,
    recovery: Recovery<S, P>,
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
    watch_racing(response, recovery, None)
}

/// [`watch`], while the response's attempt races `rival` (a hedge, or the first attempt when
/// the hedge answered first): the race goes on in the body, until one of them sends content.
/// A response that is passed on as it came ends the race (the rival is dropped).
pub(crate) fn watch_racing<S, P, ReqBody, ResBody>(
    mut response: Response<ResBody>,
    mut recovery: Recovery<S, P>,
    rival: Option<Pin<Box<Call<S, ReqBody>>>>,
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
        recovery.race_won(false);
        recovery.pass_on(&mut response);
        return response.map(FallbackBody::plain);
    }
    if let Some(coding) = content_coding(response.headers()) {
        // Compressed bytes are not readable SSE, and no event of ours may be written into
        // them: the response passes on as it came (a decompression layer inside this one
        // gets such responses watched). Fallback is then off without anyone having asked:
        // the operator hears of it, once per response.
        tracing::warn!(
            target: "tower_midstream",
            content_encoding = %escaped(coding),
            "an encoded event stream passes through unwatched, without fallback: ask the \
             upstream for `accept-encoding: identity`, or decompress inside the layer"
        );
        recovery.race_won(false);
        recovery.pass_on(&mut response);
        return response.map(FallbackBody::plain);
    }
    recovery.respond(&mut response);
    let (mut parts, body) = response.into_parts();
    // The relayed stream may differ in length from the upstream's.
    parts.headers.remove(header::CONTENT_LENGTH);
    let watched = match rival {
        Some(rival) => Watch::racing(body, recovery, rival),
        None => Watch::new(body, recovery),
    };
    Response::from_parts(parts, FallbackBody::watched(Box::pin(watched)))
}

/// An event stream in plain bytes: what the layer can read.
pub(crate) fn readable_stream(headers: &http::HeaderMap) -> bool {
    is_event_stream(headers) && content_coding(headers).is_none()
}

pub(crate) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The response's content coding, unless it is plain (`identity` or none): encoded bytes are
/// not readable SSE.
pub(crate) fn content_coding(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_ENCODING)?;
    let text = value.to_str().unwrap_or("(not text)").trim();
    (!text.is_empty() && !text.eq_ignore_ascii_case("identity")).then_some(text)
}

/// 502 in the client's dialect, naming the original failure; the error in its extensions.
pub(crate) fn gave_up<B>(dialect: Dialect, err: FallbackError) -> Response<FallbackBody<B>> {
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
            let message = format!("upstream unavailable: {}", err.client_message());
            let mut response = plain_text(StatusCode::BAD_GATEWAY, &message);
            response.extensions_mut().insert(err);
            response
        }
    }
}

/// An error for a request of no known dialect: plain text.
pub(crate) fn plain_text<B>(status: StatusCode, message: &str) -> Response<FallbackBody<B>> {
    let mut response = Response::new(FallbackBody::full(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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

pub(crate) fn error_response<B>(
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
