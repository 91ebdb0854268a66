//! Making further attempts: record a failure, ask the planner, call the inner service again.
//!
//! Shared by the response future (failures before the stream) and the body (failures during
//! it), so both count attempts, keep history, trace and report alike. It is also where each
//! attempt and the request end: their spans get their last fields, the observer its reports.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_service::Service;
use tracing::instrument::{Instrument, Instrumented};
use tracing::Span;

use crate::address::Named;
use crate::attempt::{Attempt, ModelInBody};
use crate::clock::Timing;
use crate::config::Config;
use crate::context_window::says_prompt_too_long;
use crate::dialect::{Dialect, ErrorKind, StreamFailure};
use crate::error::FailureClass;
use crate::error::{AttemptError, FallbackError};
use crate::failure::Failure;
use crate::json::RequestIndex;
use crate::observe::{AttemptOutcome, AttemptReport, RequestOutcome, RequestReport, Usage};
use crate::plan::{FirstAttempt, PlanKind, RetryPlanner};
use crate::provenance::Provenance;
use crate::relay::AttemptWire;
use crate::replay::{self, ReplayBody};
use crate::rewrite::Continuation;
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
    /// The attempt in flight, or the last one once it ended. While a hedge races, the one
    /// whose response the client gets (or will get first).
    current: InFlight,
    /// The other attempt of a hedge race, while it runs.
    rival: Option<InFlight>,
    /// A hedge was started: at most one per request.
    hedged: bool,
    /// The request's span; every attempt's span is inside it.
    span: Span,
    started: Instant,
    first_chunk_at: Option<Instant>,
    /// Since when the client has been waiting for a fallback: the first failure since it last
    /// got bytes of the answer (later attempts may fail too before one serves).
    waiting_since: Option<Instant>,
    provenance: Provenance,
    fate: Fate,
    /// Whether the client's stream reports usage, read from its request the first time an
    /// attempt in another dialect needs to know.
    client_usage: Option<bool>,
}

/// How the request ended, once known: one value, so that giving up always carries its error.
enum Fate {
    /// Still going: a request dropped now lost its client.
    Running,
    Completed,
    PassedOn,
    GaveUp(FallbackError),
}

impl Fate {
    fn outcome(&self) -> RequestOutcome {
        match self {
            Fate::Running => RequestOutcome::ClientGone,
            Fate::Completed => RequestOutcome::Completed,
            Fate::PassedOn => RequestOutcome::PassedOn,
            Fate::GaveUp(_) => RequestOutcome::GaveUp,
        }
    }
}

/// One attempt, from its call to its end.
struct InFlight {
    attempt: Attempt,
    span: Span,
    started: Instant,
    /// When its request goes to the inner service: its deadlines count from here.
    sent: Instant,
    timing: Timing,
    /// How long its plan said to wait before sending it.
    wait: Duration,
    first_chunk_at: Option<Instant>,
    /// For a fallback that served: how long the client waited for it.
    fallback_gap: Option<std::time::Duration>,
    usage: Usage,
    ended: bool,
}

impl InFlight {
    fn new(attempt: Attempt, request_span: &Span, timing: Timing) -> Self {
        let now = Instant::now();
        InFlight {
            span: trace::attempt_span(request_span, &attempt),
            attempt,
            started: now,
            sent: now,
            timing,
            wait: Duration::ZERO,
            first_chunk_at: None,
            fallback_gap: None,
            usage: Usage::default(),
            ended: false,
        }
    }
}

pin_project! {
    /// A further attempt's call: its plan's wait, then the inner service, inside the
    /// attempt's span. (Or the first attempt's call, when it may race a hedge.)
    pub(crate) struct Call<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        wait: Option<Pin<Box<tokio::time::Sleep>>>,
        #[pin]
        call: Calling<S, B>,
    }
}

pin_project! {
    #[project = CallingProj]
    enum Calling<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        // The first attempt, on the service the layer made ready.
        First { #[pin] fut: Instrumented<S::Future> },
        // A later one, on a clone of it, once ready.
        Later { #[pin] call: Instrumented<Oneshot<S, Request<ReplayBody<B>>>> },
    }
}

impl<S, B> Future for Call<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(wait) = this.wait {
            std::task::ready!(wait.as_mut().poll(cx));
            *this.wait = None;
        }
        match this.call.project() {
            CallingProj::First { fut } => fut.poll(cx),
            CallingProj::Later { call } => call.poll(cx),
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
        let current = InFlight::new(
            Attempt::first_in(&model, named.address()).in_dialect(dialect),
            &span,
            config.timing(),
        );
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
            rival: None,
            hedged: false,
            span,
            started: Instant::now(),
            first_chunk_at: None,
            waiting_since: None,
            provenance: Provenance::default(),
            fate: Fate::Running,
            client_usage: None,
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

    /// The request body as the client sent it.
    pub(crate) fn request_body(&self) -> &Bytes {
        self.request.body()
    }

    /// Whether the budget allows another attempt at all.
    pub(crate) fn can_retry(&self) -> bool {
        self.next_number() <= self.config.max_attempts
    }

    /// The number of the next attempt: after the last one made (a hedge may have been).
    fn next_number(&self) -> u32 {
        let rival = self.rival.as_ref().map_or(0, |r| r.attempt.number());
        self.current.attempt.number().max(rival) + 1
    }

    /// The wire format of the attempt in flight's request (a target may speak another dialect
    /// than the client's).
    pub(crate) fn attempt_dialect(&self) -> Dialect {
        self.current.attempt.dialect().unwrap_or(self.dialect)
    }

    /// What the relay needs to read the attempt in flight's stream: its wire, and (for a wire
    /// not the client's) whether the client's stream reports usage.
    pub(crate) fn attempt_wire(&mut self) -> AttemptWire {
        self.wire_of(self.attempt_dialect())
    }

    /// What a relay needs to read a stream in `wire`.
    fn wire_of(&mut self, wire: Dialect) -> AttemptWire {
        let client_wants_usage = wire != self.dialect
            && *self
                .client_usage
                .get_or_insert_with(|| self.dialect.spec().rules.asks_usage(self.request.body()));
        AttemptWire {
            wire,
            client_wants_usage,
        }
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

    /// When the attempt in flight was sent, and its deadlines: no hedge once one was started,
    /// or once part of the answer reached the client.
    pub(crate) fn deadlines(&self) -> (Instant, Timing) {
        let mut timing = self.current.timing;
        if self.hedged || self.first_chunk_at.is_some() {
            timing.hedge = None;
        }
        (self.current.sent, timing)
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

    /// How a non-success status from the attempt in flight counts, given what its body said
    /// (empty when it was not read).
    pub(crate) fn status_class(&self, status: StatusCode, body: &[u8]) -> FailureClass {
        if status != StatusCode::BAD_REQUEST {
            FailureClass::Status(status)
        } else if matches!(self.strategy(), Some(Strategy::Prefill(_))) {
            FailureClass::PrefillRejected
        } else if says_prompt_too_long(body) {
            FailureClass::ContextWindow
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

    /// The response of the attempt in flight goes to the client unwatched, as it came: a client
    /// error, or a success that is no event stream. (A retryable status goes through
    /// [`on_failure`](Self::on_failure), which gives up with every attempt's error.)
    pub(crate) fn pass_on<B>(&mut self, response: &mut Response<B>)
    where
        P: RetryPlanner,
    {
        debug_assert!(response.status().is_success() || !retryable(response.status()));
        self.respond(response);
        self.ended(AttemptOutcome::PassedOn, None);
        self.fate = Fate::PassedOn;
    }

    /// The attempt in flight sent the end of the answer.
    pub(crate) fn completed(&mut self, transcript: &Transcript)
    where
        P: RetryPlanner,
    {
        self.ended(AttemptOutcome::Completed, Some(transcript));
        self.fate = Fate::Completed;
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
    pub(crate) fn closed_locally(&mut self, failure: &StreamFailure, transcript: &Transcript)
    where
        P: RetryPlanner,
    {
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
        self.ended(AttemptOutcome::Failed(class), Some(transcript));
        self.waiting_since.get_or_insert_with(Instant::now);
        self.record_failed(failure);
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
                attempt_dialect: self.current.attempt.dialect().unwrap_or(self.dialect),
                request: &self.request,
                index,
                transcript,
                history: &self.history,
                hedge: false,
            };
            self.planner.plan(&failure)
        };
        match plan.0 {
            PlanKind::Retry {
                target,
                strategy,
                request,
                dialect,
                after,
                timing,
            } => {
                let number = self.next_number();
                let attempt = Attempt::fallback(number, target.name(), strategy.clone())
                    .at(target.address().clone())
                    .in_dialect(dialect.unwrap_or(self.dialect));
                let timing = timing.over(self.config.timing());
                self.current = InFlight::new(attempt, &self.span, timing);
                self.current.wait = after;
                if after.is_zero() {
                    tracing::info!(target: TARGET, parent: &self.current.span, "falling back");
                } else {
                    tracing::info!(
                        target: TARGET,
                        parent: &self.current.span,
                        { midstream.wait_s = seconds(after) },
                        "falling back after a wait"
                    );
                }
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
        self.fate = Fate::GaveUp(err.clone());
        err
    }

    /// Calls the service the layer made ready with the first attempt's request: as the client
    /// sent it, or restarted on the target the planner chose instead.
    pub(crate) fn call_first<B>(&mut self) -> S::Future
    where
        S: Service<Request<ReplayBody<B>>>,
        P: RetryPlanner,
    {
        let first = self.planner.first(&FirstAttempt {
            model: &self.model,
            dialect: self.dialect,
        });
        self.current.timing = first.timing.over(self.current.timing);
        let first = match first.target.and_then(|target| self.restarted_on(target)) {
            Some(request) => request,
            None => replay::rebuild(&self.request, self.request.body().clone()),
        };
        let request = self.for_inner(first);
        self.current.sent = Instant::now();
        let _entered = self.current.span.enter();
        self.service.call(request)
    }

    /// The client's request restarted on `target`, which the first attempt now goes to; `None`
    /// if the body cannot be rewritten (then it goes as it came).
    fn restarted_on(&mut self, target: crate::target::Target) -> Option<Request<Bytes>> {
        self.read_index();
        let index = self.index.as_ref().expect("read above");
        let continuation = Continuation {
            text: "",
            kept_tokens: 0,
        };
        let request = target
            .request_for(
                self.dialect,
                &self.request,
                index,
                &Strategy::Restart,
                &continuation,
            )
            .ok()?;
        let timing = self.current.timing;
        let attempt = Attempt::first(Some(target.name().into()))
            .at(target.address().clone())
            .in_dialect(self.dialect);
        self.current = InFlight::new(attempt, &self.span, timing);
        Some(request)
    }

    /// Calls the inner service with `request` for the attempt in flight, after the wait its
    /// plan asked for, once the service is ready; the call runs inside the attempt's span.
    pub(crate) fn call<B>(&mut self, request: Request<Bytes>) -> Call<S, B>
    where
        S: Service<Request<ReplayBody<B>>> + Clone,
    {
        call_on(&self.service, &mut self.current, request)
    }

    /// The first attempt's call ([`call_first`](Self::call_first)), as a [`Call`]: for a first
    /// attempt that may race a hedge, whose call may have to outlive the response future (as
    /// the rival of a hedge whose response came first).
    pub(crate) fn first_as_call<B>(&self, fut: S::Future) -> Call<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        Call {
            wait: None,
            call: Calling::First {
                fut: fut.instrument(self.current.span.clone()),
            },
        }
    }

    /// Starts the request's hedge beside the attempt in flight, which has sent no content
    /// within its hedge delay: the planner's next target, as a restart. `None` if there is
    /// none (the planner gave up or would not restart, no attempt is left, a hedge already
    /// ran, or part of the answer reached the client).
    pub(crate) fn hedge<B>(&mut self) -> Option<Call<S, B>>
    where
        S: Service<Request<ReplayBody<B>>> + Clone,
        P: RetryPlanner,
    {
        if self.hedged || self.rival.is_some() || self.first_chunk_at.is_some() {
            return None;
        }
        self.hedged = true;
        if !self.can_retry() {
            return None;
        }
        self.read_index();
        self.record_model();
        let delay = self.current.timing.hedge.unwrap_or_default();
        let detail = format!(
            "no content within the hedge delay of {}",
            crate::clock::human(delay)
        );
        let transcript = Transcript::new(0);
        let plan = {
            let failure = Failure {
                class: FailureClass::Stall,
                detail: &detail,
                attempt: self.current.attempt.number(),
                target: self.current.attempt.target(),
                address: self.current.attempt.address(),
                dialect: self.dialect,
                attempt_dialect: self.attempt_dialect(),
                request: &self.request,
                index: self.index.as_ref().expect("read above"),
                transcript: &transcript,
                history: &self.history,
                hedge: true,
            };
            self.planner.plan(&failure)
        };
        let (target, request, dialect, after, timing) = match plan.0 {
            PlanKind::Retry {
                target,
                strategy: Strategy::Restart,
                request,
                dialect,
                after,
                timing,
            } => (target, request, dialect, after, timing),
            PlanKind::Retry { strategy, .. } => {
                tracing::info!(
                    target: TARGET,
                    parent: &self.current.span,
                    { midstream.strategy = strategy.name() },
                    "no hedge: the planner did not plan a restart"
                );
                return None;
            }
            PlanKind::GiveUp(reason) => {
                tracing::info!(
                    target: TARGET,
                    parent: &self.current.span,
                    { midstream.reason = &*reason },
                    "no hedge: the planner has no target for one"
                );
                return None;
            }
        };
        let attempt = Attempt::fallback(self.next_number(), target.name(), Strategy::Restart)
            .at(target.address().clone())
            .in_dialect(dialect.unwrap_or(self.dialect))
            .hedging();
        let mut hedge = InFlight::new(attempt, &self.span, timing.over(self.config.timing()));
        hedge.wait = after;
        tracing::info!(
            target: TARGET,
            parent: &hedge.span,
            {
                midstream.rule = "hedge",
                midstream.racing = self.current.attempt.number(),
                midstream.wait_s = seconds(after),
            },
            "hedge started: no content yet, racing the next target"
        );
        let call = call_on(&self.service, &mut hedge, request);
        self.rival = Some(hedge);
        Some(call)
    }

    /// The rival of a hedge race takes the place of the attempt in flight, which becomes the
    /// rival: its response is the one the client gets first.
    pub(crate) fn swap_racers(&mut self) {
        if let Some(rival) = &mut self.rival {
            std::mem::swap(&mut self.current, rival);
        }
    }

    /// The wire and deadlines of a hedge race's rival.
    pub(crate) fn rival_wire(&mut self) -> Option<AttemptWire> {
        let wire = self
            .rival
            .as_ref()?
            .attempt
            .dialect()
            .unwrap_or(self.dialect);
        Some(self.wire_of(wire))
    }

    /// One of the two racers sent content first (or is the only one left with a response to
    /// give): the other is cancelled, recorded as having lost the race (no failure of its
    /// target's). `rival`: the winner is the rival, which becomes the attempt in flight.
    pub(crate) fn race_won(&mut self, rival: bool)
    where
        P: RetryPlanner,
    {
        let Some(mut loser) = self.rival.take() else {
            return;
        };
        if rival {
            std::mem::swap(&mut self.current, &mut loser);
        }
        tracing::info!(
            target: TARGET,
            parent: &self.current.span,
            {
                midstream.rule = "hedge",
                midstream.winner = self.current.attempt.number(),
                midstream.winner_is_hedge = self.current.attempt.is_hedge(),
                midstream.loser = loser.attempt.number(),
            },
            "hedge race won; the other attempt is cancelled"
        );
        self.history.push(AttemptError {
            attempt: loser.attempt.number(),
            target: loser.attempt.target_arc().cloned(),
            strategy: loser.attempt.strategy().cloned(),
            class: FailureClass::LostRace,
            detail: format!(
                "attempt {} sent content first",
                self.current.attempt.number()
            )
            .into(),
            error_type: None,
            retry_after: None,
            hedge: loser.attempt.is_hedge(),
        });
        std::mem::swap(&mut self.current, &mut loser);
        self.ended(AttemptOutcome::LostRace, None);
        std::mem::swap(&mut self.current, &mut loser);
    }

    /// One of the two racers failed while the other races on: recorded like any failure (its
    /// circuit hears of it), but the planner is not asked; the other goes on as the attempt in
    /// flight. `rival`: the one that failed is the rival.
    /// Puts the attempt in flight's `failure` in the history.
    fn record_failed(&mut self, failure: StreamFailure) {
        let attempt = &self.current.attempt;
        self.history.push(AttemptError {
            attempt: attempt.number(),
            target: attempt.target_arc().cloned(),
            strategy: attempt.strategy().cloned(),
            class: failure.class,
            detail: failure.detail.into(),
            error_type: failure.error_type,
            retry_after: failure.retry_after,
            hedge: attempt.is_hedge(),
        });
    }

    pub(crate) fn racer_failed(&mut self, failure: StreamFailure, rival: bool)
    where
        P: RetryPlanner,
    {
        let Some(mut other) = self.rival.take() else {
            return;
        };
        if rival {
            std::mem::swap(&mut self.current, &mut other);
        }
        // Now `current` failed and `other` races on.
        let failure = failure.redacted(&self.config.redactor);
        let class = failure.class;
        tracing::warn!(
            target: TARGET,
            parent: &self.current.span,
            {
                error.type = class.name(),
                midstream.failure.detail = failure.detail.as_str(),
                midstream.racing_on = other.attempt.number(),
            },
            "upstream attempt failed while racing; the other goes on"
        );
        self.ended(AttemptOutcome::Failed(class), None);
        self.record_failed(failure);
        self.current = other;
    }

    /// The request as the inner service gets it: the replayable body, and the attempt named
    /// in its extensions.
    fn for_inner<B>(&self, request: Request<Bytes>) -> Request<ReplayBody<B>> {
        with_attempt(request, &self.current.attempt)
    }

    /// Ends the attempt in flight, and tells the planner how.
    fn ended(&mut self, outcome: AttemptOutcome, transcript: Option<&Transcript>)
    where
        P: RetryPlanner,
    {
        if !self.current.ended {
            self.planner.attempt_ended(&self.current.attempt, outcome);
        }
        self.end_attempt(outcome, transcript);
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
        if let Some(mut rival) = self.rival.take() {
            std::mem::swap(&mut self.current, &mut rival);
            self.end_attempt(AttemptOutcome::ClientGone, None);
            std::mem::swap(&mut self.current, &mut rival);
        }
        self.end_attempt(AttemptOutcome::ClientGone, None);
        if self.config.observer.is_none() && self.span.is_disabled() {
            return;
        }
        self.record_model();
        let outcome = self.fate.outcome();
        let report = RequestReport {
            dialect: self.dialect,
            model: self.model.get().cloned(),
            outcome,
            attempts: self.current.attempt.number(),
            served_by: self.provenance.served_by(),
            duration: Instant::now() - self.started,
            time_to_first_chunk: self.first_chunk_at.map(|at| at - self.started),
            error: match std::mem::replace(&mut self.fate, Fate::Running) {
                Fate::GaveUp(err) => Some(err),
                _ => None,
            },
        };
        let response_model = match outcome {
            RequestOutcome::Completed => self.current.usage.response_model(),
            _ => None,
        };
        trace::record_request(&self.span, &report, response_model);
        self.config.observer.request_ended(&report);
    }
}

/// Calls a clone of `service` with `request` for `attempt`, after the wait its plan asked for,
/// once the service is ready; the call runs inside the attempt's span.
fn call_on<S, B>(service: &S, attempt: &mut InFlight, request: Request<Bytes>) -> Call<S, B>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
{
    let wait = attempt.wait;
    attempt.sent = Instant::now() + wait;
    Call {
        wait: (!wait.is_zero()).then(|| Box::pin(tokio::time::sleep(wait))),
        call: Calling::Later {
            call: service
                .clone()
                .oneshot(with_attempt(request, &attempt.attempt))
                .instrument(attempt.span.clone()),
        },
    }
}

/// The request as the inner service gets it: the replayable body, and the attempt named in its
/// extensions.
fn with_attempt<B>(request: Request<Bytes>, attempt: &Attempt) -> Request<ReplayBody<B>> {
    let mut request = replay::to_inner(request);
    request.extensions_mut().insert(attempt.clone());
    request
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
            retry_after: None,
            hedge: false,
        }],
        "the layer does not watch this request",
    )
}
