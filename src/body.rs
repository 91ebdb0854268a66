//! The response body the layer returns.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::BoxError;
use crate::error::FallbackError;
use crate::provenance::Provenance;
use crate::replay::ReplayBody;
use crate::stream::Watch;

pin_project! {
    /// The body of every response from [`MidStreamFallback`](crate::MidStreamFallback).
    ///
    /// A watched event stream relays the upstream's events, and after a failure the events of
    /// the fallback, as one stream. Any other response passes through untouched, and responses
    /// the layer makes itself (413, or an error when no attempt produced a response) carry
    /// their bytes.
    pub struct FallbackBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Plain { #[pin] body: B },
        Full { bytes: Option<Bytes> },
        Watched { body: Pin<Box<dyn Watched>> },
    }
}

/// The watched stream with its service and planner types erased, so that the body type
/// names only the upstream body.
pub(crate) trait Watched: Body<Data = Bytes, Error = BoxError> + Send {
    fn fallback_error(&self) -> Option<&FallbackError>;
    fn provenance(&self) -> &Provenance;
}

impl<S, P, ReqBody, ResBody> Watched for Watch<S, P, ReqBody, ResBody>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = http::Response<ResBody>> + Clone + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    P: crate::plan::RetryPlanner + Send,
    ReqBody: Send,
    ResBody: Body<Data = Bytes> + Send,
    ResBody::Error: Into<BoxError>,
{
    fn fallback_error(&self) -> Option<&FallbackError> {
        Watch::fallback_error(self)
    }

    fn provenance(&self) -> &Provenance {
        Watch::provenance(self)
    }
}

impl<B> FallbackBody<B> {
    pub(crate) fn plain(body: B) -> Self {
        FallbackBody {
            kind: Kind::Plain { body },
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        FallbackBody {
            kind: Kind::Full { bytes: Some(bytes) },
        }
    }

    pub(crate) fn watched(body: Pin<Box<dyn Watched>>) -> Self {
        FallbackBody {
            kind: Kind::Watched { body },
        }
    }

    /// Why the stream ended with an error event, once it has: every attempt's failure, the
    /// original first. `None` while streaming, and for streams that completed.
    pub fn fallback_error(&self) -> Option<&FallbackError> {
        match &self.kind {
            Kind::Watched { body } => body.fallback_error(),
            _ => None,
        }
    }

    /// The attempts whose response reached the client, for a watched stream: the same handle
    /// as the [`Provenance`] in the response's extensions.
    pub fn provenance(&self) -> Option<&Provenance> {
        match &self.kind {
            Kind::Watched { body } => Some(body.provenance()),
            _ => None,
        }
    }

    /// Whether the layer is watching this body (an event stream of a known dialect).
    pub fn is_watched(&self) -> bool {
        matches!(self.kind, Kind::Watched { .. })
    }
}

impl<B> Body for FallbackBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Plain { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Full { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            KindProj::Watched { body } => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { body } => body.is_end_stream(),
            Kind::Full { bytes } => bytes.is_none(),
            Kind::Watched { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { body } => body.size_hint(),
            Kind::Full { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Watched { .. } => SizeHint::default(),
        }
    }
}

impl<B> fmt::Debug for FallbackBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "plain",
            Kind::Full { .. } => "full",
            Kind::Watched { .. } => "watched",
        };
        f.debug_struct("FallbackBody").field("kind", &kind).finish()
    }
}
