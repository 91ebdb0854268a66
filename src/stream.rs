//! The watched stream: relay events, notice failures, fall back, splice.
//!
//! ```text
//! Streaming ──event──▶ relay ──▶ client
//!     │ failure (error frame, stall, in-band error, early end, malformed)
//!     ▼
//! (answer complete? close it locally) ── else planner ── give up: error event, end
//!     │ plan
//!     ▼
//! Calling (keep-alive comments while waiting) ── 2xx event stream ──▶ Streaming (spliced)
//!     │ anything else: another failure
//! Draining: after the terminal event, read the upstream to its end so its connection can be
//! reused, then end.
//! ```
//!
//! Dropping the body drops the upstream body and any call in flight: a client that goes away
//! cancels everything, and nothing is called after that.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::util::Oneshot;
use tower_service::Service;
use tracing::instrument::Instrumented;

use crate::dialect::{Relay, Step, StreamFailure};
use crate::error::BoxError;
use crate::error::FailureClass;
use crate::error::FallbackError;
use crate::outbox::Outbox;
use crate::recovery::Recovery;
use crate::replay::ReplayBody;
use crate::sse::{Fields, Framer};
use crate::strategy::Strategy;
use crate::untrusted::{escaped, Redactor};

/// Sent while waiting for a fallback (its headers, then its first event), so that clients and
/// outer timeouts do not give up.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    Calling,
    Draining,
    Ended,
}

pin_project! {
    #[project = WatchProj]
    pub(crate) struct Watch<S, P, ReqBody, ResBody>
    where
        S: Service<Request<ReplayBody<ReqBody>>>,
    {
        #[pin]
        upstream: Option<ResBody>,
        #[pin]
        call: Option<Instrumented<Oneshot<S, Request<ReplayBody<ReqBody>>>>>,
        #[pin]
        timer: Option<Sleep>,
        phase: Phase,
        framer: Framer,
        out: Outbox,
        relay: Box<dyn Relay>,
        recovery: Recovery<S, P>,
        strategy: Option<Strategy>,
        last_progress: Instant,
        keep_alive_at: Option<Instant>,
        // The waker the timer last registered, so that it is not polled again for nothing.
        timer_waker: Option<Waker>,
        error: Option<FallbackError>,
    }
}

impl<S, P, ReqBody, ResBody> Watch<S, P, ReqBody, ResBody>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: crate::plan::RetryPlanner,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    pub(crate) fn new(body: ResBody, recovery: Recovery<S, P>) -> Self {
        let config = &recovery.config;
        let relay = recovery.dialect().spec().relay(&config.limits());
        Watch {
            upstream: Some(body),
            call: None,
            timer: None,
            phase: Phase::Streaming,
            framer: Framer::new(config.max_event_bytes),
            out: Outbox::new(config.redactor.clone()),
            relay,
            strategy: None,
            last_progress: Instant::now(),
            keep_alive_at: None,
            timer_waker: None,
            error: None,
            recovery,
        }
    }

    pub(crate) fn fallback_error(&self) -> Option<&FallbackError> {
        self.error.as_ref()
    }

    pub(crate) fn provenance(&self) -> &crate::provenance::Provenance {
        self.recovery.provenance()
    }
}

/// What feeding events to the relay came to.
enum Fed {
    More,
    Done,
    Failed(StreamFailure),
}

impl<S, P, ReqBody, ResBody> Body for Watch<S, P, ReqBody, ResBody>
where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: crate::plan::RetryPlanner,
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
            match *this.phase {
                Phase::Ended => return Poll::Ready(None),
                Phase::Streaming | Phase::Draining => {
                    let upstream = this
                        .upstream
                        .as_mut()
                        .as_pin_mut()
                        .expect("an upstream body while streaming");
                    let polled = upstream.poll_frame(cx);
                    if *this.phase == Phase::Draining {
                        match polled {
                            Poll::Ready(Some(Ok(_))) => continue,
                            Poll::Ready(_) => {
                                this.upstream.set(None);
                                *this.phase = Phase::Ended;
                                continue;
                            }
                            Poll::Pending => {
                                if timer_fired(
                                    &mut this.timer,
                                    this.timer_waker,
                                    *this.last_progress,
                                    None,
                                    this.recovery,
                                    cx,
                                )
                                .is_some()
                                {
                                    this.upstream.set(None);
                                    *this.phase = Phase::Ended;
                                    continue;
                                }
                                return Poll::Pending;
                            }
                        }
                    }
                    let fed = match polled {
                        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => {
                                let fed = feed(
                                    this.framer,
                                    this.out,
                                    this.relay.as_mut(),
                                    this.last_progress,
                                    data,
                                );
                                // The continuation is flowing: no more keep-alives needed.
                                if !this.out.is_empty() {
                                    *this.keep_alive_at = None;
                                    this.recovery.chunk_sent();
                                }
                                fed
                            }
                            // SSE has no trailers worth relaying.
                            Err(_) => Fed::More,
                        },
                        Poll::Ready(Some(Err(err))) => {
                            let err: BoxError = err.into();
                            Fed::Failed(StreamFailure::new(
                                FailureClass::Transport,
                                describe(&*err),
                            ))
                        }
                        Poll::Ready(None) => {
                            end_of_body(this.framer, this.out, this.relay.as_mut())
                        }
                        Poll::Pending => match timer_fired(
                            &mut this.timer,
                            this.timer_waker,
                            *this.last_progress,
                            *this.keep_alive_at,
                            this.recovery,
                            cx,
                        ) {
                            None => return Poll::Pending,
                            // A fallback answered but has sent nothing yet: keep the client.
                            Some(Timer::KeepAlive) => {
                                keep_alive(this.out, this.keep_alive_at, this.recovery);
                                Fed::More
                            }
                            Some(Timer::Idle) => {
                                let idle = this.recovery.config.idle_timeout.unwrap_or_default();
                                Fed::Failed(StreamFailure::new(
                                    FailureClass::Stall,
                                    format!("no event for {}", human(idle)),
                                ))
                            }
                        },
                    };
                    match fed {
                        Fed::More => {}
                        Fed::Done => {
                            this.recovery.set_usage(this.relay.usage());
                            this.recovery.completed(this.relay.transcript());
                            *this.phase = Phase::Draining;
                        }
                        Fed::Failed(failure) => {
                            this.upstream.set(None);
                            fail(&mut this, failure);
                        }
                    }
                }
                Phase::Calling => {
                    let call = this
                        .call
                        .as_mut()
                        .as_pin_mut()
                        .expect("a call while calling");
                    match call.poll(cx) {
                        Poll::Ready(result) => {
                            this.call.set(None);
                            // Keep-alives go on until the new stream's first bytes go out.
                            match accept(result, this.recovery) {
                                Ok(body) => {
                                    this.upstream.set(Some(body));
                                    this.framer.reset();
                                    let strategy =
                                        this.strategy.take().expect("a strategy for the call");
                                    this.relay.splice(&strategy);
                                    *this.last_progress = Instant::now();
                                    *this.phase = Phase::Streaming;
                                }
                                Err(failure) => fail(&mut this, failure),
                            }
                        }
                        Poll::Pending => {
                            match timer_fired(
                                &mut this.timer,
                                this.timer_waker,
                                *this.last_progress,
                                *this.keep_alive_at,
                                this.recovery,
                                cx,
                            ) {
                                None => return Poll::Pending,
                                Some(Timer::KeepAlive) => {
                                    keep_alive(this.out, this.keep_alive_at, this.recovery)
                                }
                                Some(Timer::Idle) => {
                                    this.call.set(None);
                                    let idle =
                                        this.recovery.config.idle_timeout.unwrap_or_default();
                                    fail(
                                        &mut this,
                                        StreamFailure::new(
                                            FailureClass::Stall,
                                            format!(
                                                "the fallback sent nothing for {}",
                                                human(idle)
                                            ),
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.phase == Phase::Ended && self.out.is_empty()
    }
}

/// Sends a keep-alive comment and schedules the next one.
fn keep_alive<S, P>(out: &mut Outbox, at: &mut Option<Instant>, recovery: &Recovery<S, P>) {
    out.push(Bytes::from_static(KEEP_ALIVE));
    *at = recovery
        .config
        .keep_alive
        .map(|every| Instant::now() + every);
}

/// Cuts `data` into events and hands each to the relay.
fn feed(
    framer: &mut Framer,
    out: &mut Outbox,
    relay: &mut dyn Relay,
    last_progress: &mut Instant,
    data: Bytes,
) -> Fed {
    framer.push(data);
    let mut progressed = false;
    let fed = loop {
        let ev = match framer.next_event() {
            None => break Fed::More,
            Some(Err(over)) => {
                break Fed::Failed(StreamFailure::new(
                    FailureClass::Malformed,
                    format!("an event exceeds the limit of {} bytes", over.limit),
                ))
            }
            Some(Ok(ev)) => ev,
        };
        let fields = Fields::parse(ev.raw);
        if !fields.has_fields {
            // Comments and blank lines: keep-alives. They prove the connection, not progress.
            out.forward(&ev);
            continue;
        }
        progressed = true;
        match relay.on_event(&ev, &fields, out) {
            Step::Continue => {}
            Step::Done => break Fed::Done,
            Step::Fail(failure) => break Fed::Failed(failure),
        }
    };
    out.end_frame();
    if progressed {
        *last_progress = Instant::now();
    }
    fed
}

/// The upstream body ended: complete a last event missing only its blank line, then ask the
/// relay whether the stream was whole.
fn end_of_body(framer: &mut Framer, out: &mut Outbox, relay: &mut dyn Relay) -> Fed {
    if let Some(ev) = framer.finish() {
        let fields = Fields::parse(ev.raw);
        if fields.has_fields {
            match relay.on_event(&ev, &fields, out) {
                Step::Continue => {}
                Step::Done => return Fed::Done,
                Step::Fail(failure) => return Fed::Failed(failure),
            }
        } else {
            out.forward(&ev);
        }
    }
    match relay.on_end(out) {
        Step::Fail(failure) => Fed::Failed(failure),
        Step::Continue | Step::Done => Fed::Done,
    }
}

/// The attempt in flight failed: close the answer locally if it is complete, else plan the
/// next attempt, else give up with an error event.
fn fail<S, P, ReqBody, ResBody>(
    this: &mut WatchProj<'_, S, P, ReqBody, ResBody>,
    failure: StreamFailure,
) where
    S: Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    P: crate::plan::RetryPlanner,
{
    // While calling a fallback, the relay still holds the previous attempt's figures.
    if *this.phase == Phase::Streaming {
        this.recovery.set_usage(this.relay.usage());
    }
    let failure = redact_failure(failure, &this.recovery.config.redactor);
    this.relay.abandon();
    if this.relay.finish(this.out) {
        this.recovery
            .closed_locally(&failure, this.relay.transcript());
        *this.phase = Phase::Ended;
        return;
    }
    match this.recovery.on_failure(failure, this.relay.transcript()) {
        Ok((request, strategy)) => {
            this.call.set(Some(this.recovery.call(request)));
            *this.strategy = Some(strategy);
            let now = Instant::now();
            *this.last_progress = now;
            *this.keep_alive_at = this.recovery.config.keep_alive.map(|every| now + every);
            *this.phase = Phase::Calling;
        }
        Err(err) => {
            let (kind, message) = crate::recovery::client_error(&err);
            this.relay.give_up(&kind, &message, this.out);
            *this.error = Some(err);
            *this.phase = Phase::Ended;
        }
    }
}

/// Takes a fallback's response: its body if it is a successful event stream, else the failure
/// it amounts to.
fn accept<S, P, ResBody, E>(
    result: Result<Response<ResBody>, E>,
    recovery: &Recovery<S, P>,
) -> Result<ResBody, StreamFailure>
where
    E: Into<BoxError>,
{
    match result {
        Ok(response) => {
            let status = response.status();
            if !status.is_success() {
                let class = recovery.status_class(status);
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

pub(crate) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The response's content coding, unless it is plain (`identity` or none): encoded bytes are
/// not readable SSE.
pub(crate) fn content_coding(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_ENCODING)?;
    let text = value.to_str().unwrap_or("(not text)").trim();
    (!text.is_empty() && !text.eq_ignore_ascii_case("identity")).then_some(text)
}

enum Timer {
    Idle,
    KeepAlive,
}

/// Polls the one timer, armed for the earlier of the idle deadline and the next keep-alive.
/// It is reset only when it fires or must fire sooner, not on every event: progress only moves
/// the idle deadline later, which is checked when the timer fires.
fn timer_fired<S, P>(
    timer: &mut Pin<&mut Option<Sleep>>,
    registered: &mut Option<Waker>,
    last_progress: Instant,
    keep_alive_at: Option<Instant>,
    recovery: &Recovery<S, P>,
    cx: &mut Context<'_>,
) -> Option<Timer> {
    let idle_at = recovery
        .config
        .idle_timeout
        .map(|idle| last_progress + idle);
    let due = match (idle_at, keep_alive_at) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    loop {
        match timer.as_mut().as_pin_mut() {
            None => {
                timer.set(Some(tokio::time::sleep_until(due)));
                *registered = None;
            }
            Some(sleep) if sleep.deadline() > due => {
                sleep.reset(due);
                *registered = None;
            }
            Some(_) => {}
        }
        let sleep = timer.as_mut().as_pin_mut().expect("armed above");
        // Already waiting to wake this task: nothing to do until it fires.
        if !sleep.is_elapsed() && registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return None;
        }
        if sleep.poll(cx).is_pending() {
            *registered = Some(cx.waker().clone());
            return None;
        }
        *registered = None;
        let now = Instant::now();
        if idle_at.is_some_and(|at| now >= at) {
            return Some(Timer::Idle);
        }
        if keep_alive_at.is_some_and(|at| now >= at) {
            return Some(Timer::KeepAlive);
        }
        // Fired for an old deadline: re-arm for the current one.
        timer.as_mut().as_pin_mut().expect("armed above").reset(due);
    }
}

/// A failure with the secrets taken out of what the upstream said, before it is logged, kept
/// in the history or told to the client.
pub(crate) fn redact_failure(mut failure: StreamFailure, redactor: &Redactor) -> StreamFailure {
    if let Cow::Owned(detail) = redactor.redact(&failure.detail) {
        failure.detail = detail;
    }
    if let Some(t) = &failure.error_type {
        if let Cow::Owned(t) = redactor.redact(t) {
            failure.error_type = Some(t.into());
        }
    }
    failure
}

/// An error and its causes in one line, control characters escaped: its text may come from
/// the upstream.
pub(crate) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    escaped(&text)
}

pub(crate) fn human(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
