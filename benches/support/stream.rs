//! Synthetic Anthropic Messages and OpenAI Chat streams and requests, and a client-side checker.
//!
//! The answer of an `n`-delta stream is `t00000 t00001 …`: every delta is 7 characters, as
//! models stream a token or two, and every prefix of it tells how far a stream got.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use serde_json::{json, Value};

/// Events besides the deltas: message_start, content_block_start, ping, content_block_stop,
/// message_delta, message_stop.
pub const ENVELOPE_EVENTS: usize = 6;

/// The wire format and key order of a synthetic stream. The layer's fast paths depend on the
/// order a server writes keys in, so the relay bench measures more than the APIs' own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Anthropic Messages in the API's key order (`type` first).
    Anthropic,
    /// Anthropic Messages with sorted keys (`delta` first), as `serde_json::Value` writes them.
    AnthropicSorted,
    /// OpenAI Chat Completions in the API's key order (`id`, `object`, `created`, `model`,
    /// `service_tier`, `system_fingerprint`, `choices`, `usage`, `obfuscation`), include_usage on.
    Chat,
    /// OpenAI Chat Completions with sorted keys (`choices` first), as Azure OpenAI sends them.
    ChatSorted,
    /// The OpenAI Responses API in its key order (`type`, `sequence_number`, `item_id`,
    /// `output_index`, `content_index`, `delta`, `logprobs`, `obfuscation`), as recorded.
    Responses,
    /// OpenAI Chat Completions in vLLM's order (`id`, `object`, `created`, `model`, `choices`,
    /// `usage`; `stop_reason` last in each choice).
    ChatVllm,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Anthropic,
        Shape::AnthropicSorted,
        Shape::Chat,
        Shape::ChatSorted,
        Shape::Responses,
        Shape::ChatVllm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Anthropic => "anthropic",
            Shape::AnthropicSorted => "anthropic-sorted",
            Shape::Chat => "chat",
            Shape::ChatSorted => "chat-sorted",
            Shape::Responses => "responses",
            Shape::ChatVllm => "chat-vllm",
        }
    }

    pub fn from_name(name: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|s| s.name() == name)
    }

    /// What the layer is told the stream is: the request path.
    pub fn path(self) -> &'static str {
        match self {
            Shape::Anthropic | Shape::AnthropicSorted => "/v1/messages",
            Shape::Chat | Shape::ChatSorted | Shape::ChatVllm => "/v1/chat/completions",
            Shape::Responses => "/v1/responses",
        }
    }

    pub fn is_chat(self) -> bool {
        matches!(self, Shape::Chat | Shape::ChatSorted | Shape::ChatVllm)
    }

    /// Events besides the deltas.
    pub fn envelope_events(self) -> usize {
        match self {
            // role chunk, finish chunk, usage chunk, [DONE]
            Shape::Chat | Shape::ChatSorted | Shape::ChatVllm => 4,
            // created, in_progress, item added, part added; text done, part done, item done,
            // completed
            Shape::Responses => 8,
            Shape::Anthropic | Shape::AnthropicSorted => ENVELOPE_EVENTS,
        }
    }
}

/// The `i`th piece of every answer.
pub fn piece(i: usize) -> String {
    format!("t{i:05} ")
}

/// The whole answer of an `n`-delta stream.
pub fn whole(deltas: usize) -> String {
    (0..deltas).map(piece).collect()
}

fn event(out: &mut Vec<Bytes>, name: &str, data: &Value) {
    out.push(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
}

/// The events of a stream answering `text` in pieces of `piece_len` characters, as `model`.
pub fn anthropic_events(model: &str, id: &str, pieces: &[&str]) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(pieces.len() + ENVELOPE_EVENTS);
    event(
        &mut out,
        "message_start",
        &json!({"type":"message_start","message":{"id":id,"type":"message","role":"assistant","model":model,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}),
    );
    event(
        &mut out,
        "content_block_start",
        &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    );
    event(&mut out, "ping", &json!({"type":"ping"}));
    for p in pieces {
        // Written in the API's own key order (`json!` would sort the keys): the recorded
        // streams in tests/fixtures show it, and the relay reads that shape fastest.
        let text = serde_json::to_string(p).expect("a str serializes");
        out.push(Bytes::from(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{text}}}}}\n\n"
        )));
    }
    event(
        &mut out,
        "content_block_stop",
        &json!({"type":"content_block_stop","index":0}),
    );
    event(
        &mut out,
        "message_delta",
        &json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":pieces.len()}}),
    );
    event(&mut out, "message_stop", &json!({"type":"message_stop"}));
    out
}

/// The events of an Anthropic stream with sorted keys (`serde_json::Value` order).
fn anthropic_sorted_events(model: &str, id: &str, pieces: &[&str]) -> Vec<Bytes> {
    anthropic_events(model, id, pieces)
        .iter()
        .map(|ev| {
            let text = std::str::from_utf8(ev).unwrap();
            let (head, data) = text.split_once("data: ").unwrap();
            let v: Value = serde_json::from_str(data.trim_end()).unwrap();
            Bytes::from(format!("{head}data: {v}\n\n"))
        })
        .collect()
}

/// The order a Chat server writes keys in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Api,
    Sorted,
    Vllm,
}

/// The events of an OpenAI Chat stream with include_usage, keys in a server's order.
fn chat_events(model: &str, id: &str, pieces: &[&str], order: Order) -> Vec<Bytes> {
    let sorted = order == Order::Sorted;
    let chunk = |delta: &str, finish: &str, choices: bool, usage: &str| -> Bytes {
        let choices = if choices {
            if order == Order::Vllm {
                format!(
                    r#"[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish},"stop_reason":null}}]"#
                )
            } else if sorted {
                format!(
                    r#"[{{"delta":{delta},"finish_reason":{finish},"index":0,"logprobs":null}}]"#
                )
            } else {
                format!(
                    r#"[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]"#
                )
            }
        } else {
            "[]".to_owned()
        };
        Bytes::from(if order == Order::Vllm {
            format!(
                "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1782955818,\"model\":\"{model}\",\"choices\":{choices},\"usage\":{usage}}}\n\n"
            )
        } else if sorted {
            format!(
                "data: {{\"choices\":{choices},\"created\":1782955818,\"id\":\"{id}\",\"model\":\"{model}\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_d0469e1700\",\"usage\":{usage}}}\n\n"
            )
        } else {
            format!(
                "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1782955818,\"model\":\"{model}\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_d0469e1700\",\"choices\":{choices},\"usage\":{usage},\"obfuscation\":\"auU6fTns\"}}\n\n"
            )
        })
    };
    let mut out = Vec::with_capacity(pieces.len() + 4);
    out.push(chunk(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
        true,
        "null",
    ));
    for p in pieces {
        let text = serde_json::to_string(p).expect("a str serializes");
        out.push(chunk(
            &format!(r#"{{"content":{text}}}"#),
            "null",
            true,
            "null",
        ));
    }
    out.push(chunk("{}", r#""stop""#, true, "null"));
    let n = pieces.len();
    out.push(chunk(
        "",
        "",
        false,
        &format!(
            r#"{{"prompt_tokens":25,"completion_tokens":{n},"total_tokens":{}}}"#,
            n + 25
        ),
    ));
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

/// The events of a Responses API stream: one message, its text in `pieces`.
fn responses_events(model: &str, id: &str, pieces: &[&str]) -> Vec<Bytes> {
    let mut seq = 0;
    let mut out = Vec::with_capacity(pieces.len() + 8);
    let mut push = |name: &str, members: String| {
        out.push(Bytes::from(format!(
            "event: {name}\ndata: {{\"type\":\"{name}\",\"sequence_number\":{seq},{members}}}\n\n"
        )));
        seq += 1;
    };
    let response = |status: &str, output: &str, usage: &str| {
        format!(
            r#""response":{{"id":"{id}","object":"response","created_at":1782955818,"status":"{status}","model":"{model}","output":{output},"usage":{usage}}}"#
        )
    };
    push("response.created", response("in_progress", "[]", "null"));
    push(
        "response.in_progress",
        response("in_progress", "[]", "null"),
    );
    let item =
        r#""item_id":"msg_0123456789abcdef0123456789abcdef","output_index":0,"content_index":0"#;
    push(
        "response.output_item.added",
        r#""output_index":0,"item":{"id":"msg_0123456789abcdef0123456789abcdef","type":"message","status":"in_progress","content":[],"role":"assistant"}"#.into(),
    );
    push(
        "response.content_part.added",
        format!(
            r#"{item},"part":{{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#
        ),
    );
    for p in pieces {
        let text = serde_json::to_string(p).expect("a str serializes");
        push(
            "response.output_text.delta",
            format!(r#"{item},"delta":{text},"logprobs":[],"obfuscation":"auU6fTns""#),
        );
    }
    let text = serde_json::to_string(&pieces.concat()).expect("a str serializes");
    let part = format!(r#"{{"type":"output_text","annotations":[],"logprobs":[],"text":{text}}}"#);
    push(
        "response.output_text.done",
        format!(r#"{item},"text":{text},"logprobs":[]"#),
    );
    push(
        "response.content_part.done",
        format!(r#"{item},"part":{part}"#),
    );
    let message = format!(
        r#"{{"id":"msg_0123456789abcdef0123456789abcdef","type":"message","status":"completed","content":[{part}],"role":"assistant"}}"#
    );
    push(
        "response.output_item.done",
        format!(r#""output_index":0,"item":{message}"#),
    );
    let n = pieces.len();
    let usage = format!(
        r#"{{"input_tokens":25,"output_tokens":{n},"total_tokens":{}}}"#,
        n + 25
    );
    push(
        "response.completed",
        response("completed", &format!("[{message}]"), &usage),
    );
    out
}

/// The primary's stream of `deltas` deltas (Anthropic, the API's key order), made once per
/// length and shared.
pub fn primary_events(deltas: usize) -> Arc<Vec<Bytes>> {
    shaped_events(Shape::Anthropic, deltas)
}

/// Streams made so far, by shape and length.
type Made = Mutex<HashMap<(Shape, usize), Arc<Vec<Bytes>>>>;

/// The primary's stream of `deltas` deltas in `shape`, made once per length and shared.
pub fn shaped_events(shape: Shape, deltas: usize) -> Arc<Vec<Bytes>> {
    static CACHE: OnceLock<Made> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    cache
        .lock()
        .unwrap()
        .entry((shape, deltas))
        .or_insert_with(|| {
            let pieces: Vec<String> = (0..deltas).map(piece).collect();
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            // One buffer, sliced: the upstream's frames cost it no allocation.
            let events = match shape {
                Shape::Anthropic => anthropic_events("primary", "msg_primary", &refs),
                Shape::AnthropicSorted => anthropic_sorted_events("primary", "msg_primary", &refs),
                Shape::Responses => responses_events("primary", "resp_primary", &refs),
                Shape::Chat => chat_events("primary", "chatcmpl-primary", &refs, Order::Api),
                Shape::ChatSorted => {
                    chat_events("primary", "chatcmpl-primary", &refs, Order::Sorted)
                }
                Shape::ChatVllm => chat_events("primary", "chatcmpl-primary", &refs, Order::Vllm),
            };
            let joined = Bytes::from(events.concat());
            let mut at = 0;
            Arc::new(
                events
                    .iter()
                    .map(|e| {
                        let s = joined.slice(at..at + e.len());
                        at += e.len();
                        s
                    })
                    .collect(),
            )
        })
        .clone()
}

/// The fallback's stream: the rest of the `deltas`-delta answer after `partial`, in
/// 7-character pieces.
pub fn fallback_events(deltas: usize, partial: &str) -> Vec<Bytes> {
    let whole = whole(deltas);
    let rest = whole
        .strip_prefix(partial)
        .unwrap_or_else(|| panic!("{partial:?} is not a prefix of the answer"));
    let pieces: Vec<&str> = rest
        .as_bytes()
        .chunks(7)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    anthropic_events("fallback", "msg_fallback", &pieces)
}

/// A Messages request for `model`, padded with earlier turns to about `size` bytes (a long
/// conversation, as agents send). The same body serves as a Chat Completions request.
pub fn request_body(model: &str, size: usize) -> Bytes {
    let mut messages = Vec::new();
    let turn =
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit; sed do \"eiusmod\" tempor.\n";
    let mut len = 120;
    let mut n = 0;
    while len + 1100 < size {
        let role = if n % 2 == 0 { "user" } else { "assistant" };
        let content: String = turn.repeat(1000 / turn.len() + 1);
        len += content.len() + 50;
        messages.push(json!({"role": role, "content": content}));
        n += 1;
    }
    if messages.len() % 2 == 1 {
        messages.pop();
    }
    messages.push(json!({"role":"user","content":"Count for me, please."}));
    let body = json!({"model": model, "max_tokens": 32000, "stream": true, "messages": messages});
    // serde_json writes keys in order only with `preserve_order`; put `model` first by hand so
    // the bench upstream can tell primary from fallback without parsing.
    let rest = serde_json::to_string(&body).unwrap();
    let without_model = rest.replacen(&format!("\"model\":\"{model}\","), "", 1);
    Bytes::from(format!("{{\"model\":\"{model}\",{}", &without_model[1..]))
}

/// The assistant prefill a rewritten request ends with (`""` when it has none).
pub fn prefill_of(body: &[u8]) -> String {
    const MARK: &[u8] = br#"{"role":"assistant","content":"#;
    let Some(at) = memchr::memmem::rfind(body, MARK) else {
        return String::new();
    };
    // Only a prefill if it is the last message (the padding has assistant turns too).
    let literal = &body[at + MARK.len()..];
    let mut de = serde_json::Deserializer::from_slice(literal).into_iter::<String>();
    let text = de.next().and_then(Result::ok).unwrap_or_default();
    let after = &literal[de.byte_offset()..];
    if after.starts_with(b"}]") {
        text
    } else {
        String::new()
    }
}

/// Counts events in a stream as it arrives (LF line ends: an event ends at `\n\n`).
#[derive(Debug, Default)]
pub struct EventCounter {
    pub events: usize,
    pub bytes: usize,
    last_lf: bool,
}

impl EventCounter {
    pub fn feed(&mut self, frame: &[u8]) {
        self.bytes += frame.len();
        if frame.is_empty() {
            return;
        }
        if self.last_lf && frame[0] == b'\n' {
            self.events += 1;
        }
        self.events += memchr::memmem::find_iter(frame, b"\n\n").count();
        self.last_lf = frame[frame.len() - 1] == b'\n';
    }
}

/// Reads an Anthropic or OpenAI Chat stream as a client would, checking as it goes that the text is the
/// expected answer, and keeping only an offset into it (memory stays flat at scale).
#[derive(Debug)]
pub struct Checker {
    whole: Arc<str>,
    pos: usize,
    carry: Vec<u8>,
    pub events: usize,
    stopped: bool,
    error: Option<String>,
}

impl Checker {
    pub fn new(whole: Arc<str>) -> Self {
        Checker {
            whole,
            pos: 0,
            carry: Vec::new(),
            events: 0,
            stopped: false,
            error: None,
        }
    }

    pub fn feed(&mut self, frame: &[u8]) {
        self.carry.extend_from_slice(frame);
        let mut start = 0;
        while let Some(end) = memchr::memmem::find(&self.carry[start..], b"\n\n") {
            let ev = self.carry[start..start + end + 2].to_vec();
            self.on_event(&ev);
            start += end + 2;
        }
        self.carry.drain(..start);
        if self.carry.is_empty() {
            self.carry = Vec::new();
        }
    }

    fn on_event(&mut self, raw: &[u8]) {
        self.events += 1;
        let text = std::str::from_utf8(raw).expect("UTF-8");
        let mut name = None;
        let mut data = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = Some(v);
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v);
            }
        }
        let fail = |this: &mut Self, why: String| {
            if this.error.is_none() {
                this.error = Some(why);
            }
        };
        if name.is_none() && data.is_some_and(|d| d.starts_with('{')) {
            // An OpenAI Chat chunk.
            let v: Value = serde_json::from_str(data.unwrap_or("")).expect("JSON chunk");
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                if self.whole[self.pos..].starts_with(t) {
                    self.pos += t.len();
                } else {
                    let got = &self.whole[self.pos..(self.pos + 16).min(self.whole.len())];
                    fail(self, format!("text {t:?} where {got:?}… was due"));
                }
            }
            if v.get("error").is_some_and(|e| !e.is_null()) {
                fail(self, format!("error chunk: {}", data.unwrap_or("")));
            }
            return;
        }
        if name.is_none() && data == Some("[DONE]") {
            self.stopped = true;
            return;
        }
        match name {
            Some("content_block_delta") => {
                let v: Value = serde_json::from_str(data.unwrap_or("")).expect("JSON delta");
                let Some(t) = v["delta"]["text"].as_str() else {
                    return;
                };
                if self.whole[self.pos..].starts_with(t) {
                    self.pos += t.len();
                } else {
                    let got = &self.whole[self.pos..(self.pos + 16).min(self.whole.len())];
                    fail(self, format!("text {t:?} where {got:?}… was due"));
                }
            }
            Some("response.output_text.delta") => {
                let v: Value = serde_json::from_str(data.unwrap_or("")).expect("JSON delta");
                let t = v["delta"].as_str().unwrap_or("");
                if self.whole[self.pos..].starts_with(t) {
                    self.pos += t.len();
                } else {
                    let got = &self.whole[self.pos..(self.pos + 16).min(self.whole.len())];
                    fail(self, format!("text {t:?} where {got:?}… was due"));
                }
            }
            Some("message_stop" | "response.completed") => self.stopped = true,
            Some("error") => fail(self, format!("error event: {}", data.unwrap_or(""))),
            _ => {}
        }
    }

    /// The stream ended: was it the whole answer, once, and properly closed?
    pub fn finish(&self) -> Result<(), String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.pos != self.whole.len() {
            return Err(format!(
                "ended after {} of {} bytes of text",
                self.pos,
                self.whole.len()
            ));
        }
        if !self.stopped {
            return Err("no message_stop / [DONE]".into());
        }
        Ok(())
    }
}
