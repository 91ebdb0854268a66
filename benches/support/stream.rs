//! Synthetic Anthropic Messages streams and requests, and a client-side checker.
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

/// The primary's stream of `deltas` deltas, made once per length and shared.
pub fn primary_events(deltas: usize) -> Arc<Vec<Bytes>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<Vec<Bytes>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    cache
        .lock()
        .unwrap()
        .entry(deltas)
        .or_insert_with(|| {
            let pieces: Vec<String> = (0..deltas).map(piece).collect();
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            // One buffer, sliced: the upstream's frames cost it no allocation.
            let events = anthropic_events("primary", "msg_primary", &refs);
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
/// conversation, as agents send).
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

/// Reads an Anthropic stream as a client would, checking as it goes that the text is the
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
            Some("message_stop") => self.stopped = true,
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
            return Err("no message_stop".into());
        }
        Ok(())
    }
}
