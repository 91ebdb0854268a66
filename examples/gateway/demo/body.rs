//! The demo's response body: events one per pace, then the end the fault script chose.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// How a demo body ends once its events are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Clean,
    /// The body errors: the server aborts the connection mid-body.
    Reset,
    /// Nothing more, ever.
    Stall,
}

/// A response body that sends its events one per `pace`, then ends as told.
pub struct DemoBody {
    events: VecDeque<Bytes>,
    pace: Duration,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    end: End,
    /// A reset waits one poll, so that the server flushes what was sent before it aborts.
    flushed: bool,
}

impl DemoBody {
    pub fn new(events: Vec<Bytes>, pace: Duration, end: End) -> Self {
        DemoBody {
            events: events.into(),
            pace,
            wait: None,
            end,
            flushed: false,
        }
    }

    pub fn full(bytes: Bytes) -> Self {
        DemoBody::new(vec![bytes], Duration::ZERO, End::Clean)
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(wait) = self.wait.as_mut() {
            std::task::ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        if let Some(event) = self.events.pop_front() {
            if !self.pace.is_zero() {
                self.wait = Some(Box::pin(tokio::time::sleep(self.pace)));
            }
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
        match self.end {
            End::Clean => Poll::Ready(None),
            End::Stall => Poll::Pending,
            End::Reset if !self.flushed => {
                self.flushed = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            End::Reset => {
                self.end = End::Clean;
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset (scripted by x-demo-fault)",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_empty() && self.end == End::Clean && self.wait.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.end, self.events.len()) {
            (End::Clean, 1) if self.pace.is_zero() => {
                SizeHint::with_exact(self.events[0].len() as u64)
            }
            _ => SizeHint::default(),
        }
    }
}
