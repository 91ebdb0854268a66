//! Wire formats. Everything about one format lives in its own file: which requests it serves,
//! how to read its events, what the client has been given, how to splice a fallback's stream
//! on, how to rewrite a request for each strategy, and how to tell the client about an error.
//!
//! Adding a format (say the OpenAI Responses API) is one new file implementing [`Spec`] and
//! [`Relay`], and one line in [`REGISTRY`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use crate::error::FailureClass;
use crate::json::RequestIndex;
use crate::observe::Usage;
use crate::outbox::Outbox;
use crate::sse::{Event, Fields};
use crate::strategy::{RewriteError, Strategy};
use crate::transcript::Transcript;
use crate::untrusted::escaped;

mod anthropic;
mod openai_chat;

/// The wire format of a request and its stream.
///
/// By default the layer recognizes it from the request path (`…/messages` for Anthropic
/// Messages, `…/chat/completions` for OpenAI Chat Completions) and passes any other request
/// through untouched. Fix it for a whole layer with
/// [`MidStreamFallbackLayer::dialect`](crate::MidStreamFallbackLayer::dialect), or for one
/// request by inserting a `Dialect` into its extensions.
#[derive(Clone, Copy)]
pub struct Dialect(&'static dyn Spec);

impl Dialect {
    /// Anthropic Messages (`POST /v1/messages`).
    pub const ANTHROPIC_MESSAGES: Dialect = Dialect(&anthropic::AnthropicMessages);
    /// OpenAI Chat Completions (`POST /v1/chat/completions`) and compatible servers.
    pub const OPENAI_CHAT: Dialect = Dialect(&openai_chat::OpenAiChat);

    /// `anthropic` or `openai-chat`.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The dialect whose endpoint `path` is, if any.
    pub fn from_path(path: &str) -> Option<Dialect> {
        REGISTRY.iter().copied().find(|d| d.0.handles(path))
    }

    /// The dialect called `name` (`anthropic`, `openai-chat`).
    pub fn from_name(name: &str) -> Option<Dialect> {
        REGISTRY.iter().copied().find(|d| d.name() == name)
    }

    pub(crate) fn spec(&self) -> &'static dyn Spec {
        self.0
    }
}

/// Every known dialect, in the order paths are matched.
const REGISTRY: &[Dialect] = &[Dialect::ANTHROPIC_MESSAGES, Dialect::OPENAI_CHAT];

impl fmt::Debug for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Dialect").field(&self.name()).finish()
    }
}

impl PartialEq for Dialect {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Dialect {}

/// What a wire format knows about requests and errors.
pub(crate) trait Spec: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Whether `path` is this format's generation endpoint.
    fn handles(&self, path: &str) -> bool;

    /// A watcher for one response stream.
    fn relay(&self, limits: &Limits) -> Box<dyn Relay>;

    /// An error response body in this format.
    fn error_body(&self, kind: &ErrorKind, message: &str) -> Bytes;

    /// Whether the request may end with an assistant prefill at all.
    fn prefill_allowed(&self, index: &RequestIndex) -> bool;

    /// The body for the next attempt.
    fn rewrite(
        &self,
        body: &[u8],
        index: &RequestIndex,
        target: &str,
        strategy: &Strategy,
        continuation: &Continuation<'_>,
    ) -> Result<Bytes, RewriteError>;
}

/// Watches one response stream across attempts: reads each event, decides what the client
/// gets (as it came, held back, rewritten, dropped), records the transcript, and joins the
/// streams of later attempts on.
pub(crate) trait Relay: Send {
    /// One complete event of the current attempt.
    fn on_event(&mut self, ev: &Event<'_>, fields: &Fields<'_>, out: &mut Outbox) -> Step;

    /// The current attempt's body ended.
    fn on_end(&mut self, out: &mut Outbox) -> Step;

    /// What the client has been given.
    fn transcript(&self) -> &Transcript;

    /// What the current attempt's upstream reported about its tokens and model.
    fn usage(&self) -> Usage;

    /// If the client has the whole answer and only closing events are missing, write them and
    /// return true.
    fn finish(&mut self, out: &mut Outbox) -> bool;

    /// The current attempt failed: drop what it held back and count what it spent.
    fn abandon(&mut self);

    /// The events that follow come from a new attempt made with `strategy`.
    fn splice(&mut self, strategy: &Strategy);

    /// End the stream with an error event in this format.
    fn give_up(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox);
}

/// What a relay says after an event.
#[derive(Debug)]
pub(crate) enum Step {
    Continue,
    /// The terminal event went out: the stream is complete.
    Done,
    Fail(StreamFailure),
}

/// A failure seen inside a stream.
#[derive(Debug)]
pub(crate) struct StreamFailure {
    pub(crate) class: FailureClass,
    pub(crate) detail: String,
    /// The upstream's own error type (`overloaded_error`...), to name to the client.
    pub(crate) error_type: Option<Arc<str>>,
}

impl StreamFailure {
    pub(crate) fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        StreamFailure {
            class,
            detail: detail.into(),
            error_type: None,
        }
    }
}

/// The `type` and `message` of an error body (`{"error":{"type":..,"message":..}}`, the shape
/// both Anthropic and OpenAI use), for naming a failure.
pub(crate) fn describe_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Outer {
        error: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "type")]
        kind: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Outer>(body)
        .ok()
        .and_then(|o| o.error)
    {
        // Upstream words, bound for logs and the client: control characters escaped here.
        Some(inner) => (
            inner.kind.as_deref().map(escaped),
            inner.message.as_deref().map(escaped),
        ),
        None => (None, None),
    }
}

/// Limits a relay keeps to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) transcript: usize,
    pub(crate) held: usize,
}

/// The part of the answer a rewritten request continues from.
#[derive(Debug)]
pub(crate) struct Continuation<'a> {
    pub(crate) text: &'a str,
    pub(crate) kept_tokens: u32,
}

/// The kind of an error told to the client, mapped to each format's error types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    TooLarge,
    BadRequest,
    Overloaded,
    RateLimited,
    Timeout,
    Upstream,
    /// The upstream's own error type, passed on.
    Named(Arc<str>),
}

impl ErrorKind {
    /// The kind to report for an original failure.
    pub(crate) fn of(class: FailureClass, error_type: Option<&Arc<str>>) -> ErrorKind {
        if let Some(t) = error_type {
            return ErrorKind::Named(t.clone());
        }
        match class {
            FailureClass::Status(StatusCode::TOO_MANY_REQUESTS) => ErrorKind::RateLimited,
            FailureClass::Status(s)
                if s.as_u16() == 529 || s == StatusCode::SERVICE_UNAVAILABLE =>
            {
                ErrorKind::Overloaded
            }
            FailureClass::Status(StatusCode::GATEWAY_TIMEOUT)
            | FailureClass::Status(StatusCode::REQUEST_TIMEOUT)
            | FailureClass::Stall => ErrorKind::Timeout,
            _ => ErrorKind::Upstream,
        }
    }
}

/// Drops, at the seam, text the client already has: an echo of the whole partial answer, and
/// whitespace that the request had to strip and the model sent again.
#[derive(Debug)]
pub(crate) struct SeamText {
    echo: String,
    ws: String,
    pending: String,
    phase: SeamPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeamPhase {
    Echo,
    Whitespace,
    Through,
}

impl SeamText {
    /// `echo`: what a model that repeats the answer so far would send first; `ws`: whitespace
    /// the client has that the request left out.
    pub(crate) fn new(echo: &str, ws: &str) -> Self {
        SeamText {
            echo: echo.to_owned(),
            ws: ws.to_owned(),
            pending: String::new(),
            phase: if !echo.is_empty() {
                SeamPhase::Echo
            } else if !ws.is_empty() {
                SeamPhase::Whitespace
            } else {
                SeamPhase::Through
            },
        }
    }

    /// Whether the filter still changes text.
    pub(crate) fn active(&self) -> bool {
        self.phase != SeamPhase::Through
    }

    /// Appends to `out` what of `piece` the client should get now.
    pub(crate) fn filter(&mut self, piece: &str, out: &mut String) {
        match self.phase {
            SeamPhase::Through => out.push_str(piece),
            SeamPhase::Echo => {
                self.pending.push_str(piece);
                if self.echo.starts_with(self.pending.as_str()) {
                    if self.pending.len() == self.echo.len() {
                        self.pending.clear();
                        self.phase = self.after_echo();
                    }
                    return;
                }
                let pending = std::mem::take(&mut self.pending);
                self.phase = self.after_echo();
                let rest = pending.strip_prefix(self.echo.as_str()).unwrap_or(&pending);
                self.filter(rest, out);
            }
            SeamPhase::Whitespace => {
                let mut keep = piece;
                while let (Some(a), Some(b)) = (self.ws.chars().next(), keep.chars().next()) {
                    if a != b {
                        break;
                    }
                    self.ws.drain(..a.len_utf8());
                    keep = &keep[b.len_utf8()..];
                }
                if !keep.is_empty() || self.ws.is_empty() {
                    self.phase = SeamPhase::Through;
                }
                out.push_str(keep);
            }
        }
    }

    /// The continuation ended: anything held while it looked like an echo goes out after all.
    pub(crate) fn flush(&mut self, out: &mut String) {
        if self.phase == SeamPhase::Echo {
            let pending = std::mem::take(&mut self.pending);
            self.phase = self.after_echo();
            self.filter(&pending, out);
        }
        self.phase = SeamPhase::Through;
    }

    fn after_echo(&self) -> SeamPhase {
        if self.ws.is_empty() {
            SeamPhase::Through
        } else {
            SeamPhase::Whitespace
        }
    }
}

/// `event: NAME\ndata: JSON\n\n` (or a data-only event without a name).
pub(crate) fn sse_event(name: Option<&str>, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 32);
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seam: &mut SeamText, pieces: &[&str]) -> String {
        let mut out = String::new();
        for p in pieces {
            seam.filter(p, &mut out);
        }
        seam.flush(&mut out);
        out
    }

    #[test]
    fn an_echo_of_the_partial_answer_is_dropped() {
        let mut s = SeamText::new("Hello wor", "");
        assert_eq!(run(&mut s, &["Hel", "lo w", "orld", " again"]), "ld again");
    }

    #[test]
    fn text_that_only_starts_like_the_echo_is_kept() {
        let mut s = SeamText::new("Hello", "");
        assert_eq!(run(&mut s, &["Hel", "p me"]), "Help me");
    }

    #[test]
    fn stripped_whitespace_sent_again_is_dropped_once() {
        let mut s = SeamText::new("", " \n");
        assert_eq!(run(&mut s, &[" ", "\nnext \n"]), "next \n");
        let mut s = SeamText::new("", "\n\n");
        assert_eq!(run(&mut s, &["\nX"]), "X");
    }

    #[test]
    fn a_short_continuation_that_matched_the_echo_is_released_at_the_end() {
        let mut s = SeamText::new("Hello world", "");
        assert_eq!(run(&mut s, &["Hello"]), "Hello");
    }
}
