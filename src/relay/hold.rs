//! Blocks held back until complete, and the budget that bounds everything held.

use crate::dialect::Dialect;

use super::item::BlockKind;

/// What a held block costs besides its content: the bookkeeping itself, so that blocks with
/// no content at all still count.
const OVERHEAD: usize = std::mem::size_of::<Held>();

/// A tool call, reasoning block, refusal or block of another kind, kept until complete and
/// then sent compacted (one delta per kind of content). Kept as content, not as SSE: memory follows what
/// the model generated, not the raw bytes relayed.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) kind: HeldKind,
    /// The wire it came in: `native` and `others` mean something only to that wire's encoder.
    pub(crate) wire: Dialect,
    /// The block's start as its wire wrote it (Anthropic's `content_block` object; Chat's
    /// tool-call `type`).
    pub(crate) native: String,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) arguments: String,
    /// Its text: reasoning, or a refusal.
    pub(crate) text: String,
    pub(crate) signature: Option<String>,
    /// Deltas of kinds the core does not read, each as its event's data came.
    others: Vec<String>,
    /// What `others` holds, kept as they are added.
    others_size: usize,
}

/// What a held block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeldKind {
    ToolCall,
    Reasoning,
    RedactedReasoning,
    Refusal,
    Other,
}

impl HeldKind {
    pub(crate) fn of(kind: BlockKind) -> HeldKind {
        match kind {
            BlockKind::ToolCall { .. } => HeldKind::ToolCall,
            BlockKind::Reasoning => HeldKind::Reasoning,
            BlockKind::RedactedReasoning => HeldKind::RedactedReasoning,
            BlockKind::Refusal => HeldKind::Refusal,
            BlockKind::Text | BlockKind::Other => HeldKind::Other,
        }
    }

    pub(crate) fn is_reasoning(self) -> bool {
        matches!(self, HeldKind::Reasoning | HeldKind::RedactedReasoning)
    }
}

impl Held {
    pub(crate) fn new(kind: HeldKind, wire: Dialect, native: &str) -> Held {
        Held {
            kind,
            wire,
            native: native.to_owned(),
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
            text: String::new(),
            signature: None,
            others: Vec::new(),
            others_size: 0,
        }
    }

    /// Keeps a delta the core does not read, as its data came.
    pub(crate) fn push_other(&mut self, data: &str) {
        self.others_size += data.len() + std::mem::size_of::<String>();
        self.others.push(data.to_owned());
    }

    /// The deltas kept by [`push_other`](Self::push_other), in order.
    pub(crate) fn others(&self) -> &[String] {
        &self.others
    }

    /// Everything it holds, in bytes, bookkeeping included.
    pub(crate) fn size(&self) -> usize {
        OVERHEAD
            + self.native.len()
            + self.id.len()
            + self.name.len()
            + self.arguments.len()
            + self.text.len()
            + self.signature.as_ref().map_or(0, String::len)
            + self.others_size
    }
}

/// Counts every byte held across the stream (open blocks and complete ones waiting alike)
/// against `max_held_bytes`.
#[derive(Debug)]
pub(crate) struct Budget {
    held: usize,
    limit: usize,
}

/// More is held than the limit allows.
#[derive(Debug)]
pub(crate) struct OverBudget {
    pub(crate) limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget { held: 0, limit }
    }

    /// `bytes` more are held.
    pub(crate) fn take(&mut self, bytes: usize) -> Result<(), OverBudget> {
        self.held = self.held.saturating_add(bytes);
        if self.held > self.limit {
            return Err(OverBudget { limit: self.limit });
        }
        Ok(())
    }

    /// `bytes` held are let go (sent or dropped).
    pub(crate) fn give(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// Nothing is held any more.
    pub(crate) fn clear(&mut self) {
        self.held = 0;
    }
}
