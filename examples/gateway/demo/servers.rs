//! The OpenAI-compatible servers whose Chat Completions shapes the demo can take
//! (`x-demo-server`). Each is a row of quirks, from issue 9 and recorded streams
//! (tests/fixtures/openrouter_midstream_error.sse); where no recording names the server that
//! sends a quirk, the row says the demo chose it.

use super::models::{self, DemoModel};

/// Where a server puts usage when the request asks for it (`stream_options.include_usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A chunk of its own, `choices: []`, after the finish chunk (OpenAI).
    OwnChunk,
    /// On the finish chunk itself, no chunk of its own (vLLM's continuous usage stats: then on
    /// every chunk, cumulative).
    OnFinish,
}

/// How a server reports an in-band error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errors {
    /// A chunk `{"error":{"message","type","param","code"}}` (OpenAI, Azure, DeepSeek).
    OpenAi,
    /// `{"object":"error","message","type","param","code":500}` (vLLM).
    Vllm,
    /// A chunk with `error {code, message}` and `finish_reason: "error"`, then `[DONE]`
    /// (OpenRouter).
    OpenRouter,
}

pub struct Server {
    pub name: &'static str,
    /// A chunk's keys, in the order this server writes them.
    pub envelope: &'static [&'static str],
    /// A choice's keys, in order.
    pub choice: &'static [&'static str],
    /// The delta field reasoning streams in, if the server streams reasoning.
    pub reasoning: Option<&'static str>,
    pub usage: Usage,
    /// Whether the stream ends with `data: [DONE]`.
    pub done: bool,
    /// Line end of every line it writes.
    pub line_end: &'static str,
    /// Whether each event carries an `id:` line.
    pub event_ids: bool,
    /// Comment lines before the first event.
    pub preamble: &'static str,
    /// Whether tool-call deltas carry `index`.
    pub tool_index: bool,
    /// Whether a tool call comes whole in one delta, not as argument pieces.
    pub whole_tool_calls: bool,
    pub errors: Errors,
    /// Whether the stream opens with Azure's `prompt_filter_results` chunk (`choices: []`,
    /// empty id and model).
    pub prompt_filter: bool,
    pub id: &'static str,
}

const API_ORDER: &[&str] = &[
    "id",
    "object",
    "created",
    "model",
    "service_tier",
    "system_fingerprint",
    "choices",
    "usage",
];
const API_CHOICE: &[&str] = &["index", "delta", "logprobs", "finish_reason"];

const DEMO: Server = Server {
    name: "demo",
    // serde_json's map order: what the demo always sent.
    envelope: &["choices", "created", "id", "model", "object", "usage"],
    choice: &["delta", "finish_reason", "index"],
    reasoning: None,
    usage: Usage::OwnChunk,
    done: true,
    line_end: "\n",
    event_ids: false,
    preamble: "",
    tool_index: true,
    whole_tool_calls: false,
    errors: Errors::OpenAi,
    prompt_filter: false,
    id: "chatcmpl-demo",
};

pub const SERVERS: &[Server] = &[
    DEMO,
    Server {
        name: "openai",
        envelope: API_ORDER,
        choice: API_CHOICE,
        ..DEMO
    },
    Server {
        name: "azure",
        // Azure writes keys in alphabetical order, and opens with the prompt's filter results.
        envelope: &[
            "choices",
            "created",
            "id",
            "model",
            "object",
            "system_fingerprint",
            "usage",
        ],
        choice: &[
            "content_filter_results",
            "delta",
            "finish_reason",
            "index",
            "logprobs",
        ],
        prompt_filter: true,
        ..DEMO
    },
    Server {
        name: "vllm",
        envelope: &["id", "object", "created", "model", "choices", "usage"],
        choice: &["index", "delta", "logprobs", "finish_reason", "stop_reason"],
        reasoning: Some("reasoning"),
        usage: Usage::OnFinish,
        errors: Errors::Vllm,
        ..DEMO
    },
    Server {
        name: "deepseek",
        envelope: &[
            "id",
            "object",
            "created",
            "model",
            "system_fingerprint",
            "choices",
            "usage",
        ],
        choice: API_CHOICE,
        reasoning: Some("reasoning_content"),
        preamble: ": keep-alive\n\n",
        id: "3f5e1a2b-demo",
        ..DEMO
    },
    Server {
        name: "openrouter",
        envelope: &[
            "id", "provider", "model", "object", "created", "choices", "usage",
        ],
        choice: &[
            "index",
            "delta",
            "finish_reason",
            "native_finish_reason",
            "logprobs",
        ],
        reasoning: Some("reasoning"),
        preamble: ": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n",
        errors: Errors::OpenRouter,
        id: "gen-demo",
        ..DEMO
    },
    Server {
        name: "gemini-compat",
        // Tool calls without `index`, each whole in one delta (issue 9, item 6). No `[DONE]`:
        // the demo's choice of a server that omits it (no recording names one).
        tool_index: false,
        whole_tool_calls: true,
        done: false,
        ..DEMO
    },
    Server {
        name: "framed",
        // `id:` lines and CRLF line ends: the framing issue 9 names, on no particular vendor.
        envelope: API_ORDER,
        choice: API_CHOICE,
        event_ids: true,
        line_end: "\r\n",
        ..DEMO
    },
];

/// The server `header` names for `model` (`SERVER` for every model, or `MODEL=SERVER`; the
/// first item that applies wins); `demo` without it.
pub fn for_model(model: &DemoModel, header: Option<&str>) -> Result<&'static Server, String> {
    let Some(header) = header else {
        return Ok(&SERVERS[0]);
    };
    for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (selector, name) = match item.split_once('=') {
            Some((s, n)) => (Some(s.trim()), n.trim()),
            None => (None, item),
        };
        let Some(server) = SERVERS.iter().find(|s| s.name == name) else {
            let names: Vec<&str> = SERVERS.iter().map(|s| s.name).collect();
            return Err(format!(
                "unknown server `{name}`: expected one of {}",
                names.join(", ")
            ));
        };
        match selector {
            None => return Ok(server),
            Some(m) if m == model.name => return Ok(server),
            Some(m) if models::exists(m) => {}
            Some(m) => return Err(format!("no demo model is named `{m}`")),
        }
    }
    Ok(&SERVERS[0])
}
