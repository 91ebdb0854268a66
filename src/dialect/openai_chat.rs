//! OpenAI Chat Completions (`POST /v1/chat/completions` with `"stream": true`) and the many
//! servers that speak it (vLLM, DeepSeek, Mistral, OpenRouter...).
//!
//! Stream shape: data-only events, each a `chat.completion.chunk`; the first delta carries
//! `role`; tool calls arrive as deltas keyed by `index`; one chunk carries `finish_reason`;
//! with `stream_options.include_usage` a last chunk has `choices: []` and `usage`; then
//! `data: [DONE]`. An in-band failure is a chunk with an `error` object.
//!
//! What the client gets, and why:
//! * Text streams live.
//! * Tool calls are held from their first delta to `finish_reason`, then sent compacted (one
//!   chunk per call, complete arguments): @ai-sdk/openai turns every call it has seen into a
//!   real call at stream end, and a failure between parallel calls would otherwise leave the
//!   client with a call the fallback repeats.
//! * After a seam: `id`, `created` and `model` stay those the client saw first, `role` is not
//!   sent again, tool-call indices stay dense, exactly one `finish_reason`, usage (summed over
//!   attempts) last, one `[DONE]`.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::{
    sse_event, Continuation, ErrorKind, Limits, Relay, SeamText, Spec, Step, StreamFailure,
};
use crate::error::FailureClass;
use crate::json::{string_literal, unescape_into, write_str, First, RequestIndex, Splice};
use crate::observe::Usage;
use crate::outbox::Outbox;
use crate::sse::{Event, Fields};
use crate::strategy::{Prefill, RewriteError, Strategy};
use crate::transcript::Transcript;
use crate::untrusted::escaped;

#[derive(Debug)]
pub(crate) struct OpenAiChat;

impl Spec for OpenAiChat {
    fn name(&self) -> &'static str {
        "openai-chat"
    }

    fn handles(&self, path: &str) -> bool {
        path.trim_end_matches('/').ends_with("/chat/completions")
    }

    fn relay(&self, limits: &Limits) -> Box<dyn Relay> {
        Box::new(OpenAiRelay::new(*limits))
    }

    fn error_body(&self, kind: &ErrorKind, message: &str) -> Bytes {
        Bytes::from(to_vec(&error_value(kind, message)))
    }

    fn prefill_allowed(&self, _index: &RequestIndex) -> bool {
        true
    }

    fn rewrite(
        &self,
        body: &[u8],
        index: &RequestIndex,
        target: &str,
        strategy: &Strategy,
        continuation: &Continuation<'_>,
    ) -> Result<Bytes, RewriteError> {
        rewrite(body, index, target, strategy, continuation)
    }
}

fn error_value(kind: &ErrorKind, message: &str) -> Value {
    let (kind, code): (&str, Value) = match kind {
        ErrorKind::TooLarge => ("invalid_request_error", json!("request_too_large")),
        ErrorKind::BadRequest => ("invalid_request_error", Value::Null),
        ErrorKind::Overloaded => ("server_error", json!("overloaded")),
        ErrorKind::RateLimited => ("rate_limit_error", json!("rate_limit_exceeded")),
        ErrorKind::Timeout => ("server_error", json!("timeout")),
        ErrorKind::Upstream => ("server_error", Value::Null),
        ErrorKind::Named(name) => (name, Value::Null),
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a Value always serializes")
}

// ---- events ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    created: Option<&'a RawValue>,
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<First<Choice<'a>>>,
    /// `Some("null")` when the key is present with null: include_usage is on.
    #[serde(borrow, default, deserialize_with = "present")]
    usage: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(borrow)]
    role: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    index: u32,
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

/// The counts of a `usage` object.
#[derive(Deserialize)]
struct Counts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct InBandError<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<&'a RawValue>,
}

// ---- relay -------------------------------------------------------------------------------

#[derive(Debug)]
struct OpenAiRelay {
    transcript: Transcript,
    limits: Limits,
    data: Vec<u8>,
    text: String,

    // What the client has.
    /// `id`, `created`, `model` of the first chunk the client got, as JSON.
    envelope: Option<[String; 3]>,
    role_sent: bool,
    tools_sent: u32,
    finish_sent: bool,
    usage_sent: bool,
    /// Chunks carry a `usage` key: the client asked for a usage chunk.
    usage_expected: bool,
    done: bool,
    passthrough: bool,

    /// Tool calls held until `finish_reason`.
    held: Vec<HeldCall>,
    held_bytes: usize,
    /// The held chunks carried `role` the client has not had yet.
    held_role: bool,

    attempt: Attempt,
}

#[derive(Debug, Default)]
struct Attempt {
    /// The client saw nothing before this attempt: its chunks go out as they come.
    verbatim: bool,
    seam: Option<SeamText>,
    spent: u32,
    usage_base: u32,
    /// The envelope of this attempt's chunks, for held calls when the client has none.
    envelope: Option<[String; 3]>,
    /// What this attempt's upstream reported.
    usage: Usage,
}

#[derive(Debug, Default)]
struct HeldCall {
    upstream: u32,
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

impl OpenAiRelay {
    fn new(limits: Limits) -> Self {
        OpenAiRelay {
            transcript: Transcript::new(limits.transcript),
            limits,
            data: Vec::new(),
            text: String::new(),
            envelope: None,
            role_sent: false,
            tools_sent: 0,
            finish_sent: false,
            usage_sent: false,
            usage_expected: false,
            done: false,
            passthrough: false,
            held: Vec::new(),
            held_bytes: 0,
            held_role: false,
            attempt: Attempt {
                verbatim: true,
                ..Attempt::default()
            },
        }
    }

    fn on_chunk(&mut self, ev: &Event<'_>, data: &[u8], out: &mut Outbox) -> Step {
        if data.trim_ascii() == b"[DONE]" {
            self.flush_held(out);
            if self.attempt.verbatim {
                out.forward(ev);
            } else {
                out.push(done_event());
            }
            self.done = true;
            return Step::Done;
        }
        // Nearly every chunk is one piece of text: once the attempt's first chunk has been
        // read in full (its envelope, whether usage comes), read that shape without serde.
        if self.attempt.verbatim && self.attempt.envelope.is_some() && self.held.is_empty() {
            if let Some(literal) = fast_content_chunk(data) {
                out.forward(ev);
                if literal.len() > 2 {
                    self.attempt.spent += 1;
                    self.transcript.add_kept_token();
                }
                let ok = match self.transcript.text_mut() {
                    Some(t) => unescape_into(literal, t),
                    None => true,
                };
                self.transcript.check_limit();
                if !ok {
                    return malformed();
                }
                self.after_send(false, false);
                return Step::Continue;
            }
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            return Step::Fail(StreamFailure::new(
                FailureClass::Malformed,
                "unreadable chunk in the stream",
            ));
        };
        if let Some(error) = chunk.error.filter(|e| e.get() != "null") {
            return self.on_error(ev, error, out);
        }
        if let Some(usage) = chunk.usage {
            self.usage_expected = true;
            if let Ok(Some(counts)) = serde_json::from_str::<Option<Counts>>(usage.get()) {
                self.attempt.usage.input_tokens = counts.prompt_tokens;
                self.attempt.usage.output_tokens = counts.completion_tokens;
            }
        }
        if self.attempt.envelope.is_none() {
            if let (Some(id), Some(created), Some(model)) = (chunk.id, chunk.created, chunk.model) {
                self.attempt.usage.response_model =
                    serde_json::from_str::<Cow<'_, str>>(model.get())
                        .ok()
                        .map(|m| m.as_ref().into());
                self.attempt.envelope = Some([
                    id.get().to_owned(),
                    created.get().to_owned(),
                    model.get().to_owned(),
                ]);
            }
        }
        let choice = chunk.choices.and_then(|c| c.0);
        let Some(choice) = choice else {
            // No choice: the usage chunk, or a chunk of metadata.
            let has_usage = chunk.usage.is_some_and(|u| u.get() != "null");
            self.send(ev, data, out, None);
            if has_usage {
                self.usage_sent = true;
            }
            return Step::Continue;
        };
        let delta = choice.delta;
        let tool_calls = delta
            .as_ref()
            .and_then(|d| d.tool_calls)
            .filter(|t| t.get() != "null");
        let finish = choice.finish_reason.is_some();
        if tool_calls.is_some() {
            return self.hold(delta.as_ref(), tool_calls, finish, data, out);
        }
        let content = delta
            .as_ref()
            .and_then(|d| d.content)
            .filter(|c| c.get() != "null");
        if !self.held.is_empty() && !finish {
            if content.is_some_and(|c| c.get().len() > 2) {
                // Text after tool calls: the calls are complete, send them first.
                self.flush_held(out);
            } else {
                return Step::Continue;
            }
        }
        if let Some(content) = content {
            if content.get().len() > 2 {
                self.attempt.spent += 1;
                self.transcript.add_kept_token();
            }
        }
        let role = delta.as_ref().is_some_and(|d| d.role.is_some());
        if finish {
            self.flush_held(out);
        }
        let seam_active = self.attempt.seam.as_ref().is_some_and(|s| s.active());
        if self.attempt.verbatim && !seam_active {
            out.forward(ev);
            if let Some(content) = content {
                let ok = match self.transcript.text_mut() {
                    Some(t) => unescape_into(content.get(), t),
                    None => true,
                };
                self.transcript.check_limit();
                if !ok {
                    return malformed();
                }
            }
            self.after_send(role, finish);
        } else {
            let text = match content {
                Some(content) => {
                    self.text.clear();
                    if !unescape_into(content.get(), &mut self.text) {
                        return malformed();
                    }
                    let mut send = String::new();
                    match &mut self.attempt.seam {
                        Some(seam) => seam.filter(&self.text, &mut send),
                        None => send.push_str(&self.text),
                    }
                    self.append_text(&send);
                    Some(send)
                }
                None => None,
            };
            if text.as_deref() == Some("") && !finish && !role {
                return Step::Continue;
            }
            self.send(ev, data, out, text.as_deref());
            self.after_send(role, finish);
        }
        Step::Continue
    }

    fn after_send(&mut self, role: bool, finish: bool) {
        if role {
            self.role_sent = true;
        }
        if finish {
            self.finish_sent = true;
        }
        if self.envelope.is_none() {
            self.envelope = self.attempt.envelope.clone();
        }
        self.transcript.mark_started();
    }

    fn append_text(&mut self, text: &str) {
        if let Some(t) = self.transcript.text_mut() {
            t.push_str(text);
        }
        self.transcript.check_limit();
    }

    /// Sends a chunk: as it came while the client saw nothing else, otherwise rewritten to
    /// fit the client's stream (its envelope, no second role, its usage, `content` if given).
    fn send(&mut self, ev: &Event<'_>, data: &[u8], out: &mut Outbox, content: Option<&str>) {
        if self.attempt.verbatim && content.is_none() && self.attempt.usage_base == 0 {
            out.forward(ev);
            if self.envelope.is_none() {
                self.envelope = self.attempt.envelope.clone();
            }
            return;
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        self.fit(&mut v, content);
        out.push(sse_event(None, &to_vec(&v)));
        if self.envelope.is_none() {
            self.envelope = self.attempt.envelope.clone();
        }
    }

    fn fit(&self, v: &mut Value, content: Option<&str>) {
        let Some(obj) = v.as_object_mut() else {
            return;
        };
        if let Some([id, created, model]) = &self.envelope {
            for (key, raw) in [("id", id), ("created", created), ("model", model)] {
                if let Ok(val) = serde_json::from_str::<Value>(raw) {
                    obj.insert(key.into(), val);
                }
            }
        }
        if self.finish_sent {
            // Some servers repeat finish_reason; clients count on exactly one.
            if let Some(finish) = obj
                .get_mut("choices")
                .and_then(|c| c.get_mut(0))
                .and_then(|c| c.get_mut("finish_reason"))
            {
                *finish = Value::Null;
            }
        }
        if let Some(delta) = obj
            .get_mut("choices")
            .and_then(|c| c.get_mut(0))
            .and_then(|c| c.get_mut("delta"))
            .and_then(|d| d.as_object_mut())
        {
            if self.role_sent {
                delta.remove("role");
            }
            if let Some(text) = content {
                delta.insert("content".into(), Value::from(text));
            }
        }
        if self.attempt.usage_base > 0 {
            if let Some(usage) = obj.get_mut("usage").and_then(|u| u.as_object_mut()) {
                let base = u64::from(self.attempt.usage_base);
                for key in ["completion_tokens", "total_tokens"] {
                    if let Some(n) = usage.get_mut(key) {
                        *n = Value::from(n.as_u64().unwrap_or(0) + base);
                    }
                }
            }
        }
    }

    fn hold(
        &mut self,
        delta: Option<&ChunkDelta<'_>>,
        tool_calls: Option<&RawValue>,
        finish: bool,
        data: &[u8],
        out: &mut Outbox,
    ) -> Step {
        if delta.is_some_and(|d| d.role.is_some()) && !self.role_sent {
            self.held_role = true;
        }
        if let Some(raw) = tool_calls {
            let Ok(calls) = serde_json::from_str::<Vec<ToolCallDelta>>(raw.get()) else {
                return malformed();
            };
            for call in calls {
                let slot = match self.held.iter_mut().position(|h| h.upstream == call.index) {
                    Some(i) => &mut self.held[i],
                    None => {
                        self.held.push(HeldCall {
                            upstream: call.index,
                            ..HeldCall::default()
                        });
                        self.held.last_mut().expect("just pushed")
                    }
                };
                if !call.id.as_deref().unwrap_or("").is_empty() {
                    slot.id = call.id;
                }
                if call.kind.is_some() {
                    slot.kind = call.kind;
                }
                if let Some(f) = call.function {
                    if !f.name.as_deref().unwrap_or("").is_empty() {
                        slot.name = f.name;
                    }
                    if let Some(args) = f.arguments {
                        if !args.is_empty() {
                            self.attempt.spent += 1;
                        }
                        self.held_bytes += args.len();
                        slot.arguments.push_str(&args);
                    }
                }
            }
        }
        if self.held_bytes > self.limits.held {
            return Step::Fail(StreamFailure::new(
                FailureClass::Malformed,
                format!(
                    "tool call arguments exceed the hold limit of {} bytes",
                    self.limits.held
                ),
            ));
        }
        if finish {
            self.flush_held(out);
            // The finish chunk itself, without the tool-call delta it may also carry.
            let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
                return malformed();
            };
            if let Some(delta) = v
                .pointer_mut("/choices/0/delta")
                .and_then(|d| d.as_object_mut())
            {
                delta.remove("tool_calls");
                delta.remove("role");
            }
            self.fit(&mut v, None);
            out.push(sse_event(None, &to_vec(&v)));
            self.after_send(false, true);
        }
        Step::Continue
    }

    /// Sends every held tool call, one compact chunk each.
    fn flush_held(&mut self, out: &mut Outbox) {
        if self.held.is_empty() {
            return;
        }
        let envelope = self
            .envelope
            .clone()
            .or_else(|| self.attempt.envelope.clone())
            .unwrap_or_else(|| ["\"\"".into(), "0".into(), "\"\"".into()]);
        for call in std::mem::take(&mut self.held) {
            let index = self.tools_sent;
            self.tools_sent += 1;
            let mut delta = Map::new();
            if self.held_role && !self.role_sent {
                delta.insert("role".into(), json!("assistant"));
                delta.insert("content".into(), Value::Null);
                self.role_sent = true;
            }
            let mut function = Map::new();
            if let Some(name) = call.name {
                function.insert("name".into(), Value::from(name));
            }
            function.insert("arguments".into(), Value::from(call.arguments));
            let mut tool = Map::new();
            tool.insert("index".into(), Value::from(index));
            if let Some(id) = call.id {
                tool.insert("id".into(), Value::from(id));
            }
            tool.insert(
                "type".into(),
                Value::from(call.kind.unwrap_or_else(|| "function".into())),
            );
            tool.insert("function".into(), Value::Object(function));
            delta.insert("tool_calls".into(), json!([Value::Object(tool)]));
            let mut json = Vec::with_capacity(256);
            json.extend_from_slice(b"{\"id\":");
            json.extend_from_slice(envelope[0].as_bytes());
            json.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            json.extend_from_slice(envelope[1].as_bytes());
            json.extend_from_slice(b",\"model\":");
            json.extend_from_slice(envelope[2].as_bytes());
            json.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
            json.extend_from_slice(&to_vec(&Value::Object(delta)));
            json.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":null}]}");
            out.push(sse_event(None, &json));
            self.transcript.add_tool_call();
        }
        if self.envelope.is_none() {
            self.envelope = Some(envelope);
        }
        self.held_bytes = 0;
        self.held_role = false;
        self.transcript.mark_started();
    }

    fn on_error(&mut self, ev: &Event<'_>, raw: &RawValue, out: &mut Outbox) -> Step {
        let err = serde_json::from_str::<InBandError<'_>>(raw.get()).ok();
        // Upstream words, bound for logs and the client: control characters escaped here.
        let message = escaped(
            err.as_ref()
                .and_then(|e| e.message.as_deref())
                .unwrap_or("error in stream"),
        );
        let kind = err.as_ref().and_then(|e| e.kind.as_deref()).map(escaped);
        let code = err
            .as_ref()
            .and_then(|e| e.code)
            .map(|c| escaped(c.get().trim_matches('"')));
        if is_client_error(kind.as_deref(), code.as_deref()) {
            self.flush_held(out);
            out.forward_error(ev);
            self.passthrough = true;
            return Step::Continue;
        }
        let named = kind.clone().or(code.clone());
        Step::Fail(StreamFailure {
            class: FailureClass::InBand,
            detail: match &named {
                Some(n) => format!("{n}: {message}"),
                None => message,
            },
            error_type: kind.map(Into::into),
        })
    }
}

/// In-band errors that a retry elsewhere cannot fix.
fn is_client_error(kind: Option<&str>, code: Option<&str>) -> bool {
    if matches!(
        kind,
        Some(
            "invalid_request_error"
                | "authentication_error"
                | "permission_error"
                | "not_found_error"
        )
    ) {
        return true;
    }
    match code {
        Some(code) => match code.parse::<u16>() {
            Ok(n) => (400..500).contains(&n) && n != 408 && n != 429,
            Err(_) => matches!(
                code,
                "context_length_exceeded"
                    | "content_filter"
                    | "content_policy_violation"
                    | "invalid_api_key"
                    | "invalid_request_error"
            ),
        },
        None => false,
    }
}

/// The content (a JSON string literal, quotes included) of a chunk that is nothing but one
/// piece of text: its only delta is `{"content":"…"}`, with `"finish_reason":null`, and there is
/// no `error` and no second choice. `None` for anything else, which serde then reads.
///
/// Keys are found by their bytes, quotes included: inside a JSON string every quote is
/// escaped, so a key pattern never matches text; at worst a value spelled like a key sends the
/// chunk to serde. What this does not check (the rest of the chunk's syntax) is relayed as the
/// upstream sent it, as it would be anyway.
fn fast_content_chunk(data: &[u8]) -> Option<&str> {
    use memchr::memmem;
    const DELTA: &[u8] = br#""delta":{"content":""#;
    if data.first() != Some(&b'{')
        || data.trim_ascii_end().last() != Some(&b'}')
        || std::str::from_utf8(data).is_err()
    {
        return None;
    }
    let at = memmem::find(data, DELTA)?;
    let rest = &data[at + DELTA.len() - 1..];
    let mut end = 1;
    loop {
        end += memchr::memchr2(b'"', b'\\', &rest[end..])?;
        if rest[end] == b'"' {
            break;
        }
        end += 2; // an escape: skip the backslash and the character it escapes
    }
    if rest.get(end + 1) != Some(&b'}') {
        return None;
    }
    let one_delta = memmem::find(&data[at + 1..], br#""delta":"#).is_none();
    let plain = memmem::find(data, br#""finish_reason":null"#).is_some()
        && memmem::find(data, br#""error""#).is_none();
    if !(one_delta && plain) {
        return None;
    }
    std::str::from_utf8(&rest[..=end]).ok()
}

fn malformed() -> Step {
    Step::Fail(StreamFailure::new(
        FailureClass::Malformed,
        "unreadable chunk in the stream",
    ))
}

fn done_event() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

impl Relay for OpenAiRelay {
    fn on_event(&mut self, ev: &Event<'_>, fields: &Fields<'_>, out: &mut Outbox) -> Step {
        if self.passthrough || self.done {
            out.forward(ev);
            return Step::Continue;
        }
        let mut data = std::mem::take(&mut self.data);
        let step = match fields.data(ev.raw, &mut data) {
            Some(payload) if !payload.is_empty() => self.on_chunk(ev, payload, out),
            _ => {
                out.forward(ev);
                Step::Continue
            }
        };
        self.data = data;
        step
    }

    fn on_end(&mut self, _out: &mut Outbox) -> Step {
        if self.done || self.passthrough {
            Step::Done
        } else {
            Step::Fail(StreamFailure::new(
                FailureClass::Truncated,
                "the stream ended before data: [DONE]",
            ))
        }
    }

    fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    fn usage(&self) -> Usage {
        self.attempt.usage.clone()
    }

    fn finish(&mut self, out: &mut Outbox) -> bool {
        if self.done || self.passthrough {
            return true;
        }
        if !self.finish_sent {
            return false;
        }
        if self.usage_expected && !self.usage_sent {
            // The usage chunk was lost with the connection: report what is known (a lower
            // bound of the completion tokens) rather than none at all.
            let tokens = self.transcript.kept_tokens() + self.transcript.spent_tokens();
            let envelope = self
                .envelope
                .clone()
                .unwrap_or_else(|| ["\"\"".into(), "0".into(), "\"\"".into()]);
            let json = format!(
                r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"choices":[],"usage":{{"prompt_tokens":0,"completion_tokens":{tokens},"total_tokens":{tokens}}}}}"#,
                envelope[0], envelope[1], envelope[2]
            );
            out.push(sse_event(None, json.as_bytes()));
            self.usage_sent = true;
        }
        out.push(done_event());
        self.done = true;
        true
    }

    fn abandon(&mut self) {
        let spent = self.attempt.spent;
        self.transcript.add_spent(spent);
        self.held.clear();
        self.held_bytes = 0;
        self.held_role = false;
    }

    // Every strategy continues the same way here: nothing is stripped from a prefill, so only
    // an echo of the answer so far can need dropping at the seam.
    fn splice(&mut self, _strategy: &Strategy) {
        let text = self.transcript.text();
        let seam = (!text.is_empty()).then(|| SeamText::new(text, ""));
        self.attempt = Attempt {
            verbatim: !self.transcript.started(),
            seam,
            spent: 0,
            usage_base: self.transcript.spent_tokens(),
            envelope: None,
            usage: Usage::default(),
        };
    }

    fn give_up(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox) {
        out.push(sse_event(None, &to_vec(&error_value(kind, message))));
        out.push(done_event());
        self.done = true;
    }
}

// ---- requests ----------------------------------------------------------------------------

fn rewrite(
    body: &[u8],
    index: &RequestIndex,
    target: &str,
    strategy: &Strategy,
    cont: &Continuation<'_>,
) -> Result<Bytes, RewriteError> {
    if let Some(why) = &index.unusable {
        return Err(RewriteError::new(format!(
            "the request body is not a Chat Completions request: {why}"
        )));
    }
    let model = index
        .model
        .clone()
        .ok_or_else(|| RewriteError::new("the request has no `model`"))?;
    if !index.has_messages {
        return Err(RewriteError::new("the request has no `messages` array"));
    }
    let last = index
        .last_message
        .clone()
        .ok_or_else(|| RewriteError::new("the request's `messages` array is empty"))?;

    let mut splice = Splice::new(body);
    splice.replace(model, string_literal(target).into_bytes());

    let partial = cont.text;
    if partial.is_empty() || matches!(strategy, Strategy::Restart) {
        return Ok(splice.finish());
    }
    let prefix_flag = match strategy {
        Strategy::Prefill(Prefill::Prefix) => true,
        Strategy::Prefill(Prefill::None) => {
            return Err(RewriteError::new("prefill `none` is not a way to continue"))
        }
        _ => false,
    };
    let role = index
        .last_role
        .as_deref()
        .ok_or_else(|| RewriteError::new("the last message has no `role`"))?;
    let mut added = Vec::new();
    if role == "assistant" {
        let mut merged: Value = serde_json::from_slice(&body[last.clone()])
            .map_err(|_| RewriteError::new("the last message is not an object"))?;
        let content = merged
            .get_mut("content")
            .ok_or_else(|| RewriteError::new("the last message has no `content`"))?;
        match content {
            Value::String(s) => s.push_str(partial),
            Value::Null => *content = Value::from(partial),
            _ => {
                return Err(RewriteError::new(
                    "the last message's `content` is not text",
                ))
            }
        }
        if prefix_flag {
            merged["prefix"] = Value::Bool(true);
        }
        added.extend_from_slice(&to_vec(&merged));
    } else {
        added.extend_from_slice(br#"{"role":"assistant","content":"#);
        write_str(&mut added, partial);
        if prefix_flag {
            added.extend_from_slice(br#","prefix":true"#);
        }
        added.push(b'}');
    }
    if let Strategy::Instruction(text) = strategy {
        added.extend_from_slice(br#",{"role":"user","content":"#);
        write_str(&mut added, text);
        added.push(b'}');
    }
    if role == "assistant" {
        splice.replace(last, added);
    } else {
        let mut with = vec![b','];
        with.extend_from_slice(&added);
        splice.insert(last.end, with);
    }
    if matches!(strategy, Strategy::Prefill(Prefill::ContinueFinalMessage)) {
        for (key, at, value) in [
            (
                "continue_final_message",
                &index.continue_final_message,
                &b"true"[..],
            ),
            (
                "add_generation_prompt",
                &index.add_generation_prompt,
                &b"false"[..],
            ),
        ] {
            match at {
                Some(at) => splice.replace(at.clone(), value.to_vec()),
                None => splice.add_key(key, value),
            }
        }
    }
    for at in [&index.max_completion_tokens, &index.max_tokens]
        .into_iter()
        .flatten()
    {
        let max = RequestIndex::limit(body, at)
            .ok_or_else(|| RewriteError::new("the token limit is not a number"))?;
        let reduced = max.saturating_sub(u64::from(cont.kept_tokens)).max(1);
        splice.replace(at.clone(), reduced.to_string().into_bytes());
    }
    Ok(splice.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(
        body: &[u8],
        target: &str,
        strategy: &Strategy,
        cont: &Continuation<'_>,
    ) -> Result<Bytes, RewriteError> {
        rewrite(body, &RequestIndex::read(body), target, strategy, cont)
    }

    fn cont(text: &str, kept: u32) -> Continuation<'_> {
        Continuation {
            text,
            kept_tokens: kept,
        }
    }

    const BODY: &[u8] = br#"{"model":"a","max_completion_tokens":50,"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"stream":true}"#;

    #[test]
    fn prefix_prefill_marks_the_assistant_message() {
        let out = rw(
            BODY,
            "b",
            &Strategy::Prefill(Prefill::Prefix),
            &cont("Hello ", 3),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["max_completion_tokens"], 47);
        assert_eq!(
            v["messages"][2],
            json!({"role":"assistant","content":"Hello ","prefix":true})
        );
    }

    #[test]
    fn vllm_prefill_sets_continue_final_message() {
        let out = rw(
            BODY,
            "b",
            &Strategy::Prefill(Prefill::ContinueFinalMessage),
            &cont("Hi", 1),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"][2], json!({"role":"assistant","content":"Hi"}));
        assert_eq!(v["continue_final_message"], true);
        assert_eq!(v["add_generation_prompt"], false);
    }

    #[test]
    fn instruction_follows_the_partial_answer_with_a_user_turn() {
        let out = rw(
            BODY,
            "b",
            &Strategy::Instruction("go on".into()),
            &cont("Hi", 1),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"][2], json!({"role":"assistant","content":"Hi"}));
        assert_eq!(v["messages"][3], json!({"role":"user","content":"go on"}));
        assert!(v.get("continue_final_message").is_none());
    }

    #[test]
    fn the_fast_content_chunk_reads_only_a_lone_piece_of_text() {
        let plain = br#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" \"hi\""},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        assert_eq!(fast_content_chunk(plain), Some(r#"" \"hi\"""#));
        for other in [
            &br#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#[..],
            br#"{"choices":[{"index":0,"delta":{"content":"a","tool_calls":[]},"finish_reason":null}]}"#,
            br#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            br#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#,
            br#"{"error":{"message":"x"},"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#,
            br#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]"#,
        ] {
            assert_eq!(fast_content_chunk(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn client_errors_in_band_are_recognized_by_type_or_code() {
        assert!(is_client_error(None, Some("400")));
        assert!(is_client_error(Some("invalid_request_error"), None));
        assert!(is_client_error(None, Some("context_length_exceeded")));
        assert!(!is_client_error(None, Some("429")));
        assert!(!is_client_error(Some("server_error"), None));
        assert!(!is_client_error(None, None));
    }
}
