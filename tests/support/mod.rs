//! Shared by the integration tests: fixtures, a scripted upstream, an independent checker.
#![allow(dead_code)]

pub mod check;
pub mod cross;
pub mod fuzz;
pub mod global_logs;
pub mod probe;
pub mod span_tree;
pub mod upstream;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tower::{Layer, ServiceExt};
use tower_midstream::{FallbackBody, FallbackChain, MidStreamFallbackLayer, Prefill, RetryPlanner};

#[allow(unused_imports)]
pub use upstream::{Dialect, Fault, Scripted, Upstream, Whole, FAULTS};

/// An Anthropic stream of `deltas`, as the API sends it.
pub fn anthropic_text_stream(deltas: &[&str]) -> Bytes {
    let mut s = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_primary\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"primary\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for d in deltas {
        s.push_str(&format!(
            "event: content_block_delta\ndata: {}\n\n",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":d}})
        ));
    }
    s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    Bytes::from(s)
}

/// An OpenAI stream of `deltas`, with a usage chunk.
pub fn openai_text_stream(deltas: &[&str]) -> Bytes {
    let env = |choices: Value, usage: Value| json!({"id":"chatcmpl-primary","object":"chat.completion.chunk","created":1,"model":"primary","choices":choices,"usage":usage});
    let mut s = format!(
        "data: {}\n\n",
        env(
            json!([{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]),
            Value::Null
        )
    );
    for d in deltas {
        s.push_str(&format!(
            "data: {}\n\n",
            env(
                json!([{"index":0,"delta":{"content":d},"finish_reason":null}]),
                Value::Null
            )
        ));
    }
    s.push_str(&format!(
        "data: {}\n\n",
        env(
            json!([{"index":0,"delta":{},"finish_reason":"stop"}]),
            Value::Null
        )
    ));
    s.push_str(&format!(
        "data: {}\n\n",
        env(
            json!([]),
            json!({"prompt_tokens":5,"completion_tokens":9,"total_tokens":14})
        )
    ));
    s.push_str("data: [DONE]\n\n");
    Bytes::from(s)
}

/// A Gemini stream of `deltas`, as the API sends it (CRLF, usage on every chunk, the finish on
/// the last text chunk).
pub fn gemini_text_stream(deltas: &[&str]) -> Bytes {
    let mut s = String::new();
    for (i, d) in deltas.iter().enumerate() {
        let mut candidate = json!({"content":{"parts":[{"text":d}],"role":"model"},"index":0});
        if i + 1 == deltas.len() {
            candidate["finishReason"] = json!("STOP");
        }
        let n = i + 1;
        s.push_str(&format!(
            "data: {}\r\n\r\n",
            json!({"candidates":[candidate],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":n,"totalTokenCount":5 + n},"modelVersion":"primary","responseId":"resp-primary"})
        ));
    }
    Bytes::from(s)
}

/// A Responses API stream of `deltas` in one message, as the API sends it.
pub fn responses_text_stream(deltas: &[&str]) -> Bytes {
    let id = "msg_primary";
    let mut events = vec![
        json!({"type":"response.created","response":{"id":"resp_primary","object":"response","status":"in_progress","model":"primary","output":[],"usage":null}}),
        json!({"type":"response.in_progress","response":{"id":"resp_primary","object":"response","status":"in_progress","model":"primary","output":[],"usage":null}}),
        json!({"type":"response.output_item.added","output_index":0,"item":{"id":id,"type":"message","status":"in_progress","content":[],"role":"assistant"}}),
        json!({"type":"response.content_part.added","item_id":id,"output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"text":""}}),
    ];
    for d in deltas {
        events.push(json!({"type":"response.output_text.delta","item_id":id,"output_index":0,"content_index":0,"delta":d}));
    }
    let text = deltas.concat();
    let part = json!({"type":"output_text","annotations":[],"text":text});
    let item =
        json!({"id":id,"type":"message","status":"completed","content":[part],"role":"assistant"});
    events.push(json!({"type":"response.output_text.done","item_id":id,"output_index":0,"content_index":0,"text":text}));
    events.push(json!({"type":"response.content_part.done","item_id":id,"output_index":0,"content_index":0,"part":part}));
    events.push(json!({"type":"response.output_item.done","output_index":0,"item":item}));
    events.push(json!({"type":"response.completed","response":{"id":"resp_primary","object":"response","status":"completed","model":"primary","output":[item],"usage":{"input_tokens":5,"output_tokens":9,"total_tokens":14}}}));
    let mut s = String::new();
    for (n, mut e) in events.into_iter().enumerate() {
        e["sequence_number"] = json!(n);
        s.push_str(&format!(
            "event: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap()
        ));
    }
    Bytes::from(s)
}

/// A recorded stream from tests/fixtures.
pub fn fixture(name: &str) -> Bytes {
    // From the crate's tests, or from the fuzz crate one level down.
    let root = env!("CARGO_MANIFEST_DIR");
    let path = [
        format!("{root}/tests/fixtures/{name}"),
        format!("{root}/../tests/fixtures/{name}"),
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or_else(|| panic!("fixture {name} not found from {root}"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

pub struct Fixture {
    pub name: &'static str,
    pub dialect: Dialect,
    /// The request asks for extended thinking (Anthropic) or a usage chunk (OpenAI).
    pub thinking: bool,
    pub usage: bool,
}

pub const FIXTURES: &[Fixture] = &[
    Fixture {
        name: "anthropic_text.sse",
        dialect: Dialect::Anthropic,
        thinking: false,
        usage: false,
    },
    Fixture {
        name: "anthropic_tool_use.sse",
        dialect: Dialect::Anthropic,
        thinking: false,
        usage: false,
    },
    Fixture {
        name: "anthropic_thinking.sse",
        dialect: Dialect::Anthropic,
        thinking: true,
        usage: false,
    },
    Fixture {
        name: "anthropic_redacted_thinking.sse",
        dialect: Dialect::Anthropic,
        thinking: true,
        usage: false,
    },
    Fixture {
        name: "openai_chat_text.sse",
        dialect: Dialect::OpenAi,
        thinking: false,
        usage: true,
    },
    Fixture {
        name: "openai_chat_usage.sse",
        dialect: Dialect::OpenAi,
        thinking: false,
        usage: true,
    },
    Fixture {
        name: "openai_chat_tools.sse",
        dialect: Dialect::OpenAi,
        thinking: false,
        usage: true,
    },
    // OpenAI-compatible servers as they really stream (written: see SOURCES.md).
    Fixture {
        name: "deepseek_reasoning_content.sse",
        dialect: Dialect::OpenAi,
        thinking: true,
        usage: true,
    },
    Fixture {
        name: "vllm_reasoning_usage_on_finish.sse",
        dialect: Dialect::OpenAi,
        thinking: true,
        usage: true,
    },
    Fixture {
        name: "openai_refusal.sse",
        dialect: Dialect::OpenAi,
        thinking: false,
        usage: true,
    },
    Fixture {
        name: "gemini_compat_tools_no_index.sse",
        dialect: Dialect::OpenAi,
        thinking: false,
        usage: false,
    },
    Fixture {
        name: "framed_ids_crlf.sse",
        dialect: Dialect::OpenAi,
        thinking: false,
        usage: true,
    },
    // Gemini's own API, recorded (see SOURCES.md).
    Fixture {
        name: "gemini_text.sse",
        dialect: Dialect::Gemini,
        thinking: false,
        usage: true,
    },
    Fixture {
        name: "gemini_thoughts.sse",
        dialect: Dialect::Gemini,
        thinking: true,
        usage: true,
    },
    Fixture {
        name: "gemini_function_call.sse",
        dialect: Dialect::Gemini,
        thinking: false,
        usage: true,
    },
    Fixture {
        name: "gemini_after_function_response.sse",
        dialect: Dialect::Gemini,
        thinking: false,
        usage: true,
    },
    Fixture {
        name: "openai_responses_text_queued.sse",
        dialect: Dialect::Responses,
        thinking: false,
        usage: true,
    },
    Fixture {
        name: "openai_responses_function_call.sse",
        dialect: Dialect::Responses,
        thinking: true,
        usage: true,
    },
    Fixture {
        name: "openai_responses_reasoning_summary.sse",
        dialect: Dialect::Responses,
        thinking: true,
        usage: true,
    },
    Fixture {
        name: "openai_responses_reasoning_encrypted_text.sse",
        dialect: Dialect::Responses,
        thinking: true,
        usage: true,
    },
    Fixture {
        name: "openai_responses_legacy_no_sequence.sse",
        dialect: Dialect::Responses,
        thinking: false,
        usage: true,
    },
];

/// A written stream that ends in an in-band error (see SOURCES.md), with the kind of error.
pub struct ErrorFixture {
    pub fixture: Fixture,
    /// A client's error (4xx) reaches the client as it came; a server's (5xx) falls back.
    pub client_error: bool,
}

pub const ERROR_FIXTURES: &[ErrorFixture] = &[
    ErrorFixture {
        fixture: Fixture {
            name: "vllm_error_object_400.sse",
            dialect: Dialect::OpenAi,
            thinking: false,
            usage: true,
        },
        client_error: true,
    },
    ErrorFixture {
        fixture: Fixture {
            name: "vllm_error_object_500.sse",
            dialect: Dialect::OpenAi,
            thinking: false,
            usage: true,
        },
        client_error: false,
    },
    ErrorFixture {
        fixture: Fixture {
            name: "openrouter_finish_error_400.sse",
            dialect: Dialect::OpenAi,
            thinking: true,
            usage: false,
        },
        client_error: true,
    },
    ErrorFixture {
        fixture: Fixture {
            name: "openrouter_finish_error_502.sse",
            dialect: Dialect::OpenAi,
            thinking: true,
            usage: false,
        },
        client_error: false,
    },
];

/// Whether an OpenAI event's data is an in-band error (an `error` object, or vLLM's
/// `"object":"error"`).
pub fn is_error_data(data: &str) -> bool {
    serde_json::from_str::<Value>(data)
        .is_ok_and(|v| v.get("error").is_some_and(|e| !e.is_null()) || v["object"] == "error")
}

/// The events of an LF or CRLF stream, each with its blank line.
pub fn events_of(bytes: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        let lf = rest.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
        let crlf = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4);
        let Some(end) = [lf, crlf].into_iter().flatten().min() else {
            break;
        };
        out.push(bytes.slice(at..at + end));
        at += end;
    }
    out
}

/// The whole answer a recorded stream carries.
pub fn whole_of(dialect: Dialect, bytes: &Bytes) -> Whole {
    let mut whole = Whole::default();
    let events = check::parse_sse(bytes);
    match dialect {
        Dialect::Anthropic => {
            let mut tools: Vec<(String, String)> = Vec::new();
            for ev in &events {
                let v: Value = serde_json::from_str(&ev.data).unwrap();
                match ev.event.as_deref() {
                    Some("content_block_start") if v["content_block"]["type"] == "tool_use" => {
                        tools.push((
                            v["content_block"]["name"].as_str().unwrap().into(),
                            String::new(),
                        ))
                    }
                    Some("content_block_start")
                        if v["content_block"]["type"] == "redacted_thinking" =>
                    {
                        whole.thinking.get_or_insert_with(String::new);
                    }
                    Some("content_block_delta") => match v["delta"]["type"].as_str() {
                        Some("text_delta") => {
                            whole.text.push_str(v["delta"]["text"].as_str().unwrap())
                        }
                        Some("thinking_delta") => whole
                            .thinking
                            .get_or_insert_with(String::new)
                            .push_str(v["delta"]["thinking"].as_str().unwrap()),
                        Some("input_json_delta") => tools
                            .last_mut()
                            .unwrap()
                            .1
                            .push_str(v["delta"]["partial_json"].as_str().unwrap()),
                        _ => {}
                    },
                    _ => {}
                }
            }
            if whole.thinking.as_deref() == Some("") {
                whole.thinking = Some("Redacted reasoning, regenerated.".into());
            }
            whole.tools = tools;
        }
        Dialect::OpenAi => {
            let mut tools: Vec<(String, String)> = Vec::new();
            let mut last_id = String::new();
            for ev in &events {
                if ev.data == "[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_str(&ev.data).unwrap();
                let delta = &v["choices"][0]["delta"];
                for key in ["reasoning_content", "reasoning"] {
                    if let Some(t) = delta[key].as_str().filter(|t| !t.is_empty()) {
                        whole.reasoning_key = key;
                        whole.thinking.get_or_insert_with(String::new).push_str(t);
                    }
                }
                if let Some(t) = delta["refusal"].as_str().filter(|t| !t.is_empty()) {
                    whole.refusal.get_or_insert_with(String::new).push_str(t);
                }
                if let Some(t) = delta["content"].as_str() {
                    whole.text.push_str(t);
                }
                for call in delta["tool_calls"].as_array().into_iter().flatten() {
                    // Without `index` (Gemini's endpoint): a new call for each new id.
                    let i = match call["index"].as_u64() {
                        Some(i) => i as usize,
                        None => {
                            let id = call["id"].as_str().unwrap_or("");
                            if id.is_empty() || id == last_id {
                                tools.len() - 1
                            } else {
                                last_id = id.to_owned();
                                tools.len()
                            }
                        }
                    };
                    if i == tools.len() {
                        tools.push((
                            call["function"]["name"].as_str().unwrap().into(),
                            String::new(),
                        ));
                    }
                    tools[i]
                        .1
                        .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                }
            }
            whole.tools = tools;
        }
        Dialect::Gemini => {
            for ev in &events {
                let v: Value = serde_json::from_str(&ev.data).unwrap();
                for part in v["candidates"][0]["content"]["parts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(call) = part.get("functionCall") {
                        whole.tools.push((
                            call["name"].as_str().unwrap().into(),
                            call["args"].to_string(),
                        ));
                    } else if part["thought"] == true {
                        whole
                            .thinking
                            .get_or_insert_with(String::new)
                            .push_str(part["text"].as_str().unwrap());
                    } else if let Some(t) = part["text"].as_str() {
                        whole.text.push_str(t);
                    }
                }
            }
        }
        Dialect::Responses => {
            let mut tools: Vec<(String, String)> = Vec::new();
            for ev in &events {
                let v: Value = serde_json::from_str(&ev.data).unwrap();
                match v["type"].as_str() {
                    Some("response.output_text.delta") => {
                        whole.text.push_str(v["delta"].as_str().unwrap())
                    }
                    Some("response.output_item.added") => match v["item"]["type"].as_str() {
                        Some("function_call") => {
                            tools.push((v["item"]["name"].as_str().unwrap().into(), String::new()))
                        }
                        Some("reasoning") => {
                            whole.thinking.get_or_insert_with(String::new);
                        }
                        _ => {}
                    },
                    Some("response.function_call_arguments.delta") => tools
                        .last_mut()
                        .unwrap()
                        .1
                        .push_str(v["delta"].as_str().unwrap()),
                    Some("response.reasoning_summary_text.delta") => whole
                        .thinking
                        .get_or_insert_with(String::new)
                        .push_str(v["delta"].as_str().unwrap()),
                    _ => {}
                }
            }
            if whole.thinking.as_deref() == Some("") {
                whole.thinking = Some("Encrypted reasoning, regenerated.".into());
            }
            whole.tools = tools;
        }
    }
    whole
}

/// The answer a client should end with, from a whole answer.
pub fn expected(whole: &Whole) -> check::Answer {
    check::Answer {
        text: whole.text.clone(),
        thinking: whole.thinking.is_some(),
        tools: whole
            .tools
            .iter()
            .map(|(n, a)| {
                (
                    n.clone(),
                    serde_json::from_str(if a.is_empty() { "{}" } else { a }).unwrap(),
                )
            })
            .collect(),
        error: None,
        output_tokens: None,
        stop_reason: None,
        tool_ids: Vec::new(),
        reasoning: whole.thinking.clone().unwrap_or_default(),
        refusal: whole.refusal.clone().unwrap_or_default(),
    }
}

/// The request a client sends for a fixture's answer.
pub fn request_body(f: &Fixture) -> Value {
    match f.dialect {
        Dialect::Anthropic => {
            let mut body = json!({"model":"primary","max_tokens":4096,"stream":true,"messages":[{"role":"user","content":"Please answer."}]});
            if f.thinking {
                body["thinking"] = json!({"type":"enabled","budget_tokens":2048});
            }
            body
        }
        Dialect::OpenAi => {
            let mut body = json!({"model":"primary","stream":true,"max_completion_tokens":500,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Please answer."}]});
            if f.usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            body
        }
        Dialect::Gemini => {
            let mut body = json!({"contents":[{"role":"user","parts":[{"text":"Please answer."}]}],"systemInstruction":{"parts":[{"text":"Be brief."}]},"generationConfig":{"maxOutputTokens":4096}});
            if f.thinking {
                body["generationConfig"]["thinkingConfig"] = json!({"includeThoughts": true});
            }
            body
        }
        Dialect::Responses => {
            json!({"model":"primary","stream":true,"max_output_tokens":500,"instructions":"Be brief.","input":[{"role":"user","content":"Please answer."}]})
        }
    }
}

/// Where a request goes; a Gemini request names its model (`primary`) in the path.
pub fn path(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Anthropic => "/v1/messages",
        Dialect::OpenAi => "/v1/chat/completions",
        Dialect::Gemini => "/v1beta/models/primary:streamGenerateContent?alt=sse",
        Dialect::Responses => "/v1/responses",
    }
}

/// A chain from `primary` to `fallback` (and `fallback-2`), with `prefill` for both.
pub fn chain(dialect: Dialect, prefill: bool) -> FallbackChain {
    let kind = match (prefill, dialect) {
        // The Responses API has no prefill: continued by instruction.
        (false, _) | (_, Dialect::Responses) => Prefill::None,
        (true, Dialect::Anthropic) => Prefill::Assistant,
        (true, Dialect::OpenAi) => Prefill::Prefix,
        (true, Dialect::Gemini) => Prefill::Assistant,
    };
    FallbackChain::new()
        .model("fallback", kind)
        .model("fallback-2", kind)
        .fallbacks("primary", ["fallback", "fallback-2"])
}

pub struct Outcome {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub bytes: Bytes,
    pub error: Option<tower_midstream::FallbackError>,
    pub extension_error: Option<tower_midstream::FallbackError>,
}

/// Sends `body` to `path` through `layer` over `upstream`, and reads the whole response.
pub async fn run<P>(
    layer: MidStreamFallbackLayer<P>,
    upstream: &Upstream,
    path: &str,
    body: Bytes,
) -> Outcome
where
    P: RetryPlanner + Clone + Send + 'static,
{
    let svc = layer.layer(upstream::service(upstream.clone()));
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let response: Response<FallbackBody<upstream::ScriptBody>> = svc.oneshot(req).await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the body never fails towards the client");
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Outcome {
        status: parts.status,
        extension_error: parts
            .extensions
            .get::<tower_midstream::FallbackError>()
            .cloned(),
        headers: parts.headers,
        bytes: Bytes::from(bytes),
        error: body.fallback_error().cloned(),
    }
}

/// Checks a client stream against its dialect's seam rules and returns the answer.
pub fn check(dialect: Dialect, usage: bool, bytes: &[u8]) -> Result<check::Answer, String> {
    let events = check::parse_sse(bytes);
    match dialect {
        Dialect::Anthropic => check::anthropic(&events),
        // As the openai Python SDK reads it: a blank line after an `id:` is an event.
        Dialect::OpenAi => check::openai(&check::parse_sse_as_openai_python(bytes), usage),
        Dialect::Gemini => check::gemini(bytes, &events),
        Dialect::Responses => check::responses(&events),
    }
}

/// Compares what matters of two answers (text, tools, reasoning present).
pub fn same_answer(got: &check::Answer, want: &check::Answer) -> Result<(), String> {
    if got.error.is_some() {
        return Err(format!("ended with an error: {:?}", got.error));
    }
    if got.text != want.text {
        return Err(format!(
            "text differs:\n got: {:?}\nwant: {:?}",
            got.text, want.text
        ));
    }
    if got.tools != want.tools {
        return Err(format!(
            "tools differ: got {:?}, want {:?}",
            got.tools, want.tools
        ));
    }
    if got.thinking != want.thinking {
        return Err(format!(
            "thinking present: got {}, want {}",
            got.thinking, want.thinking
        ));
    }
    // Chat reasoning streams live: a failure may cut it, and the fallback's own is then
    // dropped, so the client has a part of it from its start, never a second copy. (Its
    // presence is `thinking`; the Anthropic checker does not collect its text.)
    if !want.reasoning.starts_with(&got.reasoning) {
        return Err(format!(
            "reasoning is not a part of the whole from its start:\n got: {:?}\nwant: {:?}",
            got.reasoning, want.reasoning
        ));
    }
    if got.refusal != want.refusal {
        return Err(format!(
            "refusal differs:\n got: {:?}\nwant: {:?}",
            got.refusal, want.refusal
        ));
    }
    Ok(())
}

/// A request body sent in chunks; its size is known in advance only when sent whole.
pub struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    announced: bool,
}

impl Chunks {
    pub fn whole(bytes: Bytes) -> Self {
        Chunks {
            chunks: [bytes].into(),
            announced: true,
        }
    }

    pub fn split(bytes: Bytes, size: usize) -> Self {
        let chunks = bytes.chunks(size).map(Bytes::copy_from_slice).collect();
        Chunks {
            chunks,
            announced: false,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.chunks
                .pop_front()
                .map(|c| Ok(http_body::Frame::data(c))),
        )
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.announced {
            http_body::SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        } else {
            http_body::SizeHint::default()
        }
    }
}

// ---- small requests through one fallback ------------------------------------------------

pub fn anthropic_request() -> Value {
    json!({"model":"primary","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"Say hello."}]})
}

pub fn gemini_request() -> Value {
    json!({"contents":[{"role":"user","parts":[{"text":"Say hello."}]}],"generationConfig":{"maxOutputTokens":100}})
}

pub fn responses_request() -> Value {
    json!({"model":"primary","max_output_tokens":100,"stream":true,"input":[{"role":"user","content":"Say hello."}]})
}

pub fn openai_request() -> Value {
    json!({"model":"primary","max_tokens":100,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello."}]})
}

/// A primary that sends `deltas` of the answer and then resets.
pub fn broken_after(dialect: Dialect, all: &[&str], sent: usize) -> Upstream {
    let whole = Whole {
        text: all.concat(),
        ..Whole::default()
    };
    let bytes = match dialect {
        Dialect::Anthropic => anthropic_text_stream(all),
        Dialect::OpenAi => openai_text_stream(all),
        Dialect::Gemini => gemini_text_stream(all),
        Dialect::Responses => responses_text_stream(all),
    };
    // message_start + block start, or the role chunk, or created, in_progress, the item and
    // its part, come before the deltas.
    let lead = match dialect {
        Dialect::Anthropic => 2,
        Dialect::OpenAi => 1,
        Dialect::Gemini => 0,
        Dialect::Responses => 4,
    };
    let events = events_of(&bytes);
    Upstream::new(dialect, whole).then(Scripted::Stream {
        bytes: Bytes::from(events[..lead + sent].concat()),
        cuts: vec![],
        fault: Some(Fault::Reset),
    })
}

pub async fn send(
    layer: MidStreamFallbackLayer<FallbackChain>,
    upstream: &Upstream,
    dialect: Dialect,
    body: &Value,
) -> Outcome {
    run(
        layer,
        upstream,
        path(dialect),
        Bytes::from(body.to_string()),
    )
    .await
}

pub const HELLO: [&str; 4] = ["Hello", " there, ", "friend", "!"];

/// A chain from `primary` to one `fallback` that takes `prefill`.
pub fn one_fallback(prefill: Prefill) -> FallbackChain {
    FallbackChain::new()
        .model("fallback", prefill)
        .fallbacks("primary", ["fallback"])
}

/// A current-thread runtime with paused time, for tests that are not `#[tokio::test]`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}
