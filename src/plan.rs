//! Deciding how to retry: the planner trait and what it is told and returns.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::Request;

use crate::attempt::{Attempt, ModelInBody};
use crate::dialect::Dialect;
use crate::failure::Failure;
use crate::observe::AttemptOutcome;
use crate::strategy::Strategy;
use crate::target::Target;

/// Decides, after each failure, whether and how to try again.
///
/// The layer clones the planner for every request (as `tower::retry` clones its policy), so
/// `&mut self` can hold per-request state such as which fallback comes next. [`FallbackChain`]
/// is the built-in planner; write your own to route by tenant, budget, time of day...
///
/// The planner is asked only about failures that a retry can fix: a client error (any 4xx
/// other than 408 and 429 before the stream, an in-band `invalid_request_error`) is passed to
/// the client as it came, except a 400 saying the prompt is too long
/// ([`FailureClass::ContextWindow`](crate::FailureClass::ContextWindow)), and a request that opted out with [`NoFallback`](crate::NoFallback)
/// never gets here.
///
/// # Example
///
/// ```
/// use tower_midstream::{Failure, Plan, RetryPlanner, Strategy};
///
/// /// Retry once on the same model: restart if the client saw nothing, else ask it to go on.
/// #[derive(Clone, Default)]
/// struct OnceMore {
///     tried: bool,
/// }
///
/// impl RetryPlanner for OnceMore {
///     fn plan(&mut self, failure: &Failure<'_>) -> Plan {
///         if std::mem::replace(&mut self.tried, true) {
///             return Plan::give_up("already retried once");
///         }
///         let Some(model) = failure.model() else {
///             return Plan::give_up("the request names no model");
///         };
///         let strategy = if failure.transcript().is_empty() {
///             Strategy::Restart
///         } else {
///             Strategy::instruction()
///         };
///         failure.retry(&model, strategy)
///     }
/// }
/// ```
///
/// [`FallbackChain`]: crate::FallbackChain
pub trait RetryPlanner {
    /// What to do about `failure`: a rewritten request for the next attempt, or give up.
    fn plan(&mut self, failure: &Failure<'_>) -> Plan;

    /// Before the first attempt: where it goes and its deadlines. [`First::as_sent`], the
    /// default, sends the request as the client sent it with the layer's deadlines;
    /// [`First::to`] restarts it on another target (a primary whose circuit is open...).
    fn first(&mut self, request: &FirstAttempt<'_>) -> First {
        let _ = request;
        First::as_sent()
    }

    /// An attempt ended: `outcome` says how (a planner that keeps per-target health, as
    /// [`FallbackChain`](crate::FallbackChain)'s circuit breaker does, learns from it). Not
    /// called for an attempt whose client went away. Does nothing by default.
    fn attempt_ended(&mut self, attempt: &Attempt, outcome: AttemptOutcome) {
        let _ = (attempt, outcome);
    }
}

impl<P: RetryPlanner + ?Sized> RetryPlanner for Box<P> {
    fn plan(&mut self, failure: &Failure<'_>) -> Plan {
        (**self).plan(failure)
    }

    fn first(&mut self, request: &FirstAttempt<'_>) -> First {
        (**self).first(request)
    }

    fn attempt_ended(&mut self, attempt: &Attempt, outcome: AttemptOutcome) {
        (**self).attempt_ended(attempt, outcome)
    }
}

/// The planner's say before the first attempt: where it goes, and its deadlines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct First {
    pub(crate) target: Option<Target>,
    pub(crate) timing: Deadlines,
}

impl First {
    /// The request as the client sent it, with the layer's deadlines.
    pub fn as_sent() -> Self {
        First::default()
    }

    /// The request restarted on `target` (a model name, or a [`Target`] with its
    /// [`Address`](crate::Address)) instead of the model the client asked for.
    pub fn to(target: impl Into<Target>) -> Self {
        First {
            target: Some(target.into()),
            timing: Deadlines::default(),
        }
    }

    /// Where it goes instead of the model the client asked for, if elsewhere.
    pub fn target(&self) -> Option<&str> {
        self.target.as_ref().map(Target::name)
    }

    /// Its first-token deadline, instead of the layer's (`None`: none).
    pub fn first_token_timeout(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.timing.first_token = Some(deadline.into());
        self
    }

    /// Its idle timeout, instead of the layer's (`None`: none).
    pub fn idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.timing.idle = Some(idle.into());
        self
    }

    /// Its hedge delay, instead of the layer's
    /// ([`hedge_after`](crate::MidStreamFallbackLayer::hedge_after); `None`: no hedge).
    pub fn hedge_after(mut self, delay: impl Into<Option<Duration>>) -> Self {
        self.timing.hedge = Some(delay.into());
        self
    }
}

/// What a planner is told before the first attempt.
#[derive(Debug)]
pub struct FirstAttempt<'a> {
    pub(crate) model: &'a ModelInBody,
    pub(crate) dialect: Dialect,
}

impl FirstAttempt<'_> {
    /// The `model` the client asked for (its body is read for it once, on the first ask).
    pub fn model(&self) -> Option<&str> {
        self.model.get().map(|m| &**m)
    }

    /// The client's dialect: the first attempt goes out as the client wrote it, so only to a
    /// target that speaks it.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }
}

/// The planner's answer.
#[derive(Debug)]
pub struct Plan(pub(crate) PlanKind);

// Made once per failure and moved a couple of times: not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum PlanKind {
    Retry {
        target: Target,
        strategy: Strategy,
        request: Request<Bytes>,
        /// The request's wire format; `None`: the client's.
        dialect: Option<Dialect>,
        /// How long to wait before sending it (a backoff, a `Retry-After`).
        after: Duration,
        timing: Deadlines,
    },
    GiveUp(Cow<'static, str>),
}

/// The deadlines a plan sets for its attempt; `None`: the layer's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Deadlines {
    pub(crate) first_token: Option<Option<Duration>>,
    pub(crate) idle: Option<Option<Duration>>,
    pub(crate) hedge: Option<Option<Duration>>,
}

impl Deadlines {
    /// These deadlines, each overridden by `other`'s where it sets one.
    pub(crate) fn then(self, other: Deadlines) -> Deadlines {
        Deadlines {
            first_token: other.first_token.or(self.first_token),
            idle: other.idle.or(self.idle),
            hedge: other.hedge.or(self.hedge),
        }
    }

    /// Whether it sets any deadline.
    pub(crate) fn any(&self) -> bool {
        self.first_token.is_some() || self.idle.is_some() || self.hedge.is_some()
    }

    /// These deadlines over `timing`, the layer's.
    pub(crate) fn over(self, mut timing: crate::clock::Timing) -> crate::clock::Timing {
        if let Some(first_token) = self.first_token {
            timing.first_token = first_token;
        }
        if let Some(idle) = self.idle {
            timing.idle = idle;
        }
        if let Some(hedge) = self.hedge {
            timing.hedge = hedge;
        }
        timing
    }
}

impl Plan {
    /// Send `request` next. `target` names it (a model name, or a [`Target`] with its
    /// [`Address`](crate::Address)): in the [`Attempt`](crate::Attempt) the inner service
    /// gets, in spans, metrics and [`FallbackError`](crate::FallbackError); `strategy` tells
    /// the layer how the new stream continues the answer, so it can splice it on (it must be
    /// how `request` was built, as [`Failure::retry`] does).
    pub fn retry(target: impl Into<Target>, strategy: Strategy, request: Request<Bytes>) -> Self {
        Plan(PlanKind::Retry {
            target: target.into(),
            strategy,
            request,
            dialect: None,
            after: Duration::ZERO,
            timing: Deadlines::default(),
        })
    }

    /// Send `request`, written in `dialect` (not the client's), next: as
    /// [`retry`](Self::retry), and the layer reads the new stream in `dialect` and writes it
    /// to the client in the client's own. [`Failure::retry_to`] makes such a plan from a
    /// [`Target`](crate::Target) declared to speak another dialect, translating the request.
    pub fn retry_in(
        target: impl Into<Target>,
        dialect: Dialect,
        strategy: Strategy,
        request: Request<Bytes>,
    ) -> Self {
        Plan(PlanKind::Retry {
            target: target.into(),
            strategy,
            request,
            dialect: Some(dialect),
            after: Duration::ZERO,
            timing: Deadlines::default(),
        })
    }

    /// Wait `wait` before sending the retry (a backoff, or what the upstream's `Retry-After`
    /// asked). The client waits too, with keep-alives once its stream has begun.
    pub fn after(mut self, wait: Duration) -> Self {
        if let PlanKind::Retry { after, .. } = &mut self.0 {
            *after = wait;
        }
        self
    }

    /// The retry with `deadlines` set on it where they set one.
    pub(crate) fn with_deadlines(mut self, deadlines: Deadlines) -> Self {
        if let PlanKind::Retry { timing, .. } = &mut self.0 {
            *timing = timing.then(deadlines);
        }
        self
    }

    /// How long the retry waits before it is sent.
    pub fn wait(&self) -> Option<Duration> {
        match &self.0 {
            PlanKind::Retry { after, .. } => Some(*after),
            PlanKind::GiveUp(_) => None,
        }
    }

    /// The retry's first-token deadline, instead of the layer's
    /// ([`first_token_timeout`](crate::MidStreamFallbackLayer::first_token_timeout); `None`:
    /// none).
    pub fn first_token_timeout(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        if let PlanKind::Retry { timing, .. } = &mut self.0 {
            timing.first_token = Some(deadline.into());
        }
        self
    }

    /// The retry's idle timeout, instead of the layer's
    /// ([`idle_timeout`](crate::MidStreamFallbackLayer::idle_timeout); `None`: none).
    pub fn idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        if let PlanKind::Retry { timing, .. } = &mut self.0 {
            timing.idle = Some(idle.into());
        }
        self
    }

    /// The retry's hedge delay, instead of the layer's
    /// ([`hedge_after`](crate::MidStreamFallbackLayer::hedge_after); `None`: no hedge).
    pub fn hedge_after(mut self, delay: impl Into<Option<Duration>>) -> Self {
        if let PlanKind::Retry { timing, .. } = &mut self.0 {
            timing.hedge = Some(delay.into());
        }
        self
    }

    /// Stop: the client gets an error that names the original failure.
    pub fn give_up(reason: impl Into<Cow<'static, str>>) -> Self {
        Plan(PlanKind::GiveUp(reason.into()))
    }

    /// Whether this plan makes another attempt.
    pub fn is_retry(&self) -> bool {
        matches!(self.0, PlanKind::Retry { .. })
    }

    /// The target of a retry.
    pub fn target(&self) -> Option<&Target> {
        match &self.0 {
            PlanKind::Retry { target, .. } => Some(target),
            PlanKind::GiveUp(_) => None,
        }
    }

    /// The strategy of a retry.
    pub fn strategy(&self) -> Option<&Strategy> {
        match &self.0 {
            PlanKind::Retry { strategy, .. } => Some(strategy),
            PlanKind::GiveUp(_) => None,
        }
    }

    /// The wire format of a retry's request, when it is not the client's.
    pub fn dialect(&self) -> Option<Dialect> {
        match &self.0 {
            PlanKind::Retry { dialect, .. } => *dialect,
            PlanKind::GiveUp(_) => None,
        }
    }

    /// The request of a retry, to adjust before it is sent (a header, an extension that routes
    /// it to another upstream...).
    pub fn request_mut(&mut self) -> Option<&mut Request<Bytes>> {
        match &mut self.0 {
            PlanKind::Retry { request, .. } => Some(request),
            PlanKind::GiveUp(_) => None,
        }
    }
}
