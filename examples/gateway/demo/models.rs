//! The demo's models, and the gateway config that puts them in front of each other.

use std::net::SocketAddr;

pub const CLAUDE_PRIMARY: &str = "demo-claude-primary";
pub const CLAUDE_NO_PREFILL: &str = "demo-claude-no-prefill";
pub const CLAUDE_PREFILL: &str = "demo-claude-prefill";
pub const GPT_PRIMARY: &str = "demo-gpt-primary";
pub const GPT_PREFIX: &str = "demo-gpt-prefix";
pub const GPT_NO_PREFIX: &str = "demo-gpt-no-prefix";
/// Gateway model names for the GPT models on the Responses route.
pub const RESPONSES_PRIMARY: &str = "demo-responses-primary";
pub const RESPONSES_FALLBACK: &str = "demo-responses-fallback";
pub const GEMINI_PRIMARY: &str = "demo-gemini-primary";
pub const GEMINI_NO_PREFILL: &str = "demo-gemini-no-prefill";
pub const GEMINI_PREFILL: &str = "demo-gemini-prefill";

/// Which routes serve a model: Claude on Messages and Vertex, GPT on Chat and Responses,
/// Gemini on its own API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Claude,
    Gpt,
    Gemini,
}

pub struct DemoModel {
    pub name: &'static str,
    pub family: Family,
    pub primary: bool,
    /// Whether it continues a final assistant message (`model` turn for Gemini).
    pub accepts_prefill: bool,
}

pub const MODELS: &[DemoModel] = &[
    model(CLAUDE_PRIMARY, Family::Claude, true, true),
    model(CLAUDE_NO_PREFILL, Family::Claude, false, false),
    model(CLAUDE_PREFILL, Family::Claude, false, true),
    model(GPT_PRIMARY, Family::Gpt, true, true),
    model(GPT_PREFIX, Family::Gpt, false, true),
    model(GPT_NO_PREFIX, Family::Gpt, false, false),
    model(GEMINI_PRIMARY, Family::Gemini, true, true),
    model(GEMINI_NO_PREFILL, Family::Gemini, false, false),
    model(GEMINI_PREFILL, Family::Gemini, false, true),
];

const fn model(
    name: &'static str,
    family: Family,
    primary: bool,
    accepts_prefill: bool,
) -> DemoModel {
    DemoModel {
        name,
        family,
        primary,
        accepts_prefill,
    }
}

/// The model called `name` among those a route of `family` serves.
pub fn find(name: &str, family: Family) -> Option<&'static DemoModel> {
    MODELS.iter().find(|m| m.name == name && m.family == family)
}

/// Whether any demo model is called `name` (for the headers' `MODEL=` selectors).
pub fn exists(name: &str) -> bool {
    MODELS.iter().any(|m| m.name == name)
}

/// Claude on Vertex AI in the demo config: the same demo models on the Vertex upstream, named
/// apart from their Anthropic API selves.
pub const CLAUDE_VERTEX: &str = "demo-claude-vertex";
/// On the Anthropic API, with [`CLAUDE_VERTEX`] as its fallback.
pub const CLAUDE_WITH_VERTEX_FALLBACK: &str = "demo-claude-with-vertex-fallback";

/// The gateway configuration for the demo: every demo model the gateway can serve today
/// (Messages, Chat, Responses, Gemini, and Claude on Vertex AI both ways), each primary with
/// its fallbacks. Also a worked example of the config file.
pub fn gateway_config(upstream: SocketAddr, listen: SocketAddr) -> String {
    format!(
        r#"listen = "{listen}"

[fallback]
max_attempts = 3
idle_timeout_ms = 2000      # short, so that a scripted stall shows quickly
keep_alive_ms = 500
when_no_prefill = "instruction"

[[upstreams]]
name = "demo-anthropic"
dialect = "anthropic"
base_url = "http://{upstream}"

[[upstreams]]
name = "demo-openai"
dialect = "openai-chat"
base_url = "http://{upstream}"

[[upstreams]]
name = "demo-gemini"
dialect = "gemini"
base_url = "http://{upstream}"
headers = {{ "x-goog-api-key" = "demo-key" }}   # a real one: api_key_env = "GEMINI_API_KEY"

# Claude on Vertex AI: the model in the path, an OAuth access token (a real one:
# access_token_command = ["gcloud", "auth", "print-access-token"]).
[[upstreams]]
name = "demo-vertex"
dialect = "anthropic"
base_url = "http://{upstream}"
vertex = {{ project = "demo-project", region = "us-east5" }}
access_token_command = ["echo", "demo-vertex-token"]

[[upstreams]]
name = "demo-responses"
dialect = "openai-responses"
base_url = "http://{upstream}"

[[models]]
name = "{CLAUDE_PRIMARY}"
upstream = "demo-anthropic"
prefill = "assistant"
fallbacks = ["{CLAUDE_NO_PREFILL}", "{CLAUDE_PREFILL}"]

[[models]]
name = "{CLAUDE_NO_PREFILL}"
upstream = "demo-anthropic"
prefill = "none"

[[models]]
name = "{CLAUDE_PREFILL}"
upstream = "demo-anthropic"
prefill = "assistant"

[[models]]
name = "{GPT_PRIMARY}"
upstream = "demo-openai"
prefill = "prefix"
fallbacks = ["{GPT_PREFIX}", "{GPT_NO_PREFIX}"]

[[models]]
name = "{GPT_PREFIX}"
upstream = "demo-openai"
prefill = "prefix"

[[models]]
name = "{GPT_NO_PREFIX}"
upstream = "demo-openai"
prefill = "none"

[[models]]
name = "{GEMINI_PRIMARY}"
upstream = "demo-gemini"
prefill = "assistant"
fallbacks = ["{GEMINI_NO_PREFILL}", "{GEMINI_PREFILL}"]

[[models]]
name = "{GEMINI_NO_PREFILL}"
upstream = "demo-gemini"
prefill = "none"

[[models]]
name = "{GEMINI_PREFILL}"
upstream = "demo-gemini"
prefill = "assistant"

# The Anthropic API first, the same model on Vertex AI when it fails; and Vertex AI first,
# the Anthropic API after it.
[[models]]
name = "{CLAUDE_WITH_VERTEX_FALLBACK}"
upstream = "demo-anthropic"
upstream_model = "{CLAUDE_PRIMARY}"
prefill = "assistant"
fallbacks = ["{CLAUDE_VERTEX}"]

[[models]]
name = "{CLAUDE_VERTEX}"
upstream = "demo-vertex"
upstream_model = "{CLAUDE_PREFILL}"
prefill = "assistant"
fallbacks = ["{CLAUDE_NO_PREFILL}"]

# The same GPT models on the Responses API (no prefill there: continued by instruction).
[[models]]
name = "{RESPONSES_PRIMARY}"
upstream = "demo-responses"
upstream_model = "{GPT_PRIMARY}"
prefill = "none"
fallbacks = ["{RESPONSES_FALLBACK}"]

[[models]]
name = "{RESPONSES_FALLBACK}"
upstream = "demo-responses"
upstream_model = "{GPT_NO_PREFIX}"
prefill = "none"
"#
    )
}
