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

use super::openai::{self, Content, ContentPart, OutChoice};
use super::{
    ids, object_in, parameters, parse, Conversation, Format, Knobs, Message, Part, Role, Tagged,
    ToolCall, ToolChoice, ToolDef, ToolResult, ToolSpec, Untranslatable,
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

/// An `input_image`'s `image_url`: the URL itself (Chat nests it in an object).
#[derive(Deserialize)]
#[serde(transparent)]
struct ImageUrl<'a>(#[serde(borrow)] Cow<'a, str>);

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
    format: Option<Tagged<'a>>,
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
                content: Content::Text(text),
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
        let out = Out {
            model,
            input,
            max_output_tokens: c.max_tokens.map(|n| n.max(MIN_OUTPUT_TOKENS)),
            knobs: Knobs {
                temperature: c.temperature,
                top_p: c.top_p,
                tools,
                tool_choice: c.tool_choice.as_ref().filter(|_| with_tools).map(|choice| {
                    OutChoice::new(choice, |name| OutNamedChoice {
                        kind: "function",
                        name,
                    })
                }),
            },
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
        "system" | "developer" => openai::system(parts(item.content)?, c)?,
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
    openai::content(content, |p: ContentPart<'_, ImageUrl<'_>>| {
        match p.kind.as_ref() {
            "input_text" | "output_text" => Ok(openai::text_part(p.text)),
            "refusal" => Ok(openai::text_part(p.refusal)),
            "input_image" => {
                let ImageUrl(url) = p.image_url.ok_or_else(|| {
                    Untranslatable::new("an image by file id (only URLs and data URLs cross)")
                })?;
                Ok(Some(Part::Image(openai::image(&url)?)))
            }
            other => Err(Untranslatable::new(format!(
                "a content part of type `{other}`"
            ))),
        }
    })
}

fn tool(t: Tool<'_>) -> Result<ToolDef, Untranslatable> {
    match (t.kind.as_ref(), t.name) {
        ("function", Some(name)) => ToolSpec {
            name,
            description: t.description,
            strict: t.strict,
        }
        .def(t.parameters, "a function's `parameters`"),
        ("function", None) => Err(Untranslatable::new("a function tool without a `name`")),
        (kind, _) => Err(Untranslatable::new(format!(
            "a tool of type `{kind}` (only function tools are translated)"
        ))),
    }
}

fn tool_choice(raw: &RawValue) -> Result<ToolChoice, Untranslatable> {
    openai::tool_choice(raw, |raw| {
        let named: NamedChoice<'_> = parse(raw, "tool_choice")?;
        Ok((named.kind, named.name))
    })
}

// ---- writing --------------------------------------------------------------------------

#[derive(Serialize)]
struct Out<'a> {
    model: &'a str,
    input: Vec<OutItem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(flatten)]
    knobs: Knobs<OutTool<'a>, OutChoice<OutNamedChoice<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    stream: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutItem<'a> {
    Message {
        role: &'static str,
        content: Content<'a, OutPart<'a>>,
    },
    /// An assistant's text, joined from its parts.
    Said { role: &'static str, content: String },
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
struct OutNamedChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
}

/// A user turn: its tool results as `function_call_output` items first, then the rest as one
/// user message.
fn user_items<'a>(m: &'a Message, out: &mut Vec<OutItem<'a>>) -> Result<(), Untranslatable> {
    let mut rest = Vec::new();
    for part in &m.parts {
        match part {
            Part::ToolResult(result) => {
                let texts = openai::result_texts(
                    result,
                    "an image in a tool result (written to Responses as text only)",
                )?;
                let mut output = String::new();
                for text in texts {
                    if !output.is_empty() {
                        output.push('\n');
                    }
                    output.push_str(text);
                }
                out.push(OutItem::Output {
                    kind: "function_call_output",
                    call_id: ids::responses(&result.id),
                    output,
                });
            }
            Part::Text(text) => rest.push(OutPart::InputText { text }),
            Part::Image(image) => rest.push(OutPart::InputImage {
                image_url: openai::image_url(image),
                detail: "auto",
            }),
            Part::ToolCall(_) => return Err(Untranslatable::new("a user turn with a tool call")),
        }
    }
    let text_of = |p: &OutPart<'a>| match p {
        OutPart::InputText { text } => Some(*text),
        OutPart::InputImage { .. } => None,
    };
    if let Some(content) = openai::user_content(rest, text_of) {
        out.push(OutItem::Message {
            role: "user",
            content,
        });
    }
    Ok(())
}

/// An assistant turn: its text as one message, then its calls as `function_call` items.
fn assistant_items<'a>(m: &'a Message, out: &mut Vec<OutItem<'a>>) -> Result<(), Untranslatable> {
    let (text, calls) = openai::assistant(m, |call| OutItem::Call {
        kind: "function_call",
        call_id: ids::responses(&call.id),
        name: &call.name,
        arguments: call.arguments.get(),
    })?;
    if !text.is_empty() {
        out.push(OutItem::Said {
            role: "assistant",
            content: text,
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
