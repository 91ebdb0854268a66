//! OpenAI Responses requests, read and written.
//!
//! Read: `instructions`, `input` (a string, or items: messages of role `system`/`developer`
//! (ahead of the conversation), `user` and `assistant` with `input_text`/`output_text`/
//! `refusal` text and `input_image` (a URL or a base64 data URL), `function_call` and
//! `function_call_output` items), `tools` (functions), `tool_choice`, `parallel_tool_calls`,
//! `max_output_tokens`, `temperature`, `top_p`. Dropped: `store`, `metadata`, `user`,
//! `safety_identifier`, `prompt_cache_key`, `prompt_cache_retention`, `service_tier`,
//! `truncation`, `reasoning`, `include`, `stream_options` (obfuscation), `text.verbosity`,
//! `top_logprobs: 0`, `background: false`, image `detail`, item `id`s, `status` and `phase`,
//! reasoning items of earlier turns (encrypted for OpenAI alone; no other provider reads them).
//! Refused: `previous_response_id` and `conversation` (state kept at OpenAI), `background`,
//! `prompt` templates, `max_tool_calls`, `top_logprobs` above 0, structured output
//! (`text.format` other than text), built-in and custom tools, files, audio, a system message
//! after the first turn, any other item type or parameter.
//!
//! Written: one `system` message item per piece of the system prompt; user turns as messages
//! (a string for one text, else `input_text`/`input_image` parts), their tool results first as
//! `function_call_output` items (text only, joined); assistant text as
//! `{"role":"assistant","content":TEXT}` (the form the API is recorded accepting) and its calls
//! as `function_call` items; function tools flat, `strict: false` where the client said
//! nothing (the API's own default is strict); `max_output_tokens` at least the API's minimum
//! of 16. The API has no prefill and no stop sequences: a conversation that needs either is
//! refused (the continuation reaches it as the instruction strategy's turns).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    ids, is_null, object, object_in, parameters, parse, Conversation, Format, Image, Message, Part,
    Role, ToolCall, ToolChoice, ToolDef, ToolResult, Untranslatable,
};
use crate::strategy::Prefill;

/// The API refuses a smaller `max_output_tokens`.
const MIN_OUTPUT_TOKENS: u64 = 16;

#[derive(Debug)]
pub(super) struct Responses;

// ---- reading --------------------------------------------------------------------------

#[derive(Deserialize)]
struct InputItem<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(borrow)]
    output: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ContentPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    image_url: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct NamedChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct TextOptions<'a> {
    #[serde(borrow)]
    format: Option<TextFormat<'a>>,
}

#[derive(Deserialize)]
struct TextFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

impl Format for Responses {
    fn read(&self, body: &[u8]) -> Result<Conversation, Untranslatable> {
        let mut c = Conversation::default();
        let mut instructions = None;
        for (key, value) in parameters(body)? {
            match key.as_ref() {
                "instructions" => {
                    let text: Cow<'_, str> = parse(value, "instructions")?;
                    instructions = Some(text.into_owned()).filter(|t| !t.is_empty());
                }
                "input" => read_input(value, &mut c)?,
                "stream" => c.stream = parse(value, "stream")?,
                "max_output_tokens" => c.max_tokens = Some(parse(value, "max_output_tokens")?),
                "temperature" => c.temperature = Some(parse(value, "temperature")?),
                "top_p" => c.top_p = Some(parse(value, "top_p")?),
                "tools" => {
                    let tools: Vec<Tool<'_>> = parse(value, "tools")?;
                    c.tools = tools.into_iter().map(tool).collect::<Result<_, _>>()?;
                }
                "tool_choice" => c.tool_choice = Some(tool_choice(value)?),
                "parallel_tool_calls" => c.parallel_tool_calls = Some(parse(value, key.as_ref())?),
                "background" => {
                    if parse::<bool>(value, "background")? {
                        return Err(Untranslatable::new(
                            "a `background` response (it runs on at OpenAI)",
                        ));
                    }
                }
                "previous_response_id" | "conversation" => {
                    return Err(Untranslatable::new(format!(
                        "`{key}`: the conversation is kept at OpenAI, where no other provider \
                         can read it"
                    )))
                }
                "top_logprobs" => {
                    if parse::<u64>(value, "top_logprobs")? > 0 {
                        return Err(Untranslatable::new("`top_logprobs`"));
                    }
                }
                "text" => {
                    let options: TextOptions<'_> = parse(value, "text")?;
                    if let Some(format) = options.format.filter(|f| f.kind != "text") {
                        return Err(Untranslatable::new(format!(
                            "structured output (`text.format` `{}`)",
                            format.kind
                        )));
                    }
                }
                // How the answer is made or kept, not what it is.
                "store"
                | "metadata"
                | "user"
                | "safety_identifier"
                | "prompt_cache_key"
                | "prompt_cache_retention"
                | "service_tier"
                | "truncation"
                | "reasoning"
                | "include"
                | "stream_options" => {}
                other => {
                    return Err(Untranslatable::new(format!(
                        "the Responses parameter `{other}`, which other dialects do not have"
                    )))
                }
            }
        }
        if let Some(text) = instructions {
            c.system.insert(0, text);
        }
        Ok(c)
    }

    fn write(
        &self,
        c: &Conversation,
        model: &str,
        prefill: Prefill,
    ) -> Result<Vec<u8>, Untranslatable> {
        if !c.stop.is_empty() {
            return Err(Untranslatable::new(
                "stop sequences (the Responses API has none)",
            ));
        }
        if c.ends_with_assistant() && prefill != Prefill::None {
            return Err(Untranslatable::new(
                "an assistant message to continue (the Responses API has no prefill)",
            ));
        }
        let mut input: Vec<OutItem<'_>> = c
            .system
            .iter()
            .map(|text| OutItem::Message {
                role: "system",
                content: OutContent::Text(text),
            })
            .collect();
        for m in &c.messages {
            match m.role {
                Role::User => user_items(m, &mut input)?,
                Role::Assistant => assistant_items(m, &mut input)?,
            }
        }
        let tools: Vec<OutTool<'_>> = c.tools.iter().map(out_tool).collect();
        let with_tools = !tools.is_empty();
        let out =
            Out {
                model,
                input,
                max_output_tokens: c.max_tokens.map(|n| n.max(MIN_OUTPUT_TOKENS)),
                temperature: c.temperature,
                top_p: c.top_p,
                tools,
                tool_choice: c.tool_choice.as_ref().filter(|_| with_tools).map(
                    |choice| match choice {
                        ToolChoice::Auto => OutChoice::Mode("auto"),
                        ToolChoice::Any => OutChoice::Mode("required"),
                        ToolChoice::None => OutChoice::Mode("none"),
                        ToolChoice::Tool(name) => OutChoice::Named {
                            kind: "function",
                            name,
                        },
                    },
                ),
                parallel_tool_calls: c.parallel_tool_calls.filter(|_| with_tools),
                stream: true,
            };
        Ok(serde_json::to_vec(&out).expect("a request always serializes"))
    }
}

fn read_input(value: &RawValue, c: &mut Conversation) -> Result<(), Untranslatable> {
    if value.get().starts_with('"') {
        let text: Cow<'_, str> = parse(value, "input")?;
        c.messages.push(Message {
            role: Role::User,
            parts: vec![Part::Text(text.into_owned())],
        });
        return Ok(());
    }
    let items: Vec<InputItem<'_>> = parse(value, "input")?;
    for item in &items {
        match item.kind.as_deref() {
            None | Some("message") => message(item, c)?,
            Some("function_call") => {
                let id = item.call_id.as_deref().unwrap_or_default();
                if id.is_empty() {
                    return Err(Untranslatable::new("a function call without a `call_id`"));
                }
                let name = item
                    .name
                    .as_deref()
                    .ok_or_else(|| Untranslatable::new("a function call without a `name`"))?;
                let call = Part::ToolCall(ToolCall {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    arguments: object_in(
                        item.arguments.as_deref().unwrap_or_default(),
                        "a function call's arguments",
                    )?,
                });
                push(c, Role::Assistant, call);
            }
            Some("function_call_output") => {
                let id = item.call_id.as_deref().unwrap_or_default();
                if id.is_empty() {
                    return Err(Untranslatable::new(
                        "a function call output without a `call_id`",
                    ));
                }
                let output = item.output.ok_or_else(|| {
                    Untranslatable::new("a function call output without `output`")
                })?;
                let result = Part::ToolResult(ToolResult {
                    id: id.to_owned(),
                    content: parts(Some(output))?,
                    is_error: false,
                });
                push(c, Role::User, result);
            }
            // Encrypted for OpenAI's models alone: no other provider reads them.
            Some("reasoning") => {}
            Some(other) => {
                return Err(Untranslatable::new(format!(
                    "an input item of type `{other}`"
                )))
            }
        }
    }
    Ok(())
}

/// `part` added to the last turn if it is `role`'s (Responses has an item per call and per
/// result where the neutral form has one turn), else as a turn of its own.
fn push(c: &mut Conversation, role: Role, part: Part) {
    match c.messages.last_mut() {
        Some(last) if last.role == role => last.parts.push(part),
        _ => c.messages.push(Message {
            role,
            parts: vec![part],
        }),
    }
}

fn message(item: &InputItem<'_>, c: &mut Conversation) -> Result<(), Untranslatable> {
    let role = item
        .role
        .as_deref()
        .ok_or_else(|| Untranslatable::new("a message without a `role`"))?;
    match role {
        "system" | "developer" => {
            if !c.messages.is_empty() {
                return Err(Untranslatable::new(
                    "a system message after the first turn (other dialects have one system \
                     prompt, ahead of the conversation)",
                ));
            }
            for part in parts(item.content)? {
                match part {
                    Part::Text(text) => c.system.push(text),
                    _ => return Err(Untranslatable::new("a system message that is not text")),
                }
            }
        }
        "user" => c.messages.push(Message {
            role: Role::User,
            parts: parts(item.content)?,
        }),
        "assistant" => {
            for part in parts(item.content)? {
                push(c, Role::Assistant, part);
            }
        }
        other => return Err(Untranslatable::new(format!("a message of role `{other}`"))),
    }
    Ok(())
}

/// A message's `content` (or a function call's `output`): a string, parts, or nothing.
fn parts(content: Option<&RawValue>) -> Result<Vec<Part>, Untranslatable> {
    let Some(raw) = content.filter(|r| !is_null(r)) else {
        return Ok(Vec::new());
    };
    if raw.get().starts_with('"') {
        let text: Cow<'_, str> = parse(raw, "content")?;
        return Ok(if text.is_empty() {
            Vec::new()
        } else {
            vec![Part::Text(text.into_owned())]
        });
    }
    let list: Vec<ContentPart<'_>> = parse(raw, "content")?;
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        match p.kind.as_ref() {
            "input_text" | "output_text" => {
                if let Some(text) = p.text.filter(|t| !t.is_empty()) {
                    out.push(Part::Text(text.into_owned()));
                }
            }
            "refusal" => {
                if let Some(text) = p.refusal.filter(|t| !t.is_empty()) {
                    out.push(Part::Text(text.into_owned()));
                }
            }
            "input_image" => {
                let url = p.image_url.ok_or_else(|| {
                    Untranslatable::new("an image by file id (only URLs and data URLs cross)")
                })?;
                out.push(Part::Image(image(&url)?));
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "a content part of type `{other}`"
                )))
            }
        }
    }
    Ok(out)
}

/// An image URL: a base64 `data:` URL is inline data, anything else a URL to fetch.
fn image(url: &str) -> Result<Image, Untranslatable> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(Image::Url(url.to_owned()));
    };
    match rest.split_once(',') {
        Some((meta, data)) if meta.ends_with(";base64") => Ok(Image::Base64 {
            media_type: meta.trim_end_matches(";base64").to_owned(),
            data: data.to_owned(),
        }),
        _ => Err(Untranslatable::new("an image data URL that is not base64")),
    }
}

fn tool(t: Tool<'_>) -> Result<ToolDef, Untranslatable> {
    match (t.kind.as_ref(), t.name) {
        ("function", Some(name)) => Ok(ToolDef {
            name: name.into_owned(),
            description: t.description.map(Cow::into_owned),
            parameters: t
                .parameters
                .filter(|p| !is_null(p))
                .map(|p| object(p, "a function's `parameters`"))
                .transpose()?,
            strict: t.strict,
        }),
        ("function", None) => Err(Untranslatable::new("a function tool without a `name`")),
        (kind, _) => Err(Untranslatable::new(format!(
            "a tool of type `{kind}` (only function tools are translated)"
        ))),
    }
}

fn tool_choice(raw: &RawValue) -> Result<ToolChoice, Untranslatable> {
    if raw.get().starts_with('"') {
        let mode: Cow<'_, str> = parse(raw, "tool_choice")?;
        return match mode.as_ref() {
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Any),
            "none" => Ok(ToolChoice::None),
            other => Err(Untranslatable::new(format!("the tool_choice `{other}`"))),
        };
    }
    let named: NamedChoice<'_> = parse(raw, "tool_choice")?;
    match (named.kind.as_ref(), named.name) {
        ("function", Some(name)) => Ok(ToolChoice::Tool(name.into_owned())),
        (kind, _) => Err(Untranslatable::new(format!(
            "the tool_choice of type `{kind}`"
        ))),
    }
}

// ---- writing --------------------------------------------------------------------------

#[derive(Serialize)]
struct Out<'a> {
    model: &'a str,
    input: Vec<OutItem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    stream: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutItem<'a> {
    Message {
        role: &'static str,
        content: OutContent<'a>,
    },
    Call {
        #[serde(rename = "type")]
        kind: &'static str,
        call_id: Cow<'a, str>,
        name: &'a str,
        arguments: &'a str,
    },
    Output {
        #[serde(rename = "type")]
        kind: &'static str,
        call_id: Cow<'a, str>,
        output: String,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutContent<'a> {
    Text(&'a str),
    Joined(String),
    Parts(Vec<OutPart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    InputText {
        text: &'a str,
    },
    InputImage {
        image_url: Cow<'a, str>,
        detail: &'static str,
    },
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a RawValue>,
    strict: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        name: &'a str,
    },
}

/// A user turn: its tool results as `function_call_output` items first, then the rest as one
/// user message.
fn user_items<'a>(m: &'a Message, out: &mut Vec<OutItem<'a>>) -> Result<(), Untranslatable> {
    let mut rest = Vec::new();
    for part in &m.parts {
        match part {
            Part::ToolResult(result) => {
                let mut output = String::new();
                for p in &result.content {
                    match p {
                        Part::Text(text) => {
                            if !output.is_empty() {
                                output.push('\n');
                            }
                            output.push_str(text);
                        }
                        _ => {
                            return Err(Untranslatable::new(
                                "an image in a tool result (written to Responses as text only)",
                            ))
                        }
                    }
                }
                out.push(OutItem::Output {
                    kind: "function_call_output",
                    call_id: ids::responses(&result.id),
                    output,
                });
            }
            Part::Text(text) => rest.push(OutPart::InputText { text }),
            Part::Image(image) => rest.push(OutPart::InputImage {
                image_url: match image {
                    Image::Url(url) => Cow::Borrowed(url.as_str()),
                    Image::Base64 { media_type, data } => {
                        Cow::Owned(format!("data:{media_type};base64,{data}"))
                    }
                },
                detail: "auto",
            }),
            Part::ToolCall(_) => return Err(Untranslatable::new("a user turn with a tool call")),
        }
    }
    match <[_; 1]>::try_from(rest) {
        Ok([OutPart::InputText { text }]) => out.push(OutItem::Message {
            role: "user",
            content: OutContent::Text(text),
        }),
        Ok(one) => out.push(OutItem::Message {
            role: "user",
            content: OutContent::Parts(one.into()),
        }),
        Err(rest) if rest.is_empty() => {}
        Err(rest) => out.push(OutItem::Message {
            role: "user",
            content: OutContent::Parts(rest),
        }),
    }
    Ok(())
}

/// An assistant turn: its text as one message, then its calls as `function_call` items.
fn assistant_items<'a>(m: &'a Message, out: &mut Vec<OutItem<'a>>) -> Result<(), Untranslatable> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in &m.parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::ToolCall(call) => calls.push(OutItem::Call {
                kind: "function_call",
                call_id: ids::responses(&call.id),
                name: &call.name,
                arguments: call.arguments.get(),
            }),
            Part::Image(_) | Part::ToolResult(_) => {
                return Err(Untranslatable::new(
                    "an assistant turn with images or tool results",
                ))
            }
        }
    }
    if !text.is_empty() {
        out.push(OutItem::Message {
            role: "assistant",
            content: OutContent::Joined(text),
        });
    }
    out.extend(calls);
    Ok(())
}

fn out_tool(t: &ToolDef) -> OutTool<'_> {
    OutTool {
        kind: "function",
        name: &t.name,
        description: t.description.as_deref(),
        parameters: t.parameters.as_deref(),
        strict: t.strict.unwrap_or(false),
    }
}
