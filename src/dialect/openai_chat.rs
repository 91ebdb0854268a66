//! OpenAI Chat Completions (`POST /v1/chat/completions` with `"stream": true`) and the many
//! servers that speak it (vLLM, DeepSeek, Mistral, OpenRouter, Azure, Groq, Gemini's
//! compatibility endpoint...).
//!
//! Stream shape: data-only events, each a `chat.completion.chunk` repeating the stream's `id`,
//! `created` and `model`; the first delta carries `role`; reasoning arrives as
//! `delta.reasoning_content` (DeepSeek, older vLLM) or `delta.reasoning` (newer vLLM,
//! OpenRouter), a refusal as `delta.refusal`; tool calls as deltas keyed by `index` (Gemini's
//! endpoint leaves it out: such a call is the one its `id` names, or without an id the one
//! before it); one chunk carries `finish_reason`; with `stream_options.include_usage` a last
//! chunk has `choices: []` and `usage` (vLLM puts it on the finish chunk instead); then
//! `data: [DONE]` (some servers send none). An in-band failure is a chunk with an `error`
//! object (OpenRouter adds `finish_reason: "error"`), or vLLM's `{"object":"error",...}`.
//!
//! Blocks, for the core: reasoning is a block until the answer starts; the text of the
//! message is one block until a tool call interrupts it; a refusal is a block (held whole);
//! each tool call is a block from its first delta to `finish_reason` (or to text after it);
//! `role` is written once, in the first chunk the client gets. A stream with several choices
//! (`n > 1`) is read as such from the first chunk that shows a second one: each chunk then
//! says which choices start, carry part of their answer or finish.
//!
//! Every chunk is read with the validating walk (`crate::walk`): nothing goes on as it came
//! unless all of it is valid JSON. The chunk nearly every stream is made of (one piece of text,
//! or of reasoning) is recognized whatever order its keys come in, without building anything.
//!
//! Continuation: a trailing assistant message, with `"prefix": true` for DeepSeek and Mistral,
//! or `continue_final_message` for vLLM.

use super::prelude::*;
use std::collections::HashMap;

use crate::relay::item::Blocks;
use crate::translate::ids;
use crate::walk::{self, Member};

use encode::ChunkEncoder;
use fast::{fast_piece, Piece};

pub(crate) const WIRE: Wire = Wire {
    name: "openai-chat",
    path: "/chat/completions",
    codec: &CODEC,
    rules: &OpenAiChat,
    request_name: "Chat Completions",
    request: RequestShape {
        model: "model",
        messages: "messages",
        text_conversation: false,
        limits: &["max_completion_tokens", "max_tokens"],
        extra: &["continue_final_message", "add_generation_prompt"],
    },
    stamps_every_event: true,
    terminal: "data: [DONE]",
    trims_continuation: false,
    live_reasoning: true,
};

/// Reads each attempt's stream, writes the client's.
const CODEC: Codec<ChunkDecoder, ChunkEncoder> = Codec::NEW;

/// The key reasoning comes under when the stream does not say (a held block of another wire).
const REASONING_KEY: &str = "\"reasoning_content\"";

// ---- reading ---------------------------------------------------------------------------

/// Reads one attempt's chunks.
#[derive(Debug, Default)]
struct ChunkDecoder {
    /// The attempt's first chunk with a choice has been read (its start).
    started: bool,
    /// A chunk said usage comes before the end (a `usage` member, even `null`).
    usage_coming: bool,
    /// The stream has several choices: how many have appeared.
    several: Option<u32>,
    /// The text block open now, if any.
    text: Option<u32>,
    /// The reasoning block open now, and the key its pieces come under.
    reasoning: Option<(u32, ReasoningKey)>,
    /// The refusal block open now, if any.
    refusal: Option<u32>,
    /// Open tool calls: upstream `index` → block, and the blocks in the order they began.
    tools: HashMap<u32, u32>,
    tool_order: Vec<u32>,
    /// The last tool call that came without an `index`: the index it took, and its id.
    unindexed: Option<(u32, String)>,
    /// The index after every tool call of the message so far (indexed or not), so that a call
    /// without one is placed after them without a search.
    after_tools: u32,
    /// Numbers the blocks.
    blocks: Blocks,
}

/// Which key a reasoning piece came under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReasoningKey {
    /// `reasoning_content` (DeepSeek, older vLLM).
    Content,
    /// `reasoning` (newer vLLM, OpenRouter).
    Plain,
}

impl ReasoningKey {
    fn of(key: &[u8]) -> Option<ReasoningKey> {
        match key {
            b"\"reasoning_content\"" => Some(ReasoningKey::Content),
            b"\"reasoning\"" => Some(ReasoningKey::Plain),
            _ => None,
        }
    }
}

/// The top-level members a chunk is read for.
const TOP: [&str; 10] = [
    "id", "created", "model", "object", "error", "choices", "usage", "message", "type", "code",
];

impl Decode for ChunkDecoder {
    fn fast_text<'a>(&mut self, _: Option<&[u8]>, data: &'a [u8]) -> Option<FastText<'a>> {
        // What the fast path does not read of a chunk goes out as it came: it must be text.
        let data = std::str::from_utf8(data).ok()?;
        let piece = fast_piece(data)?;
        let block = self.fast_block(&piece)?;
        Some(FastText {
            block,
            literal: piece.literal,
            plain: piece.plain,
            number: None,
        })
    }

    fn decode(&mut self, _: Option<&str>, data: &str, items: &mut Vec<Item>) -> Decoded {
        if data.trim_ascii() == "[DONE]" {
            self.close_all(items);
            items.push(Item::Terminal);
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        // Nearly every chunk is one piece of text or reasoning: once the attempt's first chunk
        // has been read in full, read that shape without the general reader.
        if let Some(piece) = fast_piece(data) {
            if let Some(block) = self.fast_block(&piece) {
                let literal = Literal::of(data, piece.literal)
                    .ok_or_else(|| Unreadable::new("a piece that does not read exactly"))?;
                items.push(match piece.reasoning {
                    Some(_) => Item::Reasoning { block, literal },
                    None => Item::Text { block, literal },
                });
                return Ok(());
            }
        }
        let [id, created, model, object, error, choices, usage, message, kind, code] =
            walk::members(data, TOP).ok_or_else(|| Unreadable::new("an unreadable chunk"))?;
        fn value<'a>(m: Option<Member<'a>>) -> Option<&'a str> {
            m.map(|m| m.value)
        }
        if value(object) == Some("\"error\"") {
            // vLLM's error: the error's members at the top of the chunk.
            items.push(error_item(data, value(message), value(kind), value(code)));
            return Ok(());
        }
        if let Some(error) = not_null(value(error)) {
            items.push(in_band(data, error)?);
            return Ok(());
        }
        if usage.is_some() && !self.usage_coming {
            self.usage_coming = true;
            items.push(Item::UsageComing);
        }
        let usage = match not_null(value(usage)) {
            Some(raw) => Some((read_usage(raw)?, raw)),
            None => None,
        };
        let start = Start {
            id: span_of(data, value(id)),
            model: span_of(data, value(model)),
            created: span_of(data, value(created)),
            input_tokens: None,
        };
        let Some(choices) = not_null(value(choices)) else {
            self.no_choice(usage, data, items);
            return Ok(());
        };
        // One pass over the choices: how many, whether any is not the first, the first.
        let (mut count, mut first, mut others) = (0usize, None, false);
        walk::elements(choices, |_, choice| {
            count += 1;
            let [index] = walk::members(choice, ["index"])?;
            if !matches!(value(index), None | Some("0")) {
                others = true;
            }
            first.get_or_insert(choice);
            Some(())
        })
        .ok_or_else(|| Unreadable::new("unreadable choices"))?;
        if self.several.is_none() && (count > 1 || others) {
            self.several = Some(u32::from(self.started));
            items.push(Item::Choices);
        }
        if self.several.is_some() {
            return self.read_choices(data, start, choices, usage, items);
        }
        let Some(choice) = first else {
            self.no_choice(usage, data, items);
            return Ok(());
        };
        if !self.started {
            self.started = true;
            items.push(Item::Start(start));
        }
        let [delta, finish] = walk::members(choice, ["delta", "finish_reason"])
            .ok_or_else(|| Unreadable::new("an unreadable choice"))?;
        let finish = not_null(value(finish));
        if finish == Some("\"error\"") {
            // OpenRouter's mark of a failure, here without its error object.
            items.push(error_item(data, None, None, None));
            return Ok(());
        }
        if let Some(delta) = not_null(value(delta)) {
            self.delta(data, delta, items)?;
        }
        if let Some(reason) = finish {
            self.close_all(items);
            items.push(Item::Finish(Stop {
                reason: Span::of(data, reason),
                usage: usage.map(|(u, _)| u),
                report: usage.map_or(Span::default(), |(_, raw)| Span::of(data, raw)),
            }));
        }
        Ok(())
    }

    fn expect_choices(&mut self) {
        self.several = Some(0);
    }
}

impl ChunkDecoder {
    /// The block a piece read by [`fast_piece`] goes to, if the decoder is where that piece
    /// changes nothing else (the block is open, no other block must close first).
    fn fast_block(&self, piece: &Piece<'_>) -> Option<u32> {
        if !self.started
            || self.several.is_some()
            || !self.tools.is_empty()
            || self.refusal.is_some()
        {
            return None;
        }
        match (piece.reasoning, self.reasoning) {
            (None, None) => self.text,
            (Some((key, _)), Some((block, open))) if key == open => Some(block),
            _ => None,
        }
    }

    /// A chunk without a choice: the usage chunk, or one of metadata (Azure's
    /// `prompt_filter_results`).
    fn no_choice(&mut self, usage: Option<(Usage, &str)>, _data: &str, items: &mut Vec<Item>) {
        if let Some((usage, _)) = usage {
            items.push(Item::Usage(usage));
        }
    }

    /// One choice's delta, in the order a message has its parts: reasoning, text, refusal,
    /// tool calls.
    fn delta(&mut self, data: &str, delta: &str, items: &mut Vec<Item>) -> Decoded {
        let [content, reasoning_content, reasoning, refusal, calls] = walk::members(
            delta,
            [
                "content",
                "reasoning_content",
                "reasoning",
                "refusal",
                "tool_calls",
            ],
        )
        .ok_or_else(|| Unreadable::new("an unreadable delta"))?;
        for member in [reasoning_content, reasoning].into_iter().flatten() {
            if let Some(raw) = not_null(Some(member.value)) {
                let key = ReasoningKey::of(member.key.as_bytes()).unwrap_or(ReasoningKey::Content);
                let literal = Literal::of(data, raw)
                    .ok_or_else(|| Unreadable::new("a chunk whose reasoning is not text"))?;
                self.reasoning_piece(data, key, member.key, literal, items);
            }
        }
        if let Some(raw) = not_null(content.map(|m| m.value)) {
            let literal = Literal::of(data, raw)
                .ok_or_else(|| Unreadable::new("a chunk whose content is not text"))?;
            self.content(literal, items);
        }
        if let Some(raw) = not_null(refusal.map(|m| m.value)) {
            let literal = Literal::of(data, raw)
                .ok_or_else(|| Unreadable::new("a chunk whose refusal is not text"))?;
            self.refusal_piece(literal, items);
        }
        if let Some(calls) = not_null(calls.map(|m| m.value)) {
            let mut result = Ok(());
            walk::elements(calls, |position, call| {
                result = self.tool_call(data, call, position, items);
                result.is_ok().then_some(())
            })
            .ok_or_else(|| {
                result
                    .err()
                    .unwrap_or_else(|| Unreadable::new("unreadable tool calls"))
            })?;
        }
        Ok(())
    }

    fn reasoning_piece(
        &mut self,
        data: &str,
        key: ReasoningKey,
        key_literal: &str,
        literal: Literal,
        items: &mut Vec<Item>,
    ) {
        if literal.is_empty() {
            return;
        }
        let block = match self.reasoning {
            Some((block, open)) if open == key => block,
            _ => {
                // Reasoning after the answer began: what came before it is complete.
                self.close_reasoning(items);
                self.close_refusal(items);
                self.close_tools(items);
                if let Some(block) = self.text.take() {
                    items.push(Item::BlockStop { block });
                }
                let native = Span::of(data, key_literal);
                let block = self.blocks.start(BlockKind::Reasoning, native, items);
                self.reasoning = Some((block, key));
                block
            }
        };
        items.push(Item::Reasoning { block, literal });
    }

    fn content(&mut self, literal: Literal, items: &mut Vec<Item>) {
        // Empty: nothing yet (the first chunk's `"content": ""`).
        if literal.is_empty() {
            return;
        }
        self.close_reasoning(items);
        self.close_refusal(items);
        // Text after tool calls: the calls are complete.
        if !self.tools.is_empty() {
            self.close_tools(items);
            if let Some(block) = self.text.take() {
                items.push(Item::BlockStop { block });
            }
        }
        let block = self.blocks.open(&mut self.text, BlockKind::Text, items);
        items.push(Item::Text { block, literal });
    }

    fn refusal_piece(&mut self, literal: Literal, items: &mut Vec<Item>) {
        if literal.is_empty() {
            return;
        }
        self.close_reasoning(items);
        self.close_tools(items);
        let block = self
            .blocks
            .open(&mut self.refusal, BlockKind::Refusal, items);
        items.push(Item::Refusal { block, literal });
    }

    fn tool_call(
        &mut self,
        data: &str,
        call: &str,
        position: usize,
        items: &mut Vec<Item>,
    ) -> Decoded {
        let unreadable = || Unreadable::new("an unreadable tool call");
        let [index, id, kind, function] =
            walk::members(call, ["index", "id", "type", "function"]).ok_or_else(unreadable)?;
        let [name, arguments] = match not_null(function.map(|m| m.value)) {
            Some(f) => walk::members(f, ["name", "arguments"]).ok_or_else(unreadable)?,
            None => [None, None],
        };
        let string = |m: Option<Member<'_>>| match not_null(m.map(|m| m.value)) {
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
        self.close_reasoning(items);
        self.close_refusal(items);
        let index = match not_null(index.map(|m| m.value)) {
            Some(raw) => raw
                .parse::<u32>()
                .map_err(|_| Unreadable::new("a tool call whose index is not a number"))?,
            None => self.unindexed(data, id, position),
        };
        crate::relay::step();
        self.after_tools = self.after_tools.max(index.saturating_add(1));
        let block = match self.tools.get(&index) {
            Some(&block) => {
                if !id.is_empty() || !name.is_empty() {
                    items.push(Item::ToolName { block, id, name });
                }
                block
            }
            None => {
                let native = kind.span();
                let block = self
                    .blocks
                    .start(BlockKind::ToolCall { id, name }, native, items);
                self.tools.insert(index, block);
                self.tool_order.push(block);
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

    /// The index of a tool call that came without one (Gemini's compatibility endpoint): the
    /// call its `id` names if that is the last such call, else a new one; without an id, the
    /// last such call (its arguments continued), or a new one at `position`'s turn.
    fn unindexed(&mut self, data: &str, id: Literal, position: usize) -> u32 {
        let mut id_text = String::new();
        id.read_into(data, &mut id_text);
        match &self.unindexed {
            Some((index, last)) if id_text.is_empty() || *last == id_text => *index,
            _ => {
                // After every call the stream has (indexed or not), in the order they come.
                let index = self
                    .after_tools
                    .max(u32::try_from(position).unwrap_or(u32::MAX));
                self.unindexed = Some((index, id_text));
                index
            }
        }
    }

    fn close_reasoning(&mut self, items: &mut Vec<Item>) {
        if let Some((block, _)) = self.reasoning.take() {
            items.push(Item::BlockStop { block });
        }
    }

    fn close_refusal(&mut self, items: &mut Vec<Item>) {
        if let Some(block) = self.refusal.take() {
            items.push(Item::BlockStop { block });
        }
    }

    /// Every open tool call is complete.
    fn close_tools(&mut self, items: &mut Vec<Item>) {
        for block in self.tool_order.drain(..) {
            crate::relay::step();
            items.push(Item::BlockStop { block });
        }
        self.tools.clear();
        self.unindexed = None;
        self.after_tools = 0;
    }

    /// The message is complete: every block but its text is.
    fn close_all(&mut self, items: &mut Vec<Item>) {
        self.close_reasoning(items);
        self.close_refusal(items);
        self.close_tools(items);
    }

    /// A chunk of a stream with several choices: which choices start, carry part of their
    /// answer or finish.
    fn read_choices(
        &mut self,
        data: &str,
        start: Start,
        choices: &str,
        usage: Option<(Usage, &str)>,
        items: &mut Vec<Item>,
    ) -> Decoded {
        if !self.started {
            self.started = true;
            items.push(Item::Start(start));
        }
        let seen = self.several.get_or_insert(0);
        // Why the walk over the choices stopped early.
        enum Halt {
            Unreadable(&'static str),
            Error,
        }
        let mut halt = Halt::Unreadable("unreadable choices");
        let walked = walk::elements(choices, |_, choice| {
            let [index, delta, finish] =
                walk::members(choice, ["index", "delta", "finish_reason"])?;
            let index: u32 = match index.map(|m| m.value) {
                None => 0,
                Some(raw) => raw.parse().ok()?,
            };
            if index > *seen {
                halt = Halt::Unreadable("a choice that appears out of order");
                return None;
            }
            if index == *seen {
                *seen += 1;
                items.push(Item::ChoiceStart { choice: index });
            }
            if let Some(delta) = not_null(delta.map(|m| m.value)) {
                if has_content(delta)? {
                    items.push(Item::ChoiceContent { choice: index });
                }
            }
            match not_null(finish.map(|m| m.value)) {
                Some("\"error\"") => {
                    halt = Halt::Error;
                    return None;
                }
                Some(_) => items.push(Item::ChoiceFinish { choice: index }),
                None => {}
            }
            Some(())
        });
        match (walked, halt) {
            (Some(()), _) => {}
            // A choice finished with "error" (OpenRouter): an in-band failure.
            (None, Halt::Error) => {
                items.push(error_item(data, None, None, None));
                return Ok(());
            }
            (None, Halt::Unreadable(why)) => return Err(Unreadable::new(why)),
        }
        if let Some((usage, _)) = usage {
            items.push(Item::Usage(usage));
        }
        Ok(())
    }
}

/// Whether a delta carries part of an answer: text, reasoning or a refusal that is not
/// empty, or a tool call. `None` when it is not a readable delta.
fn has_content(delta: &str) -> Option<bool> {
    let [content, reasoning_content, reasoning, refusal, calls] = walk::members(
        delta,
        [
            "content",
            "reasoning_content",
            "reasoning",
            "refusal",
            "tool_calls",
        ],
    )?;
    let text =
        |m: Option<Member<'_>>| m.is_some_and(|m| m.value.starts_with('"') && m.value.len() > 2);
    let calls = calls.is_some_and(|m| {
        m.value.starts_with('[') && m.value.trim_start_matches('[').trim_start() != "]"
    });
    Some(text(content) || text(reasoning_content) || text(reasoning) || text(refusal) || calls)
}

/// The span of a value in `data`, empty when absent.
fn span_of(data: &str, raw: Option<&str>) -> Span {
    raw.map_or(Span::default(), |r| Span::of(data, r))
}

/// A usage report's completion and prompt tokens.
fn read_usage(raw: &str) -> Result<Usage, Unreadable> {
    let [output, input] = walk::members(raw, ["completion_tokens", "prompt_tokens"])
        .ok_or_else(|| Unreadable::new("an unreadable usage report"))?;
    let tokens = |m: Option<Member<'_>>| m.and_then(|m| m.value.parse().ok());
    Ok(Usage {
        output_tokens: tokens(output),
        input_tokens: tokens(input),
    })
}

/// An error chunk's `error` object.
fn in_band(data: &str, error: &str) -> Result<Item, Unreadable> {
    let [message, kind, code] = walk::members(error, ["message", "type", "code"])
        .ok_or_else(|| Unreadable::new("an unreadable error chunk"))?;
    Ok(error_item(
        data,
        message.map(|m| m.value),
        kind.map(|m| m.value),
        code.map(|m| m.value),
    ))
}

/// An in-band error made of its message, type and code (JSON values as they came).
fn error_item(data: &str, message: Option<&str>, kind: Option<&str>, code: Option<&str>) -> Item {
    let value = |raw: Option<&str>| match not_null(raw) {
        Some(raw) => text(raw).map_or_else(|| raw.to_owned(), |t| t.into_owned()),
        None => String::new(),
    };
    let (kind_text, code_text) = (value(kind), value(code));
    Item::Error(InBand {
        client: is_client_error(
            Some(kind_text.as_str()).filter(|k| !k.is_empty()),
            Some(code_text.as_str()).filter(|c| !c.is_empty()),
        ),
        kind: span_of(data, not_null(kind)),
        code: span_of(data, not_null(code)),
        message: span_of(data, not_null(message)),
    })
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

    fn asks_usage(&self, request: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Request {
            stream_options: Option<Options>,
        }
        #[derive(serde::Deserialize)]
        struct Options {
            include_usage: Option<bool>,
        }
        serde_json::from_slice::<Request>(request)
            .ok()
            .and_then(|r| r.stream_options)
            .and_then(|o| o.include_usage)
            == Some(true)
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

mod encode;
mod fast;
#[cfg(test)]
mod tests;
