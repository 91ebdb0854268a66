//! The OpenAI Responses API (`POST /v1/responses` with `"stream": true`).
//!
//! Stream shape: named events, each `{"type": NAME, "sequence_number": N, ...}`:
//! `response.created` (then `response.in_progress` or `response.queued`); per output item
//! `response.output_item.added`, its content (`content_part.added`, `output_text.delta`,
//! `output_text.done`, `content_part.done`; or `function_call_arguments.delta`/`.done`; or
//! reasoning summary events), `response.output_item.done`; then one of `response.completed`,
//! `response.incomplete`, `response.failed`. No `[DONE]`. An `error` event is in-band.
//!
//! Blocks, for the core: each output item is a block, numbered in the order items are added,
//! so the client's block index is its `output_index`. A message is a text block; its `.done`
//! events only restate what the deltas said, so they are [`Item::Restated`] and the encoder
//! writes them (with the whole joined value) when the block closes. Function calls, reasoning
//! and every other item are held until their `output_item.done`, then replayed.
//!
//! Numbering: every event carries `sequence_number`, and later events repeat what earlier ones
//! said (`.done` values, the final `response.output`), so the encoder follows the client's
//! stream ([`Encode::follows`]): events go out as they came until it first writes one itself;
//! from then on it writes every event, numbered densely after the last the client got.
//!
//! Continuation: the API has no prefill. The instruction strategy appends input items: the
//! partial answer as `{"role":"assistant","content":…}`, then the user's instruction. A string
//! `input` becomes the opening user item of an array. Requests with `conversation` are not
//! continued (the provider would append the continuation turns to the user's conversation),
//! `background` requests are not retried once the client has events (the response goes on at
//! the provider, and `retrieve(…, starting_after)` would read the primary's numbering).
//! `previous_response_id` is kept: it resolves only at the provider that stored it, so a
//! fallback elsewhere answers 400 and the layer moves on or gives up naming the original
//! failure, as for any failed fallback.

use super::prelude::*;
use memchr::memmem::Finder;
use std::sync::OnceLock;

use crate::json::{patch_members, scan_literal};
use crate::transcript::Transcript;
use crate::walk;

mod encode;
use encode::EventEncoder;

pub(crate) const WIRE: Wire = Wire {
    name: "openai-responses",
    path: "/responses",
    codec: &CODEC,
    rules: &OpenAiResponses,
    request_name: "Responses",
    request: RequestShape {
        model: "model",
        messages: "input",
        text_conversation: true,
        limits: &["max_output_tokens"],
        extra: &["background", "conversation", "previous_response_id"],
    },
    stamps_every_event: true,
    terminal: "response.completed",
    trims_continuation: false,
    // Reasoning items end with a summary and encrypted content: held until complete.
    live_reasoning: false,
};

/// Reads each attempt's events, writes the client's.
const CODEC: Codec<EventDecoder, EventEncoder> = Codec::NEW;

/// The API refuses a smaller `max_output_tokens`.
const MIN_OUTPUT_TOKENS: u64 = 16;

// ---- reading ---------------------------------------------------------------------------

/// Reads one attempt's events.
#[derive(Debug, Default)]
struct EventDecoder {
    started: bool,
    /// Open output items: upstream `output_index` → block, whether it is a message.
    open: Vec<(u64, u32, bool)>,
    next_block: u32,
}

/// The members of an event the decoder reads.
const KEYS: [&str; 7] = [
    "type",
    "output_index",
    "item",
    "delta",
    "response",
    "error",
    "sequence_number",
];

impl Decode for EventDecoder {
    fn fast_text<'a>(&mut self, name: Option<&[u8]>, data: &'a [u8]) -> Option<FastText<'a>> {
        // Every byte of the event goes out as it came: the name too must be one read here.
        if name.is_some_and(|n| n != b"response.output_text.delta") {
            return None;
        }
        let data = std::str::from_utf8(data).ok()?;
        let delta = fast_delta(data)?;
        let block = self
            .open
            .iter()
            .find(|&&(at, _, message)| at == delta.output_index && message)
            .map(|&(_, block, _)| block)?;
        Some(FastText {
            block,
            literal: data.get(delta.literal.0..delta.literal.1)?,
            plain: delta.plain,
            number: delta.sequence_number,
        })
    }

    fn decode(&mut self, _: Option<&str>, data: &str, items: &mut Vec<Item>) -> Decoded {
        let [kind, output_index, item, delta, response, error, _] =
            members(data, KEYS).ok_or_else(|| Unreadable::new("an unreadable event"))?;
        let kind = kind
            .and_then(text)
            .ok_or_else(|| Unreadable::new("an event without a `type`"))?;
        match &*kind {
            "response.created" => {
                let response = not_null(response)
                    .ok_or_else(|| Unreadable::new("response.created without a response"))?;
                let [id, model] = members(response, ["id", "model"])
                    .ok_or_else(|| Unreadable::new("an unreadable response"))?;
                if self.started {
                    items.push(Item::Other);
                    return Ok(());
                }
                self.started = true;
                let span = |raw: Option<&str>| raw.map_or(Span::default(), |r| Span::of(data, r));
                items.push(Item::Start(Start {
                    id: span(id),
                    model: span(model),
                    // The whole response object: what a written `response.created` repeats.
                    created: Span::of(data, response),
                    input_tokens: None,
                }));
            }
            "response.completed" | "response.incomplete" => {
                let response = not_null(response)
                    .ok_or_else(|| Unreadable::new("a terminal event without a response"))?;
                let [status, usage, details] =
                    members(response, ["status", "usage", "incomplete_details"])
                        .ok_or_else(|| Unreadable::new("an unreadable response"))?;
                // Why an incomplete response stopped is its stop reason (`max_output_tokens`,
                // `content_filter`); a complete one's is its status.
                let why = not_null(details)
                    .and_then(|d| members(d, ["reason"]))
                    .and_then(|[r]| not_null(r));
                let status = why.or(status);
                let usage = match not_null(usage) {
                    Some(usage) => {
                        let [output, input] = members(usage, ["output_tokens", "input_tokens"])
                            .ok_or_else(|| Unreadable::new("an unreadable usage"))?;
                        Some(Usage {
                            output_tokens: output.and_then(|t| t.parse().ok()),
                            input_tokens: input.and_then(|t| t.parse().ok()),
                        })
                    }
                    None => None,
                };
                self.close_all(items);
                items.push(Item::Finish(Stop {
                    reason: status.map_or(Span::default(), |s| Span::of(data, s)),
                    usage,
                    // The encoder writes its own `response.completed` with the summed usage.
                    report: Span::default(),
                }));
                items.push(Item::Terminal);
            }
            "response.failed" => {
                let error = not_null(response)
                    .and_then(|r| members(r, ["error"]))
                    .and_then(|[e]| not_null(e));
                items.push(in_band(data, error, true)?);
            }
            "error" => {
                // Observed from the API: the error nested under `error`; documented: its
                // members at the top level.
                let nested = not_null(error);
                items.push(in_band(
                    data,
                    Some(nested.unwrap_or(data)),
                    nested.is_none(),
                )?);
            }
            "keepalive" => items.push(Item::KeepAlive),
            "response.output_item.added" => {
                let at = index(output_index)?;
                let item = not_null(item)
                    .ok_or_else(|| Unreadable::new("an output item that is not an object"))?;
                self.item_added(data, at, item, items)?;
            }
            _ => {
                let Some(raw) = output_index else {
                    // Lifecycle and other events of the whole response.
                    items.push(Item::Other);
                    return Ok(());
                };
                let at = index(Some(raw))?;
                let (block, message) = self
                    .open
                    .iter()
                    .find(|(i, _, _)| *i == at)
                    .map(|&(_, b, m)| (b, m))
                    .ok_or_else(|| Unreadable::new("an event for an output item never added"))?;
                let literal = || {
                    not_null(delta)
                        .and_then(|d| Literal::of(data, d))
                        .ok_or_else(|| Unreadable::new("a delta that is not text"))
                };
                match (&*kind, message) {
                    ("response.output_text.delta", true) => items.push(Item::Text {
                        block,
                        literal: literal()?,
                    }),
                    ("response.output_text.done" | "response.content_part.done", true) => {
                        items.push(Item::Restated)
                    }
                    ("response.output_item.done", true) => {
                        self.close(at);
                        items.push(Item::BlockStop { block });
                    }
                    ("response.output_item.done", false) => {
                        // Kept whole with the block: its `item` is the final value.
                        self.close(at);
                        items.push(Item::OtherDelta { block });
                        items.push(Item::BlockStop { block });
                    }
                    ("response.function_call_arguments.delta", false) => {
                        items.push(Item::ToolArgs {
                            block,
                            literal: literal()?,
                        })
                    }
                    (
                        "response.reasoning_summary_text.delta" | "response.reasoning_text.delta",
                        false,
                    ) => {
                        // Read (it counts as generated) and kept as it came: the replay of a
                        // reasoning item has every summary part's deltas before its `.done`.
                        items.push(Item::Reasoning {
                            block,
                            literal: literal()?,
                        });
                        items.push(Item::OtherDelta { block });
                    }
                    _ => items.push(Item::OtherDelta { block }),
                }
            }
        }
        Ok(())
    }
}

/// What [`fast_delta`] read of a `response.output_text.delta` event.
struct FastDelta {
    output_index: u64,
    /// The `delta` literal: where it lies in the data, whether it has no escapes.
    literal: (usize, usize),
    plain: bool,
    sequence_number: Option<u64>,
}

/// The event nearly every stream is made of, `response.output_text.delta`, read from its bytes
/// in one validating walk whatever order its keys come in: `type` that very name, a whole
/// number `output_index`, a string `delta`, a whole number `sequence_number` if any, every
/// other member checked and passed over. `None` for anything else: a key written with an
/// escape (it could hide a second member of a name), a key twice, a member the general reader
/// reads on other events (`item`, `response`, `error`); the general reader then reads it.
fn fast_delta(data: &str) -> Option<FastDelta> {
    const TYPE: &[u8] = b"\"response.output_text.delta\"";
    let b = data.as_bytes();
    let (mut kind, mut output_index, mut delta, mut sequence_number) = (false, None, None, None);
    walk::document(b, |i| {
        walk::object(b, i, 0, |key, at| {
            if !key.plain {
                return None;
            }
            match key.raw {
                b"\"type\"" => {
                    let end = at + TYPE.len();
                    (!std::mem::replace(&mut kind, true) && b.get(at..end)? == TYPE).then_some(end)
                }
                b"\"output_index\"" => whole_number(b, at, &mut output_index),
                b"\"sequence_number\"" => whole_number(b, at, &mut sequence_number),
                b"\"delta\"" => {
                    let scanned = scan_literal(b.get(at..)?)?;
                    let end = at + scanned.len;
                    delta
                        .replace(((at, end), scanned.plain))
                        .is_none()
                        .then_some(end)
                }
                b"\"item\"" | b"\"response\"" | b"\"error\"" => None,
                _ => walk::value(b, at, 1),
            }
        })
    })?;
    let (literal, plain) = delta?;
    Some(FastDelta {
        output_index: output_index?,
        literal,
        plain,
        sequence_number,
    })
}

/// The whole number at `at` into `to` (which must still be empty): the index past it.
fn whole_number(b: &[u8], at: usize, to: &mut Option<u64>) -> Option<usize> {
    let end = walk::value(b, at, 1)?;
    let digits = b.get(at..end)?;
    if to.is_some() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    *to = Some(std::str::from_utf8(digits).ok()?.parse().ok()?);
    Some(end)
}

/// An `output_index`, which must be a whole number.
fn index(raw: Option<&str>) -> Result<u64, Unreadable> {
    raw.and_then(|r| r.parse().ok())
        .ok_or_else(|| Unreadable::new("an event without a numeric `output_index`"))
}

impl EventDecoder {
    fn item_added(&mut self, data: &str, at: u64, item: &str, items: &mut Vec<Item>) -> Decoded {
        if self.open.iter().any(|(i, _, _)| *i == at) {
            return Err(Unreadable::new("an output item added twice"));
        }
        let [kind, call_id, name, arguments] =
            members(item, ["type", "call_id", "name", "arguments"])
                .ok_or_else(|| Unreadable::new("an unreadable output item"))?;
        let string = |raw: Option<&str>| match not_null(raw) {
            None => Ok(Literal::default()),
            Some(r) => Literal::of(data, r)
                .ok_or_else(|| Unreadable::new("an item field that is not text")),
        };
        let kind = kind.and_then(text);
        let (block_kind, message) = match kind.as_deref() {
            Some("message") => (BlockKind::Text, true),
            Some("function_call") => (
                BlockKind::ToolCall {
                    id: string(call_id)?,
                    name: string(name)?,
                },
                false,
            ),
            Some("reasoning") => (BlockKind::Reasoning, false),
            _ => (BlockKind::Other, false),
        };
        let block = self.next_block;
        self.next_block += 1;
        self.open.push((at, block, message));
        items.push(Item::BlockStart {
            block,
            kind: block_kind,
            native: Span::of(data, item),
        });
        let arguments = string(arguments)?;
        if !message && !arguments.is_empty() {
            items.push(Item::ToolArgs {
                block,
                literal: arguments,
            });
        }
        Ok(())
    }

    fn close(&mut self, at: u64) {
        self.open.retain(|(i, _, _)| *i != at);
    }

    /// The response is complete: an item still open is complete with it.
    fn close_all(&mut self, items: &mut Vec<Item>) {
        for (_, block, _) in self.open.drain(..) {
            items.push(Item::BlockStop { block });
        }
    }
}

/// An in-band error: `error` is the object with `type`/`code`/`message` (or the event itself).
fn in_band(data: &str, error: Option<&str>, top_level: bool) -> Result<Item, Unreadable> {
    let [kind, code, message] = match error {
        Some(e) => members(e, ["type", "code", "message"])
            .ok_or_else(|| Unreadable::new("an unreadable error"))?,
        None => [None, None, None],
    };
    // The event's own `type` is `error`, not a kind of error.
    let kind = if top_level { None } else { kind };
    let read = |raw: Option<&str>| not_null(raw).and_then(text).map(|t| t.into_owned());
    let span = |raw: Option<&str>| not_null(raw).map_or(Span::default(), |r| Span::of(data, r));
    Ok(Item::Error(InBand {
        client: is_client_error(read(kind).as_deref(), read(code).as_deref()),
        kind: span(kind),
        code: span(code),
        message: span(message),
    }))
}

/// Errors a retry elsewhere would meet alike: the client gets them as they came.
fn is_client_error(kind: Option<&str>, code: Option<&str>) -> bool {
    const CLIENT: &[&str] = &[
        "invalid_request_error",
        "invalid_prompt",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "invalid_api_key",
        "context_length_exceeded",
        "content_filter",
        "content_policy_violation",
    ];
    kind.into_iter().chain(code).any(|k| {
        CLIENT.contains(&k)
            || k.parse::<u16>()
                .is_ok_and(|n| (400..500).contains(&n) && n != 408 && n != 429)
    })
}

// ---- requests and errors ------------------------------------------------------------

#[derive(Debug)]
struct OpenAiResponses;

impl Rules for OpenAiResponses {
    fn error_body(&self, kind: &ErrorKind, message: &str) -> Bytes {
        let (kind, code) = type_and_code(kind);
        let mut body = br#"{"error":{"message":"#.to_vec();
        write_str(&mut body, message);
        body.extend_from_slice(br#","type":"#);
        write_str(&mut body, kind);
        body.extend_from_slice(format!(r#","param":null,"code":{code}}}}}"#).as_bytes());
        Bytes::from(body)
    }

    fn prefill_allowed(&self, _: &RequestIndex) -> bool {
        // The API has no prefill: a trailing assistant item is a turn of its own.
        false
    }

    fn check_continuation(&self, strategy: &Strategy, index: &RequestIndex) -> Rewritten<()> {
        if let Strategy::Prefill(_) = strategy {
            return Err(RewriteError::new(
                "the Responses API has no prefill; continue with the instruction strategy",
            ));
        }
        if present(index, "conversation") {
            return Err(RewriteError::new(
                "a request with `conversation` is not continued: the provider would append the continuation's turns to the user's conversation",
            ));
        }
        Ok(())
    }

    fn continue_content(&self, _: &mut serde_json::Value, _: &str) -> Rewritten<()> {
        Err(RewriteError::new("the Responses API has no prefill"))
    }

    fn min_token_limit(&self, _: &RequestIndex) -> u64 {
        MIN_OUTPUT_TOKENS
    }

    fn stop_kind(&self, reason: &str) -> StopKind {
        match reason {
            // With function calls in its output: the client's encoder counts them.
            "completed" => StopKind::EndTurn,
            "max_output_tokens" => StopKind::MaxTokens,
            "content_filter" => StopKind::Refusal,
            _ => StopKind::Other,
        }
    }

    fn text_turn(&self, literal: &str) -> Option<Vec<u8>> {
        let mut turn = br#"{"role":"user","content":"#.to_vec();
        turn.extend_from_slice(literal.as_bytes());
        turn.push(b'}');
        Some(turn)
    }

    fn extends_own_prefill(&self) -> bool {
        false
    }

    fn check_retry(&self, _: &Strategy, index: &RequestIndex, t: &Transcript) -> Rewritten<()> {
        if t.started() && index.value("background") == Some("true") {
            return Err(RewriteError::new(
                "a `background` response is not retried once the client has its events: it goes on at the provider, which numbers its events itself",
            ));
        }
        Ok(())
    }
}

/// An error's `type`, and its `code` as a JSON value.
fn type_and_code(kind: &ErrorKind) -> (&str, &'static str) {
    match kind {
        ErrorKind::TooLarge => ("invalid_request_error", "\"request_too_large\""),
        ErrorKind::BadRequest => ("invalid_request_error", "null"),
        ErrorKind::Overloaded => ("server_error", "\"overloaded\""),
        ErrorKind::RateLimited => ("rate_limit_error", "\"rate_limit_exceeded\""),
        ErrorKind::Timeout => ("server_error", "\"timeout\""),
        ErrorKind::Upstream => ("server_error", "\"server_error\""),
        ErrorKind::Named(name) => (name, "null"),
    }
}

/// Whether the request sets `key` to something other than `null`.
fn present(index: &RequestIndex, key: &str) -> bool {
    index.value(key).is_some_and(|v| v != "null")
}

#[cfg(test)]
mod tests;
