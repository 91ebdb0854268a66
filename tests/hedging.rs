//! Hedging the first token (issue 11, item 3): a scripted upstream on paused time, whose every
//! call records when it came, whether it was a hedge, and when its connection closed (its
//! response future or its body dropped).

mod support;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::*;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_midstream::{
    Attempt, Breaker, FailureClass, FallbackChain, FallbackError, MidStreamFallbackLayer, Prefill,
    ReplayBody,
};

const ANSWER: [&str; 3] = ["Hello", ", ", "world!"];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// How the upstream answers one call.
#[derive(Clone)]
struct Reply {
    /// When its response headers come; `None`: never.
    headers_after: Option<Duration>,
    status: u16,
    /// Each event after its wait, then the end (or nothing more, ever).
    steps: Vec<(Duration, Bytes)>,
    hang: bool,
}

impl Reply {
    /// The whole answer, its envelope at once and its first content after `wait` (the rest
    /// right after).
    fn content_after(dialect: Dialect, wait: Duration) -> Reply {
        let (stream, envelope) = match dialect {
            // message_start, content_block_start
            Dialect::Anthropic => (anthropic_text_stream(&ANSWER), 2),
            // the chunk with the role
            Dialect::OpenAi => (openai_text_stream(&ANSWER), 1),
            // Two dialects suffice here (Gemini names its model in the path).
            Dialect::Gemini | Dialect::Responses => {
                unreachable!("these scripts speak Anthropic and Chat")
            }
        };
        let steps = events_of(&stream)
            .into_iter()
            .enumerate()
            .map(|(n, ev)| (if n == envelope { wait } else { Duration::ZERO }, ev))
            .collect();
        Reply {
            headers_after: Some(Duration::ZERO),
            status: 200,
            steps,
            hang: false,
        }
    }

    /// The whole answer at once.
    fn whole(dialect: Dialect) -> Reply {
        Reply::content_after(dialect, Duration::ZERO)
    }

    /// The envelope and the first delta of the answer, then the end of the body.
    fn cut_after_first_delta(dialect: Dialect) -> Reply {
        let mut reply = Reply::whole(dialect);
        let keep = match dialect {
            Dialect::Anthropic => 3,
            Dialect::OpenAi => 2,
            // Two dialects suffice here (Gemini names its model in the path).
            Dialect::Gemini | Dialect::Responses => {
                unreachable!("these scripts speak Anthropic and Chat")
            }
        };
        reply.steps.truncate(keep);
        reply
    }

    /// Its envelope, then nothing, ever.
    fn envelope_then_silence(dialect: Dialect) -> Reply {
        let mut reply = Reply::content_after(dialect, Duration::ZERO);
        let keep = match dialect {
            Dialect::Anthropic => 2,
            Dialect::OpenAi => 1,
            // Two dialects suffice here (Gemini names its model in the path).
            Dialect::Gemini | Dialect::Responses => {
                unreachable!("these scripts speak Anthropic and Chat")
            }
        };
        reply.steps.truncate(keep);
        reply.hang = true;
        reply
    }

    fn status(status: u16) -> Reply {
        Reply {
            headers_after: Some(Duration::ZERO),
            status,
            steps: vec![(
                Duration::ZERO,
                Bytes::from_static(
                    br#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#,
                ),
            )],
            hang: false,
        }
    }

    fn no_headers() -> Reply {
        Reply {
            headers_after: None,
            status: 200,
            steps: Vec::new(),
            hang: true,
        }
    }

    fn headers_after(mut self, wait: Duration) -> Reply {
        self.headers_after = Some(wait);
        self
    }

    /// Its last event comes `wait` after the one before: the answer is still being read then.
    fn ending_after(mut self, wait: Duration) -> Reply {
        if let Some(last) = self.steps.last_mut() {
            last.0 = wait;
        }
        self
    }
}

/// One call the upstream got.
#[derive(Debug, Clone)]
struct Call {
    model: String,
    at: Instant,
    hedge: bool,
    closed: Arc<Mutex<Option<Instant>>>,
}

impl Call {
    /// When its connection closed, from `start`.
    fn closed_at(&self, start: Instant) -> Option<Duration> {
        self.closed.lock().unwrap().map(|at| at - start)
    }
}

/// Notes when its call's connection closed: when it is dropped, with the pending response
/// future or with the body.
struct Connection(Arc<Mutex<Option<Instant>>>);

impl Drop for Connection {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

/// An upstream answering each model from its script, then with the whole answer.
#[derive(Clone)]
struct Scripted {
    dialect: Dialect,
    script: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Scripted {
    fn new(dialect: Dialect) -> Self {
        Scripted {
            dialect,
            script: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn then(self, model: &str, reply: Reply) -> Self {
        self.script
            .lock()
            .unwrap()
            .entry(model.to_owned())
            .or_default()
            .push_back(reply);
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn models(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.model).collect()
    }

    fn times(&self, start: Instant) -> Vec<Duration> {
        self.calls().into_iter().map(|c| c.at - start).collect()
    }

    fn hedges(&self) -> Vec<bool> {
        self.calls().into_iter().map(|c| c.hedge).collect()
    }

    async fn reply(self, req: Request<ReplayBody<Full<Bytes>>>) -> Response<StepBody> {
        let hedge = req.extensions().get::<Attempt>().unwrap().is_hedge();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let model = v["model"].as_str().unwrap().to_owned();
        let closed = Arc::new(Mutex::new(None));
        let connection = Connection(closed.clone());
        self.calls.lock().unwrap().push(Call {
            model: model.clone(),
            at: Instant::now(),
            hedge,
            closed,
        });
        let reply = self
            .script
            .lock()
            .unwrap()
            .get_mut(&model)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| Reply::whole(self.dialect));
        match reply.headers_after {
            Some(wait) => tokio::time::sleep(wait).await,
            None => std::future::pending().await,
        }
        let content_type = if reply.status == 200 {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut response = Response::new(StepBody {
            steps: reply.steps.into(),
            hang: reply.hang,
            sleep: None,
            _connection: connection,
        });
        *response.status_mut() = http::StatusCode::from_u16(reply.status).unwrap();
        response
            .headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        response
    }
}

/// A body that sends each step after its wait.
struct StepBody {
    steps: VecDeque<(Duration, Bytes)>,
    hang: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    _connection: Connection,
}

impl Body for StepBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some((wait, _)) = self.steps.front() else {
            return if self.hang {
                Poll::Pending
            } else {
                Poll::Ready(None)
            };
        };
        let wait = *wait;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        let (_, bytes) = self.steps.pop_front().expect("looked at above");
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

/// What the client got.
struct Got {
    bytes: Bytes,
    error: Option<FallbackError>,
}

impl Got {
    /// The answer's text, once the stream passed the dialect's checks (one envelope, seams).
    fn text(&self, dialect: Dialect) -> String {
        let usage = dialect == Dialect::OpenAi;
        check(dialect, usage, &self.bytes)
            .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&self.bytes)))
            .text
    }
}

/// One request for `primary`, in `upstream`'s dialect, through `layer`.
async fn send(layer: MidStreamFallbackLayer<FallbackChain>, upstream: &Scripted) -> Got {
    let inner = upstream.clone();
    let svc = layer.layer(tower::service_fn(
        move |req: Request<ReplayBody<Full<Bytes>>>| {
            let inner = inner.clone();
            async move { Ok::<_, std::convert::Infallible>(inner.reply(req).await) }
        },
    ));
    let body = match upstream.dialect {
        Dialect::Anthropic => anthropic_request(),
        Dialect::OpenAi => openai_request(),
        // Two dialects suffice here (Gemini names its model in the path).
        Dialect::Gemini | Dialect::Responses => {
            unreachable!("these scripts speak Anthropic and Chat")
        }
    };
    let req = Request::post(path(upstream.dialect))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Got {
        bytes: Bytes::from(bytes),
        error: body.fallback_error().cloned(),
    }
}

fn chain(fallbacks: &[&str]) -> FallbackChain {
    let mut chain = FallbackChain::new().fallbacks("primary", fallbacks.iter().copied());
    for name in fallbacks {
        chain = chain.model(*name, Prefill::Assistant);
    }
    chain
}

fn hedged(chain: FallbackChain) -> MidStreamFallbackLayer<FallbackChain> {
    MidStreamFallbackLayer::new(chain)
        .hedge_after(secs(2))
        .first_token_timeout(secs(60))
        .keep_alive(None)
}

// ---- the race ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn hedging_picks_the_faster_target_and_cancels_the_slower() {
    let start = Instant::now();
    // The primary's headers and envelope come at once, its first token only after 30 s; the
    // hedge's answer starts at once and ends 5 s later.
    let upstream = Scripted::new(Dialect::Anthropic)
        .then(
            "primary",
            Reply::content_after(Dialect::Anthropic, secs(30)),
        )
        .then(
            "fallback",
            Reply::whole(Dialect::Anthropic).ending_after(secs(5)),
        );
    let got = send(hedged(chain(&["fallback"])), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback"]);
    assert_eq!(
        upstream.times(start),
        [secs(0), secs(2)],
        "hedged after 2 s"
    );
    assert_eq!(
        upstream.hedges(),
        [false, true],
        "the hedge's request says so"
    );
    assert_eq!(
        upstream.calls()[0].closed_at(start),
        Some(secs(2)),
        "the slower connection was dropped as soon as the hedge sent content"
    );
    assert_eq!(Instant::now() - start, secs(7), "the hedge's answer, whole");
    assert!(got.error.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_chat_stream_is_hedged_and_spliced_on_the_envelope_the_client_already_has() {
    let start = Instant::now();
    let upstream = Scripted::new(Dialect::OpenAi)
        .then("primary", Reply::content_after(Dialect::OpenAi, secs(30)))
        .then(
            "fallback",
            Reply::whole(Dialect::OpenAi).ending_after(secs(5)),
        );
    let got = send(hedged(chain(&["fallback"])), &upstream).await;
    // The checker refuses a second role chunk or a second id: one stream, spliced.
    assert_eq!(got.text(Dialect::OpenAi), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback"]);
    assert_eq!(upstream.hedges(), [false, true]);
    assert_eq!(upstream.calls()[0].closed_at(start), Some(secs(2)));
}

#[tokio::test(start_paused = true)]
async fn the_first_attempt_winning_after_the_hedge_started_cancels_the_hedge() {
    let start = Instant::now();
    let upstream = Scripted::new(Dialect::Anthropic)
        .then(
            "primary",
            Reply::content_after(Dialect::Anthropic, secs(5)).ending_after(secs(5)),
        )
        .then(
            "fallback",
            Reply::content_after(Dialect::Anthropic, secs(10)),
        );
    let got = send(hedged(chain(&["fallback"])), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.times(start), [secs(0), secs(2)]);
    assert_eq!(
        upstream.calls()[1].closed_at(start),
        Some(secs(5)),
        "the hedge's connection was dropped when the first attempt sent content"
    );
    assert_eq!(
        Instant::now() - start,
        secs(10),
        "answered by the first attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_without_headers_is_hedged_and_its_pending_call_dropped() {
    let start = Instant::now();
    let upstream = Scripted::new(Dialect::Anthropic)
        .then("primary", Reply::no_headers())
        .then(
            "fallback",
            Reply::whole(Dialect::Anthropic).ending_after(secs(5)),
        );
    let got = send(hedged(chain(&["fallback"])), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback"]);
    assert_eq!(
        upstream.calls()[0].closed_at(start),
        Some(secs(2)),
        "the call in flight was dropped when the hedge sent content"
    );
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_whose_headers_come_after_the_hedges_can_still_win_and_is_spliced_on() {
    let start = Instant::now();
    // The hedge's headers and envelope reach the client first; the primary's first token
    // (at 3 s) comes before the hedge's (at 12 s).
    let upstream = Scripted::new(Dialect::Anthropic)
        .then(
            "primary",
            Reply::whole(Dialect::Anthropic)
                .headers_after(secs(3))
                .ending_after(secs(5)),
        )
        .then(
            "fallback",
            Reply::content_after(Dialect::Anthropic, secs(10)),
        );
    let got = send(hedged(chain(&["fallback"])), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(
        got.bytes
            .windows(b"message_start".len())
            .filter(|w| w == b"message_start")
            .count(),
        2,
        "one message_start event (its name and its type): the winner's is not sent again"
    );
    assert_eq!(
        upstream.calls()[1].closed_at(start),
        Some(secs(3)),
        "the hedge was dropped"
    );
    assert_eq!(Instant::now() - start, secs(8));
}

// ---- when there is no hedge ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn there_is_no_hedge_when_hedging_is_off_which_is_the_default() {
    let upstream = Scripted::new(Dialect::Anthropic).then(
        "primary",
        Reply::content_after(Dialect::Anthropic, secs(30)),
    );
    let layer = MidStreamFallbackLayer::new(chain(&["fallback"])).keep_alive(None);
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary"]);
}

#[tokio::test(start_paused = true)]
async fn there_is_no_hedge_once_content_reached_the_client() {
    // The first token at once, then 10 s to the next: slow, but started.
    let mut slow = Reply::whole(Dialect::Anthropic);
    slow.steps[3].0 = secs(10);
    let upstream = Scripted::new(Dialect::Anthropic).then("primary", slow);
    let got = send(hedged(chain(&["fallback"])), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary"]);
}

#[tokio::test(start_paused = true)]
async fn there_is_at_most_one_hedge_per_request() {
    let start = Instant::now();
    // Both slow to start: a second hedge would be due 2 s after the first.
    let upstream = Scripted::new(Dialect::Anthropic)
        .then(
            "primary",
            Reply::content_after(Dialect::Anthropic, secs(20)).ending_after(secs(5)),
        )
        .then("second", Reply::content_after(Dialect::Anthropic, secs(20)));
    let got = send(
        hedged(chain(&["second", "third"])).max_attempts(5),
        &upstream,
    )
    .await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "second"]);
    assert_eq!(Instant::now() - start, secs(25), "the first attempt won");
    assert_eq!(upstream.calls()[1].closed_at(start), Some(secs(20)));
}

#[tokio::test(start_paused = true)]
async fn there_is_no_hedge_when_no_attempt_is_left() {
    let upstream = Scripted::new(Dialect::Anthropic).then(
        "primary",
        Reply::content_after(Dialect::Anthropic, secs(20)),
    );
    let got = send(hedged(chain(&["fallback"])).max_attempts(1), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary"]);
}

// ---- failures while racing ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_hedge_that_fails_leaves_the_first_attempt_to_go_on() {
    let start = Instant::now();
    let upstream = Scripted::new(Dialect::Anthropic)
        .then("primary", Reply::content_after(Dialect::Anthropic, secs(8)))
        .then("second", Reply::status(500));
    let got = send(hedged(chain(&["second", "third"])), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(
        upstream.models(),
        ["primary", "second"],
        "no new plan: the first attempt races on"
    );
    assert_eq!(Instant::now() - start, secs(8));
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_that_fails_while_racing_leaves_the_hedge_to_go_on() {
    let start = Instant::now();
    // The primary's stream breaks at 3 s, before any content; the hedge's first token is at
    // 2 + 4 s.
    let mut breaks = Reply::envelope_then_silence(Dialect::Anthropic);
    breaks.hang = false;
    breaks.steps.push((secs(3), Bytes::from_static(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")));
    let upstream = Scripted::new(Dialect::Anthropic)
        .then("primary", breaks)
        .then("second", Reply::content_after(Dialect::Anthropic, secs(4)));
    let got = send(hedged(chain(&["second", "third"])), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "second"]);
    assert_eq!(Instant::now() - start, secs(6));
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_without_headers_that_fails_leaves_the_hedge_to_go_on() {
    let upstream = Scripted::new(Dialect::Anthropic)
        .then("primary", Reply::status(503).headers_after(secs(3)))
        .then("second", Reply::content_after(Dialect::Anthropic, secs(4)));
    let got = send(hedged(chain(&["second", "third"])), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "second"]);
}

// ---- what the race leaves behind ---------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_history_names_the_hedge_and_the_cancelled_loser() {
    // The hedge wins, then breaks after its first token, with no attempt left.
    let upstream = Scripted::new(Dialect::Anthropic)
        .then(
            "primary",
            Reply::content_after(Dialect::Anthropic, secs(30)),
        )
        .then("fallback", Reply::cut_after_first_delta(Dialect::Anthropic));
    let got = send(hedged(chain(&["fallback"])).max_attempts(2), &upstream).await;
    let err = got.error.expect("gave up");
    let attempts: Vec<_> = err
        .attempts()
        .iter()
        .map(|a| {
            (
                a.attempt(),
                a.target().unwrap().to_owned(),
                a.class(),
                a.is_hedge(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (1, "primary".to_owned(), FailureClass::LostRace, false),
            (2, "fallback".to_owned(), FailureClass::Truncated, true),
        ]
    );
    assert_eq!(
        err.original().attempt(),
        2,
        "the client hears of the failure, not of the cancelled loser"
    );
    assert!(
        err.to_string().contains(
            "then attempt 1 (primary): cancelled: lost the race: attempt 2 sent content first"
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_loser_is_no_failure_for_its_circuit() {
    // A circuit that opens at the first failure: had the loser counted as one, the second
    // request's first attempt would skip the primary.
    let layer = MidStreamFallbackLayer::new(
        chain(&["fallback"]).circuit_breaker(Breaker::new(1, secs(600))),
    )
    .hedge_after(secs(2))
    .keep_alive(None);
    let upstream = Scripted::new(Dialect::Anthropic).then(
        "primary",
        Reply::content_after(Dialect::Anthropic, secs(30)),
    );
    let got = send(layer.clone(), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback"]);
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback", "primary"]);
}

#[tokio::test(start_paused = true)]
async fn the_trace_says_that_a_hedge_started_and_which_attempt_won() {
    // Global, as tracing caches per call site whether anyone listens: a subscriber of this
    // test's thread alone would race the other tests'. Their lines are in it too: this test's
    // hedge goes to a target no other test has.
    let logs = support::global_logs::install(tracing::Level::INFO);
    let upstream = Scripted::new(Dialect::Anthropic).then(
        "primary",
        Reply::content_after(Dialect::Anthropic, secs(30)),
    );
    let got = send(hedged(chain(&["traced"])), &upstream).await;
    assert_eq!(got.text(Dialect::Anthropic), ANSWER.concat());
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line = |message: &str| {
        logs.lines()
            .find(|l| l.contains(message) && l.contains(r#"gen_ai.request.model="traced""#))
            .unwrap_or_else(|| panic!("no `{message}` line in the hedge's span:\n{logs}"))
            .to_owned()
    };
    let started = line("hedge started");
    assert!(started.contains(r#"midstream.rule="hedge""#), "{started}");
    assert!(started.contains("midstream.racing=1"), "{started}");
    assert!(started.contains("midstream.hedge=true"), "{started}");
    let won = line("hedge race won");
    assert!(
        won.contains("midstream.winner=2 midstream.winner_is_hedge=true midstream.loser=1"),
        "{won}"
    );
}
