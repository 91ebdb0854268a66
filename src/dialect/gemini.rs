//! Gemini's own API: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (also `/v1/`).
//!
//! Stream shape: data-only events (the API ends each with CRLF CRLF), each a whole
//! `GenerateContentResponse`: `candidates[0].content.parts[]` (text, `"thought": true` parts,
//! whole `functionCall`s, others), `finishReason` on the last, and the constant `responseId`
//! and `modelVersion` and a cumulative `usageMetadata` on every one. No sentinel: a stream that
//! ends without a `finishReason` is truncated. An in-band failure is
//! `{"error": {"code", "message", "status"}}`; the clients raise on it only with `error` first
//! and an integer `code`. google-genai reads every non-empty line that does not start with
//! `data: ` as JSON, so the only keep-alive it survives is a bare blank line.
//!
//! Blocks, for the core: consecutive text parts are one text block; consecutive thought parts
//! one reasoning block, held until the part after them, whose `thoughtSignature` is theirs
//! (written again on the first part that follows them); each function call, and each part of
//! another kind, is whole in one part and a block of its own (its signature stays on it). A
//! function call another wire's model made reaches the client with the placeholder signature
//! Google names for such calls ([`FOREIGN_CALL_SIGNATURE`]): without one, Gemini 3 refuses the
//! client's next turn. A
//! chunk with a `continuationToken` (google-genai 3.x resumes a broken stream with it, at the
//! upstream that issued it) or an `event:` line never goes out as it came; a `CONTINUATION`
//! finish (which only that token resumes) is a truncation the layer continues itself. Several
//! candidates (`candidateCount` > 1) are relayed as they come, not watched.
//!
//! Continuation: the partial answer as a trailing `model` turn for targets that accept
//! prefill, else that turn and the instruction as a `user` turn; `maxOutputTokens` shrinks.

use super::prelude::*;
use crate::json::elements;

use template::Template;

/// The `thoughtSignature` of a function call Gemini did not make: Gemini 3 refuses a turn whose
/// history holds a call without a signature, and Google names this value for calls from
/// another model ("skip_thought_signature_validator", in its thought-signatures FAQ). It is
/// base64url of 24 bytes without padding, so google-genai, which keeps signatures as bytes,
/// writes it back as it came.
pub(crate) const FOREIGN_CALL_SIGNATURE: &str = "skip_thought_signature_validator";

pub(crate) const WIRE: Wire = Wire {
    name: "gemini",
    path: ":streamGenerateContent",
    codec: &CODEC,
    rules: &Gemini,
    request_name: "Gemini GenerateContent",
    request: RequestShape {
        // In the path: `…/models/{model}:streamGenerateContent`.
        model: "",
        messages: "contents",
        text_conversation: false,
        // The API reads both spellings; the official SDK writes some keys in snake case.
        limits: &[
            "generationConfig.maxOutputTokens",
            "generationConfig.max_output_tokens",
            "generation_config.maxOutputTokens",
            "generation_config.max_output_tokens",
        ],
        extra: &[
            "generationConfig.candidateCount",
            "generationConfig.candidate_count",
            "generation_config.candidateCount",
            "generation_config.candidate_count",
            "continuationToken",
            "continuation_token",
        ],
    },
    stamps_every_event: true,
    terminal: "finishReason",
    trims_continuation: false,
    // Thought parts wait for the signature on the part after them.
    live_reasoning: false,
};

/// Reads each attempt's stream, writes the client's.
const CODEC: Codec<ChunkDecoder, ChunkEncoder> = Codec::NEW;

// ---- reading ---------------------------------------------------------------------------

/// Reads one attempt's chunks.
#[derive(Debug, Default)]
struct ChunkDecoder {
    started: bool,
    /// The text block open now, if any.
    text: Option<u32>,
    /// The reasoning block open now, if any.
    thoughts: Option<u32>,
    next_block: u32,
    /// What surrounds the text of the last chunk that was one piece of text and nothing
    /// else, for [`Decode::fast_text`].
    template: Option<Template>,
    /// The `usageMetadata` of the last chunk that had one, as it came: read only if the
    /// attempt fails ([`Decode::output_so_far`]).
    usage: String,
}

impl Decode for ChunkDecoder {
    fn fast_text<'a>(&mut self, name: Option<&[u8]>, data: &'a [u8]) -> Option<FastText<'a>> {
        let block = self.text?;
        if name.is_some() || self.thoughts.is_some() {
            return None;
        }
        let fitted = self.template.as_ref()?.text_of(data)?;
        if let Some(usage) = fitted.usage {
            self.usage.clear();
            self.usage.push_str(std::str::from_utf8(usage).ok()?);
        }
        Some(FastText {
            block,
            literal: std::str::from_utf8(fitted.literal).ok()?,
            plain: fitted.plain,
            number: None,
        })
    }

    fn decode(&mut self, name: Option<&str>, data: &str, items: &mut Vec<Item>) -> Decoded {
        if name.is_some() {
            // @google/genai drops a named event, google-genai fails on it: written anew.
            items.push(Item::AttemptBound);
        }
        if data.trim_ascii().is_empty() {
            // An empty `data:` is a JSON error in google-genai: it does not go on.
            items.push(Item::AttemptBound);
            return Ok(());
        }
        let unreadable = || Unreadable::new("an unreadable GenerateContentResponse");
        let [candidates, usage, model_version, response_id, feedback, error] = members(
            data,
            [
                "candidates",
                "usageMetadata",
                "modelVersion",
                "responseId",
                "promptFeedback",
                "error",
            ],
        )
        .ok_or_else(unreadable)?;
        let span = |raw: Option<&str>| raw.map_or(Span::default(), |r| Span::of(data, r));
        if let Some(error) = not_null(error) {
            items.push(in_band(data, error)?);
            return Ok(());
        }
        let usage_raw = not_null(usage);
        let usage = match usage_raw {
            Some(usage) => Some(read_usage(usage).ok_or_else(unreadable)?),
            None => None,
        };
        if let Some(raw) = usage_raw {
            self.usage.clear();
            self.usage.push_str(raw);
        }
        if !self.started {
            self.started = true;
            items.push(Item::Start(Start {
                id: span(not_null(response_id)),
                model: span(not_null(model_version)),
                created: Span::default(),
                input_tokens: usage.and_then(|u| u.input_tokens),
            }));
        }
        let candidates = match not_null(candidates) {
            Some(list) => elements(list).ok_or_else(unreadable)?,
            None => Vec::new(),
        };
        let Some(candidate) = candidates.first() else {
            // A prompt the API blocked ends the answer without a candidate; another chunk
            // without one carries nothing the core reads.
            items.push(Item::Other);
            if blocked(feedback) {
                self.close(items);
                items.push(Item::Terminal);
            }
            return Ok(());
        };
        let [index, content, finish, token] = members(
            candidate,
            ["index", "content", "finishReason", "continuationToken"],
        )
        .ok_or_else(unreadable)?;
        if candidates.len() > 1 || not_null(index).is_some_and(|i| i != "0") {
            items.push(Item::Unwatched);
            return Ok(());
        }
        if not_null(token).is_some() {
            items.push(Item::AttemptBound);
        }
        if let Some(content) = not_null(content) {
            let [parts] = members(content, ["parts"]).ok_or_else(unreadable)?;
            if let Some(parts) = not_null(parts) {
                for part in elements(parts).ok_or_else(unreadable)? {
                    self.part(data, part, items)?;
                }
            }
        }
        let plain_text = self.plain_text(content, finish, token, feedback, items);
        match not_null(finish) {
            // Only the upstream that sent it resumes from here, with a token the client does
            // not get: to the layer, a stream that ends now is cut short.
            Some(r#""CONTINUATION""#) | None => {}
            Some(reason) => {
                self.close(items);
                items.push(Item::Finish(Stop {
                    reason: Span::of(data, reason),
                    usage,
                    report: Span::default(),
                }));
                items.push(Item::Terminal);
            }
        }
        if let Some(literal) = plain_text {
            self.template = Template::new(data, literal, usage_raw).or(self.template.take());
        }
        Ok(())
    }

    fn output_so_far(&self) -> Option<u64> {
        read_usage(&self.usage)?.output_tokens
    }
}

impl ChunkDecoder {
    fn new_block(&mut self) -> u32 {
        let block = self.next_block;
        self.next_block += 1;
        block
    }

    fn close_text(&mut self, items: &mut Vec<Item>) {
        if let Some(block) = self.text.take() {
            items.push(Item::BlockStop { block });
        }
    }

    fn close_thoughts(&mut self, items: &mut Vec<Item>) {
        if let Some(block) = self.thoughts.take() {
            items.push(Item::BlockStop { block });
        }
    }

    fn close(&mut self, items: &mut Vec<Item>) {
        self.close_thoughts(items);
        self.close_text(items);
    }

    /// The reasoning block open now, opened if there is none (closing the text block).
    fn thoughts(&mut self, items: &mut Vec<Item>) -> u32 {
        if let Some(block) = self.thoughts {
            return block;
        }
        self.close_text(items);
        let block = self.new_block();
        self.thoughts = Some(block);
        items.push(Item::BlockStart {
            block,
            kind: BlockKind::Reasoning,
            native: Span::default(),
        });
        block
    }

    fn part(&mut self, data: &str, part: &str, items: &mut Vec<Item>) -> Decoded {
        let [text_, thought, signature, call] = members(
            part,
            ["text", "thought", "thoughtSignature", "functionCall"],
        )
        .ok_or_else(|| Unreadable::new("an unreadable part"))?;
        let signature = match not_null(signature) {
            Some(raw) => Some(
                Literal::of(data, raw)
                    .ok_or_else(|| Unreadable::new("a thoughtSignature that is not text"))?,
            ),
            None => None,
        };
        if let Some(call) = not_null(call) {
            return self.call(data, part, call, items);
        }
        let Some(raw) = not_null(text_) else {
            // Another kind of part (inline data, code and its result...): held whole.
            self.close(items);
            let block = self.new_block();
            items.push(Item::BlockStart {
                block,
                kind: BlockKind::Other,
                native: Span::of(data, part),
            });
            items.push(Item::BlockStop { block });
            return Ok(());
        };
        let literal = Literal::of(data, raw)
            .ok_or_else(|| Unreadable::new("a part whose text is not text"))?;
        if not_null(thought) == Some("true") {
            let block = self.thoughts(items);
            if !literal.is_empty() {
                items.push(Item::Reasoning { block, literal });
            }
            if let Some(signature) = signature {
                items.push(Item::Signature {
                    block,
                    literal: signature,
                });
            }
            return Ok(());
        }
        if let Some(signature) = signature {
            // The signature of the thoughts before this part, or of thoughts the request did
            // not ask to see: it belongs to them, and goes on the part after them.
            let block = self.thoughts(items);
            items.push(Item::Signature {
                block,
                literal: signature,
            });
        }
        self.close_thoughts(items);
        if !literal.is_empty() {
            let block = match self.text {
                Some(block) => block,
                None => {
                    let block = self.new_block();
                    self.text = Some(block);
                    items.push(Item::BlockStart {
                        block,
                        kind: BlockKind::Text,
                        native: Span::default(),
                    });
                    block
                }
            };
            items.push(Item::Text { block, literal });
        }
        Ok(())
    }

    /// A function call: whole in one part, its signature (if any) on it.
    fn call(&mut self, data: &str, part: &str, call: &str, items: &mut Vec<Item>) -> Decoded {
        let [id, name, args, partial, more] =
            members(call, ["id", "name", "args", "partialArgs", "willContinue"])
                .ok_or_else(|| Unreadable::new("an unreadable functionCall"))?;
        if not_null(partial).is_some() || not_null(more) == Some("true") {
            return Err(Unreadable::new(
                "a function call streamed in pieces (willContinue), which this layer does not join",
            ));
        }
        if not_null(args).is_some_and(|a| !a.starts_with('{')) {
            return Err(Unreadable::new(
                "a function call whose args are not an object",
            ));
        }
        let string = |raw: Option<&str>| match not_null(raw) {
            Some(raw) => Literal::of(data, raw)
                .ok_or_else(|| Unreadable::new("a function call whose id or name is not text")),
            None => Ok(Literal::default()),
        };
        let (id, name) = (string(id)?, string(name)?);
        if name.is_empty() {
            return Err(Unreadable::new("a function call without a name"));
        }
        self.close(items);
        let block = self.new_block();
        items.push(Item::BlockStart {
            block,
            kind: BlockKind::ToolCall { id, name },
            native: Span::of(data, part),
        });
        if let Some(args) = not_null(args) {
            // For a client of another wire: the part itself is only Gemini's to write again.
            items.push(Item::ToolArgsObject {
                block,
                json: Span::of(data, args),
            });
        }
        items.push(Item::BlockStop { block });
        Ok(())
    }

    /// The text of a chunk that was one piece of text and nothing else: one plain text part
    /// (no thought, no signature), no finish, no token, no feedback, nothing written anew.
    fn plain_text(
        &self,
        content: Option<&str>,
        finish: Option<&str>,
        token: Option<&str>,
        feedback: Option<&str>,
        items: &[Item],
    ) -> Option<Literal> {
        if finish.is_some() || token.is_some() || feedback.is_some() {
            return None;
        }
        let [parts] = members(content?, ["parts"])?;
        let [part] = <[&str; 1]>::try_from(elements(parts?)?).ok()?;
        let [thought, signature] = members(part, ["thought", "thoughtSignature"])?;
        if thought.is_some() || signature.is_some() {
            return None;
        }
        match items {
            [.., Item::Text { literal, .. }]
                if items.iter().all(|i| {
                    matches!(
                        i,
                        Item::Start(_)
                            | Item::BlockStart {
                                kind: BlockKind::Text,
                                ..
                            }
                            | Item::Text { .. }
                    )
                }) =>
            {
                Some(*literal)
            }
            _ => None,
        }
    }
}

/// Whether a chunk's `promptFeedback` says the prompt was blocked.
fn blocked(feedback: Option<&str>) -> bool {
    not_null(feedback)
        .and_then(|f| members(f, ["blockReason"]))
        .is_some_and(|[reason]| not_null(reason).is_some())
}

fn read_usage(usage: &str) -> Option<Usage> {
    let [prompt, candidates, thoughts] = members(
        usage,
        [
            "promptTokenCount",
            "candidatesTokenCount",
            "thoughtsTokenCount",
        ],
    )?;
    let count = |raw: Option<&str>| raw.and_then(|t| t.parse::<u64>().ok());
    let output = match (count(candidates), count(thoughts)) {
        (None, None) => None,
        (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
    };
    Some(Usage {
        output_tokens: output,
        input_tokens: count(prompt),
    })
}

/// An error chunk's error.
fn in_band(data: &str, error: &str) -> Result<Item, Unreadable> {
    let [code, message, status] = members(error, ["code", "message", "status"])
        .ok_or_else(|| Unreadable::new("an unreadable error chunk"))?;
    let span = |raw: Option<&str>| not_null(raw).map_or(Span::default(), |r| Span::of(data, r));
    let status_text = not_null(status).and_then(text);
    Ok(Item::Error(InBand {
        client: is_client_error(
            not_null(code).and_then(|c| c.parse().ok()),
            status_text.as_deref(),
        ),
        kind: span(status),
        code: span(code),
        message: span(message),
    }))
}

/// In-band errors that a retry elsewhere cannot fix: a 4xx other than a timeout or a quota.
fn is_client_error(code: Option<u16>, status: Option<&str>) -> bool {
    match code {
        Some(code) => (400..500).contains(&code) && code != 408 && code != 429,
        None => matches!(
            status,
            Some(
                "INVALID_ARGUMENT"
                    | "FAILED_PRECONDITION"
                    | "PERMISSION_DENIED"
                    | "UNAUTHENTICATED"
                    | "NOT_FOUND"
                    | "OUT_OF_RANGE"
            )
        ),
    }
}

// ---- writing ---------------------------------------------------------------------------

/// Writes the client's chunks where they cannot go out as they came: each a whole response
/// with the client's `responseId` and `modelVersion`, never one without a part.
#[derive(Debug, Default)]
struct ChunkEncoder {
    /// `"modelVersion":…,"responseId":…` of the client's stream (JSON members).
    envelope: String,
    /// The signature of thoughts the client has, owed to the first part written after them.
    signature: Option<String>,
}

impl ChunkEncoder {
    /// One response with `parts` (a JSON array's members), and after them in the candidate
    /// `finish` and `extra` (members, without braces), then `usage` (a JSON object).
    fn chunk(
        &mut self,
        parts: &[u8],
        finish: Option<&str>,
        extra: &str,
        usage: Option<&str>,
    ) -> Bytes {
        let mut json = Vec::with_capacity(parts.len() + 160);
        json.extend_from_slice(br#"{"candidates":[{"content":{"parts":["#);
        json.extend_from_slice(parts);
        json.extend_from_slice(br#"],"role":"model"}"#);
        if let Some(reason) = finish {
            json.extend_from_slice(br#","finishReason":"#);
            json.extend_from_slice(reason.as_bytes());
        }
        if !extra.is_empty() {
            json.push(b',');
            json.extend_from_slice(extra.as_bytes());
        }
        json.extend_from_slice(br#","index":0}]"#);
        if let Some(usage) = usage {
            json.extend_from_slice(br#","usageMetadata":"#);
            json.extend_from_slice(usage.as_bytes());
        }
        if !self.envelope.is_empty() {
            json.push(b',');
            json.extend_from_slice(self.envelope.as_bytes());
        }
        json.push(b'}');
        frame(&json)
    }

    /// A text part, carrying the signature owed to it.
    fn text_part(&mut self, text: &str) -> Vec<u8> {
        let mut part = br#"{"text":"#.to_vec();
        write_str(&mut part, text);
        if let Some(signature) = self.signature.take() {
            part.extend_from_slice(br#","thoughtSignature":"#);
            write_str(&mut part, &signature);
        }
        part.push(b'}');
        part
    }

    /// A part as its wire wrote it (a JSON object), carrying the signature owed to it unless
    /// it has its own.
    fn native_part(&mut self, native: &str) -> Vec<u8> {
        match self.signature.take() {
            Some(signature) => match serde_json::from_str::<Value>(native) {
                Ok(Value::Object(mut part)) => {
                    part.entry("thoughtSignature")
                        .or_insert(Value::String(signature));
                    to_vec(&Value::Object(part))
                }
                _ => native.as_bytes().to_vec(),
            },
            None => native.as_bytes().to_vec(),
        }
    }

    /// The members of an upstream chunk's candidate other than what the encoder writes
    /// itself (safety ratings, citations, grounding...), and its usage with `base` more
    /// output tokens.
    fn fit(data: &str, base: u32) -> (String, Option<String>) {
        let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
            return (String::new(), None);
        };
        let mut extra = String::new();
        if let Some(Value::Object(candidate)) = chunk.pointer_mut("/candidates/0") {
            for key in ["content", "finishReason", "continuationToken", "index"] {
                candidate.remove(key);
            }
            let members = to_vec(&Value::Object(std::mem::take(candidate)));
            // The object's members, without its braces.
            extra = String::from_utf8_lossy(&members[1..members.len() - 1]).into_owned();
        }
        let usage = chunk.get_mut("usageMetadata").map(|usage| {
            if base > 0 {
                for key in ["candidatesTokenCount", "totalTokenCount"] {
                    if let Some(n) = usage.get_mut(key) {
                        *n = Value::from(n.as_u64().unwrap_or(0) + u64::from(base));
                    }
                }
            }
            String::from_utf8_lossy(&to_vec(usage)).into_owned()
        });
        (extra, usage)
    }
}

impl Encode for ChunkEncoder {
    fn begin(&mut self, start: &Start, src: &Source<'_>) {
        let mut envelope = Vec::new();
        for (key, span) in [("modelVersion", start.model), ("responseId", start.id)] {
            let value = src.get(span);
            if value.starts_with('"') {
                if !envelope.is_empty() {
                    envelope.push(b',');
                }
                write_str(&mut envelope, key);
                envelope.push(b':');
                envelope.extend_from_slice(value.as_bytes());
            }
        }
        self.envelope = String::from_utf8(envelope).unwrap_or_default();
    }

    // The envelope rides on every chunk: nothing of its own.
    fn start(&mut self, _: &mut Outbox) {}

    // Gemini has no blocks: text is parts in chunks.
    fn block_start(&mut self, _: u32, _: BlockKind, _: Span, _: &Source<'_>, _: &mut Outbox) {}

    fn text(&mut self, _index: u32, text: &str, out: &mut Outbox) {
        let part = self.text_part(text);
        let chunk = self.chunk(&part, None, "", None);
        out.push(chunk);
    }

    // The decoder reads every part it passes on.
    fn other_delta(&mut self, _: u32, _: &Source<'_>, _: &mut Outbox) {}

    fn block_stop(&mut self, _: u32, _: &mut Outbox) {}

    fn held(&mut self, _index: u32, held: &Held, out: &mut Outbox) {
        let ours = held.wire.is(&WIRE) && !held.native.is_empty();
        let part = match held.kind {
            HeldKind::Reasoning => {
                // Signatures never cross providers; a Gemini one goes on the next part.
                if held.wire.is(&WIRE) {
                    if let Some(signature) = &held.signature {
                        self.signature = Some(signature.clone());
                    }
                }
                if held.text.is_empty() {
                    return;
                }
                let mut part = br#"{"text":"#.to_vec();
                write_str(&mut part, &held.text);
                part.extend_from_slice(br#","thought":true}"#);
                part
            }
            HeldKind::ToolCall | HeldKind::Other if ours => self.native_part(&held.native),
            HeldKind::ToolCall => {
                let args = serde_json::from_str::<Value>(&held.arguments)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                let mut call = json!({"name": held.name, "args": args});
                if !held.id.is_empty() {
                    call["id"] = Value::String(held.id.clone());
                }
                // Each foreign call gets the placeholder (Google allows it on every call). A
                // Gemini signature still owed stays for the next part: it vouches for Gemini's
                // thoughts, not for a call another model made.
                to_vec(&json!({ "functionCall": call, "thoughtSignature": FOREIGN_CALL_SIGNATURE }))
            }
            // A refusal is answer text here.
            HeldKind::Refusal => self.text_part(&held.text),
            // Only its own wire can write these again.
            HeldKind::RedactedReasoning | HeldKind::Other => return,
        };
        let chunk = self.chunk(&part, None, "", None);
        out.push(chunk);
    }

    fn finish(&mut self, stop: Stop, base: u32, src: &Source<'_>, out: &mut Outbox) {
        let (reason, extra, usage) = if src.wire.is(&WIRE) {
            let (extra, usage) = ChunkEncoder::fit(src.data, base);
            (src.get(stop.reason).to_owned(), extra, usage)
        } else {
            let reason = text(src.get(stop.reason)).map(|r| finish_reason(&r));
            let tokens = stop.usage.and_then(|u| u.output_tokens).unwrap_or(0) + u64::from(base);
            let usage =
                format!(r#"{{"candidatesTokenCount":{tokens},"totalTokenCount":{tokens}}}"#);
            (
                format!("\"{}\"", reason.unwrap_or("STOP")),
                String::new(),
                Some(usage),
            )
        };
        // The API's own last chunk after a function call: an empty text part.
        let part = self.text_part("");
        let chunk = self.chunk(&part, Some(&reason), &extra, usage.as_deref());
        out.push(chunk);
    }

    // Usage rides on the finish chunk: a chunk without parts would make google-genai's chats
    // drop the whole turn.
    fn usage(&mut self, _: Usage, _: u32, _: &Source<'_>, _: &mut Outbox) {}

    fn usage_estimate(&mut self, _: u32, _: &mut Outbox) {}

    // No sentinel: the finish ends the stream.
    fn terminal(&mut self, _: &mut Outbox) {}

    fn restamp(&mut self, src: &Source<'_>, out: &mut Outbox) {
        if !src.wire.is(&WIRE) {
            return;
        }
        let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(src.data) else {
            return;
        };
        if let Ok(Value::Object(envelope)) =
            serde_json::from_str::<Value>(&format!("{{{}}}", self.envelope))
        {
            chunk.extend(envelope);
        }
        if let Some(Value::Array(candidates)) = chunk.get_mut("candidates") {
            for candidate in candidates.iter_mut().filter_map(Value::as_object_mut) {
                candidate.remove("continuationToken");
            }
        }
        // Only after a seam: this attempt's own running count may be below what the client
        // saw, and the finish carries the count over every attempt.
        chunk.remove("usageMetadata");
        out.push(frame(&to_vec(&Value::Object(chunk))));
    }

    fn error(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox) {
        out.push(frame(&error_json(kind, message)));
    }

    fn keep_alive(&self, _after_id: bool) -> Bytes {
        // Both Google clients skip a blank line between events, and nothing else: google-genai
        // reads a comment as JSON, @google/genai drops an event with an `event:` line.
        Bytes::from_static(b"\r\n")
    }
}

/// One event, ended as the API ends them.
fn frame(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 10);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\r\n\r\n");
    Bytes::from(out)
}

/// Another wire's stop reason as a `finishReason`.
fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "max_tokens" | "length" | "model_context_window_exceeded" => "MAX_TOKENS",
        "refusal" | "content_filter" => "SAFETY",
        _ => "STOP",
    }
}

// ---- requests and errors ------------------------------------------------------------

#[derive(Debug)]
struct Gemini;

impl Rules for Gemini {
    fn error_body(&self, kind: &ErrorKind, message: &str) -> Bytes {
        Bytes::from(error_json(kind, message))
    }

    fn check_continuation(&self, strategy: &Strategy, index: &RequestIndex) -> Rewritten<()> {
        let several = [
            "generationConfig.candidateCount",
            "generationConfig.candidate_count",
            "generation_config.candidateCount",
            "generation_config.candidate_count",
        ]
        .iter()
        .filter_map(|key| index.value(key))
        .any(|n| n.trim().parse::<u64>().map_or(true, |n| n > 1));
        if several {
            return Err(RewriteError::new(
                "an answer of several candidates cannot be continued",
            ));
        }
        assistant_prefill_only(strategy, "Gemini (use `assistant`: a trailing model turn)")
    }

    fn continue_content(&self, _: &mut Value, _: &str) -> Rewritten<()> {
        Err(RewriteError::new(
            "a Gemini turn has `parts`, not `content`",
        ))
    }

    fn continue_turn(&self, turn: &mut Value, partial: &str) -> Rewritten<()> {
        let parts = turn
            .get_mut("parts")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| RewriteError::new("the last turn has no `parts` array"))?;
        parts.push(json!({ "text": partial }));
        Ok(())
    }

    fn model_in_path(&self, path: &str) -> Option<std::ops::Range<usize>> {
        model_in_path(path)
    }

    fn data_lines_only(&self) -> bool {
        true
    }

    fn assistant_role(&self) -> &'static str {
        "model"
    }

    fn assistant_turn(&self, partial: &str, _flag: Option<&str>) -> Vec<u8> {
        turn("model", partial)
    }

    fn user_turn(&self, text: &str) -> Vec<u8> {
        turn("user", text)
    }

    fn attempt_bound_keys(&self) -> &'static [&'static str] {
        &["continuationToken", "continuation_token"]
    }
}

fn turn(role: &str, text: &str) -> Vec<u8> {
    let mut out = br#"{"role":"#.to_vec();
    write_str(&mut out, role);
    out.extend_from_slice(br#","parts":[{"text":"#);
    write_str(&mut out, text);
    out.extend_from_slice(b"}]}");
    out
}

/// `…/{v1|v1beta|v1alpha}/models/{model}:{streamGenerateContent|generateContent}`: the model's
/// range (it may hold a `/`, which the official SDK passes through).
fn model_in_path(path: &str) -> Option<std::ops::Range<usize>> {
    let (head, method) = path.rsplit_once(':')?;
    if !matches!(method, "streamGenerateContent" | "generateContent") {
        return None;
    }
    let mut from = 0;
    while let Some(at) = head.get(from..)?.find("/models/") {
        let at = from + at;
        let version = head[..at].rsplit('/').next().unwrap_or("");
        if version.starts_with("v1") {
            let start = at + "/models/".len();
            return (start < head.len()).then_some(start..head.len());
        }
        from = at + 1;
    }
    None
}

/// The status and code Google gives an error of `kind`.
fn status_of(kind: &ErrorKind) -> (u16, &str) {
    match kind {
        ErrorKind::TooLarge => (413, "INVALID_ARGUMENT"),
        ErrorKind::BadRequest => (400, "INVALID_ARGUMENT"),
        ErrorKind::Overloaded => (503, "UNAVAILABLE"),
        ErrorKind::RateLimited => (429, "RESOURCE_EXHAUSTED"),
        ErrorKind::Timeout => (504, "DEADLINE_EXCEEDED"),
        ErrorKind::Upstream => (502, "UNAVAILABLE"),
        ErrorKind::Named(name) => {
            let code = code_of(name);
            // A Google status is passed on; another wire's error type is named by its code.
            let google =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
            (code, if google { name } else { status_name(code) })
        }
    }
}

fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// The HTTP code of a Google status, or of another wire's error type; 500 when unknown.
fn code_of(status: &str) -> u16 {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" | "invalid_request_error" => {
            400
        }
        "UNAUTHENTICATED" | "authentication_error" => 401,
        "PERMISSION_DENIED" | "permission_error" => 403,
        "NOT_FOUND" | "not_found_error" => 404,
        "RESOURCE_EXHAUSTED" | "rate_limit_error" => 429,
        "UNAVAILABLE" | "overloaded_error" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

/// `{"error": {"code", "message", "status"}}`: `error` first and `code` an integer, or the
/// clients do not raise.
fn error_json(kind: &ErrorKind, message: &str) -> Vec<u8> {
    let (code, status) = status_of(kind);
    let mut out = format!(r#"{{"error":{{"code":{code},"message":"#).into_bytes();
    write_str(&mut out, message);
    out.extend_from_slice(br#","status":"#);
    write_str(&mut out, status);
    out.extend_from_slice(b"}}");
    out
}

mod template;
#[cfg(test)]
mod tests;
