//! OpenAI Chat Completions requests, read and written.
//!
//! Read: leading `system`/`developer` messages, user messages with text and images (`image_url`:
//! a URL or a base64 data URL), assistant messages with text and function tool calls, `tool`
//! messages, `tools` (functions), `tool_choice`, `parallel_tool_calls`, `stop`,
//! `max_completion_tokens` / `max_tokens`, `temperature`, `top_p`, `stream_options`. Dropped:
//! `user`, `safety_identifier`, `prompt_cache_key`, `store`, `metadata`, `service_tier`,
//! `seed`, `presence_penalty`, `frequency_penalty`, `logit_bias` (token ids of one tokenizer),
//! `reasoning_effort`, `verbosity`, `prediction`, message `name`s, image `detail`, `n: 1`,
//! `response_format: {"type": "text"}`, vLLM's continuation flags (the final assistant message
//! is the prefill). Refused: `n` above 1, `logprobs`, structured output (`response_format`
//! json), audio, files, web search, legacy `functions`, custom tools, a system message after
//! the first turn, any other parameter.
//!
//! Written: one `system` message per piece of the system prompt; tool results as `tool`
//! messages ahead of the rest of their turn; assistant text joined into `content` and its
//! calls in `tool_calls`; `max_completion_tokens`; `stream_options.include_usage` always (the
//! layer reports usage to the client from it); a conversation ending with an assistant turn is
//! continued in the target's form (`"prefix": true`, or vLLM's `continue_final_message`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::openai::{self, Content, ContentPart, OutChoice};
use super::{
    ids, is_null, object_in, parameters, parse, Conversation, Format, Knobs, Message, Part, Role,
    Tagged, ToolCall, ToolChoice, ToolDef, ToolResult, ToolSpec, Untranslatable,
};
use crate::strategy::Prefill;

/// OpenAI's limit on stop sequences.
const MAX_STOP: usize = 4;

#[derive(Debug)]
pub(super) struct Chat;

// ---- reading --------------------------------------------------------------------------

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<Vec<Call<'a>>>,
    #[serde(borrow)]
    tool_call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    audio: Option<&'a RawValue>,
    #[serde(borrow)]
    function_call: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Call<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ImageUrl<'a> {
    #[serde(borrow)]
    url: Cow<'a, str>,
}

/// A tool or a named tool choice: its `type`, and its function if it is one (`F`).
#[derive(Deserialize)]
struct Typed<'a, F> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    function: Option<F>,
}

#[derive(Deserialize)]
struct ToolFunction<'a> {
    #[serde(flatten, borrow)]
    spec: ToolSpec<'a>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceFunction<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(rename = "include_usage")]
    _include_usage: Option<bool>,
}

impl Format for Chat {
    fn read(&self, body: &[u8]) -> Result<Conversation, Untranslatable> {
        let mut c = Conversation::default();
        let (mut max_completion, mut max) = (None, None);
        for (key, value) in parameters(body)? {
            match key.as_ref() {
                "messages" => {
                    let messages: Vec<Msg<'_>> = parse(value, "messages")?;
                    read_messages(&messages, &mut c)?;
                }
                "stream" => c.stream = parse(value, "stream")?,
                // Read, so that a malformed one is refused; what it asks of the client's own
                // stream is `Rules::asks_usage`'s to say.
                "stream_options" => {
                    let _: StreamOptions = parse(value, "stream_options")?;
                }
                "max_completion_tokens" => max_completion = Some(parse(value, key.as_ref())?),
                "max_tokens" => max = Some(parse(value, key.as_ref())?),
                "temperature" => c.temperature = Some(parse(value, "temperature")?),
                "top_p" => c.top_p = Some(parse(value, "top_p")?),
                "stop" => {
                    c.stop = if value.get().starts_with('"') {
                        vec![parse::<Cow<'_, str>>(value, "stop")?.into_owned()]
                    } else {
                        let stop: Vec<Cow<'_, str>> = parse(value, "stop")?;
                        stop.into_iter().map(Cow::into_owned).collect()
                    }
                }
                "tools" => {
                    let tools: Vec<Typed<'_, ToolFunction<'_>>> = parse(value, "tools")?;
                    c.tools = tools.into_iter().map(tool).collect::<Result<_, _>>()?;
                }
                "tool_choice" => c.tool_choice = Some(tool_choice(value)?),
                "parallel_tool_calls" => c.parallel_tool_calls = Some(parse(value, key.as_ref())?),
                "n" => {
                    if parse::<u64>(value, "n")? != 1 {
                        return Err(Untranslatable::new("`n` above 1 (several choices)"));
                    }
                }
                "logprobs" => {
                    if parse::<bool>(value, "logprobs")? {
                        return Err(Untranslatable::new("`logprobs`"));
                    }
                }
                "top_logprobs" => {
                    if parse::<u64>(value, "top_logprobs")? > 0 {
                        return Err(Untranslatable::new("`top_logprobs`"));
                    }
                }
                "response_format" => {
                    let format: Tagged<'_> = parse(value, "response_format")?;
                    if format.kind != "text" {
                        return Err(Untranslatable::new(format!(
                            "structured output (`response_format` `{}`)",
                            format.kind
                        )));
                    }
                }
                "modalities" => {
                    let modalities: Vec<Cow<'_, str>> = parse(value, "modalities")?;
                    if modalities.iter().any(|m| m != "text") {
                        return Err(Untranslatable::new("output modalities other than text"));
                    }
                }
                // How the answer is made, not what it is; vLLM's flags: the final assistant
                // message is read as the prefill it asks for.
                "user"
                | "safety_identifier"
                | "prompt_cache_key"
                | "prompt_cache_retention"
                | "store"
                | "metadata"
                | "service_tier"
                | "seed"
                | "presence_penalty"
                | "frequency_penalty"
                | "logit_bias"
                | "reasoning_effort"
                | "verbosity"
                | "prediction"
                | "continue_final_message"
                | "add_generation_prompt" => {}
                other => {
                    return Err(Untranslatable::new(format!(
                        "the Chat Completions parameter `{other}`, which other dialects do not \
                         have"
                    )))
                }
            }
        }
        c.max_tokens = max_completion.or(max);
        Ok(c)
    }

    fn write(
        &self,
        c: &Conversation,
        model: &str,
        prefill: Prefill,
    ) -> Result<Vec<u8>, Untranslatable> {
        if c.stop.len() > MAX_STOP {
            return Err(Untranslatable::new(format!(
                "{} stop sequences (OpenAI takes at most {MAX_STOP})",
                c.stop.len()
            )));
        }
        let mut messages: Vec<OutMsg<'_>> = c
            .system
            .iter()
            .map(|text| OutMsg::System {
                content: text.as_str(),
            })
            .collect();
        for m in &c.messages {
            match m.role {
                Role::User => user_messages(m, &mut messages)?,
                Role::Assistant => {
                    let (text, calls) = openai::assistant(m, |call| OutCall {
                        id: ids::chat(&call.id),
                        kind: "function",
                        function: OutFunction {
                            name: &call.name,
                            arguments: call.arguments.get(),
                        },
                    })?;
                    if text.is_empty() && calls.is_empty() {
                        continue;
                    }
                    messages.push(OutMsg::Assistant {
                        content: (!text.is_empty()).then_some(text),
                        tool_calls: calls,
                        prefix: None,
                    });
                }
            }
        }
        let continued = c.ends_with_assistant();
        if continued && prefill == Prefill::Prefix {
            if let Some(OutMsg::Assistant { prefix, .. }) = messages.last_mut() {
                *prefix = Some(true);
            }
        }
        let vllm = continued && prefill == Prefill::ContinueFinalMessage;
        let tools: Vec<OutTool<'_>> = c.tools.iter().map(out_tool).collect();
        let with_tools = !tools.is_empty();
        let out = Out {
            model,
            messages,
            max_completion_tokens: c.max_tokens,
            stop: (!c.stop.is_empty()).then_some(&c.stop),
            knobs: Knobs {
                temperature: c.temperature,
                top_p: c.top_p,
                tools,
                tool_choice: c.tool_choice.as_ref().filter(|_| with_tools).map(|choice| {
                    OutChoice::new(choice, |name| OutNamedChoice {
                        kind: "function",
                        function: OutChoiceFunction { name },
                    })
                }),
            },
            // OpenAI refuses `parallel_tool_calls` without tools.
            parallel_tool_calls: c.parallel_tool_calls.filter(|_| with_tools),
            continue_final_message: vllm.then_some(true),
            add_generation_prompt: vllm.then_some(false),
            stream: true,
            stream_options: StreamUsage {
                include_usage: true,
            },
        };
        Ok(serde_json::to_vec(&out).expect("a request always serializes"))
    }
}

fn read_messages(messages: &[Msg<'_>], c: &mut Conversation) -> Result<(), Untranslatable> {
    for m in messages {
        if m.audio.is_some_and(|a| !is_null(a)) {
            return Err(Untranslatable::new("audio in a message"));
        }
        if m.function_call.is_some_and(|f| !is_null(f)) {
            return Err(Untranslatable::new("a legacy `function_call`"));
        }
        match m.role.as_ref() {
            "system" | "developer" => openai::system(parts(m.content)?, c)?,
            "user" => c.messages.push(Message {
                role: Role::User,
                parts: parts(m.content)?,
            }),
            "assistant" => {
                let mut message = Message {
                    role: Role::Assistant,
                    parts: parts(m.content)?,
                };
                if let Some(refusal) = m.refusal.as_deref().filter(|r| !r.is_empty()) {
                    message.parts.push(Part::Text(refusal.to_owned()));
                }
                for call in m.tool_calls.iter().flatten() {
                    message.parts.push(Part::ToolCall(tool_call(call)?));
                }
                c.messages.push(message);
            }
            "tool" => {
                let id = m
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| Untranslatable::new("a tool message without `tool_call_id`"))?;
                if id.is_empty() {
                    return Err(Untranslatable::new("a tool message with an empty id"));
                }
                c.messages.push(Message {
                    role: Role::User,
                    parts: vec![Part::ToolResult(ToolResult {
                        id: id.to_owned(),
                        content: parts(m.content)?,
                        is_error: false,
                    })],
                });
            }
            other => return Err(Untranslatable::new(format!("a message of role `{other}`"))),
        }
    }
    Ok(())
}

/// A message's `content`: a string, parts, or nothing.
fn parts(content: Option<&RawValue>) -> Result<Vec<Part>, Untranslatable> {
    openai::content(content, |p: ContentPart<'_, ImageUrl<'_>>| {
        match p.kind.as_ref() {
            "text" => Ok(openai::text_part(p.text)),
            "refusal" => Ok(openai::text_part(p.refusal)),
            "image_url" => {
                let url = p
                    .image_url
                    .ok_or_else(|| Untranslatable::new("an image_url part without its url"))?
                    .url;
                Ok(Some(Part::Image(openai::image(&url)?)))
            }
            other => Err(Untranslatable::new(format!(
                "a content part of type `{other}`"
            ))),
        }
    })
}

fn tool_call(call: &Call<'_>) -> Result<ToolCall, Untranslatable> {
    if call.kind.as_deref().is_some_and(|k| k != "function") {
        return Err(Untranslatable::new(
            "a tool call that is not a function call",
        ));
    }
    let function = call
        .function
        .as_ref()
        .ok_or_else(|| Untranslatable::new("a tool call without its function"))?;
    let id = call.id.as_deref().unwrap_or_default();
    if id.is_empty() {
        return Err(Untranslatable::new("a tool call without an id"));
    }
    Ok(ToolCall {
        id: id.to_owned(),
        name: function.name.clone().into_owned(),
        arguments: object_in(
            function.arguments.as_deref().unwrap_or_default(),
            "a tool call's arguments",
        )?,
    })
}

fn tool(t: Typed<'_, ToolFunction<'_>>) -> Result<ToolDef, Untranslatable> {
    match (t.kind.as_ref(), t.function) {
        ("function", Some(f)) => f.spec.def(f.parameters, "a function's `parameters`"),
        (kind, _) => Err(Untranslatable::new(format!(
            "a tool of type `{kind}` (only function tools are translated)"
        ))),
    }
}

fn tool_choice(raw: &RawValue) -> Result<ToolChoice, Untranslatable> {
    openai::tool_choice(raw, |raw| {
        let named: Typed<'_, ChoiceFunction<'_>> = parse(raw, "tool_choice")?;
        Ok((named.kind, named.function.map(|f| f.name)))
    })
}

// ---- writing --------------------------------------------------------------------------

#[derive(Serialize)]
struct Out<'a> {
    model: &'a str,
    messages: Vec<OutMsg<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Vec<String>>,
    #[serde(flatten)]
    knobs: Knobs<OutTool<'a>, OutChoice<OutNamedChoice<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continue_final_message: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    add_generation_prompt: Option<bool>,
    stream: bool,
    stream_options: StreamUsage,
}

#[derive(Serialize)]
struct StreamUsage {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
enum OutMsg<'a> {
    System {
        content: &'a str,
    },
    User {
        content: Content<'a, OutPart<'a>>,
    },
    Assistant {
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<OutCall<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        prefix: Option<bool>,
    },
    Tool {
        tool_call_id: Cow<'a, str>,
        content: Content<'a, OutPart<'a>>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: OutImageUrl<'a> },
}

#[derive(Serialize)]
struct OutImageUrl<'a> {
    url: Cow<'a, str>,
}

#[derive(Serialize)]
struct OutCall<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutToolFunction<'a>,
}

#[derive(Serialize)]
struct OutToolFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
struct OutNamedChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutChoiceFunction<'a>,
}

#[derive(Serialize)]
struct OutChoiceFunction<'a> {
    name: &'a str,
}

/// A user turn: its tool results as `tool` messages first, then the rest as one user message.
fn user_messages<'a>(m: &'a Message, out: &mut Vec<OutMsg<'a>>) -> Result<(), Untranslatable> {
    for part in &m.parts {
        if let Part::ToolResult(result) = part {
            let texts = openai::result_texts(
                result,
                "an image in a tool result (Chat tool messages carry text only)",
            )?;
            out.push(OutMsg::Tool {
                tool_call_id: ids::chat(&result.id),
                content: match texts.as_slice() {
                    [] => Content::Text(""),
                    [one] => Content::Text(one),
                    many => {
                        Content::Parts(many.iter().map(|text| OutPart::Text { text }).collect())
                    }
                },
            });
        }
    }
    let rest: Vec<OutPart<'_>> = m
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(text) => Some(OutPart::Text { text }),
            Part::Image(image) => Some(OutPart::ImageUrl {
                image_url: OutImageUrl {
                    url: openai::image_url(image),
                },
            }),
            Part::ToolCall(_) | Part::ToolResult(_) => None,
        })
        .collect();
    if m.parts.iter().any(|p| matches!(p, Part::ToolCall(_))) {
        return Err(Untranslatable::new("a user turn with a tool call"));
    }
    let text_of = |p: &OutPart<'a>| match p {
        OutPart::Text { text } => Some(*text),
        OutPart::ImageUrl { .. } => None,
    };
    if let Some(content) = openai::user_content(rest, text_of) {
        out.push(OutMsg::User { content });
    }
    Ok(())
}

fn out_tool(t: &ToolDef) -> OutTool<'_> {
    OutTool {
        kind: "function",
        function: OutToolFunction {
            name: &t.name,
            description: t.description.as_deref(),
            parameters: t.parameters.as_deref(),
            strict: t.strict,
        },
    }
}
