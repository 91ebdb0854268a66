//! What the built-in planner knows about one model it can send a request to.

use std::sync::Arc;

use crate::dialect::Dialect;
use crate::strategy::Prefill;

/// A model a [`FallbackChain`](crate::FallbackChain) may send a request to, and what it
/// accepts.
///
/// Every fact about a target lives here, so that a chain, a planner wrapping one, and the
/// example gateway's config read it from one place.
///
/// ```
/// use tower_midstream::{Dialect, FallbackChain, Prefill, Target};
///
/// let chain = FallbackChain::new()
///     .target(Target::new("claude-sonnet-4-5").prefill(Prefill::Assistant))
///     .target(Target::new("claude-sonnet-4-6")) // rejects prefill: gets the instruction
///     // Another provider, reached in another wire format: requests are translated.
///     .target(Target::new("gpt-4.1").dialect(Dialect::OPENAI_CHAT))
///     .fallbacks("claude-sonnet-4-6", ["claude-sonnet-4-5", "gpt-4.1"]);
/// assert_eq!(chain.target_of("claude-sonnet-4-5").unwrap().accepts(), Prefill::Assistant);
/// assert_eq!(chain.target_of("gpt-4.1").unwrap().speaks(), Some(Dialect::OPENAI_CHAT));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    name: Arc<str>,
    prefill: Prefill,
    dialect: Option<Dialect>,
}

impl Target {
    /// The model called `name`, taken to reject prefill until declared otherwise, and to speak
    /// whatever dialect the client speaks.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Target {
            name: name.into(),
            prefill: Prefill::None,
            dialect: None,
        }
    }

    /// How it accepts its own partial answer (default [`Prefill::None`]: never sent one).
    pub fn prefill(mut self, prefill: Prefill) -> Self {
        self.prefill = prefill;
        self
    }

    /// The wire format it is reached in. A target that speaks another dialect than the
    /// client's gets the client's request translated (and its stream translated back); a
    /// request carrying something the translation cannot carry is never sent to it (see the
    /// crate documentation, "Across dialects"). Undeclared, a target speaks the client's
    /// dialect, whichever that is.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = Some(dialect);
        self
    }

    /// Its name: the `model` a request for it carries.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it accepts prefill, as declared.
    pub fn accepts(&self) -> Prefill {
        self.prefill
    }

    /// The dialect it was declared to speak; `None`: the client's.
    pub fn speaks(&self) -> Option<Dialect> {
        self.dialect
    }
}
