//! The built-in planner: an ordered list of fallbacks per model, aware of what each accepts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::FailureClass;
use crate::plan::{Failure, Plan, RetryPlanner};
use crate::strategy::{Prefill, Strategy, DEFAULT_INSTRUCTION};

/// What to do when text already reached the client and the next target does not accept
/// prefill (or the request forbids it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenNoPrefill {
    /// Send the partial answer followed by a user message asking to continue. The default.
    #[default]
    Instruction,
    /// Send the original request; the client sees the partial answer followed by the new one.
    Restart,
    /// Give up: the client gets an error naming the original failure.
    Error,
}

impl std::str::FromStr for WhenNoPrefill {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "instruction" => Ok(WhenNoPrefill::Instruction),
            "restart" => Ok(WhenNoPrefill::Restart),
            "error" => Ok(WhenNoPrefill::Error),
            other => Err(format!(
                "unknown value `{other}`: expected one of instruction, restart, error"
            )),
        }
    }
}

/// A capability-aware planner: for each model, an ordered list of fallback models, each
/// known to accept prefill or not.
///
/// For every failure it takes the next fallback of the model the client asked for, and
///
/// * restarts there if nothing of the answer reached the client yet;
/// * else sends a prefill if that target accepts one ([`model`](Self::model)) and the request
///   allows it (not with Anthropic extended thinking);
/// * else does what [`when_no_prefill`](Self::when_no_prefill) says (by default, the continue
///   instruction).
///
/// A prefill that the target answers with HTTP 400 is retried once on the same target with the
/// instruction. A model never declared with [`model`](Self::model) is assumed to reject
/// prefill: prefill is never sent to a target not known to accept it.
///
/// ```
/// use tower_midstream::{FallbackChain, Prefill};
///
/// let chain = FallbackChain::new()
///     .model("claude-sonnet-4-6", Prefill::None)
///     .model("claude-sonnet-4-5", Prefill::Assistant)
///     .fallbacks("claude-sonnet-4-6", ["claude-sonnet-4-5"])
///     .fallbacks("claude-sonnet-4-5", ["claude-sonnet-4-6"]);
/// # let _ = chain;
/// ```
#[derive(Debug, Clone, Default)]
pub struct FallbackChain {
    shared: Arc<Shared>,
    // Per request.
    next: usize,
    current: Option<Arc<str>>,
    instructed: bool,
}

#[derive(Debug, Clone, Default)]
struct Shared {
    prefill: HashMap<String, Prefill>,
    fallbacks: HashMap<String, Vec<Arc<str>>>,
    default_fallbacks: Vec<Arc<str>>,
    when_no_prefill: WhenNoPrefill,
    instruction: Option<Cow<'static, str>>,
}

impl FallbackChain {
    /// A chain with no fallbacks: every failure gives up until some are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares how `model` accepts prefill.
    pub fn model(mut self, model: impl Into<String>, prefill: Prefill) -> Self {
        Arc::make_mut(&mut self.shared)
            .prefill
            .insert(model.into(), prefill);
        self
    }

    /// The models to try, in order, when a request for `model` fails.
    pub fn fallbacks<I, T>(mut self, model: impl Into<String>, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let targets = targets.into_iter().map(|t| Arc::from(t.into())).collect();
        Arc::make_mut(&mut self.shared)
            .fallbacks
            .insert(model.into(), targets);
        self
    }

    /// The models to try for a model that has no list of its own.
    pub fn default_fallbacks<I, T>(mut self, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Arc::make_mut(&mut self.shared).default_fallbacks =
            targets.into_iter().map(|t| Arc::from(t.into())).collect();
        self
    }

    /// What to do when text reached the client and the target cannot take a prefill.
    pub fn when_no_prefill(mut self, when: WhenNoPrefill) -> Self {
        Arc::make_mut(&mut self.shared).when_no_prefill = when;
        self
    }

    /// The text of the continue instruction (default: [`DEFAULT_INSTRUCTION`]).
    pub fn instruction(mut self, text: impl Into<Cow<'static, str>>) -> Self {
        Arc::make_mut(&mut self.shared).instruction = Some(text.into());
        self
    }

    fn prefill_of(&self, model: &str) -> Prefill {
        self.shared
            .prefill
            .get(model)
            .copied()
            .unwrap_or(Prefill::None)
    }

    fn instruction_strategy(&self) -> Strategy {
        Strategy::Instruction(
            self.shared
                .instruction
                .clone()
                .unwrap_or(Cow::Borrowed(DEFAULT_INSTRUCTION)),
        )
    }

    /// The strategy for `target`, or why there is none.
    fn strategy_for(&self, target: &str, failure: &Failure<'_>) -> Result<Strategy, String> {
        let transcript = failure.transcript();
        if transcript.text().is_empty() && transcript.tool_calls() == 0 {
            return Ok(Strategy::Restart);
        }
        if transcript.overflowed() {
            return Err("the answer so far is longer than the transcript limit".into());
        }
        if transcript.tool_calls() > 0 {
            return Err("tool calls already reached the client".into());
        }
        let prefill = self.prefill_of(target);
        if prefill != Prefill::None && failure.prefill_allowed() {
            return Ok(Strategy::Prefill(prefill));
        }
        match self.shared.when_no_prefill {
            WhenNoPrefill::Instruction => Ok(self.instruction_strategy()),
            WhenNoPrefill::Restart => Ok(Strategy::Restart),
            WhenNoPrefill::Error => Err(format!(
                "{target} does not accept prefill and when_no_prefill is `error`"
            )),
        }
    }
}

impl RetryPlanner for FallbackChain {
    fn plan(&mut self, failure: &Failure<'_>) -> Plan {
        if failure.class() == FailureClass::PrefillRejected && !self.instructed {
            if let Some(target) = self.current.clone() {
                self.instructed = true;
                let strategy = match self.shared.when_no_prefill {
                    WhenNoPrefill::Restart => Strategy::Restart,
                    WhenNoPrefill::Instruction | WhenNoPrefill::Error => {
                        self.instruction_strategy()
                    }
                };
                return failure.retry(&target, strategy);
            }
        }
        let Some(model) = failure.model() else {
            return Plan::give_up("the request names no model");
        };
        let list = self
            .shared
            .fallbacks
            .get(&model)
            .unwrap_or(&self.shared.default_fallbacks);
        let Some(target) = list.get(self.next).cloned() else {
            return Plan::give_up(if list.is_empty() {
                format!("no fallback for {model}")
            } else {
                format!("all {} fallbacks for {model} tried", list.len())
            });
        };
        self.next += 1;
        self.current = Some(target.clone());
        self.instructed = false;
        match self.strategy_for(&target, failure) {
            Ok(strategy) => failure.retry(&target, strategy),
            Err(why) => Plan::give_up(why),
        }
    }
}
