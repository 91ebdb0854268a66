//! Deciding how to retry: the planner trait and what it is told and returns.

use std::borrow::Cow;

use bytes::Bytes;
use http::Request;

use crate::failure::Failure;
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
/// the client as it came, and a request that opted out with [`NoFallback`](crate::NoFallback)
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
}

impl<P: RetryPlanner + ?Sized> RetryPlanner for Box<P> {
    fn plan(&mut self, failure: &Failure<'_>) -> Plan {
        (**self).plan(failure)
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
    },
    GiveUp(Cow<'static, str>),
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
        })
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

    /// The request of a retry, to adjust before it is sent (a header, an extension that routes
    /// it to another upstream...).
    pub fn request_mut(&mut self) -> Option<&mut Request<Bytes>> {
        match &mut self.0 {
            PlanKind::Retry { request, .. } => Some(request),
            PlanKind::GiveUp(_) => None,
        }
    }
}
