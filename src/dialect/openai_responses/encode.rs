//! The Responses API's writing side: the client's events, numbered, with every output item and
//! content part opened and closed in order, and a final response object of the whole answer.

use super::*;
use crate::translate::ids;
use std::time::{SystemTime, UNIX_EPOCH};

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
pub(super) struct EventEncoder {
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
    /// How a fallback of another wire ended, and its usage (input, output over every attempt):
    /// what the terminal event this encoder writes says.
    foreign_stop: Option<StopKind>,
    foreign_usage: Option<(u64, u64)>,
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
pub(super) fn sequence_number(data: &str) -> Option<u64> {
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
        if src.wire.is(&WIRE) {
            self.id = src.get(start.id).to_owned();
            self.created = src.get(start.created).to_owned();
            return;
        }
        // The client's first events are of a fallback of another wire: a response of its own,
        // named after that attempt's message, in progress.
        let raw = src.get(start.id);
        let named = text(raw).unwrap_or_default();
        let mut id = b"resp_".to_vec();
        id.extend(
            named
                .bytes()
                .filter(|b| b.is_ascii_alphanumeric() || *b == b'_'),
        );
        let mut json = Vec::new();
        write_str(&mut json, std::str::from_utf8(&id).unwrap_or("resp_"));
        self.id = String::from_utf8(json).expect("JSON text is UTF-8");
        let model = match text(src.get(start.model)) {
            Some(_) => src.get(start.model).to_owned(),
            None => "\"\"".to_owned(),
        };
        // When the client's response began, as the API dates its own: Unix seconds.
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.created = format!(
            r#"{{"id":{},"object":"response","created_at":{created_at},"status":"in_progress","model":{model},"output":[],"usage":null}}"#,
            self.id
        );
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
            // Another wire's id, fitted to the API's limit (or made, if it had none: Gemini's
            // Developer API sends none), so the client's next turn can send it back.
            let call_id = if held.id.is_empty() {
                let seed = [self.id.as_str(), &position, &held.name, &held.arguments];
                ids::minted("call_", &seed).into()
            } else {
                ids::responses(&held.id)
            };
            let mut item = br#"{"type":"function_call","status":"completed","call_id":"#.to_vec();
            write_str(&mut item, &call_id);
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

    fn finish(&mut self, stop: Stop, base: u32, src: &Source<'_>, _: &mut Outbox) {
        // Written with the terminal event, which is the same event on this wire.
        if !src.wire.is(&WIRE) {
            self.closing = None;
            self.foreign_stop = Some(stop_kind_of(&stop, src, 0));
            if let Some(usage) = stop.usage {
                self.foreign_usage = Some(summed(usage, base));
            }
            return;
        }
        (self.foreign_stop, self.foreign_usage) = (None, None);
        if let Some([Some(kind), Some(response)]) = members(src.data, ["type", "response"]) {
            self.closing = Some(Closing {
                kind: text(kind).map_or_else(|| "response.completed".into(), |k| k.into_owned()),
                response: response.to_owned(),
                base,
            });
        }
    }

    // The terminal event carries usage on this wire; another wire's is kept for it.
    fn usage(&mut self, usage: Usage, base: u32, src: &Source<'_>, _: &mut Outbox) {
        if !src.wire.is(&WIRE) {
            self.foreign_usage = Some(summed(usage, base));
        }
    }

    fn usage_estimate(&mut self, tokens: u32, _: &mut Outbox) {
        if self.closing.is_none() && self.foreign_usage.is_none() {
            self.foreign_usage = Some((0, u64::from(tokens)));
        }
    }

    fn terminal(&mut self, out: &mut Outbox) {
        let closing = self.closing.take();
        // A fallback of another wire ended the answer: its stop told as the API tells it.
        let incomplete = match self.foreign_stop {
            Some(StopKind::MaxTokens | StopKind::ContextWindow) => Some("max_output_tokens"),
            Some(StopKind::Refusal) => Some("content_filter"),
            _ => None,
        };
        let (kind, response, base) = match &closing {
            Some(c) => (c.kind.as_str(), c.response.as_str(), c.base),
            None if incomplete.is_some() => ("response.incomplete", self.created.as_str(), 0),
            None => ("response.completed", self.created.as_str(), 0),
        };
        if self.spliced && self.lost {
            let message = "the joined answer is longer than the layer keeps: its final response cannot be written";
            self.error(&ErrorKind::Upstream, message, out);
            return;
        }
        let output = self.output_json();
        let usage = match (&closing, self.foreign_usage) {
            (None, Some((input, output))) => Some(Some(format!(
                r#"{{"input_tokens":{input},"input_tokens_details":{{"cached_tokens":0}},"output_tokens":{output},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}"#,
                input + output
            ))),
            _ => members(response, ["usage"])
                .and_then(|[u]| not_null(u).map(|u| summed_usage(u, base))),
        };
        let details = incomplete.map(|reason| format!(r#"{{"reason":"{reason}"}}"#));
        let mut edits: Vec<(&str, Option<&str>)> = Vec::new();
        if !self.id.is_empty() {
            edits.push(("id", Some(&self.id)));
        }
        // The client's response began when its `response.created` says, whatever attempt ends it.
        let created_at = members(&self.created, ["created_at"]).and_then(|[at]| at);
        if let (Some(at), true) = (created_at, self.spliced) {
            edits.push(("created_at", Some(at)));
        }
        if self.spliced || closing.is_none() {
            edits.push(("output", Some(&output)));
        }
        if closing.is_none() {
            match &details {
                Some(details) => {
                    edits.push(("status", Some("\"incomplete\"")));
                    edits.push(("incomplete_details", Some(details)));
                }
                None => edits.push(("status", Some("\"completed\""))),
            }
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

    fn bound(&mut self, limits: &crate::dialect::Limits) {
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

/// Another wire's `usage` as (input, output) tokens, with `base` more output tokens.
fn summed(usage: Usage, base: u32) -> (u64, u64) {
    (
        usage.input_tokens.unwrap_or(0),
        usage.output_tokens.unwrap_or(0) + u64::from(base),
    )
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
