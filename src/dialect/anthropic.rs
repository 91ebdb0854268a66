//! Anthropic Messages: `POST /v1/messages` with `"stream": true`.
//!
//! Stream shape: `message_start`, then content blocks (`content_block_start`, deltas,
//! `content_block_stop`) with dense indices, then one `message_delta` (stop reason, cumulative
//! usage) and `message_stop`; `ping` anywhere; `error` ends it.
//!
//! What the client gets, and why:
//! * Text streams live. The stop of a text block is held until something else must follow it,
//!   so that after a failure the continuation can go on in the same block.
//! * Every other block (`tool_use`, `thinking`, server tools...) is held until it is complete:
//!   clients turn a stopped `tool_use` into a call with whatever JSON arrived, and a thinking
//!   block is useless without its signature. Thinking goes out at its stop; tool blocks wait
//!   for the end of the message (or a following text block), because a failure between two
//!   parallel calls would otherwise leave the client with a call the fallback repeats. Held
//!   blocks are kept as their content and sent compacted (one delta), so memory follows the
//!   generated content, not the raw SSE.
//! * After a seam: one `message_start` (the first one the client saw), indices offset to stay
//!   dense, the first continuation text routed into the open text block, the fallback's own
//!   reasoning dropped once the client has content, usage summed over attempts.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{
    sse_event, Continuation, ErrorKind, Limits, Relay, SeamText, Spec, Step, StreamFailure,
};
use crate::error::FailureClass;
use crate::json::{string_literal, unescape_into, write_str, RequestIndex, Splice};
use crate::observe::Usage;
use crate::outbox::Outbox;
use crate::sse::{Event, Fields};
use crate::strategy::{Prefill, RewriteError, Strategy};
use crate::transcript::Transcript;
use crate::untrusted::escaped;

#[derive(Debug)]
pub(crate) struct AnthropicMessages;

impl Spec for AnthropicMessages {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn handles(&self, path: &str) -> bool {
        path.trim_end_matches('/').ends_with("/messages")
    }

    fn relay(&self, limits: &Limits) -> Box<dyn Relay> {
        Box::new(AnthropicRelay::new(*limits))
    }

    fn error_body(&self, kind: &ErrorKind, message: &str) -> Bytes {
        Bytes::from(error_json(kind, message))
    }

    fn prefill_allowed(&self, index: &RequestIndex) -> bool {
        thinking_budget(index).is_none()
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

fn error_type(kind: &ErrorKind) -> &str {
    match kind {
        ErrorKind::TooLarge => "request_too_large",
        ErrorKind::BadRequest => "invalid_request_error",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Timeout | ErrorKind::Upstream => "api_error",
        ErrorKind::Named(name) => name,
    }
}

fn error_json(kind: &ErrorKind, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "error",
        "error": { "type": error_type(kind), "message": message },
    }))
    .expect("json! values serialize")
}

/// In-band error types that a retry elsewhere cannot fix.
fn is_client_error(error_type: &str) -> bool {
    matches!(
        error_type,
        "invalid_request_error"
            | "authentication_error"
            | "permission_error"
            | "not_found_error"
            | "request_too_large"
    )
}

// ---- events ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct BlockStart<'a> {
    index: u32,
    #[serde(borrow)]
    content_block: TypeOnly<'a>,
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct BlockDelta<'a> {
    index: u32,
    #[serde(borrow)]
    delta: Delta<'a>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    partial_json: Option<&'a RawValue>,
    #[serde(borrow)]
    thinking: Option<&'a RawValue>,
    #[serde(borrow)]
    signature: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct IndexOnly {
    index: u32,
}

/// What `message_start` and `message_delta` say about usage and the model.
#[derive(Deserialize)]
struct UsageOf<'a> {
    #[serde(borrow)]
    message: Option<MessageOf<'a>>,
    usage: Option<Counts>,
}

#[derive(Deserialize)]
struct MessageOf<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    usage: Option<Counts>,
}

#[derive(Deserialize)]
struct Counts {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorEvent<'a> {
    #[serde(borrow)]
    error: ErrorBody<'a>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

// ---- relay -------------------------------------------------------------------------------

#[derive(Debug)]
struct AnthropicRelay {
    transcript: Transcript,
    limits: Limits,
    data: Vec<u8>,
    /// Reused while reading a delta's text.
    text: String,

    // What the client has.
    message_started: bool,
    next_index: u32,
    /// A text block the client has open.
    open_text: Option<u32>,
    /// The upstream stopped `open_text`; its stop is held.
    stop_held: bool,
    message_delta_sent: bool,
    done: bool,
    /// After a client error: the rest goes out as it comes.
    passthrough: bool,

    /// Complete tool blocks waiting for the end of the message or a text block.
    ready: Vec<Held>,
    held_bytes: usize,

    attempt: Attempt,
}

#[derive(Debug, Default)]
struct Attempt {
    /// The client saw nothing before this attempt: its events go out as they come.
    verbatim: bool,
    block: Option<Block>,
    /// The first text block of this attempt was routed into the client's open one.
    routed: bool,
    seam: Option<SeamText>,
    /// Non-empty deltas this attempt produced (a lower bound of its output tokens).
    spent: u32,
    /// Output tokens of earlier attempts, added to this attempt's reported usage.
    usage_base: u32,
    /// What this attempt's upstream reported.
    usage: Usage,
}

#[derive(Debug)]
enum Block {
    Text { upstream: u32, client: u32 },
    Held(Held),
    Dropped { upstream: u32 },
}

/// A non-text block kept until complete: its start event as it came, and its content.
#[derive(Debug)]
struct Held {
    upstream: u32,
    kind: String,
    start: Bytes,
    json: String,
    thinking: String,
    signature: Option<String>,
    /// Deltas of other types, as they came.
    other: Vec<Bytes>,
}

impl Held {
    fn is_thinking(&self) -> bool {
        self.kind == "thinking" || self.kind == "redacted_thinking"
    }

    fn size(&self) -> usize {
        self.start.len()
            + self.json.len()
            + self.thinking.len()
            + self.signature.as_ref().map_or(0, |s| s.len())
            + self.other.iter().map(|b| b.len()).sum::<usize>()
    }
}

impl AnthropicRelay {
    fn new(limits: Limits) -> Self {
        AnthropicRelay {
            transcript: Transcript::new(limits.transcript),
            limits,
            data: Vec::new(),
            text: String::new(),
            message_started: false,
            next_index: 0,
            open_text: None,
            stop_held: false,
            message_delta_sent: false,
            done: false,
            passthrough: false,
            ready: Vec::new(),
            held_bytes: 0,
            attempt: Attempt {
                verbatim: true,
                ..Attempt::default()
            },
        }
    }

    /// Before the client gets another block or the message end: close its open text block
    /// (unless `keep_open`) and release the tool blocks that were waiting.
    fn prelude(&mut self, keep_open: bool, out: &mut Outbox) {
        if !keep_open {
            self.close_text(out);
        }
        if !self.ready.is_empty() {
            self.close_text(out);
            for held in std::mem::take(&mut self.ready) {
                self.emit_held(held, out);
            }
            self.held_bytes = 0;
        }
    }

    fn close_text(&mut self, out: &mut Outbox) {
        if let Some(index) = self.open_text.take() {
            self.flush_seam(index, out);
            out.push(stop_event(index));
            self.stop_held = false;
        }
    }

    /// Send what the seam filter still holds into the client's block `index`.
    fn flush_seam(&mut self, index: u32, out: &mut Outbox) {
        if let Some(seam) = &mut self.attempt.seam {
            let mut rest = String::new();
            seam.flush(&mut rest);
            if !rest.is_empty() {
                out.push(text_delta_event(index, &rest));
                self.append_text(&rest);
            }
        }
    }

    fn append_text(&mut self, text: &str) {
        if let Some(t) = self.transcript.text_mut() {
            t.push_str(text);
        }
        self.transcript.check_limit();
    }

    fn emit_held(&mut self, held: Held, out: &mut Outbox) {
        let index = self.next_index;
        self.next_index += 1;
        if held.upstream == index {
            out.push(held.start.clone());
        } else {
            out.push(reindex(&held.start, "content_block_start", index));
        }
        if !held.json.is_empty() {
            out.push(delta_event(
                index,
                "input_json_delta",
                "partial_json",
                &held.json,
            ));
        }
        if !held.thinking.is_empty() {
            out.push(delta_event(
                index,
                "thinking_delta",
                "thinking",
                &held.thinking,
            ));
        }
        if let Some(sig) = &held.signature {
            out.push(delta_event(index, "signature_delta", "signature", sig));
        }
        for other in &held.other {
            out.push(reindex(other, "content_block_delta", index));
        }
        out.push(stop_event(index));
        if held.is_thinking() {
            self.transcript.mark_thinking();
        } else {
            self.transcript.add_tool_call();
        }
    }

    fn on_block_start(&mut self, ev: &Event<'_>, data: &[u8], out: &mut Outbox) -> Step {
        let Ok(start) = serde_json::from_slice::<BlockStart<'_>>(data) else {
            return malformed("content_block_start");
        };
        let kind = start.content_block.kind;
        if kind == "text" {
            if !self.attempt.routed && !self.attempt.verbatim && self.ready.is_empty() {
                if let Some(client) = self.open_text {
                    // The continuation goes on in the block the client has open.
                    self.attempt.routed = true;
                    self.stop_held = false;
                    self.prelude(true, out);
                    self.attempt.block = Some(Block::Text {
                        upstream: start.index,
                        client,
                    });
                    return Step::Continue;
                }
            }
            self.attempt.routed = true;
            self.prelude(false, out);
            let client = self.next_index;
            self.next_index += 1;
            if client == start.index {
                out.forward(ev);
            } else {
                out.push(reindex_bytes(ev.raw, "content_block_start", client));
            }
            self.open_text = Some(client);
            self.attempt.block = Some(Block::Text {
                upstream: start.index,
                client,
            });
            return Step::Continue;
        }
        let thinking = kind == "thinking" || kind == "redacted_thinking";
        if thinking && !self.attempt.verbatim && !self.transcript.is_empty() {
            // The client already has content; this attempt's own reasoning about how to
            // continue is not part of the answer.
            self.attempt.block = Some(Block::Dropped {
                upstream: start.index,
            });
            return Step::Continue;
        }
        self.attempt.block = Some(Block::Held(Held {
            upstream: start.index,
            kind: kind.into_owned(),
            start: ev.to_bytes(),
            json: String::new(),
            thinking: String::new(),
            signature: None,
            other: Vec::new(),
        }));
        Step::Continue
    }

    fn on_block_delta(&mut self, ev: &Event<'_>, data: &[u8], out: &mut Outbox) -> Step {
        // Nearly every event of a stream is a text delta in its canonical shape: read it
        // without serde (which costs most of what the relay adds per event).
        if let Some((index, literal)) = fast_text_delta(data) {
            if let Some(Block::Text { upstream, client }) = &self.attempt.block {
                if *upstream == index {
                    let client = *client;
                    return self.on_text_delta(index, client, literal, ev, out);
                }
            }
        }
        let Ok(delta) = serde_json::from_slice::<BlockDelta<'_>>(data) else {
            return malformed("content_block_delta");
        };
        if let Some(Block::Text { upstream, client }) = &self.attempt.block {
            if *upstream == delta.index {
                let client = *client;
                return match delta.delta.text {
                    Some(literal) => {
                        self.on_text_delta(delta.index, client, literal.get(), ev, out)
                    }
                    None => {
                        // citations_delta and the like: pass on.
                        if client == delta.index {
                            out.forward(ev);
                        } else {
                            out.push(reindex_bytes(ev.raw, "content_block_delta", client));
                        }
                        Step::Continue
                    }
                };
            }
        }
        let generated = delta
            .delta
            .partial_json
            .or(delta.delta.thinking)
            .or(delta.delta.text);
        if generated.is_some_and(|t| t.get().len() > 2) {
            self.attempt.spent += 1;
        }
        match &mut self.attempt.block {
            Some(Block::Held(held)) if held.upstream == delta.index => {
                let ok = match delta.delta.kind.as_ref() {
                    "input_json_delta" => delta
                        .delta
                        .partial_json
                        .is_some_and(|j| unescape_into(j.get(), &mut held.json)),
                    "thinking_delta" => delta
                        .delta
                        .thinking
                        .is_some_and(|t| unescape_into(t.get(), &mut held.thinking)),
                    "signature_delta" => delta.delta.signature.is_some_and(|s| {
                        let mut sig = String::new();
                        let ok = unescape_into(s.get(), &mut sig);
                        held.signature = Some(sig);
                        ok
                    }),
                    _ => {
                        held.other.push(ev.to_bytes());
                        true
                    }
                };
                if !ok {
                    return malformed("content_block_delta");
                }
                self.check_held()
            }
            Some(Block::Dropped { upstream }) if *upstream == delta.index => Step::Continue,
            _ => malformed("content_block_delta for a block that is not open"),
        }
    }

    /// Text for the client's block `client`, from upstream block `index`; `literal` is the
    /// JSON string as it came, quotes included.
    fn on_text_delta(
        &mut self,
        index: u32,
        client: u32,
        literal: &str,
        ev: &Event<'_>,
        out: &mut Outbox,
    ) -> Step {
        if literal.len() > 2 {
            self.attempt.spent += 1;
            self.transcript.add_kept_token();
        }
        let seam_active = self.attempt.seam.as_ref().is_some_and(|s| s.active());
        if !seam_active && client == index {
            out.forward(ev);
            let ok = match self.transcript.text_mut() {
                Some(t) => unescape_into(literal, t),
                None => true,
            };
            self.transcript.check_limit();
            return if ok {
                Step::Continue
            } else {
                malformed("text_delta")
            };
        }
        self.text.clear();
        if !unescape_into(literal, &mut self.text) {
            return malformed("text_delta");
        }
        let mut send = String::new();
        match &mut self.attempt.seam {
            Some(seam) => seam.filter(&self.text, &mut send),
            None => send.push_str(&self.text),
        }
        if !send.is_empty() {
            out.push(text_delta_event(client, &send));
            self.append_text(&send);
        }
        Step::Continue
    }

    fn check_held(&self) -> Step {
        let current = match &self.attempt.block {
            Some(Block::Held(h)) => h.size(),
            _ => 0,
        };
        if self.held_bytes + current > self.limits.held {
            return Step::Fail(StreamFailure::new(
                FailureClass::Malformed,
                format!(
                    "a tool call or reasoning block exceeds the hold limit of {} bytes",
                    self.limits.held
                ),
            ));
        }
        Step::Continue
    }

    fn on_block_stop(&mut self, data: &[u8], out: &mut Outbox) -> Step {
        let Ok(stop) = serde_json::from_slice::<IndexOnly>(data) else {
            return malformed("content_block_stop");
        };
        match self.attempt.block.take() {
            Some(Block::Text { upstream, .. }) if upstream == stop.index => {
                // Held until something else follows, so a continuation can still join it.
                self.stop_held = true;
                Step::Continue
            }
            Some(Block::Held(held)) if held.upstream == stop.index => {
                if held.is_thinking() {
                    self.prelude(false, out);
                    self.emit_held(held, out);
                } else {
                    self.held_bytes += held.size();
                    self.ready.push(held);
                }
                Step::Continue
            }
            Some(Block::Dropped { upstream }) if upstream == stop.index => Step::Continue,
            _ => malformed("content_block_stop for a block that is not open"),
        }
    }

    fn on_message_delta(&mut self, ev: &Event<'_>, data: &[u8], out: &mut Outbox) -> Step {
        self.prelude(false, out);
        if let Ok(UsageOf {
            usage: Some(counts),
            ..
        }) = serde_json::from_slice(data)
        {
            let usage = &mut self.attempt.usage;
            usage.output_tokens = counts.output_tokens.or(usage.output_tokens);
            usage.input_tokens = counts.input_tokens.or(usage.input_tokens);
        }
        if self.attempt.usage_base == 0 {
            out.forward(ev);
        } else {
            let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
                return malformed("message_delta");
            };
            if let Some(n) = v.pointer_mut("/usage/output_tokens") {
                let sum = n.as_u64().unwrap_or(0) + u64::from(self.attempt.usage_base);
                *n = Value::from(sum);
            }
            out.push(sse_event(Some("message_delta"), &to_vec(&v)));
        }
        self.message_delta_sent = true;
        Step::Continue
    }

    fn on_error(&mut self, ev: &Event<'_>, data: &[u8], out: &mut Outbox) -> Step {
        let parsed = serde_json::from_slice::<ErrorEvent<'_>>(data).ok();
        // Upstream words, bound for logs and the client: control characters escaped here.
        let kind = escaped(
            parsed
                .as_ref()
                .and_then(|e| e.error.kind.as_deref())
                .unwrap_or("error"),
        );
        let message = escaped(
            parsed
                .as_ref()
                .and_then(|e| e.error.message.as_deref())
                .unwrap_or(""),
        );
        if is_client_error(&kind) {
            // A retry elsewhere would fail alike: the client gets the upstream's own words.
            self.prelude(false, out);
            out.forward_error(ev);
            self.passthrough = true;
            return Step::Continue;
        }
        Step::Fail(StreamFailure {
            class: FailureClass::InBand,
            detail: if message.is_empty() {
                kind.clone()
            } else {
                format!("{kind}: {message}")
            },
            error_type: Some(kind.into()),
        })
    }
}

impl Relay for AnthropicRelay {
    fn on_event(&mut self, ev: &Event<'_>, fields: &Fields<'_>, out: &mut Outbox) -> Step {
        if self.passthrough || self.done {
            out.forward(ev);
            return Step::Continue;
        }
        let mut data = std::mem::take(&mut self.data);
        let step = match fields.data(ev.raw, &mut data) {
            None => {
                out.forward(ev);
                Step::Continue
            }
            Some(payload) => match fields.event {
                Some(name) => self.dispatch(name, ev, payload, out),
                // Clients drop data without an event line; upstreams that speak this dialect
                // never send one, so the stream is broken (a torn event glued to the next).
                None => malformed("nameless"),
            },
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
                "the stream ended before message_stop",
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
        if self.passthrough || !self.message_delta_sent || self.done {
            return self.done || self.passthrough;
        }
        out.push(sse_event(
            Some("message_stop"),
            br#"{"type":"message_stop"}"#,
        ));
        self.done = true;
        true
    }

    fn abandon(&mut self) {
        let spent = self.attempt.spent;
        self.transcript.add_spent(spent);
        self.attempt.block = None;
        self.ready.clear();
        self.held_bytes = 0;
    }

    fn splice(&mut self, strategy: &Strategy) {
        let text = self.transcript.text();
        let trimmed = text.trim_end();
        let seam = if text.is_empty() {
            None
        } else {
            let ws = match strategy {
                Strategy::Restart => "",
                _ => &text[trimmed.len()..],
            };
            Some(SeamText::new(trimmed, ws))
        };
        self.attempt = Attempt {
            verbatim: !self.message_started,
            block: None,
            routed: false,
            seam,
            spent: 0,
            usage_base: self.transcript.spent_tokens(),
            usage: Usage::default(),
        };
    }

    fn give_up(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox) {
        out.push(sse_event(Some("error"), &error_json(kind, message)));
        self.done = true;
    }
}

impl AnthropicRelay {
    fn dispatch(&mut self, name: &[u8], ev: &Event<'_>, data: &[u8], out: &mut Outbox) -> Step {
        match name {
            b"content_block_delta" => return self.on_block_delta(ev, data, out),
            b"content_block_start" => return self.on_block_start(ev, data, out),
            b"content_block_stop" => return self.on_block_stop(data, out),
            _ => {}
        }
        // The rest are few per stream: check each is what its event line says (a torn event
        // glued to the next would not be) before passing it on.
        let typed = serde_json::from_slice::<TypeOnly<'_>>(data);
        if !typed.is_ok_and(|t| t.kind.as_bytes() == name) {
            return malformed(&String::from_utf8_lossy(name));
        }
        match name {
            b"ping" => {
                out.forward(ev);
                Step::Continue
            }
            b"message_start" => {
                if let Ok(UsageOf {
                    message: Some(message),
                    ..
                }) = serde_json::from_slice(data)
                {
                    let usage = &mut self.attempt.usage;
                    usage.response_model = message.model.map(|m| m.as_ref().into());
                    // Its output count is a placeholder; message_delta has the real one.
                    usage.input_tokens = message.usage.and_then(|u| u.input_tokens);
                }
                if self.attempt.verbatim && !self.message_started {
                    out.forward(ev);
                    self.message_started = true;
                    self.transcript.mark_started();
                }
                Step::Continue
            }
            b"message_delta" => self.on_message_delta(ev, data, out),
            b"message_stop" => {
                self.prelude(false, out);
                out.forward(ev);
                self.done = true;
                Step::Done
            }
            b"error" => self.on_error(ev, data, out),
            _ => {
                out.forward(ev);
                Step::Continue
            }
        }
    }
}

/// The index and text (a JSON string literal, quotes included) of a delta in exactly the
/// shape the API sends text in, `{"type":"content_block_delta","index":N,"delta":
/// {"type":"text_delta","text":"…"}}`, whitespace allowed before the closing braces; `None`
/// for anything else, which serde then reads.
fn fast_text_delta(data: &[u8]) -> Option<(u32, &str)> {
    let rest = data.strip_prefix(br#"{"type":"content_block_delta","index":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let index = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(br#","delta":{"type":"text_delta","text":"#)?;
    if rest.first() != Some(&b'"') {
        return None;
    }
    let mut end = 1;
    loop {
        end += memchr::memchr2(b'"', b'\\', &rest[end..])?;
        if rest[end] == b'"' {
            break;
        }
        end += 2; // an escape: skip the backslash and the character it escapes
    }
    let tail = rest.get(end + 1..)?.trim_ascii_start().strip_prefix(b"}")?;
    let tail = tail.trim_ascii_start().strip_prefix(b"}")?;
    if !tail.trim_ascii().is_empty() {
        return None;
    }
    let literal = std::str::from_utf8(&rest[..=end]).ok()?;
    Some((index, literal))
}

fn malformed(what: &str) -> Step {
    Step::Fail(StreamFailure::new(
        FailureClass::Malformed,
        format!("unreadable {what} event"),
    ))
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a Value always serializes")
}

fn stop_event(index: u32) -> Bytes {
    sse_event(
        Some("content_block_stop"),
        format!(r#"{{"type":"content_block_stop","index":{index}}}"#).as_bytes(),
    )
}

fn text_delta_event(index: u32, text: &str) -> Bytes {
    delta_event(index, "text_delta", "text", text)
}

fn delta_event(index: u32, kind: &str, field: &str, value: &str) -> Bytes {
    let mut json = Vec::with_capacity(value.len() + 96);
    json.extend_from_slice(
        format!(
            r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"{kind}","{field}":"#
        )
        .as_bytes(),
    );
    write_str(&mut json, value);
    json.extend_from_slice(b"}}");
    sse_event(Some("content_block_delta"), &json)
}

/// The event in `raw` (as it came) with its data's `index` set to `index`.
fn reindex(raw: &Bytes, name: &str, index: u32) -> Bytes {
    reindex_bytes(raw, name, index)
}

fn reindex_bytes(raw: &[u8], name: &str, index: u32) -> Bytes {
    let fields = Fields::parse(raw);
    let mut scratch = Vec::new();
    let data = fields.data(raw, &mut scratch).unwrap_or(b"{}");
    let mut v: Value = serde_json::from_slice(data).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("index".into(), Value::from(index));
    }
    sse_event(Some(name), &to_vec(&v))
}

// ---- requests ----------------------------------------------------------------------------

/// `Some(budget)` when extended thinking is on (the API refuses prefill then, and requires
/// `max_tokens` above the budget).
fn thinking_budget(index: &RequestIndex) -> Option<u64> {
    match &index.thinking {
        Some((Some(kind), budget)) if kind != "disabled" => Some(budget.unwrap_or(0)),
        _ => None,
    }
}

fn rewrite(
    body: &[u8],
    index: &RequestIndex,
    target: &str,
    strategy: &Strategy,
    cont: &Continuation<'_>,
) -> Result<Bytes, RewriteError> {
    if let Some(why) = &index.unusable {
        return Err(RewriteError::new(format!(
            "the request body is not a Messages request: {why}"
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
    let thinking = thinking_budget(index);

    let mut splice = Splice::new(body);
    splice.replace(model, string_literal(target).into_bytes());

    let partial = cont.text.trim_end();
    let continues = !partial.is_empty() && !matches!(strategy, Strategy::Restart);
    if continues {
        match strategy {
            Strategy::Prefill(Prefill::Assistant) if thinking.is_some() => {
                return Err(RewriteError::new(
                    "assistant prefill is not allowed with extended thinking",
                ));
            }
            Strategy::Prefill(Prefill::Assistant)
            | Strategy::Restart
            | Strategy::Instruction(_) => {}
            Strategy::Prefill(other) => {
                return Err(RewriteError::new(format!(
                    "prefill `{}` is not part of Anthropic Messages (use `assistant`)",
                    other.name()
                )));
            }
        }
        let role = index
            .last_role
            .as_deref()
            .ok_or_else(|| RewriteError::new("the last message has no `role`"))?;
        let mut added = Vec::new();
        if role == "assistant" {
            // The client prefilled the answer itself: the partial answer continues it.
            let mut merged: Value = serde_json::from_slice(&body[last.clone()])
                .map_err(|_| RewriteError::new("the last message is not an object"))?;
            append_to_content(&mut merged, partial)?;
            added.extend_from_slice(&to_vec(&merged));
        } else {
            added.extend_from_slice(br#"{"role":"assistant","content":"#);
            write_str(&mut added, partial);
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
            let mut with = Vec::with_capacity(added.len() + 1);
            with.push(b',');
            with.extend_from_slice(&added);
            splice.insert(last.end, with);
        }
        if let Some(at) = &index.max_tokens {
            let max = RequestIndex::limit(body, at)
                .ok_or_else(|| RewriteError::new("`max_tokens` is not a number"))?;
            let mut reduced = max.saturating_sub(u64::from(cont.kept_tokens)).max(1);
            if let Some(budget) = thinking {
                reduced = reduced.max(budget + 1);
            }
            splice.replace(at.clone(), reduced.to_string().into_bytes());
        }
    }
    Ok(splice.finish())
}

/// Adds `text` at the end of an assistant message's content (a string or a list of blocks).
fn append_to_content(message: &mut Value, text: &str) -> Result<(), RewriteError> {
    let content = message
        .get_mut("content")
        .ok_or_else(|| RewriteError::new("the last message has no `content`"))?;
    match content {
        Value::String(s) => {
            s.push_str(text);
            let trimmed = s.trim_end().len();
            s.truncate(trimmed);
        }
        Value::Array(blocks) => blocks.push(json!({"type": "text", "text": text})),
        _ => {
            return Err(RewriteError::new(
                "the last message's `content` is not text",
            ))
        }
    }
    Ok(())
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

    #[test]
    fn the_fast_text_delta_reads_exactly_the_canonical_shape() {
        let data = br#"{"type":"content_block_delta","index":12,"delta":{"type":"text_delta","text":"a \"b\" \\"}  }"#;
        assert_eq!(fast_text_delta(data), Some((12, r#""a \"b\" \\""#)));
        for other in [
            &br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}, "more":1}"#[..],
            br#"{"index":0,"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}"#,
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"#,
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x\"}}"#,
            br#"{"type":"content_block_delta","index":,"delta":{"type":"text_delta","text":"x"}}"#,
            b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\xff\"}}",
        ] {
            assert_eq!(fast_text_delta(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn prefill_appends_the_partial_answer_without_trailing_whitespace() {
        let body = br#"{"model":"a","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let out = rw(
            body,
            "b",
            &Strategy::Prefill(Prefill::Assistant),
            &cont("Hello wor \n", 7),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["max_tokens"], 93);
        assert_eq!(
            v["messages"][1],
            json!({"role":"assistant","content":"Hello wor"})
        );
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn instruction_adds_a_user_turn_after_the_partial_answer() {
        let body = br#"{"model":"a","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
        let out = rw(
            body,
            "b",
            &Strategy::Instruction("go on".into()),
            &cont("Hello", 1),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1], json!({"role":"assistant","content":"Hello"}));
        assert_eq!(msgs[2], json!({"role":"user","content":"go on"}));
    }

    #[test]
    fn restart_only_swaps_the_model() {
        let body = br#"{"model":"a","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
        let out = rw(body, "b", &Strategy::Restart, &cont("Hello", 1)).unwrap();
        assert_eq!(
            &out[..],
            &br#"{"model":"b","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#[..]
        );
    }

    #[test]
    fn a_client_prefill_is_continued_not_duplicated() {
        let body = br#"{"model":"a","max_tokens":10,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"{"}]}"#;
        let out = rw(
            body,
            "b",
            &Strategy::Prefill(Prefill::Assistant),
            &cont("\"a\": 1 ", 1),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"][1]["content"], "{\"a\": 1");
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn bodies_that_cannot_be_rewritten_say_why() {
        let s = Strategy::Prefill(Prefill::Assistant);
        for body in [
            &b"nope"[..],
            b"[]",
            br#"{"model":"a"}"#,
            br#"{"model":"a","messages":[]}"#,
            br#"{"messages":[{"role":"user"}]}"#,
        ] {
            let err = rw(body, "b", &s, &cont("x", 1)).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
        let thinking = br#"{"model":"a","max_tokens":10,"thinking":{"type":"enabled","budget_tokens":5},"messages":[{"role":"user","content":"hi"}]}"#;
        assert!(rw(thinking, "b", &s, &cont("x", 1)).is_err());
        assert!(!AnthropicMessages.prefill_allowed(&RequestIndex::read(thinking)));
    }

    #[test]
    fn max_tokens_never_drops_below_the_thinking_budget() {
        let body = br#"{"model":"a","max_tokens":2000,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"hi"}]}"#;
        let out = rw(body, "b", &Strategy::instruction(), &cont("x", 1990)).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["max_tokens"], 1025);
    }
}
