//! The request, collected once and replayed for every attempt.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, Request};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The request body the inner service receives.
    ///
    /// For requests the layer watches, the client's body was collected once into `Bytes`, and
    /// every attempt gets the same bytes (or a rewritten body) by refcount. Requests the layer
    /// does not watch (another path, opted out) keep their body as it came, streaming.
    ///
    /// With a hyper-util client inside the layer, that is
    /// `Client<HttpConnector, ReplayBody<hyper::body::Incoming>>`.
    #[derive(Debug)]
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Streaming { #[pin] body: B },
        Buffered { bytes: Option<Bytes> },
    }
}

impl<B> ReplayBody<B> {
    pub(crate) fn streaming(body: B) -> Self {
        ReplayBody {
            kind: Kind::Streaming { body },
        }
    }

    pub(crate) fn buffered(bytes: Bytes) -> Self {
        ReplayBody {
            kind: Kind::Buffered { bytes: Some(bytes) },
        }
    }

    /// The collected bytes, when the body was collected for replay.
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Buffered { bytes } => bytes.as_ref(),
            Kind::Streaming { .. } => None,
        }
    }

    /// A copy of a collected body (by refcount), for a retry layer inside this one; `None` for
    /// a streaming body, which cannot be replayed.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Buffered { bytes } => Some(ReplayBody {
                kind: Kind::Buffered {
                    bytes: bytes.clone(),
                },
            }),
            Kind::Streaming { .. } => None,
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Streaming { body } => body.poll_frame(cx),
            KindProj::Buffered { bytes } => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Streaming { body } => body.is_end_stream(),
            Kind::Buffered { bytes } => bytes.as_ref().map_or(true, |b| b.is_empty()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Streaming { body } => body.size_hint(),
            Kind::Buffered { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A copy of `original` (method, URI, version, headers, extensions) with a new body. A
/// `content-length` that no longer matches is dropped; the client connection sets its own.
pub(crate) fn rebuild(original: &Request<Bytes>, body: Bytes) -> Request<Bytes> {
    let mut req = Request::new(body);
    *req.method_mut() = original.method().clone();
    *req.uri_mut() = original.uri().clone();
    *req.version_mut() = original.version();
    *req.headers_mut() = original.headers().clone();
    *req.extensions_mut() = original.extensions().clone();
    if req.body().len() != original.body().len() {
        req.headers_mut().remove(header::CONTENT_LENGTH);
    }
    req
}

/// The request for the inner service.
pub(crate) fn to_inner<B>(req: Request<Bytes>) -> Request<ReplayBody<B>> {
    req.map(ReplayBody::buffered)
}

/// A request body being collected: a single frame stays as it came (no copy); more frames
/// are joined once.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    first: Option<Bytes>,
    rest: Option<BytesMut>,
    len: usize,
    /// Over the limit: the rest is read and dropped, counted here.
    discarded: Option<usize>,
}

/// How far past the limit a body is read (and dropped) so that its client can take the 413:
/// a server that answers and closes with the upload unread makes the client's kernel see a
/// reset, and the client a broken pipe instead of the answer.
pub(crate) fn drain_limit(limit: usize) -> usize {
    limit.saturating_mul(4)
}

impl Collected {
    /// Adds a frame; false once the body is over `limit` (what follows is dropped, not kept)
    /// and over the drain limit too, when reading on is no longer worth it.
    pub(crate) fn push_within(&mut self, data: Bytes, limit: usize) -> bool {
        if let Some(d) = &mut self.discarded {
            *d += data.len();
            return *d <= drain_limit(limit);
        }
        if self.len + data.len() > limit {
            self.discarded = Some(self.len + data.len());
            self.first = None;
            self.rest = None;
            return self.len + data.len() <= drain_limit(limit);
        }
        self.push(data);
        true
    }

    /// Whether the body went over the limit.
    pub(crate) fn over(&self) -> bool {
        self.discarded.is_some()
    }

    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        match (&self.first, &mut self.rest) {
            (None, _) => self.first = Some(data),
            (Some(_), Some(rest)) => rest.extend_from_slice(&data),
            (Some(first), None) => {
                let mut rest = BytesMut::with_capacity((first.len() + data.len()) * 2);
                rest.extend_from_slice(first);
                rest.extend_from_slice(&data);
                self.rest = Some(rest);
            }
        }
    }

    pub(crate) fn take(&mut self) -> Bytes {
        let out = match (self.first.take(), self.rest.take()) {
            (_, Some(rest)) => rest.freeze(),
            (Some(first), None) => first,
            (None, None) => Bytes::new(),
        };
        self.len = 0;
        out
    }
}
