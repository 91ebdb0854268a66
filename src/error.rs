//! What went wrong, attempt by attempt.

use std::fmt;
use std::sync::Arc;

use http::StatusCode;

use crate::strategy::Strategy;

/// The error type of bodies and services the layer does not name.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every attempt failed (or the planner gave up): the original failure and all that followed.
///
/// The client gets this as an error in its own dialect that names the *original* failure;
/// Rust callers get it typed, from [`FallbackBody::fallback_error`](crate::FallbackBody::fallback_error)
/// once the body has ended, or from the extensions of a response the layer had to make itself
/// because no attempt produced one.
#[derive(Debug, Clone)]
pub struct FallbackError {
    attempts: Arc<[AttemptError]>,
    reason: Arc<str>,
}

/// How one attempt failed.
#[derive(Debug, Clone)]
pub struct AttemptError {
    pub(crate) attempt: u32,
    pub(crate) target: Option<Arc<str>>,
    pub(crate) strategy: Option<Strategy>,
    pub(crate) class: FailureClass,
    pub(crate) detail: Arc<str>,
    /// The upstream's own error type (`overloaded_error`...), named to the client.
    pub(crate) error_type: Option<Arc<str>>,
    /// How long its failed response asked to wait (`Retry-After`, `retry-after-ms`).
    pub(crate) retry_after: Option<std::time::Duration>,
    /// It was a hedge, started to race a slow attempt.
    pub(crate) hedge: bool,
}

impl AttemptError {
    /// 1 for the request as the client sent it, 2 for the first fallback, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Where this attempt went: the model the client asked for on the first attempt (`None`
    /// if the body names none), then the target the planner chose.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// How this attempt continued the answer (`None` for the first).
    pub fn strategy(&self) -> Option<&Strategy> {
        self.strategy.as_ref()
    }

    /// Whether it was a hedge, started beside a slow attempt to race it
    /// ([`Attempt::is_hedge`](crate::Attempt::is_hedge)).
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }

    /// What kind of failure ended it ([`FailureClass::LostRace`] for a hedge race's loser,
    /// cancelled rather than failed).
    pub fn class(&self) -> FailureClass {
        self.class
    }

    /// What the upstream said or did, in words.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// How long its failed response asked to wait before a retry (`Retry-After` in seconds
    /// or as an HTTP date, or `retry-after-ms`), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }
}

impl FallbackError {
    pub(crate) fn new(attempts: Vec<AttemptError>, reason: impl Into<Arc<str>>) -> Self {
        debug_assert!(!attempts.is_empty());
        FallbackError {
            attempts: attempts.into(),
            reason: reason.into(),
        }
    }

    /// The failure that started it all: what the client is told about. A hedge race's loser,
    /// cancelled, is no failure: the first attempt that did fail.
    pub fn original(&self) -> &AttemptError {
        &self.attempts[self.original_at()]
    }

    fn original_at(&self) -> usize {
        self.attempts
            .iter()
            .position(|a| a.class != FailureClass::LostRace)
            .unwrap_or(0)
    }

    /// Every attempt that failed, or lost a hedge race, in the order they ended: the original
    /// first, unless a race's loser ended before it.
    pub fn attempts(&self) -> &[AttemptError] {
        &self.attempts
    }

    /// Why no further attempt was made.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The message shown to the client: the original failure first.
    pub(crate) fn client_message(&self) -> String {
        let original = self.original();
        let mut msg = format!("{} ({})", original.detail, original.class);
        let failed = self
            .attempts
            .iter()
            .filter(|a| a.class != FailureClass::LostRace)
            .count();
        let more = failed.saturating_sub(1);
        if more > 0 {
            msg.push_str(&format!(
                "; {more} fallback attempt{} also failed",
                if more == 1 { "" } else { "s" }
            ));
        }
        msg
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt {}", self.attempt)?;
        if let Some(target) = &self.target {
            write!(f, " ({target}")?;
            if let Some(strategy) = &self.strategy {
                write!(f, ", {}", strategy.name())?;
            }
            if self.hedge {
                write!(f, ", hedge")?;
            }
            write!(f, ")")?;
        } else if self.hedge {
            write!(f, " (hedge)")?;
        }
        write!(f, ": {}: {}", self.class, self.detail)
    }
}

impl fmt::Display for FallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "upstream failed and fallback gave up ({}): {}",
            self.reason,
            self.original()
        )?;
        let original = self.original_at();
        for (_, other) in self
            .attempts
            .iter()
            .enumerate()
            .filter(|(n, _)| *n != original)
        {
            write!(f, "; then {other}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FallbackError {}

/// What kind of failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureClass {
    /// The inner service failed before response headers (connect error, reset).
    Connect,
    /// A response status that calls for a retry (408, 429, 500, 502, 503, 504, 529), or any
    /// non-success status from a fallback.
    Status(StatusCode),
    /// The body failed mid-stream (connection reset, incomplete message).
    Transport,
    /// No event arrived within the idle timeout.
    Stall,
    /// The upstream sent an error event in the stream (`overloaded_error`, `api_error`...).
    InBand,
    /// The body ended before the dialect's terminal event.
    Truncated,
    /// The upstream sent something that is not a usable event stream: an event over the size
    /// limit, an event that does not parse, a success response that is not SSE.
    Malformed,
    /// A fallback answered a prefill request with HTTP 400: it does not accept prefill after
    /// all. [`FallbackChain`](crate::FallbackChain) retries it once with the instruction.
    PrefillRejected,
    /// HTTP 400 saying the prompt is longer than the model's context window (OpenAI and
    /// compatible servers: `context_length_exceeded`, "maximum context length"; Anthropic:
    /// "prompt is too long"). [`FallbackChain`](crate::FallbackChain) restarts on a
    /// larger-context target if one is configured, else the 400 goes to the client as it came.
    ContextWindow,
    /// Not a failure: the attempt raced a hedge (or was one), and the other sent content
    /// first, so it was cancelled (its connection dropped). Listed in
    /// [`FallbackError::attempts`] so that the history names every attempt made.
    LostRace,
}

impl FailureClass {
    /// A short name for logs and metrics: `connect`, `status`, `transport`, `stall`, `in_band`,
    /// `truncated`, `malformed`, `prefill_rejected`, `context_window`, `lost_race`.
    pub fn name(self) -> &'static str {
        match self {
            FailureClass::Connect => "connect",
            FailureClass::Status(_) => "status",
            FailureClass::Transport => "transport",
            FailureClass::Stall => "stall",
            FailureClass::InBand => "in_band",
            FailureClass::Truncated => "truncated",
            FailureClass::Malformed => "malformed",
            FailureClass::PrefillRejected => "prefill_rejected",
            FailureClass::ContextWindow => "context_window",
            FailureClass::LostRace => "lost_race",
        }
    }

    /// The failure happened before any response body reached the client.
    pub fn before_stream(self) -> bool {
        matches!(
            self,
            FailureClass::Connect | FailureClass::Status(_) | FailureClass::ContextWindow
        )
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureClass::Status(status) => write!(f, "status {}", status.as_u16()),
            FailureClass::Connect => f.write_str("upstream unreachable"),
            FailureClass::Transport => f.write_str("stream broken"),
            FailureClass::Stall => f.write_str("stream stalled"),
            FailureClass::InBand => f.write_str("error event in stream"),
            FailureClass::Truncated => f.write_str("stream ended early"),
            FailureClass::Malformed => f.write_str("malformed stream"),
            FailureClass::PrefillRejected => f.write_str("prefill rejected"),
            FailureClass::ContextWindow => f.write_str("prompt too long"),
            FailureClass::LostRace => f.write_str("cancelled: lost the race"),
        }
    }
}
