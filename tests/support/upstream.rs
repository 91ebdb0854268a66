//! A scripted upstream: the first call replays a recorded stream up to a fault; every later
//! call answers like a model would, continuing the same whole answer from whatever partial
//! answer the request carries, and refusing prefill exactly as the real APIs do.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde_json::{json, Value};

/// Anthropic's answer to a trailing assistant message on a model without prefill.
pub const ANTHROPIC_PREFILL_400: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill. The conversation must end with a user message."}}"#;
/// Anthropic's answer to a final assistant message that ends in whitespace.
pub const ANTHROPIC_WHITESPACE_400: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: final assistant content cannot end with trailing whitespace"}}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Anthropic,
    OpenAi,
    /// Gemini's own API: the model in the path, whole responses per event, CRLF.
    Gemini,
    /// The OpenAI Responses API.
    Responses,
}

/// Gemini's answer to a request ending with a `model` turn, on models without prefill.
pub const GEMINI_PREFILL_400: &str = r#"{"error": {"code": 400, "message": "Requests ending with a model turn are not supported.", "status": "INVALID_ARGUMENT"}}"#;

/// How an attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection resets: the body yields an error.
    Reset,
    /// The body sends nothing more, ever.
    Stall,
    /// An in-band error event, then the end.
    InBand,
    /// The body just ends.
    Truncate,
}

pub const FAULTS: [Fault; 4] = [Fault::Reset, Fault::Stall, Fault::InBand, Fault::Truncate];

/// What the model would answer in full.
#[derive(Debug, Clone, Default)]
pub struct Whole {
    /// Reasoning (Anthropic thinking; Chat reasoning deltas, under `reasoning_key`).
    pub thinking: Option<String>,
    /// The Chat delta key reasoning streams under (`reasoning_content` when empty).
    pub reasoning_key: &'static str,
    /// A refusal instead of text (Chat `delta.refusal`).
    pub refusal: Option<String>,
    pub text: String,
    /// (name, arguments JSON)
    pub tools: Vec<(String, String)>,
}

/// What a call received.
#[derive(Debug, Clone)]
pub struct Call {
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Value,
    /// The dialect the layer's `Attempt` extension named, if the call came through the layer.
    pub dialect: Option<tower_midstream::Dialect>,
}

/// One scripted response, used for the next call instead of the model.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// These SSE bytes (cut into `frames` at the given offsets), then `fault` (or a clean end).
    Stream {
        bytes: Bytes,
        cuts: Vec<usize>,
        fault: Option<Fault>,
    },
    /// A plain response.
    Status {
        status: u16,
        content_type: &'static str,
        body: &'static str,
    },
}

#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    dialect: Dialect,
    whole: Whole,
    /// Models that answer a prefill with 400.
    rejects_prefill: Vec<String>,
    script: Mutex<VecDeque<Scripted>>,
    /// The next model answers are cut after this many events, with this fault.
    cuts: Mutex<VecDeque<(usize, Fault)>>,
    /// The next model answers stop before their finish and end with these bytes instead.
    endings: Mutex<VecDeque<Bytes>>,
    /// The model repeats the partial answer before continuing it (some servers echo a prefix).
    echo: bool,
    /// A partial answer that is not the start of the whole one is continued anyway.
    lenient: bool,
    /// Each call is answered in the dialect of the endpoint it was sent to (a model of
    /// another provider, reached through a translated request), not always in `dialect`.
    by_path: bool,
    calls: Mutex<Vec<Call>>,
}

impl Upstream {
    pub fn new(dialect: Dialect, whole: Whole) -> Self {
        Upstream {
            inner: Arc::new(Inner {
                dialect,
                whole,
                rejects_prefill: Vec::new(),
                script: Mutex::new(VecDeque::new()),
                cuts: Mutex::new(VecDeque::new()),
                endings: Mutex::new(VecDeque::new()),
                echo: false,
                lenient: false,
                by_path: false,
                calls: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn rejecting_prefill(mut self, model: &str) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configure before use")
            .rejects_prefill
            .push(model.to_owned());
        self
    }

    /// The model repeats the partial answer before its continuation.
    pub fn echoing(mut self) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configure before use")
            .echo = true;
        self
    }

    /// Continue any partial answer (with the whole answer), for arbitrary primaries.
    pub fn lenient(mut self) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configure before use")
            .lenient = true;
        self
    }

    /// Answer each call in the dialect of its endpoint (`/v1/messages`, `/v1/chat/completions`).
    pub fn speaking_by_path(mut self) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configure before use")
            .by_path = true;
        self
    }

    /// The dialect a call to `uri` is answered in.
    fn dialect_of(&self, uri: &http::Uri) -> Dialect {
        let path = uri.path();
        match self.inner.by_path {
            true if path.ends_with("/chat/completions") => Dialect::OpenAi,
            true if path.ends_with("/messages") => Dialect::Anthropic,
            true if path.ends_with(":streamGenerateContent") => Dialect::Gemini,
            true if path.ends_with("/responses") => Dialect::Responses,
            _ => self.inner.dialect,
        }
    }

    /// The next answer of the model breaks after `events` events with `fault`.
    pub fn cut_model_answer(self, events: usize, fault: Fault) -> Self {
        self.inner.cuts.lock().unwrap().push_back((events, fault));
        self
    }

    /// The next answer of the model reaches the end of its content, then sends `ending` (an
    /// in-band error as a server sends it) instead of its finish, usage and `[DONE]`.
    pub fn end_model_answer_with(self, ending: Bytes) -> Self {
        self.inner.endings.lock().unwrap().push_back(ending);
        self
    }

    /// The next call gets `scripted` instead of the model's answer.
    pub fn then(self, scripted: Scripted) -> Self {
        self.inner.script.lock().unwrap().push_back(scripted);
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// Answers one request.
    pub async fn answer<B>(&self, req: Request<B>) -> Response<ScriptBody>
    where
        B: Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = req.into_parts();
        let dialect = self.dialect_of(&parts.uri);
        let bytes = body.collect().await.expect("request body").to_bytes();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.inner.calls.lock().unwrap().push(Call {
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body: json.clone(),
            dialect: parts
                .extensions
                .get::<tower_midstream::Attempt>()
                .and_then(|a| a.dialect()),
        });
        if let Some(scripted) = self.inner.script.lock().unwrap().pop_front() {
            return scripted_response(scripted, dialect);
        }
        if dialect == Dialect::Gemini {
            return self.gemini_model(&parts.uri, &json);
        }
        // Claude on Vertex AI: the model in the path, none in the body.
        let mut json = json;
        if let (Some(model), Some(body)) = (vertex_model_of(parts.uri.path()), json.as_object_mut())
        {
            body.entry("model").or_insert(Value::String(model));
        }
        self.model(&json, dialect)
    }

    /// Gemini: the model from the path, the conversation in `contents`.
    fn gemini_model(&self, uri: &http::Uri, req: &Value) -> Response<ScriptBody> {
        let model = gemini_model_of(uri.path()).unwrap_or_default();
        let contents = req["contents"].as_array().cloned().unwrap_or_default();
        let ends_with_model = contents.last().is_some_and(|c| c["role"] == "model");
        if ends_with_model && self.inner.rejects_prefill.contains(&model) {
            return plain(400, GEMINI_PREFILL_400);
        }
        let partial: String = contents
            .iter()
            .rev()
            .find(|c| c["role"] == "model")
            .and_then(|c| c["parts"].as_array())
            .map(|parts| {
                parts
                    .iter()
                    .filter(|p| p["thought"] != true)
                    .filter_map(|p| p["text"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let thinking = req["generationConfig"]["thinkingConfig"]["includeThoughts"] == true;
        self.stream_rest(Dialect::Gemini, &partial, |whole, remaining| {
            gemini_stream(
                &model,
                thinking.then(|| whole.thinking.clone()).flatten(),
                remaining,
                &whole.tools,
            )
        })
    }

    /// The rest of the whole answer after `partial`, streamed as `stream` writes it, cut as
    /// the next scripted cut says.
    fn stream_rest(
        &self,
        dialect: Dialect,
        partial: &str,
        stream: impl FnOnce(&Whole, &str) -> String,
    ) -> Response<ScriptBody> {
        let whole = &self.inner.whole;
        let mut remaining = match whole.text.strip_prefix(partial) {
            Some(rest) => rest.to_owned(),
            None if self.inner.lenient => whole.text.clone(),
            None => panic!("the partial answer {partial:?} is not a prefix of the answer"),
        };
        if self.inner.echo {
            remaining.insert_str(0, partial);
        }
        let bytes = Bytes::from(stream(whole, &remaining));
        self.cut(bytes, dialect)
    }

    /// `bytes`, cut after the next scripted number of events, with its fault (an in-band
    /// error in `dialect`).
    fn cut(&self, bytes: Bytes, dialect: Dialect) -> Response<ScriptBody> {
        match self.inner.cuts.lock().unwrap().pop_front() {
            None => sse(ScriptBody::new(bytes, &[], None)),
            Some((events, fault)) => {
                let kept: Vec<u8> = crate::support::events_of(&bytes)
                    .into_iter()
                    .take(events)
                    .flat_map(|e| e.to_vec())
                    .collect();
                sse(ScriptBody::new(Bytes::from(kept), &[], Some(fault)).with_in_band(dialect))
            }
        }
    }

    /// The model: continue the whole answer after the partial answer in the request.
    fn model(&self, req: &Value, dialect: Dialect) -> Response<ScriptBody> {
        let model = req["model"].as_str().unwrap_or("").to_owned();
        let conversation = match dialect {
            Dialect::Responses => &req["input"],
            _ => &req["messages"],
        };
        let messages = conversation.as_array().cloned().unwrap_or_default();
        let last = messages.last().cloned().unwrap_or(Value::Null);
        let rejects = self.inner.rejects_prefill.contains(&model);
        let mut partial = String::new();
        if dialect == Dialect::Anthropic {
            if last["role"] == "assistant" {
                if rejects {
                    return plain(400, ANTHROPIC_PREFILL_400);
                }
                let content = last["content"].as_str().unwrap_or("");
                if content.trim_end() != content {
                    return plain(400, ANTHROPIC_WHITESPACE_400);
                }
            }
        } else if dialect == Dialect::OpenAi
            && last["role"] == "assistant"
            && (last["prefix"] == true || req["continue_final_message"] == true)
            && rejects
        {
            return plain(
                400,
                r#"{"error":{"message":"prefix is not supported","type":"invalid_request_error","param":null,"code":null}}"#,
            );
        }
        if let Some(assistant) = messages.iter().rev().find(|m| m["role"] == "assistant") {
            partial = assistant["content"].as_str().unwrap_or("").to_owned();
        }
        let whole = &self.inner.whole;
        let mut remaining = match whole.text.strip_prefix(partial.as_str()) {
            Some(rest) => rest.to_owned(),
            None if self.inner.lenient => whole.text.clone(),
            None => panic!("the partial answer {partial:?} is not a prefix of the answer"),
        };
        if self.inner.echo {
            remaining.insert_str(0, &partial);
        }
        let thinking = match dialect {
            Dialect::Anthropic => req["thinking"]["type"] == "enabled" && whole.thinking.is_some(),
            Dialect::Responses => whole.thinking.is_some(),
            Dialect::OpenAi => false,
            Dialect::Gemini => unreachable!("Gemini requests are answered by gemini_model"),
        };
        let bytes = match dialect {
            Dialect::Anthropic => anthropic_stream(
                &model,
                thinking.then(|| whole.thinking.clone().unwrap()),
                &remaining,
                &whole.tools,
            ),
            Dialect::OpenAi => openai_stream(
                &model,
                whole,
                &remaining,
                req["stream_options"]["include_usage"] == true,
            ),
            Dialect::Gemini => unreachable!("Gemini requests are answered by gemini_model"),
            Dialect::Responses => responses_stream(
                &model,
                thinking.then(|| whole.thinking.clone().unwrap()),
                &remaining,
                &whole.tools,
            ),
        };
        let mut bytes = Bytes::from(bytes);
        if let Some(ending) = self.inner.endings.lock().unwrap().pop_front() {
            assert_eq!(self.inner.dialect, Dialect::OpenAi, "Chat endings only");
            // The finish chunk, the usage chunk when asked for, and `[DONE]`.
            let tail = 2 + usize::from(req["stream_options"]["include_usage"] == true);
            let events = crate::support::events_of(&bytes);
            let kept = events.len().saturating_sub(tail);
            let mut out: Vec<u8> = events[..kept].iter().flat_map(|e| e.to_vec()).collect();
            out.extend_from_slice(&ending);
            bytes = Bytes::from(out);
        }
        self.cut(bytes, dialect)
    }
}

fn scripted_response(scripted: Scripted, dialect: Dialect) -> Response<ScriptBody> {
    match scripted {
        Scripted::Stream { bytes, cuts, fault } => {
            sse(ScriptBody::new(bytes, &cuts, fault).with_in_band(dialect))
        }
        Scripted::Status {
            status,
            content_type,
            body,
        } => {
            let mut r = Response::new(ScriptBody::new(
                Bytes::from_static(body.as_bytes()),
                &[],
                None,
            ));
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            r.headers_mut()
                .insert("content-type", content_type.parse().unwrap());
            r
        }
    }
}

fn sse(body: ScriptBody) -> Response<ScriptBody> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

fn plain(status: u16, body: &'static str) -> Response<ScriptBody> {
    scripted_response(
        Scripted::Status {
            status,
            content_type: "application/json",
            body,
        },
        Dialect::Anthropic,
    )
}

/// Pieces of a few characters, as models stream them.
fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn event(out: &mut String, name: &str, data: Value) {
    out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
}

fn anthropic_stream(
    model: &str,
    thinking: Option<String>,
    text: &str,
    tools: &[(String, String)],
) -> String {
    let mut out = String::new();
    let mut deltas = 0;
    event(
        &mut out,
        "message_start",
        json!({"type":"message_start","message":{"id":"msg_fallback","type":"message","role":"assistant","model":model,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}),
    );
    let mut index = 0;
    if let Some(thinking) = thinking {
        event(
            &mut out,
            "content_block_start",
            json!({"type":"content_block_start","index":index,"content_block":{"type":"thinking","thinking":"","signature":""}}),
        );
        for p in pieces(&thinking, 12) {
            deltas += 1;
            event(
                &mut out,
                "content_block_delta",
                json!({"type":"content_block_delta","index":index,"delta":{"type":"thinking_delta","thinking":p}}),
            );
        }
        event(
            &mut out,
            "content_block_delta",
            json!({"type":"content_block_delta","index":index,"delta":{"type":"signature_delta","signature":"c2lnbmF0dXJl"}}),
        );
        event(
            &mut out,
            "content_block_stop",
            json!({"type":"content_block_stop","index":index}),
        );
        index += 1;
    }
    event(&mut out, "ping", json!({"type":"ping"}));
    if !text.is_empty() {
        event(
            &mut out,
            "content_block_start",
            json!({"type":"content_block_start","index":index,"content_block":{"type":"text","text":""}}),
        );
        for p in pieces(text, 7) {
            deltas += 1;
            event(
                &mut out,
                "content_block_delta",
                json!({"type":"content_block_delta","index":index,"delta":{"type":"text_delta","text":p}}),
            );
        }
        event(
            &mut out,
            "content_block_stop",
            json!({"type":"content_block_stop","index":index}),
        );
        index += 1;
    }
    for (n, (name, args)) in tools.iter().enumerate() {
        event(
            &mut out,
            "content_block_start",
            json!({"type":"content_block_start","index":index,"content_block":{"type":"tool_use","id":format!("toolu_fb{n}"),"name":name,"input":{}}}),
        );
        for p in pieces(args, 5) {
            deltas += 1;
            event(
                &mut out,
                "content_block_delta",
                json!({"type":"content_block_delta","index":index,"delta":{"type":"input_json_delta","partial_json":p}}),
            );
        }
        event(
            &mut out,
            "content_block_stop",
            json!({"type":"content_block_stop","index":index}),
        );
        index += 1;
    }
    let stop = if tools.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    event(
        &mut out,
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":stop,"stop_sequence":null},"usage":{"output_tokens":deltas}}),
    );
    event(&mut out, "message_stop", json!({"type":"message_stop"}));
    out
}

fn openai_stream(model: &str, whole: &Whole, text: &str, usage: bool) -> String {
    let tools = &whole.tools;
    let mut out = String::new();
    let envelope = |choices: Value, usage_field: Value| {
        let mut v = json!({"id":"chatcmpl-fallback","object":"chat.completion.chunk","created":1700000000,"model":model,"choices":choices});
        if usage {
            v["usage"] = usage_field;
        }
        v
    };
    let mut push = |v: Value| out.push_str(&format!("data: {v}\n\n"));
    push(envelope(
        json!([{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]),
        Value::Null,
    ));
    let mut deltas = 0;
    // A reasoning model reasons again, whatever partial answer it is given.
    if let Some(thinking) = &whole.thinking {
        let key = match whole.reasoning_key {
            "" => "reasoning_content",
            key => key,
        };
        for p in pieces(thinking, 9) {
            deltas += 1;
            push(envelope(
                json!([{"index":0,"delta":{key:p},"finish_reason":null}]),
                Value::Null,
            ));
        }
    }
    if let Some(refusal) = &whole.refusal {
        for p in pieces(refusal, 6) {
            deltas += 1;
            push(envelope(
                json!([{"index":0,"delta":{"refusal":p},"finish_reason":null}]),
                Value::Null,
            ));
        }
    }
    for p in pieces(text, 4) {
        deltas += 1;
        push(envelope(
            json!([{"index":0,"delta":{"content":p},"finish_reason":null}]),
            Value::Null,
        ));
    }
    for (i, (name, args)) in tools.iter().enumerate() {
        push(envelope(
            json!([{"index":0,"delta":{"tool_calls":[{"index":i,"id":format!("call_fb{i}"),"type":"function","function":{"name":name,"arguments":""}}]},"finish_reason":null}]),
            Value::Null,
        ));
        for p in pieces(args, 3) {
            deltas += 1;
            push(envelope(
                json!([{"index":0,"delta":{"tool_calls":[{"index":i,"function":{"arguments":p}}]},"finish_reason":null}]),
                Value::Null,
            ));
        }
    }
    let finish = if tools.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    push(envelope(
        json!([{"index":0,"delta":{},"finish_reason":finish}]),
        Value::Null,
    ));
    if usage {
        push(envelope(
            json!([]),
            json!({"prompt_tokens":10,"completion_tokens":deltas,"total_tokens":10 + deltas}),
        ));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// The model of a Claude-on-Vertex path, `…/publishers/anthropic/models/{model}:…`, decoded.
pub fn vertex_model_of(path: &str) -> Option<String> {
    let at = path.find("/publishers/anthropic/models/")? + "/publishers/anthropic/models/".len();
    let encoded = path[at..].rsplit_once(':')?.0;
    let decoded = percent_decode(encoded);
    Some(decoded)
}

/// `%XX` escapes decoded (the test upstream trusts its callers).
fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The model of a Gemini path, `…/models/{model}:…`.
pub fn gemini_model_of(path: &str) -> Option<String> {
    let rest = &path[path.find("/models/")? + "/models/".len()..];
    Some(rest.rsplit_once(':')?.0.to_owned())
}

/// A Gemini stream as the API writes it: CRLF between events, `usageMetadata` on every chunk
/// (cumulative), constant `responseId` and `modelVersion`, the first answer part after thoughts
/// carrying their signature, function calls whole with a signature of their own, the finish on
/// the last text chunk or (after a call) in a chunk of its own with an empty text part.
fn gemini_stream(
    model: &str,
    thinking: Option<String>,
    text: &str,
    tools: &[(String, String)],
) -> String {
    let mut parts: Vec<(Value, bool)> = Vec::new(); // (part, is a thought)
    if let Some(thinking) = &thinking {
        for p in pieces(thinking, 12) {
            parts.push((json!({"text": p, "thought": true}), true));
        }
    }
    for (i, p) in pieces(text, 7).into_iter().enumerate() {
        let mut part = json!({ "text": p });
        if i == 0 && thinking.is_some() {
            part["thoughtSignature"] = json!("c2lnbmF0dXJl");
        }
        parts.push((part, false));
    }
    for (name, args) in tools {
        let args: Value = serde_json::from_str(if args.is_empty() { "{}" } else { args }).unwrap();
        parts.push((
            json!({"functionCall": {"name": name, "args": args}, "thoughtSignature": "Y2FsbA=="}),
            false,
        ));
    }
    let (mut candidates, mut thoughts) = (0, 0);
    let finish_alone = !tools.is_empty() || text.is_empty();
    let mut out = String::new();
    let mut chunk = |part: Value, finish: bool, candidates: u32, thoughts: u32| {
        let mut candidate = json!({"content": {"parts": [part], "role": "model"}, "index": 0});
        if finish {
            candidate["finishReason"] = json!("STOP");
        }
        let v = json!({
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": candidates,
                "totalTokenCount": 10 + candidates + thoughts, "thoughtsTokenCount": thoughts},
            "modelVersion": model,
            "responseId": "resp-fallback",
        });
        out.push_str(&format!("data: {v}\r\n\r\n"));
    };
    let n = parts.len();
    for (i, (part, thought)) in parts.into_iter().enumerate() {
        if thought {
            thoughts += 1;
        } else {
            candidates += 1;
        }
        chunk(part, !finish_alone && i + 1 == n, candidates, thoughts);
    }
    if finish_alone {
        chunk(json!({"text": ""}), true, candidates, thoughts);
    }
    out
}

/// A Responses API stream: reasoning, a message, function calls, each an output item; every
/// event numbered.
pub fn responses_stream(
    model: &str,
    thinking: Option<String>,
    text: &str,
    tools: &[(String, String)],
) -> String {
    let mut out = String::new();
    let mut seq = 0;
    let mut push = |mut v: Value| {
        v["sequence_number"] = json!(seq);
        seq += 1;
        let name = v["type"].as_str().unwrap().to_owned();
        out.push_str(&format!("event: {name}\ndata: {v}\n\n"));
    };
    let response = |status: &str, output: Value, usage: Value| json!({"id":"resp_fallback","object":"response","created_at":1700000000,"status":status,"model":model,"output":output,"usage":usage});
    push(
        json!({"type":"response.created","response":response("in_progress", json!([]), Value::Null)}),
    );
    push(
        json!({"type":"response.in_progress","response":response("in_progress", json!([]), Value::Null)}),
    );
    let (mut output, mut deltas, mut index) = (Vec::new(), 0, 0);
    if let Some(thinking) = thinking {
        let id = "rs_fallback";
        push(
            json!({"type":"response.output_item.added","output_index":index,"item":{"id":id,"type":"reasoning","summary":[]}}),
        );
        push(
            json!({"type":"response.reasoning_summary_part.added","item_id":id,"output_index":index,"summary_index":0,"part":{"type":"summary_text","text":""}}),
        );
        for p in pieces(&thinking, 12) {
            deltas += 1;
            push(
                json!({"type":"response.reasoning_summary_text.delta","item_id":id,"output_index":index,"summary_index":0,"delta":p}),
            );
        }
        push(
            json!({"type":"response.reasoning_summary_text.done","item_id":id,"output_index":index,"summary_index":0,"text":thinking}),
        );
        push(
            json!({"type":"response.reasoning_summary_part.done","item_id":id,"output_index":index,"summary_index":0,"part":{"type":"summary_text","text":thinking}}),
        );
        let item =
            json!({"id":id,"type":"reasoning","summary":[{"type":"summary_text","text":thinking}]});
        push(json!({"type":"response.output_item.done","output_index":index,"item":item}));
        output.push(item);
        index += 1;
    }
    if !text.is_empty() {
        let id = "msg_fallback";
        push(
            json!({"type":"response.output_item.added","output_index":index,"item":{"id":id,"type":"message","status":"in_progress","content":[],"role":"assistant"}}),
        );
        push(
            json!({"type":"response.content_part.added","item_id":id,"output_index":index,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}),
        );
        for p in pieces(text, 5) {
            deltas += 1;
            push(
                json!({"type":"response.output_text.delta","item_id":id,"output_index":index,"content_index":0,"delta":p,"logprobs":[]}),
            );
        }
        let part = json!({"type":"output_text","annotations":[],"logprobs":[],"text":text});
        push(
            json!({"type":"response.output_text.done","item_id":id,"output_index":index,"content_index":0,"text":text,"logprobs":[]}),
        );
        push(
            json!({"type":"response.content_part.done","item_id":id,"output_index":index,"content_index":0,"part":part}),
        );
        let item = json!({"id":id,"type":"message","status":"completed","content":[part],"role":"assistant"});
        push(json!({"type":"response.output_item.done","output_index":index,"item":item}));
        output.push(item);
        index += 1;
    }
    for (n, (name, args)) in tools.iter().enumerate() {
        let id = format!("fc_fallback{n}");
        let call_id = format!("call_fb{n}");
        push(
            json!({"type":"response.output_item.added","output_index":index,"item":{"id":id,"type":"function_call","status":"in_progress","arguments":"","call_id":call_id,"name":name}}),
        );
        for p in pieces(args, 4) {
            deltas += 1;
            push(
                json!({"type":"response.function_call_arguments.delta","item_id":id,"output_index":index,"delta":p}),
            );
        }
        push(
            json!({"type":"response.function_call_arguments.done","item_id":id,"output_index":index,"arguments":args}),
        );
        let item = json!({"id":id,"type":"function_call","status":"completed","arguments":args,"call_id":call_id,"name":name});
        push(json!({"type":"response.output_item.done","output_index":index,"item":item}));
        output.push(item);
        index += 1;
    }
    let usage = json!({"input_tokens":10,"input_tokens_details":{"cached_tokens":0},"output_tokens":deltas,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":10 + deltas});
    push(
        json!({"type":"response.completed","response":response("completed", json!(output), usage)}),
    );
    out
}

/// The in-band error event of a dialect.
pub fn in_band_error(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Gemini => "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded. Please try again later.\", \"status\": \"UNAVAILABLE\"}}\r\n\r\n",
        Dialect::Anthropic => "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        Dialect::OpenAi => "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
        // The shape the API sends (nested), numbered after anything a primary sent.
        Dialect::Responses => "event: error\ndata: {\"type\":\"error\",\"sequence_number\":9999,\"error\":{\"type\":\"server_error\",\"code\":\"server_error\",\"message\":\"The server had an error while processing your request.\",\"param\":null}}\n\n",
    }
}

/// A response body that sends its frames, then ends as told.
pub struct ScriptBody {
    frames: VecDeque<Bytes>,
    fault: Option<Fault>,
    in_band: Option<Bytes>,
    /// Yielded once before the reset, so that a server writing this body flushes first.
    yielded: bool,
}

impl ScriptBody {
    pub fn new(bytes: Bytes, cuts: &[usize], fault: Option<Fault>) -> Self {
        let mut frames = VecDeque::new();
        let mut at = 0;
        for &cut in cuts.iter().filter(|&&c| c > 0 && c < bytes.len()) {
            if cut > at {
                frames.push_back(bytes.slice(at..cut));
                at = cut;
            }
        }
        if at < bytes.len() {
            frames.push_back(bytes.slice(at..));
        }
        ScriptBody {
            frames,
            fault,
            in_band: None,
            yielded: false,
        }
    }

    pub fn with_in_band(mut self, dialect: Dialect) -> Self {
        self.in_band = Some(Bytes::from_static(in_band_error(dialect).as_bytes()));
        self
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        match self.fault {
            None | Some(Fault::Truncate) => Poll::Ready(None),
            Some(Fault::InBand) => match self.in_band.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Ready(None),
            },
            Some(Fault::Reset) if !self.yielded => {
                self.yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Fault::Reset) => {
                self.fault = Some(Fault::Truncate);
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset by peer",
                ))))
            }
            Some(Fault::Stall) => Poll::Pending,
        }
    }
}

/// A tower service over an [`Upstream`], for any request body.
pub fn service<B>(
    upstream: Upstream,
) -> impl tower::Service<
    Request<tower_midstream::ReplayBody<B>>,
    Response = Response<ScriptBody>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    tower::service_fn(move |req: Request<tower_midstream::ReplayBody<B>>| {
        let upstream = upstream.clone();
        async move { Ok::<_, Infallible>(upstream.answer(req).await) }
    })
}
