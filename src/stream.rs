//! The watched stream: relay events, notice failures, fall back, splice.
//!
//! ```text
//! Streaming ──event──▶ relay ──▶ client
//!     │ failure (error frame, stall, in-band error, early end, malformed)
//!     ▼
//! (answer complete? close it locally) ── else planner ── give up: error event, Ended
//!     │ plan
//!     ▼
//! Calling (keep-alives while waiting) ── 2xx event stream ──▶ Streaming (spliced)
//!     │ anything else: another failure
//!
//! Streaming ── terminal event ──▶ Draining: the upstream is read to its end so that its
//! connection can be reused ──▶ Ended
//!
//! Streaming ── hedge delay, no content yet ──▶ Racing: the stream goes on as before, and a
//! hedge (the rival) is called and read beside it, nothing of it relayed
//!     │ the stream sends content first (or the rival fails): the rival is dropped ──▶ Streaming
//!     │ the rival sends content first (or the stream fails): the stream is dropped, the rival
//!     ▼ spliced on as a restart, what it sent so far relayed
//! Streaming (or Calling, if its headers are not in yet)
//! ```
//!
//! Each state owns what it works on ([`State`]) and is handled by its own function; the
//! timing lives in a [`Clock`]. Dropping the body drops the upstream body and any call in
//! flight: a client that goes away cancels everything, and nothing is called after that.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::clock::{human, Clock, Due};
use crate::dialect::StreamFailure;
use crate::error::{BoxError, FailureClass, FallbackError};
use crate::outbox::Outbox;
use crate::plan::RetryPlanner;
use crate::recovery::{Call, Recovery};
use crate::relay::item::Carried;
use crate::relay::{Relay, Step};
use crate::replay::ReplayBody;
use crate::respond::{content_coding, is_event_stream};
use crate::sse::Framer;
use crate::strategy::Strategy;
use crate::untrusted::{describe, escaped};

pin_project! {
    /// The body of a watched event stream.
    pub(crate) struct Watch<S, P, ReqBody, ResBody>
    where
        S: Service<Request<ReplayBody<ReqBody>>>,
    {
        #[pin]
        state: State<Call<S, ReqBody>, ResBody>,
        #[pin]
        clock: Clock,
        framer: Framer,
        out: Outbox,
        relay: Relay,
        recovery: Recovery<S, P>,
        error: Option<FallbackError>,
    }
}

pin_project! {
    /// Where the watched body is, each state with what it works on.
    #[project = StateProj]
    #[project_ref = StateRef]
    #[project_replace = StateReplace]
    enum State<C, B> {
        // Relaying an attempt's stream. (Boxed so that it can move on to `Draining`.)
        Streaming { body: Pin<Box<B>> },
        // Relaying an attempt's stream that has sent no content yet, while a hedge races it.
        Racing { body: Pin<Box<B>>, rival: Rival<C, B> },
        // Calling a fallback, whose stream will continue the answer as `strategy` says.
        // (Boxed so that a race's rival can become it.)
        Calling { call: Pin<Box<C>>, strategy: Strategy },
        // The terminal event went out: reading the upstream to its end so that its connection
        // can be reused.
        Draining { body: Pin<Box<B>> },
        // Nothing more.
        Ended,
    }
}

/// The other attempt of a hedge race: nothing of it reaches the client until it has sent
/// content, and then it is spliced on as a restart.
enum Rival<C, B> {
    /// Its response headers are not in yet.
    Calling(Pin<Box<C>>),
    /// Its stream, read and kept until it sends content.
    Reading(Box<Unsent<B>>),
}

/// A racing stream that has sent no content yet: read, not relayed.
struct Unsent<B> {
    body: Pin<Box<B>>,
    framer: Framer,
    /// Reads its events only to tell when content comes; what it writes goes nowhere.
    relay: Relay,
    out: Outbox,
    /// What it sent, to relay if it wins; at most `limit` bytes.
    read: Vec<Bytes>,
    bytes: usize,
    limit: usize,
}

impl<B> Unsent<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn new<S, P>(body: B, recovery: &mut Recovery<S, P>) -> Self {
        let wire = recovery
            .rival_wire()
            .unwrap_or_else(|| recovery.attempt_wire());
        let config = &recovery.config;
        Unsent {
            body: Box::pin(body),
            framer: Framer::new(config.max_event_bytes),
            relay: Relay::new(
                recovery.dialect(),
                wire,
                config.limits(),
                recovery.request_body().clone(),
            ),
            out: Outbox::new(config.redactor.clone()),
            read: Vec::new(),
            bytes: 0,
            limit: config.max_held_bytes,
        }
    }

    /// Reads on until the stream sends content (or ends whole): ready with `Ok` then, with
    /// the failure if it fails first.
    fn poll_content(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamFailure>> {
        loop {
            let step = match std::task::ready!(self.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    self.bytes = self.bytes.saturating_add(data.len());
                    if self.bytes > self.limit {
                        return Poll::Ready(Err(StreamFailure::new(
                            FailureClass::Malformed,
                            format!(
                                "the hedge sent over {} bytes before any content",
                                self.limit
                            ),
                        )));
                    }
                    self.read.push(data.clone());
                    let (step, carried) =
                        feed(&mut self.framer, &mut self.out, &mut self.relay, data);
                    if carried == Carried::Content {
                        return Poll::Ready(Ok(()));
                    }
                    step
                }
                Some(Err(err)) => {
                    let err: BoxError = err.into();
                    Step::Fail(StreamFailure::new(FailureClass::Transport, describe(&*err)))
                }
                None => end_of_body(&mut self.framer, &mut self.out, &mut self.relay),
            };
            while self.out.pop().is_some() {}
            match step {
                Step::Continue(_) => {}
                Step::Done => return Poll::Ready(Ok(())),
                Step::Fail(failure) => return Poll::Ready(Err(failure)),
            }
        }
    }
}

/// What a state's step came to.
enum Next<B> {
    /// Go on (there may be bytes for the client).
    Stay,
    /// The upstream body is whole.
    Drain,
    /// The attempt in flight failed.
    Fail(StreamFailure),
    /// A fallback's stream is on its way.
    Stream(B),
    /// The attempt has sent no content within its hedge delay: time to race it.
    Hedge,
    /// The race is over and the stream goes on alone (its rival is dropped), with this step.
    Alone(Step),
    /// The race is over and the rival takes over (the stream is dropped).
    TakeOver,
    Ended,
}

impl<S, P, ReqBody, ResBody> Watch<S, P, ReqBody, ResBody>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: RetryPlanner,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    pub(crate) fn new(body: ResBody, mut recovery: Recovery<S, P>) -> Self {
        let first = recovery.attempt_wire();
        let config = &recovery.config;
        let (sent, timing) = recovery.deadlines();
        Watch {
            state: State::Streaming {
                body: Box::pin(body),
            },
            clock: Clock::new(sent, timing, config.keep_alive),
            framer: Framer::new(config.max_event_bytes),
            out: Outbox::new(config.redactor.clone()),
            relay: Relay::new(
                recovery.dialect(),
                first,
                config.limits(),
                recovery.request_body().clone(),
            ),
            error: None,
            recovery,
        }
    }

    /// A watched stream whose attempt races `rival`, a hedge (or the first attempt, whose
    /// headers are not in yet, when the hedge's came first).
    pub(crate) fn racing(
        body: ResBody,
        recovery: Recovery<S, P>,
        rival: Pin<Box<Call<S, ReqBody>>>,
    ) -> Self {
        let mut watch = Watch::new(body, recovery);
        if let State::Streaming { body } = std::mem::replace(&mut watch.state, State::Ended) {
            watch.state = State::Racing {
                body,
                rival: Rival::Calling(rival),
            };
        }
        watch
    }

    pub(crate) fn fallback_error(&self) -> Option<&FallbackError> {
        self.error.as_ref()
    }

    pub(crate) fn provenance(&self) -> &crate::provenance::Provenance {
        self.recovery.provenance()
    }
}

impl<S, P, ReqBody, ResBody> Body for Watch<S, P, ReqBody, ResBody>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: RetryPlanner,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if let Some(bytes) = this.out.pop() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            let next = match this.state.as_mut().project() {
                StateProj::Streaming { body } => std::task::ready!(streaming(
                    body.as_mut(),
                    this.clock.as_mut(),
                    this.framer,
                    this.out,
                    this.relay,
                    this.recovery,
                    cx
                )),
                StateProj::Racing { body, rival } => std::task::ready!(racing(
                    body.as_mut(),
                    rival,
                    this.clock.as_mut(),
                    this.framer,
                    this.out,
                    this.relay,
                    this.recovery,
                    cx
                )),
                StateProj::Calling { call, .. } => std::task::ready!(calling(
                    call.as_mut(),
                    this.clock.as_mut(),
                    this.out,
                    this.relay,
                    this.recovery,
                    cx
                )),
                StateProj::Draining { body } => {
                    std::task::ready!(draining(body.as_mut(), this.clock.as_mut(), cx))
                }
                StateProj::Ended => return Poll::Ready(None),
            };
            let mut next = Some(next);
            while let Some(step) = next.take() {
                match step {
                    Next::Stay => {}
                    Next::Hedge => {
                        this.clock.as_mut().no_hedge();
                        if let Some(call) = this.recovery.hedge() {
                            if let StateReplace::Streaming { body } =
                                this.state.as_mut().project_replace(State::Ended)
                            {
                                this.state.set(State::Racing {
                                    body,
                                    rival: Rival::Calling(Box::pin(call)),
                                });
                            }
                        }
                    }
                    Next::Alone(step) => {
                        if let StateReplace::Racing { body, .. } =
                            this.state.as_mut().project_replace(State::Ended)
                        {
                            this.state.set(State::Streaming { body });
                        }
                        next = Some(after(step));
                    }
                    Next::TakeOver => {
                        if let StateReplace::Racing { rival, .. } =
                            this.state.as_mut().project_replace(State::Ended)
                        {
                            // As after any failure before content: the new attempt restarts,
                            // spliced on whatever envelope the client already has.
                            this.relay.abandon();
                            let (sent, timing) = this.recovery.deadlines();
                            this.clock.as_mut().calling(sent, timing);
                            match rival {
                                Rival::Calling(call) => this.state.set(State::Calling {
                                    call,
                                    strategy: Strategy::Restart,
                                }),
                                Rival::Reading(unsent) => {
                                    this.framer.reset();
                                    this.relay
                                        .splice(&Strategy::Restart, this.recovery.attempt_wire());
                                    let Unsent { body, read, .. } = *unsent;
                                    this.state.set(State::Streaming { body });
                                    let mut step = Step::Continue(Carried::Nothing);
                                    for data in read {
                                        step = relay_data(
                                            data,
                                            this.clock.as_mut(),
                                            this.framer,
                                            this.out,
                                            this.relay,
                                            this.recovery,
                                        )
                                        .0;
                                        if !matches!(step, Step::Continue(_)) {
                                            break;
                                        }
                                    }
                                    next = Some(after(step));
                                }
                            }
                        }
                    }
                    Next::Drain => {
                        this.recovery.set_usage(this.relay.usage());
                        this.recovery.completed(this.relay.transcript());
                        this.clock.as_mut().flowing();
                        if let StateReplace::Streaming { body } =
                            this.state.as_mut().project_replace(State::Ended)
                        {
                            this.state.set(State::Draining { body });
                        }
                    }
                    Next::Stream(body) => {
                        if let StateReplace::Calling { strategy, .. } =
                            this.state.as_mut().project_replace(State::Ended)
                        {
                            this.framer.reset();
                            this.relay.splice(&strategy, this.recovery.attempt_wire());
                            this.state.set(State::Streaming {
                                body: Box::pin(body),
                            });
                        }
                    }
                    Next::Fail(failure) => {
                        let streaming = matches!(
                            this.state.as_ref().project_ref(),
                            StateRef::Streaming { .. }
                        );
                        let next = fail(
                            failure,
                            streaming,
                            this.clock.as_mut(),
                            this.out,
                            this.relay,
                            this.recovery,
                            this.error,
                        );
                        this.state.set(next);
                    }
                    Next::Ended => this.state.set(State::Ended),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Ended) && self.out.is_empty()
    }
}

/// Streaming: the upstream's next frame, cut into events and relayed; or a failure.
fn streaming<B, S, P>(
    body: Pin<&mut B>,
    mut clock: Pin<&mut Clock>,
    framer: &mut Framer,
    out: &mut Outbox,
    relay: &mut Relay,
    recovery: &mut Recovery<S, P>,
    cx: &mut Context<'_>,
) -> Poll<Next<B>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let step = match body.poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => {
            let Ok(data) = frame.into_data() else {
                // SSE has no trailers worth relaying.
                return Poll::Ready(Next::Stay);
            };
            relay_data(data, clock.as_mut(), framer, out, relay, recovery).0
        }
        Poll::Ready(Some(Err(err))) => {
            let err: BoxError = err.into();
            Step::Fail(StreamFailure::new(FailureClass::Transport, describe(&*err)))
        }
        Poll::Ready(None) => end_of_body(framer, out, relay),
        Poll::Pending => match std::task::ready!(clock.as_mut().poll_due(cx)) {
            // A fallback answered but has sent nothing yet: keep the client.
            Due::KeepAlive => {
                out.push(relay.keep_alive());
                clock.kept_alive();
                Step::Continue(Carried::Nothing)
            }
            Due::Hedge => return Poll::Ready(Next::Hedge),
            due @ (Due::FirstToken | Due::Idle) => {
                Step::Fail(StreamFailure::new(FailureClass::Stall, clock.stall(due)))
            }
        },
    };
    Poll::Ready(after(step))
}

/// What comes after the relay's `step`.
fn after<B>(step: Step) -> Next<B> {
    match step {
        Step::Continue(_) => Next::Stay,
        Step::Done => Next::Drain,
        Step::Fail(failure) => Next::Fail(failure),
    }
}

/// Relays `data`, a frame of the attempt in flight, to the client; says how far the upstream
/// got and what the frame carried.
fn relay_data<S, P>(
    data: Bytes,
    mut clock: Pin<&mut Clock>,
    framer: &mut Framer,
    out: &mut Outbox,
    relay: &mut Relay,
    recovery: &mut Recovery<S, P>,
) -> (Step, Carried) {
    let delivered = Delivered::of(relay.transcript());
    let (step, carried) = feed(framer, out, relay, data);
    if carried == Carried::Content {
        // Pings, comments and envelope events prove the connection, not progress.
        clock.as_mut().content();
    }
    if !out.is_empty() {
        // The continuation is flowing: no more keep-alives needed.
        clock.as_mut().flowing();
    }
    if Delivered::of(relay.transcript()) != delivered {
        // Part of the answer reached the client (not a comment or an envelope).
        recovery.chunk_sent();
    }
    (step, carried)
}

/// Racing: the attempt's stream relayed as in [`streaming`], its rival called and read beside
/// it, until one of them sends content (or fails); then [`Next::Alone`] or [`Next::TakeOver`],
/// the race's outcome recorded.
#[allow(clippy::too_many_arguments)]
fn racing<C, B, E, S, P>(
    body: Pin<&mut B>,
    rival: &mut Rival<C, B>,
    mut clock: Pin<&mut Clock>,
    framer: &mut Framer,
    out: &mut Outbox,
    relay: &mut Relay,
    recovery: &mut Recovery<S, P>,
    cx: &mut Context<'_>,
) -> Poll<Next<B>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    C: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    P: RetryPlanner,
{
    // The stream the client reads first: at a tie, it wins.
    let live = match body.poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) => Some(relay_data(
                data,
                clock.as_mut(),
                framer,
                out,
                relay,
                recovery,
            )),
            Err(_) => None,
        },
        Poll::Ready(Some(Err(err))) => {
            let err: BoxError = err.into();
            let failure = StreamFailure::new(FailureClass::Transport, describe(&*err));
            Some((Step::Fail(failure), Carried::Nothing))
        }
        Poll::Ready(None) => Some((end_of_body(framer, out, relay), Carried::Nothing)),
        Poll::Pending => None,
    };
    if let Some((step, carried)) = live {
        return Poll::Ready(match step {
            Step::Continue(_) if carried != Carried::Content => Next::Stay,
            Step::Fail(failure) if carried != Carried::Content => {
                recovery.set_usage(relay.usage());
                recovery.racer_failed(failure, false);
                Next::TakeOver
            }
            // Content, or a whole answer: the stream won.
            step => {
                recovery.race_won(false);
                Next::Alone(step)
            }
        });
    }
    match rival {
        Rival::Calling(call) => {
            if let Poll::Ready(result) = call.as_mut().poll(cx) {
                return Poll::Ready(match accept(result, recovery) {
                    Ok(body) => {
                        *rival = Rival::Reading(Box::new(Unsent::new(body, recovery)));
                        Next::Stay
                    }
                    Err(failure) => {
                        recovery.racer_failed(failure, true);
                        Next::Alone(Step::Continue(Carried::Nothing))
                    }
                });
            }
        }
        Rival::Reading(unsent) => {
            if let Poll::Ready(read) = unsent.poll_content(cx) {
                return Poll::Ready(match read {
                    Ok(()) => {
                        recovery.race_won(true);
                        Next::TakeOver
                    }
                    Err(failure) => {
                        recovery.racer_failed(failure, true);
                        Next::Alone(Step::Continue(Carried::Nothing))
                    }
                });
            }
        }
    }
    Poll::Ready(match std::task::ready!(clock.as_mut().poll_due(cx)) {
        Due::KeepAlive => {
            out.push(relay.keep_alive());
            clock.kept_alive();
            Next::Stay
        }
        Due::Hedge => {
            clock.no_hedge();
            Next::Stay
        }
        due @ (Due::FirstToken | Due::Idle) => {
            let failure = StreamFailure::new(FailureClass::Stall, clock.stall(due));
            recovery.racer_failed(failure, false);
            Next::TakeOver
        }
    })
}

/// Calling: the fallback's response, keep-alives while it is on its way.
fn calling<C, B, E, S, P>(
    call: Pin<&mut C>,
    mut clock: Pin<&mut Clock>,
    out: &mut Outbox,
    relay: &Relay,
    recovery: &Recovery<S, P>,
    cx: &mut Context<'_>,
) -> Poll<Next<B>>
where
    C: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    if let Poll::Ready(result) = call.poll(cx) {
        // Keep-alives go on until the new stream's first bytes go out.
        return Poll::Ready(match accept(result, recovery) {
            Ok(body) => Next::Stream(body),
            Err(failure) => Next::Fail(failure),
        });
    }
    Poll::Ready(match std::task::ready!(clock.as_mut().poll_due(cx)) {
        Due::KeepAlive => {
            out.push(relay.keep_alive());
            clock.kept_alive();
            Next::Stay
        }
        // No hedge for an attempt called after another failed while the client waits.
        Due::Hedge => {
            clock.no_hedge();
            Next::Stay
        }
        Due::FirstToken | Due::Idle => Next::Fail(StreamFailure::new(
            FailureClass::Stall,
            format!(
                "the fallback sent no response headers within the first-token deadline of {}",
                human(clock.timing().first_token.unwrap_or_default())
            ),
        )),
    })
}

/// Draining: the rest of a whole stream, read and dropped; ended at its end, on an error, or
/// when it idles.
fn draining<B>(body: Pin<&mut B>, clock: Pin<&mut Clock>, cx: &mut Context<'_>) -> Poll<Next<B>>
where
    B: Body,
{
    match body.poll_frame(cx) {
        Poll::Ready(Some(Ok(_))) => Poll::Ready(Next::Stay),
        Poll::Ready(_) => Poll::Ready(Next::Ended),
        Poll::Pending => clock.poll_due(cx).map(|_| Next::Ended),
    }
}

/// How much of the answer the client has: it grows only when part of the answer (text, a tool
/// call, reasoning) goes out, not with comments or envelope events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivered {
    tokens: u32,
    tool_calls: usize,
    thinking: bool,
}

impl Delivered {
    fn of(transcript: &crate::transcript::Transcript) -> Self {
        Delivered {
            tokens: transcript.kept_tokens(),
            tool_calls: transcript.tool_calls(),
            thinking: transcript.has_thinking(),
        }
    }
}

/// Cuts `data` into events and hands each to the relay; says how far the upstream got.
fn feed(framer: &mut Framer, out: &mut Outbox, relay: &mut Relay, data: Bytes) -> (Step, Carried) {
    framer.push(data);
    let mut carried = Carried::Nothing;
    let step = loop {
        let ev = match framer.next_event() {
            None => break Step::Continue(carried),
            Some(Err(over)) => {
                break Step::Fail(StreamFailure::new(
                    FailureClass::Malformed,
                    format!("an event exceeds the limit of {} bytes", over.limit),
                ))
            }
            Some(Ok(ev)) => ev,
        };
        match relay.on_event(&ev, out) {
            Step::Continue(c) => carried = carried.max(c),
            other => break other,
        }
    };
    out.end_frame();
    (step, carried)
}

/// The upstream body ended: complete a last event missing only its blank line, then ask the
/// relay whether the stream was whole.
fn end_of_body(framer: &mut Framer, out: &mut Outbox, relay: &mut Relay) -> Step {
    if let Some(ev) = framer.finish() {
        match relay.on_event(&ev, out) {
            Step::Continue(_) => {}
            other => return other,
        }
    }
    match relay.on_end() {
        Step::Continue(_) => Step::Done,
        other => other,
    }
}

/// The attempt in flight failed: close the answer locally if it is complete, else plan the
/// next attempt, else give up with an error event. `streaming`: it failed while its stream was
/// being relayed (not while it was being called).
fn fail<S, P, ReqBody, ResBody>(
    failure: StreamFailure,
    streaming: bool,
    mut clock: Pin<&mut Clock>,
    out: &mut Outbox,
    relay: &mut Relay,
    recovery: &mut Recovery<S, P>,
    error: &mut Option<FallbackError>,
) -> State<Call<S, ReqBody>, ResBody>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    P: RetryPlanner,
{
    // While calling a fallback, the relay still holds the previous attempt's figures.
    if streaming {
        recovery.set_usage(relay.usage());
    }
    let failure = failure.redacted(&recovery.config.redactor);
    relay.abandon();
    if relay.close(out) {
        recovery.closed_locally(&failure, relay.transcript());
        return State::Ended;
    }
    match recovery.on_failure(failure, relay.transcript()) {
        Ok((request, strategy)) => {
            let call = recovery.call(request);
            let (sent, timing) = recovery.deadlines();
            clock.as_mut().calling(sent, timing);
            State::Calling {
                call: Box::pin(call),
                strategy,
            }
        }
        Err(err) => {
            let (kind, message) = crate::recovery::client_error(&err);
            relay.give_up(&kind, &message, out);
            *error = Some(err);
            State::Ended
        }
    }
}

/// Takes a fallback's response: its body if it is a successful event stream, else the failure
/// it amounts to.
fn accept<S, P, B, E>(
    result: Result<Response<B>, E>,
    recovery: &Recovery<S, P>,
) -> Result<B, StreamFailure>
where
    E: Into<BoxError>,
{
    match result {
        Ok(response) => {
            let status = response.status();
            if !status.is_success() {
                let class = recovery.status_class(status, &[]);
                return Err(StreamFailure::new(
                    class,
                    format!("the fallback answered HTTP {}", status.as_u16()),
                ));
            }
            if !is_event_stream(response.headers()) {
                return Err(StreamFailure::new(
                    FailureClass::Malformed,
                    "the fallback did not answer with an event stream",
                ));
            }
            if let Some(coding) = content_coding(response.headers()) {
                return Err(StreamFailure::new(
                    FailureClass::Malformed,
                    format!(
                        "the fallback's event stream is encoded (content-encoding: {}): not readable here",
                        escaped(coding)
                    ),
                ));
            }
            Ok(response.into_body())
        }
        Err(err) => {
            let err: BoxError = err.into();
            Err(StreamFailure::new(FailureClass::Connect, describe(&*err)))
        }
    }
}
