//! What goes to the client next.
//!
//! Events forwarded verbatim that sit next to each other in the same upstream frame leave as
//! one slice of that frame, so a relayed frame costs the client one write, as in a bare proxy.
//! Everything else (parts of an event that spanned frames, rewritten or synthesized events)
//! is queued as its own `Bytes`. The queue keeps its capacity: steady state does not allocate.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

use crate::sse::Event;
use crate::untrusted::Redactor;

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Bytes>,
    /// The frame the current run of verbatim events lies in.
    frame: Bytes,
    run: Option<Range<usize>>,
    /// Takes secrets out of upstream error events passed on.
    redactor: Redactor,
}

impl Outbox {
    pub(crate) fn new(redactor: Redactor) -> Self {
        Outbox {
            redactor,
            ..Outbox::default()
        }
    }

    /// What takes secrets out of upstream words on their way to this client.
    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Forward an upstream's error event, secrets redacted: its message may quote the key the
    /// upstream was sent.
    pub(crate) fn forward_error(&mut self, ev: &Event<'_>) {
        match self.redactor.redact_bytes(ev.raw) {
            std::borrow::Cow::Borrowed(_) => self.forward(ev),
            std::borrow::Cow::Owned(redacted) => self.push(Bytes::from(redacted)),
        }
    }

    /// Queue an error event made of an upstream's words, secrets redacted.
    pub(crate) fn push_error(&mut self, bytes: Bytes) {
        match self.redactor.redact_bytes(&bytes) {
            std::borrow::Cow::Borrowed(_) => self.push(bytes),
            std::borrow::Cow::Owned(redacted) => self.push(Bytes::from(redacted)),
        }
    }

    /// Forward an event exactly as it came.
    pub(crate) fn forward(&mut self, ev: &Event<'_>) {
        if !ev.head.is_empty() {
            self.flush_run();
            for part in ev.head {
                self.push(part.clone());
            }
        }
        if ev.tail.is_empty() {
            return;
        }
        match &mut self.run {
            Some(run) if run.end == ev.tail.start && same_buffer(&self.frame, ev.frame) => {
                run.end = ev.tail.end;
            }
            _ => {
                self.flush_run();
                if !same_buffer(&self.frame, ev.frame) {
                    self.frame = ev.frame.clone();
                }
                self.run = Some(ev.tail.clone());
            }
        }
    }

    /// Queue bytes made here (a rewritten or synthesized event).
    pub(crate) fn push(&mut self, bytes: Bytes) {
        self.flush_run();
        if !bytes.is_empty() {
            self.queue.push_back(bytes);
        }
    }

    /// The next bytes for the client.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        if self.queue.is_empty() {
            self.flush_run();
        }
        self.queue.pop_front()
    }

    /// The frame's events are all handled: queue the last run, and let go of the frame, so
    /// that the upstream's connection can reuse its read buffer once the client has the bytes.
    pub(crate) fn end_frame(&mut self) {
        self.flush_run();
        self.frame = Bytes::new();
    }

    /// An empty outbox that redacts as this one does, to gather bytes to [`insert`](Self::insert).
    pub(crate) fn aside(&self) -> Outbox {
        Outbox::new(self.redactor.clone())
    }

    /// Where the next bytes will go, to [`insert`](Self::insert) bytes there later.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            queued: self.queue.len(),
            run: self.run.is_some(),
        }
    }

    /// Puts what `earlier` holds at `mark`, ahead of everything queued since.
    pub(crate) fn insert(&mut self, mark: Mark, mut earlier: Outbox) {
        earlier.flush_run();
        if earlier.queue.is_empty() {
            return;
        }
        // The run open at `mark` has been queued since, or is queued now: right after it.
        self.flush_run();
        let at = (mark.queued + usize::from(mark.run)).min(self.queue.len());
        let tail = self.queue.split_off(at);
        self.queue.extend(earlier.queue);
        self.queue.extend(tail);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.run.is_none()
    }

    fn flush_run(&mut self) {
        if let Some(run) = self.run.take() {
            self.queue.push_back(self.frame.slice(run));
        }
    }
}

/// A position in an [`Outbox`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    queued: usize,
    run: bool,
}

fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Framer;

    #[test]
    fn adjacent_verbatim_events_leave_as_one_slice_of_the_frame() {
        let frame = Bytes::from_static(b"data: a\n\ndata: b\n\ndata: c\n\n");
        let mut framer = Framer::new(1024);
        let mut out = Outbox::default();
        framer.push(frame.clone());
        while let Some(ev) = framer.next_event() {
            out.forward(&ev.unwrap());
        }
        let first = out.pop().unwrap();
        assert_eq!(first, frame);
        assert_eq!(first.as_ptr(), frame.as_ptr(), "no copy");
        assert!(out.pop().is_none());
    }

    #[test]
    fn a_pushed_event_splits_the_run_in_order() {
        let frame = Bytes::from_static(b"data: a\n\ndata: b\n\n");
        let mut framer = Framer::new(1024);
        let mut out = Outbox::default();
        framer.push(frame);
        let mut n = 0;
        while let Some(ev) = framer.next_event() {
            out.forward(&ev.unwrap());
            if n == 0 {
                out.push(Bytes::from_static(b"data: x\n\n"));
            }
            n += 1;
        }
        let got: Vec<Bytes> = std::iter::from_fn(|| out.pop()).collect();
        assert_eq!(
            got,
            vec![&b"data: a\n\n"[..], b"data: x\n\n", b"data: b\n\n"]
        );
    }
}
