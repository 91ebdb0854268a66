//! The attempt policy (issue 11): deadlines that measure progress, retries on the same
//! target, context-window fallback, circuit breaking. A scripted upstream on paused time: every
//! wait is exact, and nothing sleeps for real.

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
    AttemptReport, Backoff, Breaker, FallbackChain, FallbackError, MidStreamFallbackLayer,
    Observer, Prefill, ReplayBody, RequestReport, RetryBudget, Target,
};

const ANSWER: [&str; 3] = ["Hello", ", ", "world!"];
const OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;

/// How the upstream answers one call.
#[derive(Clone)]
enum Reply {
    /// A response that is no stream.
    Status {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &'static str,
    },
    /// An event stream: each step after its wait, then the end (or nothing more, ever).
    Stream {
        steps: Vec<(Duration, Bytes)>,
        hang: bool,
    },
    /// No response headers, ever.
    NoHeaders,
}

impl Reply {
    /// The whole answer at once.
    fn answer() -> Reply {
        Reply::Stream {
            steps: vec![(Duration::ZERO, anthropic_text_stream(&ANSWER))],
            hang: false,
        }
    }

    fn status(status: u16, body: &'static str) -> Reply {
        Reply::Status {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        if let Reply::Status { headers, .. } = &mut self {
            headers.push((name, value.to_owned()));
        }
        self
    }
}

/// One call the upstream got: the model, when, and whether its body was dropped (for a
/// stream: its connection closed).
#[derive(Debug, Clone)]
struct Call {
    model: String,
    at: Instant,
    closed: Arc<Mutex<bool>>,
}

/// An upstream answering each model from its script, then with the whole answer.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Scripted {
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

    /// The time of each call, from `start`.
    fn times(&self, start: Instant) -> Vec<Duration> {
        self.calls().into_iter().map(|c| c.at - start).collect()
    }

    async fn reply(self, req: Request<ReplayBody<Full<Bytes>>>) -> Response<StepBody> {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let model = v["model"].as_str().unwrap().to_owned();
        let closed = Arc::new(Mutex::new(false));
        self.calls.lock().unwrap().push(Call {
            model: model.clone(),
            at: Instant::now(),
            closed: closed.clone(),
        });
        let reply = self
            .script
            .lock()
            .unwrap()
            .get_mut(&model)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(Reply::answer);
        let (status, headers, steps, hang) = match reply {
            Reply::Status {
                status,
                headers,
                body,
            } => {
                let mut headers = headers;
                headers.push(("content-type", "application/json".into()));
                let steps = vec![(Duration::ZERO, Bytes::from_static(body.as_bytes()))];
                (status, headers, steps, false)
            }
            Reply::Stream { steps, hang } => (
                200,
                vec![("content-type", "text/event-stream".into())],
                steps,
                hang,
            ),
            Reply::NoHeaders => std::future::pending().await,
        };
        let mut response = Response::new(StepBody {
            steps: steps.into(),
            hang,
            sleep: None,
            closed,
        });
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        response
    }
}

/// A body that sends each step after its wait, and notes when it is dropped.
struct StepBody {
    steps: VecDeque<(Duration, Bytes)>,
    hang: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    closed: Arc<Mutex<bool>>,
}

impl Drop for StepBody {
    fn drop(&mut self) {
        *self.closed.lock().unwrap() = true;
    }
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
    status: u16,
    bytes: Bytes,
    error: Option<FallbackError>,
}

impl Got {
    fn text(&self) -> String {
        check(Dialect::Anthropic, false, &self.bytes)
            .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&self.bytes)))
            .text
    }
}

/// One request for `primary` through `layer` over `upstream`.
async fn send(layer: MidStreamFallbackLayer<FallbackChain>, upstream: &Scripted) -> Got {
    let inner = upstream.clone();
    let svc = layer.layer(tower::service_fn(
        move |req: Request<ReplayBody<Full<Bytes>>>| {
            let inner = inner.clone();
            async move { Ok::<_, std::convert::Infallible>(inner.reply(req).await) }
        },
    ));
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let response = svc.oneshot(req).await.unwrap();
    let status = response.status().as_u16();
    let error = response.extensions().get::<FallbackError>().cloned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        bytes,
        error,
    }
}

fn to_fallback() -> FallbackChain {
    FallbackChain::new()
        .model("fallback", Prefill::Assistant)
        .fallbacks("primary", ["fallback"])
}

/// Every report, in the order the layer made them.
#[derive(Default)]
struct Recorded {
    attempts: Mutex<Vec<AttemptReport>>,
    requests: Mutex<Vec<RequestReport>>,
}

impl Observer for Recorded {
    fn attempt_ended(&self, attempt: &AttemptReport) {
        self.attempts.lock().unwrap().push(attempt.clone());
    }

    fn request_ended(&self, request: &RequestReport) {
        self.requests.lock().unwrap().push(request.clone());
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The events of the whole answer, one step each, `every` apart (the first at once).
fn answer_every(every: Duration) -> Vec<(Duration, Bytes)> {
    events_of(&anthropic_text_stream(&ANSWER))
        .into_iter()
        .enumerate()
        .map(|(n, ev)| (if n == 0 { Duration::ZERO } else { every }, ev))
        .collect()
}

// ---- deadlines that measure progress ----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_fails_over_after_the_first_token_deadline_not_the_idle_timeout() {
    let start = Instant::now();
    // Headers, the message's start (an envelope, no content), then nothing.
    let silent = Reply::Stream {
        steps: answer_every(Duration::ZERO).into_iter().take(2).collect(),
        hang: true,
    };
    let upstream = Scripted::default().then("primary", silent);
    let layer = MidStreamFallbackLayer::new(to_fallback())
        .first_token_timeout(secs(8))
        .idle_timeout(secs(120))
        .keep_alive(None);
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback"]);
    assert_eq!(upstream.times(start), [secs(0), secs(8)]);
    assert!(
        *upstream.calls()[0].closed.lock().unwrap(),
        "the silent stream was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_token_within_its_deadline_is_waited_for_and_the_idle_timeout_runs_after_it() {
    // 20 s to the first token, then 5 s between tokens: the idle timeout of 10 s would have
    // cut the first wait, the first-token deadline of 30 s does not.
    let slow = Reply::Stream {
        steps: events_of(&anthropic_text_stream(&ANSWER))
            .into_iter()
            .enumerate()
            .map(|(n, ev)| {
                let wait = match n {
                    0 | 1 => Duration::ZERO,
                    2 => secs(20),
                    _ => secs(5),
                };
                (wait, ev)
            })
            .collect(),
        hang: false,
    };
    let upstream = Scripted::default().then("primary", slow);
    let layer = MidStreamFallbackLayer::new(to_fallback())
        .first_token_timeout(secs(30))
        .idle_timeout(secs(10));
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary"], "no fallback was needed");
}

#[tokio::test(start_paused = true)]
async fn the_fallback_gap_is_measured_to_the_first_content_not_to_an_upstream_comment() {
    // The primary answers 503; the fallback sends a processing comment at once and its
    // answer 5 s later.
    let primary = Reply::status(503, OVERLOADED);
    let mut steps = vec![(
        Duration::ZERO,
        Bytes::from_static(b": OPENROUTER PROCESSING\n\n"),
    )];
    steps.extend(answer_every(Duration::ZERO));
    steps[1].0 = secs(5);
    let fallback = Reply::Stream { steps, hang: false };
    let upstream = Scripted::default()
        .then("primary", primary)
        .then("fallback", fallback);
    let recorded = Arc::new(Recorded::default());
    let layer = MidStreamFallbackLayer::new(to_fallback())
        .idle_timeout(secs(10))
        .keep_alive(None)
        .observer(recorded.clone());
    let got = send(layer, &upstream).await;
    assert_eq!(got.status, 200);
    let attempts = recorded.attempts.lock().unwrap().clone();
    let [_, fallback] = &attempts[..] else {
        panic!("two attempts, got {attempts:?}")
    };
    assert_eq!(fallback.fallback_gap(), Some(secs(5)));
    assert_eq!(fallback.time_to_first_chunk(), Some(secs(5)));
}

#[tokio::test(start_paused = true)]
async fn a_targets_own_first_token_deadline_replaces_the_layers() {
    let start = Instant::now();
    let upstream = Scripted::default()
        .then("primary", Reply::NoHeaders)
        .then("fallback", Reply::NoHeaders);
    let chain = FallbackChain::new()
        .target(Target::new("fallback").first_token_timeout(secs(3)))
        .fallbacks("primary", ["fallback", "fallback-2"]);
    let layer = MidStreamFallbackLayer::new(chain).first_token_timeout(secs(8));
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback", "fallback-2"]);
    assert_eq!(upstream.times(start), [secs(0), secs(8), secs(11)]);
    let history = got.error.map(|e| e.attempts().len());
    assert_eq!(history, None, "the answer came: no error");
}

#[tokio::test(start_paused = true)]
async fn a_targets_own_first_token_deadline_bounds_the_first_attempt_too() {
    let start = Instant::now();
    let upstream = Scripted::default().then("primary", Reply::NoHeaders);
    let chain = to_fallback().target(Target::new("primary").first_token_timeout(secs(3)));
    let layer = MidStreamFallbackLayer::new(chain).first_token_timeout(secs(8));
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback"]);
    assert_eq!(upstream.times(start), [secs(0), secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn a_targets_own_idle_timeout_replaces_the_layers() {
    let start = Instant::now();
    // "Hello" reaches the client, then nothing; the fallback continues the answer.
    let primary = Reply::Stream {
        steps: answer_every(Duration::ZERO).into_iter().take(3).collect(),
        hang: true,
    };
    let rest = Reply::Stream {
        steps: vec![(Duration::ZERO, anthropic_text_stream(&ANSWER[1..]))],
        hang: false,
    };
    let upstream = Scripted::default()
        .then("primary", primary)
        .then("fallback", rest);
    let chain = to_fallback().target(Target::new("primary").idle_timeout(secs(2)));
    let layer = MidStreamFallbackLayer::new(chain)
        .idle_timeout(secs(60))
        .keep_alive(None);
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.times(start), [secs(0), secs(2)]);
}

// ---- retrying the same target -----------------------------------------------------------

/// A backoff whose every wait is its ceiling: exact times in tests.
fn full_waits() -> Backoff {
    Backoff::new(Duration::from_millis(500), secs(8)).jitter(|| 1.0)
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_is_honoured_within_the_jitter_bounds() {
    for asked in [
        Reply::status(429, OVERLOADED).with_header("retry-after", "2"),
        Reply::status(429, OVERLOADED).with_header("retry-after-ms", "2000"),
    ] {
        let start = Instant::now();
        let upstream = Scripted::default().then("primary", asked);
        // The default jitter source: the wait is 2 s plus up to the 500 ms base.
        let layer = MidStreamFallbackLayer::new(to_fallback().retries(1));
        let got = send(layer, &upstream).await;
        assert_eq!(got.text(), ANSWER.concat());
        assert_eq!(upstream.models(), ["primary", "primary"]);
        let gap = upstream.times(start)[1];
        assert!(
            gap >= secs(2) && gap <= Duration::from_millis(2500),
            "retried after {gap:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_cap_moves_on_to_the_next_target_at_once() {
    let start = Instant::now();
    let upstream = Scripted::default().then(
        "primary",
        Reply::status(429, OVERLOADED).with_header("retry-after", "30"),
    );
    let layer = MidStreamFallbackLayer::new(to_fallback().retries(2).backoff(full_waits()));
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback"]);
    assert_eq!(upstream.times(start), [secs(0), secs(0)]);
}

#[tokio::test(start_paused = true)]
async fn a_single_500_is_retried_on_the_same_target_and_answered() {
    let start = Instant::now();
    let upstream = Scripted::default().then("primary", Reply::status(500, OVERLOADED));
    let layer = MidStreamFallbackLayer::new(to_fallback().retries(1).backoff(full_waits()));
    let got = send(layer, &upstream).await;
    assert_eq!((got.status, got.text()), (200, ANSWER.concat()));
    assert_eq!(upstream.models(), ["primary", "primary"]);
    assert_eq!(upstream.times(start), [secs(0), Duration::from_millis(500)]);
}

#[tokio::test(start_paused = true)]
async fn same_target_retries_back_off_exponentially_then_move_on() {
    let start = Instant::now();
    let upstream = (0..4).fold(Scripted::default(), |u, _| {
        u.then("primary", Reply::status(503, OVERLOADED))
    });
    let chain = to_fallback()
        .target(Target::new("primary").retries(3))
        .backoff(full_waits());
    let layer = MidStreamFallbackLayer::new(chain).max_attempts(5);
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(
        upstream.models(),
        ["primary", "primary", "primary", "primary", "fallback"]
    );
    let ms: Vec<u128> = upstream
        .times(start)
        .iter()
        .map(Duration::as_millis)
        .collect();
    assert_eq!(ms, [0, 500, 1500, 3500, 3500]);
}

#[tokio::test(start_paused = true)]
async fn many_requests_never_hammer_a_failing_target_past_the_retry_budget() {
    let requests = 10;
    let upstream = (0..requests * 4).fold(Scripted::default(), |u, _| {
        u.then("primary", Reply::status(503, OVERLOADED))
    });
    let chain = to_fallback()
        .retries(3)
        .backoff(full_waits())
        .retry_budget(RetryBudget::new(4, secs(60)));
    let layer = MidStreamFallbackLayer::new(chain).max_attempts(5);
    let handles: Vec<_> = (0..requests)
        .map(|_| {
            let (layer, upstream) = (layer.clone(), upstream.clone());
            tokio::spawn(async move { send(layer, &upstream).await })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap().text(), ANSWER.concat());
    }
    let models = upstream.models();
    let primary = models.iter().filter(|m| *m == "primary").count();
    assert_eq!(
        primary,
        requests + 4,
        "one call each, and the budget's 4 retries"
    );
    assert_eq!(
        models.len() - primary,
        requests,
        "each answered by the fallback"
    );
}

#[tokio::test(start_paused = true)]
async fn once_the_answer_reached_the_client_a_failing_target_is_not_retried() {
    // "Hello" reaches the client, then the primary stalls; the first fallback answers 503,
    // which before the stream would be retried: mid-stream, the next target continues.
    let primary = Reply::Stream {
        steps: answer_every(Duration::ZERO).into_iter().take(3).collect(),
        hang: true,
    };
    let rest = Reply::Stream {
        steps: vec![(Duration::ZERO, anthropic_text_stream(&ANSWER[1..]))],
        hang: false,
    };
    let upstream = Scripted::default()
        .then("primary", primary)
        .then("fallback", Reply::status(503, OVERLOADED))
        .then("fallback-2", rest);
    let chain = FallbackChain::new()
        .model("fallback", Prefill::Assistant)
        .model("fallback-2", Prefill::Assistant)
        .fallbacks("primary", ["fallback", "fallback-2"])
        .retries(2)
        .backoff(full_waits());
    let layer = MidStreamFallbackLayer::new(chain)
        .idle_timeout(secs(5))
        .max_attempts(5);
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.models(), ["primary", "fallback", "fallback-2"]);
}

// ---- context-window fallback ------------------------------------------------------------

const TOO_LONG: &str = r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
const FILTERED: &str = r#"{"error":{"message":"The response was filtered due to the prompt triggering the content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}}"#;
const ANTHROPIC_TOO_LONG: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 212345 tokens > 200000 maximum"}}"#;

fn with_larger_context() -> FallbackChain {
    to_fallback()
        .context_window_fallbacks("primary", ["primary-1m"])
        .retries(2)
}

#[tokio::test(start_paused = true)]
async fn a_context_length_400_restarts_on_the_larger_target() {
    for too_long in [TOO_LONG, ANTHROPIC_TOO_LONG] {
        let upstream = Scripted::default().then("primary", Reply::status(400, too_long));
        let got = send(
            MidStreamFallbackLayer::new(with_larger_context()),
            &upstream,
        )
        .await;
        assert_eq!((got.status, got.text()), (200, ANSWER.concat()));
        assert_eq!(upstream.models(), ["primary", "primary-1m"]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_content_filter_400_passes_through_intact_with_one_upstream_call() {
    let upstream = Scripted::default().then("primary", Reply::status(400, FILTERED));
    let got = send(
        MidStreamFallbackLayer::new(with_larger_context()),
        &upstream,
    )
    .await;
    assert_eq!(got.status, 400);
    assert_eq!(&got.bytes[..], FILTERED.as_bytes());
    assert!(got.error.is_none(), "passed on, not given up on");
    assert_eq!(upstream.models(), ["primary"]);
}

#[tokio::test(start_paused = true)]
async fn a_context_length_400_without_a_larger_target_goes_to_the_client_as_it_came() {
    let upstream = Scripted::default().then("primary", Reply::status(400, TOO_LONG));
    let got = send(MidStreamFallbackLayer::new(to_fallback()), &upstream).await;
    assert_eq!(got.status, 400);
    assert_eq!(&got.bytes[..], TOO_LONG.as_bytes());
    assert_eq!(upstream.models(), ["primary"]);
}

// ---- circuit breaking -------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_skips_probes_and_closes_across_concurrent_requests() {
    let probe_answer = Reply::Stream {
        steps: answer_every(secs(1)),
        hang: false,
    };
    let upstream = Scripted::default()
        .then("primary", Reply::status(503, OVERLOADED))
        .then("primary", Reply::status(503, OVERLOADED))
        .then("primary", probe_answer);
    let chain = to_fallback().circuit_breaker(Breaker::new(2, secs(30)));
    let layer = MidStreamFallbackLayer::new(chain);
    let spawn = |layer: &MidStreamFallbackLayer<FallbackChain>| {
        let (layer, upstream) = (layer.clone(), upstream.clone());
        tokio::spawn(async move { send(layer, &upstream).await })
    };

    // Two requests at once: each fails on the primary and is answered by the fallback. That
    // is two failures in a row: the circuit opens.
    let (a, b) = (spawn(&layer), spawn(&layer));
    for got in [a.await.unwrap(), b.await.unwrap()] {
        assert_eq!(got.text(), ANSWER.concat());
    }
    let mut models = upstream.models();
    models.sort();
    assert_eq!(models, ["fallback", "fallback", "primary", "primary"]);

    // Open: the next request's first attempt goes to the fallback; the primary is not called.
    let got = send(layer.clone(), &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.models()[4..], ["fallback"]);

    // After the cooldown, one probe goes to the primary (its answer takes a few seconds); a
    // request meanwhile is still sent to the fallback.
    tokio::time::advance(secs(30)).await;
    let probe = spawn(&layer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upstream.models()[5..], ["primary"], "the probe");
    let got = send(layer.clone(), &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(
        upstream.models()[6..],
        ["fallback"],
        "skipped while probing"
    );
    assert_eq!(probe.await.unwrap().text(), ANSWER.concat());

    // The probe succeeded: closed, the primary serves again.
    let got = send(layer.clone(), &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.models()[7..], ["primary"]);
}

#[tokio::test(start_paused = true)]
async fn with_every_circuit_open_the_least_recently_failed_target_is_still_tried() {
    let upstream = Scripted::default()
        .then("primary", Reply::status(503, OVERLOADED))
        .then("fallback", Reply::status(503, OVERLOADED));
    let chain = to_fallback().circuit_breaker(Breaker::new(1, secs(30)));
    let layer = MidStreamFallbackLayer::new(chain);
    let got = send(layer.clone(), &upstream).await;
    assert_eq!(got.status, 503, "both failed: the original 503");
    assert_eq!(upstream.models(), ["primary", "fallback"]);
    // Both open; the primary failed first, so it is the one tried, and it answers.
    tokio::time::advance(secs(1)).await;
    let got = send(layer, &upstream).await;
    assert_eq!(got.text(), ANSWER.concat());
    assert_eq!(upstream.models()[2..], ["primary"]);
}
