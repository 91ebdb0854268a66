//! Gemini `GenerateContent` requests (Google's own API), read and written.
//!
//! Read (lowerCamel or snake_case keys, as the API reads both): `contents` with text, images
//! (`inlineData` of an image type, `fileData` at an `http(s)` URL), `functionCall` and
//! `functionResponse` parts; `systemInstruction` (text parts); `functionDeclarations`
//! (`parameters`, whose upper-case OpenAPI types are written in JSON Schema's lower case, or
//! `parametersJsonSchema`); `toolConfig.functionCallingConfig` (`AUTO`, `NONE`, `ANY`, `ANY`
//! with one allowed name); `generationConfig`'s `maxOutputTokens`, `temperature`, `topP`,
//! `stopSequences`, `candidateCount` 1. A call without an id gets one made from its place in
//! the conversation, and its response (matched by name, in order, as the API matches them)
//! the same. Dropped: thought parts of earlier turns and every `thoughtSignature` (they verify
//! Gemini's own reasoning to Gemini), `thinkingConfig`, `topK`, `seed`, the penalties,
//! `mediaResolution`, `safetySettings`, `labels`, a declaration's `response` schema. Refused:
//! other parts (audio, video, PDF, files the API stores, executable code and its results),
//! other tools (Google Search, code execution, URL context...), `cachedContent`, structured
//! output (`responseMimeType` other than text, `responseSchema`), other modalities,
//! `candidateCount` above 1, logprobs, `VALIDATED` or several allowed function names, any
//! other parameter. The request streams: the layer reads only `:streamGenerateContent`.
//!
//! Written: turns `user` and `model`, consecutive turns of one role merged; each tool call as
//! a `functionCall` with the placeholder `thoughtSignature` Google names for calls Gemini did
//! not make (Gemini 3 refuses a history whose calls have none); a tool result as a
//! `functionResponse` named after its call (`{"output": text}`, `{"error": text}` for a
//! failed call), ids kept; images inline, or by URL as `fileData` with the media type its
//! extension names (refused without one); tools as `parametersJsonSchema` (JSON Schema as it
//! came); `temperature` at most 2 (the API's range); at most five stop sequences (refused
//! past that). A conversation ending with an assistant turn ends with that `model` turn
//! (Gemini's prefill). `strict` and `parallel_tool_calls` have no Gemini form and are dropped.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{
    is_null, members, object, parse, Conversation, Format, Image, Message, Part, Role, ToolCall,
    ToolChoice, ToolDef, ToolResult, Untranslatable,
};
use crate::dialect::FOREIGN_CALL_SIGNATURE;
use crate::strategy::Prefill;

/// The most stop sequences the API takes.
const MAX_STOP: usize = 5;

#[derive(Debug)]
pub(super) struct GenerateContent;

// ---- reading --------------------------------------------------------------------------

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parts: Vec<InPart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InPart<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    thought: Option<bool>,
    #[serde(borrow, alias = "inline_data")]
    inline_data: Option<Blob<'a>>,
    #[serde(borrow, alias = "file_data")]
    file_data: Option<FileData<'a>>,
    #[serde(borrow, alias = "function_call")]
    function_call: Option<InCall<'a>>,
    #[serde(borrow, alias = "function_response")]
    function_response: Option<InResponse<'a>>,
    #[serde(borrow, alias = "executable_code")]
    executable_code: Option<&'a RawValue>,
    #[serde(borrow, alias = "code_execution_result")]
    code_execution_result: Option<&'a RawValue>,
    #[serde(borrow, alias = "video_metadata")]
    video_metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob<'a> {
    #[serde(borrow, alias = "mime_type")]
    mime_type: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    #[serde(borrow, alias = "mime_type")]
    mime_type: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "file_uri")]
    file_uri: Cow<'a, str>,
}

#[derive(Deserialize)]
struct InCall<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InResponse<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InTool<'a> {
    #[serde(borrow, alias = "function_declarations", default)]
    function_declarations: Vec<Declaration<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Declaration<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow, alias = "parameters_json_schema")]
    parameters_json_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    #[serde(borrow, alias = "function_calling_config")]
    function_calling_config: Option<CallingConfig<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallingConfig<'a> {
    #[serde(borrow)]
    mode: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "allowed_function_names", default)]
    allowed_function_names: Vec<Cow<'a, str>>,
}

impl Format for GenerateContent {
    fn read(&self, body: &[u8]) -> Result<Conversation, Untranslatable> {
        // Only `:streamGenerateContent` requests reach the layer: the path says it streams.
        let mut c = Conversation {
            stream: true,
            ..Conversation::default()
        };
        let mut calls = Calls::default();
        for (key, value) in members(body)? {
            if is_null(value) {
                continue;
            }
            match key.as_ref() {
                "contents" => {
                    let contents: Vec<Content<'_>> = parse(value, "contents")?;
                    for content in contents {
                        c.messages.push(message(content, &mut calls)?);
                    }
                }
                "systemInstruction" | "system_instruction" => {
                    let content: Content<'_> = parse(value, "systemInstruction")?;
                    for part in content.parts {
                        match part {
                            InPart {
                                text: Some(text),
                                thought: None | Some(false),
                                inline_data: None,
                                file_data: None,
                                function_call: None,
                                function_response: None,
                                executable_code: None,
                                code_execution_result: None,
                                video_metadata: None,
                            } => c.system.push(text.into_owned()),
                            _ => {
                                return Err(Untranslatable::new(
                                    "a system instruction that is not text",
                                ))
                            }
                        }
                    }
                }
                "tools" => {
                    for (i, tool) in members_of_list(value, "tools")?.into_iter().enumerate() {
                        c.tools.extend(tools(tool, i)?);
                    }
                }
                "toolConfig" | "tool_config" => {
                    let config: ToolConfig<'_> = parse(value, "toolConfig")?;
                    if let Some(calling) = config.function_calling_config {
                        c.tool_choice = tool_choice(calling)?;
                    }
                }
                "generationConfig" | "generation_config" => generation(value, &mut c)?,
                // The target's name replaces it (Vertex-style bodies may name it).
                "model" => {}
                // How the answer is made, not what it is.
                "safetySettings" | "safety_settings" | "labels" => {}
                "cachedContent" | "cached_content" => {
                    return Err(Untranslatable::new(
                        "`cachedContent` (content Gemini stores, by name)",
                    ))
                }
                other => {
                    return Err(Untranslatable::new(format!(
                        "the GenerateContent parameter `{other}`, which other dialects do not \
                         have"
                    )))
                }
            }
        }
        Ok(c)
    }

    fn write(
        &self,
        c: &Conversation,
        _model: &str,
        _prefill: Prefill,
    ) -> Result<Vec<u8>, Untranslatable> {
        let mut contents: Vec<OutContent<'_>> = Vec::new();
        for m in &c.messages {
            let mut parts = Vec::with_capacity(m.parts.len());
            for part in &m.parts {
                parts.extend(out_part(part, c)?);
            }
            if parts.is_empty() {
                continue;
            }
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "model",
            };
            match contents.last_mut() {
                // Consecutive turns of one role are one turn.
                Some(last) if last.role == role => last.parts.extend(parts),
                _ => contents.push(OutContent { role, parts }),
            }
        }
        if c.stop.len() > MAX_STOP {
            return Err(Untranslatable::new(format!(
                "{} stop sequences (Gemini takes at most {MAX_STOP})",
                c.stop.len()
            )));
        }
        let system_instruction = (!c.system.is_empty()).then(|| OutSystem {
            parts: c.system.iter().map(|text| OutPart::Text { text }).collect(),
        });
        let tools = (!c.tools.is_empty()).then(|| {
            [OutTool {
                function_declarations: c
                    .tools
                    .iter()
                    .map(|t| OutDeclaration {
                        name: &t.name,
                        description: t.description.as_deref(),
                        parameters_json_schema: t.parameters.as_deref(),
                    })
                    .collect(),
            }]
        });
        let tool_config = match (&tools, &c.tool_choice) {
            (Some(_), Some(choice)) => Some(OutToolConfig {
                function_calling_config: OutCalling {
                    mode: match choice {
                        ToolChoice::Auto => "AUTO",
                        ToolChoice::Any | ToolChoice::Tool(_) => "ANY",
                        ToolChoice::None => "NONE",
                    },
                    allowed_function_names: match choice {
                        ToolChoice::Tool(name) => Some([name.as_str()]),
                        _ => None,
                    },
                },
            }),
            _ => None,
        };
        let generation = OutGeneration {
            max_output_tokens: c.max_tokens,
            // The API's range is 0 to 2.
            temperature: c.temperature.map(|t| t.clamp(0.0, 2.0)),
            top_p: c.top_p,
            stop_sequences: &c.stop,
        };
        let out = Out {
            contents,
            system_instruction,
            tools,
            tool_config,
            generation_config: (!generation.is_empty()).then_some(generation),
        };
        Ok(serde_json::to_vec(&out).expect("a request always serializes"))
    }
}

/// Calls that came without an id, waiting for their responses: the API pairs them by name,
/// in order.
#[derive(Default)]
struct Calls {
    /// Calls read so far: the seed of a made id.
    count: usize,
    waiting: Vec<(String, VecDeque<String>)>,
}

impl Calls {
    /// The id of a call named `name`: its own, or one made from its place.
    fn call(&mut self, id: Option<Cow<'_, str>>, name: &str) -> String {
        self.count += 1;
        match id.filter(|id| !id.is_empty()) {
            Some(id) => id.into_owned(),
            None => {
                let made = super::ids::minted("call_", &[name, &self.count.to_string()]);
                match self.waiting.iter_mut().find(|(n, _)| n == name) {
                    Some((_, queue)) => queue.push_back(made.clone()),
                    None => self
                        .waiting
                        .push((name.to_owned(), VecDeque::from([made.clone()]))),
                }
                made
            }
        }
    }

    /// The id of a response to `name`: its own, or that of the earliest call of that name
    /// still waiting.
    fn response(&mut self, id: Option<Cow<'_, str>>, name: &str) -> Result<String, Untranslatable> {
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            return Ok(id.into_owned());
        }
        self.waiting
            .iter_mut()
            .find(|(n, _)| n == name)
            .and_then(|(_, queue)| queue.pop_front())
            .ok_or_else(|| {
                Untranslatable::new(format!(
                    "a function response without an id to `{name}`, which no earlier call \
                     without an id asked for"
                ))
            })
    }
}

fn message(content: Content<'_>, calls: &mut Calls) -> Result<Message, Untranslatable> {
    let role = match content.role.as_deref() {
        None | Some("user") => Role::User,
        Some("model") => Role::Assistant,
        Some(other) => return Err(Untranslatable::new(format!("a turn of role `{other}`"))),
    };
    let mut parts = Vec::with_capacity(content.parts.len());
    for part in content.parts {
        parts.extend(read_part(part, calls)?);
    }
    Ok(Message { role, parts })
}

/// One part as the conversation's; `None` for what is dropped (thoughts, empty text).
fn read_part(part: InPart<'_>, calls: &mut Calls) -> Result<Option<Part>, Untranslatable> {
    if part.executable_code.is_some() || part.code_execution_result.is_some() {
        return Err(Untranslatable::new(
            "code execution parts (a tool only Gemini runs)",
        ));
    }
    if part.video_metadata.is_some() {
        return Err(Untranslatable::new("a video part"));
    }
    let filled = [
        part.text.is_some(),
        part.inline_data.is_some(),
        part.file_data.is_some(),
        part.function_call.is_some(),
        part.function_response.is_some(),
    ]
    .iter()
    .filter(|f| **f)
    .count();
    if filled > 1 {
        return Err(Untranslatable::new("a part of more than one kind"));
    }
    if part.thought == Some(true) {
        // Gemini's own reasoning: no other provider reads it back.
        return Ok(None);
    }
    if let Some(text) = part.text {
        return Ok((!text.is_empty()).then(|| Part::Text(text.into_owned())));
    }
    if let Some(blob) = part.inline_data {
        if !blob.mime_type.starts_with("image/") {
            return Err(Untranslatable::new(format!(
                "inline data of type `{}` (other dialects take images)",
                blob.mime_type
            )));
        }
        return Ok(Some(Part::Image(Image::Base64 {
            media_type: blob.mime_type.into_owned(),
            data: blob.data.into_owned(),
        })));
    }
    if let Some(file) = part.file_data {
        let image = file
            .mime_type
            .as_deref()
            .map_or(true, |m| m.starts_with("image/"));
        let public = file.file_uri.starts_with("https://") || file.file_uri.starts_with("http://");
        let google = file
            .file_uri
            .starts_with("https://generativelanguage.googleapis.com/");
        if !image || !public || google {
            return Err(Untranslatable::new(
                "file data that is not an image at a public URL (files Gemini stores, gs:// \
                 objects, other media)",
            ));
        }
        return Ok(Some(Part::Image(Image::Url(file.file_uri.into_owned()))));
    }
    if let Some(call) = part.function_call {
        let id = calls.call(call.id, &call.name);
        return Ok(Some(Part::ToolCall(ToolCall {
            id,
            name: call.name.into_owned(),
            arguments: match call.args {
                Some(args) if !is_null(args) => object(args, "a function call's `args`")?,
                _ => RawValue::from_string("{}".into()).expect("{} is JSON"),
            },
        })));
    }
    if let Some(response) = part.function_response {
        let id = calls.response(response.id, &response.name)?;
        let (text, is_error) = match response.response {
            Some(raw) if !is_null(raw) => result_text(raw)?,
            _ => (String::new(), false),
        };
        return Ok(Some(Part::ToolResult(ToolResult {
            id,
            content: (!text.is_empty())
                .then_some(Part::Text(text))
                .into_iter()
                .collect(),
            is_error,
        })));
    }
    // An empty part (only a signature, say) says nothing.
    Ok(None)
}

/// A function response as text: its `output` or `error` alone when that is all it has (the
/// API's own convention), else the whole object as JSON; and whether it is an error.
fn result_text(raw: &RawValue) -> Result<(String, bool), Untranslatable> {
    let value: Value = parse(raw, "a function response's `response`")?;
    let Value::Object(map) = value else {
        return Err(Untranslatable::new(
            "a function response whose `response` is not an object",
        ));
    };
    if map.len() == 1 {
        for (key, is_error) in [("output", false), ("error", true)] {
            match map.get(key) {
                Some(Value::String(text)) => return Ok((text.clone(), is_error)),
                Some(other) => return Ok((other.to_string(), is_error)),
                None => {}
            }
        }
    }
    Ok((Value::Object(map).to_string(), false))
}

/// The elements of the JSON array `raw`.
fn members_of_list<'a>(raw: &'a RawValue, what: &str) -> Result<Vec<&'a RawValue>, Untranslatable> {
    parse(raw, what)
}

/// The function declarations of the `i`th tool; a tool of another kind is refused.
fn tools(raw: &RawValue, i: usize) -> Result<Vec<ToolDef>, Untranslatable> {
    for (key, value) in members(raw.get().as_bytes())? {
        if is_null(value) {
            continue;
        }
        if !matches!(
            key.as_ref(),
            "functionDeclarations" | "function_declarations"
        ) {
            return Err(Untranslatable::new(format!(
                "the tool `{key}` (one only Gemini runs)"
            )));
        }
    }
    let tool: InTool<'_> = parse(raw, &format!("tools[{i}]"))?;
    tool.function_declarations
        .into_iter()
        .map(|d| {
            let parameters = match (d.parameters_json_schema, d.parameters) {
                (Some(schema), _) if !is_null(schema) => {
                    Some(object(schema, "a declaration's `parametersJsonSchema`")?)
                }
                (_, Some(schema)) if !is_null(schema) => Some(json_schema(schema)?),
                _ => None,
            };
            Ok(ToolDef {
                name: d.name.into_owned(),
                description: d.description.map(Cow::into_owned),
                parameters,
                strict: None,
            })
        })
        .collect()
}

/// A declaration's OpenAPI `parameters` as JSON Schema: its types (`OBJECT`, `STRING`...)
/// in lower case, the rest as it came.
fn json_schema(raw: &RawValue) -> Result<Box<RawValue>, Untranslatable> {
    let mut value: Value = parse(raw, "a declaration's `parameters`")?;
    if !value.is_object() {
        return Err(Untranslatable::new(
            "a declaration's `parameters` is not an object",
        ));
    }
    lower_types(&mut value, 0)?;
    RawValue::from_string(value.to_string())
        .map_err(|e| Untranslatable::new(format!("a declaration's `parameters`: {e}")))
}

/// Schemas nest at most this deep (hostile input must not exhaust the stack).
const MAX_DEPTH: usize = 64;

fn lower_types(value: &mut Value, depth: usize) -> Result<(), Untranslatable> {
    if depth > MAX_DEPTH {
        return Err(Untranslatable::new("a parameter schema nested too deep"));
    }
    match value {
        Value::Object(map) => {
            if let Some(Value::String(kind)) = map.get_mut("type") {
                kind.make_ascii_lowercase();
            }
            for (key, child) in map.iter_mut() {
                // `properties` maps names to schemas; every other member is a schema, a list
                // of them, or a value no `type` in it changes.
                if key != "type" {
                    lower_types(child, depth + 1)?;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                lower_types(item, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn tool_choice(config: CallingConfig<'_>) -> Result<Option<ToolChoice>, Untranslatable> {
    let names = &config.allowed_function_names;
    Ok(Some(match (config.mode.as_deref(), names.as_slice()) {
        (None | Some("MODE_UNSPECIFIED"), []) => return Ok(None),
        (Some("AUTO"), []) => ToolChoice::Auto,
        (Some("NONE"), []) => ToolChoice::None,
        (Some("ANY"), []) => ToolChoice::Any,
        (Some("ANY"), [one]) => ToolChoice::Tool(one.clone().into_owned()),
        (Some(mode), []) => {
            return Err(Untranslatable::new(format!(
                "the function calling mode `{mode}`"
            )))
        }
        _ => {
            return Err(Untranslatable::new(
                "`allowedFunctionNames` other than one function that must be called",
            ))
        }
    }))
}

fn generation(raw: &RawValue, c: &mut Conversation) -> Result<(), Untranslatable> {
    for (key, value) in members(raw.get().as_bytes())? {
        if is_null(value) {
            continue;
        }
        match key.as_ref() {
            "maxOutputTokens" | "max_output_tokens" => {
                c.max_tokens = Some(parse(value, "maxOutputTokens")?)
            }
            "temperature" => c.temperature = Some(parse(value, "temperature")?),
            "topP" | "top_p" => c.top_p = Some(parse(value, "topP")?),
            "stopSequences" | "stop_sequences" => {
                let stop: Vec<Cow<'_, str>> = parse(value, "stopSequences")?;
                c.stop = stop.into_iter().map(Cow::into_owned).collect();
            }
            "candidateCount" | "candidate_count" => {
                let n: u64 = parse(value, "candidateCount")?;
                if n > 1 {
                    return Err(Untranslatable::new(
                        "`candidateCount` above 1 (several answers at once)",
                    ));
                }
            }
            "responseMimeType" | "response_mime_type" => {
                let mime: Cow<'_, str> = parse(value, "responseMimeType")?;
                if mime != "text/plain" {
                    return Err(Untranslatable::new(format!(
                        "structured output (`responseMimeType` `{mime}`)"
                    )));
                }
            }
            "responseModalities" | "response_modalities" => {
                let modalities: Vec<Cow<'_, str>> = parse(value, "responseModalities")?;
                if modalities.iter().any(|m| m != "TEXT") {
                    return Err(Untranslatable::new("`responseModalities` other than text"));
                }
            }
            // How the answer is made, not what it is.
            "topK" | "top_k" | "seed" | "presencePenalty" | "presence_penalty"
            | "frequencyPenalty" | "frequency_penalty" | "thinkingConfig" | "thinking_config"
            | "mediaResolution" | "media_resolution" => {}
            other => {
                return Err(Untranslatable::new(format!(
                    "the generationConfig parameter `{other}`, which other dialects do not have"
                )))
            }
        }
    }
    Ok(())
}

// ---- writing --------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Out<'a> {
    contents: Vec<OutContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<OutSystem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<[OutTool<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<OutToolConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<OutGeneration<'a>>,
}

#[derive(Serialize)]
struct OutContent<'a> {
    role: &'static str,
    parts: Vec<OutPart<'a>>,
}

#[derive(Serialize)]
struct OutSystem<'a> {
    parts: Vec<OutPart<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutPart<'a> {
    Text {
        text: &'a str,
    },
    Inline {
        #[serde(rename = "inlineData")]
        inline_data: OutBlob<'a>,
    },
    File {
        #[serde(rename = "fileData")]
        file_data: OutFile<'a>,
    },
    Call {
        #[serde(rename = "functionCall")]
        function_call: OutCall<'a>,
        #[serde(rename = "thoughtSignature")]
        thought_signature: &'static str,
    },
    Response {
        #[serde(rename = "functionResponse")]
        function_response: OutResponse<'a>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutBlob<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutFile<'a> {
    mime_type: &'static str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct OutCall<'a> {
    id: &'a str,
    name: &'a str,
    args: &'a RawValue,
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: &'a str,
    name: &'a str,
    response: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutTool<'a> {
    function_declarations: Vec<OutDeclaration<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutToolConfig<'a> {
    function_calling_config: OutCalling<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutCalling<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'a str; 1]>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutGeneration<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
}

impl OutGeneration<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

/// A part as Gemini's; a tool result's images have no form there.
fn out_part<'a>(part: &'a Part, c: &'a Conversation) -> Result<Vec<OutPart<'a>>, Untranslatable> {
    Ok(match part {
        Part::Text(text) if text.is_empty() => Vec::new(),
        Part::Text(text) => vec![OutPart::Text { text }],
        Part::Image(image) => vec![out_image(image)?],
        // Gemini 3 checks the first call of each step for a signature, and a step is the
        // API's to delimit, not the turns merged here: every call carries the placeholder
        // (allowed on each), so none is found unsigned.
        Part::ToolCall(call) => vec![OutPart::Call {
            function_call: OutCall {
                id: &call.id,
                name: &call.name,
                args: &call.arguments,
            },
            thought_signature: FOREIGN_CALL_SIGNATURE,
        }],
        Part::ToolResult(result) => {
            let name = name_of_call(c, &result.id)?;
            let mut text = String::new();
            for part in &result.content {
                match part {
                    Part::Text(t) => text.push_str(t),
                    _ => {
                        return Err(Untranslatable::new(
                            "an image in a tool result (a Gemini function response is JSON)",
                        ))
                    }
                }
            }
            let key = if result.is_error { "error" } else { "output" };
            let mut response = serde_json::Map::new();
            response.insert(key.to_owned(), Value::String(text));
            vec![OutPart::Response {
                function_response: OutResponse {
                    id: &result.id,
                    name,
                    response: Value::Object(response),
                },
            }]
        }
    })
}

/// The name of the call `id` answers: a function response names its function.
fn name_of_call<'a>(c: &'a Conversation, id: &str) -> Result<&'a str, Untranslatable> {
    c.messages
        .iter()
        .flat_map(|m| &m.parts)
        .find_map(|p| match p {
            Part::ToolCall(call) if call.id == id => Some(call.name.as_str()),
            _ => None,
        })
        .ok_or_else(|| {
            Untranslatable::new(
                "a tool result whose call is not in the conversation (Gemini names the function)",
            )
        })
}

fn out_image(image: &Image) -> Result<OutPart<'_>, Untranslatable> {
    Ok(match image {
        Image::Base64 { media_type, data } => OutPart::Inline {
            inline_data: OutBlob {
                mime_type: media_type,
                data,
            },
        },
        Image::Url(url) => OutPart::File {
            file_data: OutFile {
                mime_type: media_type_of(url).ok_or_else(|| {
                    Untranslatable::new(
                        "an image URL whose media type its name does not say (Gemini needs one)",
                    )
                })?,
                file_uri: url,
            },
        },
    })
}

/// The media type an image URL's extension names.
fn media_type_of(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
