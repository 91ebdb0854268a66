//! What a decoder reads from an upstream event, in no wire format's terms: the items the core
//! decides on and an encoder writes back.
//!
//! Items point into the event's data by [`Span`] rather than borrowing it, so that the core can
//! keep one `Vec<Item>` for a whole stream and reuse it for every event without allocating.

use crate::dialect::Dialect;
use crate::json::{scan_literal, unescape_into};

/// Where a piece of an event lies in its data (an empty span: the piece is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// The span of `part`, which must be a slice of `data` (as serde's borrowed values are).
    pub(crate) fn of(data: &str, part: &str) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
        debug_assert!(start + part.len() <= data.len(), "a span outside its data");
        Span {
            start,
            end: start + part.len(),
        }
    }

    /// The piece of `data` the span covers ("" for a span that is not within it).
    pub(crate) fn get(self, data: &str) -> &str {
        data.get(self.start..self.end).unwrap_or("")
    }

    /// Whether the piece is absent.
    pub(crate) fn is_empty(self) -> bool {
        self.start >= self.end
    }
}

/// A JSON string literal in an event's data, quotes included, exactly as it came. Made only
/// from text that reads exactly ([`scan_literal`]): a decoder cannot hand the core a piece it
/// could not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Literal {
    span: Span,
    /// No escapes: its text is what lies between its quotes.
    plain: bool,
}

impl Literal {
    /// `raw`, a slice of `data`, if it is exactly one string literal that reads exactly.
    pub(crate) fn of(data: &str, raw: &str) -> Option<Literal> {
        let scanned = scan_literal(raw.as_bytes())?;
        (scanned.len == raw.len()).then(|| Literal {
            span: Span::of(data, raw),
            plain: scanned.plain,
        })
    }

    /// Where it lies.
    pub(crate) fn span(self) -> Span {
        self.span
    }

    /// The literal as it came, quotes included ("" when absent).
    pub(crate) fn raw(self, data: &str) -> &str {
        self.span.get(data)
    }

    /// Whether it is absent or `""`.
    pub(crate) fn is_empty(self) -> bool {
        self.span.end.saturating_sub(self.span.start) <= 2
    }

    /// Appends its text to `out`.
    pub(crate) fn read_into(self, data: &str, out: &mut String) {
        read_literal(self.raw(data), self.plain, out);
    }
}

/// Appends the text of `literal` (which reads exactly, `plain` if it has no escape) to `out`.
pub(crate) fn read_literal(literal: &str, plain: bool, out: &mut String) {
    if plain {
        out.push_str(
            literal
                .get(1..literal.len().saturating_sub(1))
                .unwrap_or(""),
        );
    } else {
        unescape_into(literal, out);
    }
}

/// One thing an upstream event says. Blocks are numbered by the decoder, per attempt, densely
/// from 0 in the order they start. String pieces are [`Literal`]s.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Item {
    /// The message begins (Anthropic `message_start`, a Chat stream's first chunk).
    Start(Start),
    /// A content block begins. `native` is the block as this wire writes it (Anthropic's
    /// `content_block`), for an encoder of the same wire.
    BlockStart {
        block: u32,
        kind: BlockKind,
        native: Span,
    },
    /// Answer text.
    Text { block: u32, literal: Literal },
    /// A piece of a tool call's arguments (JSON text, as a string literal).
    ToolArgs { block: u32, literal: Literal },
    /// A tool call's whole arguments, a JSON object as it came (Gemini's `args`): for an
    /// encoder of another wire, which cannot read them in the block's native form.
    ToolArgsObject { block: u32, json: Span },
    /// A tool call's id or name, sent after its first delta (Chat allows it).
    ToolName {
        block: u32,
        id: Literal,
        name: Literal,
    },
    /// A piece of reasoning.
    Reasoning { block: u32, literal: Literal },
    /// A reasoning block's signature.
    Signature { block: u32, literal: Literal },
    /// A piece of a refusal (Chat `delta.refusal`).
    Refusal { block: u32, literal: Literal },
    /// A delta of a kind the core does not read (Anthropic `citations_delta`...): the whole
    /// event is its content.
    OtherDelta { block: u32 },
    /// A block is complete.
    BlockStop { block: u32 },
    /// The answer is complete.
    Finish(Stop),
    /// A usage report of its own (Chat's last chunk).
    Usage(Usage),
    /// The stream will report usage before its end (Chat `include_usage`): a closing the
    /// layer writes itself must then report it too.
    UsageComing,
    /// The stream's last event (`message_stop`, `[DONE]`).
    Terminal,
    /// An in-band error.
    Error(InBand),
    /// A keep-alive (`ping`): proves the connection, not progress.
    KeepAlive,
    /// The event carries something only this attempt's upstream may be shown (Gemini's
    /// `continuationToken`, with which google-genai resumes a stream at that upstream by
    /// itself): it never goes out as it came; the encoder writes its other items anew.
    AttemptBound,
    /// The stream takes a shape the core does not read (several candidates, Gemini's
    /// `candidateCount` > 1): this event and the rest go out as they come, unwatched.
    Unwatched,
    /// An event that only restates what earlier events of its block said (the Responses
    /// API's `.done` events carry whole values): nothing goes out for it; the encoder writes
    /// its own, from what the client has, when the block closes.
    Restated,
    /// From here on the stream carries several answers at once (Chat `n > 1`, Gemini
    /// `candidateCount > 1`): its events then say only [`ChoiceStart`](Item::ChoiceStart),
    /// [`ChoiceContent`](Item::ChoiceContent) and [`ChoiceFinish`](Item::ChoiceFinish) of each
    /// choice, besides the stream's own items (start, usage, terminal, errors).
    Choices,
    /// Choice `choice` appears for the first time in this attempt (choices appear in order).
    ChoiceStart { choice: u32 },
    /// Part of choice `choice`'s answer (text, reasoning, a refusal, a tool call).
    ChoiceContent { choice: u32 },
    /// Choice `choice` is complete.
    ChoiceFinish { choice: u32 },
    /// Nothing the core needs; it goes on as it came where it can.
    Other,
}

/// The envelope of a message: JSON values as they came (empty: absent).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Start {
    pub(crate) id: Span,
    pub(crate) model: Span,
    /// Chat's `created` timestamp.
    pub(crate) created: Span,
    /// Prompt tokens, when the start reports them (Anthropic `message_start`).
    pub(crate) input_tokens: Option<u64>,
}

/// What a block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Text,
    /// A tool call; its id and name (absent when they come later).
    ToolCall {
        id: Literal,
        name: Literal,
    },
    Reasoning,
    /// Reasoning the provider encrypted: its whole content is in the block's start.
    RedactedReasoning,
    /// A refusal (Chat `delta.refusal`): held until complete, like a tool call, so that no
    /// seam can repeat part of it.
    Refusal,
    /// A block of a kind only its own wire knows (Anthropic server tools...).
    Other,
}

impl BlockKind {
    pub(crate) fn is_reasoning(self) -> bool {
        matches!(self, BlockKind::Reasoning | BlockKind::RedactedReasoning)
    }
}

/// Why an answer stopped (a JSON value as it came), and the usage when the wire reports it
/// with the stop (Anthropic `message_delta`, a Chat finish chunk carrying `usage`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stop {
    pub(crate) reason: Span,
    pub(crate) usage: Option<Usage>,
    /// The usage report as the wire wrote it there (Chat's `usage` object), for an encoder of
    /// the same wire to keep what it does not model.
    pub(crate) report: Span,
}

/// Why an answer stopped, in no wire's terms: how a stop reason of one wire is told to a
/// client of another (each wire reads its own values with `Rules::stop_kind`, and its encoder
/// writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// The model finished (Anthropic `end_turn`, Chat `stop`).
    EndTurn,
    /// The token limit (`max_tokens`, `length`).
    MaxTokens,
    /// A tool call ends the turn (`tool_use`, `tool_calls`).
    ToolUse,
    /// A stop sequence matched (Chat reports it as `stop`).
    StopSequence,
    /// Refused or filtered (`refusal`, `content_filter`).
    Refusal,
    /// The context window is full (Anthropic `model_context_window_exceeded`).
    ContextWindow,
    /// A value the reading wire does not know: written as the end of the turn.
    Other,
}

/// Tokens an attempt reports.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// Output (completion) tokens, cumulative for the attempt.
    pub(crate) output_tokens: Option<u64>,
    /// Prompt tokens.
    pub(crate) input_tokens: Option<u64>,
}

/// An in-band error: its type, code and message as JSON values (empty: absent).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InBand {
    /// A retry elsewhere would fail alike (invalid request, authentication...): the client
    /// gets it as it came.
    pub(crate) client: bool,
    pub(crate) kind: Span,
    pub(crate) code: Span,
    pub(crate) message: Span,
}

impl Item {
    /// What the event carrying this item proves about the upstream.
    pub(crate) fn carries(&self) -> Carried {
        match self {
            Item::KeepAlive => Carried::Nothing,
            Item::Text { .. }
            | Item::ToolArgs { .. }
            | Item::ToolArgsObject { .. }
            | Item::Reasoning { .. }
            | Item::Signature { .. }
            | Item::Refusal { .. }
            | Item::OtherDelta { .. }
            | Item::ToolName { .. }
            | Item::ChoiceContent { .. } => Carried::Content,
            Item::BlockStart { kind, .. } if *kind != BlockKind::Text => Carried::Content,
            _ => Carried::Event,
        }
    }
}

/// What an event showed of the upstream, least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Carried {
    /// A comment or a keep-alive: the connection is alive, the model maybe not.
    Nothing,
    /// An event of the stream's envelope (start, stop reason, usage...).
    Event,
    /// Part of the answer: text, a tool call, reasoning.
    Content,
}

/// An event's data as an encoder may read it: the items' spans point into `data`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) data: &'a str,
    /// Its `event:` name, if it has one.
    pub(crate) name: Option<&'a str>,
    /// The wire the event came in.
    pub(crate) wire: Dialect,
}

impl<'a> Source<'a> {
    pub(crate) fn get(&self, span: Span) -> &'a str {
        span.get(self.data)
    }
}

/// A decoder's block numbers: from 0, in the order the blocks start (what the core expects of
/// every wire), each start announced as it is numbered.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    next: u32,
}

impl Blocks {
    /// A new block of `kind`, its start pushed onto `items`.
    pub(crate) fn start(&mut self, kind: BlockKind, native: Span, items: &mut Vec<Item>) -> u32 {
        let block = self.next;
        self.next += 1;
        items.push(Item::BlockStart {
            block,
            kind,
            native,
        });
        block
    }

    /// The block open in `slot` (a decoder's text block...), or a new one of `kind` started
    /// there.
    pub(crate) fn open(
        &mut self,
        slot: &mut Option<u32>,
        kind: BlockKind,
        items: &mut Vec<Item>,
    ) -> u32 {
        match *slot {
            Some(block) => block,
            None => *slot.insert(self.start(kind, Span::default(), items)),
        }
    }
}
