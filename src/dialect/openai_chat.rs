//! OpenAI Chat Completions (`POST /v1/chat/completions` with `"stream": true`) and the many
//! servers that speak it (vLLM, DeepSeek, Mistral, OpenRouter...).
//!
//! Stream shape: data-only events, each a `chat.completion.chunk` repeating the stream's `id`,
//! `created` and `model`; the first delta carries `role`; tool calls arrive as deltas keyed by
//! `index`; one chunk carries `finish_reason`; with `stream_options.include_usage` a last chunk
//! has `choices: []` and `usage`; then `data: [DONE]`. An in-band failure is a chunk with an
//! `error` object. Only the first choice is read (`n > 1` streams are not watched yet).
//!
//! Blocks, for the core: the text of the message is one block until a tool call interrupts
//! it; each tool call is a block from its first delta to `finish_reason` (or to text after
//! it); `role` is written once, in the first chunk the client gets.
//!
//! Continuation: a trailing assistant message, with `"prefix": true` for DeepSeek and Mistral,
//! or `continue_final_message` for vLLM.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use memchr::memmem::Finder;
use serde_json::{json, Value};

use super::{
    sse_event, stop_kind_of, Codec, Decode, Decoded, Encode, ErrorKind, FastText, Rewritten, Rules,
    Unreadable, Wire,
};
use crate::json::{
    elements, first, members, not_null, scan_literal, text, to_vec, write_str, RequestIndex,
    RequestShape,
};
use crate::outbox::Outbox;
use crate::relay::hold::{Held, HeldKind};
use crate::relay::item::{
    BlockKind, InBand, Item, Literal, Source, Span, Start, Stop, StopKind, Usage,
};
use crate::strategy::{Prefill, RewriteError, Strategy};
use crate::translate::ids;

pub(crate) const WIRE: Wire = Wire {
    name: "openai-chat",
    path: "/chat/completions",
    codec: &CODEC,
    rules: &OpenAiChat,
    request_name: "Chat Completions",
    request: RequestShape {
        model: "model",
        messages: "messages",
        limits: &["max_completion_tokens", "max_tokens"],
        extra: &["continue_final_message", "add_generation_prompt"],
    },
    stamps_every_event: true,
    terminal: "data: [DONE]",
    trims_continuation: false,
};

/// Reads each attempt's stream, writes the client's.
const CODEC: Codec<ChunkDecoder, ChunkEncoder> = Codec::NEW;

// ---- reading ---------------------------------------------------------------------------

/// Reads one attempt's chunks.
#[derive(Debug, Default)]
struct ChunkDecoder {
    /// The attempt's first chunk with a choice has been read (its start, whether usage comes).
    started: bool,
    usage_coming: bool,
    /// The text block open now, if any.
    text: Option<u32>,
    /// Open tool calls: upstream `index` → block, and the blocks in the order they began.
    tools: HashMap<u32, u32>,
    tool_order: Vec<u32>,
    next_block: u32,
}

impl Decode for ChunkDecoder {
    fn fast_text<'a>(&mut self, _: Option<&[u8]>, data: &'a [u8]) -> Option<FastText<'a>> {
        let (true, Some(block), true) = (self.started, self.text, self.tools.is_empty()) else {
            return None;
        };
        // What the fast path does not read of a chunk goes out as it came: it must be text.
        let data = std::str::from_utf8(data).ok()?;
        let (literal, plain) = fast_content_chunk(data)?;
        Some(FastText {
            block,
            literal,
            plain,
        })
    }

    fn decode(&mut self, _: Option<&str>, data: &str, items: &mut Vec<Item>) -> Decoded {
        if data.trim_ascii() == "[DONE]" {
            self.close_tools(items);
            items.push(Item::Terminal);
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        // Nearly every chunk is one piece of text: once the attempt's first chunk has been
        // read in full, read that shape without serde.
        if let (true, Some(block), true) = (self.started, self.text, self.tools.is_empty()) {
            if let Some(literal) = fast_content_chunk(data).and_then(|(l, _)| Literal::of(data, l))
            {
                items.push(Item::Text { block, literal });
                return Ok(());
            }
        }
        let [id, created, model, error, choices, usage] = members(
            data,
            ["id", "created", "model", "error", "choices", "usage"],
        )
        .ok_or_else(|| Unreadable::new("an unreadable chunk"))?;
        let span = |raw: Option<&str>| raw.map_or(Span::default(), |r| Span::of(data, r));
        if let Some(error) = not_null(error) {
            items.push(in_band(data, error)?);
            return Ok(());
        }
        if usage.is_some() && !self.usage_coming {
            self.usage_coming = true;
            items.push(Item::UsageComing);
        }
        let choice = match not_null(choices) {
            Some(choices) => first(choices).ok_or_else(|| Unreadable::new("unreadable choices"))?,
            None => None,
        };
        let Some(choice) = choice else {
            // No choice: the usage chunk, or a chunk of metadata.
            if let Some(usage) = not_null(usage) {
                let [output, input] = members(usage, ["completion_tokens", "prompt_tokens"])
                    .ok_or_else(|| Unreadable::new("an unreadable usage chunk"))?;
                items.push(Item::Usage(Usage {
                    output_tokens: output.and_then(|t| t.parse().ok()),
                    input_tokens: input.and_then(|t| t.parse().ok()),
                }));
            }
            return Ok(());
        };
        if !self.started {
            self.started = true;
            items.push(Item::Start(Start {
                id: span(id),
                model: span(model),
                created: span(created),
                input_tokens: None,
            }));
        }
        let [delta, finish] = members(choice, ["delta", "finish_reason"])
            .ok_or_else(|| Unreadable::new("an unreadable choice"))?;
        let [content, calls] = match not_null(delta) {
            Some(delta) => members(delta, ["content", "tool_calls"])
                .ok_or_else(|| Unreadable::new("an unreadable delta"))?,
            None => [None, None],
        };
        if let Some(content) = not_null(content) {
            self.content(data, content, items)?;
        }
        if let Some(calls) = not_null(calls) {
            let calls = elements(calls).ok_or_else(|| Unreadable::new("unreadable tool calls"))?;
            for call in calls {
                self.tool_call(data, call, items)?;
            }
        }
        if let Some(reason) = not_null(finish) {
            self.close_tools(items);
            items.push(Item::Finish(Stop {
                reason: Span::of(data, reason),
                usage: None,
            }));
        }
        Ok(())
    }
}

/// An error chunk's error.
fn in_band(data: &str, error: &str) -> Result<Item, Unreadable> {
    let [message, kind, code] = members(error, ["message", "type", "code"])
        .ok_or_else(|| Unreadable::new("an unreadable error chunk"))?;
    let value = |raw: Option<&str>| match not_null(raw) {
        Some(raw) => text(raw).map_or_else(|| raw.to_owned(), |t| t.into_owned()),
        None => String::new(),
    };
    let (kind_text, code_text) = (value(kind), value(code));
    let span = |raw: Option<&str>| raw.map_or(Span::default(), |r| Span::of(data, r));
    Ok(Item::Error(InBand {
        client: is_client_error(
            Some(kind_text.as_str()).filter(|k| !k.is_empty()),
            Some(code_text.as_str()).filter(|c| !c.is_empty()),
        ),
        kind: span(kind),
        code: span(code),
        message: span(message),
    }))
}

impl ChunkDecoder {
    fn new_block(&mut self) -> u32 {
        let block = self.next_block;
        self.next_block += 1;
        block
    }

    /// The open text block, opened now if there is none.
    fn text_block(&mut self, items: &mut Vec<Item>) -> u32 {
        if let Some(block) = self.text {
            return block;
        }
        let block = self.new_block();
        self.text = Some(block);
        items.push(Item::BlockStart {
            block,
            kind: BlockKind::Text,
            native: Span::default(),
        });
        block
    }

    fn content(&mut self, data: &str, raw: &str, items: &mut Vec<Item>) -> Decoded {
        let literal = Literal::of(data, raw)
            .ok_or_else(|| Unreadable::new("a chunk whose content is not text"))?;
        if literal.is_empty() {
            // Empty: opens the text of a message, but is nothing after tool calls.
            if self.tools.is_empty() {
                self.text_block(items);
            }
            return Ok(());
        }
        // Text after tool calls: the calls are complete.
        if !self.tools.is_empty() {
            self.close_tools(items);
            if let Some(block) = self.text.take() {
                items.push(Item::BlockStop { block });
            }
        }
        let block = self.text_block(items);
        items.push(Item::Text { block, literal });
        Ok(())
    }

    fn tool_call(&mut self, data: &str, call: &str, items: &mut Vec<Item>) -> Decoded {
        let unreadable = || Unreadable::new("an unreadable tool call");
        let [index, id, kind, function] =
            members(call, ["index", "id", "type", "function"]).ok_or_else(unreadable)?;
        let index: u32 = index
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| Unreadable::new("a tool call without an index"))?;
        let [name, arguments] = match not_null(function) {
            Some(f) => members(f, ["name", "arguments"]).ok_or_else(unreadable)?,
            None => [None, None],
        };
        let string = |raw: Option<&str>| match not_null(raw) {
            None => Ok(Literal::default()),
            Some(r) => Literal::of(data, r).ok_or_else(|| {
                Unreadable::new("a tool call whose id, name or arguments are not text")
            }),
        };
        let (id, name, arguments, kind) = (
            string(id)?,
            string(name)?,
            string(arguments)?,
            string(kind)?,
        );
        let block = match self.tools.get(&index) {
            Some(&block) => {
                if !id.is_empty() || !name.is_empty() {
                    items.push(Item::ToolName { block, id, name });
                }
                block
            }
            None => {
                let block = self.new_block();
                self.tools.insert(index, block);
                self.tool_order.push(block);
                items.push(Item::BlockStart {
                    block,
                    kind: BlockKind::ToolCall { id, name },
                    native: kind.span(),
                });
                block
            }
        };
        if !arguments.is_empty() {
            items.push(Item::ToolArgs {
                block,
                literal: arguments,
            });
        }
        Ok(())
    }

    /// Every open tool call is complete.
    fn close_tools(&mut self, items: &mut Vec<Item>) {
        for block in self.tool_order.drain(..) {
            items.push(Item::BlockStop { block });
        }
        self.tools.clear();
    }
}

/// The content (a JSON string literal, quotes included, that reads exactly) of a chunk that is
/// nothing but one piece of text: its only delta is `{"content":"…"}`, with
/// `"finish_reason":null`, and there is no `error` and no second choice. `None` for anything
/// else, which serde then reads.
///
/// Keys are found by their bytes, quotes included: inside a JSON string every quote is
/// escaped, so a key pattern never matches text; at worst a value spelled like a key sends the
/// chunk to serde. What this does not check (the rest of the chunk's syntax) is relayed as the
/// upstream sent it, as it would be anyway.
fn fast_content_chunk(data: &str) -> Option<(&str, bool)> {
    struct Finders {
        delta_content: Finder<'static>,
        delta: Finder<'static>,
        finish_null: Finder<'static>,
        error: Finder<'static>,
    }
    // Built once: a searcher costs more to build than to run on one chunk.
    static FINDERS: OnceLock<Finders> = OnceLock::new();
    let f = FINDERS.get_or_init(|| Finders {
        delta_content: Finder::new(br#""delta":{"content":""#),
        delta: Finder::new(br#""delta":"#),
        finish_null: Finder::new(br#""finish_reason":null"#),
        error: Finder::new(br#""error""#),
    });
    let bytes = data.as_bytes();
    if bytes.first() != Some(&b'{') || data.trim_ascii_end().as_bytes().last() != Some(&b'}') {
        return None;
    }
    let at = f.delta_content.find(bytes)?;
    let from = at + f.delta_content.needle().len() - 1;
    let rest = data.get(from..)?;
    let scanned = scan_literal(rest.as_bytes())?;
    let len = scanned.len;
    if rest.as_bytes().get(len) != Some(&b'}') {
        return None;
    }
    let one_delta = f.delta.find(&bytes[at + 1..]).is_none();
    let plain = f.finish_null.find(bytes).is_some() && f.error.find(bytes).is_none();
    if !(one_delta && plain) {
        return None;
    }
    Some((rest.get(..len)?, scanned.plain))
}

// ---- writing ---------------------------------------------------------------------------

/// Writes the client's chunks where they cannot go out as they came: each with the client's
/// envelope, `role` only once.
#[derive(Debug, Default)]
struct ChunkEncoder {
    /// `id`, `created`, `model` of the client's stream, as JSON.
    envelope: Option<[String; 3]>,
    /// The client has not had `role` yet: the next chunk written carries it.
    role_owed: bool,
    /// Tool calls the client has, for dense indices.
    tools: u32,
}

impl ChunkEncoder {
    fn envelope(&self) -> [&str; 3] {
        match &self.envelope {
            Some([id, created, model]) => [id, created, model],
            None => ["\"\"", "0", "\"\""],
        }
    }

    /// A chunk of the client's stream with one choice: `delta` (its members, without braces)
    /// and `finish` (a JSON value).
    fn chunk(&mut self, delta: &[u8], finish: &str) -> Bytes {
        let [id, created, model] = self.envelope();
        let mut json = Vec::with_capacity(delta.len() + 160);
        json.extend_from_slice(b"{\"id\":");
        json.extend_from_slice(id.as_bytes());
        json.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        json.extend_from_slice(created.as_bytes());
        json.extend_from_slice(b",\"model\":");
        json.extend_from_slice(model.as_bytes());
        json.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{");
        if std::mem::take(&mut self.role_owed) {
            json.extend_from_slice(b"\"role\":\"assistant\"");
            if !delta.is_empty() {
                json.push(b',');
            }
        }
        json.extend_from_slice(delta);
        json.extend_from_slice(b"},\"logprobs\":null,\"finish_reason\":");
        json.extend_from_slice(finish.as_bytes());
        json.extend_from_slice(b"}]}");
        sse_event(None, &json)
    }

    /// The usage chunk: no choices, the client's envelope.
    fn usage_chunk(&self, prompt: u64, completion: u64) -> Bytes {
        let [id, created, model] = self.envelope();
        let total = prompt + completion;
        let json = format!(
            r#"{{"id":{id},"object":"chat.completion.chunk","created":{created},"model":{model},"choices":[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{total}}}}}"#
        );
        sse_event(None, json.as_bytes())
    }

    /// A chunk of the upstream's (same wire) fitted to the client's stream: its envelope, no
    /// second `role`, `base` more completion tokens in its usage.
    fn fit(&mut self, data: &str, base: u32) -> Option<Bytes> {
        let mut v: Value = serde_json::from_str(data).ok()?;
        let obj = v.as_object_mut()?;
        if let Some([id, created, model]) = &self.envelope {
            for (key, raw) in [("id", id), ("created", created), ("model", model)] {
                if let Ok(val) = serde_json::from_str::<Value>(raw) {
                    obj.insert(key.into(), val);
                }
            }
        }
        if let Some(delta) = obj
            .get_mut("choices")
            .and_then(|c| c.get_mut(0))
            .and_then(|c| c.get_mut("delta"))
            .and_then(|d| d.as_object_mut())
        {
            delta.remove("role");
        }
        if base > 0 {
            if let Some(usage) = obj.get_mut("usage").and_then(|u| u.as_object_mut()) {
                for key in ["completion_tokens", "total_tokens"] {
                    if let Some(n) = usage.get_mut(key) {
                        *n = Value::from(n.as_u64().unwrap_or(0) + u64::from(base));
                    }
                }
            }
        }
        Some(sse_event(None, &to_vec(&v)))
    }
}

impl Encode for ChunkEncoder {
    fn begin(&mut self, start: &Start, src: &Source<'_>) {
        let value = |span: Span, default: &str| match src.get(span) {
            "" => default.to_owned(),
            v => v.to_owned(),
        };
        // Another wire's start has no `created`: the time the client gets it.
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string()
        };
        let created = match src.get(start.created) {
            "" => now(),
            v => v.to_owned(),
        };
        self.envelope = Some([value(start.id, "\"\""), created, value(start.model, "\"\"")]);
    }

    fn start(&mut self, _out: &mut Outbox) {
        // No event of its own: `role` rides on the first chunk written.
        self.role_owed = true;
    }

    // Text has no blocks on this wire.
    fn block_start(&mut self, _: u32, _: BlockKind, _: Span, _: &Source<'_>, _: &mut Outbox) {}

    fn text(&mut self, _index: u32, text: &str, out: &mut Outbox) {
        let mut delta = b"\"content\":".to_vec();
        write_str(&mut delta, text);
        let chunk = self.chunk(&delta, "null");
        out.push(chunk);
    }

    // The Chat decoder reads every delta it passes on.
    fn other_delta(&mut self, _: u32, _: &Source<'_>, _: &mut Outbox) {}

    fn block_stop(&mut self, _: u32, _: &mut Outbox) {}

    fn held(&mut self, _index: u32, held: &Held, out: &mut Outbox) {
        if held.kind != HeldKind::ToolCall {
            // Reasoning and other kinds have no place in a Chat message here.
            return;
        }
        let index = self.tools;
        self.tools += 1;
        let mut delta = Vec::with_capacity(held.arguments.len() + 128);
        if self.role_owed {
            // A message of tool calls only has no text.
            delta.extend_from_slice(b"\"content\":null,");
        }
        delta.extend_from_slice(format!("\"tool_calls\":[{{\"index\":{index}").as_bytes());
        let ours = held.wire.is(&WIRE);
        if ours && !held.id.is_empty() {
            delta.extend_from_slice(b",\"id\":");
            write_str(&mut delta, &held.id);
        } else if !ours {
            // Another wire's id, fitted to Chat's limit (or made, if it had none).
            let id = if held.id.is_empty() {
                let [id, ..] = self.envelope();
                let seed = [id, &index.to_string(), &held.name, &held.arguments];
                ids::minted("call_", &seed).into()
            } else {
                ids::chat(&held.id)
            };
            delta.extend_from_slice(b",\"id\":");
            write_str(&mut delta, &id);
        }
        delta.extend_from_slice(b",\"type\":");
        if held.wire.is(&WIRE) && !held.native.is_empty() {
            delta.extend_from_slice(held.native.as_bytes());
        } else {
            delta.extend_from_slice(b"\"function\"");
        }
        delta.extend_from_slice(b",\"function\":{");
        if !held.name.is_empty() {
            delta.extend_from_slice(b"\"name\":");
            write_str(&mut delta, &held.name);
            delta.push(b',');
        }
        delta.extend_from_slice(b"\"arguments\":");
        if !ours && held.arguments.trim().is_empty() {
            // Another wire's call without arguments: clients parse this string as JSON.
            write_str(&mut delta, "{}");
        } else {
            write_str(&mut delta, &held.arguments);
        }
        delta.extend_from_slice(b"}}]");
        let chunk = self.chunk(&delta, "null");
        out.push(chunk);
    }

    fn finish(&mut self, stop: Stop, _: u32, src: &Source<'_>, out: &mut Outbox) {
        let raw = src.get(stop.reason);
        let reason = if src.wire.is(&WIRE) && raw.starts_with('"') {
            raw
        } else {
            // Another wire's stop, in Chat's words.
            match stop_kind_of(&stop, src) {
                StopKind::EndTurn | StopKind::StopSequence | StopKind::Other if self.tools > 0 => {
                    "\"tool_calls\""
                }
                StopKind::EndTurn | StopKind::StopSequence | StopKind::Other => "\"stop\"",
                StopKind::MaxTokens | StopKind::ContextWindow => "\"length\"",
                StopKind::ToolUse => "\"tool_calls\"",
                StopKind::Refusal => "\"content_filter\"",
            }
        };
        let chunk = self.chunk(b"", reason);
        out.push(chunk);
    }

    fn usage(&mut self, usage: Usage, base: u32, src: &Source<'_>, out: &mut Outbox) {
        if src.wire.is(&WIRE) {
            if let Some(chunk) = self.fit(src.data, base) {
                out.push(chunk);
                return;
            }
        }
        let tokens = usage.output_tokens.unwrap_or(0) + u64::from(base);
        out.push(self.usage_chunk(usage.input_tokens.unwrap_or(0), tokens));
    }

    fn usage_estimate(&mut self, tokens: u32, out: &mut Outbox) {
        out.push(self.usage_chunk(0, u64::from(tokens)));
    }

    fn terminal(&mut self, out: &mut Outbox) {
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    }

    fn restamp(&mut self, src: &Source<'_>, out: &mut Outbox) {
        if let Some(chunk) = self.fit(src.data, 0) {
            out.push(chunk);
        }
    }

    fn error(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox) {
        out.push(sse_event(None, &to_vec(&error_value(kind, message))));
        self.terminal(out);
    }

    fn keep_alive(&self) -> Bytes {
        Bytes::from_static(b": keep-alive\n\n")
    }
}

// ---- requests and errors ------------------------------------------------------------

#[derive(Debug)]
struct OpenAiChat;

impl Rules for OpenAiChat {
    fn error_body(&self, kind: &ErrorKind, message: &str) -> Bytes {
        Bytes::from(to_vec(&error_value(kind, message)))
    }

    fn check_continuation(&self, strategy: &Strategy, _: &RequestIndex) -> Rewritten<()> {
        match strategy {
            Strategy::Prefill(Prefill::None) => {
                Err(RewriteError::new("prefill `none` is not a way to continue"))
            }
            _ => Ok(()),
        }
    }

    fn continue_content(&self, content: &mut Value, partial: &str) -> Rewritten<()> {
        match content {
            Value::String(s) => s.push_str(partial),
            Value::Null => *content = Value::from(partial),
            _ => {
                return Err(RewriteError::new(
                    "the last message's `content` is not text or null",
                ))
            }
        }
        Ok(())
    }

    fn prefill_flag(&self, strategy: &Strategy) -> Option<&'static str> {
        matches!(strategy, Strategy::Prefill(Prefill::Prefix)).then_some("prefix")
    }

    fn stop_kind(&self, reason: &str) -> StopKind {
        match reason {
            "stop" => StopKind::EndTurn,
            "length" => StopKind::MaxTokens,
            "tool_calls" | "function_call" => StopKind::ToolUse,
            "content_filter" => StopKind::Refusal,
            _ => StopKind::Other,
        }
    }

    fn continuation_flags(&self, strategy: &Strategy) -> &'static [(&'static str, &'static [u8])] {
        match strategy {
            Strategy::Prefill(Prefill::ContinueFinalMessage) => &[
                ("continue_final_message", b"true"),
                ("add_generation_prompt", b"false"),
            ],
            _ => &[],
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::rewritten;

    const BODY: &[u8] = br#"{"model":"a","max_completion_tokens":50,"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"stream":true}"#;

    #[test]
    fn prefix_prefill_marks_the_assistant_message() {
        let how = Strategy::Prefill(Prefill::Prefix);
        let v = rewritten(&WIRE, BODY, "b", &how, "Hello ", 3).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["max_completion_tokens"], 47);
        assert_eq!(
            v["messages"][2],
            json!({"role":"assistant","content":"Hello ","prefix":true})
        );
    }

    #[test]
    fn vllm_prefill_sets_continue_final_message() {
        let how = Strategy::Prefill(Prefill::ContinueFinalMessage);
        let v = rewritten(&WIRE, BODY, "b", &how, "Hi", 1).unwrap();
        assert_eq!(v["messages"][2], json!({"role":"assistant","content":"Hi"}));
        assert_eq!(v["continue_final_message"], true);
        assert_eq!(v["add_generation_prompt"], false);
    }

    #[test]
    fn instruction_follows_the_partial_answer_with_a_user_turn() {
        let how = Strategy::Instruction("go on".into());
        let v = rewritten(&WIRE, BODY, "b", &how, "Hi", 1).unwrap();
        assert_eq!(v["messages"][2], json!({"role":"assistant","content":"Hi"}));
        assert_eq!(v["messages"][3], json!({"role":"user","content":"go on"}));
        assert!(v.get("continue_final_message").is_none());
    }

    #[test]
    fn the_fast_content_chunk_reads_only_a_lone_piece_of_text() {
        let plain = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" \"hi\""},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        assert_eq!(fast_content_chunk(plain), Some((r#"" \"hi\"""#, false)));
        for other in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","tool_calls":[]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#,
            r#"{"error":{"message":"x"},"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]"#,
        ] {
            assert_eq!(fast_content_chunk(other), None, "{other}");
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
