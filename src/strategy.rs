//! How a fallback continues an answer, and what a target accepts.

use std::borrow::Cow;
use std::fmt;

/// How a target accepts the start of its own answer (an assistant "prefill").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Prefill {
    /// It does not: a trailing assistant message is rejected (Claude Sonnet 4.6, Opus 4.6 and
    /// later answer HTTP 400), or it is answered as a new turn. The safe default.
    #[default]
    None,
    /// A trailing assistant message is continued (Anthropic Messages, and OpenAI-compatible
    /// servers that continue a final assistant message on their own). For Anthropic, trailing
    /// whitespace is stripped, as the API requires.
    Assistant,
    /// A trailing assistant message with `"prefix": true` (DeepSeek beta, Mistral).
    Prefix,
    /// A trailing assistant message with `"continue_final_message": true,
    /// "add_generation_prompt": false` at the top level (vLLM).
    ContinueFinalMessage,
}

impl Prefill {
    /// The name used in configuration files: `none`, `assistant`, `prefix`,
    /// `continue_final_message`.
    pub fn name(self) -> &'static str {
        match self {
            Prefill::None => "none",
            Prefill::Assistant => "assistant",
            Prefill::Prefix => "prefix",
            Prefill::ContinueFinalMessage => "continue_final_message",
        }
    }
}

impl std::str::FromStr for Prefill {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Prefill::None),
            "assistant" => Ok(Prefill::Assistant),
            "prefix" => Ok(Prefill::Prefix),
            "continue_final_message" => Ok(Prefill::ContinueFinalMessage),
            other => Err(format!(
                "unknown prefill `{other}`: expected one of none, assistant, prefix, continue_final_message"
            )),
        }
    }
}

/// The default text of the continue instruction.
pub const DEFAULT_INSTRUCTION: &str = "Your previous response was cut off. Continue it exactly \
where it stopped, mid-word if need be, without repeating anything and without any preamble.";

/// How the next attempt continues the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Send the original request (model swapped). Invisible while nothing reached the client;
    /// afterwards the client sees the partial answer followed by the new one, except for a
    /// beginning identical to what it already has, which is dropped.
    Restart,
    /// Append the partial answer as an assistant message the target continues.
    Prefill(Prefill),
    /// Append the partial answer as an assistant message, then a short user message asking to
    /// continue exactly where it stopped. For targets that reject prefill. No system prompt
    /// is added or changed.
    Instruction(Cow<'static, str>),
}

impl Strategy {
    /// [`Strategy::Instruction`] with [`DEFAULT_INSTRUCTION`].
    pub fn instruction() -> Self {
        Strategy::Instruction(Cow::Borrowed(DEFAULT_INSTRUCTION))
    }

    /// `restart`, `prefill` or `instruction`.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Restart => "restart",
            Strategy::Prefill(_) => "prefill",
            Strategy::Instruction(_) => "instruction",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Prefill(p) => write!(f, "prefill ({})", p.name()),
            other => f.write_str(other.name()),
        }
    }
}

/// A request body that cannot be rewritten for the next attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteError {
    message: Cow<'static, str>,
}

impl RewriteError {
    pub(crate) fn new(message: impl Into<Cow<'static, str>>) -> Self {
        RewriteError {
            message: message.into(),
        }
    }
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RewriteError {}
