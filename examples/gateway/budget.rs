//! The process-wide budget for request bodies (`server.max_request_bytes_held`).
//!
//! A watched request's body is collected and kept until its *answer* ends, since a fallback
//! gets it again; a slow answer (large `max_tokens`) keeps it for minutes. Connection and
//! stream limits alone would let 512 connections x 32 streams x `max_request_bytes` pin tens
//! of GiB, so every POST reserves what it may hold before anything reads its body:
//! `content-length` (at most `max_request_bytes`), or `max_request_bytes` when the length is
//! not known, cut down to what arrived once the body ends. The reservation is given back when
//! the response body is dropped. A request that does not fit gets a 503 at once, in the
//! client's dialect, with `retry-after`: waiting instead would let half-read bodies hold the
//! budget while each waits for more.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// How many request-body bytes the process may hold at once.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    held: AtomicUsize,
    /// When the full budget was last logged: at most one warning every ten seconds.
    last_warning: Mutex<Option<Instant>>,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
            limit,
            held: AtomicUsize::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// Reserves `bytes`, or says (with a warning, now and then) that they do not fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Arc<Reservation>, BudgetFull> {
        let fits = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            });
        match fits {
            Ok(_) => Ok(Arc::new(Reservation {
                budget: self.clone(),
                bytes: AtomicUsize::new(bytes),
            })),
            Err(held) => {
                self.warn_full(held, bytes);
                Err(BudgetFull)
            }
        }
    }

    fn warn_full(&self, held: usize, wanted: usize) {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            target: "gateway",
            max_request_bytes_held = self.limit,
            held,
            wanted,
            "request body budget full: new requests get 503 until answers in flight end \
             (server.max_request_bytes_held)"
        );
    }
}

/// A request's body does not fit in what is left of the budget.
#[derive(Debug)]
pub struct BudgetFull;

/// Bytes of the budget one request holds; given back when the last clone is dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: AtomicUsize,
}

impl Reservation {
    /// Gives back everything beyond `bytes`; never grows.
    fn shrink_to(&self, bytes: usize) {
        let before = self.bytes.fetch_min(bytes, Ordering::AcqRel);
        if before > bytes {
            self.budget.held.fetch_sub(before - bytes, Ordering::AcqRel);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        self.budget.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

pin_project! {
    /// A request body that counts its bytes and, once it ends, gives back the part of its
    /// reservation that did not arrive.
    pub struct Counted<B> {
        #[pin]
        body: B,
        arrived: usize,
        reservation: Option<Arc<Reservation>>,
    }
}

impl<B> Counted<B> {
    pub fn new(body: B, reservation: Option<Arc<Reservation>>) -> Self {
        Counted {
            body,
            arrived: 0,
            reservation,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.body.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.arrived = this.arrived.saturating_add(data.len());
                }
            }
            Some(Err(_)) => {}
            None => {
                if let Some(reservation) = this.reservation {
                    reservation.shrink_to(*this.arrived);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// A response body that keeps its request's reservation until it is dropped: the request
    /// body is held (for replay) as long as the answer runs.
    pub struct Held<B> {
        #[pin]
        body: B,
        _reservation: Option<Arc<Reservation>>,
    }
}

impl<B> Held<B> {
    pub fn new(body: B, reservation: Option<Arc<Reservation>>) -> Self {
        Held {
            body,
            _reservation: reservation,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Held<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
