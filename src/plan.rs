//! Deciding how to retry: the planner trait and what it is told and returns.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;

use crate::dialect::{Continuation, Dialect};
use crate::error::{AttemptError, FailureClass};
use crate::json::RequestIndex;
use crate::strategy::{RewriteError, Strategy};
use crate::transcript::Transcript;

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

/// What the planner is told about a failure.
#[derive(Debug)]
pub struct Failure<'a> {
    pub(crate) class: FailureClass,
    pub(crate) detail: &'a str,
    pub(crate) attempt: u32,
    pub(crate) dialect: Dialect,
    pub(crate) request: &'a Request<Bytes>,
    pub(crate) index: &'a RequestIndex,
    pub(crate) transcript: &'a Transcript,
    pub(crate) history: &'a [AttemptError],
}

impl<'a> Failure<'a> {
    /// What kind of failure it was.
    pub fn class(&self) -> FailureClass {
        self.class
    }

    /// What the upstream said or did, in words.
    pub fn detail(&self) -> &str {
        self.detail
    }

    /// The attempt that failed: 1 for the request as the client sent it.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Every failed attempt so far, this one last, with the target and strategy each used.
    pub fn history(&self) -> &[AttemptError] {
        self.history
    }

    /// The wire format of the request.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The request as the client sent it, body included.
    pub fn request(&self) -> &Request<Bytes> {
        self.request
    }

    /// What the client has received so far.
    pub fn transcript(&self) -> &Transcript {
        self.transcript
    }

    /// The `model` the client asked for, if the body names one.
    pub fn model(&self) -> Option<String> {
        self.index.model_name.clone()
    }

    /// Whether this request may carry an assistant prefill at all, whatever the target: not
    /// when Anthropic extended thinking is enabled, which the API refuses with prefill.
    pub fn prefill_allowed(&self) -> bool {
        self.dialect.spec().prefill_allowed(self.index)
    }

    /// The request for the next attempt: the original, with `model` set to `target` and the
    /// partial answer added as `strategy` says. `max_tokens` (or `max_completion_tokens`)
    /// shrinks by the tokens already kept when the answer is continued.
    ///
    /// Fails with a clear message when the body is not a request this dialect can rewrite
    /// (not JSON, no `messages` array, a prefill kind the dialect does not have...).
    pub fn rewrite(
        &self,
        target: &str,
        strategy: &Strategy,
    ) -> Result<Request<Bytes>, RewriteError> {
        let continuation = Continuation {
            text: self.transcript.text(),
            kept_tokens: self.transcript.kept_tokens(),
        };
        let body = self.dialect.spec().rewrite(
            self.request.body(),
            self.index,
            target,
            strategy,
            &continuation,
        )?;
        Ok(crate::replay::rebuild(self.request, body))
    }

    /// [`rewrite`](Self::rewrite) into a [`Plan::retry`], or a give-up that says why the
    /// request could not be rewritten.
    pub fn retry(&self, target: &str, strategy: Strategy) -> Plan {
        match self.rewrite(target, &strategy) {
            Ok(request) => Plan::retry(target, strategy, request),
            Err(err) => Plan::give_up(format!("cannot rewrite the request for {target}: {err}")),
        }
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
        target: Arc<str>,
        strategy: Strategy,
        request: Request<Bytes>,
    },
    GiveUp(Cow<'static, str>),
}

impl Plan {
    /// Send `request` next. `target` names it in logs and in [`FallbackError`](crate::FallbackError);
    /// `strategy` tells the layer how the new stream continues the answer, so it can splice
    /// it on (it must be how `request` was built).
    pub fn retry(target: impl Into<Arc<str>>, strategy: Strategy, request: Request<Bytes>) -> Self {
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
