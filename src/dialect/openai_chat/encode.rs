//! Chat's writing side: the client's chunks, one id and `created` across attempts, choices and
//! tool-call indices kept dense, one finish and one usage chunk.

use super::*;

/// Writes the client's chunks where they cannot go out as they came: each with the client's
/// envelope, `role` only once.
#[derive(Debug, Default)]
pub(super) struct ChunkEncoder {
    /// `id`, `created`, `model` of the client's stream, as JSON.
    envelope: Option<[String; 3]>,
    /// The client has not had `role` yet: the next chunk written carries it.
    role_owed: bool,
    /// Tool calls the client has, for dense indices.
    tools: u32,
    /// The client has a refusal (`delta.refusal`).
    refused: bool,
}

/// The words of another wire's refusal that came without any (Anthropic's `stop_details`
/// has no explanation for every category): a Chat refusal is told in words.
const REFUSED: &str = "The model refused to answer.";

impl ChunkEncoder {
    fn envelope(&self) -> [&str; 3] {
        match &self.envelope {
            Some([id, created, model]) => [id, created, model],
            None => ["\"\"", "0", "\"\""],
        }
    }

    /// A chunk of the client's stream with one choice: `delta` (its members, without braces),
    /// `finish` (a JSON value) and, if given, `usage` (a JSON object).
    fn chunk(&mut self, delta: &[u8], finish: &str, usage: Option<&[u8]>) -> Bytes {
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
        json.extend_from_slice(b"}]");
        if let Some(usage) = usage {
            json.extend_from_slice(b",\"usage\":");
            json.extend_from_slice(usage);
        }
        json.push(b'}');
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

    /// A one-member delta, `"key":text`.
    fn piece(&mut self, key: &str, text: &str, out: &mut Outbox) {
        let mut delta = Vec::with_capacity(key.len() + text.len() + 8);
        delta.extend_from_slice(key.as_bytes());
        delta.push(b':');
        write_str(&mut delta, text);
        let chunk = self.chunk(&delta, "null", None);
        out.push(chunk);
    }

    /// A chunk of the upstream's (same wire) fitted to the client's stream: its envelope, no
    /// second `role` for its first `had` choices, `base` more completion tokens in its usage.
    fn fit(&mut self, data: &str, base: u32, had: u32) -> Option<Bytes> {
        let mut v: Value = serde_json::from_str(data).ok()?;
        let obj = v.as_object_mut()?;
        if let Some([id, created, model]) = &self.envelope {
            for (key, raw) in [("id", id), ("created", created), ("model", model)] {
                if let Ok(val) = serde_json::from_str::<Value>(raw) {
                    obj.insert(key.into(), val);
                }
            }
        }
        if let Some(choices) = obj.get_mut("choices").and_then(Value::as_array_mut) {
            for choice in choices {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                if index >= u64::from(had) {
                    continue;
                }
                if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                    delta.remove("role");
                }
            }
        }
        if base > 0 {
            if let Some(usage) = obj.get_mut("usage") {
                add_tokens(usage, base);
            }
        }
        Some(sse_event(None, &to_vec(&v)))
    }
}

/// `base` more completion (and total) tokens in a usage report.
fn add_tokens(usage: &mut Value, base: u32) {
    if let Some(usage) = usage.as_object_mut() {
        for key in ["completion_tokens", "total_tokens"] {
            if let Some(n) = usage.get_mut(key) {
                *n = Value::from(n.as_u64().unwrap_or(0) + u64::from(base));
            }
        }
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
        self.piece("\"content\"", text, out);
    }

    fn reasoning(&mut self, _index: u32, native: &str, text: &str, out: &mut Outbox) {
        self.piece(reasoning_key(native), text, out);
    }

    // The Chat decoder reads every delta it passes on.
    fn other_delta(&mut self, _: u32, _: &Source<'_>, _: &mut Outbox) {}

    fn block_stop(&mut self, _: u32, _: &mut Outbox) {}

    fn held(&mut self, _index: u32, held: &Held, out: &mut Outbox) {
        match held.kind {
            HeldKind::ToolCall => {}
            HeldKind::Reasoning => {
                let key = if held.wire.is(&WIRE) {
                    reasoning_key(&held.native)
                } else {
                    REASONING_KEY
                };
                return self.piece(key, &held.text, out);
            }
            HeldKind::Refusal => {
                self.refused = true;
                return self.piece("\"refusal\"", &held.text, out);
            }
            // Encrypted reasoning and kinds of other wires have no place in a Chat message.
            HeldKind::RedactedReasoning | HeldKind::Other => return,
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
        let chunk = self.chunk(&delta, "null", None);
        out.push(chunk);
    }

    fn finish(&mut self, stop: Stop, base: u32, src: &Source<'_>, out: &mut Outbox) {
        let raw = src.get(stop.reason);
        let reason = if src.wire.is(&WIRE) && raw.starts_with('"') {
            raw
        } else {
            // Another wire's stop, in Chat's words.
            match stop_kind_of(&stop, src, self.tools) {
                StopKind::EndTurn | StopKind::StopSequence | StopKind::Other => "\"stop\"",
                StopKind::MaxTokens | StopKind::ContextWindow => "\"length\"",
                StopKind::ToolUse => "\"tool_calls\"",
                // OpenAI's own refusal: its words in `delta.refusal`, the stop `stop`. (Every
                // path of the openai SDK accepts it; `content_filter` makes the stream helper's
                // final completion raise `ContentFilterFinishReasonError`.)
                StopKind::Refusal => {
                    if !self.refused {
                        self.refused = true;
                        self.piece("\"refusal\"", REFUSED, out);
                    }
                    "\"stop\""
                }
            }
        };
        // Usage on the finish chunk (vLLM) is the real report: it goes on, every attempt's
        // tokens in it.
        let usage = match src.get(stop.report) {
            "" => None,
            raw if src.wire.is(&WIRE) => serde_json::from_str::<Value>(raw).ok().map(|mut v| {
                add_tokens(&mut v, base);
                to_vec(&v)
            }),
            _ => None,
        };
        let chunk = self.chunk(b"", reason, usage.as_deref());
        out.push(chunk);
    }

    fn usage(&mut self, usage: Usage, base: u32, src: &Source<'_>, out: &mut Outbox) {
        if src.wire.is(&WIRE) {
            if let Some(chunk) = self.fit(src.data, base, 1) {
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
        if let Some(chunk) = self.fit(src.data, 0, 1) {
            out.push(chunk);
        }
    }

    fn choices_event(&mut self, src: &Source<'_>, base: u32, had: u32, out: &mut Outbox) {
        if src.wire.is(&WIRE) {
            if let Some(chunk) = self.fit(src.data, base, had) {
                out.push(chunk);
            }
        }
    }

    fn error(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox) {
        out.push(sse_event(None, &to_vec(&error_value(kind, message))));
        self.terminal(out);
    }

    fn keep_alive(&self, after_id: bool) -> Bytes {
        if after_id {
            // Once it has seen an `id:` field, the openai Python SDK dispatches an event at
            // every blank line (an empty one: a JSON error); a comment line alone is safe in
            // it and in openai-node.
            Bytes::from_static(b": keep-alive\n")
        } else {
            Bytes::from_static(b": keep-alive\n\n")
        }
    }
}

/// The key reasoning goes under: the block's own (a key literal of this wire), else the
/// common one.
fn reasoning_key(native: &str) -> &str {
    match ReasoningKey::of(native.as_bytes()) {
        Some(_) => native,
        None => REASONING_KEY,
    }
}
