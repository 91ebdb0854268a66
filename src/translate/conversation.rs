//! A request in no wire format's terms: what a reader makes of the client's request and a
//! writer puts in the target's. It holds only what every dialect can say (or what one of them
//! can say and the others can be told is missing); a reader refuses the rest.

use serde_json::value::RawValue;

/// One request: instructions, turns, tools, and how to sample.
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    /// The system prompt, in pieces (Anthropic text blocks, leading Chat system messages).
    pub(crate) system: Vec<String>,
    pub(crate) messages: Vec<Message>,
    pub(crate) tools: Vec<ToolDef>,
    pub(crate) tool_choice: Option<ToolChoice>,
    /// `Some(false)`: at most one tool call per answer.
    pub(crate) parallel_tool_calls: Option<bool>,
    pub(crate) stop: Vec<String>,
    /// The answer's limit in tokens, if the client set one.
    pub(crate) max_tokens: Option<u64>,
    pub(crate) temperature: Option<f64>,
    pub(crate) top_p: Option<f64>,
    /// The client asked for an event stream. (Whether its stream reports usage is the client's
    /// wire's to say, `Rules::asks_usage`: a translated request always asks for it.)
    pub(crate) stream: bool,
}

impl Conversation {
    /// Whether the conversation ends with an assistant turn the answer continues (a prefill
    /// the client wrote itself).
    pub(crate) fn ends_with_assistant(&self) -> bool {
        self.messages
            .last()
            .is_some_and(|m| m.role == Role::Assistant)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Assistant,
}

/// One turn. Tool results are the user's (as Anthropic and Gemini have them); a writer whose
/// dialect has turns of their own for them (Chat's `tool` messages) splits them out.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) role: Role,
    pub(crate) parts: Vec<Part>,
}

#[derive(Debug)]
pub(crate) enum Part {
    Text(String),
    Image(Image),
    ToolCall(ToolCall),
    ToolResult(ToolResult),
}

#[derive(Debug)]
pub(crate) enum Image {
    /// Fetched by the provider.
    Url(String),
    /// Inline: its media type (`image/png`) and base64 data.
    Base64 { media_type: String, data: String },
}

/// A tool call of an assistant turn. `arguments` is a JSON object, as it came.
#[derive(Debug)]
pub(crate) struct ToolCall {
    /// As the client's dialect wrote it; a writer fits it to its own rules
    /// ([`ids`](super::ids)), the same way for the call and its result.
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) arguments: Box<RawValue>,
}

/// The result of the tool call `id`: text and images.
#[derive(Debug)]
pub(crate) struct ToolResult {
    pub(crate) id: String,
    pub(crate) content: Vec<Part>,
    /// Anthropic's `is_error`; no other dialect has it (the content says what went wrong).
    pub(crate) is_error: bool,
}

/// A tool the model may call. `parameters` is its JSON schema, as it came.
#[derive(Debug)]
pub(crate) struct ToolDef {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) parameters: Option<Box<RawValue>>,
    pub(crate) strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    Auto,
    /// Some tool must be called (Anthropic `any`, Chat `required`).
    Any,
    None,
    /// This tool must be called.
    Tool(String),
}
