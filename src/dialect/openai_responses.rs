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

use bytes::Bytes;
use memchr::memmem::Finder;
use std::sync::OnceLock;

use super::{
    sse_event, Codec, Decode, Decoded, Encode, ErrorKind, FastText, Rewritten, Rules, Unreadable,
    Wire,
};
use crate::json::{
    members, not_null, patch_members, scan_literal, text, write_str, RequestIndex, RequestShape,
};
use crate::outbox::Outbox;
use crate::relay::hold::{Held, HeldKind};
use crate::relay::item::{BlockKind, InBand, Item, Literal, Source, Span, Start, Stop, Usage};
use crate::strategy::{RewriteError, Strategy};
use crate::transcript::Transcript;
use crate::walk;

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
                let [status, usage] = members(response, ["status", "usage"])
                    .ok_or_else(|| Unreadable::new("an unreadable response"))?;
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

// ---- writing ---------------------------------------------------------------------------

/// An output item as the client has it.
#[derive(Debug)]
enum Output {
    /// A message, built from the events the client got.
    Message {
        /// Its `id`, a JSON value.
        id: String,
        parts: Vec<Part>,
        done: bool,
    },
    /// An item the client has whole (its `output_item.done` value).
    Whole(String),
}

/// A content part of a message the client has.
#[derive(Debug)]
struct Part {
    /// `output_text`, `refusal`, or another type written as it came (`raw`).
    kind: PartKind,
    text: String,
    /// Annotations added to it, JSON values.
    annotations: Vec<String>,
}

#[derive(Debug, PartialEq)]
enum PartKind {
    Text,
    Refusal,
    Other(String),
}

/// What the stream's terminal event says, kept until it is written.
#[derive(Debug)]
struct Closing {
    /// `response.completed` or `response.incomplete`.
    kind: String,
    /// Its `response` object as it came.
    response: String,
    /// Output tokens of earlier attempts, to add to its usage.
    base: u32,
}

/// Writes the client's events where they cannot go out as they came, and follows those that
/// do: the last `sequence_number` the client got, and its output items.
#[derive(Debug, Default)]
struct EventEncoder {
    /// The last `sequence_number` the client got.
    seq: Option<u64>,
    /// The client's response `id` (a JSON value) and its `response.created` response object.
    id: String,
    created: String,
    /// The client has events of more than one attempt.
    spliced: bool,
    /// It wrote a numbered event.
    wrote: bool,
    outputs: Vec<Output>,
    /// Bytes of text kept in `outputs`, and the most it may keep.
    kept: usize,
    limit: usize,
    /// Text was not kept (over the limit): a final response cannot be rebuilt.
    lost: bool,
    closing: Option<Closing>,
    /// Reused for the text of each delta forwarded by the fast lane.
    piece: String,
}

impl EventEncoder {
    /// The next `sequence_number`.
    fn next(&mut self) -> u64 {
        let n = self.seq.map_or(0, |s| s + 1);
        self.seq = Some(n);
        n
    }

    /// Writes an event of `kind` whose other members are `body` (JSON members, no braces).
    fn event(&mut self, kind: &str, body: &str, out: &mut Outbox) {
        self.wrote = true;
        let n = self.next();
        let mut json = Vec::with_capacity(body.len() + kind.len() + 48);
        json.extend_from_slice(b"{\"type\":");
        write_str(&mut json, kind);
        json.extend_from_slice(format!(",\"sequence_number\":{n}").as_bytes());
        if !body.is_empty() {
            json.push(b',');
            json.extend_from_slice(body.as_bytes());
        }
        json.push(b'}');
        out.push(sse_event(Some(kind), &json));
    }

    /// An upstream event of this wire, renumbered and with `edits` made.
    fn patched(&mut self, data: &str, edits: &[(&str, Option<&str>)], out: &mut Outbox) {
        let Some(kind) = members(data, ["type"])
            .and_then(|[t]| t.and_then(text))
            .map(|t| t.into_owned())
        else {
            return;
        };
        self.wrote = true;
        let n = self.next().to_string();
        let mut all = vec![("sequence_number", Some(n.as_str()))];
        all.extend_from_slice(edits);
        if let Some(json) = patch_members(data, &all) {
            out.push(sse_event(Some(&kind), json.as_bytes()));
        }
    }

    fn keep_text(&mut self, text: &str) -> bool {
        self.kept += text.len();
        if self.kept > self.limit.max(1) {
            self.lost = true;
        }
        !self.lost
    }

    fn message(&mut self, index: u32) -> Option<(&str, &mut Vec<Part>)> {
        match self.outputs.get_mut(index as usize) {
            Some(Output::Message { id, parts, .. }) => Some((id, parts)),
            _ => None,
        }
    }

    /// Records output `index` (the client's), filling gaps so that indices stay positions.
    fn set_output(&mut self, index: u32, output: Output) {
        let at = index as usize;
        while self.outputs.len() < at {
            self.outputs.push(Output::Whole("null".into()));
        }
        match self.outputs.get_mut(at) {
            Some(slot) => *slot = output,
            None => self.outputs.push(output),
        }
    }

    /// A content part added to the client's message `index` (from the part's JSON).
    fn add_part(&mut self, index: u32, part: &str) -> usize {
        let kind = match members(part, ["type"])
            .and_then(|[t]| t.and_then(text))
            .as_deref()
        {
            Some("output_text") => PartKind::Text,
            Some("refusal") => PartKind::Refusal,
            _ => PartKind::Other(part.to_owned()),
        };
        match self.message(index) {
            Some((_, parts)) => {
                parts.push(Part {
                    kind,
                    text: String::new(),
                    annotations: Vec::new(),
                });
                parts.len() - 1
            }
            None => 0,
        }
    }

    /// What an event of the client's message `index` adds to it (parts, refusal text,
    /// annotations); its `content_index` is a position among the client's parts.
    fn follow_delta(&mut self, index: u32, data: &str, written: bool) -> Option<usize> {
        let [kind, part, delta, annotation] =
            members(data, ["type", "part", "delta", "annotation"])?;
        let kind = kind.and_then(text)?;
        match &*kind {
            "response.content_part.added" => Some(self.add_part(index, part?)),
            "response.refusal.delta" => {
                let delta = delta.and_then(text)?;
                let keep = self.keep_text(&delta);
                let (_, parts) = self.message(index)?;
                let at = parts.iter().rposition(|p| p.kind == PartKind::Refusal)?;
                if keep {
                    parts[at].text.push_str(&delta);
                }
                Some(at)
            }
            "response.output_text.annotation.added" => {
                let (_, parts) = self.message(index)?;
                let at = parts.iter().rposition(|p| p.kind == PartKind::Text)?;
                parts[at].annotations.push(annotation?.to_owned());
                Some(at)
            }
            _ if written => None,
            _ => {
                let (_, parts) = self.message(index)?;
                Some(parts.len().saturating_sub(1))
            }
        }
    }

    /// The client's output items, as the final response's `output`.
    fn output_json(&self) -> String {
        let mut out = String::from("[");
        for (i, output) in self.outputs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match output {
                Output::Whole(item) => out.push_str(item),
                Output::Message { id, parts, done } => {
                    out.push_str(&message_json(id, parts, *done))
                }
            }
        }
        out.push(']');
        out
    }
}

fn message_json(id: &str, parts: &[Part], done: bool) -> String {
    let status = if done { "completed" } else { "in_progress" };
    let mut out = format!(
        r#"{{"id":{id},"type":"message","status":"{status}","role":"assistant","content":["#
    );
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&part_json(part));
    }
    out.push_str("]}");
    out
}

fn part_json(part: &Part) -> String {
    let mut out = Vec::new();
    match &part.kind {
        PartKind::Text => {
            out.extend_from_slice(br#"{"type":"output_text","text":"#);
            write_str(&mut out, &part.text);
            out.extend_from_slice(br#","annotations":["#);
            out.extend_from_slice(part.annotations.join(",").as_bytes());
            out.extend_from_slice(br#"],"logprobs":[]}"#);
        }
        PartKind::Refusal => {
            out.extend_from_slice(br#"{"type":"refusal","refusal":"#);
            write_str(&mut out, &part.text);
            out.push(b'}');
        }
        PartKind::Other(raw) => out.extend_from_slice(raw.as_bytes()),
    }
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// The `sequence_number` of an event of this wire, found by its key's bytes (quotes inside
/// JSON strings are escaped, so text cannot spell the key with its closing quote), whitespace
/// allowed around the colon; `None` when it has none, or one that is not a whole number.
fn sequence_number(data: &str) -> Option<u64> {
    static KEY: OnceLock<Finder<'static>> = OnceLock::new();
    let key = KEY.get_or_init(|| Finder::new(br#""sequence_number""#));
    let b = data.as_bytes();
    key.find_iter(b).find_map(|at| {
        let colon = walk::ws(b, at + key.needle().len());
        if b.get(colon) != Some(&b':') {
            // The name as a value, not a key.
            return None;
        }
        let start = walk::ws(b, colon + 1);
        let digits = b
            .get(start..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        data.get(start..start + digits)?.parse().ok()
    })
}

impl Encode for EventEncoder {
    fn begin(&mut self, start: &Start, src: &Source<'_>) {
        self.id = src.get(start.id).to_owned();
        self.created = src.get(start.created).to_owned();
    }

    fn start(&mut self, out: &mut Outbox) {
        let body = format!("\"response\":{}", self.created);
        self.event("response.created", &body, out);
    }

    fn block_start(
        &mut self,
        index: u32,
        kind: BlockKind,
        native: Span,
        src: &Source<'_>,
        out: &mut Outbox,
    ) {
        if kind != BlockKind::Text {
            return;
        }
        let id = match members(src.get(native), ["id"]) {
            Some([Some(id)]) if src.wire.is(&WIRE) => id.to_owned(),
            _ => format!("\"msg_{}_{index}\"", self.id.trim_matches('"')),
        };
        let body = format!(
            r#""output_index":{index},"item":{{"id":{id},"type":"message","status":"in_progress","content":[],"role":"assistant"}}"#
        );
        self.event("response.output_item.added", &body, out);
        self.set_output(
            index,
            Output::Message {
                id,
                parts: Vec::new(),
                done: false,
            },
        );
    }

    fn text(&mut self, index: u32, text: &str, out: &mut Outbox) {
        let Some((_, parts)) = self.message(index) else {
            return;
        };
        let open = parts.iter().rposition(|p| p.kind == PartKind::Text);
        let at = match open {
            Some(at) => at,
            None => {
                let at = parts.len();
                let id = self
                    .message(index)
                    .map_or(String::new(), |(id, _)| id.to_owned());
                let body = format!(
                    r#""item_id":{id},"output_index":{index},"content_index":{at},"part":{{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#
                );
                self.event("response.content_part.added", &body, out);
                self.add_part(index, r#"{"type":"output_text"}"#)
            }
        };
        let keep = self.keep_text(text);
        let Some((id, parts)) = self.message(index) else {
            return;
        };
        let id = id.to_owned();
        if keep {
            if let Some(part) = parts.get_mut(at) {
                part.text.push_str(text);
            }
        }
        let mut body =
            format!(r#""item_id":{id},"output_index":{index},"content_index":{at},"delta":"#)
                .into_bytes();
        write_str(&mut body, text);
        body.extend_from_slice(br#","logprobs":[]"#);
        let body = String::from_utf8(body).expect("JSON text is UTF-8");
        self.event("response.output_text.delta", &body, out);
    }

    fn other_delta(&mut self, index: u32, src: &Source<'_>, out: &mut Outbox) {
        if !src.wire.is(&WIRE) {
            return;
        }
        let is_text_part = members(src.data, ["type", "part"]).is_some_and(|[t, p]| {
            t.and_then(text).as_deref() == Some("response.content_part.added")
                && p.and_then(|p| members(p, ["type"]))
                    .and_then(|[t]| t.and_then(text))
                    .as_deref()
                    == Some("output_text")
        });
        let has_open_text = self
            .message(index)
            .is_some_and(|(_, parts)| parts.iter().any(|p| p.kind == PartKind::Text));
        if is_text_part && has_open_text {
            // The continuation goes on in the part the client has open.
            return;
        }
        let Some(at) = self.follow_delta(index, src.data, false) else {
            return;
        };
        let id = self.message(index).map(|(id, _)| id.to_owned());
        let (index, at) = (index.to_string(), at.to_string());
        let mut edits = vec![("output_index", Some(index.as_str()))];
        if let Some(id) = &id {
            edits.push(("item_id", Some(id.as_str())));
            if members(src.data, ["content_index"]).is_some_and(|[c]| c.is_some()) {
                edits.push(("content_index", Some(at.as_str())));
            }
        }
        self.patched(src.data, &edits, out);
    }

    fn block_stop(&mut self, index: u32, out: &mut Outbox) {
        let Some(Output::Message { id, parts, done }) = self.outputs.get_mut(index as usize) else {
            return;
        };
        *done = true;
        let id = id.clone();
        let parts: Vec<(usize, String, Option<String>)> = parts
            .iter()
            .enumerate()
            .map(|(at, p)| {
                let whole = match p.kind {
                    PartKind::Text => {
                        let mut t = Vec::new();
                        write_str(&mut t, &p.text);
                        Some(String::from_utf8(t).expect("JSON text is UTF-8"))
                    }
                    _ => None,
                };
                (at, part_json(p), whole)
            })
            .collect();
        for (at, part, whole) in parts {
            if let Some(whole) = whole {
                let body = format!(
                    r#""item_id":{id},"output_index":{index},"content_index":{at},"text":{whole},"logprobs":[]"#
                );
                self.event("response.output_text.done", &body, out);
            }
            let body = format!(
                r#""item_id":{id},"output_index":{index},"content_index":{at},"part":{part}"#
            );
            self.event("response.content_part.done", &body, out);
        }
        let item = match self.outputs.get(index as usize) {
            Some(Output::Message { id, parts, done }) => message_json(id, parts, *done),
            _ => return,
        };
        let body = format!(r#""output_index":{index},"item":{item}"#);
        self.event("response.output_item.done", &body, out);
    }

    fn held(&mut self, index: u32, held: &Held, out: &mut Outbox) {
        let position = index.to_string();
        let ours = held.wire.is(&WIRE) && !held.native.is_empty();
        if !ours {
            if held.kind != HeldKind::ToolCall {
                // Reasoning and other items of another wire have no form here.
                return;
            }
            let mut item = br#"{"type":"function_call","status":"completed","call_id":"#.to_vec();
            write_str(&mut item, &held.id);
            item.extend_from_slice(br#","name":"#);
            write_str(&mut item, &held.name);
            item.extend_from_slice(br#","arguments":"#);
            write_str(&mut item, &held.arguments);
            item.push(b'}');
            let item = String::from_utf8(item).expect("JSON text is UTF-8");
            let body = format!(r#""output_index":{position},"item":{item}"#);
            self.event("response.output_item.added", &body, out);
            self.event("response.output_item.done", &body, out);
            self.set_output(index, Output::Whole(item));
            return;
        }
        let body = format!(r#""output_index":{position},"item":{}"#, held.native);
        self.event("response.output_item.added", &body, out);
        let item_id = members(&held.native, ["id"]).and_then(|[id]| id.map(str::to_owned));
        if held.kind == HeldKind::ToolCall && !held.arguments.is_empty() {
            let mut body = Vec::new();
            if let Some(id) = &item_id {
                body.extend_from_slice(format!(r#""item_id":{id},"#).as_bytes());
            }
            body.extend_from_slice(format!(r#""output_index":{position},"delta":"#).as_bytes());
            write_str(&mut body, &held.arguments);
            let body = String::from_utf8(body).expect("JSON text is UTF-8");
            self.event("response.function_call_arguments.delta", &body, out);
        }
        let mut whole = None;
        for data in held.others() {
            if let Some([Some(kind), item]) = members(data, ["type", "item"]) {
                if text(kind).as_deref() == Some("response.output_item.done") {
                    whole = item.map(str::to_owned);
                }
            }
            self.patched(data, &[("output_index", Some(&position))], out);
        }
        let item = whole.unwrap_or_else(|| held.native.clone());
        self.set_output(index, Output::Whole(item));
    }

    fn finish(&mut self, _: Stop, base: u32, src: &Source<'_>, _: &mut Outbox) {
        // Written with the terminal event, which is the same event on this wire.
        if !src.wire.is(&WIRE) {
            return;
        }
        if let Some([Some(kind), Some(response)]) = members(src.data, ["type", "response"]) {
            self.closing = Some(Closing {
                kind: text(kind).map_or_else(|| "response.completed".into(), |k| k.into_owned()),
                response: response.to_owned(),
                base,
            });
        }
    }

    // The terminal event carries usage on this wire.
    fn usage(&mut self, _: Usage, _: u32, _: &Source<'_>, _: &mut Outbox) {}

    fn usage_estimate(&mut self, _: u32, _: &mut Outbox) {}

    fn terminal(&mut self, out: &mut Outbox) {
        let closing = self.closing.take();
        let (kind, response, base) = match &closing {
            Some(c) => (c.kind.as_str(), c.response.as_str(), c.base),
            None => ("response.completed", self.created.as_str(), 0),
        };
        if self.spliced && self.lost {
            let message = "the joined answer is longer than the layer keeps: its final response cannot be written";
            self.error(&ErrorKind::Upstream, message, out);
            return;
        }
        let output = self.output_json();
        let usage =
            members(response, ["usage"]).and_then(|[u]| not_null(u).map(|u| summed_usage(u, base)));
        let mut edits: Vec<(&str, Option<&str>)> = Vec::new();
        if !self.id.is_empty() {
            edits.push(("id", Some(&self.id)));
        }
        if self.spliced || closing.is_none() {
            edits.push(("output", Some(&output)));
        }
        if closing.is_none() {
            edits.push(("status", Some("\"completed\"")));
        }
        if let Some(Some(usage)) = &usage {
            edits.push(("usage", Some(usage)));
        }
        let Some(response) = patch_members(response, &edits) else {
            self.error(
                &ErrorKind::Upstream,
                "the final response could not be written",
                out,
            );
            return;
        };
        let body = format!("\"response\":{response}");
        self.event(kind, &body, out);
    }

    fn restamp(&mut self, src: &Source<'_>, out: &mut Outbox) {
        if !src.wire.is(&WIRE) {
            return;
        }
        let kind = members(src.data, ["type"]).and_then(|[t]| t.and_then(text));
        match kind.as_deref() {
            // The client has its response's lifecycle: a later attempt's would replace the
            // snapshot openai-node keeps (dropping its items) or change the response's id.
            Some("response.created" | "response.in_progress" | "response.queued")
                if self.spliced => {}
            Some(_) => self.patched(src.data, &[], out),
            None => {}
        }
    }

    fn error(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox) {
        // Both shapes: the documented members at the top level, and the nested `error` the
        // API sends; the official SDKs raise on the nested one (raw streams and helpers).
        let (kind, code) = type_and_code(kind);
        let mut body = format!(r#""code":{code},"message":"#).into_bytes();
        write_str(&mut body, message);
        body.extend_from_slice(br#","param":null,"error":{"type":"#);
        write_str(&mut body, kind);
        body.extend_from_slice(format!(r#","code":{code},"message":"#).as_bytes());
        write_str(&mut body, message);
        body.extend_from_slice(br#","param":null}"#);
        let body = String::from_utf8(body).expect("JSON text is UTF-8");
        self.event("error", &body, out);
    }

    fn keep_alive(&self, _after_id: bool) -> Bytes {
        // A comment without its blank line: after an upstream `id:` line, openai-python
        // dispatches an empty event at every blank line and fails to parse it.
        Bytes::from_static(b": keep-alive\n")
    }

    fn follows(&self) -> bool {
        true
    }

    fn bound(&mut self, limits: &super::Limits) {
        self.limit = limits.transcript;
    }

    fn sent(&mut self, items: &[Item], src: &Source<'_>) {
        self.seq = sequence_number(src.data).or_else(|| Some(self.seq.map_or(0, |s| s + 1)));
        for item in items {
            match *item {
                Item::BlockStart {
                    block,
                    kind: BlockKind::Text,
                    native,
                } => {
                    let id = members(src.get(native), ["id"])
                        .and_then(|[id]| id.map(str::to_owned))
                        .unwrap_or_else(|| "null".into());
                    self.set_output(
                        block,
                        Output::Message {
                            id,
                            parts: Vec::new(),
                            done: false,
                        },
                    );
                }
                Item::Text { block, literal } => {
                    let mut piece = String::new();
                    literal.read_into(src.data, &mut piece);
                    self.sent_text_piece(block, &piece);
                }
                Item::OtherDelta { block } => {
                    self.follow_delta(block, src.data, true);
                }
                _ => {}
            }
        }
    }

    fn sent_text(&mut self, text: &FastText<'_>) {
        self.seq = text.number.or_else(|| Some(self.seq.map_or(0, |s| s + 1)));
        let mut piece = std::mem::take(&mut self.piece);
        piece.clear();
        crate::relay::item::read_literal(text.literal, text.plain, &mut piece);
        self.sent_text_piece(text.block, &piece);
        self.piece = piece;
    }

    fn splice(&mut self) {
        self.spliced = true;
    }

    fn wrote(&self) -> bool {
        self.wrote
    }
}

impl EventEncoder {
    fn sent_text_piece(&mut self, index: u32, piece: &str) {
        let keep = self.keep_text(piece);
        if let Some((_, parts)) = self.message(index) {
            if let Some(part) = parts.iter_mut().rev().find(|p| p.kind == PartKind::Text) {
                if keep {
                    part.text.push_str(piece);
                }
            }
        }
    }
}

/// `usage` with `base` more output tokens (and total).
fn summed_usage(usage: &str, base: u32) -> Option<String> {
    if base == 0 {
        return Some(usage.to_owned());
    }
    let [output, total] = members(usage, ["output_tokens", "total_tokens"])?;
    let add = |raw: Option<&str>| {
        raw.and_then(|r| r.parse::<u64>().ok())
            .map(|n| (n + u64::from(base)).to_string())
    };
    let (output, total) = (add(output), add(total));
    let mut edits = Vec::new();
    if let Some(o) = &output {
        edits.push(("output_tokens", Some(o.as_str())));
    }
    if let Some(t) = &total {
        edits.push(("total_tokens", Some(t.as_str())));
    }
    patch_members(usage, &edits)
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
mod tests {
    use super::*;
    use crate::rewrite::rewritten;
    use serde_json::json;

    const BODY: &[u8] = br#"{"model":"a","max_output_tokens":50,"instructions":"Be brief.","input":[{"role":"user","content":"hi"}],"stream":true}"#;

    #[test]
    fn instruction_appends_the_partial_answer_and_the_instruction_as_input_items() {
        let how = Strategy::Instruction("go on".into());
        let v = rewritten(&WIRE, BODY, "b", &how, "Hel", 3).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["max_output_tokens"], 47);
        assert_eq!(v["instructions"], "Be brief.");
        assert_eq!(
            v["input"],
            json!([{"role":"user","content":"hi"},{"role":"assistant","content":"Hel"},{"role":"user","content":"go on"}])
        );
    }

    #[test]
    fn a_string_input_becomes_the_opening_user_item() {
        let body = br#"{"model":"a","input":"Say \"hi\"","stream":true}"#;
        let how = Strategy::Instruction("go on".into());
        let v = rewritten(&WIRE, body, "b", &how, "H", 1).unwrap();
        assert_eq!(
            v["input"],
            json!([{"role":"user","content":"Say \"hi\""},{"role":"assistant","content":"H"},{"role":"user","content":"go on"}])
        );
        let v = rewritten(&WIRE, body, "b", &Strategy::Restart, "H", 1).unwrap();
        assert_eq!(v["input"], "Say \"hi\"");
    }

    #[test]
    fn max_output_tokens_shrinks_but_not_below_the_api_minimum() {
        let how = Strategy::Instruction("go on".into());
        let v = rewritten(&WIRE, BODY, "b", &how, "Hel", 45).unwrap();
        assert_eq!(v["max_output_tokens"], 16);
    }

    #[test]
    fn prefill_and_conversation_are_not_continued() {
        let how = Strategy::Prefill(crate::strategy::Prefill::Assistant);
        assert!(rewritten(&WIRE, BODY, "b", &how, "Hel", 1).is_err());
        let body =
            br#"{"model":"a","conversation":"conv_1","input":[{"role":"user","content":"hi"}]}"#;
        let how = Strategy::Instruction("go on".into());
        let err = rewritten(&WIRE, body, "b", &how, "Hel", 1).unwrap_err();
        assert!(err.to_string().contains("conversation"), "{err}");
        // Nothing reached the client: the same request elsewhere is fine.
        assert!(rewritten(&WIRE, body, "b", &Strategy::Restart, "", 0).is_ok());
    }

    #[test]
    fn previous_response_id_is_kept_for_the_provider_that_can_resolve_it() {
        let body = br#"{"model":"a","previous_response_id":"resp_1","input":"more"}"#;
        let how = Strategy::Instruction("go on".into());
        let v = rewritten(&WIRE, body, "b", &how, "Hel", 1).unwrap();
        assert_eq!(v["previous_response_id"], "resp_1");
    }

    #[test]
    fn background_requests_are_retried_only_before_the_client_has_events() {
        let index = RequestIndex::read(
            br#"{"model":"a","background":true,"input":"x"}"#,
            &WIRE.request,
        );
        let mut t = Transcript::new(100);
        assert!(WIRE.check_retry(&Strategy::Restart, &index, &t).is_ok());
        t.mark_started();
        assert!(WIRE.check_retry(&Strategy::Restart, &index, &t).is_err());
        let index = RequestIndex::read(br#"{"model":"a","input":"x"}"#, &WIRE.request);
        assert!(WIRE.check_retry(&Strategy::Restart, &index, &t).is_ok());
    }

    #[test]
    fn in_band_errors_of_either_shape_are_read_and_classified() {
        let mut d = EventDecoder::default();
        let mut items = Vec::new();
        let nested = r#"{"type":"error","sequence_number":2,"error":{"type":"too_many_requests","code":"rate_limit_exceeded","message":"slow down","param":null}}"#;
        d.decode(None, nested, &mut items).unwrap();
        let Item::Error(e) = items[0] else { panic!() };
        assert!(!e.client);
        assert_eq!(e.message.get(nested), r#""slow down""#);
        items.clear();
        let flat = r#"{"type":"error","code":"invalid_prompt","message":"no","param":null,"sequence_number":1}"#;
        d.decode(None, flat, &mut items).unwrap();
        let Item::Error(e) = items[0] else { panic!() };
        assert!(e.client);
        items.clear();
        let failed = r#"{"type":"response.failed","sequence_number":9,"response":{"id":"r","status":"failed","error":{"code":"server_error","message":"boom"}}}"#;
        d.decode(None, failed, &mut items).unwrap();
        let Item::Error(e) = items[0] else { panic!() };
        assert!(!e.client);
        assert_eq!(e.code.get(failed), r#""server_error""#);
    }

    #[test]
    fn an_event_for_an_item_never_added_is_unreadable() {
        let mut d = EventDecoder::default();
        let mut items = Vec::new();
        let delta = r#"{"type":"response.output_text.delta","output_index":3,"content_index":0,"delta":"x","sequence_number":5}"#;
        assert!(d.decode(None, delta, &mut items).is_err());
        assert!(d
            .decode(None, r#"{"sequence_number":1}"#, &mut items)
            .is_err());
        assert!(d.decode(None, "[1]", &mut items).is_err());
    }

    /// A decoder with a message open at output 0 and a function call at output 1.
    fn decoder_with_outputs() -> EventDecoder {
        let mut d = EventDecoder::default();
        let mut items = Vec::new();
        for added in [
            r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"role":"assistant"}}"#,
            r#"{"type":"response.output_item.added","sequence_number":3,"output_index":1,"item":{"id":"fc_1","type":"function_call","status":"in_progress","call_id":"call_1","name":"f","arguments":""}}"#,
        ] {
            d.decode(None, added, &mut items).unwrap();
        }
        d
    }

    #[test]
    fn the_fast_lane_reads_a_text_delta_exactly_as_the_general_reader_does() {
        let shapes = [
            // The API's key order.
            r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hel","logprobs":[],"obfuscation":"a1"}"#,
            // Sorted keys, whitespace, an escape, logprobs with nested values.
            r#"{ "content_index" : 0, "delta" : "l\u00f6 \"q\"\n", "item_id" : "msg_1", "logprobs" : [{"token":"l","logprob":-0.5e-3,"bytes":[108],"top_logprobs":[]}], "output_index" : 0, "sequence_number" : 17, "type" : "response.output_text.delta" }"#,
            // No sequence number (older streams), an empty delta, an unknown member.
            r#"{"type":"response.output_text.delta","output_index":0,"delta":"","extra":{"a":[true,false,null]}}"#,
        ];
        for data in shapes {
            let mut d = decoder_with_outputs();
            let fast = d
                .fast_text(Some(b"response.output_text.delta"), data.as_bytes())
                .unwrap_or_else(|| panic!("not on the fast lane: {data}"));
            let mut items = Vec::new();
            d.decode(None, data, &mut items).unwrap();
            let [Item::Text { block, literal }] = items[..] else {
                panic!("{items:?}")
            };
            assert_eq!(fast.block, block, "{data}");
            assert_eq!(fast.literal, literal.raw(data), "{data}");
            let (mut general, mut read) = (String::new(), String::new());
            literal.read_into(data, &mut general);
            crate::relay::item::read_literal(fast.literal, fast.plain, &mut read);
            assert_eq!(read, general, "{data}");
            assert_eq!(fast.number, sequence_number(data), "{data}");
            assert!(
                d.fast_text(None, data.as_bytes()).is_some(),
                "no event name"
            );
        }
    }

    #[test]
    fn the_fast_lane_leaves_every_other_shape_to_the_general_reader() {
        let d = &mut decoder_with_outputs();
        let shape = |members: &str| format!("{{{members}}}");
        let ok = r#""type":"response.output_text.delta","sequence_number":4,"output_index":0,"delta":"x""#;
        assert!(d.fast_text(None, shape(ok).as_bytes()).is_some());
        let not_fast = [
            // Another event, or the same name escaped or twice.
            ok.replace("output_text.delta", "refusal.delta"),
            ok.replace(r#""type""#, r#""\u0074ype""#),
            format!(r#"{ok},"type":"response.output_text.delta""#),
            format!(r#"{ok},"delta":"y""#),
            format!(r#"{ok},"output_index":0"#),
            format!(r#"{ok},"sequence_number":5"#),
            // A member the general reader reads on other events.
            format!(r#"{ok},"item":null"#),
            format!(r#"{ok},"response":{{}}"#),
            format!(r#"{ok},"error":null"#),
            // An output that is not a message, or never added.
            ok.replace(r#""output_index":0"#, r#""output_index":1"#),
            ok.replace(r#""output_index":0"#, r#""output_index":7"#),
            // Numbers that are not whole, or not numbers.
            ok.replace(r#""output_index":0"#, r#""output_index":0.0"#),
            ok.replace(r#""output_index":0"#, r#""output_index":"0""#),
            ok.replace(r#""sequence_number":4"#, r#""sequence_number":-4"#),
            ok.replace(r#""sequence_number":4"#, r#""sequence_number":4e0"#),
            ok.replace(
                r#""sequence_number":4"#,
                r#""sequence_number":99999999999999999999999"#,
            ),
            // A delta that is not text, or does not read exactly.
            ok.replace(r#""delta":"x""#, r#""delta":null"#),
            ok.replace(r#""delta":"x""#, r#""delta":"\x""#),
            ok.replace(r#""delta":"x""#, "\"delta\":\"a\tb\""),
            // Anything else invalid in the event.
            format!(r#"{ok},"logprobs":[01]"#),
            format!(r#"{ok},"a":tru"#),
        ];
        for members in &not_fast {
            let data = shape(members);
            assert!(d.fast_text(None, data.as_bytes()).is_none(), "{data}");
        }
        // Not one object, a missing member, another event name, bytes that are not UTF-8.
        for data in [
            format!("{} x", shape(ok)),
            format!("[{}]", shape(ok)),
            shape(&ok.replace(r#","delta":"x""#, "")),
            shape(&ok.replace(r#","output_index":0"#, "")),
        ] {
            assert!(d.fast_text(None, data.as_bytes()).is_none(), "{data}");
        }
        let data = shape(ok);
        assert!(d.fast_text(Some(b"message"), data.as_bytes()).is_none());
        let mut bytes = data.into_bytes();
        let x = bytes.windows(3).position(|w| w == b"\"x\"").unwrap();
        bytes[x + 1] = 0xff;
        assert!(d.fast_text(None, &bytes).is_none(), "not UTF-8");
    }

    #[test]
    fn the_sequence_number_is_read_in_either_key_order() {
        assert_eq!(
            sequence_number(r#"{"type":"x","sequence_number":12}"#),
            Some(12)
        );
        assert_eq!(
            sequence_number(r#"{"a":"\"sequence_number\":3","sequence_number": 7,"b":1}"#),
            Some(7)
        );
        assert_eq!(sequence_number(r#"{"type":"x"}"#), None);
        assert_eq!(
            sequence_number(r#"{"a":"sequence_number", "sequence_number" : 8}"#),
            Some(8),
            "whitespace around the colon; the name as a value first"
        );
    }
}
