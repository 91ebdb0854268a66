//! Anthropic Messages requests, read and written.
//!
//! Read: `system` (text or text blocks), messages with text, images (base64 or URL), tool use
//! and tool results, `tools` (custom tools only), `tool_choice`, `stop_sequences`,
//! `max_tokens`, `temperature`, `top_p`. Dropped: `metadata`, `service_tier`, `top_k`,
//! `cache_control` and `citations` on blocks, thinking blocks of earlier turns while thinking is
//! off (the API ignores them too), `fallbacks`. Refused: extended thinking, documents, search
//! results, server tools and their blocks, images by file id, MCP servers, containers, context
//! management, any other parameter.
//!
//! Written: text content as a string when a message is one text, else blocks; consecutive turns
//! of one role merged and tool results first in their turn (the API's rule); a conversation
//! ending with an assistant turn is continued as it is (Anthropic's prefill), its trailing
//! whitespace removed (the API refuses it); `max_tokens`, which the API requires, is
//! [`DEFAULT_MAX_TOKENS`] when the client set none; `temperature` at most 1 (the API's range),
//! and `top_p` only without it (newer models refuse both).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    ids, is_null, object, parameters, parse, Conversation, Format, Image, Knobs, Message, Part,
    Role, Tagged, ToolCall, ToolChoice, ToolDef, ToolResult, ToolSpec, Untranslatable,
};
use crate::strategy::Prefill;

/// `max_tokens` for a request whose client set no limit (Chat's is optional; Anthropic's is
/// not): what every current Claude model can give.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 8192;

/// The media types Anthropic takes for base64 images.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

#[derive(Debug)]
pub(super) struct Messages;

// ---- reading --------------------------------------------------------------------------

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: &'a RawValue,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Source<'a>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    is_error: Option<bool>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    media_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(flatten, borrow)]
    spec: ToolSpec<'a>,
    #[serde(borrow)]
    input_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    disable_parallel_tool_use: Option<bool>,
}

impl Format for Messages {
    fn read(&self, body: &[u8]) -> Result<Conversation, Untranslatable> {
        let mut c = Conversation::default();
        for (key, value) in parameters(body)? {
            match key.as_ref() {
                "messages" => {
                    let messages: Vec<Msg<'_>> = parse(value, "messages")?;
                    c.messages = messages.iter().map(message).collect::<Result<_, _>>()?;
                }
                "system" => c.system = system(value)?,
                "max_tokens" => c.max_tokens = Some(parse(value, "max_tokens")?),
                "stop_sequences" => {
                    let stop: Vec<Cow<'_, str>> = parse(value, "stop_sequences")?;
                    c.stop = stop.into_iter().map(Cow::into_owned).collect();
                }
                "stream" => c.stream = parse(value, "stream")?,
                "temperature" => c.temperature = Some(parse(value, "temperature")?),
                "top_p" => c.top_p = Some(parse(value, "top_p")?),
                "tools" => {
                    let tools: Vec<Tool<'_>> = parse(value, "tools")?;
                    c.tools = tools.into_iter().map(tool).collect::<Result<_, _>>()?;
                }
                "tool_choice" => {
                    let choice: Choice<'_> = parse(value, "tool_choice")?;
                    c.tool_choice = Some(match choice.kind.as_ref() {
                        "auto" => ToolChoice::Auto,
                        "any" => ToolChoice::Any,
                        "none" => ToolChoice::None,
                        "tool" => ToolChoice::Tool(
                            choice
                                .name
                                .ok_or_else(|| Untranslatable::new("`tool_choice` names no tool"))?
                                .into_owned(),
                        ),
                        other => {
                            return Err(Untranslatable::new(format!("the tool_choice `{other}`")))
                        }
                    });
                    if choice.disable_parallel_tool_use == Some(true) {
                        c.parallel_tool_calls = Some(false);
                    }
                }
                "thinking" => {
                    let thinking: Tagged<'_> = parse(value, "thinking")?;
                    if thinking.kind != "disabled" {
                        return Err(Untranslatable::new(
                            "extended thinking (`thinking`): its signed blocks come only from \
                             Anthropic, and the client's next turn would need them",
                        ));
                    }
                }
                // How the answer is made, not what it is.
                "metadata" | "service_tier" | "top_k" => {}
                // Anthropic's own fallbacks (a beta): never forwarded elsewhere.
                "fallbacks" => {}
                other => {
                    return Err(Untranslatable::new(format!(
                        "the Messages parameter `{other}`, which other dialects do not have"
                    )))
                }
            }
        }
        Ok(c)
    }

    fn write(
        &self,
        c: &Conversation,
        model: &str,
        _prefill: Prefill,
    ) -> Result<Vec<u8>, Untranslatable> {
        let mut messages: Vec<(Role, Vec<OutBlock<'_>>)> = Vec::new();
        for m in &c.messages {
            let blocks: Vec<_> = m
                .parts
                .iter()
                .map(out_block)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect();
            if blocks.is_empty() {
                continue;
            }
            match messages.last_mut() {
                // Consecutive turns of one role are one turn.
                Some((role, last)) if *role == m.role => last.extend(blocks),
                _ => messages.push((m.role, blocks)),
            }
        }
        for (role, blocks) in &mut messages {
            if *role == Role::User {
                // Tool results first in their turn, or the API refuses the request.
                blocks.sort_by_key(|b| !matches!(b, OutBlock::ToolResult { .. }));
            }
        }
        if let Some((Role::Assistant, blocks)) = messages.last_mut() {
            // A prefill must not end in whitespace.
            if let Some(OutBlock::Text { text }) = blocks.last_mut() {
                let trimmed = text.trim_end().len();
                text.to_mut().truncate(trimmed);
            }
            blocks.retain(|b| !matches!(b, OutBlock::Text { text } if text.is_empty()));
        }
        let messages = messages
            .into_iter()
            .filter(|(_, blocks)| !blocks.is_empty())
            .map(|(role, blocks)| OutMessage {
                role: match role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                },
                content: match <[_; 1]>::try_from(blocks) {
                    Ok([OutBlock::Text { text }]) => OutContent::Text(text),
                    Ok(one) => OutContent::Blocks(one.into()),
                    Err(blocks) => OutContent::Blocks(blocks),
                },
            })
            .collect();
        let system = match c.system.as_slice() {
            [] => None,
            [one] => Some(OutSystem::Text(one)),
            many => Some(OutSystem::Blocks(
                many.iter()
                    .map(|text| OutBlock::Text {
                        text: Cow::Borrowed(text),
                    })
                    .collect(),
            )),
        };
        let tools: Vec<OutTool<'_>> = c.tools.iter().map(out_tool).collect();
        let tool_choice = if tools.is_empty() {
            None
        } else {
            let disable = (c.parallel_tool_calls == Some(false)).then_some(true);
            match (&c.tool_choice, disable) {
                (None, None) => None,
                (choice, disable) => Some(OutChoice {
                    kind: match choice {
                        None | Some(ToolChoice::Auto) => "auto",
                        Some(ToolChoice::Any) => "any",
                        Some(ToolChoice::None) => "none",
                        Some(ToolChoice::Tool(_)) => "tool",
                    },
                    name: match choice {
                        Some(ToolChoice::Tool(name)) => Some(name),
                        _ => None,
                    },
                    disable_parallel_tool_use: disable,
                }),
            }
        };
        // The API's range is 0 to 1; newer models refuse temperature and top_p together.
        let temperature = c.temperature.map(|t| t.clamp(0.0, 1.0));
        let out = Out {
            model,
            max_tokens: c.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            system,
            messages,
            stop_sequences: &c.stop,
            knobs: Knobs {
                temperature,
                top_p: c.top_p.filter(|_| temperature.is_none()),
                tools,
                tool_choice,
            },
            stream: true,
        };
        Ok(serde_json::to_vec(&out).expect("a request always serializes"))
    }
}

fn message(m: &Msg<'_>) -> Result<Message, Untranslatable> {
    let role = match m.role.as_ref() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => return Err(Untranslatable::new(format!("a message of role `{other}`"))),
    };
    Ok(Message {
        role,
        parts: content(m.content)?,
    })
}

/// A message's content: a string, or blocks.
fn content(raw: &RawValue) -> Result<Vec<Part>, Untranslatable> {
    if raw.get().starts_with('"') {
        let text: Cow<'_, str> = parse(raw, "content")?;
        return Ok(text_part(text).into_iter().collect());
    }
    let blocks: Vec<Block<'_>> = parse(raw, "content")?;
    let mut parts = Vec::with_capacity(blocks.len());
    for b in blocks {
        match b.kind.as_ref() {
            "text" => parts.extend(text_part(b.text.unwrap_or_default())),
            "image" => parts.push(Part::Image(image(b.source)?)),
            "tool_use" => parts.push(Part::ToolCall(ToolCall {
                id: b.id.unwrap_or_default().into_owned(),
                name: b.name.unwrap_or_default().into_owned(),
                arguments: match b.input {
                    Some(input) => object(input, "a tool_use block's `input`")?,
                    None => RawValue::from_string("{}".into()).expect("{} is JSON"),
                },
            })),
            "tool_result" => parts.push(Part::ToolResult(ToolResult {
                id: b.tool_use_id.unwrap_or_default().into_owned(),
                content: match b.content {
                    Some(raw) if !is_null(raw) => {
                        let content = content(raw)?;
                        if content
                            .iter()
                            .any(|p| !matches!(p, Part::Text(_) | Part::Image(_)))
                        {
                            return Err(Untranslatable::new(
                                "a tool_result whose content is not text and images",
                            ));
                        }
                        content
                    }
                    _ => Vec::new(),
                },
                is_error: b.is_error == Some(true),
            })),
            // Thinking is off in a request that gets here: earlier turns' blocks are ignored by
            // the API itself.
            "thinking" | "redacted_thinking" => {}
            "document" => {
                return Err(Untranslatable::new(
                    "a document block (PDF or text documents, citations)",
                ))
            }
            other if other.ends_with("tool_use") || other.ends_with("tool_result") => {
                return Err(Untranslatable::new(format!(
                    "a `{other}` block (a server or MCP tool's)"
                )))
            }
            other => return Err(Untranslatable::new(format!("a `{other}` content block"))),
        }
    }
    Ok(parts)
}

fn text_part(text: Cow<'_, str>) -> Option<Part> {
    (!text.is_empty()).then(|| Part::Text(text.into_owned()))
}

fn image(source: Option<Source<'_>>) -> Result<Image, Untranslatable> {
    let source = source.ok_or_else(|| Untranslatable::new("an image block without a source"))?;
    match (
        source.kind.as_ref(),
        source.media_type,
        source.data,
        source.url,
    ) {
        ("base64", Some(media_type), Some(data), _) => Ok(Image::Base64 {
            media_type: media_type.into_owned(),
            data: data.into_owned(),
        }),
        ("url", _, _, Some(url)) => Ok(Image::Url(url.into_owned())),
        (kind, ..) => Err(Untranslatable::new(format!(
            "an image of source `{kind}` (Files API ids are Anthropic's)"
        ))),
    }
}

fn system(raw: &RawValue) -> Result<Vec<String>, Untranslatable> {
    content(raw)?
        .into_iter()
        .map(|p| match p {
            Part::Text(text) => Ok(text),
            _ => Err(Untranslatable::new("a system prompt that is not text")),
        })
        .collect()
}

fn tool(t: Tool<'_>) -> Result<ToolDef, Untranslatable> {
    match t.kind.as_deref() {
        None | Some("custom") => t.spec.def(t.input_schema, "a tool's `input_schema`"),
        Some(kind) => Err(Untranslatable::new(format!(
            "the tool `{}` of type `{kind}` (a server tool, or one whose schema only Anthropic \
             knows)",
            t.spec.name
        ))),
    }
}

// ---- writing --------------------------------------------------------------------------

#[derive(Serialize)]
struct Out<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<OutSystem<'a>>,
    messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(flatten)]
    knobs: Knobs<OutTool<'a>, OutChoice<'a>>,
    stream: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutSystem<'a> {
    Text(&'a str),
    Blocks(Vec<OutBlock<'a>>),
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: OutContent<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutContent<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<OutBlock<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Text {
        text: Cow<'a, str>,
    },
    Image {
        source: OutSource<'a>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: &'a RawValue,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<OutContent<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct OutTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
struct OutChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

/// A part as a block; `None` for text with nothing in it (the API refuses empty text blocks).
fn out_block(part: &Part) -> Result<Option<OutBlock<'_>>, Untranslatable> {
    Ok(Some(match part {
        Part::Text(text) if text.is_empty() => return Ok(None),
        Part::Text(text) => OutBlock::Text {
            text: Cow::Borrowed(text),
        },
        Part::Image(image) => OutBlock::Image {
            source: out_source(image)?,
        },
        Part::ToolCall(call) => OutBlock::ToolUse {
            id: ids::anthropic(&call.id),
            name: &call.name,
            input: &call.arguments,
        },
        Part::ToolResult(result) => {
            let blocks = result
                .content
                .iter()
                .map(out_block)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect::<Vec<_>>();
            OutBlock::ToolResult {
                tool_use_id: ids::anthropic(&result.id),
                content: match <[_; 1]>::try_from(blocks) {
                    Ok([OutBlock::Text { text }]) => Some(OutContent::Text(text)),
                    Ok(one) => Some(OutContent::Blocks(one.into())),
                    Err(blocks) if blocks.is_empty() => None,
                    Err(blocks) => Some(OutContent::Blocks(blocks)),
                },
                is_error: result.is_error,
            }
        }
    }))
}

fn out_source(image: &Image) -> Result<OutSource<'_>, Untranslatable> {
    Ok(match image {
        Image::Url(url) => OutSource::Url { url },
        Image::Base64 { media_type, data } => {
            if !IMAGE_TYPES.contains(&media_type.as_str()) {
                return Err(Untranslatable::new(format!(
                    "an image of type `{media_type}` (Anthropic takes JPEG, PNG, GIF and WebP)"
                )));
            }
            OutSource::Base64 { media_type, data }
        }
    })
}

fn out_tool(t: &ToolDef) -> OutTool<'_> {
    /// The schema of a tool without parameters: Anthropic requires one.
    static NO_PARAMETERS: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    let empty = NO_PARAMETERS.get_or_init(|| {
        RawValue::from_string(r#"{"type":"object","properties":{}}"#.into()).expect("JSON")
    });
    OutTool {
        name: &t.name,
        description: t.description.as_deref(),
        input_schema: t.parameters.as_deref().unwrap_or(empty),
        strict: t.strict,
    }
}
