//! What the built-in planner knows about one model it can send a request to.

use std::sync::Arc;
use std::time::Duration;

use crate::dialect::Dialect;
use crate::plan::Deadlines;
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
    /// Its attempts' deadlines, where they differ from the layer's.
    deadlines: Deadlines,
    /// Its same-target retries, where they differ from the chain's.
    retries: Option<u32>,
}

impl Target {
    /// The model called `name`, taken to reject prefill until declared otherwise, and to speak
    /// whatever dialect the client speaks.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Target {
            name: name.into(),
            prefill: Prefill::None,
            dialect: None,
            deadlines: Deadlines::default(),
            retries: None,
        }
    }

    /// How many times it is retried, before anything reached the client, before the next
    /// target is tried (default: the chain's [`retries`](crate::FallbackChain::retries)).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Its same-target retries, if declared.
    pub(crate) fn declared_retries(&self) -> Option<u32> {
        self.retries
    }

    /// Its attempts' first-token deadline, instead of the layer's
    /// ([`first_token_timeout`](crate::MidStreamFallbackLayer::first_token_timeout)): a model
    /// that thinks long before it writes wants a longer one.
    pub fn first_token_timeout(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadlines.first_token = Some(deadline.into());
        self
    }

    /// Its attempts' idle timeout, instead of the layer's
    /// ([`idle_timeout`](crate::MidStreamFallbackLayer::idle_timeout)).
    pub fn idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.deadlines.idle = Some(idle.into());
        self
    }

    /// Its attempts' hedge delay, instead of the layer's
    /// ([`hedge_after`](crate::MidStreamFallbackLayer::hedge_after); `None`: never hedged): a
    /// model known to be slow to start wants a longer one, or none.
    pub fn hedge_after(mut self, delay: impl Into<Option<Duration>>) -> Self {
        self.deadlines.hedge = Some(delay.into());
        self
    }

    /// Its deadlines, where they differ from the layer's.
    pub(crate) fn deadlines(&self) -> Deadlines {
        self.deadlines
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
