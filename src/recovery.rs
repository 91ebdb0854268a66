//! Making further attempts: record a failure, ask the planner, call the inner service again.
//!
//! Shared by the response future (failures before the stream) and the body (failures during
//! it), so both count attempts, keep history, trace and report alike. It is also where each
//! attempt and the request end: their spans get their last fields, the observer its reports.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_service::Service;
use tracing::instrument::{Instrument, Instrumented};
use tracing::Span;

use crate::address::Named;
use crate::attempt::{Attempt, ModelInBody};
use crate::config::Config;
use crate::dialect::{Dialect, ErrorKind, StreamFailure};
use crate::error::FailureClass;
use crate::error::{AttemptError, FallbackError};
use crate::failure::Failure;
use crate::json::RequestIndex;
use crate::observe::{AttemptOutcome, AttemptReport, RequestOutcome, RequestReport, Usage};
use crate::plan::{PlanKind, RetryPlanner};
use crate::provenance::Provenance;
use crate::replay::{self, ReplayBody};
use crate::strategy::Strategy;
use crate::trace::{self, seconds, TARGET};
use crate::transcript::Transcript;

pub(crate) struct Recovery<S, P> {
    service: S,
    planner: P,
    /// The request as the client sent it.
    request: Request<Bytes>,
    /// What rewriting it needs, read on its first failure.
    index: Option<RequestIndex>,
    /// The model it names: read on its first failure, or before if someone asks (the inner
    /// service, through the first attempt's target; a span; the observer).
    model: Arc<ModelInBody>,
    /// The model is in the request's span (and the first attempt's, if still open).
    model_recorded: bool,
    dialect: Dialect,
    pub(crate) config: Arc<Config>,
    history: Vec<AttemptError>,
    /// The attempt in flight, or the last one once it ended.
    current: InFlight,
    /// The request's span; every attempt's span is inside it.
    span: Span,
    started: Instant,
    first_chunk_at: Option<Instant>,
    /// Since when the client has been waiting for a fallback: the first failure since it last
    /// got bytes of the answer (later attempts may fail too before one serves).
    waiting_since: Option<Instant>,
    provenance: Provenance,
    /// Set once the request's fate is known; a request dropped before that lost its client.
    outcome: Option<RequestOutcome>,
    error: Option<FallbackError>,
}

/// One attempt, from its call to its end.
struct InFlight {
    attempt: Attempt,
    span: Span,
    started: Instant,
    first_chunk_at: Option<Instant>,
    /// For a fallback that served: how long the client waited for it.
    fallback_gap: Option<std::time::Duration>,
    usage: Usage,
    ended: bool,
}

impl InFlight {
    fn new(attempt: Attempt, request_span: &Span) -> Self {
        InFlight {
            span: trace::attempt_span(request_span, &attempt),
            attempt,
            started: Instant::now(),
            first_chunk_at: None,
            fallback_gap: None,
            usage: Usage::default(),
            ended: false,
        }
    }
}

impl<S, P> std::fmt::Debug for Recovery<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("dialect", &self.dialect)
            .field("attempt", &self.current.attempt)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

/// Statuses worth another attempt when they answer the original request.
pub(crate) fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

impl<S, P> Recovery<S, P> {
    /// Starts the first attempt's bookkeeping for `request`, inside the request's `span`.
    pub(crate) fn new(
        service: S,
        planner: P,
        request: Request<Bytes>,
        dialect: Dialect,
        config: Arc<Config>,
        span: Span,
    ) -> Self {
        let model = ModelInBody::new(request.body().clone());
        // A model named in the path (Gemini, Claude on Vertex AI) is known without the body.
        let named = Named::of(dialect, request.uri().path());
        if !matches!(named, Named::Body) {
            model.set(named.path_model(request.uri().path()).as_deref());
        }
        let current = InFlight::new(Attempt::first_in(&model, named.address()), &span);
        let mut recovery = Recovery {
            service,
            planner,
            request,
            index: None,
            model,
            model_recorded: false,
            dialect,
            config,
            history: Vec::new(),
            current,
            span,
            started: Instant::now(),
            first_chunk_at: None,
            waiting_since: None,
            provenance: Provenance::default(),
            outcome: None,
            error: None,
        };
        // A span that listens wants the model from the start, so that every line logged
        // inside the first attempt names it: read the body now rather than at a failure.
        if !recovery.current.span.is_disabled() {
            recovery.read_index();
            recovery.record_model();
        }
        recovery
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether the budget allows another attempt at all.
    pub(crate) fn can_retry(&self) -> bool {
        self.current.attempt.number() < self.config.max_attempts
    }

    /// The strategy of the attempt in flight.
    pub(crate) fn strategy(&self) -> Option<&Strategy> {
        self.current.attempt.strategy()
    }

    /// The attempts that served the client so far.
    pub(crate) fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// The span of the attempt in flight, to enter while calling the inner service.
    pub(crate) fn attempt_span(&self) -> &Span {
        &self.current.span
    }

    /// Reads what rewriting the request needs (once), the model along with it.
    fn read_index(&mut self) {
        if self.index.is_none() {
            let index = self
                .dialect
                .index(self.request.uri().path(), self.request.body());
            self.model.set(index.model_name.as_deref());
            self.index = Some(index);
        }
    }

    /// Puts the requested model into the request's span, and the first attempt's while it is
    /// open, once; the body is read for it only if a span listens.
    fn record_model(&mut self) {
        if self.model_recorded || self.span.is_disabled() {
            return;
        }
        self.model_recorded = true;
        if let Some(model) = self.model.get() {
            self.span.record("gen_ai.request.model", &**model);
            if self.current.attempt.is_first() {
                self.current.span.record("gen_ai.request.model", &**model);
            }
        }
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

    /// What the attempt in flight's upstream reported about tokens and model so far.
    pub(crate) fn set_usage(&mut self, usage: Usage) {
        self.current.usage = usage;
    }

    /// Bytes of the attempt in flight are going out to the client. The first time, that
    /// attempt starts serving: its time to first chunk is taken, it joins the provenance, and
    /// for a fallback the stream has recovered.
    pub(crate) fn chunk_sent(&mut self) {
        if self.current.first_chunk_at.is_some() || self.current.ended {
            return;
        }
        let now = Instant::now();
        self.current.first_chunk_at = Some(now);
        self.first_chunk_at.get_or_insert(now);
        self.provenance.push(&self.current.attempt);
        if let Some(since) = self.waiting_since.take() {
            self.current.fallback_gap = Some(now - since);
            let gap = seconds(now - since);
            tracing::info!(
                target: TARGET,
                parent: &self.current.span,
                {
                    midstream.fallback_gap_s = gap,
                },
                "stream recovered"
            );
        }
    }

    /// The response of the attempt in flight goes to the client (its headers, at least): it
    /// serves, and the response carries the provenance.
    pub(crate) fn respond<B>(&mut self, response: &mut Response<B>) {
        self.provenance.push(&self.current.attempt);
        response.extensions_mut().insert(self.provenance.clone());
    }

    /// The response of the attempt in flight goes to the client unwatched: a client error, a
    /// success that is no event stream, or (with no attempt left) a retryable status.
    pub(crate) fn pass_on<B>(&mut self, response: &mut Response<B>) {
        self.respond(response);
        let status = response.status();
        let (attempt, request) = if status.is_success() || !retryable(status) {
            (AttemptOutcome::PassedOn, RequestOutcome::PassedOn)
        } else {
            (
                AttemptOutcome::Failed(FailureClass::Status(status)),
                RequestOutcome::GaveUp,
            )
        };
        self.end_attempt(attempt, None);
        self.outcome = Some(request);
    }

    /// The attempt in flight sent the end of the answer.
    pub(crate) fn completed(&mut self, transcript: &Transcript) {
        self.end_attempt(AttemptOutcome::Completed, Some(transcript));
        self.outcome = Some(RequestOutcome::Completed);
        if !self.current.attempt.is_first() {
            tracing::info!(
                target: TARGET,
                parent: &self.current.span,
                {
                    midstream.attempts = self.current.attempt.number(),
                },
                "completed on a fallback"
            );
        }
    }

    /// The attempt in flight failed, but the client had the whole answer: the layer closed the
    /// stream itself.
    pub(crate) fn closed_locally(&mut self, failure: &StreamFailure, transcript: &Transcript) {
        tracing::info!(
            target: TARGET,
            parent: &self.current.span,
            {
                error.type = failure.class.name(),
                midstream.failure.detail = failure.detail.as_str(),
            },
            "the answer was complete; closed the stream locally"
        );
        self.completed(transcript);
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
        let class = failure.class;
        self.read_index();
        self.record_model();
        tracing::warn!(
            target: TARGET,
            parent: &self.current.span,
            {
                error.type = class.name(),
                midstream.failure.detail = failure.detail.as_str(),
                midstream.sent_text_bytes = transcript.text().len() as u64,
                midstream.sent_tokens = transcript.kept_tokens(),
            },
            "upstream attempt failed"
        );
        self.end_attempt(AttemptOutcome::Failed(class), Some(transcript));
        self.waiting_since.get_or_insert_with(Instant::now);
        let attempt = &self.current.attempt;
        self.history.push(AttemptError {
            attempt: attempt.number(),
            target: attempt.target_arc().cloned(),
            strategy: attempt.strategy().cloned(),
            class,
            detail: failure.detail.into(),
            error_type: failure.error_type,
        });
        if !self.can_retry() {
            return Err(self.give_up(format!("all {} attempts used", self.config.max_attempts)));
        }
        let plan = {
            let index = self.index.as_ref().expect("read above");
            let last = self.history.last().expect("just pushed");
            let failure = Failure {
                class: last.class,
                detail: &last.detail,
                attempt: last.attempt,
                target: last.target.as_deref(),
                address: self.current.attempt.address(),
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
                let number = self.current.attempt.number() + 1;
                let attempt = Attempt::fallback(number, target.name(), strategy.clone())
                    .at(target.address().clone());
                self.current = InFlight::new(attempt, &self.span);
                tracing::info!(target: TARGET, parent: &self.current.span, "falling back");
                Ok((request, strategy))
            }
            PlanKind::GiveUp(reason) => Err(self.give_up(reason.into_owned())),
        }
    }

    fn give_up(&mut self, reason: String) -> FallbackError {
        tracing::error!(
            target: TARGET,
            parent: &self.span,
            {
                midstream.attempts = self.history.len() as u64,
                midstream.reason = reason.as_str(),
            },
            "giving up"
        );
        let err = FallbackError::new(self.history.clone(), reason);
        self.outcome = Some(RequestOutcome::GaveUp);
        self.error = Some(err.clone());
        err
    }

    /// Calls the service the layer made ready with the first attempt's request.
    pub(crate) fn call_first<B>(&mut self) -> S::Future
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        let first = replay::rebuild(&self.request, self.request.body().clone());
        let request = self.for_inner(first);
        let _entered = self.current.span.enter();
        self.service.call(request)
    }

    /// Calls the inner service with `request` for the attempt in flight, waiting for it to be
    /// ready; the call runs inside the attempt's span.
    pub(crate) fn call<B>(
        &self,
        request: Request<Bytes>,
    ) -> Instrumented<Oneshot<S, Request<ReplayBody<B>>>>
    where
        S: Service<Request<ReplayBody<B>>> + Clone,
    {
        self.service
            .clone()
            .oneshot(self.for_inner(request))
            .instrument(self.current.span.clone())
    }

    /// The request as the inner service gets it: the replayable body, and the attempt named
    /// in its extensions.
    fn for_inner<B>(&self, request: Request<Bytes>) -> Request<ReplayBody<B>> {
        let mut request = replay::to_inner(request);
        request
            .extensions_mut()
            .insert(self.current.attempt.clone());
        request
    }

    /// Ends the attempt in flight: its span gets its last fields, the observer its report.
    fn end_attempt(&mut self, outcome: AttemptOutcome, transcript: Option<&Transcript>) {
        let current = &mut self.current;
        if current.ended {
            return;
        }
        current.ended = true;
        if self.config.observer.is_none() && current.span.is_disabled() {
            return;
        }
        if current.attempt.is_first() {
            self.record_model();
        }
        let current = &mut self.current;
        let now = Instant::now();
        let report = AttemptReport {
            attempt: current.attempt.clone(),
            dialect: self.dialect,
            outcome,
            duration: now - current.started,
            time_to_first_chunk: current.first_chunk_at.map(|at| at - current.started),
            fallback_gap: current.fallback_gap,
            usage: current.usage.clone(),
            sent_text_bytes: transcript.map_or(0, |t| t.text().len()),
            sent_tokens: transcript.map_or(0, Transcript::kept_tokens),
        };
        trace::record_attempt(&current.span, &report);
        self.config.observer.attempt_ended(&report);
    }
}

impl<S, P> Drop for Recovery<S, P> {
    /// The request is over: whatever still runs lost its client. The request's span closes
    /// with this, after its last fields.
    fn drop(&mut self) {
        self.end_attempt(AttemptOutcome::ClientGone, None);
        if self.config.observer.is_none() && self.span.is_disabled() {
            return;
        }
        self.record_model();
        let outcome = self.outcome.unwrap_or(RequestOutcome::ClientGone);
        let report = RequestReport {
            dialect: self.dialect,
            model: self.model.get().cloned(),
            outcome,
            attempts: self.current.attempt.number(),
            served_by: self.provenance.served_by(),
            duration: Instant::now() - self.started,
            time_to_first_chunk: self.first_chunk_at.map(|at| at - self.started),
            error: self.error.take(),
        };
        let response_model = match outcome {
            RequestOutcome::Completed => self.current.usage.response_model(),
            _ => None,
        };
        trace::record_request(&self.span, &report, response_model);
        self.config.observer.request_ended(&report);
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

/// The error for a request the layer does not watch whose inner service failed: one attempt,
/// no fallback. The client gets it as a 502.
pub(crate) fn unwatched_failure(detail: String) -> FallbackError {
    FallbackError::new(
        vec![AttemptError {
            attempt: 1,
            target: None,
            strategy: None,
            class: FailureClass::Connect,
            detail: detail.into(),
            error_type: None,
        }],
        "the layer does not watch this request",
    )
}
