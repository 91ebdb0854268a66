//! The demo upstream: a fake provider on loopback that speaks Anthropic Messages
//! (`POST /v1/messages`) and OpenAI Chat Completions (`POST /v1/chat/completions`), streams a
//! canned answer at a model's pace, and fails on request.
//!
//! # Models
//!
//! | model | dialect | in the demo config | prefill |
//! |---|---|---|---|
//! | `demo-claude-primary` | anthropic | primary, fallbacks below in order | accepted |
//! | `demo-claude-no-prefill` | anthropic | fallback 1 | rejected: HTTP 400, Anthropic's exact body |
//! | `demo-claude-prefill` | anthropic | fallback 2 | accepted; a final assistant message ending in whitespace is a 400 |
//! | `demo-gpt-primary` | openai-chat | primary, fallbacks below in order | accepted |
//! | `demo-gpt-prefix` | openai-chat | fallback 1 | accepted with `"prefix": true` |
//! | `demo-gpt-no-prefix` | openai-chat | fallback 2 | rejected: HTTP 400 for any final assistant message |
//!
//! Every model answers the same canned answer. A request carrying part of it (a final
//! assistant message, or an assistant message followed by the user's continue instruction)
//! gets the rest of it, as a model continuing would.
//!
//! # Scripting, per request
//!
//! The gateway forwards these headers to every attempt.
//!
//! `x-demo-answer` picks the answer: `text` (the default), `tool` (text, then one tool call),
//! `parallel-tools` (two tool calls, no text), `thinking` (Anthropic only: a thinking block,
//! then text; like the real API, only when the request enables `thinking`).
//!
//! `x-demo-fault` says which model fails and how: a comma-separated list of `FAULT` (applies to
//! the primaries) or `MODEL=FAULT`, where `MODEL` is a model name, `fallbacks` (every model
//! but the primaries) or `all`. The first item that applies to a model wins. Without the
//! header, the primaries `reset` halfway and the fallbacks answer; with it, only what it says
//! fails. `FAULT` is one of:
//!
//! | fault | what the stream does |
//! |---|---|
//! | `none` | answers in full |
//! | `reset@N` | sends N events, then the connection is aborted mid-body |
//! | `stall@N` | sends N events, then nothing, ever (the gateway's idle timeout fires) |
//! | `error@N` | sends N events, then an in-band error event (`overloaded_error`; OpenAI: `server_error`) and ends |
//! | `error:TYPE@N` | the same with that error type (`invalid_request_error` is not retried) |
//! | `truncate@N` | sends N events, then ends cleanly without the terminal event |
//! | `503`, `529`, `400`... | answers that status before any stream, with an error body in the dialect |
//!
//! N counts SSE events from the first (`message_start`, or OpenAI's role chunk); without `@N`,
//! halfway. N is capped so that the terminal event is never sent. A non-streaming request
//! fails only with a status. Examples:
//!
//! ```text
//! x-demo-fault: none                                   the primary answers in full
//! x-demo-fault: stall@8                                the primary stalls after 8 events
//! x-demo-fault: reset@6, fallbacks=503                 every attempt fails
//! x-demo-fault: reset@6, demo-claude-no-prefill=529    fallback 1 fails too: fallback 2 gets a prefill
//! x-demo-fault: 400                                    a client error: passed on, never retried
//! ```
//!
//! A malformed value of either header gets a 400 that says what is wrong.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub const CLAUDE_PRIMARY: &str = "demo-claude-primary";
pub const CLAUDE_NO_PREFILL: &str = "demo-claude-no-prefill";
pub const CLAUDE_PREFILL: &str = "demo-claude-prefill";
pub const GPT_PRIMARY: &str = "demo-gpt-primary";
pub const GPT_PREFIX: &str = "demo-gpt-prefix";
pub const GPT_NO_PREFIX: &str = "demo-gpt-no-prefix";

/// Anthropic's answer to a trailing assistant message on a model without prefill.
pub const ANTHROPIC_PREFILL_400: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill. The conversation must end with a user message."}}"#;
/// Anthropic's answer to a final assistant message that ends in whitespace.
pub const ANTHROPIC_WHITESPACE_400: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: final assistant content cannot end with trailing whitespace"}}"#;
const OPENAI_PREFIX_400: &str = r#"{"error":{"message":"This model does not support continuing a final assistant message: the last message must come from the user.","type":"invalid_request_error","param":"messages","code":null}}"#;

/// The canned answer's text.
pub const TEXT: &str = "Streams break in three ordinary ways: the connection resets, the \
provider stalls, or it sends an overloaded error halfway through. By then the client holds half \
an answer, and a retry before the first byte cannot help. This gateway notices the failure, asks \
a fallback model to continue exactly where the first one stopped, and splices the two streams \
into one.";
const TOOL_TEXT: &str = "I'll check the current weather in Paris.";
const THINKING: &str = "The user asks why streams break. Name the failure modes first, then \
what the gateway does about each.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Anthropic,
    OpenAi,
}

struct DemoModel {
    name: &'static str,
    wire: Wire,
    primary: bool,
    accepts_prefill: bool,
}

const MODELS: &[DemoModel] = &[
    DemoModel {
        name: CLAUDE_PRIMARY,
        wire: Wire::Anthropic,
        primary: true,
        accepts_prefill: true,
    },
    DemoModel {
        name: CLAUDE_NO_PREFILL,
        wire: Wire::Anthropic,
        primary: false,
        accepts_prefill: false,
    },
    DemoModel {
        name: CLAUDE_PREFILL,
        wire: Wire::Anthropic,
        primary: false,
        accepts_prefill: true,
    },
    DemoModel {
        name: GPT_PRIMARY,
        wire: Wire::OpenAi,
        primary: true,
        accepts_prefill: true,
    },
    DemoModel {
        name: GPT_PREFIX,
        wire: Wire::OpenAi,
        primary: false,
        accepts_prefill: true,
    },
    DemoModel {
        name: GPT_NO_PREFIX,
        wire: Wire::OpenAi,
        primary: false,
        accepts_prefill: false,
    },
];

/// The gateway configuration for the demo: every demo model, each primary with its two
/// fallbacks. Also a worked example of the config file.
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
"#
    )
}

/// A request the demo upstream received (tests/gateway.rs reads them).
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub model: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[allow(dead_code)]
impl Call {
    /// Whether the request ends with an assistant message: a prefill.
    pub fn ends_with_assistant(&self) -> bool {
        self.body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "assistant")
    }
}

/// The demo upstream. Clones share the record of calls.
#[derive(Clone)]
pub struct Demo {
    inner: Arc<Inner>,
}

struct Inner {
    pace: Duration,
    calls: Mutex<VecDeque<Call>>,
}

/// Calls kept for [`Demo::calls`]; older ones are forgotten.
const KEEP_CALLS: usize = 1000;

impl Demo {
    /// A demo upstream sending one event per `pace` (zero: as fast as it can).
    pub fn new(pace: Duration) -> Self {
        Demo {
            inner: Arc::new(Inner {
                pace,
                calls: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The requests received, oldest first.
    #[allow(dead_code)]
    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().iter().cloned().collect()
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: let connections close before accepting more.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let demo = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let demo = demo.clone();
                    async move { Ok::<_, std::convert::Infallible>(demo.answer(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Answers one request.
    pub async fn answer<B>(&self, req: Request<B>) -> Response<DemoBody>
    where
        B: Body,
        B::Error: std::fmt::Display,
    {
        let wire = match req.uri().path() {
            "/v1/messages" => Wire::Anthropic,
            "/v1/chat/completions" => Wire::OpenAi,
            other => {
                return error(
                    Wire::OpenAi,
                    404,
                    None,
                    &format!("no endpoint {other} here"),
                )
            }
        };
        let (parts, body) = req.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return error(wire, 400, None, &format!("cannot read the body: {e}")),
        };
        let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
            return error(wire, 400, None, "the body is not JSON");
        };
        let name = body["model"].as_str().unwrap_or_default().to_owned();
        self.record(Call {
            path: parts.uri.path().to_owned(),
            model: name.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        let Some(model) = MODELS.iter().find(|m| m.name == name && m.wire == wire) else {
            return error(
                wire,
                404,
                Some("not_found_error"),
                &format!("model: {name}"),
            );
        };
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let shape = match Shape::parse(header("x-demo-answer"), wire) {
            Ok(shape) => shape,
            Err(msg) => return error(wire, 400, None, &format!("x-demo-answer: {msg}")),
        };
        let fault = match fault_for(model, header("x-demo-fault")) {
            Ok(fault) => fault,
            Err(msg) => return error(wire, 400, None, &format!("x-demo-fault: {msg}")),
        };
        if let Fault::Status(status) = fault {
            tracing::info!(target: "demo", model = model.name, fault = %fault, "answering with a scripted status");
            return error(wire, status, None, "scripted by x-demo-fault");
        }
        if let Some(rejection) = prefill_rejection(model, wire, &body) {
            tracing::info!(target: "demo", model = model.name, "rejecting the prefill");
            return plain(400, rejection);
        }

        let answer = shape.answer(wire, &body);
        let how = match (
            answer.continues_from,
            body["messages"].as_array().and_then(|m| m.last()),
        ) {
            (0, _) => "from the start",
            (_, Some(last)) if last["role"] == "assistant" => "continuing a prefill",
            _ => "continuing after the instruction",
        };
        tracing::info!(
            target: "demo",
            model = model.name,
            from_char = answer.continues_from,
            fault = %fault,
            "answering {how}"
        );
        if body["stream"] != true {
            return json_response(answer.message(wire, model.name));
        }
        let events = answer.events(
            wire,
            model.name,
            body["stream_options"]["include_usage"] == true,
        );
        let (events, end) = fault.cut(events, wire);
        let mut response = Response::new(DemoBody::new(events, self.inner.pace, end));
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        response
    }

    fn record(&self, call: Call) {
        let mut calls = self.inner.calls.lock().unwrap();
        if calls.len() == KEEP_CALLS {
            calls.pop_front();
        }
        calls.push_back(call);
    }
}

/// What the request's own conversation says about prefill, for this model.
fn prefill_rejection(model: &DemoModel, wire: Wire, body: &Value) -> Option<&'static str> {
    let last = body["messages"].as_array()?.last()?;
    if last["role"] != "assistant" {
        return None;
    }
    match wire {
        Wire::Anthropic if !model.accepts_prefill => Some(ANTHROPIC_PREFILL_400),
        Wire::Anthropic if text_of(&last["content"]).trim_end() != text_of(&last["content"]) => {
            Some(ANTHROPIC_WHITESPACE_400)
        }
        Wire::OpenAi if !model.accepts_prefill => Some(OPENAI_PREFIX_400),
        _ => None,
    }
}

/// The text of a message's content: a string, or text blocks.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

/// The part of the canned text the request already carries: a final assistant message
/// (prefill), or an assistant message followed by the continue instruction.
fn partial_of(body: &Value, whole: &str) -> usize {
    let Some(messages) = body["messages"].as_array() else {
        return 0;
    };
    let candidate = match messages.as_slice() {
        [.., last] if last["role"] == "assistant" => last,
        [.., before, last] if last["role"] == "user" && before["role"] == "assistant" => before,
        _ => return 0,
    };
    let text = text_of(&candidate["content"]);
    if !text.is_empty() && whole.starts_with(&text) {
        text.len()
    } else {
        0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    Tool,
    ParallelTools,
    Thinking,
}

impl Shape {
    fn parse(value: Option<&str>, wire: Wire) -> Result<Shape, String> {
        match value.map(str::trim) {
            None | Some("text") => Ok(Shape::Text),
            Some("tool") => Ok(Shape::Tool),
            Some("parallel-tools") => Ok(Shape::ParallelTools),
            Some("thinking") if wire == Wire::Anthropic => Ok(Shape::Thinking),
            Some("thinking") => Err("`thinking` is for Anthropic Messages only".into()),
            Some(other) => Err(format!(
                "unknown answer `{other}`: expected text, tool, parallel-tools or thinking"
            )),
        }
    }

    /// The answer still due for `request`.
    fn answer(self, wire: Wire, request: &Value) -> Answer {
        let (text, tools): (&str, Vec<(&str, &str)>) = match self {
            Shape::Text | Shape::Thinking => (TEXT, vec![]),
            Shape::Tool => (
                TOOL_TEXT,
                vec![("get_weather", r#"{"city":"Paris","unit":"celsius"}"#)],
            ),
            Shape::ParallelTools => (
                "",
                vec![
                    ("get_weather", r#"{"city":"Paris","unit":"celsius"}"#),
                    ("get_weather", r#"{"city":"Tokyo","unit":"celsius"}"#),
                ],
            ),
        };
        let thinking = self == Shape::Thinking
            && wire == Wire::Anthropic
            && request["thinking"]["type"] == "enabled";
        let continues_from = partial_of(request, text);
        Answer {
            thinking: thinking.then_some(THINKING),
            text: text[continues_from..].to_owned(),
            continues_from,
            tools: tools
                .into_iter()
                .map(|(n, a)| (n.to_owned(), a.to_owned()))
                .collect(),
        }
    }
}

struct Answer {
    thinking: Option<&'static str>,
    /// The text still due, from byte `continues_from` of the canned text.
    text: String,
    continues_from: usize,
    tools: Vec<(String, String)>,
}

/// Pieces of a few characters, as models stream them.
fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

impl Answer {
    fn stop_reason(&self, wire: Wire) -> &'static str {
        match (wire, self.tools.is_empty()) {
            (Wire::Anthropic, true) => "end_turn",
            (Wire::Anthropic, false) => "tool_use",
            (Wire::OpenAi, true) => "stop",
            (Wire::OpenAi, false) => "tool_calls",
        }
    }

    fn output_tokens(&self) -> usize {
        let chars = self.thinking.map_or(0, str::len)
            + self.text.len()
            + self.tools.iter().map(|(_, a)| a.len()).sum::<usize>();
        chars.div_ceil(4).max(1)
    }

    /// The whole stream, one SSE event per item.
    fn events(&self, wire: Wire, model: &str, include_usage: bool) -> Vec<Bytes> {
        match wire {
            Wire::Anthropic => self.anthropic_events(model),
            Wire::OpenAi => self.openai_events(model, include_usage),
        }
    }

    fn anthropic_events(&self, model: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut event = |data: Value| {
            let name = data["type"].as_str().unwrap().to_owned();
            out.push(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
        };
        event(
            json!({"type":"message_start","message":{"id":"msg_demo","type":"message","role":"assistant","model":model,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":24,"output_tokens":1}}}),
        );
        let mut index = 0;
        let mut pinged = false;
        let mut ping = |event: &mut dyn FnMut(Value)| {
            if !std::mem::replace(&mut pinged, true) {
                event(json!({"type":"ping"}));
            }
        };
        if let Some(thinking) = self.thinking {
            event(
                json!({"type":"content_block_start","index":index,"content_block":{"type":"thinking","thinking":"","signature":""}}),
            );
            ping(&mut event);
            for p in pieces(thinking, 12) {
                event(
                    json!({"type":"content_block_delta","index":index,"delta":{"type":"thinking_delta","thinking":p}}),
                );
            }
            event(
                json!({"type":"content_block_delta","index":index,"delta":{"type":"signature_delta","signature":"ZGVtby1zaWduYXR1cmU="}}),
            );
            event(json!({"type":"content_block_stop","index":index}));
            index += 1;
        }
        if !self.text.is_empty() {
            event(
                json!({"type":"content_block_start","index":index,"content_block":{"type":"text","text":""}}),
            );
            ping(&mut event);
            for p in pieces(&self.text, 5) {
                event(
                    json!({"type":"content_block_delta","index":index,"delta":{"type":"text_delta","text":p}}),
                );
            }
            event(json!({"type":"content_block_stop","index":index}));
            index += 1;
        }
        for (n, (name, args)) in self.tools.iter().enumerate() {
            event(
                json!({"type":"content_block_start","index":index,"content_block":{"type":"tool_use","id":format!("toolu_demo{n}"),"name":name,"input":{}}}),
            );
            ping(&mut event);
            for p in pieces(args, 6) {
                event(
                    json!({"type":"content_block_delta","index":index,"delta":{"type":"input_json_delta","partial_json":p}}),
                );
            }
            event(json!({"type":"content_block_stop","index":index}));
            index += 1;
        }
        event(
            json!({"type":"message_delta","delta":{"stop_reason":self.stop_reason(Wire::Anthropic),"stop_sequence":null},"usage":{"output_tokens":self.output_tokens()}}),
        );
        event(json!({"type":"message_stop"}));
        out
    }

    fn openai_events(&self, model: &str, include_usage: bool) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut chunk = |choices: Value, usage: Value| {
            let mut v = json!({"id":"chatcmpl-demo","object":"chat.completion.chunk","created":1700000000,"model":model,"choices":choices});
            if include_usage {
                v["usage"] = usage;
            }
            out.push(Bytes::from(format!("data: {v}\n\n")));
        };
        let delta = |d: Value| json!([{"index":0,"delta":d,"finish_reason":null}]);
        chunk(delta(json!({"role":"assistant","content":""})), Value::Null);
        for p in pieces(&self.text, 4) {
            chunk(delta(json!({"content":p})), Value::Null);
        }
        for (i, (name, args)) in self.tools.iter().enumerate() {
            chunk(
                delta(
                    json!({"tool_calls":[{"index":i,"id":format!("call_demo{i}"),"type":"function","function":{"name":name,"arguments":""}}]}),
                ),
                Value::Null,
            );
            for p in pieces(args, 5) {
                chunk(
                    delta(json!({"tool_calls":[{"index":i,"function":{"arguments":p}}]})),
                    Value::Null,
                );
            }
        }
        let finish = self.stop_reason(Wire::OpenAi);
        chunk(
            json!([{"index":0,"delta":{},"finish_reason":finish}]),
            Value::Null,
        );
        if include_usage {
            let n = self.output_tokens();
            chunk(
                json!([]),
                json!({"prompt_tokens":24,"completion_tokens":n,"total_tokens":24 + n}),
            );
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }

    /// The answer as a non-streaming response body.
    fn message(&self, wire: Wire, model: &str) -> Value {
        let tokens = self.output_tokens();
        match wire {
            Wire::Anthropic => {
                let mut content = Vec::new();
                if let Some(t) = self.thinking {
                    content.push(
                        json!({"type":"thinking","thinking":t,"signature":"ZGVtby1zaWduYXR1cmU="}),
                    );
                }
                if !self.text.is_empty() {
                    content.push(json!({"type":"text","text":self.text}));
                }
                for (n, (name, args)) in self.tools.iter().enumerate() {
                    let input: Value = serde_json::from_str(args).unwrap();
                    content.push(json!({"type":"tool_use","id":format!("toolu_demo{n}"),"name":name,"input":input}));
                }
                json!({"id":"msg_demo","type":"message","role":"assistant","model":model,"content":content,"stop_reason":self.stop_reason(wire),"stop_sequence":null,"usage":{"input_tokens":24,"output_tokens":tokens}})
            }
            Wire::OpenAi => {
                let mut message = json!({"role":"assistant","content":(!self.text.is_empty()).then_some(&self.text),"refusal":null});
                if !self.tools.is_empty() {
                    message["tool_calls"] = self
                        .tools
                        .iter()
                        .enumerate()
                        .map(|(i, (name, args))| json!({"id":format!("call_demo{i}"),"type":"function","function":{"name":name,"arguments":args}}))
                        .collect();
                }
                json!({"id":"chatcmpl-demo","object":"chat.completion","created":1700000000,"model":model,"choices":[{"index":0,"message":message,"finish_reason":self.stop_reason(wire)}],"usage":{"prompt_tokens":24,"completion_tokens":tokens,"total_tokens":24 + tokens}})
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    None,
    Reset(Option<usize>),
    Stall(Option<usize>),
    Error(Option<String>, Option<usize>),
    Truncate(Option<usize>),
    Status(u16),
}

/// The fault `header` scripts for `model`.
fn fault_for(model: &DemoModel, header: Option<&str>) -> Result<Fault, String> {
    let Some(header) = header else {
        return Ok(if model.primary {
            Fault::Reset(None)
        } else {
            Fault::None
        });
    };
    for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (selector, fault) = match item.split_once('=') {
            Some((s, f)) => (Some(s.trim()), f.trim()),
            None => (None, item),
        };
        let fault = Fault::parse(fault)?;
        let applies = match selector {
            None => model.primary,
            Some("all") => true,
            Some("fallbacks") => !model.primary,
            Some(name) if MODELS.iter().any(|m| m.name == name) => name == model.name,
            Some(name) => return Err(format!("no demo model is named `{name}`")),
        };
        if applies {
            return Ok(fault);
        }
    }
    Ok(Fault::None)
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at =
            |at: &Option<usize>| at.map_or("halfway".to_owned(), |n| format!("after {n} events"));
        match self {
            Fault::None => f.write_str("none"),
            Fault::Reset(n) => write!(f, "reset {}", at(n)),
            Fault::Stall(n) => write!(f, "stall {}", at(n)),
            Fault::Truncate(n) => write!(f, "truncate {}", at(n)),
            Fault::Error(kind, n) => {
                write!(
                    f,
                    "{} error event {}",
                    kind.as_deref().unwrap_or("in-band"),
                    at(n)
                )
            }
            Fault::Status(status) => write!(f, "status {status}"),
        }
    }
}

impl Fault {
    fn parse(s: &str) -> Result<Fault, String> {
        if s == "none" {
            return Ok(Fault::None);
        }
        if let Ok(status) = s.parse::<u16>() {
            return if (400..600).contains(&status) {
                Ok(Fault::Status(status))
            } else {
                Err(format!("status {status} is not an error status (400-599)"))
            };
        }
        let (kind, at) = match s.split_once('@') {
            Some((kind, at)) => {
                let at = at
                    .parse()
                    .map_err(|_| format!("`{at}` in `{s}` is not an event count"))?;
                (kind, Some(at))
            }
            None => (s, None),
        };
        match kind.split_once(':') {
            None if kind == "reset" => Ok(Fault::Reset(at)),
            None if kind == "stall" => Ok(Fault::Stall(at)),
            None if kind == "truncate" => Ok(Fault::Truncate(at)),
            None if kind == "error" => Ok(Fault::Error(None, at)),
            Some(("error", kind)) if !kind.is_empty() => Ok(Fault::Error(Some(kind.to_owned()), at)),
            _ => Err(format!(
                "unknown fault `{s}`: expected none, reset@N, stall@N, error@N, error:TYPE@N, truncate@N or a status such as 529"
            )),
        }
    }

    /// The events sent before the fault, and how the body ends.
    fn cut(&self, mut events: Vec<Bytes>, wire: Wire) -> (Vec<Bytes>, End) {
        let (at, end) = match self {
            Fault::None | Fault::Status(_) => return (events, End::Clean),
            Fault::Reset(at) => (at, End::Reset),
            Fault::Stall(at) => (at, End::Stall),
            Fault::Truncate(at) => (at, End::Clean),
            Fault::Error(_, at) => (at, End::Clean),
        };
        let keep = at.unwrap_or(events.len() / 2).min(events.len() - 1);
        events.truncate(keep);
        if let Fault::Error(kind, _) = self {
            events.push(in_band_error(wire, kind.as_deref()));
        }
        (events, end)
    }
}

fn in_band_error(wire: Wire, kind: Option<&str>) -> Bytes {
    let data = match wire {
        Wire::Anthropic => {
            let kind = kind.unwrap_or("overloaded_error");
            json!({"type":"error","error":{"type":kind,"message":"Overloaded (scripted by x-demo-fault)"}})
        }
        Wire::OpenAi => {
            let kind = kind.unwrap_or("server_error");
            json!({"error":{"message":"The server had an error while processing your request (scripted by x-demo-fault).","type":kind,"param":null,"code":null}})
        }
    };
    match wire {
        Wire::Anthropic => Bytes::from(format!("event: error\ndata: {data}\n\n")),
        Wire::OpenAi => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// An error response as the provider would send it.
fn error(wire: Wire, status: u16, kind: Option<&str>, message: &str) -> Response<DemoBody> {
    let body = match wire {
        Wire::Anthropic => {
            let kind = kind.unwrap_or(match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ if status >= 500 => "api_error",
                _ => "invalid_request_error",
            });
            json!({"type":"error","error":{"type":kind,"message":message}})
        }
        Wire::OpenAi => {
            let kind = match status {
                429 => "rate_limit_exceeded",
                _ if status >= 500 => "server_error",
                _ => "invalid_request_error",
            };
            json!({"error":{"message":message,"type":kind,"param":null,"code":null}})
        }
    };
    let mut response = json_response(body);
    *response.status_mut() = StatusCode::from_u16(status).expect("checked when parsed");
    response
}

fn plain(status: u16, body: &'static str) -> Response<DemoBody> {
    let mut response = Response::new(DemoBody::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn json_response(body: Value) -> Response<DemoBody> {
    let mut response = Response::new(DemoBody::full(Bytes::from(body.to_string())));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

/// How a demo body ends once its events are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Clean,
    /// The body errors: the server aborts the connection mid-body.
    Reset,
    /// Nothing more, ever.
    Stall,
}

/// A response body that sends its events one per `pace`, then ends as told.
pub struct DemoBody {
    events: VecDeque<Bytes>,
    pace: Duration,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    end: End,
    /// A reset waits one poll, so that the server flushes what was sent before it aborts.
    flushed: bool,
}

impl DemoBody {
    fn new(events: Vec<Bytes>, pace: Duration, end: End) -> Self {
        DemoBody {
            events: events.into(),
            pace,
            wait: None,
            end,
            flushed: false,
        }
    }

    fn full(bytes: Bytes) -> Self {
        DemoBody::new(vec![bytes], Duration::ZERO, End::Clean)
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(wait) = self.wait.as_mut() {
            std::task::ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        if let Some(event) = self.events.pop_front() {
            if !self.pace.is_zero() {
                self.wait = Some(Box::pin(tokio::time::sleep(self.pace)));
            }
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
        match self.end {
            End::Clean => Poll::Ready(None),
            End::Stall => Poll::Pending,
            End::Reset if !self.flushed => {
                self.flushed = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            End::Reset => {
                self.end = End::Clean;
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset (scripted by x-demo-fault)",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_empty() && self.end == End::Clean && self.wait.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.end, self.events.len()) {
            (End::Clean, 1) if self.pace.is_zero() => {
                SizeHint::with_exact(self.events[0].len() as u64)
            }
            _ => SizeHint::default(),
        }
    }
}
