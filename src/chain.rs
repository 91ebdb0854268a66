//! The built-in planner: an ordered list of fallbacks per model, aware of what each accepts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::failure::Failure;
use crate::plan::{Plan, RetryPlanner};
use crate::strategy::{Prefill, Strategy, DEFAULT_INSTRUCTION};
use crate::target::Target;

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
/// Each of these decisions is a method of [`Failure`] ([`Failure::strategy_for`],
/// [`Failure::retry_refused_prefill`]), and the chain answers what it knows
/// ([`prefill_of`](Self::prefill_of), [`fallbacks_of`](Self::fallbacks_of)), so a planner of
/// your own can wrap a chain and change one decision only.
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
    // Per request: the next fallback to try.
    next: usize,
}

#[derive(Debug, Clone, Default)]
struct Shared {
    targets: HashMap<Arc<str>, Target>,
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

    /// Declares how `model` accepts prefill: `target(Target::new(model).prefill(prefill))`.
    pub fn model(self, model: impl Into<String>, prefill: Prefill) -> Self {
        self.target(Target::new(model.into()).prefill(prefill))
    }

    /// Declares a target: what the chain knows of it replaces any earlier declaration of the
    /// same name.
    pub fn target(mut self, target: Target) -> Self {
        let name: Arc<str> = Arc::from(target.name());
        Arc::make_mut(&mut self.shared).targets.insert(name, target);
        self
    }

    /// The target called `name`, if it was declared.
    pub fn target_of(&self, name: &str) -> Option<&Target> {
        self.shared.targets.get(name)
    }

    /// The models to try, in order, when a request for `model` fails. `model` may list
    /// itself: that is one more try on the same model, continued as its own declaration says
    /// (the example gateway accepts the same).
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

    /// How `model` accepts prefill, as declared with [`model`](Self::model); a model never
    /// declared is taken to reject it ([`Prefill::None`]).
    pub fn prefill_of(&self, model: &str) -> Prefill {
        self.target_of(model).map_or(Prefill::None, Target::accepts)
    }

    /// The fallbacks of `model`, in order: its own list, else the default list.
    pub fn fallbacks_of(&self, model: &str) -> &[Arc<str>] {
        self.shared
            .fallbacks
            .get(model)
            .unwrap_or(&self.shared.default_fallbacks)
    }

    fn instruction_strategy(&self) -> Strategy {
        Strategy::Instruction(
            self.shared
                .instruction
                .clone()
                .unwrap_or(Cow::Borrowed(DEFAULT_INSTRUCTION)),
        )
    }
}

impl RetryPlanner for FallbackChain {
    fn plan(&mut self, failure: &Failure<'_>) -> Plan {
        let instead = match self.shared.when_no_prefill {
            WhenNoPrefill::Restart => Strategy::Restart,
            WhenNoPrefill::Instruction | WhenNoPrefill::Error => self.instruction_strategy(),
        };
        if let Some(plan) = failure.retry_refused_prefill(instead) {
            return plan;
        }
        let Some(model) = failure.model() else {
            return Plan::give_up("the request names no model");
        };
        let list = self.fallbacks_of(&model);
        let Some(target) = list.get(self.next).cloned() else {
            return Plan::give_up(if list.is_empty() {
                format!("no fallback for {model}")
            } else {
                format!("all {} fallbacks for {model} tried", list.len())
            });
        };
        self.next += 1;
        let when = self.shared.when_no_prefill;
        // A model never declared is a name at its dialect's own address.
        let target = self
            .target_of(&target)
            .cloned()
            .unwrap_or_else(|| Target::new(target));
        match failure.strategy_for(target.accepts(), when) {
            Ok(Strategy::Instruction(_)) => failure.retry(&target, self.instruction_strategy()),
            Ok(strategy) => failure.retry(&target, strategy),
            Err(_) if when == WhenNoPrefill::Error && failure.cannot_continue().is_none() => {
                Plan::give_up(format!(
                    "{} does not accept prefill and when_no_prefill is `error`",
                    target.name()
                ))
            }
            Err(why) => Plan::give_up(why),
        }
    }
}
