//! The relay core: what the client gets of each upstream event, in no wire format's terms.
//!
//! ```text
//! event ──▶ decoder (the attempt's wire) ──▶ items ──▶ core ──▶ as it came (zero copy)
//!                                                        └────▶ encoder (the client's wire)
//! ```
//!
//! A dialect's decoder turns each event into a few [`Item`]s; the core decides, per item,
//! whether it goes out as it came, is held back, dropped or must be written anew, and keeps
//! the bookkeeping every dialect shares: the transcript, the hold budget, the seam, the map
//! from the attempt's blocks to the client's. An event whose items all go out as they came is
//! forwarded as the upstream's own bytes (the happy path: no copy, no encoding); otherwise the
//! client's encoder writes what goes out, item by item.
//!
//! The rules, for every dialect:
//! * Text streams live. The stop of a text block is held until something else must follow
//!   it, so that after a failure the continuation can go on in the same block.
//! * Every other block (tool calls, reasoning, kinds only one wire knows) is held until it is
//!   complete: clients turn a stopped tool call into a call with whatever arguments arrived,
//!   and reasoning is useless without its signature. Reasoning goes out at its stop; tool
//!   calls wait for the end of the message (or a following text block), because a failure
//!   between two parallel calls would otherwise leave the client with a call the fallback
//!   repeats. Everything held counts against `max_held_bytes`.
//! * After a seam: one start (the first the client saw), block numbers dense, the first
//!   continuation text routed into the client's open text block, the fallback's own
//!   reasoning dropped once the client has content, one stop reason, usage summed over
//!   attempts, one terminal event.
//!
//! Streams with several choices (Chat `n > 1`, Gemini `candidateCount > 1`) are not read
//! here yet: their items would need a choice index, and their place is a mode of their own
//! beside [`Mode::Streaming`], relayed as they came and recoverable only while nothing
//! reached the client. Until then a decoder that sees one says [`Item::Unwatched`], and the
//! rest of the stream passes through as it comes ([`Mode::Passthrough`]).

mod attempt;
pub(crate) mod hold;
pub(crate) mod item;
mod seam;

use std::sync::Arc;

use bytes::Bytes;

use crate::dialect::{sse_event, Dialect, Encode, ErrorKind, Limits, StreamFailure, Unreadable};
use crate::error::FailureClass;
use crate::json::unescape_into;
use crate::outbox::Outbox;
use crate::sse::Event;
use crate::strategy::Strategy;
use crate::transcript::Transcript;
use crate::untrusted::Redactor;

use attempt::{Attempt, NotOpen, Open};
use hold::{Budget, Held, HeldKind, OverBudget};
use item::{read_literal, BlockKind, Carried, InBand, Item, Literal, Source, Span, Stop};
use seam::SeamText;

/// What the relay says after an event.
#[derive(Debug)]
pub(crate) enum Step {
    /// Go on; the event showed this much of the upstream.
    Continue(Carried),
    /// The terminal event went out: the stream is complete.
    Done,
    Fail(StreamFailure),
}

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Events are read, and the client gets what the rules say.
    Streaming,
    /// The upstream sent an error a retry cannot fix, or a stream the core does not read
    /// ([`Item::Unwatched`]): the rest goes out as it comes.
    Passthrough,
    /// The terminal event went out.
    Done,
}

/// What the client has.
#[derive(Debug, Default)]
struct Client {
    /// It has the message's start.
    started: bool,
    /// A start was read (and given to the encoder) but its event did not go out: it goes out
    /// with the first event the encoder writes.
    start_owed: bool,
    /// A text block it has open.
    open_text: Option<u32>,
    /// The index its next block gets.
    next_block: u32,
    finish_sent: bool,
    usage_sent: bool,
    /// The upstream said usage comes before the end: a closing written here reports it too.
    usage_coming: bool,
}

/// What became of one item of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It can go out as it came (for the client's block `.0`, where it has one).
    AsCame(u32),
    /// It must be written by the encoder (for the client's block `.0`).
    Render(u32),
    /// Nothing goes out for it now (held, dropped, or already known).
    Quiet,
}

/// Watches one response stream across attempts.
#[derive(Debug)]
pub(crate) struct Relay {
    mode: Mode,
    /// The client's wire.
    wire: Dialect,
    encoder: Box<dyn Encode>,
    transcript: Transcript,
    client: Client,
    /// Complete tool blocks waiting for the end of the message or a text block.
    ready: Vec<Held>,
    budget: Budget,
    attempt: Attempt,
    /// The items of the event being read, and what became of each: kept for their capacity.
    items: Vec<Item>,
    outcomes: Vec<Outcome>,
    /// Reused buffers: data joined from several lines, text being read, text going out.
    joined: String,
    text: String,
    send: String,
}

impl std::fmt::Debug for dyn Encode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encode")
    }
}

impl Relay {
    pub(crate) fn new(wire: Dialect, limits: Limits) -> Self {
        Relay {
            mode: Mode::Streaming,
            wire,
            encoder: wire.spec().codec.encoder(),
            transcript: Transcript::new(limits.transcript),
            client: Client::default(),
            ready: Vec::new(),
            budget: Budget::new(limits.held),
            attempt: Attempt::new(wire, true, true, None, 0),
            items: Vec::new(),
            outcomes: Vec::new(),
            joined: String::new(),
            text: String::new(),
            send: String::new(),
        }
    }

    /// What the client has been given.
    pub(crate) fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// What the current attempt's upstream reported about its tokens and model.
    pub(crate) fn usage(&self) -> crate::observe::Usage {
        self.attempt.reported.clone()
    }

    /// A usage report of the current attempt's, as far as it goes.
    fn report(&mut self, usage: item::Usage) {
        let reported = &mut self.attempt.reported;
        reported.output_tokens = usage.output_tokens.or(reported.output_tokens);
        reported.input_tokens = usage.input_tokens.or(reported.input_tokens);
    }

    /// What to send while waiting for a fallback.
    pub(crate) fn keep_alive(&self) -> Bytes {
        self.encoder.keep_alive()
    }

    fn same_wire(&self) -> bool {
        self.attempt.wire == self.wire
    }

    /// Whether an event without data (comments, `id:`) may go out as it came: from the
    /// client's own wire, to clients that skip what is not data.
    fn passes_fieldless(&self) -> bool {
        self.same_wire() && !self.wire.spec().rules.data_lines_only()
    }

    /// One complete event of the current attempt.
    pub(crate) fn on_event(&mut self, ev: &Event<'_>, out: &mut Outbox) -> Step {
        if self.mode == Mode::Streaming && self.fast(ev, out) {
            return Step::Continue(Carried::Content);
        }
        if self.mode != Mode::Streaming {
            // After a client error or the terminal event, the rest goes out as it comes.
            if self.same_wire() {
                out.forward(ev);
            }
            return Step::Continue(if ev.fields.has_fields() {
                Carried::Event
            } else {
                Carried::Nothing
            });
        }
        // SSE is UTF-8; checked once here, every reader after this works on `str`.
        let Ok(raw) = std::str::from_utf8(ev.raw) else {
            return unreadable(Unreadable::new("an event that is not UTF-8"));
        };
        let fields = ev.fields;
        if !fields.has_fields() {
            // Comments and blank lines: keep-alives. They prove the connection, not progress.
            if self.passes_fieldless() {
                out.forward(ev);
            }
            return Step::Continue(Carried::Nothing);
        }
        let mut joined = std::mem::take(&mut self.joined);
        let data = match fields.data() {
            [] => {
                // A field but no data (`id:`, `retry:`): nothing for the client to read.
                if self.passes_fieldless() {
                    out.forward(ev);
                }
                self.joined = joined;
                return Step::Continue(Carried::Event);
            }
            [one] => raw.get(one.clone()).unwrap_or(""),
            lines => {
                joined.clear();
                for (i, line) in lines.iter().enumerate() {
                    if i > 0 {
                        joined.push('\n');
                    }
                    joined.push_str(raw.get(line.clone()).unwrap_or(""));
                }
                &joined[..]
            }
        };
        let name = fields.event().and_then(|r| raw.get(r));
        let step = self.read(ev, name, data, out);
        self.joined = joined;
        step
    }

    /// The happy path, for the event nearly every stream is made of: a piece of text that can
    /// go out as it came. The decoder reads it from bytes and proves it valid on the way; the
    /// event must have nothing else (one `data:` line, maybe an `event:` line), so that every
    /// byte forwarded was read. Anything else, or any doubt, takes the general path.
    fn fast(&mut self, ev: &Event<'_>, out: &mut Outbox) -> bool {
        let fields = ev.fields;
        if !self.attempt.as_came || !fields.plain() {
            return false;
        }
        let [data] = fields.data() else {
            return false;
        };
        let name = fields.event().and_then(|r| ev.raw.get(r));
        let Some(data) = ev.raw.get(data.clone()) else {
            return false;
        };
        let Some(text) = self.attempt.decoder.fast_text(name, data) else {
            return false;
        };
        if !self.as_came_into(text.block) {
            return false;
        }
        self.keep(text.literal.len() > 2, |t| {
            read_literal(text.literal, text.plain, t)
        });
        out.forward(ev);
        true
    }

    fn read(&mut self, ev: &Event<'_>, name: Option<&str>, data: &str, out: &mut Outbox) -> Step {
        self.items.clear();
        if let Err(why) = self.attempt.decoder.decode(name, data, &mut self.items) {
            return unreadable(why);
        }
        if self.items.is_empty() {
            self.items.push(Item::Other);
        }
        let src = Source {
            data,
            name,
            wire: self.attempt.wire,
        };
        self.outcomes.clear();
        let mut carried = Carried::Nothing;
        let mut rendering = false;
        let (mut with_start, mut with_error) = (false, false);
        for i in 0..self.items.len() {
            let item = self.items[i];
            carried = carried.max(item.carries());
            with_start |= matches!(item, Item::Start(_));
            with_error |= matches!(item, Item::Error(_));
            let mark = out.mark();
            let outcome = match self.apply(item, &src, out) {
                Ok(outcome) => outcome,
                Err(failure) => return Step::Fail(failure),
            };
            self.outcomes.push(outcome);
            if !rendering && !matches!(outcome, Outcome::AsCame(_)) {
                // The event cannot go out as it came after all: what of it could, is written
                // now, ahead of whatever this item had to send first.
                rendering = true;
                let mut earlier = out.aside();
                for j in 0..i {
                    self.render(self.items[j], self.outcomes[j], &src, &mut earlier);
                }
                out.insert(mark, earlier);
            }
            if rendering {
                self.render(item, outcome, &src, out);
            }
        }
        if !rendering {
            if with_error {
                // Its message may quote the key the upstream was sent.
                out.forward_error(ev);
            } else {
                out.forward(ev);
            }
            if with_start {
                self.started();
            }
        }
        match self.mode {
            Mode::Done => Step::Done,
            _ => Step::Continue(carried),
        }
    }

    /// Applies one item to the state; sends what must go out before it (a text block closed,
    /// tool calls released), and says what becomes of the item itself.
    fn apply(
        &mut self,
        item: Item,
        src: &Source<'_>,
        out: &mut Outbox,
    ) -> Result<Outcome, StreamFailure> {
        let as_came = self.attempt.as_came;
        let same_wire = self.same_wire();
        let pass = |yes: bool, client: u32| {
            if yes {
                Outcome::AsCame(client)
            } else {
                Outcome::Render(client)
            }
        };
        Ok(match item {
            Item::Start(start) => {
                let reported = &mut self.attempt.reported;
                reported.response_model = value_text(src, start.model).map(Into::into);
                reported.input_tokens = start.input_tokens;
                if self.client.started {
                    // The client has its start: one per stream, the first.
                    return Ok(Outcome::Quiet);
                }
                self.encoder.begin(&start, src);
                self.client.start_owed = true;
                pass(as_came, 0)
            }
            Item::BlockStart {
                block,
                kind,
                native,
            } => self.block_start(block, kind, native, src, out)?,
            Item::Text { block, literal } => self.text(block, literal, src)?,
            Item::ToolArgs { block, literal }
            | Item::Reasoning { block, literal }
            | Item::Signature { block, literal } => self.held_delta(item, block, literal, src)?,
            Item::ToolName { block, id, name } => {
                if let Some(Open::Held(held)) = self.attempt.get_mut(block) {
                    let before = held.size();
                    for (literal, to) in [(id, &mut held.id), (name, &mut held.name)] {
                        if !literal.is_empty() {
                            to.clear();
                            literal.read_into(src.data, to);
                        }
                    }
                    let grew = held.size().saturating_sub(before);
                    self.budget.take(grew).map_err(over_budget)?;
                }
                Outcome::Quiet
            }
            Item::OtherDelta { block } => self.other_delta(block, src)?,
            Item::BlockStop { block } => self.block_stop(block, out)?,
            Item::Finish(Stop { usage, .. }) => {
                if let Some(usage) = usage {
                    self.report(usage);
                }
                self.prelude(out);
                if self.client.finish_sent && !self.attempt.verbatim {
                    // Some servers repeat their stop; clients count on exactly one, so after a
                    // seam the client's stream has one. (A stream the client gets as it came
                    // keeps its own repetitions.)
                    return Ok(Outcome::Quiet);
                }
                self.client.finish_sent = true;
                self.client.usage_sent |= usage.is_some();
                pass(
                    as_came && (usage.is_none() || self.attempt.usage_base == 0),
                    0,
                )
            }
            Item::Usage(usage) => {
                self.report(usage);
                self.prelude(out);
                self.client.usage_sent = true;
                pass(as_came && self.attempt.usage_base == 0, 0)
            }
            Item::UsageComing => {
                self.client.usage_coming = true;
                Outcome::AsCame(0)
            }
            Item::Terminal => {
                self.prelude(out);
                self.mode = Mode::Done;
                pass(as_came, 0)
            }
            Item::Error(error) => {
                if !error.client {
                    return Err(in_band_failure(&error, src, out.redactor()));
                }
                // A retry elsewhere would fail alike: the client gets the upstream's own words.
                self.prelude(out);
                self.mode = Mode::Passthrough;
                pass(same_wire, 0)
            }
            // Written anew, without what bound it to its attempt: its other items do that.
            Item::AttemptBound => Outcome::Render(0),
            Item::Unwatched => {
                self.prelude(out);
                self.mode = Mode::Passthrough;
                pass(as_came, 0)
            }
            Item::KeepAlive if same_wire => Outcome::AsCame(0),
            Item::KeepAlive => Outcome::Quiet,
            Item::Other if as_came => Outcome::AsCame(0),
            Item::Other if same_wire => Outcome::Render(0),
            Item::Other => Outcome::Quiet,
        })
    }

    fn block_start(
        &mut self,
        block: u32,
        kind: BlockKind,
        native: Span,
        src: &Source<'_>,
        out: &mut Outbox,
    ) -> Result<Outcome, StreamFailure> {
        if kind == BlockKind::Text {
            if !self.attempt.routed && !self.attempt.verbatim && self.ready.is_empty() {
                if let Some(client) = self.client.open_text {
                    // The continuation goes on in the block the client has open.
                    self.attempt.routed = true;
                    self.attempt
                        .open(block, Open::Text { client })
                        .map_err(not_open("a block start out of order"))?;
                    return Ok(Outcome::Quiet);
                }
            }
            self.attempt.routed = true;
            self.prelude(out);
            let client = self.client.next_block;
            self.client.next_block += 1;
            self.client.open_text = Some(client);
            self.attempt
                .open(block, Open::Text { client })
                .map_err(not_open("a block start out of order"))?;
            return Ok(if client == block && self.attempt.as_came {
                Outcome::AsCame(client)
            } else {
                Outcome::Render(client)
            });
        }
        if kind.is_reasoning() && !self.attempt.verbatim && !self.transcript.is_empty() {
            // The client already has content; this attempt's own reasoning about how to
            // continue is not part of the answer.
            self.attempt
                .open(block, Open::Dropped)
                .map_err(not_open("a block start out of order"))?;
            return Ok(Outcome::Quiet);
        }
        let mut held = Held::new(HeldKind::of(kind), src.wire, src.get(native));
        if let BlockKind::ToolCall { id, name } = kind {
            id.read_into(src.data, &mut held.id);
            name.read_into(src.data, &mut held.name);
        }
        self.budget.take(held.size()).map_err(over_budget)?;
        self.attempt
            .open(block, Open::Held(held))
            .map_err(not_open("a block start out of order"))?;
        Ok(Outcome::Quiet)
    }

    /// Text for the attempt's block `block`.
    fn text(
        &mut self,
        block: u32,
        literal: Literal,
        src: &Source<'_>,
    ) -> Result<Outcome, StreamFailure> {
        let client = match self.attempt.get_mut(block) {
            Some(Open::Text { client }) => *client,
            // Text inside a held block: kept as it came, with the block.
            Some(Open::Held(_)) => return self.other_delta(block, src),
            Some(Open::Dropped) => {
                self.count_spent(literal);
                return Ok(Outcome::Quiet);
            }
            None => return Err(unreadable_failure("text for a block that is not open")),
        };
        if self.as_came_into(block) {
            self.keep(!literal.is_empty(), |t| literal.read_into(src.data, t));
            return Ok(Outcome::AsCame(client));
        }
        if !literal.is_empty() {
            self.attempt.spent += 1;
            self.transcript.add_kept_token();
        }
        self.text.clear();
        literal.read_into(src.data, &mut self.text);
        self.send.clear();
        match &mut self.attempt.seam {
            Some(seam) => seam.filter(&self.text, &mut self.send),
            None => self.send.push_str(&self.text),
        }
        if self.send.is_empty() {
            return Ok(Outcome::Quiet);
        }
        if let Some(t) = self.transcript.text_mut() {
            t.push_str(&self.send);
        }
        self.transcript.check_limit();
        Ok(Outcome::Render(client))
    }

    /// Tool-call arguments, reasoning or a signature for the attempt's block `block`.
    fn held_delta(
        &mut self,
        item: Item,
        block: u32,
        literal: Literal,
        src: &Source<'_>,
    ) -> Result<Outcome, StreamFailure> {
        if !matches!(item, Item::Signature { .. }) {
            self.count_spent(literal);
        }
        match self.attempt.get_mut(block) {
            Some(Open::Held(held)) => {
                let before = held.size();
                match item {
                    Item::ToolArgs { .. } => literal.read_into(src.data, &mut held.arguments),
                    Item::Reasoning { .. } => literal.read_into(src.data, &mut held.reasoning),
                    _ => {
                        let mut signature = String::new();
                        literal.read_into(src.data, &mut signature);
                        held.signature = Some(signature);
                    }
                }
                let grew = held.size().saturating_sub(before);
                self.budget.take(grew).map_err(over_budget)?;
                Ok(Outcome::Quiet)
            }
            // A delta of another kind in a text block (as citations are): passed on.
            Some(Open::Text { .. }) => self.other_delta(block, src),
            Some(Open::Dropped) => Ok(Outcome::Quiet),
            None => Err(unreadable_failure("a delta for a block that is not open")),
        }
    }

    fn count_spent(&mut self, literal: Literal) {
        if !literal.is_empty() {
            self.attempt.spent += 1;
        }
    }

    /// Whether text for the attempt's block `block` can go out as it came: the client reads
    /// the same wire, its block has the same index, and the seam has nothing to drop.
    fn as_came_into(&mut self, block: u32) -> bool {
        self.attempt.as_came
            && !self.attempt.seam.as_ref().is_some_and(SeamText::active)
            && matches!(self.attempt.get_mut(block), Some(Open::Text { client }) if *client == block)
    }

    /// Text that goes out as it came: into the transcript, counted as generated and kept.
    fn keep(&mut self, generated: bool, read: impl FnOnce(&mut String)) {
        if generated {
            self.attempt.spent += 1;
            self.transcript.add_kept_token();
        }
        if let Some(t) = self.transcript.text_mut() {
            read(t);
        }
        self.transcript.check_limit();
    }

    /// A delta the core does not read, for the attempt's block `block`.
    fn other_delta(&mut self, block: u32, src: &Source<'_>) -> Result<Outcome, StreamFailure> {
        match self.attempt.get_mut(block) {
            Some(Open::Text { client }) => {
                let client = *client;
                Ok(if client == block && self.attempt.as_came {
                    Outcome::AsCame(client)
                } else {
                    Outcome::Render(client)
                })
            }
            Some(Open::Held(held)) => {
                let before = held.size();
                held.push_other(src.data);
                let grew = held.size().saturating_sub(before);
                self.budget.take(grew).map_err(over_budget)?;
                Ok(Outcome::Quiet)
            }
            Some(Open::Dropped) => Ok(Outcome::Quiet),
            None => Err(unreadable_failure("a delta for a block that is not open")),
        }
    }

    fn block_stop(&mut self, block: u32, out: &mut Outbox) -> Result<Outcome, StreamFailure> {
        match self.attempt.close(block) {
            // Held until something else follows, so a continuation can still join it.
            Some(Open::Text { .. }) | Some(Open::Dropped) => {}
            Some(Open::Held(held)) => {
                if held.kind.is_reasoning() {
                    self.prelude(out);
                    self.budget.give(held.size());
                    self.emit_held(held, out);
                } else {
                    // Still counted while it waits.
                    self.ready.push(held);
                }
            }
            None => return Err(unreadable_failure("a stop for a block that is not open")),
        }
        Ok(Outcome::Quiet)
    }

    /// Before the client gets another block or the end of the message: close its open text
    /// block and release the tool blocks that were waiting.
    fn prelude(&mut self, out: &mut Outbox) {
        self.close_text(out);
        for held in std::mem::take(&mut self.ready) {
            self.budget.give(held.size());
            self.emit_held(held, out);
        }
    }

    fn close_text(&mut self, out: &mut Outbox) {
        if let Some(index) = self.client.open_text.take() {
            // What the seam filter still holds goes into the block before it closes.
            if let Some(seam) = &mut self.attempt.seam {
                self.send.clear();
                seam.flush(&mut self.send);
                if !self.send.is_empty() {
                    self.ensure_started(out);
                    self.encoder.text(index, &self.send, out);
                    if let Some(t) = self.transcript.text_mut() {
                        t.push_str(&self.send);
                    }
                    self.transcript.check_limit();
                }
            }
            self.ensure_started(out);
            self.encoder.block_stop(index, out);
        }
    }

    fn emit_held(&mut self, held: Held, out: &mut Outbox) {
        let index = self.client.next_block;
        self.client.next_block += 1;
        self.ensure_started(out);
        self.encoder.held(index, &held, out);
        if held.kind.is_reasoning() {
            self.transcript.mark_thinking();
        } else {
            self.transcript.add_tool_call();
        }
    }

    /// The client is about to get something the encoder writes: its start first, if owed.
    fn ensure_started(&mut self, out: &mut Outbox) {
        if !self.client.started {
            if self.client.start_owed {
                self.encoder.start(out);
            }
            self.started();
        }
    }

    fn started(&mut self) {
        self.client.started = true;
        self.client.start_owed = false;
        self.transcript.mark_started();
    }

    /// Writes an item of an event that could not go out as it came.
    fn render(&mut self, item: Item, outcome: Outcome, src: &Source<'_>, out: &mut Outbox) {
        let (client, as_came) = match outcome {
            Outcome::AsCame(c) => (c, true),
            Outcome::Render(c) => (c, false),
            Outcome::Quiet => return,
        };
        let base = self.attempt.usage_base;
        match item {
            // A start goes out with the first event written after it.
            Item::Start(_) | Item::UsageComing | Item::ToolName { .. } | Item::BlockStop { .. } => {
            }
            Item::BlockStart { kind, native, .. } => {
                self.ensure_started(out);
                self.encoder.block_start(client, kind, native, src, out);
            }
            Item::Text { literal, .. } => {
                self.ensure_started(out);
                if as_came {
                    self.text.clear();
                    literal.read_into(src.data, &mut self.text);
                    self.encoder.text(client, &self.text, out);
                } else {
                    self.encoder.text(client, &self.send, out);
                }
            }
            Item::ToolArgs { .. }
            | Item::Reasoning { .. }
            | Item::Signature { .. }
            | Item::OtherDelta { .. } => {
                self.ensure_started(out);
                self.encoder.other_delta(client, src, out);
            }
            Item::Finish(stop) => {
                self.ensure_started(out);
                self.encoder.finish(stop, base, src, out);
            }
            Item::Usage(usage) => {
                self.ensure_started(out);
                self.encoder.usage(usage, base, src, out);
            }
            Item::Terminal => self.encoder.terminal(out),
            Item::Error(error) if !self.same_wire() => {
                let clean = |span| value_text(src, span).map(|t| out.redactor().clean(&t));
                let kind = clean(error.kind).unwrap_or_else(|| "error".into());
                let message = clean(error.message).unwrap_or_default();
                self.encoder
                    .error(&ErrorKind::Named(kind.into()), &message, out);
            }
            // Of the client's own wire, whole: as it came, on its own.
            Item::Error(_) => out.push_error(sse_event(src.name, src.data.as_bytes())),
            Item::KeepAlive => out.push(sse_event(src.name, src.data.as_bytes())),
            Item::AttemptBound => {}
            Item::Other | Item::Unwatched => self.encoder.restamp(src, out),
        }
    }

    /// The current attempt's body ended.
    pub(crate) fn on_end(&mut self) -> Step {
        match self.mode {
            Mode::Streaming => Step::Fail(StreamFailure::new(
                FailureClass::Truncated,
                format!(
                    "the stream ended before {}",
                    self.attempt.wire.spec().terminal
                ),
            )),
            Mode::Passthrough | Mode::Done => Step::Done,
        }
    }

    /// If the client has the whole answer and only closing events are missing, write them and
    /// return true (also when the stream is already complete).
    pub(crate) fn close(&mut self, out: &mut Outbox) -> bool {
        if self.mode != Mode::Streaming {
            return true;
        }
        if !self.client.finish_sent {
            return false;
        }
        if self.client.usage_coming && !self.client.usage_sent {
            // The usage report was lost with the connection: report what is known (a lower
            // bound of the output tokens) rather than none at all.
            let tokens = self.transcript.kept_tokens() + self.transcript.spent_tokens();
            self.encoder.usage_estimate(tokens, out);
            self.client.usage_sent = true;
        }
        self.encoder.terminal(out);
        self.mode = Mode::Done;
        true
    }

    /// The current attempt failed: drop what it held back and count what it spent.
    pub(crate) fn abandon(&mut self) {
        // The upstream's own running count, where the client saw one, is the better bound.
        let reported = self.attempt.decoder.output_so_far().unwrap_or(0);
        let reported = u32::try_from(reported).unwrap_or(u32::MAX);
        self.transcript.add_spent(self.attempt.spent.max(reported));
        self.attempt.spent = 0;
        self.attempt.drop_open();
        self.ready.clear();
        self.budget.clear();
    }

    /// The events that follow come from a new attempt, in `wire`'s format, made with
    /// `strategy`.
    pub(crate) fn splice(&mut self, strategy: &Strategy, wire: Dialect) {
        let spec = wire.spec();
        let text = self.transcript.text();
        let seam = (!text.is_empty()).then(|| {
            if spec.trims_continuation {
                // The request carried the answer without its trailing whitespace: the model
                // may send that whitespace again, and the client has it.
                let trimmed = text.trim_end();
                let ws = match strategy {
                    Strategy::Restart => "",
                    _ => &text[trimmed.len()..],
                };
                SeamText::new(trimmed, ws)
            } else {
                SeamText::new(text, "")
            }
        });
        let verbatim = !self.client.started;
        let as_came = wire == self.wire && (verbatim || !spec.stamps_every_event);
        self.attempt = Attempt::new(
            wire,
            verbatim,
            as_came,
            seam,
            self.transcript.spent_tokens(),
        );
    }

    /// End the stream with an error event in the client's format.
    pub(crate) fn give_up(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox) {
        self.encoder.error(kind, message, out);
        self.mode = Mode::Done;
    }
}

/// The text of a JSON value an item points at: a string's text, another value as written;
/// `None` for an absent value or `null`.
fn value_text(src: &Source<'_>, span: Span) -> Option<String> {
    let raw = src.get(span);
    if raw.is_empty() || raw == "null" {
        return None;
    }
    if raw.starts_with('"') {
        let mut text = String::new();
        unescape_into(raw, &mut text);
        return Some(text);
    }
    Some(raw.to_owned())
}

fn in_band_failure(error: &InBand, src: &Source<'_>, redactor: &Redactor) -> StreamFailure {
    // Upstream words, bound for logs and the client: secrets out, then control characters
    // escaped, here.
    let text = |span| value_text(src, span).map(|t| redactor.clean(&t));
    let kind = text(error.kind);
    let name = kind.clone().or_else(|| text(error.code));
    let message = text(error.message).filter(|m| !m.is_empty());
    let detail = match (name, message) {
        (Some(name), Some(message)) => format!("{name}: {message}"),
        (Some(name), None) => name,
        (None, Some(message)) => message,
        (None, None) => "error in stream".to_owned(),
    };
    StreamFailure {
        class: FailureClass::InBand,
        detail,
        error_type: kind.map(Arc::from),
        retry_after: None,
    }
}

fn unreadable(why: Unreadable) -> Step {
    Step::Fail(StreamFailure::new(
        FailureClass::Malformed,
        format!("unreadable event: {}", why.0),
    ))
}

fn unreadable_failure(what: &str) -> StreamFailure {
    StreamFailure::new(FailureClass::Malformed, format!("unreadable event: {what}"))
}

fn not_open(what: &'static str) -> impl Fn(NotOpen) -> StreamFailure {
    move |_| unreadable_failure(what)
}

fn over_budget(over: OverBudget) -> StreamFailure {
    StreamFailure::new(
        FailureClass::Malformed,
        format!(
            "what is held back (tool calls, reasoning) exceeds the hold limit of {} bytes",
            over.limit
        ),
    )
}
