//! One attempt's bookkeeping: its decoder, how its blocks map onto the client's, what it spent.

use std::collections::VecDeque;

use crate::dialect::{Decode, Dialect};
use crate::observe::Usage as Reported;

use super::hold::Held;
use super::seam::SeamText;

/// The attempt whose stream is being relayed.
pub(super) struct Attempt {
    pub(super) decoder: Box<dyn Decode>,
    /// The wire it speaks.
    pub(super) wire: Dialect,
    /// The client saw nothing of the response before this attempt.
    pub(super) verbatim: bool,
    /// Its events may go out as they came: the client reads the same wire, and either saw
    /// nothing before this attempt or the wire does not repeat its envelope in every event.
    pub(super) as_came: bool,
    /// Its blocks that are open, by block number: the block numbered `next - open.len() + k`
    /// is at position `k`. A closed one in the middle stays as `None` until the ones before it
    /// close, so every lookup is one subtraction and closing blocks in order costs O(1) each,
    /// however many are open (a stream of 60,000 tool calls costs four times one of 15,000).
    open: VecDeque<Option<Open>>,
    /// The number the next block must have: decoders number blocks densely.
    next: u32,
    /// Its first text block has been placed (routed into the client's open one, or not).
    pub(super) routed: bool,
    pub(super) seam: Option<SeamText>,
    /// Non-empty deltas it produced: a lower bound of its output tokens.
    pub(super) spent: u32,
    /// Output tokens of earlier attempts, added to the usage it reports.
    pub(super) usage_base: u32,
    /// What its upstream reported about its tokens and model.
    pub(super) reported: Reported,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("wire", &self.wire)
            .field("verbatim", &self.verbatim)
            .field("as_came", &self.as_came)
            .field("open", &self.open)
            .field("spent", &self.spent)
            .finish_non_exhaustive()
    }
}

/// What became of an open block of the attempt.
#[derive(Debug)]
pub(super) enum Open {
    /// Text, going to the client's block `client`.
    Text { client: u32 },
    /// Reasoning streaming live to the client's block `client` (a wire whose reasoning has no
    /// signature to wait for, when the layer streams reasoning live).
    Thinking { client: u32 },
    /// Held until complete.
    Held(Box<Held>),
    /// Not for the client (a fallback's own reasoning once the client has content).
    Dropped,
}

/// A block number that does not fit: one that is not open, or a start out of order.
#[derive(Debug)]
pub(super) struct NotOpen;

impl Attempt {
    pub(super) fn new(
        wire: Dialect,
        verbatim: bool,
        as_came: bool,
        seam: Option<SeamText>,
        usage_base: u32,
    ) -> Attempt {
        Attempt {
            decoder: wire.spec().codec.decoder(),
            wire,
            verbatim,
            as_came,
            open: VecDeque::new(),
            next: 0,
            routed: false,
            seam,
            spent: 0,
            usage_base,
            reported: Reported::default(),
        }
    }

    /// Block `block` opens. Blocks are numbered densely in the order they start, so any other
    /// number is out of order.
    pub(super) fn open(&mut self, block: u32, open: Open) -> Result<(), NotOpen> {
        if block != self.next {
            return Err(NotOpen);
        }
        self.next = self.next.checked_add(1).ok_or(NotOpen)?;
        self.open.push_back(Some(open));
        Ok(())
    }

    fn position(&self, block: u32) -> Option<usize> {
        super::step();
        let first = self.next - self.open.len() as u32;
        let at = block.checked_sub(first)? as usize;
        (at < self.open.len()).then_some(at)
    }

    pub(super) fn get_mut(&mut self, block: u32) -> Option<&mut Open> {
        let at = self.position(block)?;
        self.open.get_mut(at)?.as_mut()
    }

    /// Block `block` is complete.
    pub(super) fn close(&mut self, block: u32) -> Option<Open> {
        let at = self.position(block)?;
        let open = self.open.get_mut(at)?.take();
        while self.open.front().is_some_and(Option::is_none) {
            super::step();
            self.open.pop_front();
        }
        // Closed blocks at the back are kept: the numbers after them stay in step.
        open
    }

    /// Every block still open, in order, leaving none.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Open> + '_ {
        self.open.drain(..).flatten()
    }

    /// The attempt failed: everything it held goes.
    pub(super) fn drop_open(&mut self) {
        self.open.clear();
    }
}
