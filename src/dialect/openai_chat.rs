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

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{
    sse_event, stop_kind_of, Codec, Decode, Decoded, Encode, ErrorKind, FastText, Rewritten, Rules,
    Unreadable, Wire,
};
use crate::json::{not_null, scan_literal, text, to_vec, write_str, RequestIndex, RequestShape};
use crate::outbox::Outbox;
use crate::relay::hold::{Held, HeldKind};
use crate::relay::item::{
    BlockKind, InBand, Item, Literal, Source, Span, Start, Stop, StopKind, Usage,
};
use crate::strategy::{Prefill, RewriteError, Strategy};
use crate::translate::ids;
use crate::walk::{self, Member};

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
    next_block: u32,
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

/// What a chunk that is nothing but one piece of text or reasoning holds.
#[derive(Debug)]
struct Piece<'a> {
    /// Reasoning, under this key (its literal, quotes included); `None` for answer text.
    reasoning: Option<(ReasoningKey, &'a str)>,
    /// The JSON string literal, quotes included, that reads exactly.
    literal: &'a str,
    plain: bool,
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

    fn new_block(&mut self) -> u32 {
        let block = self.next_block;
        self.next_block += 1;
        block
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
                let block = self.new_block();
                self.reasoning = Some((block, key));
                items.push(Item::BlockStart {
                    block,
                    kind: BlockKind::Reasoning,
                    native: Span::of(data, key_literal),
                });
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

    fn refusal_piece(&mut self, literal: Literal, items: &mut Vec<Item>) {
        if literal.is_empty() {
            return;
        }
        self.close_reasoning(items);
        self.close_tools(items);
        let block = match self.refusal {
            Some(block) => block,
            None => {
                let block = self.new_block();
                self.refusal = Some(block);
                items.push(Item::BlockStart {
                    block,
                    kind: BlockKind::Refusal,
                    native: Span::default(),
                });
                block
            }
        };
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

/// The chunk nearly every stream is made of, proven valid JSON in one walk whatever order its
/// keys come in: one choice (`index` 0 or absent, `finish_reason` null or absent) whose delta
/// has one piece of text (`content`) or of reasoning (`reasoning_content`, `reasoning`), every
/// other delta member null; no `error`, no `usage` but null. `None` for anything else (or any
/// escaped key, which could hide a second member of the same name), which the general reader
/// then reads.
fn fast_piece(data: &str) -> Option<Piece<'_>> {
    let b = data.as_bytes();
    let mut found = None;
    let mut choices = false;
    walk::document(b, |i| {
        walk::object(b, i, 0, |key, at| {
            if !key.plain {
                return None;
            }
            match key.raw {
                b"\"choices\"" => {
                    if std::mem::replace(&mut choices, true) {
                        return None;
                    }
                    walk::array(b, at, 1, |n, at| {
                        (n == 0).then_some(())?;
                        fast_choice(b, at, &mut found)
                    })
                }
                b"\"error\"" | b"\"usage\"" => walk::null(b, at),
                _ => walk::value(b, at, 1),
            }
        })
    })?;
    let found: Found = found?;
    let reasoning = match found.reasoning {
        Some((key, at)) => Some((key, data.get(at..at + key_len(key))?)),
        None => None,
    };
    Some(Piece {
        reasoning,
        literal: data.get(found.literal.0..found.literal.1)?,
        plain: found.plain,
    })
}

/// Where [`fast_piece`] found its piece.
struct Found {
    /// Reasoning: its key, and where the key's literal starts.
    reasoning: Option<(ReasoningKey, usize)>,
    literal: (usize, usize),
    plain: bool,
}

fn key_len(key: ReasoningKey) -> usize {
    match key {
        ReasoningKey::Content => "\"reasoning_content\"".len(),
        ReasoningKey::Plain => "\"reasoning\"".len(),
    }
}

/// The only choice of a [`fast_piece`] chunk.
fn fast_choice(b: &[u8], at: usize, found: &mut Option<Found>) -> Option<usize> {
    let mut delta = false;
    walk::object(b, at, 2, |key, at| {
        if !key.plain {
            return None;
        }
        match key.raw {
            b"\"index\"" => (b.get(at) == Some(&b'0')).then_some(at + 1),
            b"\"finish_reason\"" => walk::null(b, at),
            b"\"delta\"" => {
                if std::mem::replace(&mut delta, true) {
                    return None;
                }
                fast_delta(b, at, found)
            }
            _ => walk::value(b, at, 3),
        }
    })
}

/// The delta of a [`fast_piece`] chunk: one piece, every other member null.
fn fast_delta(b: &[u8], at: usize, found: &mut Option<Found>) -> Option<usize> {
    walk::object(b, at, 3, |key, at| {
        if !key.plain {
            return None;
        }
        let reasoning = match key.raw {
            b"\"content\"" => None,
            raw => match ReasoningKey::of(raw) {
                Some(r) => Some((r, key.at)),
                None => return walk::null(b, at),
            },
        };
        if b.get(at) == Some(&b'n') {
            return walk::null(b, at);
        }
        let scanned = scan_literal(b.get(at..)?)?;
        if found.is_some() {
            return None;
        }
        *found = Some(Found {
            reasoning,
            literal: (at, at + scanned.len),
            plain: scanned.plain,
        });
        Some(at + scanned.len)
    })
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
            match stop_kind_of(&stop, src) {
                StopKind::EndTurn | StopKind::StopSequence | StopKind::Other if self.tools > 0 => {
                    "\"tool_calls\""
                }
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

    fn piece(data: &str) -> Option<(Option<&str>, &str, bool)> {
        fast_piece(data).map(|p| (p.reasoning.map(|(_, key)| key), p.literal, p.plain))
    }

    #[test]
    fn the_fast_piece_is_read_whatever_order_a_server_writes_its_keys_in() {
        let content = Some((None, r#"" \"hi\"""#, false));
        for chunk in [
            // OpenAI's order.
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","service_tier":"default","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":" \"hi\""},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x"}"#,
            // Azure's: sorted, content filter results in the choice.
            r#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":" \"hi\""},"finish_reason":null,"index":0,"logprobs":null}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk","system_fingerprint":"fp"}"#,
            // vLLM's: `stop_reason` in the choice.
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" \"hi\""},"logprobs":null,"finish_reason":null,"stop_reason":null}]}"#,
            // DeepSeek's: the other pieces null beside the one there is.
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":" \"hi\"","reasoning_content":null},"logprobs":null,"finish_reason":null}]}"#,
            // Whitespace anywhere JSON allows it.
            "{ \"choices\" : [ { \"delta\" : { \"content\" : \" \\\"hi\\\"\" } , \"index\" : 0 } ] }",
        ] {
            assert_eq!(piece(chunk), content, "{chunk}");
        }
        let reasoning = r#"{"id":"c","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"hm"},"finish_reason":null}]}"#;
        assert_eq!(
            piece(reasoning),
            Some((Some(r#""reasoning_content""#), r#""hm""#, true))
        );
        let vllm =
            r#"{"id":"c","choices":[{"index":0,"delta":{"reasoning":"hm"},"finish_reason":null}]}"#;
        assert_eq!(piece(vllm), Some((Some(r#""reasoning""#), r#""hm""#, true)));
    }

    #[test]
    fn anything_but_a_lone_valid_piece_takes_the_exact_path() {
        for other in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","tool_calls":[]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#,
            r#"{"error":{"message":"x"},"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"completion_tokens":1}}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","refusal":"no"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","reasoning":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[],"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            // An escaped key may name a member a second time.
            r#"{"choices":[{"index":0,"delta":{"content":"a","\u0063ontent":"b"}}]}"#,
            // Broken JSON around a valid piece: never forwarded as it came.
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":nul}]}"#,
            r#"{"id":"c" "choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"id":"c\x","choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"created":01}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}]} trailing"#,
            r#"{"choices":[{"index":0,"delta":{"content":"bad \ud800 surrogate"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{}}]}"#,
        ] {
            assert_eq!(piece(other), None, "{other}");
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
