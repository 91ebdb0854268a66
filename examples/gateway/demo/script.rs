//! The `x-demo-answer` and `x-demo-fault` headers: which answer, and how the stream fails.

use bytes::Bytes;

use super::answer::{self, Answer, Continuation};
use super::body::End;
use super::models::{self, DemoModel};
use super::{Ask, Wire};

/// The answer `x-demo-answer` picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Text,
    Tool,
    ParallelTools,
    Thinking,
    Refusal,
}

impl Shape {
    pub fn parse(value: Option<&str>, ask: &Ask) -> Result<Shape, String> {
        let shape = match value.map(str::trim) {
            None | Some("text") => Shape::Text,
            Some("tool") => Shape::Tool,
            Some("parallel-tools") => Shape::ParallelTools,
            Some("thinking") => Shape::Thinking,
            Some("refusal") => Shape::Refusal,
            Some(other) => {
                return Err(format!(
                    "unknown answer `{other}`: expected text, tool, parallel-tools, thinking or refusal"
                ))
            }
        };
        match (shape, ask.wire) {
            (Shape::Thinking, Wire::Chat) if ask.server.reasoning.is_none() => Err(format!(
                "`thinking` needs a server that streams reasoning (vllm, deepseek, openrouter), not `{}`",
                ask.server.name
            )),
            (Shape::Refusal, Wire::Anthropic | Wire::Vertex | Wire::Gemini) => {
                Err("`refusal` is for OpenAI Chat and Responses only".into())
            }
            _ => Ok(shape),
        }
    }

    /// The answer still due for a request of `ask` that carries `continuation`.
    pub fn answer(self, ask: &Ask, continuation: &Continuation) -> Answer {
        self.answer_from(answer::TEXT, ask, continuation)
    }

    /// The same answer with `text` in place of the canned text (Chat's second choice).
    pub fn answer_from(self, text: &'static str, ask: &Ask, continuation: &Continuation) -> Answer {
        let (text, tools): (&str, Vec<answer::Tool>) = match self {
            Shape::Text | Shape::Thinking | Shape::Refusal => (text, vec![]),
            Shape::Tool => (answer::TOOL_TEXT, vec![answer::PARIS]),
            Shape::ParallelTools => ("", vec![answer::PARIS, answer::TOKYO]),
        };
        let text = if self == Shape::Refusal {
            answer::REFUSAL
        } else {
            text
        };
        let reasoning = self == Shape::Thinking && shows_reasoning(ask);
        // The Responses API has no prefill: a trailing assistant item is not continued.
        let continues_from = match continuation {
            Continuation::Prefill(_) if ask.wire == Wire::Responses => 0,
            other => other.continues_from(text),
        };
        Answer {
            reasoning: reasoning.then_some(answer::THINKING),
            text: text[continues_from..].to_owned(),
            continues_from,
            tools,
            refusal: self == Shape::Refusal,
        }
    }
}

/// Whether the request asks to see reasoning, in its format's way.
fn shows_reasoning(ask: &Ask) -> bool {
    match ask.wire {
        Wire::Anthropic | Wire::Vertex => ask.body["thinking"]["type"] == "enabled",
        // Reasoning models always have a reasoning item; its summary is asked for apart.
        Wire::Responses => true,
        Wire::Chat => ask.server.reasoning.is_some(),
        Wire::Gemini => super::gemini::includes_thoughts(ask.body),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    None,
    Reset(Option<usize>),
    Stall(Option<usize>),
    Error(Option<String>, Option<usize>),
    /// Responses' `response.failed`, with its error code.
    Failed(Option<String>, Option<usize>),
    Truncate(Option<usize>),
    Status(u16),
}

/// The fault `header` scripts for `model`.
pub fn fault_for(model: &DemoModel, wire: Wire, header: Option<&str>) -> Result<Fault, String> {
    let Some(header) = header else {
        return Ok(if model.primary {
            Fault::Reset(None)
        } else {
            Fault::None
        });
    };
    for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (selector, fault) = match item.split_once('=') {
            Some((s, f)) => (Some(s.trim()), f.trim()),
            None => (None, item),
        };
        let fault = Fault::parse(fault)?;
        if matches!(fault, Fault::Failed(..)) && wire != Wire::Responses {
            return Err(format!("`{item}`: `failed` is for the Responses API only"));
        }
        let applies = match selector {
            None => model.primary,
            Some("all") => true,
            Some("fallbacks") => !model.primary,
            Some(name) if models::exists(name) => name == model.name,
            Some(name) => return Err(format!("no demo model is named `{name}`")),
        };
        if applies {
            return Ok(fault);
        }
    }
    Ok(Fault::None)
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at =
            |at: &Option<usize>| at.map_or("halfway".to_owned(), |n| format!("after {n} events"));
        match self {
            Fault::None => f.write_str("none"),
            Fault::Reset(n) => write!(f, "reset {}", at(n)),
            Fault::Stall(n) => write!(f, "stall {}", at(n)),
            Fault::Truncate(n) => write!(f, "truncate {}", at(n)),
            Fault::Error(kind, n) => {
                write!(
                    f,
                    "{} error event {}",
                    kind.as_deref().unwrap_or("in-band"),
                    at(n)
                )
            }
            Fault::Failed(code, n) => write!(
                f,
                "response.failed ({}) {}",
                code.as_deref().unwrap_or("server_error"),
                at(n)
            ),
            Fault::Status(status) => write!(f, "status {status}"),
        }
    }
}

impl Fault {
    fn parse(s: &str) -> Result<Fault, String> {
        if s == "none" {
            return Ok(Fault::None);
        }
        if let Ok(status) = s.parse::<u16>() {
            return if (400..600).contains(&status) {
                Ok(Fault::Status(status))
            } else {
                Err(format!("status {status} is not an error status (400-599)"))
            };
        }
        let (kind, at) = match s.split_once('@') {
            Some((kind, at)) => {
                let at = at
                    .parse()
                    .map_err(|_| format!("`{at}` in `{s}` is not an event count"))?;
                (kind, Some(at))
            }
            None => (s, None),
        };
        match kind.split_once(':') {
            None if kind == "reset" => Ok(Fault::Reset(at)),
            None if kind == "stall" => Ok(Fault::Stall(at)),
            None if kind == "truncate" => Ok(Fault::Truncate(at)),
            None if kind == "error" => Ok(Fault::Error(None, at)),
            None if kind == "failed" => Ok(Fault::Failed(None, at)),
            Some(("error", kind)) if !kind.is_empty() => Ok(Fault::Error(Some(kind.to_owned()), at)),
            Some(("failed", code)) if !code.is_empty() => {
                Ok(Fault::Failed(Some(code.to_owned()), at))
            }
            _ => Err(format!(
                "unknown fault `{s}`: expected none, reset@N, stall@N, error@N, error:TYPE@N, failed@N, truncate@N or a status such as 529"
            )),
        }
    }

    /// The events sent before the fault, and how the body ends. `error` and `failed` render
    /// the in-band error event that follows the `at` events kept.
    pub fn cut(
        &self,
        mut events: Vec<Bytes>,
        error: impl Fn(Option<&str>, usize) -> Bytes,
        failed: impl Fn(Option<&str>, usize) -> Bytes,
    ) -> (Vec<Bytes>, End) {
        let (at, end) = match self {
            Fault::None | Fault::Status(_) => return (events, End::Clean),
            Fault::Reset(at) => (at, End::Reset),
            Fault::Stall(at) => (at, End::Stall),
            Fault::Truncate(at) | Fault::Error(_, at) | Fault::Failed(_, at) => (at, End::Clean),
        };
        let keep = at
            .unwrap_or(events.len() / 2)
            .min(events.len().saturating_sub(1));
        events.truncate(keep);
        match self {
            Fault::Error(kind, _) => events.push(error(kind.as_deref(), keep)),
            Fault::Failed(code, _) => events.push(failed(code.as_deref(), keep)),
            _ => {}
        }
        (events, end)
    }
}

/// The HTTP status an error type stands for, for the formats whose in-band errors carry a
/// number (vLLM, OpenRouter, Gemini).
pub fn status_of(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" | "BadRequestError" | "INVALID_ARGUMENT" => 400,
        "authentication_error" | "UNAUTHENTICATED" => 401,
        "permission_error" | "PERMISSION_DENIED" => 403,
        "not_found_error" | "NOT_FOUND" => 404,
        "rate_limit_error" | "rate_limit_exceeded" | "RESOURCE_EXHAUSTED" => 429,
        "overloaded_error" => 529,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}
