//! Typed reports of what the layer did, for programs: metrics, billing, dashboards.
//!
//! The layer calls an [`Observer`] when each attempt ends and when each request ends. The same
//! facts go to `tracing` as spans (see the crate documentation); an observer gets them typed,
//! without parsing logs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::attempt::Attempt;
use crate::dialect::Dialect;
use crate::error::{FailureClass, FallbackError};

/// Told about every attempt and every request the layer watches. Set it with
/// [`MidStreamFallbackLayer::observer`](crate::MidStreamFallbackLayer::observer).
///
/// Called on the task that polls the response (or its body), at the moment the attempt or
/// request ends: keep it quick (count, enqueue), never block.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_midstream::{AttemptReport, Observer};
///
/// /// Output tokens per request, for billing, whichever upstream produced them.
/// #[derive(Default)]
/// struct Billing {
///     output_tokens: AtomicU64,
/// }
///
/// impl Observer for Billing {
///     fn attempt_ended(&self, attempt: &AttemptReport) {
///         let tokens = attempt.usage().output_tokens().unwrap_or(0);
///         self.output_tokens.fetch_add(tokens, Ordering::Relaxed);
///     }
/// }
/// ```
pub trait Observer: Send + Sync + 'static {
    /// An attempt ended: it completed the answer, failed, or the client went away.
    fn attempt_ended(&self, attempt: &AttemptReport) {
        let _ = attempt;
    }

    /// A request ended, after its last attempt.
    fn request_ended(&self, request: &RequestReport) {
        let _ = request;
    }
}

impl<O: Observer + ?Sized> Observer for Arc<O> {
    fn attempt_ended(&self, attempt: &AttemptReport) {
        (**self).attempt_ended(attempt)
    }

    fn request_ended(&self, request: &RequestReport) {
        (**self).request_ended(request)
    }
}

/// The observer of a layer, if any.
#[derive(Clone, Default)]
pub(crate) struct Observers(Option<Arc<dyn Observer>>);

impl Observers {
    pub(crate) fn new(observer: Arc<dyn Observer>) -> Self {
        Observers(Some(observer))
    }

    pub(crate) fn attempt_ended(&self, report: &AttemptReport) {
        if let Some(o) = &self.0 {
            o.attempt_ended(report);
        }
    }

    pub(crate) fn request_ended(&self, report: &RequestReport) {
        if let Some(o) = &self.0 {
            o.request_ended(report);
        }
    }

    /// No observer: reports need not be made (unless a span wants their fields).
    pub(crate) fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// Token counts and model as one upstream reported them for one attempt.
///
/// Only what the upstream said: a stream cut short never sent its final usage, so its output
/// tokens are `None` (the [`Transcript`](crate::Transcript) keeps lower bounds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) response_model: Option<Arc<str>>,
}

impl Usage {
    /// Prompt tokens (Anthropic `input_tokens`, OpenAI `prompt_tokens`).
    pub fn input_tokens(&self) -> Option<u64> {
        self.input_tokens
    }

    /// Generated tokens (Anthropic `output_tokens`, OpenAI `completion_tokens`), as reported at
    /// the end of the stream.
    pub fn output_tokens(&self) -> Option<u64> {
        self.output_tokens
    }

    /// The model that answered, as the upstream names it (it may differ from the one asked
    /// for: a dated version, a provider's own name).
    pub fn response_model(&self) -> Option<&str> {
        self.response_model.as_deref()
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Its stream reached the end of the answer (or only its closing events were missing, and
    /// the layer wrote them).
    Completed,
    /// Its response was passed to the client as it came, unwatched: a client error, or a
    /// success that is not an event stream (a non-streaming answer).
    PassedOn,
    /// It failed; the planner was asked what next.
    Failed(FailureClass),
    /// The client went away (the response or its body was dropped) while it was in flight.
    ClientGone,
    /// It raced a hedge (or was one) and the other sent content first: cancelled, its
    /// connection dropped. Not a failure of its target's.
    LostRace,
}

impl AttemptOutcome {
    /// `completed`, `passed_on`, `failed`, `client_gone` or `lost_race`.
    pub fn name(self) -> &'static str {
        match self {
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::PassedOn => "passed_on",
            AttemptOutcome::Failed(_) => "failed",
            AttemptOutcome::ClientGone => "client_gone",
            AttemptOutcome::LostRace => "lost_race",
        }
    }

    /// One label for how it ended, for metrics: the failure class ([`FailureClass::name`])
    /// when it failed, else [`name`](Self::name).
    pub fn class_name(self) -> &'static str {
        match self {
            AttemptOutcome::Failed(class) => class.name(),
            other => other.name(),
        }
    }
}

/// What one attempt did.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub(crate) attempt: Attempt,
    pub(crate) dialect: Dialect,
    pub(crate) outcome: AttemptOutcome,
    pub(crate) duration: Duration,
    pub(crate) time_to_first_chunk: Option<Duration>,
    pub(crate) fallback_gap: Option<Duration>,
    pub(crate) usage: Usage,
    pub(crate) sent_text_bytes: usize,
    pub(crate) sent_tokens: u32,
}

impl AttemptReport {
    /// The attempt: its number, target and strategy.
    pub fn attempt(&self) -> &Attempt {
        &self.attempt
    }

    /// The wire format of the request.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// How it ended.
    pub fn outcome(&self) -> AttemptOutcome {
        self.outcome
    }

    /// From the call to the inner service to the attempt's end.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// From the call to the inner service to the first bytes of this attempt's response that
    /// reached the client; `None` if none did.
    pub fn time_to_first_chunk(&self) -> Option<Duration> {
        self.time_to_first_chunk
    }

    /// For a fallback whose bytes reached the client: the pause the client saw, from the first
    /// failure since it last got bytes of the answer (later attempts may have failed too) to
    /// this attempt's first bytes.
    pub fn fallback_gap(&self) -> Option<Duration> {
        self.fallback_gap
    }

    /// Tokens and model, as the upstream reported them.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// Bytes of answer text the client had received when the attempt ended, all attempts so
    /// far included: what a continuation had to carry.
    pub fn sent_text_bytes(&self) -> usize {
        self.sent_text_bytes
    }

    /// At least this many output tokens produced the text the client had when the attempt
    /// ended ([`Transcript::kept_tokens`](crate::Transcript::kept_tokens)).
    pub fn sent_tokens(&self) -> u32 {
        self.sent_tokens
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// The client got a whole answer, on the first attempt or a fallback.
    Completed,
    /// An upstream's response went to the client as it came (a client error, or a response
    /// that is not an event stream).
    PassedOn,
    /// Every attempt failed, or the planner gave up: the client got an error naming the
    /// original failure.
    GaveUp,
    /// The client went away first.
    ClientGone,
}

impl RequestOutcome {
    /// `completed`, `passed_on`, `gave_up` or `client_gone`.
    pub fn name(self) -> &'static str {
        match self {
            RequestOutcome::Completed => "completed",
            RequestOutcome::PassedOn => "passed_on",
            RequestOutcome::GaveUp => "gave_up",
            RequestOutcome::ClientGone => "client_gone",
        }
    }
}

/// What one request came to, over all its attempts.
#[derive(Debug, Clone)]
pub struct RequestReport {
    pub(crate) dialect: Dialect,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) outcome: RequestOutcome,
    pub(crate) attempts: u32,
    pub(crate) served_by: Vec<Attempt>,
    pub(crate) duration: Duration,
    pub(crate) time_to_first_chunk: Option<Duration>,
    pub(crate) error: Option<FallbackError>,
}

impl RequestReport {
    /// The wire format of the request.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The `model` the client asked for, if its body names one.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// How it ended.
    pub fn outcome(&self) -> RequestOutcome {
        self.outcome
    }

    /// Attempts made, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The attempts whose response reached the client, in order (see
    /// [`Provenance`](crate::Provenance)).
    pub fn served_by(&self) -> &[Attempt] {
        &self.served_by
    }

    /// From the collected request to the end of the last attempt.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// From the collected request to the first bytes of the answer at the client.
    pub fn time_to_first_chunk(&self) -> Option<Duration> {
        self.time_to_first_chunk
    }

    /// Every attempt's failure, when the layer gave up.
    pub fn error(&self) -> Option<&FallbackError> {
        self.error.as_ref()
    }
}
