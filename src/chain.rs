//! The built-in planner: an ordered list of fallbacks per model, aware of what each accepts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::attempt::Attempt;
use crate::backoff::{Backoff, RetryBudget};
use crate::breaker::{Admission, CircuitState};
use crate::error::FailureClass;
use crate::failure::Failure;
use crate::observe::AttemptOutcome;
use crate::plan::{First, Plan, RetryPlanner};
use crate::recovery::retryable;
use crate::strategy::{Prefill, Strategy, DEFAULT_INSTRUCTION};
use crate::target::Target;
use crate::trace::TARGET;

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
/// For every failure, before anything of the answer reached the client, it first retries the
/// same target if that target has retries left ([`retries`](Self::retries),
/// [`Target::retries`]) and the failure is worth it (408, 429, a 5xx, no connection), after a
/// wait ([`backoff`](Self::backoff)) and within a budget shared by every request
/// ([`retry_budget`](Self::retry_budget)). A 400 that says the prompt is too long restarts on
/// the next of the model's [larger-context targets](Self::context_window_fallbacks). Otherwise
/// it takes the next fallback of the model the client asked for, and
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
    // Per request: the next fallback to try, and the next larger-context target.
    next: usize,
    next_larger: usize,
}

#[derive(Debug, Clone, Default)]
struct Shared {
    targets: HashMap<Arc<str>, Target>,
    fallbacks: HashMap<String, Vec<Arc<str>>>,
    default_fallbacks: Vec<Arc<str>>,
    larger_context: HashMap<String, Vec<Arc<str>>>,
    when_no_prefill: WhenNoPrefill,
    instruction: Option<Cow<'static, str>>,
    /// Same-target retries of a target that declares none.
    retries: u32,
    backoff: Backoff,
    /// Shared by every clone of the chain, so every request through one layer.
    budget: Arc<RetryBudget>,
    /// Per-target circuits, shared likewise; `None`: no circuit breaking.
    circuits: Option<Arc<dyn CircuitState>>,
    /// Some target declares its own deadlines: the first attempt's target is looked up.
    any_deadlines: bool,
}

impl Shared {
    fn fallbacks_of(&self, model: &str) -> &[Arc<str>] {
        self.fallbacks.get(model).unwrap_or(&self.default_fallbacks)
    }
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
        let shared = Arc::make_mut(&mut self.shared);
        shared.any_deadlines |= target.deadlines().any();
        shared.targets.insert(name, target);
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

    /// The targets to restart on, in order, when a request for `model` is refused with a 400
    /// saying the prompt is too long (LiteLLM's `context_window_fallbacks`). Without a list,
    /// that 400 goes to the client as it came.
    pub fn context_window_fallbacks<I, T>(mut self, model: impl Into<String>, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let targets = targets.into_iter().map(|t| Arc::from(t.into())).collect();
        Arc::make_mut(&mut self.shared)
            .larger_context
            .insert(model.into(), targets);
        self
    }

    /// How many times a target is retried, before anything reached the client, before moving
    /// on to the next (default 0: the next target is the retry; a target's own
    /// [`Target::retries`] wins).
    pub fn retries(mut self, retries: u32) -> Self {
        Arc::make_mut(&mut self.shared).retries = retries;
        self
    }

    /// The wait before each same-target retry (default: [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        Arc::make_mut(&mut self.shared).backoff = backoff;
        self
    }

    /// How many same-target retries (and hedges) all requests together may make per window
    /// (default: [`RetryBudget::default`]); past it, failures move on to the next target at
    /// once, and a slow attempt gets no hedge.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        Arc::make_mut(&mut self.shared).budget = Arc::new(budget);
        self
    }

    /// Circuit breaking per target (off by default): a target that failed too often in a row
    /// is skipped, the first attempt included (it goes to the first fallback whose circuit
    /// is closed), until a probe succeeds; with every target open, the least recently failed
    /// is tried. [`Breaker`](crate::Breaker) keeps the circuits in this process; another
    /// [`CircuitState`] can share them between replicas.
    pub fn circuit_breaker(mut self, circuits: impl CircuitState + 'static) -> Self {
        Arc::make_mut(&mut self.shared).circuits = Some(Arc::new(circuits));
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
        self.shared.fallbacks_of(model)
    }

    /// Whether `target` may be tried now (always, without circuit breaking).
    fn admit(&self, target: &str) -> Admission {
        match &self.shared.circuits {
            Some(circuits) => circuits.admit(target),
            None => Admission::Closed,
        }
    }

    /// The first of `candidates` (each with its position) whose circuit admits an attempt,
    /// else the one that failed least recently; with its position.
    fn pick<'a>(
        &self,
        candidates: impl Iterator<Item = (usize, &'a Arc<str>)>,
    ) -> Option<(usize, Arc<str>)> {
        let mut least_recent: Option<(usize, &Arc<str>, tokio::time::Instant)> = None;
        for (at, target) in candidates {
            match self.admit(target) {
                Admission::Closed | Admission::Probe => return Some((at, target.clone())),
                Admission::Open { since } => {
                    if !least_recent.is_some_and(|(_, _, earliest)| since >= earliest) {
                        least_recent = Some((at, target, since));
                    }
                }
            }
        }
        least_recent.map(|(at, target, _)| {
            tracing::warn!(
                target: TARGET,
                { midstream.rule = "all_circuits_open", midstream.target = &**target },
                "every target's circuit is open: trying the least recently failed"
            );
            (at, target.clone())
        })
    }

    /// `name` as declared, else a target taken to accept no prefill, at its dialect's own
    /// address, speaking the client's dialect.
    fn declared(&self, name: &str) -> Target {
        self.target_of(name)
            .cloned()
            .unwrap_or_else(|| Target::new(name))
    }

    /// Logs why `target` is passed over.
    fn pass_over(target: &str, reason: &str) {
        tracing::info!(
            target: TARGET,
            {
                midstream.rule = "cannot_take_request",
                midstream.target = target,
                midstream.reason = reason,
            },
            "passing over a target that cannot take this request"
        );
    }

    /// `plan`, a retry on `target`, with that target's deadlines if it was declared.
    fn on_target(&self, target: &str, plan: Plan) -> Plan {
        match self.target_of(target) {
            Some(declared) => plan.with_deadlines(declared.deadlines()),
            None => plan,
        }
    }

    /// The same target again, after a wait, if it has retries left, the failure is worth one
    /// and the budget allows it.
    fn same_target(&self, failure: &Failure<'_>) -> Option<Plan> {
        let worth_it = match failure.class() {
            FailureClass::Status(status) => retryable(status),
            FailureClass::Connect => true,
            _ => false,
        };
        if !worth_it || failure.answer_started() {
            return None;
        }
        let target = failure.target()?;
        let allowed = self
            .target_of(target)
            .and_then(Target::declared_retries)
            .unwrap_or(self.shared.retries);
        // The attempts in a row on this target, this one included.
        let tried = failure
            .history()
            .iter()
            .rev()
            .take_while(|a| a.target() == Some(target))
            .count() as u32;
        let retry = tried.saturating_sub(1);
        if retry >= allowed || matches!(self.admit(target), Admission::Open { .. }) {
            return None;
        }
        let Some(wait) = self.shared.backoff.wait(retry, failure.retry_after()) else {
            tracing::info!(
                target: TARGET,
                {
                    midstream.rule = "retry_after_over_cap",
                    midstream.retry_after_s = failure.retry_after().unwrap_or_default().as_secs_f64(),
                },
                "the upstream asked for a longer wait than the backoff cap: moving on"
            );
            return None;
        };
        if !self.shared.budget.withdraw() {
            tracing::warn!(
                target: TARGET,
                {
                    midstream.rule = "retry_budget",
                },
                "the retry budget is spent: moving on"
            );
            return None;
        }
        tracing::info!(
            target: TARGET,
            {
                midstream.rule = "same_target_retry",
                midstream.retry = retry + 1,
                midstream.wait_s = wait.as_secs_f64(),
            },
            "retrying the same target"
        );
        // In the dialect it was tried in, at the address it was sent to.
        let again = self
            .declared(target)
            .dialect(failure.attempt_dialect())
            .at(failure.address().clone());
        let plan = failure.retry_to(&again, Strategy::Restart).after(wait);
        Some(self.on_target(target, plan))
    }

    /// The next larger-context target, after a 400 saying the prompt is too long.
    fn larger_context(&mut self, failure: &Failure<'_>) -> Plan {
        let Some(model) = failure.model() else {
            return Plan::give_up("the request names no model");
        };
        let shared = Arc::clone(&self.shared);
        let list = shared
            .larger_context
            .get(&model)
            .map_or(&[][..], |l| &l[..]);
        // Targets of another dialect that cannot take this request are passed over.
        let mut skipped = String::new();
        let target = loop {
            let Some(name) = list.get(self.next_larger) else {
                return Plan::give_up(format!(
                    "no larger-context target left for {model}{skipped}"
                ));
            };
            self.next_larger += 1;
            let target = self.declared(name);
            match failure.cannot_send_to(&target) {
                None => break target,
                Some(reason) => {
                    Self::pass_over(name, &reason);
                    skipped.push_str(&format!("; {name} cannot take this request: {reason}"));
                }
            }
        };
        tracing::info!(
            target: TARGET,
            {
                midstream.rule = "context_window",
            },
            "the prompt is too long: restarting on a larger-context target"
        );
        self.on_target(target.name(), failure.retry_to(&target, Strategy::Restart))
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
    /// The first attempt gets its target's own deadlines; with circuit breaking, a model
    /// whose circuit is open sends it to its first fallback whose circuit is closed (the
    /// fallbacks before that one are skipped).
    fn first(&mut self, request: &crate::plan::FirstAttempt<'_>) -> First {
        if self.shared.circuits.is_none() && !self.shared.any_deadlines {
            return First::as_sent();
        }
        let Some(model) = request.model().map(Arc::<str>::from) else {
            return First::as_sent();
        };
        let list = self.fallbacks_of(&model);
        // The first attempt is not translated: a fallback of another dialect waits its turn.
        let client = request.dialect();
        let candidates = std::iter::once(&model)
            .chain(list.iter())
            .enumerate()
            .filter(|(at, name)| {
                *at == 0
                    || self
                        .target_of(name)
                        .and_then(Target::speaks)
                        .map_or(true, |d| d == client)
            });
        let (first, target) = match self.pick(candidates) {
            Some((at, target)) if at > 0 => {
                self.next = at;
                tracing::info!(
                    target: TARGET,
                    { midstream.rule = "circuit_open", midstream.target = &*target },
                    "the model's circuit is open: the first attempt goes to a fallback"
                );
                (First::to(self.declared(&target)), target)
            }
            _ => (First::as_sent(), model),
        };
        match self.target_of(&target) {
            Some(declared) => First {
                timing: first.timing.then(declared.deadlines()),
                ..first
            },
            None => first,
        }
    }

    /// Tells the circuits how an attempt to a target ended: a completed or passed-on answer
    /// closes, a failure of the target's (a retryable status, no connection, a broken, stalled
    /// or malformed stream) counts towards opening.
    fn attempt_ended(&mut self, attempt: &Attempt, outcome: AttemptOutcome) {
        let (Some(circuits), Some(target)) = (&self.shared.circuits, attempt.target()) else {
            return;
        };
        let success = match outcome {
            AttemptOutcome::Completed | AttemptOutcome::PassedOn => true,
            AttemptOutcome::Failed(FailureClass::Status(status)) => {
                if !retryable(status) {
                    return;
                }
                false
            }
            AttemptOutcome::Failed(FailureClass::PrefillRejected | FailureClass::ContextWindow) => {
                return
            }
            AttemptOutcome::Failed(_) => false,
            _ => return,
        };
        circuits.record(target, success);
    }

    /// A hedge ([`Failure::is_hedge`]) is the model's next fallback as a restart, like a
    /// failure before the stream; it takes one retry from the [budget](Self::retry_budget)
    /// (none left: no hedge), and its circuit is asked like any attempt's.
    fn plan(&mut self, failure: &Failure<'_>) -> Plan {
        if failure.is_hedge() && !self.shared.budget.withdraw() {
            tracing::warn!(
                target: TARGET,
                { midstream.rule = "retry_budget" },
                "the retry budget is spent: no hedge"
            );
            return Plan::give_up("the retry budget is spent");
        }
        let instead = match self.shared.when_no_prefill {
            WhenNoPrefill::Restart => Strategy::Restart,
            WhenNoPrefill::Instruction | WhenNoPrefill::Error => self.instruction_strategy(),
        };
        if let Some(plan) = failure.retry_refused_prefill(instead) {
            return match failure.target() {
                Some(target) => self.on_target(target, plan),
                None => plan,
            };
        }
        if failure.class() == FailureClass::ContextWindow {
            return self.larger_context(failure);
        }
        if let Some(plan) = self.same_target(failure) {
            return plan;
        }
        let Some(model) = failure.model() else {
            return Plan::give_up("the request names no model");
        };
        let shared = Arc::clone(&self.shared);
        let list = shared.fallbacks_of(&model);
        let rest = list.get(self.next..).unwrap_or_default();
        // Targets of another dialect that cannot take this request are passed over before
        // their circuit is asked (asking may hand out its one probe).
        let mut skipped: Vec<(Arc<str>, Cow<'static, str>)> = Vec::new();
        let candidates = rest.iter().enumerate().filter(|(_, name)| {
            let Some(reason) = failure.cannot_send_to(&self.declared(name)) else {
                return true;
            };
            Self::pass_over(name, &reason);
            skipped.push((Arc::clone(name), reason));
            false
        });
        let Some((at, name)) = self.pick(candidates) else {
            let mut why = if list.is_empty() {
                format!("no fallback for {model}")
            } else {
                format!("all {} fallbacks for {model} tried", list.len())
            };
            for (name, reason) in &skipped {
                why.push_str(&format!("; {name} cannot take this request: {reason}"));
            }
            return Plan::give_up(why);
        };
        self.next += at + 1;
        let target = self.declared(&name);
        let when = self.shared.when_no_prefill;
        let on_target = |plan: Plan| self.on_target(target.name(), plan);
        match failure.strategy_on(&target, when) {
            Ok(Strategy::Instruction(_)) => {
                on_target(failure.retry_to(&target, self.instruction_strategy()))
            }
            Ok(strategy) => on_target(failure.retry_to(&target, strategy)),
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
