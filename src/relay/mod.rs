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
//! * Every other block (tool calls, reasoning, refusals, kinds only one wire knows) is held
//!   until it is complete: clients turn a stopped tool call into a call with whatever
//!   arguments arrived, reasoning with a signature is useless without it, and a refusal the
//!   fallback would repeat must not be half sent. Reasoning and refusals go out at their stop;
//!   tool calls wait for the end of the message (or a following text block), because a failure
//!   between two parallel calls would otherwise leave the client with a call the fallback
//!   repeats. Everything held counts against `max_held_bytes`.
//! * Reasoning with no signature to wait for (a wire's `live_reasoning`, Chat's reasoning
//!   deltas) streams live instead when the layer is told so ([`Reasoning::Live`], the
//!   default): a model may reason for a minute, and a chat UI should show it thinking.
//! * After a seam: one start (the first the client saw), block numbers dense, the first
//!   continuation text routed into the client's open text block, the fallback's own
//!   reasoning dropped once the client has reasoning or content (so it is never repeated, nor
//!   appended after the answer), one stop reason, usage summed over attempts, one terminal
//!   event.
//!
//! Across dialects (a fallback that speaks another wire than the client's): the attempt's own
//! decoder reads its events and the client's encoder writes every one of them, nothing goes
//! out as it came; the start, ids, stop reason, usage and keep-alives are the client's wire's.
//! What only the attempt's wire can write (its reasoning, whose signatures never cross
//! providers; kinds of blocks only it knows) is dropped, and a tool call whose arguments are
//! not a JSON object counts as a failure of the attempt rather than reaching the client.
//!
//! Streams with several choices (Chat `n > 1`) have a mode of their own, [`Mode::Choices`]
//! (in `choices.rs`): their events go out as they came, nothing is held, and they can restart
//! elsewhere only while none of their answers reached the client; once some did, a failure
//! ends the stream with an error event (a continuation request cannot carry several partial
//! answers). Gemini's decoder does not read several candidates (`candidateCount > 1`) into
//! that mode yet: it says [`Item::Unwatched`], and the rest of the stream passes through as
//! it comes ([`Mode::Passthrough`]).

mod attempt;
mod choices;
pub(crate) mod hold;
pub(crate) mod item;
#[cfg(test)]
mod linear;
mod seam;

use std::sync::Arc;

use bytes::Bytes;

use crate::dialect::{sse_event, Dialect, Encode, ErrorKind, Limits, StreamFailure, Unreadable};
use crate::error::FailureClass;
use crate::json::unescape_into;
use crate::outbox::Outbox;
use crate::reasoning::Reasoning;
use crate::sse::Event;
use crate::strategy::Strategy;
use crate::transcript::Transcript;
use crate::untrusted::Redactor;

use attempt::{Attempt, NotOpen, Open};
use choices::Several;
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
#[derive(Debug)]
enum Mode {
    /// Events are read, and the client gets what the rules say.
    Streaming,
    /// Several answers interleave (Chat `n > 1`): see `choices.rs`.
    Choices(Several),
    /// The upstream sent an error a retry cannot fix, or a stream the core does not read
    /// ([`Item::Unwatched`]): the rest goes out as it comes.
    Passthrough,
    /// The terminal event went out.
    Done,
}

/// Counts one step of a loop over open or held blocks, in the crate's own tests only: the
/// linear-cost tests compare these counts for streams of different sizes.
#[cfg(test)]
pub(crate) fn step() {
    STEPS.with(|s| s.set(s.get() + 1));
}

#[cfg(not(test))]
#[inline(always)]
pub(crate) fn step() {}

#[cfg(test)]
thread_local! {
    pub(crate) static STEPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
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
    /// A reasoning block streaming live that it has open.
    open_reasoning: Option<u32>,
    /// Its latest live reasoning block, and the block's start as its wire wrote it.
    live_reasoning: Option<(u32, String)>,
    /// The index its next block gets.
    next_block: u32,
    finish_sent: bool,
    usage_sent: bool,
    /// A stream of another wire is being translated for it and its own stream reports usage
    /// (Anthropic's always; Chat's when asked): the translation reports it too.
    usage_coming: bool,
    /// An upstream event with an `id:` field reached it: the openai Python SDK then dispatches
    /// an event at every blank line, so keep-alives must not have one.
    saw_id: bool,
    /// The last bytes it got were the upstream's previous event as it came: an empty line the
    /// framer handed out alone (the LF of a CRLF cut by a frame) may follow them.
    last_as_came: bool,
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

/// What the relay is told about an attempt's stream before reading it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttemptWire {
    /// The wire the attempt speaks.
    pub(crate) wire: Dialect,
    /// For a wire not the client's: the client's own stream reports usage (Chat's
    /// `include_usage`), so the translated one must too.
    pub(crate) client_wants_usage: bool,
}

/// Watches one response stream across attempts.
#[derive(Debug)]
pub(crate) struct Relay {
    mode: Mode,
    /// The client's wire.
    wire: Dialect,
    encoder: Box<dyn Encode>,
    /// The encoder follows the client's stream ([`Encode::follows`]).
    follows: bool,
    transcript: Transcript,
    client: Client,
    /// Complete tool blocks waiting for the end of the message or a text block.
    ready: Vec<Held>,
    budget: Budget,
    /// Whether reasoning without a signature streams live.
    reasoning: Reasoning,
    /// The request as the client sent it: read only when a closing the layer writes depends on
    /// what it asked for (a usage report).
    request: Bytes,
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
    /// A relay for a client that reads `wire` and sent `request`, starting with an attempt of
    /// `first`.
    pub(crate) fn new(wire: Dialect, first: AttemptWire, limits: Limits, request: Bytes) -> Self {
        let same = first.wire == wire;
        let mut encoder = wire.spec().codec.encoder();
        encoder.bound(&limits);
        Relay {
            mode: Mode::Streaming,
            wire,
            follows: encoder.follows(),
            encoder,
            transcript: Transcript::new(limits.transcript),
            client: Client {
                usage_coming: !same && first.client_wants_usage,
                ..Client::default()
            },
            ready: Vec::new(),
            budget: Budget::new(limits.held),
            reasoning: limits.reasoning,
            request,
            attempt: Attempt::new(first.wire, true, same, None, 0),
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
        self.encoder.keep_alive(self.client.saw_id)
    }

    /// Forwards `ev` as it came, noting what the client's parser has now seen.
    fn forward(&mut self, ev: &Event<'_>, out: &mut Outbox) {
        out.forward(ev);
        self.as_came(ev);
    }

    /// `ev` went out as it came (forwarded or, for an error, redacted).
    fn as_came(&mut self, ev: &Event<'_>) {
        self.client.last_as_came = true;
        self.client.saw_id |= ev.fields.id().is_some();
    }

    fn same_wire(&self) -> bool {
        self.attempt.wire == self.wire
    }

    /// Whether a comment may go out as it came: from the
    /// client's own wire, to clients that skip what is not data.
    fn passes_fieldless(&self) -> bool {
        self.same_wire() && !self.wire.spec().rules.data_lines_only()
    }

    /// One complete event of the current attempt.
    pub(crate) fn on_event(&mut self, ev: &Event<'_>, out: &mut Outbox) -> Step {
        let after_as_came = std::mem::take(&mut self.client.last_as_came);
        if ev.fields.is_blank() {
            // Only line ends: the LF of a CRLF that a frame cut from the event before, or a
            // stray empty line. It may follow that event's own bytes, never anything else:
            // after an `id:` field, a blank line on its own is an empty event to the openai
            // Python SDK, and a JSON error.
            if after_as_came && self.same_wire() {
                self.forward(ev, out);
            }
            return Step::Continue(Carried::Nothing);
        }
        let streaming = matches!(self.mode, Mode::Streaming);
        if streaming && self.fast(ev, out) {
            return Step::Continue(Carried::Content);
        }
        if !streaming && !matches!(self.mode, Mode::Choices(_)) {
            // After a client error or the terminal event, the rest goes out as it comes (or
            // fitted to the client's numbering, once the encoder numbers its events).
            if self.same_wire() {
                if self.numbering() {
                    self.restamp_raw(ev, out);
                } else {
                    self.forward(ev, out);
                }
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
            // Comments: keep-alives. They prove the connection, not progress.
            if self.passes_fieldless() {
                self.forward(ev, out);
            }
            return Step::Continue(Carried::Nothing);
        }
        let mut joined = std::mem::take(&mut self.joined);
        let data = match fields.data() {
            [] => {
                // A field but no data (`id:`, `retry:`, a field no one knows): nothing for the
                // client to read, and dropped: the openai Python SDK dispatches it as an empty
                // event (a JSON error) once it has seen an `id:`, and a `retry:` always.
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
        if data.is_empty() {
            // An empty `data:` is as unreadable to every SDK (all of them read data as JSON),
            // and as empty of content: dropped like a field with no data.
            self.joined = joined;
            return Step::Continue(Carried::Event);
        }
        let name = fields.event().and_then(|r| raw.get(r));
        let step = self.read(ev, name, data, out);
        self.joined = joined;
        step
    }

    /// The happy path, for the event nearly every stream is made of: a piece of text (or of
    /// reasoning streaming live) that can go out as it came. The decoder reads it from bytes
    /// and proves the whole event valid on the way; the event must have nothing else (one
    /// `data:` line, maybe an `event:` line), so that every byte forwarded was read. Anything
    /// else, or any doubt, takes the general path.
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
        let generated = text.literal.len() > 2;
        let thinking = matches!(
            self.attempt.get_mut(text.block),
            Some(Open::Thinking { client }) if *client == text.block
        );
        if thinking {
            if generated {
                self.attempt.spent += 1;
                self.transcript.mark_thinking();
            }
        } else if self.as_came_into(text.block) {
            self.keep(generated, |t| read_literal(text.literal, text.plain, t));
        } else {
            return false;
        }
        self.forward(ev, out);
        if self.follows {
            self.encoder.sent_text(&text);
        }
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
        if matches!(self.mode, Mode::Streaming)
            && self.items.iter().any(|i| matches!(i, Item::Choices))
        {
            if let Err(failure) = self.enter_choices(out) {
                return Step::Fail(failure);
            }
        }
        if matches!(self.mode, Mode::Choices(_)) {
            return self.read_choices(ev, &src, out);
        }
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
                self.as_came(ev);
            } else {
                self.forward(ev, out);
            }
            if with_start {
                self.started();
            }
            if self.follows {
                self.encoder.sent(&self.items, &src);
            }
        }
        self.sync_numbering();
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
            | Item::Refusal { block, literal }
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
            Item::ToolArgsObject { block, json } => {
                if let Some(Open::Held(held)) = self.attempt.get_mut(block) {
                    let before = held.size();
                    held.arguments.push_str(json.get(src.data));
                    let grew = held.size().saturating_sub(before);
                    self.budget.take(grew).map_err(over_budget)?;
                }
                if !json.is_empty() {
                    self.attempt.spent += 1;
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
                if self.client.finish_sent && !(self.attempt.verbatim && as_came) {
                    // Some servers repeat their stop; clients count on exactly one, so after a
                    // seam the client's stream has one. (A stream the client gets as it came
                    // keeps its own repetitions.)
                    return Ok(Outcome::Quiet);
                }
                self.client.finish_sent = true;
                self.client.usage_sent |= usage.is_some();
                // Read after the prelude, which may have made the encoder number events.
                pass(
                    self.attempt.as_came && (usage.is_none() || self.attempt.usage_base == 0),
                    0,
                )
            }
            Item::Usage(usage) => {
                self.report(usage);
                self.prelude(out);
                self.client.usage_sent = true;
                pass(self.attempt.as_came && self.attempt.usage_base == 0, 0)
            }
            Item::UsageComing if same_wire => pass(as_came, 0),
            // Another wire's promise says nothing of what the client asked for.
            Item::UsageComing => Outcome::Quiet,
            Item::Terminal => {
                self.prelude(out);
                if !same_wire && self.client.usage_coming && !self.client.usage_sent {
                    // The client asked for a usage report and the attempt's wire gave none.
                    self.ensure_started(out);
                    let tokens = self.transcript.kept_tokens() + self.transcript.spent_tokens();
                    self.encoder.usage_estimate(tokens, out);
                    self.client.usage_sent = true;
                }
                self.mode = Mode::Done;
                pass(self.attempt.as_came, 0)
            }
            Item::Error(error) => {
                // A client error from a target of another wire answers the translation, not
                // the client's own request: another fallback may do better.
                if !error.client || !same_wire {
                    return Err(in_band_failure(&error, src, out.redactor()));
                }
                // A retry elsewhere would fail alike: the client gets the upstream's own words.
                self.prelude(out);
                self.mode = Mode::Passthrough;
                pass(same_wire && !self.numbering(), 0)
            }
            // Written anew, without what bound it to its attempt: its other items do that.
            Item::AttemptBound => Outcome::Render(0),
            Item::Unwatched => {
                self.prelude(out);
                self.mode = Mode::Passthrough;
                pass(as_came, 0)
            }
            Item::KeepAlive if same_wire && !self.numbering() => Outcome::AsCame(0),
            Item::KeepAlive if same_wire => Outcome::Render(0),
            Item::KeepAlive => Outcome::Quiet,
            Item::Restated => Outcome::Quiet,
            Item::Other if as_came => Outcome::AsCame(0),
            Item::Other if same_wire => Outcome::Render(0),
            Item::Other => Outcome::Quiet,
            // Read in `Mode::Choices` only, which the first of them enters.
            Item::Choices
            | Item::ChoiceStart { .. }
            | Item::ChoiceContent { .. }
            | Item::ChoiceFinish { .. } => Outcome::Quiet,
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
        // Every wire has a form for a tool call and for a refusal's words.
        let foreign =
            !self.same_wire() && !matches!(kind, BlockKind::ToolCall { .. } | BlockKind::Refusal);
        if foreign || kind.is_reasoning() && !self.attempt.verbatim && !self.transcript.is_empty() {
            // The client already has reasoning or content: this attempt's own reasoning would
            // repeat what it has, or come after the answer began. Nor does what only another
            // wire can write go on: reasoning whose signature the client's provider would
            // refuse, kinds of blocks the client's wire has no form for.
            self.attempt
                .open(block, Open::Dropped)
                .map_err(not_open("a block start out of order"))?;
            return Ok(Outcome::Quiet);
        }
        if kind == BlockKind::Reasoning
            && self.reasoning == Reasoning::Live
            && self.attempt.wire.spec().live_reasoning
        {
            self.prelude(out);
            let client = self.client.next_block;
            self.client.next_block += 1;
            self.client.open_reasoning = Some(client);
            self.client.live_reasoning = Some((client, src.get(native).to_owned()));
            self.attempt
                .open(block, Open::Thinking { client })
                .map_err(not_open("a block start out of order"))?;
            return Ok(if client == block && self.attempt.as_came {
                Outcome::AsCame(client)
            } else {
                Outcome::Render(client)
            });
        }
        let mut held = Held::new(HeldKind::of(kind), src.wire, src.get(native));
        if let BlockKind::ToolCall { id, name } = kind {
            id.read_into(src.data, &mut held.id);
            name.read_into(src.data, &mut held.name);
        }
        self.budget.take(held.size()).map_err(over_budget)?;
        self.attempt
            .open(block, Open::Held(Box::new(held)))
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
            Some(Open::Thinking { .. }) => {
                return Err(unreadable_failure("answer text in a reasoning block"))
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

    /// Tool-call arguments, reasoning, a refusal or a signature for the attempt's block
    /// `block`.
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
                    Item::Reasoning { .. } | Item::Refusal { .. } => {
                        literal.read_into(src.data, &mut held.text)
                    }
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
            // Reasoning streaming live.
            Some(&mut Open::Thinking { client }) if matches!(item, Item::Reasoning { .. }) => {
                if !literal.is_empty() {
                    self.transcript.mark_thinking();
                }
                Ok(if client == block && self.attempt.as_came {
                    Outcome::AsCame(client)
                } else {
                    Outcome::Render(client)
                })
            }
            // A delta of another kind in a text block (as citations are): passed on.
            Some(Open::Text { .. }) | Some(Open::Thinking { .. }) => self.other_delta(block, src),
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
            Some(&mut Open::Text { client }) | Some(&mut Open::Thinking { client }) => {
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
            Some(Open::Thinking { client }) => {
                if self.client.open_reasoning == Some(client) {
                    self.client.open_reasoning = None;
                    if client == block && self.attempt.as_came {
                        return Ok(Outcome::AsCame(client));
                    }
                    self.ensure_started(out);
                    self.encoder.block_stop(client, out);
                }
            }
            Some(Open::Held(held)) => {
                if held.wire != self.wire && held.kind == HeldKind::ToolCall {
                    if let Some(why) = unfit_arguments(&held, out.redactor()) {
                        return Err(StreamFailure::new(FailureClass::Malformed, why));
                    }
                }
                if held.kind.is_reasoning() || held.kind == HeldKind::Refusal {
                    self.prelude(out);
                    self.budget.give(held.size());
                    self.emit_held(*held, out);
                } else {
                    // Still counted while it waits.
                    self.ready.push(*held);
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
        self.sync_numbering();
    }

    /// Whether the encoder numbers the client's events now: then nothing goes out as it came.
    fn numbering(&self) -> bool {
        self.follows && self.encoder.wrote()
    }

    /// Once the encoder numbers the client's events, the attempt's go through it.
    fn sync_numbering(&mut self) {
        if self.numbering() {
            self.attempt.as_came = false;
        }
    }

    /// An event of the client's wire after the stream's end or a client error, fitted to the
    /// encoder's numbering.
    fn restamp_raw(&mut self, ev: &Event<'_>, out: &mut Outbox) {
        let Ok(raw) = std::str::from_utf8(ev.raw) else {
            return;
        };
        let fields = ev.fields;
        let mut data = String::new();
        for (i, line) in fields.data().iter().enumerate() {
            if i > 0 {
                data.push('\n');
            }
            data.push_str(raw.get(line.clone()).unwrap_or(""));
        }
        if data.is_empty() {
            self.forward(ev, out);
            return;
        }
        let src = Source {
            data: &data,
            name: fields.event().and_then(|r| raw.get(r)),
            wire: self.wire,
        };
        self.restamp_error(&src, out);
    }

    /// An upstream event (an error, maybe quoting a key) restamped by the encoder, redacted.
    fn restamp_error(&mut self, src: &Source<'_>, out: &mut Outbox) {
        let mut aside = out.aside();
        self.encoder.restamp(src, &mut aside);
        while let Some(bytes) = aside.pop() {
            out.push_error(bytes);
        }
    }

    fn close_text(&mut self, out: &mut Outbox) {
        if let Some(index) = self.client.open_reasoning.take() {
            // Live reasoning cut short by a failure: the answer follows it.
            self.ensure_started(out);
            self.encoder.block_stop(index, out);
        }
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
        step();
        let index = self.client.next_block;
        if self.encoder.takes_block(&held) {
            self.client.next_block += 1;
        }
        self.ensure_started(out);
        self.encoder.held(index, &held, out);
        match held.kind {
            HeldKind::Reasoning | HeldKind::RedactedReasoning => self.transcript.mark_thinking(),
            HeldKind::Refusal => self.transcript.mark_refused(),
            HeldKind::ToolCall | HeldKind::Other => self.transcript.add_tool_call(),
        }
        self.sync_numbering();
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
            Item::BlockStop { .. } if as_came && self.is_live_reasoning(client) => {
                self.encoder.block_stop(client, out);
            }
            // A start goes out with the first event written after it.
            Item::Start(_)
            | Item::UsageComing
            | Item::ToolName { .. }
            | Item::BlockStop { .. }
            | Item::Restated
            | Item::Choices
            | Item::ChoiceStart { .. }
            | Item::ChoiceContent { .. }
            | Item::ChoiceFinish { .. } => {}
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
            Item::Reasoning { literal, .. } if self.is_live_reasoning(client) => {
                self.ensure_started(out);
                self.text.clear();
                literal.read_into(src.data, &mut self.text);
                let native = self.client.live_reasoning.as_ref().map_or("", |(_, n)| n);
                self.encoder.reasoning(client, native, &self.text, out);
            }
            Item::ToolArgs { .. }
            | Item::ToolArgsObject { .. }
            | Item::Reasoning { .. }
            | Item::Refusal { .. }
            | Item::Signature { .. }
            | Item::OtherDelta { .. } => {
                self.ensure_started(out);
                self.encoder.other_delta(client, src, out);
            }
            Item::Finish(stop) => {
                self.ensure_started(out);
                self.encoder.finish(stop, base, src, out);
                // Usage that came with another wire's stop, for a client whose wire reports it
                // on its own.
                if let (false, true, Some(usage)) =
                    (self.same_wire(), self.client.usage_coming, stop.usage)
                {
                    let usage = item::Usage {
                        input_tokens: usage.input_tokens.or(self.attempt.reported.input_tokens),
                        ..usage
                    };
                    self.encoder.usage(usage, base, src, out);
                }
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
            // Of the client's own wire, whole: as it came, on its own (numbered anew where the
            // encoder numbers events).
            Item::Error(_) | Item::KeepAlive if self.follows => self.restamp_error(src, out),
            Item::Error(_) => out.push_error(sse_event(src.name, src.data.as_bytes())),
            Item::KeepAlive => out.push(sse_event(src.name, src.data.as_bytes())),
            Item::AttemptBound => {}
            Item::Other | Item::Unwatched => self.encoder.restamp(src, out),
        }
    }

    /// Whether the client's block `client` is reasoning streaming live.
    fn is_live_reasoning(&self, client: u32) -> bool {
        matches!(&self.client.live_reasoning, Some((c, _)) if *c == client)
    }

    /// The current attempt's body ended.
    pub(crate) fn on_end(&mut self) -> Step {
        match self.mode {
            Mode::Streaming | Mode::Choices(_) => Step::Fail(StreamFailure::new(
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
        let whole = match &self.mode {
            Mode::Streaming => self.client.finish_sent,
            Mode::Choices(several) => several.all_finished(),
            Mode::Passthrough | Mode::Done => return true,
        };
        if !whole {
            return false;
        }
        if !self.client.usage_sent && self.wire.spec().rules.asks_usage(&self.request) {
            // The client asked for a usage report (not every server announces it with
            // `usage: null` on each chunk) and it was lost with the connection: report what is
            // known, a lower bound of the output tokens (every attempt's non-empty deltas, each
            // counted once), rather than none at all. Never one it did not ask for.
            let tokens = self
                .transcript
                .spent_tokens()
                .saturating_add(self.attempt.spent);
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

    /// The events that follow come from a new attempt, in `next`'s wire, made with
    /// `strategy`.
    pub(crate) fn splice(&mut self, strategy: &Strategy, next: AttemptWire) {
        let wire = next.wire;
        if wire != self.wire && next.client_wants_usage {
            self.client.usage_coming = true;
        }
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
        let as_came =
            wire == self.wire && (verbatim || !spec.stamps_every_event) && !self.numbering();
        if !verbatim {
            self.encoder.splice();
        }
        self.attempt = Attempt::new(
            wire,
            verbatim,
            as_came,
            seam,
            self.transcript.spent_tokens(),
        );
        if matches!(self.mode, Mode::Choices(_)) {
            self.attempt.decoder.expect_choices();
        }
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

/// Why a complete tool call from another wire cannot reach the client, if it cannot: its
/// arguments are not a JSON object (Anthropic clients parse them as the call's `input`). An
/// empty string is no arguments.
fn unfit_arguments(held: &Held, redactor: &Redactor) -> Option<String> {
    let args = held.arguments.trim();
    if args.is_empty() {
        return None;
    }
    let object =
        args.starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(args).is_ok();
    (!object).then(|| {
        format!(
            "the tool call `{}` has arguments that are not a JSON object",
            redactor.clean(&held.name)
        )
    })
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
