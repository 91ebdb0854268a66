//! Making further attempts: record a failure, ask the planner, call the inner service again.
//!
//! Shared by the response future (failures before the stream) and the body (failures during
//! it), so both count attempts, keep history and log alike.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_service::Service;

use crate::config::Config;
use crate::dialect::{Dialect, ErrorKind, StreamFailure};
use crate::error::FailureClass;
use crate::error::{AttemptError, FallbackError};
use crate::json::RequestIndex;
use crate::plan::{Failure, PlanKind, RetryPlanner};
use crate::replay::{self, ReplayBody};
use crate::strategy::Strategy;
use crate::transcript::Transcript;

pub(crate) struct Recovery<S, P> {
    service: S,
    planner: P,
    /// The request as the client sent it.
    request: Request<Bytes>,
    /// What rewriting it needs, read on its first failure.
    index: Option<RequestIndex>,
    dialect: Dialect,
    pub(crate) config: Arc<Config>,
    /// Attempts made so far, the one in flight included.
    attempts: u32,
    history: Vec<AttemptError>,
    /// The target and strategy of the attempt in flight (none for the first).
    current: Option<(Arc<str>, Strategy)>,
}

impl<S, P> std::fmt::Debug for Recovery<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("dialect", &self.dialect)
            .field("attempts", &self.attempts)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

/// Statuses worth another attempt when they answer the original request.
pub(crate) fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

impl<S, P> Recovery<S, P> {
    pub(crate) fn new(
        service: S,
        planner: P,
        request: Request<Bytes>,
        dialect: Dialect,
        config: Arc<Config>,
    ) -> Self {
        Recovery {
            service,
            planner,
            request,
            index: None,
            dialect,
            config,
            attempts: 1,
            history: Vec::new(),
            current: None,
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether the budget allows another attempt at all.
    pub(crate) fn can_retry(&self) -> bool {
        self.attempts < self.config.max_attempts
    }

    /// The strategy of the attempt in flight.
    pub(crate) fn strategy(&self) -> Option<&Strategy> {
        self.current.as_ref().map(|(_, s)| s)
    }

    /// How a non-success status from the attempt in flight counts.
    pub(crate) fn status_class(&self, status: StatusCode) -> FailureClass {
        if status == StatusCode::BAD_REQUEST
            && matches!(self.strategy(), Some(Strategy::Prefill(_)))
        {
            FailureClass::PrefillRejected
        } else {
            FailureClass::Status(status)
        }
    }

    /// Records that the attempt in flight failed, and decides what comes next: the request
    /// for the next attempt and how it continues the answer, or the error to give up with.
    pub(crate) fn on_failure(
        &mut self,
        failure: StreamFailure,
        transcript: &Transcript,
    ) -> Result<(Request<Bytes>, Strategy), FallbackError>
    where
        P: RetryPlanner,
    {
        let (target, strategy) = match self.current.take() {
            Some((t, s)) => (Some(t), Some(s)),
            None => (None, None),
        };
        tracing::warn!(
            target: "tower_midstream",
            dialect = self.dialect.name(),
            attempt = self.attempts,
            to = target.as_deref().unwrap_or("original"),
            class = failure.class.name(),
            detail = %failure.detail,
            sent = transcript.text().len(),
            "upstream attempt failed"
        );
        self.history.push(AttemptError {
            attempt: self.attempts,
            target,
            strategy,
            class: failure.class,
            detail: failure.detail.into(),
            error_type: failure.error_type,
        });
        if !self.can_retry() {
            return Err(self.give_up(format!("all {} attempts used", self.config.max_attempts)));
        }
        let dialect = self.dialect;
        let index = self
            .index
            .get_or_insert_with(|| dialect.index(self.request.body()));
        let plan = {
            let failure = Failure {
                class: self.history.last().expect("just pushed").class,
                detail: &self.history.last().expect("just pushed").detail,
                attempt: self.attempts,
                dialect: self.dialect,
                request: &self.request,
                index,
                transcript,
                history: &self.history,
            };
            self.planner.plan(&failure)
        };
        match plan.0 {
            PlanKind::Retry {
                target,
                strategy,
                request,
            } => {
                self.attempts += 1;
                tracing::info!(
                    target: "tower_midstream",
                    dialect = self.dialect.name(),
                    attempt = self.attempts,
                    to = %target,
                    strategy = %strategy,
                    "falling back"
                );
                self.current = Some((target, strategy.clone()));
                Ok((request, strategy))
            }
            PlanKind::GiveUp(reason) => Err(self.give_up(reason.into_owned())),
        }
    }

    fn give_up(&self, reason: String) -> FallbackError {
        tracing::error!(
            target: "tower_midstream",
            dialect = self.dialect.name(),
            attempts = self.history.len(),
            reason = %reason,
            "giving up"
        );
        FallbackError::new(self.history.clone(), reason)
    }

    /// Calls the inner service with `request`, waiting for it to be ready.
    pub(crate) fn call<B>(&self, request: Request<Bytes>) -> Oneshot<S, Request<ReplayBody<B>>>
    where
        S: Service<Request<ReplayBody<B>>> + Clone,
    {
        self.service.clone().oneshot(replay::to_inner(request))
    }
}

/// What the client is told when giving up: the original failure, in its kind.
pub(crate) fn client_error(err: &FallbackError) -> (ErrorKind, String) {
    let original = err.original();
    (
        ErrorKind::of(original.class, original.error_type.as_ref()),
        err.client_message(),
    )
}
