//! The canned answers, and where a request's own conversation says to continue from.

use serde_json::Value;

/// The canned answer's text.
pub const TEXT: &str = "Streams break in three ordinary ways: the connection resets, the \
provider stalls, or it sends an overloaded error halfway through. By then the client holds half \
an answer, and a retry before the first byte cannot help. This gateway notices the failure, asks \
a fallback model to continue exactly where the first one stopped, and splices the two streams \
into one.";
/// The second choice's text, when a Chat request asks for `n: 2`.
pub const TEXT_2: &str = "A stream can break at any event. The gateway keeps what the client \
already holds and has a fallback continue from there, so the client reads one answer.";
pub const TOOL_TEXT: &str = "I'll check the current weather in Paris.";
pub const THINKING: &str = "The user asks why streams break. Name the failure modes first, then \
what the gateway does about each.";
pub const REFUSAL: &str = "I'm sorry, but I can't help with that request as it is phrased.";

/// A tool call of the canned answers: its name and its whole arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub name: &'static str,
    pub args: &'static str,
}

pub const PARIS: Tool = Tool {
    name: "get_weather",
    args: r#"{"city":"Paris","unit":"celsius"}"#,
};
pub const TOKYO: Tool = Tool {
    name: "get_weather",
    args: r#"{"city":"Tokyo","unit":"celsius"}"#,
};

/// What one response says, in no format yet.
pub struct Answer {
    /// Reasoning shown before the text, when the request asks to see it.
    pub reasoning: Option<&'static str>,
    /// The text still due, from byte `continues_from` of the canned text.
    pub text: String,
    pub continues_from: usize,
    pub tools: Vec<Tool>,
    /// The text is a refusal (Chat `delta.refusal`, a Responses `refusal` part).
    pub refusal: bool,
}

impl Answer {
    pub fn output_tokens(&self) -> usize {
        let chars = self.reasoning.map_or(0, str::len)
            + self.text.len()
            + self.tools.iter().map(|t| t.args.len()).sum::<usize>();
        chars.div_ceil(4).max(1)
    }

    pub fn reasoning_tokens(&self) -> usize {
        self.reasoning.map_or(0, |r| r.len().div_ceil(4))
    }
}

/// The prompt's size in tokens, as every demo model counts it.
pub const INPUT_TOKENS: usize = 24;

/// Pieces of a few characters, as models stream them.
pub fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// Anything else (system, tool results, function calls): never part of a continuation.
    Other,
}

/// One turn of a request's conversation, in no format.
pub struct Turn {
    pub role: Role,
    pub text: String,
}

/// What the end of a request's conversation says about continuing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuation {
    /// The conversation ends with a user turn, or carries no partial answer.
    None,
    /// It ends with an assistant turn: a prefill.
    Prefill(String),
    /// An assistant turn, then a user turn: the partial answer and the continue instruction.
    Instruction(String),
}

impl Continuation {
    pub fn of(turns: &[Turn]) -> Continuation {
        match turns {
            [.., last] if last.role == Role::Assistant => Continuation::Prefill(last.text.clone()),
            [.., before, last] if last.role == Role::User && before.role == Role::Assistant => {
                Continuation::Instruction(before.text.clone())
            }
            _ => Continuation::None,
        }
    }

    /// The byte of `whole` the answer goes on from: the partial answer's length when it is
    /// the start of `whole`.
    pub fn continues_from(&self, whole: &str) -> usize {
        let (Continuation::Prefill(text) | Continuation::Instruction(text)) = self else {
            return 0;
        };
        if !text.is_empty() && whole.starts_with(text.as_str()) {
            text.len()
        } else {
            0
        }
    }
}

/// The turns of a Messages or Chat request (`messages`).
pub fn message_turns(body: &Value) -> Vec<Turn> {
    let Some(messages) = body["messages"].as_array() else {
        return Vec::new();
    };
    messages
        .iter()
        .map(|m| Turn {
            role: match m["role"].as_str() {
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                _ => Role::Other,
            },
            text: text_of(&m["content"]),
        })
        .collect()
}

/// The text of a message's content: a string, or text blocks (`text`, `input_text`,
/// `output_text`).
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| {
                matches!(
                    b["type"].as_str(),
                    Some("text" | "input_text" | "output_text")
                )
            })
            .filter_map(|b| b["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

/// A JSON object with its keys in the order given (serde_json's own maps sort them): each
/// value already written as JSON. Servers differ in key order, and clients must not care.
pub fn object(fields: &[(&str, String)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*key).to_string());
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

/// A JSON string literal.
pub fn string(s: &str) -> String {
    Value::from(s).to_string()
}
