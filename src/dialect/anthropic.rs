//! Anthropic Messages: `POST /v1/messages` with `"stream": true`.
//!
//! Stream shape: `message_start`, then content blocks (`content_block_start`, deltas,
//! `content_block_stop`) with dense indices, one at a time, then one `message_delta` (stop
//! reason, cumulative usage) and `message_stop`; `ping` anywhere; `error` ends it. Every event
//! has an `event:` line naming its `type`; clients drop data without one.
//!
//! Continuation: a trailing assistant message is a prefill, without trailing whitespace (the
//! API rejects it), and not allowed with extended thinking.

use super::prelude::*;
use serde_json::value::RawValue;

use crate::json::scan_literal;
use crate::translate::ids;

pub(crate) const WIRE: Wire = Wire {
    name: "anthropic",
    path: "/messages",
    codec: &CODEC,
    rules: &AnthropicMessages,
    request_name: "Messages",
    request: RequestShape {
        model: "model",
        messages: "messages",
        text_conversation: false,
        limits: &["max_tokens"],
        extra: &["thinking", "anthropic_version", "stream"],
    },
    stamps_every_event: false,
    terminal: "message_stop",
    trims_continuation: true,
    live_reasoning: false,
};

/// Reads each attempt's stream, writes the client's.
const CODEC: Codec<MessagesDecoder, MessagesEncoder> = Codec::NEW;

// ---- reading ---------------------------------------------------------------------------

/// Reads one attempt's events. Blocks come one at a time with dense indices, which are the
/// block numbers the core works with.
#[derive(Debug, Default)]
struct MessagesDecoder {
    /// The index the next block must have.
    next_block: u32,
    /// The block open now.
    open: Option<u32>,
}

impl Decode for MessagesDecoder {
    fn fast_text<'a>(&mut self, name: Option<&[u8]>, data: &'a [u8]) -> Option<FastText<'a>> {
        if name != Some(b"content_block_delta") {
            return None;
        }
        let text = fast_text_delta(data)?;
        (self.open == Some(text.block)).then_some(text)
    }

    fn decode(&mut self, name: Option<&str>, data: &str, items: &mut Vec<Item>) -> Decoded {
        let Some(name) = name else {
            // Clients drop data without an event line; upstreams that speak this dialect never
            // send one, so the stream is broken (a torn event glued to the next).
            return Err(Unreadable::new("data without an event: line"));
        };
        let item = match name {
            "content_block_delta" => self.delta(data)?,
            "content_block_start" => self.block_start(data)?,
            "content_block_stop" => {
                let [index] = read(name, data, ["index"])?;
                let block = self.is_open(index.and_then(|i| i.parse().ok()))?;
                self.open = None;
                Item::BlockStop { block }
            }
            _ => {
                // The rest are few per stream: check each is what its event line says (a torn
                // event glued to the next would not be).
                let [kind] = read(name, data, ["type"])?;
                if kind.and_then(text).as_deref() != Some(name) {
                    return Err(unreadable_event(name));
                }
                other_event(name, data)?
            }
        };
        if matches!(item, Item::Finish(_)) {
            self.refusal(data, items);
        }
        items.push(item);
        Ok(())
    }
}

impl MessagesDecoder {
    /// A refusal's words, when the stop in `data` has them (`stop_details.explanation`), as a
    /// refusal block of its own ahead of the stop: a client of another wire gets them in its
    /// own form (Chat `delta.refusal`). Details that cannot be read are no refusal's words:
    /// the stop reason alone still says it.
    fn refusal(&mut self, data: &str, items: &mut Vec<Item>) {
        let Some(literal) = refusal_words(data) else {
            return;
        };
        let block = self.next_block;
        self.next_block += 1;
        items.push(Item::BlockStart {
            block,
            kind: BlockKind::Refusal,
            native: Span::default(),
        });
        items.push(Item::Refusal { block, literal });
        items.push(Item::BlockStop { block });
    }

    /// The block `index` names, which must be the open one.
    fn is_open(&self, index: Option<u32>) -> Result<u32, Unreadable> {
        match index {
            Some(block) if self.open == Some(block) => Ok(block),
            _ => Err(Unreadable::new("an event for a block that is not open")),
        }
    }

    fn delta(&mut self, data: &str) -> Result<Item, Unreadable> {
        // The canonical shape, read without serde (which costs most of what the relay adds
        // per event).
        if let Some(text) = fast_text_delta(data.as_bytes()) {
            let block = self.is_open(Some(text.block))?;
            let literal = Literal::of(data, text.literal)
                .ok_or_else(|| unreadable_event("content_block_delta"))?;
            return Ok(Item::Text { block, literal });
        }
        // Any other shape (another key order, spacing): read in one pass.
        let delta: BlockDelta<'_> =
            serde_json::from_str(data).map_err(|_| unreadable_event("content_block_delta"))?;
        let block = self.is_open(Some(delta.index))?;
        let Delta {
            kind,
            text: text_,
            partial_json,
            thinking,
            signature,
        } = delta.delta;
        let literal = |raw: Option<&RawValue>| {
            raw.and_then(|raw| Literal::of(data, raw.get()))
                .ok_or_else(|| unreadable_event("content_block_delta"))
        };
        Ok(match kind.as_ref() {
            "text_delta" => Item::Text {
                block,
                literal: literal(text_)?,
            },
            "input_json_delta" => Item::ToolArgs {
                block,
                literal: literal(partial_json)?,
            },
            "thinking_delta" => Item::Reasoning {
                block,
                literal: literal(thinking)?,
            },
            "signature_delta" => Item::Signature {
                block,
                literal: literal(signature)?,
            },
            _ => Item::OtherDelta { block },
        })
    }

    fn block_start(&mut self, data: &str) -> Result<Item, Unreadable> {
        let [index, block] = read("content_block_start", data, ["index", "content_block"])?;
        let index = index.and_then(|i| i.parse().ok());
        if self.open.is_some() || index != Some(self.next_block) {
            return Err(Unreadable::new(
                "content_block_start out of order (indices are dense, one block at a time)",
            ));
        }
        let block = block.ok_or_else(|| unreadable_event("content_block_start"))?;
        let [kind, id, name] = read("content_block_start", block, ["type", "id", "name"])?;
        let string = |raw: Option<&str>| match raw {
            Some(raw) => Literal::of(data, raw)
                .ok_or_else(|| Unreadable::new("a tool_use block whose id or name is not text")),
            None => Ok(Literal::default()),
        };
        let kind = match kind.and_then(text).as_deref() {
            Some("text") => BlockKind::Text,
            Some("tool_use") => BlockKind::ToolCall {
                id: string(id)?,
                name: string(name)?,
            },
            Some("thinking") => BlockKind::Reasoning,
            Some("redacted_thinking") => BlockKind::RedactedReasoning,
            _ => BlockKind::Other,
        };
        let number = self.next_block;
        self.next_block += 1;
        self.open = Some(number);
        Ok(Item::BlockStart {
            block: number,
            kind,
            native: Span::of(data, block),
        })
    }
}

/// A delta, the event nearly every stream is made of: read with one typed pass when the fast
/// path cannot (the text's raw literal, borrowed, is checked by [`Literal::of`]).
#[derive(serde::Deserialize)]
struct BlockDelta<'a> {
    index: u32,
    #[serde(borrow)]
    delta: Delta<'a>,
}

#[derive(serde::Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    partial_json: Option<&'a RawValue>,
    #[serde(borrow)]
    thinking: Option<&'a RawValue>,
    #[serde(borrow)]
    signature: Option<&'a RawValue>,
}

/// An event other than a block's, its `type` already checked.
fn other_event(name: &str, data: &str) -> Result<Item, Unreadable> {
    let span = |raw: Option<&str>| raw.map_or(Span::default(), |r| Span::of(data, r));
    Ok(match name {
        "ping" => Item::KeepAlive,
        "message_start" => {
            let [id, model, usage] = read_in(name, data, "message", ["id", "model", "usage"])?;
            // Its output count is a placeholder; message_delta has the real one.
            let input_tokens = match not_null(usage) {
                Some(usage) => read(name, usage, ["input_tokens"])?[0].and_then(|t| t.parse().ok()),
                None => None,
            };
            Item::Start(Start {
                id: span(id),
                model: span(model),
                created: Span::default(),
                input_tokens,
            })
        }
        "message_delta" => {
            let [delta, usage] = read(name, data, ["delta", "usage"])?;
            let [reason] = match not_null(delta) {
                Some(delta) => read(name, delta, ["stop_reason"])?,
                None => [None],
            };
            let usage = match not_null(usage) {
                Some(usage) => {
                    let [output, input] = read(name, usage, ["output_tokens", "input_tokens"])?;
                    Some(Usage {
                        output_tokens: output.and_then(|t| t.parse().ok()),
                        input_tokens: input.and_then(|t| t.parse().ok()),
                    })
                }
                None => None,
            };
            Item::Finish(Stop {
                reason: span(not_null(reason)),
                usage,
                report: Span::default(),
            })
        }
        "message_stop" => Item::Terminal,
        "error" => {
            let [kind, message] = read_in(name, data, "error", ["type", "message"])?;
            Item::Error(InBand {
                client: kind.and_then(text).is_some_and(|k| is_client_error(&k)),
                kind: span(kind),
                code: Span::default(),
                message: span(message),
            })
        }
        _ => Item::Other,
    })
}

/// The explanation of a `message_delta`'s refusal (`delta.stop_details`, of type `refusal`),
/// if it has one that is text.
fn refusal_words(data: &str) -> Option<Literal> {
    let [delta] = members(data, ["delta"])?;
    let [details] = members(not_null(delta)?, ["stop_details"])?;
    let [kind, explanation] = members(not_null(details)?, ["type", "explanation"])?;
    if kind.and_then(text).as_deref() != Some("refusal") {
        return None;
    }
    let literal = Literal::of(data, not_null(explanation)?)?;
    (!literal.is_empty()).then_some(literal)
}

/// The members `keys` of the object `json`, part of a `name` event.
fn read<'a, const N: usize>(
    name: &str,
    json: &'a str,
    keys: [&str; N],
) -> Result<[Option<&'a str>; N], Unreadable> {
    members(json, keys).ok_or_else(|| unreadable_event(name))
}

/// The members `keys` of the object at `outer` in the object `json`, part of a `name` event.
fn read_in<'a, const N: usize>(
    name: &str,
    json: &'a str,
    outer: &str,
    keys: [&str; N],
) -> Result<[Option<&'a str>; N], Unreadable> {
    let [inner] = read(name, json, [outer])?;
    read(name, inner.ok_or_else(|| unreadable_event(name))?, keys)
}

fn unreadable_event(name: &str) -> Unreadable {
    Unreadable::new(format!("an unreadable {name} event"))
}

/// The index and text (a JSON string literal, quotes included, that reads exactly) of a delta
/// in exactly the shape the API sends text in, `{"type":"content_block_delta","index":N,
/// "delta":{"type":"text_delta","text":"…"}}`, spaces allowed before the closing braces;
/// `None` for anything else, which serde then reads. Everything around the literal is fixed
/// text, so data this accepts is valid JSON (and UTF-8): it can go out as it came.
fn fast_text_delta(data: &[u8]) -> Option<FastText<'_>> {
    let rest = data.strip_prefix(br#"{"type":"content_block_delta","index":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // JSON numbers have no leading zeros; nine digits fit a u32.
    if digits == 0 || digits > 9 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let block = rest[..digits]
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let rest = rest[digits..].strip_prefix(br#","delta":{"type":"text_delta","text":"#)?;
    let scanned = scan_literal(rest)?;
    let (literal, tail) = rest.split_at(scanned.len);
    let tail = json_ws(tail).strip_prefix(b"}")?;
    let tail = json_ws(tail).strip_prefix(b"}")?;
    if !json_ws(tail).is_empty() {
        return None;
    }
    Some(FastText {
        block,
        literal: std::str::from_utf8(literal).ok()?,
        plain: scanned.plain,
        number: None,
    })
}

/// `s` without leading JSON whitespace (within one data line: spaces and tabs).
fn json_ws(s: &[u8]) -> &[u8] {
    let skip = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[skip..]
}

// ---- writing ---------------------------------------------------------------------------

/// Writes the client's stream where events cannot go out as they came.
#[derive(Debug, Default)]
struct MessagesEncoder {
    /// The message's id and model (JSON values), for a start written from another wire's.
    id: String,
    model: String,
    input_tokens: Option<u64>,
    /// Tool calls the client has: a turn that has some ends for `tool_use`.
    tool_uses: u32,
    /// Another wire's stop, held for its usage (Chat reports it after the stop): written with
    /// the terminal event.
    closing: Option<Closing>,
    /// The words of another wire's refusal (Chat `delta.refusal`): Anthropic tells a refusal
    /// with its stop reason, the words in `stop_details`, not as answer text.
    refusal: String,
}

/// A `message_delta` still to write.
#[derive(Debug)]
struct Closing {
    reason: &'static str,
    output_tokens: u64,
    input_tokens: Option<u64>,
    /// A refusal's words (`stop_details.explanation`).
    explanation: Option<String>,
}

impl Encode for MessagesEncoder {
    fn begin(&mut self, start: &Start, src: &Source<'_>) {
        self.id = src.get(start.id).to_owned();
        self.model = src.get(start.model).to_owned();
        self.input_tokens = start.input_tokens;
    }

    fn start(&mut self, out: &mut Outbox) {
        let or_empty = |v: &str| {
            if v.is_empty() {
                "\"\"".to_owned()
            } else {
                v.to_owned()
            }
        };
        out.push(sse_event(
            Some("message_start"),
            format!(
                r#"{{"type":"message_start","message":{{"id":{},"type":"message","role":"assistant","model":{},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":0}}}}}}"#,
                or_empty(&self.id),
                or_empty(&self.model),
                self.input_tokens.unwrap_or(0)
            )
            .as_bytes(),
        ));
    }

    fn block_start(
        &mut self,
        index: u32,
        _kind: BlockKind,
        native: Span,
        src: &Source<'_>,
        out: &mut Outbox,
    ) {
        let block = if src.wire.is(&WIRE) && !native.is_empty() {
            src.get(native)
        } else {
            r#"{"type":"text","text":""}"#
        };
        out.push(block_start_event(index, block));
    }

    fn text(&mut self, index: u32, text: &str, out: &mut Outbox) {
        out.push(delta_event(index, "text_delta", "text", text));
    }

    fn other_delta(&mut self, index: u32, src: &Source<'_>, out: &mut Outbox) {
        if src.wire.is(&WIRE) {
            out.push(reindex(src.data, index));
        }
    }

    fn block_stop(&mut self, index: u32, out: &mut Outbox) {
        out.push(stop_event(index));
    }

    fn held(&mut self, index: u32, held: &Held, out: &mut Outbox) {
        if held.kind == HeldKind::Refusal {
            // Told with the stop reason. (This wire's own words are in the stop it came with.)
            if !held.wire.is(&WIRE) {
                self.refusal.push_str(&held.text);
            }
            return;
        }
        let ours = held.wire.is(&WIRE) && !held.native.is_empty();
        if held.kind == HeldKind::ToolCall {
            self.tool_uses += 1;
        }
        let start = if ours {
            held.native.clone()
        } else {
            match held.kind {
                HeldKind::ToolCall => {
                    let mut block = br#"{"type":"tool_use","id":"#.to_vec();
                    // Another wire's id, fitted to Anthropic's pattern (or made, if it had none).
                    let id = if held.id.is_empty() {
                        let seed = [
                            self.id.as_str(),
                            &index.to_string(),
                            &held.name,
                            &held.arguments,
                        ];
                        ids::minted("toolu_", &seed).into()
                    } else {
                        ids::anthropic(&held.id)
                    };
                    write_str(&mut block, &id);
                    block.extend_from_slice(br#","name":"#);
                    write_str(&mut block, &held.name);
                    block.extend_from_slice(br#","input":{}}"#);
                    String::from_utf8(block).expect("JSON text is UTF-8")
                }
                HeldKind::Reasoning => r#"{"type":"thinking","thinking":"","signature":""}"#.into(),
                // Only its own wire can write these again.
                HeldKind::RedactedReasoning | HeldKind::Other | HeldKind::Refusal => return,
            }
        };
        out.push(block_start_event(index, &start));
        if !held.arguments.is_empty() {
            out.push(delta_event(
                index,
                "input_json_delta",
                "partial_json",
                &held.arguments,
            ));
        }
        if !held.text.is_empty() {
            out.push(delta_event(index, "thinking_delta", "thinking", &held.text));
        }
        if let Some(signature) = &held.signature {
            out.push(delta_event(
                index,
                "signature_delta",
                "signature",
                signature,
            ));
        }
        if ours {
            for other in held.others() {
                out.push(reindex(other, index));
            }
        }
        out.push(stop_event(index));
    }

    fn takes_block(&self, held: &Held) -> bool {
        held.kind != HeldKind::Refusal
    }

    fn finish(&mut self, stop: Stop, base: u32, src: &Source<'_>, out: &mut Outbox) {
        if src.wire.is(&WIRE) {
            // The upstream's own message_delta, its usage covering every attempt.
            if let Ok(mut v) = serde_json::from_str::<Value>(src.data) {
                if let Some(n) = v.pointer_mut("/usage/output_tokens") {
                    *n = Value::from(n.as_u64().unwrap_or(0) + u64::from(base));
                }
                out.push(sse_event(Some("message_delta"), &to_vec(&v)));
                return;
            }
        }
        // Another wire's stop: its usage may come after it (Chat's last chunk), and Anthropic
        // reports usage with the stop, so it is written with the terminal event.
        let explanation = (!self.refusal.is_empty()).then(|| std::mem::take(&mut self.refusal));
        let reason = match stop_kind_of(&stop, src, self.tool_uses) {
            // The answer is a refusal, whatever its wire's stop (OpenAI's is `stop`).
            _ if explanation.is_some() => "refusal",
            StopKind::EndTurn | StopKind::StopSequence | StopKind::Other => "end_turn",
            StopKind::MaxTokens => "max_tokens",
            StopKind::ToolUse => "tool_use",
            StopKind::Refusal => "refusal",
            StopKind::ContextWindow => "model_context_window_exceeded",
        };
        let usage = stop.usage.unwrap_or_default();
        self.closing = Some(Closing {
            reason,
            output_tokens: usage.output_tokens.unwrap_or(0) + u64::from(base),
            input_tokens: usage.input_tokens,
            explanation,
        });
    }

    // Anthropic reports usage only with the stop reason (`message_delta`): another wire's
    // usage goes into the one still to write.
    fn usage(&mut self, usage: Usage, base: u32, _: &Source<'_>, _: &mut Outbox) {
        if let Some(closing) = &mut self.closing {
            if let Some(tokens) = usage.output_tokens {
                closing.output_tokens = tokens + u64::from(base);
            }
            closing.input_tokens = usage.input_tokens.or(closing.input_tokens);
        }
    }

    fn usage_estimate(&mut self, tokens: u32, _: &mut Outbox) {
        if let Some(closing) = &mut self.closing {
            closing.output_tokens = closing.output_tokens.max(u64::from(tokens));
        }
    }

    fn terminal(&mut self, out: &mut Outbox) {
        if let Some(closing) = self.closing.take() {
            let Closing {
                reason,
                output_tokens,
                input_tokens,
                explanation,
            } = closing;
            let input = input_tokens.map_or(String::new(), |n| format!(r#","input_tokens":{n}"#));
            let details = match explanation {
                Some(words) => {
                    let mut details =
                        br#","stop_details":{"type":"refusal","category":null,"explanation":"#
                            .to_vec();
                    write_str(&mut details, &words);
                    details.push(b'}');
                    String::from_utf8(details).expect("JSON text is UTF-8")
                }
                None => String::new(),
            };
            out.push(sse_event(
                Some("message_delta"),
                format!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"{reason}","stop_sequence":null{details}}},"usage":{{"output_tokens":{output_tokens}{input}}}}}"#
                )
                .as_bytes(),
            ));
        }
        out.push(sse_event(
            Some("message_stop"),
            br#"{"type":"message_stop"}"#,
        ));
    }

    fn restamp(&mut self, src: &Source<'_>, out: &mut Outbox) {
        // Events carry no envelope here: as they came.
        out.push(sse_event(src.name, src.data.as_bytes()));
    }

    fn error(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox) {
        out.push(sse_event(Some("error"), &error_json(kind, message)));
    }

    // The anthropic SDKs skip events without a name or data, even after an `id:` field.
    fn keep_alive(&self, _after_id: bool) -> Bytes {
        Bytes::from_static(b": keep-alive\n\n")
    }
}

fn block_start_event(index: u32, block: &str) -> Bytes {
    sse_event(
        Some("content_block_start"),
        format!(r#"{{"type":"content_block_start","index":{index},"content_block":{block}}}"#)
            .as_bytes(),
    )
}

fn stop_event(index: u32) -> Bytes {
    sse_event(
        Some("content_block_stop"),
        format!(r#"{{"type":"content_block_stop","index":{index}}}"#).as_bytes(),
    )
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

/// A delta event's data (as it came) with its `index` set to `index`.
fn reindex(data: &str, index: u32) -> Bytes {
    let mut v: Value = serde_json::from_str(data).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("index".into(), Value::from(index));
    }
    sse_event(Some("content_block_delta"), &to_vec(&v))
}

// ---- requests and errors ------------------------------------------------------------

#[derive(Debug)]
struct AnthropicMessages;

impl Rules for AnthropicMessages {
    fn error_body(&self, kind: &ErrorKind, message: &str) -> Bytes {
        Bytes::from(error_json(kind, message))
    }

    fn prefill_allowed(&self, index: &RequestIndex) -> bool {
        thinking_budget(index).is_none()
    }

    fn check_continuation(&self, strategy: &Strategy, index: &RequestIndex) -> Rewritten<()> {
        match strategy {
            Strategy::Prefill(Prefill::Assistant) if thinking_budget(index).is_some() => Err(
                RewriteError::new("assistant prefill is not allowed with extended thinking"),
            ),
            _ => assistant_prefill_only(strategy, "Anthropic Messages (use `assistant`)"),
        }
    }

    fn continue_content(&self, content: &mut Value, partial: &str) -> Rewritten<()> {
        match content {
            Value::String(s) => {
                s.push_str(partial);
                let trimmed = s.trim_end().len();
                s.truncate(trimmed);
            }
            Value::Array(blocks) => blocks.push(json!({"type": "text", "text": partial})),
            _ => {
                return Err(RewriteError::new(
                    "the last message's `content` is not text or blocks",
                ))
            }
        }
        Ok(())
    }

    // Every Messages stream reports usage (`message_delta.usage`).
    fn asks_usage(&self, _request: &[u8]) -> bool {
        true
    }

    fn min_token_limit(&self, index: &RequestIndex) -> u64 {
        // The API requires `max_tokens` above the thinking budget.
        thinking_budget(index).map_or(1, |budget| budget + 1)
    }

    fn stop_kind(&self, reason: &str) -> StopKind {
        match reason {
            "end_turn" => StopKind::EndTurn,
            "max_tokens" => StopKind::MaxTokens,
            "tool_use" => StopKind::ToolUse,
            "stop_sequence" => StopKind::StopSequence,
            "refusal" => StopKind::Refusal,
            "model_context_window_exceeded" => StopKind::ContextWindow,
            _ => StopKind::Other,
        }
    }
}

/// `Some(budget)` when extended thinking is on (the API refuses prefill then).
fn thinking_budget(index: &RequestIndex) -> Option<u64> {
    let [kind, budget] = members(index.value("thinking")?, ["type", "budget_tokens"])?;
    match kind.and_then(text) {
        Some(kind) if kind != "disabled" => Some(budget.and_then(|b| b.parse().ok()).unwrap_or(0)),
        _ => None,
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
    to_vec(&json!({
        "type": "error",
        "error": { "type": error_type(kind), "message": message },
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(body: &[u8], strategy: &Strategy, text: &str, kept: u32) -> Result<Value, RewriteError> {
        crate::rewrite::rewritten(&WIRE, body, "b", strategy, text, kept)
    }

    #[test]
    fn the_fast_text_delta_reads_exactly_the_canonical_shape() {
        let data = r#"{"type":"content_block_delta","index":12,"delta":{"type":"text_delta","text":"a \"b\" \\"}  }"#;
        let text = fast_text_delta(data.as_bytes()).unwrap();
        assert_eq!(
            (text.block, text.literal, text.plain),
            (12, r#""a \"b\" \\""#, false)
        );
        for other in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}, "more":1}"#,
            r#"{"index":0,"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x\"}}"#,
            r#"{"type":"content_block_delta","index":,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":01,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x\"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\ud800"}}"#,
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\u{1}\"}}",
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}\u{c}}",
        ] {
            assert!(fast_text_delta(other.as_bytes()).is_none(), "{other}");
        }
    }

    #[test]
    fn a_refusals_explanation_is_read_as_a_refusal_block_ahead_of_the_stop() {
        let decode = |details: &str| {
            let data = format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"refusal","stop_details":{details}}},"usage":{{"output_tokens":3}}}}"#
            );
            let mut decoder = MessagesDecoder::default();
            let mut items = Vec::new();
            decoder
                .decode(Some("message_delta"), &data, &mut items)
                .unwrap_or_else(|e| panic!("{details}: {e:?}"));
            let words = items.iter().find_map(|item| match item {
                Item::Refusal { literal, .. } => Some(literal.raw(&data).to_owned()),
                _ => None,
            });
            let kinds: Vec<_> = items
                .iter()
                .map(|item| match item {
                    Item::BlockStart { block, kind, .. } => format!("start {block} {kind:?}"),
                    Item::Refusal { block, .. } => format!("refusal {block}"),
                    Item::BlockStop { block } => format!("stop {block}"),
                    Item::Finish(_) => "finish".into(),
                    other => format!("{other:?}"),
                })
                .collect();
            (words, kinds)
        };
        let (words, kinds) =
            decode(r#"{"category":null,"explanation":"Not \"that\".","type":"refusal"}"#);
        assert_eq!(words.as_deref(), Some(r#""Not \"that\".""#));
        assert_eq!(kinds, ["start 0 Refusal", "refusal 0", "stop 0", "finish"]);
        // No words, or details that are not a refusal's: the stop reason alone says it.
        for details in [
            "null",
            r#"{"type":"refusal","category":"bio","explanation":null}"#,
            r#"{"type":"refusal","explanation":""}"#,
            r#"{"type":"refusal","explanation":7}"#,
            r#"{"type":"other","explanation":"x"}"#,
            r#"{"explanation":"x"}"#,
            r#""refusal""#,
            "[1]",
        ] {
            assert_eq!(decode(details), (None, vec!["finish".into()]), "{details}");
        }
    }

    #[test]
    fn prefill_appends_the_partial_answer_without_trailing_whitespace() {
        let body = br#"{"model":"a","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let how = Strategy::Prefill(Prefill::Assistant);
        let v = rw(body, &how, "Hello wor \n", 7).unwrap();
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
        let v = rw(body, &Strategy::Instruction("go on".into()), "Hello", 1).unwrap();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1], json!({"role":"assistant","content":"Hello"}));
        assert_eq!(msgs[2], json!({"role":"user","content":"go on"}));
    }

    #[test]
    fn restart_only_swaps_the_model() {
        let body = br#"{"model":"a","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
        let out = crate::rewrite::rewritten_bytes(&WIRE, body, "b", &Strategy::Restart, "Hello", 1)
            .unwrap();
        assert_eq!(
            &out[..],
            &br#"{"model":"b","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#[..]
        );
    }

    #[test]
    fn a_client_prefill_is_continued_not_duplicated() {
        let body = br#"{"model":"a","max_tokens":10,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"{"}]}"#;
        let v = rw(body, &Strategy::Prefill(Prefill::Assistant), "\"a\": 1 ", 1).unwrap();
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
            let err = rw(body, &s, "x", 1).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
        let thinking = br#"{"model":"a","max_tokens":10,"thinking":{"type":"enabled","budget_tokens":5},"messages":[{"role":"user","content":"hi"}]}"#;
        assert!(rw(thinking, &s, "x", 1).is_err());
        assert!(!WIRE.prefill_allowed(&RequestIndex::read(thinking, &WIRE.request)));
    }

    #[test]
    fn max_tokens_never_drops_below_the_thinking_budget() {
        let body = br#"{"model":"a","max_tokens":2000,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"hi"}]}"#;
        let v = rw(body, &Strategy::instruction(), "x", 1990).unwrap();
        assert_eq!(v["max_tokens"], 1025);
    }
}
