//! The layer and its options.

use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::config::Config;
use crate::dialect::Dialect;
use crate::observe::{Observer, Observers};
use crate::reasoning::Reasoning;
use crate::service::MidStreamFallback;
use crate::untrusted::Redactor;

/// Applies [`MidStreamFallback`] to a service: streamed LLM responses that fail mid-way are
/// continued on a fallback, and the client sees one valid stream.
///
/// Every option has a default that suits a gateway; see each method.
///
/// ```
/// use std::time::Duration;
/// use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill};
///
/// let layer = MidStreamFallbackLayer::new(
///     FallbackChain::new()
///         .model("claude-sonnet-4-5", Prefill::Assistant)
///         .fallbacks("claude-sonnet-4-6", ["claude-sonnet-4-5"]),
/// )
/// .max_attempts(3)
/// .idle_timeout(Duration::from_secs(30));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct MidStreamFallbackLayer<P> {
    planner: P,
    config: Arc<Config>,
}

impl<P> MidStreamFallbackLayer<P> {
    /// A layer that asks `planner` what to do after each failure.
    pub fn new(planner: P) -> Self {
        MidStreamFallbackLayer {
            planner,
            config: Arc::new(Config::default()),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Attempts per request in all, the first included (default 3; at least 1, where 1 turns
    /// fallback off but still ends a failed stream with a proper error event).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config().max_attempts = attempts.max(1);
        self
    }

    /// A stream with no content for this long since its last has stalled and falls back
    /// (default 60 s; `None` never). Content is text, a tool call or reasoning: SSE comments,
    /// keep-alive events (Anthropic `ping`) and envelope events (a message's start, its stop
    /// reason, usage) show the connection is alive, not that the model is, and do not count.
    /// The wait for an attempt's first content is the
    /// [first-token deadline](Self::first_token_timeout)'s. A planner can set another for one
    /// target ([`Plan::idle_timeout`](crate::Plan::idle_timeout)).
    pub fn idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.config().idle_timeout = idle.into();
        self
    }

    /// An attempt with no content this long after it was sent has stalled and falls back
    /// (default 60 s; `None` never). It counts from the call to the inner service, so it also
    /// bounds the wait for response headers, and only content ends it (text, a tool call or
    /// reasoning; not pings, comments or envelope events). Before anything of the answer reached
    /// the client, the next target takes over invisibly. Allow for models that think silently
    /// before their first token; a planner can set another for one target
    /// ([`Plan::first_token_timeout`](crate::Plan::first_token_timeout)).
    pub fn first_token_timeout(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.config().first_token_timeout = deadline.into();
        self
    }

    /// Hedging the first token (off by default, `None`): when an attempt has sent no content
    /// (text, a tool call, reasoning; not pings, comments or envelope events) this long after
    /// it was sent, the next target the planner gives is started beside it, as a restart; the
    /// first of the two to send content wins and the other is cancelled (its response or
    /// connection dropped, nothing more read from it). tower's `hedge` races whole responses;
    /// this races the first token of a stream, whether or not the slow attempt's response
    /// headers are in.
    ///
    /// At most one hedge per request, and never once content reached the client; if the
    /// client already has the loser's envelope (a message's start), the winner is spliced on as
    /// a restart. The hedge's request carries [`Attempt::is_hedge`](crate::Attempt::is_hedge);
    /// it counts as an attempt ([`max_attempts`](Self::max_attempts), the planner's retry
    /// budget and circuits), but a cancelled loser is no failure for a circuit. If either fails
    /// while the other races on, the other simply goes on. The planner is asked for the hedge
    /// with [`Failure::is_hedge`](crate::Failure::is_hedge); a planner can set the delay for
    /// one target ([`Target::hedge_after`](crate::Target::hedge_after)).
    pub fn hedge_after(mut self, delay: impl Into<Option<Duration>>) -> Self {
        self.config().hedge_after = delay.into();
        self
    }

    /// While waiting for a fallback, send an SSE comment this often so that the client and
    /// timeouts outside this layer do not give up (default 5 s; `None` never).
    pub fn keep_alive(mut self, every: impl Into<Option<Duration>>) -> Self {
        self.config().keep_alive = every.into();
        self
    }

    /// The largest request body the layer collects for replay (default 4 MiB). A larger one is
    /// answered 413 in the client's dialect, and the inner service is not called. Up to four
    /// times the limit, the rest of the upload is read and dropped first, so that the client
    /// gets the answer rather than a connection reset mid-upload.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.config().max_request_bytes = bytes;
        self
    }

    /// The most answer text kept per stream for continuing it (default 1 MiB). A stream that
    /// has sent more cannot be continued: if it fails, the client gets an error event naming
    /// the failure (a new answer after the partial one only with
    /// [`WhenNoPrefill::Restart`](crate::WhenNoPrefill::Restart)).
    pub fn max_transcript_bytes(mut self, bytes: usize) -> Self {
        self.config().max_transcript_bytes = bytes;
        self
    }

    /// The largest single SSE event accepted from an upstream (default 1 MiB). A larger one is
    /// a malformed stream: memory stays bounded whatever the upstream sends.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.config().max_event_bytes = bytes;
        self
    }

    /// The most held back per stream while tool calls and reasoning blocks complete (default
    /// 4 MiB): everything held counts (ids, names, block starts, arguments, reasoning,
    /// signatures, deltas kept as they came, and each held block's bookkeeping). Beyond it the
    /// stream is malformed and falls back.
    pub fn max_held_bytes(mut self, bytes: usize) -> Self {
        self.config().max_held_bytes = bytes;
        self
    }

    /// Whether reasoning with nothing to wait for (OpenAI-compatible servers' reasoning
    /// deltas) streams live, the default, or is held until complete: see [`Reasoning`].
    pub fn reasoning(mut self, reasoning: Reasoning) -> Self {
        self.config().reasoning = reasoning;
        self
    }

    /// Takes secrets out of everything upstream-supplied that the layer logs or writes to a
    /// client: failure details and error types in logs, in [`FallbackError`](crate::FallbackError)
    /// and in the error events it writes, and in-band error events it passes on. By default
    /// (`Redactor::new()`), tokens that look like API keys (`sk-...`) or bearer credentials;
    /// give it the keys your upstreams are sent, so that an upstream quoting one is redacted
    /// whatever its shape. Control characters in that text are always escaped.
    pub fn redact(mut self, redactor: Redactor) -> Self {
        self.config().redactor = redactor;
        self
    }

    /// Treat every request as `dialect` instead of recognizing it by path.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.config().dialect = Some(dialect);
        self
    }

    /// Tell `observer` about every attempt and every request, typed (see [`Observer`]; with
    /// the `metrics` feature, `MetricsObserver` feeds the `metrics` facade). One observer per layer; wrap several in one of your own to fan out.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.config().observer = Observers::new(Arc::new(observer));
        self
    }
}

impl<S, P: Clone> Layer<S> for MidStreamFallbackLayer<P> {
    type Service = MidStreamFallback<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        MidStreamFallback::from_parts(inner, self.planner.clone(), self.config.clone())
    }
}
