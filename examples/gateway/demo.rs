//! The demo upstream: a fake provider on loopback that streams a canned answer at a model's
//! pace in every wire format the layer watches or will watch, and fails on request.
//!
//! # Wire formats
//!
//! This file holds the routing and the record of calls; `demo/` one file per wire format:
//!
//! | route | format | file |
//! |---|---|---|
//! | `POST /v1/messages` | Anthropic Messages | `anthropic.rs` |
//! | `POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:streamRawPredict` (and `:rawPredict`) | Claude on Vertex AI: Anthropic's events, Vertex's request rules | `vertex.rs` |
//! | `POST /v1/chat/completions` | OpenAI Chat Completions, in the shape of the server `x-demo-server` names | `openai_chat.rs`, `servers.rs` |
//! | `POST /v1/responses` | OpenAI Responses | `responses.rs` |
//! | `POST /v1beta/models/{m}:streamGenerateContent?alt=sse` (also `/v1/`, and `:generateContent`) | Gemini | `gemini.rs` |
//!
//! `script.rs` reads `x-demo-answer` and `x-demo-fault` (`servers.rs` reads `x-demo-server`),
//! `answer.rs` holds the canned answers and how a request's conversation says where to
//! continue from, `models.rs` the models and the demo's gateway config, `body.rs` the paced
//! response body.
//!
//! # Models
//!
//! | model | served on | in the demo config | prefill |
//! |---|---|---|---|
//! | `demo-claude-primary` | Messages, Vertex | primary, fallbacks below in order | accepted |
//! | `demo-claude-no-prefill` | Messages, Vertex | fallback 1 | rejected: HTTP 400, Anthropic's exact body |
//! | `demo-claude-prefill` | Messages, Vertex | fallback 2 | accepted; a final assistant message ending in whitespace is a 400 |
//! | `demo-gpt-primary` | Chat, Responses | primary, fallbacks below in order | accepted (Chat) |
//! | `demo-gpt-prefix` | Chat, Responses | fallback 1 | accepted with `"prefix": true` (Chat) |
//! | `demo-gpt-no-prefix` | Chat, Responses | fallback 2 | rejected: HTTP 400 for any final assistant message (Chat) |
//! | `demo-gemini-primary` | Gemini | not yet | accepted: a trailing `model` turn is continued |
//! | `demo-gemini-no-prefill` | Gemini | not yet | rejected: HTTP 400 `Requests ending with a model turn are not supported.` |
//! | `demo-gemini-prefill` | Gemini | not yet | accepted |
//!
//! The Responses API has no prefill: a trailing assistant item is not continued there, the
//! model answers from the start (as a model that was not asked to continue would).
//!
//! Every model answers the same canned answer. A request carrying part of it gets the rest of
//! it, as a model continuing would: a final assistant message (Messages, Chat) or `model` turn
//! (Gemini), or an assistant message followed by the user's continue instruction (every
//! format; in Responses, input items: an assistant message whose text is the partial answer,
//! then a user message).
//!
//! # Scripting, per request
//!
//! The gateway forwards these headers to every attempt.
//!
//! `x-demo-answer` picks the answer: `text` (the default), `tool` (text, then one tool call),
//! `parallel-tools` (two tool calls, no text), `thinking` (reasoning, then text: Anthropic's
//! thinking block when the request enables `thinking`; a Responses reasoning item, with summary
//! events when the request asks for `reasoning.summary`; Gemini `thought: true` parts when
//! `thinkingConfig.includeThoughts` is set; Chat reasoning deltas from the servers that send
//! them), `refusal` (Chat `delta.refusal`, a Responses `refusal` part).
//!
//! `x-demo-server` (Chat Completions only) picks the server whose shapes the stream takes: a
//! comma-separated list of `SERVER` (every model) or `MODEL=SERVER`; the first item that
//! applies wins. `demo` (the default: keys in alphabetical order), `openai`, `azure`, `vllm`,
//! `deepseek`, `openrouter`, `gemini-compat`, `framed`; see `servers.rs` for what each sends.
//! A Chat request with `"n": 2` gets two choices, interleaved; the second answers
//! [`TEXT_2`] where the first answers [`TEXT`].
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
//! | `error@N` | sends N events, then an in-band error in the format's own shape, and ends |
//! | `error:TYPE@N` | the same with that error type (`invalid_request_error` is a client error: not retried) |
//! | `failed@N`, `failed:CODE@N` | Responses only: sends N events, then `response.failed` (`server_error`, or CODE) |
//! | `truncate@N` | sends N events, then ends cleanly without the terminal event |
//! | `503`, `529`, `400`... | answers that status before any stream, with an error body in the format |
//!
//! The in-band errors: Anthropic `event: error` (`overloaded_error`); Chat a chunk with
//! `error` (`server_error`), vLLM's `{"object":"error",...,"code":500}`, OpenRouter's chunk
//! with `error` and `finish_reason: "error"`; Responses an `error` event; Gemini
//! `{"error":{"code":503,"message":...,"status":"UNAVAILABLE"}}`. TYPE is an error type
//! (`invalid_request_error`, `rate_limit_error`...) or, for Gemini, a status (`INVALID_ARGUMENT`).
//!
//! N counts SSE events from the first (`message_start`, OpenAI's role chunk, `response.created`,
//! Gemini's first chunk; comments are not events); without `@N`, halfway. N is capped so that
//! the last event (the terminal one) is never sent. A non-streaming request fails only with a
//! status. Examples:
//!
//! ```text
//! x-demo-fault: none                                   the primary answers in full
//! x-demo-fault: stall@8                                the primary stalls after 8 events
//! x-demo-fault: reset@6, fallbacks=503                 every attempt fails
//! x-demo-fault: reset@6, demo-claude-no-prefill=529    fallback 1 fails too: fallback 2 gets a prefill
//! x-demo-fault: 400                                    a client error: passed on, never retried
//! x-demo-server: vllm, demo-gpt-prefix=deepseek        the primary is vLLM, fallback 1 DeepSeek
//! ```
//!
//! A malformed value of any of these headers gets a 400 that says what is wrong.
//!
//! # Request rules the demo enforces, as the providers do
//!
//! * Gemini: an `x-goog-api-key` header (any value), else 403 as the API answers.
//! * Claude on Vertex: `Authorization: Bearer` (any token), else 401; a body without
//!   `model` and with `anthropic_version` `vertex-2023-10-16` or `2026-10-21` (what current
//!   SDKs send), else 400.
//! * Responses: `max_output_tokens` at least 16; a `previous_response_id` is known only to the
//!   model that answered it (ids are `resp_demo_<model>`): elsewhere 400
//!   `previous_response_not_found`.

// Explicit paths: this file is also included by `#[path]` from tests and other examples, and
// a path-included file would look for its submodules beside itself, not in demo/.
#[path = "demo/answer.rs"]
mod answer;
#[path = "demo/anthropic.rs"]
mod anthropic;
#[path = "demo/body.rs"]
mod body;
#[path = "demo/gemini.rs"]
mod gemini;
#[path = "demo/models.rs"]
mod models;
#[path = "demo/openai_chat.rs"]
mod openai_chat;
#[path = "demo/responses.rs"]
mod responses;
#[path = "demo/script.rs"]
mod script;
#[path = "demo/servers.rs"]
mod servers;
#[path = "demo/vertex.rs"]
mod vertex;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

#[allow(unused_imports)]
pub use answer::{TEXT, TEXT_2};
#[allow(unused_imports)]
pub use anthropic::{ANTHROPIC_PREFILL_400, ANTHROPIC_WHITESPACE_400};
#[allow(unused_imports)]
pub use body::{DemoBody, End};
#[allow(unused_imports)]
pub use gemini::GEMINI_MODEL_TURN_400;
#[allow(unused_imports)]
pub use models::gateway_config;
#[allow(unused_imports)]
pub use models::{
    CLAUDE_NO_PREFILL, CLAUDE_PREFILL, CLAUDE_PRIMARY, CLAUDE_VERTEX, CLAUDE_WITH_VERTEX_FALLBACK,
    GEMINI_NO_PREFILL, GEMINI_PREFILL, GEMINI_PRIMARY, GPT_NO_PREFIX, GPT_PREFIX, GPT_PRIMARY,
    RESPONSES_FALLBACK, RESPONSES_PRIMARY,
};

use answer::{Answer, Continuation};
use models::{DemoModel, Family};
use script::{Fault, Shape};
use servers::Server;

/// Which wire format a request speaks, read from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Anthropic,
    Vertex,
    Chat,
    Responses,
    Gemini,
}

impl Wire {
    fn family(self) -> Family {
        match self {
            Wire::Anthropic | Wire::Vertex => Family::Claude,
            Wire::Chat | Wire::Responses => Family::Gpt,
            Wire::Gemini => Family::Gemini,
        }
    }
}

/// The answer to a request refused before its body is read (boxed: it is large).
type Refused = Box<Response<DemoBody>>;

/// A request's route: its format, and what the path itself says.
struct Route {
    wire: Wire,
    /// The model named in the path (Vertex, Gemini).
    model: Option<String>,
    /// Whether the path asks for a stream (Gemini's method; the others read the body).
    stream: Option<bool>,
}

impl Route {
    fn parse(path: &str, query: Option<&str>) -> Result<Route, Refused> {
        match path {
            "/v1/messages" => return Ok(Route::body(Wire::Anthropic)),
            "/v1/chat/completions" => return Ok(Route::body(Wire::Chat)),
            "/v1/responses" => return Ok(Route::body(Wire::Responses)),
            _ => {}
        }
        if path.starts_with("/v1/projects/") {
            return vertex::route(path);
        }
        if path.starts_with("/v1beta/") || path.starts_with("/v1/models/") {
            return gemini::route(path, query);
        }
        Err(Box::new(openai_chat::error(
            404,
            None,
            &format!("no endpoint {path} here"),
        )))
    }

    fn body(wire: Wire) -> Route {
        Route {
            wire,
            model: None,
            stream: None,
        }
    }
}

/// A request the demo upstream received (tests/gateway.rs reads them).
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    /// The model, from the body or (Vertex, Gemini) the path.
    pub model: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[allow(dead_code)]
impl Call {
    /// Whether the request ends with an assistant message: a prefill (Messages, Chat).
    pub fn ends_with_assistant(&self) -> bool {
        self.body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "assistant")
    }

    /// Whether a Gemini request ends with a `model` turn: a prefill.
    pub fn ends_with_model_turn(&self) -> bool {
        self.body["contents"]
            .as_array()
            .and_then(|c| c.last())
            .is_some_and(|c| c["role"] == "model")
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

/// What one request asks of the demo, once its route, body and headers are read.
struct Ask<'a> {
    wire: Wire,
    model: &'static DemoModel,
    body: &'a Value,
    /// The Chat server whose shapes the answer takes.
    server: &'static Server,
}

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
            let _ = stream.set_nodelay(true);
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
        let route = match Route::parse(req.uri().path(), req.uri().query()) {
            Ok(route) => route,
            Err(response) => return *response,
        };
        let wire = route.wire;
        let (parts, body) = req.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return error(wire, 400, None, &format!("cannot read the body: {e}")),
        };
        let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
            return error(wire, 400, None, "the body is not JSON");
        };
        let name = route
            .model
            .unwrap_or_else(|| body["model"].as_str().unwrap_or_default().to_owned());
        self.record(Call {
            path: parts.uri.path().to_owned(),
            model: name.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        if let Some(refusal) = refuse_request(wire, &parts.headers, &body) {
            return refusal;
        }
        let Some(model) = models::find(&name, wire.family()) else {
            return not_found(wire, &name, parts.uri.path());
        };
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let server = match servers::for_model(model, header("x-demo-server")) {
            Ok(server) => server,
            Err(msg) => return error(wire, 400, None, &format!("x-demo-server: {msg}")),
        };
        let ask = Ask {
            wire,
            model,
            body: &body,
            server,
        };
        let shape = match Shape::parse(header("x-demo-answer"), &ask) {
            Ok(shape) => shape,
            Err(msg) => return error(wire, 400, None, &format!("x-demo-answer: {msg}")),
        };
        let fault = match script::fault_for(model, wire, header("x-demo-fault")) {
            Ok(fault) => fault,
            Err(msg) => return error(wire, 400, None, &format!("x-demo-fault: {msg}")),
        };
        if let Fault::Status(status) = fault {
            tracing::info!(target: "demo", model = model.name, fault = %fault, "answering with a scripted status");
            return error(wire, status, None, "scripted by x-demo-fault");
        }
        let continuation = continuation(wire, &body);
        if let Some(rejection) = prefill_rejection(&ask, &continuation) {
            tracing::info!(target: "demo", model = model.name, "rejecting the prefill");
            return rejection;
        }

        let answer = shape.answer(&ask, &continuation);
        let how = match (answer.continues_from, &continuation) {
            (0, _) => "from the start",
            (_, Continuation::Prefill(_)) => "continuing a prefill",
            _ => "continuing after the instruction",
        };
        tracing::info!(
            target: "demo",
            model = model.name,
            from_char = answer.continues_from,
            fault = %fault,
            "answering {how}"
        );
        let stream = route.stream.unwrap_or(body["stream"] == true);
        if !stream {
            return json_response(message(&ask, &answer, shape));
        }
        let (events, end) = fault.cut(
            events(&ask, &answer, shape),
            |kind, at| in_band_error(&ask, kind, at),
            |code, at| responses::failed(&ask, code, at),
        );
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

/// What a provider refuses before it looks at the model: missing credentials, a body its
/// API does not take.
fn refuse_request(wire: Wire, headers: &HeaderMap, body: &Value) -> Option<Response<DemoBody>> {
    match wire {
        Wire::Gemini => gemini::refuse(headers, body),
        Wire::Vertex => vertex::refuse(headers, body),
        Wire::Responses => responses::refuse(body),
        Wire::Chat => openai_chat::choices(body)
            .err()
            .map(|msg| openai_chat::error(400, None, &msg)),
        Wire::Anthropic => None,
    }
}

fn continuation(wire: Wire, body: &Value) -> Continuation {
    let turns = match wire {
        Wire::Anthropic | Wire::Vertex | Wire::Chat => answer::message_turns(body),
        Wire::Responses => responses::turns(body),
        Wire::Gemini => gemini::turns(body),
    };
    Continuation::of(&turns)
}

fn prefill_rejection(ask: &Ask, continuation: &Continuation) -> Option<Response<DemoBody>> {
    let Continuation::Prefill(partial) = continuation else {
        return None;
    };
    match ask.wire {
        Wire::Anthropic | Wire::Vertex => anthropic::prefill_rejection(ask.model, partial),
        Wire::Chat => openai_chat::prefill_rejection(ask.model),
        Wire::Gemini => gemini::prefill_rejection(ask.model),
        // No prefill in this API: a trailing assistant item is not continued.
        Wire::Responses => None,
    }
}

fn events(ask: &Ask, answer: &Answer, shape: Shape) -> Vec<Bytes> {
    match ask.wire {
        Wire::Anthropic => anthropic::events(answer, ask.model.name, anthropic::Ids::FIRST_PARTY),
        Wire::Vertex => anthropic::events(answer, ask.model.name, anthropic::Ids::VERTEX),
        Wire::Chat => openai_chat::events(ask, answer, shape),
        Wire::Responses => responses::events(ask, answer),
        Wire::Gemini => gemini::events(ask, answer),
    }
}

/// The answer as a non-streaming response body.
fn message(ask: &Ask, answer: &Answer, shape: Shape) -> Value {
    match ask.wire {
        Wire::Anthropic => anthropic::message(answer, ask.model.name, anthropic::Ids::FIRST_PARTY),
        Wire::Vertex => anthropic::message(answer, ask.model.name, anthropic::Ids::VERTEX),
        Wire::Chat => openai_chat::message(ask, answer, shape),
        Wire::Responses => responses::message(ask, answer),
        Wire::Gemini => gemini::message(ask, answer),
    }
}

/// The in-band error event that follows the `at` events sent.
fn in_band_error(ask: &Ask, kind: Option<&str>, at: usize) -> Bytes {
    match ask.wire {
        Wire::Anthropic | Wire::Vertex => anthropic::in_band_error(kind),
        Wire::Chat => openai_chat::in_band_error(ask, kind, at),
        Wire::Responses => responses::in_band_error(kind, at),
        Wire::Gemini => gemini::in_band_error(kind),
    }
}

/// An error response as the provider would send it.
fn error(wire: Wire, status: u16, kind: Option<&str>, message: &str) -> Response<DemoBody> {
    match wire {
        Wire::Anthropic | Wire::Vertex => anthropic::error(status, kind, message),
        Wire::Chat | Wire::Responses => openai_chat::error(status, kind, message),
        Wire::Gemini => gemini::error(status, message),
    }
}

fn not_found(wire: Wire, name: &str, path: &str) -> Response<DemoBody> {
    match wire {
        Wire::Anthropic => error(
            wire,
            404,
            Some("not_found_error"),
            &format!("model: {name}"),
        ),
        Wire::Vertex => vertex::not_found(path),
        Wire::Gemini => gemini::not_found(name),
        Wire::Chat | Wire::Responses => error(
            wire,
            404,
            Some("not_found_error"),
            &format!("model: {name}"),
        ),
    }
}

fn with_status(mut response: Response<DemoBody>, status: u16) -> Response<DemoBody> {
    *response.status_mut() = StatusCode::from_u16(status).expect("an error status");
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
    json_text_response(body.to_string())
}

fn json_text_response(body: String) -> Response<DemoBody> {
    let mut response = Response::new(DemoBody::full(Bytes::from(body)));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
