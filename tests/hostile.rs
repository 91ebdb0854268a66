//! Hostile input, each with a clear, bounded outcome: upstream streams that are too big, not
//! UTF-8, only comments or without a newline; request bodies the rewriter cannot use.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use serde_json::{json, Value};
use support::probe::rewrites;
use support::*;
use tower::{Layer, ServiceExt};
use tower_midstream::{FailureClass, FallbackChain, MidStreamFallbackLayer, Prefill, ReplayBody};

const WHOLE: &str = "A short answer, whole.";

fn anthropic_request() -> Bytes {
    Bytes::from(json!({"model":"primary","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}).to_string())
}

/// An upstream body that sends `frames` from a generator, counting what it was asked for.
struct Endless {
    next: Box<dyn FnMut(usize) -> Option<Bytes> + Send>,
    sent: Arc<AtomicUsize>,
    tick: Option<Pin<Box<tokio::time::Sleep>>>,
    every: Option<Duration>,
}

impl Body for Endless {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(every) = self.every {
            let tick = self
                .tick
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if tick.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.tick = None;
        }
        let n = self.sent.fetch_add(1, Ordering::SeqCst);
        Poll::Ready((self.next)(n).map(|b| Ok(Frame::data(b))))
    }
}

/// The first call streams `primary` (an `Endless`); later calls are the model continuing.
async fn through_layer(
    layer: MidStreamFallbackLayer<FallbackChain>,
    primary: Endless,
) -> (Bytes, Vec<upstream::Call>) {
    through_layer_as(Dialect::Anthropic, layer, primary).await
}

/// [`through_layer`] for a request of `dialect`.
async fn through_layer_as(
    dialect: Dialect,
    layer: MidStreamFallbackLayer<FallbackChain>,
    primary: Endless,
) -> (Bytes, Vec<upstream::Call>) {
    let model = Upstream::new(
        dialect,
        Whole {
            text: WHOLE.into(),
            ..Whole::default()
        },
    );
    let first = Arc::new(Mutex::new(Some(primary)));
    let calls = model.clone();
    let svc = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let (model, first) = (model.clone(), first.take_first());
        async move {
            let body = match first {
                Some(primary) => {
                    let _ = req.into_body().collect().await;
                    let mut r = Response::new(primary.boxed_unsync());
                    r.headers_mut()
                        .insert("content-type", "text/event-stream".parse().unwrap());
                    return Ok::<_, std::convert::Infallible>(r);
                }
                None => model.answer(req).await,
            };
            Ok(body.map(|b| b.boxed_unsync()))
        }
    });
    let svc = layer.layer(svc);
    let body = match dialect {
        Dialect::Anthropic => anthropic_request(),
        Dialect::Gemini => Bytes::from(gemini_request().to_string()),
        Dialect::OpenAi => Bytes::from(
            json!({"model":"primary","stream":true,"messages":[{"role":"user","content":"hi"}]})
                .to_string(),
        ),
        Dialect::Responses => Bytes::from(responses_request().to_string()),
    };
    let res = svc
        .oneshot(Request::post(path(dialect)).body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (bytes, calls.calls())
}

trait TakeFirst<T> {
    fn take_first(&self) -> Option<T>;
}

impl<T> TakeFirst<T> for Arc<Mutex<Option<T>>> {
    fn take_first(&self) -> Option<T> {
        self.lock().unwrap().take()
    }
}

fn chain() -> FallbackChain {
    FallbackChain::new()
        .model("fallback", Prefill::Assistant)
        .fallbacks("primary", ["fallback"])
}

const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"primary\",\"content\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n";

#[tokio::test(start_paused = true)]
async fn an_event_over_the_size_limit_is_a_failure_read_no_further_than_the_limit() {
    let sent = Arc::new(AtomicUsize::new(0));
    let primary = Endless {
        next: Box::new(|n| {
            Some(if n == 0 {
                Bytes::from_static(START.as_bytes())
            } else if n == 1 {
                Bytes::from_static(b"event: content_block_delta\ndata: {\"text\":\"")
            } else {
                Bytes::from(vec![b'a'; 1024])
            })
        }),
        sent: sent.clone(),
        tick: None,
        every: None,
    };
    let layer = MidStreamFallbackLayer::new(chain()).max_event_bytes(64 * 1024);
    let (bytes, calls) = through_layer(layer, primary).await;
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        WHOLE
    );
    assert_eq!(calls.len(), 1, "the fallback answered");
    let read = sent.load(Ordering::SeqCst);
    assert!(
        read <= 2 + 64 + 1,
        "read {read} frames of 1 KiB for a 64 KiB limit"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_sends_a_newline_is_cut_off_at_the_event_limit() {
    let sent = Arc::new(AtomicUsize::new(0));
    let primary = Endless {
        next: Box::new(|_| Some(Bytes::from(vec![b'x'; 4096]))),
        sent: sent.clone(),
        tick: None,
        every: None,
    };
    let layer = MidStreamFallbackLayer::new(chain()).max_event_bytes(32 * 1024);
    let (bytes, _) = through_layer(layer, primary).await;
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        WHOLE
    );
    assert!(sent.load(Ordering::SeqCst) <= 9);
}

#[tokio::test(start_paused = true)]
async fn endless_comments_are_relayed_but_count_as_a_stall() {
    let sent = Arc::new(AtomicUsize::new(0));
    let primary = Endless {
        next: Box::new(|n| {
            Some(Bytes::from(if n == 0 {
                START.to_owned()
            } else {
                ": still thinking\n\n".to_owned()
            }))
        }),
        sent: sent.clone(),
        tick: None,
        every: Some(Duration::from_millis(500)),
    };
    // No content yet: the first-token deadline is the one that runs.
    let layer = MidStreamFallbackLayer::new(chain()).first_token_timeout(Duration::from_secs(10));
    let (bytes, calls) = through_layer(layer, primary).await;
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        WHOLE
    );
    assert_eq!(calls.len(), 1);
    let comments = String::from_utf8_lossy(&bytes)
        .matches(": still thinking")
        .count();
    assert!(
        (15..=21).contains(&comments),
        "{comments} comments relayed in the 10 s before the stall"
    );
}

#[tokio::test]
async fn invalid_utf8_inside_an_event_is_a_malformed_stream_not_a_crash() {
    for bad in [
        &b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\xff\xfe\"}}\n\n"[..],
        b"event: ping\ndata: {\"type\": \"p\xc3\x28\"}\n\n",
        b"event: \xff\ndata: {}\n\n",
    ] {
        let mut stream = START.as_bytes().to_vec();
        stream.extend_from_slice(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        stream.extend_from_slice(bad);
        let primary = Endless {
            next: Box::new(move |n| (n == 0).then(|| Bytes::from(stream.clone()))),
            sent: Arc::default(),
            tick: None,
            every: None,
        };
        let (bytes, calls) = through_layer(MidStreamFallbackLayer::new(chain()), primary).await;
        assert!(std::str::from_utf8(&bytes).is_ok(), "nothing invalid reaches the client");
        assert_eq!(check(Dialect::Anthropic, false, &bytes).unwrap().text, WHOLE);
        assert_eq!(calls.len(), 1);
    }
}

fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~\\n\"\\\\é😀]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("model".to_owned()),
                    Just("messages".to_owned()),
                    Just("max_tokens".to_owned()),
                    Just("role".to_owned()),
                    Just("content".to_owned()),
                    Just("thinking".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn assert_rewrites_are_sound(
    results: &[(String, Result<Value, String>)],
) -> Result<(), TestCaseError> {
    for (strategy, result) in results {
        match result {
            Ok(v) => {
                prop_assert_eq!(&v["model"], &json!("target"), "{}: {}", strategy, v);
                prop_assert!(v["messages"].is_array(), "{}: {}", strategy, v);
            }
            Err(e) => {
                prop_assert!(!e.contains("MALFORMED OUTPUT"), "{}: {}", strategy, e);
                prop_assert!(!e.is_empty());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(300),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_rewriter_never_panics_and_never_sends_a_malformed_body(
        dialect in prop::sample::select(vec![Dialect::Anthropic, Dialect::OpenAi]),
        body in json_value(),
    ) {
        let results = rewrites(dialect, Bytes::from(body.to_string()));
        assert_rewrites_are_sound(&results)?;
    }

    #[test]
    fn the_rewriter_gives_up_clearly_on_bytes_that_are_not_json(
        dialect in prop::sample::select(vec![Dialect::Anthropic, Dialect::OpenAi]),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let results = rewrites(dialect, Bytes::from(body));
        assert_rewrites_are_sound(&results)?;
    }
}

/// Whether a strategy exists in a dialect (OpenAI's prefix kinds are not Anthropic's).
fn native(dialect: Dialect, strategy: &str) -> bool {
    dialect == Dialect::OpenAi
        || !(strategy.contains("prefix") || strategy.contains("continue_final"))
}

#[test]
fn hostile_request_bodies_get_a_clear_give_up() {
    let deep = format!(
        "{{\"model\":\"primary\",\"messages\":{}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let huge =
        json!({"model":"primary","messages":[{"role":"user","content":"x".repeat(3_000_000)}]})
            .to_string();
    let cases: Vec<(&str, Bytes)> = vec![
        ("not JSON", Bytes::from_static(b"model=primary&stream=true")),
        ("deeply nested", Bytes::from(deep)),
        ("messages is a string", Bytes::from(json!({"model":"primary","messages":"hi"}).to_string())),
        ("max_tokens is a string", Bytes::from(json!({"model":"primary","max_tokens":"many","messages":[{"role":"user","content":"hi"}]}).to_string())),
        ("invalid UTF-8", Bytes::from(b"{\"model\":\"prim\xffary\",\"messages\":[]}".to_vec())),
    ];
    for (what, body) in cases {
        for dialect in [Dialect::Anthropic, Dialect::OpenAi] {
            let results = rewrites(dialect, body.clone());
            assert!(!results.is_empty(), "{what}");
            for (strategy, result) in &results {
                match result {
                    Ok(v) => assert_eq!(v["model"], "target", "{what}/{strategy}"),
                    Err(e) => assert!(
                        !e.contains("MALFORMED") && e.len() > 10,
                        "{what}/{strategy}: {e}"
                    ),
                }
            }
            // Continuing needs a well-formed request: these all give up for the prefill.
            let prefill = results
                .iter()
                .find(|(s, _)| s.starts_with("prefill"))
                .unwrap();
            assert!(prefill.1.is_err(), "{what}: {:?}", prefill.1);
        }
    }
    // A wrong type where the rewrite writes anyway still makes a well-formed request.
    let body =
        Bytes::from(json!({"model":7,"messages":[{"role":"user","content":"hi"}]}).to_string());
    for dialect in [Dialect::Anthropic, Dialect::OpenAi] {
        for (strategy, result) in rewrites(dialect, body.clone()) {
            if native(dialect, &strategy) {
                let v = result.unwrap_or_else(|e| panic!("{strategy}: {e}"));
                assert_eq!(v["model"], "target");
            }
        }
    }
    // A huge but valid body is rewritten, not refused.
    let results = rewrites(Dialect::Anthropic, Bytes::from(huge));
    for (strategy, result) in results {
        let native = native(Dialect::Anthropic, &strategy);
        assert_eq!(result.is_ok(), native, "a 3 MB body, {strategy}");
    }
    let _ = FailureClass::Malformed;
}

/// Sends `first`, then nothing, ever: an upstream that holds its response open.
struct Hanging {
    first: Option<Bytes>,
}

impl Body for Hanging {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.first.take() {
            Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            None => Poll::Pending,
        }
    }
}

/// How each model answers in the tests of bounded waits.
#[derive(Clone)]
enum Answer {
    /// This status, with a body that sends these bytes and never ends.
    HangingError(u16, &'static str),
    /// No response headers, ever.
    NoHeaders,
    /// The whole answer.
    Whole,
}

/// The layer over a service that answers each model as `answers` says; the client's bytes,
/// status, the calls by model, and the error in the response's extensions.
async fn bounded_waits(
    answers: &[(&'static str, Answer)],
    layer: MidStreamFallbackLayer<FallbackChain>,
) -> (
    u16,
    Bytes,
    Vec<String>,
    Option<tower_midstream::FallbackError>,
) {
    let model = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: WHOLE.into(),
            ..Whole::default()
        },
    );
    let answers: Arc<Vec<(&'static str, Answer)>> = Arc::new(answers.to_vec());
    let called = Arc::new(Mutex::new(Vec::new()));
    let record = called.clone();
    let svc = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let (model, answers, record) = (model.clone(), answers.clone(), record.clone());
        async move {
            let body = req.body().bytes().cloned().unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap();
            let name = v["model"].as_str().unwrap().to_owned();
            record.lock().unwrap().push(name.clone());
            let answer = answers
                .iter()
                .find(|(m, _)| *m == name)
                .map(|(_, a)| a.clone())
                .unwrap_or(Answer::Whole);
            match answer {
                Answer::HangingError(status, sent) => {
                    let mut r = Response::new(
                        Hanging {
                            first: Some(Bytes::from_static(sent.as_bytes())),
                        }
                        .boxed_unsync(),
                    );
                    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    r.headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(r)
                }
                Answer::NoHeaders => std::future::pending().await,
                Answer::Whole => Ok(model.answer(req).await.map(|b| b.boxed_unsync())),
            }
        }
    });
    let svc = layer.layer(svc);
    let req = Request::post("/v1/messages")
        .body(Full::new(anthropic_request()))
        .unwrap();
    // Far beyond every timer in play: on paused time, a wait with no deadline ends here.
    let outcome = tokio::time::timeout(Duration::from_secs(24 * 3600), async {
        let res = svc.oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let error = res
            .extensions()
            .get::<tower_midstream::FallbackError>()
            .cloned();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, bytes, error)
    })
    .await
    .expect("the client is answered: every wait has a deadline");
    let called = called.lock().unwrap().clone();
    (outcome.0, outcome.1, called, outcome.2)
}

const OVERLOADED_TORN: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overl"#;
const OVERLOADED_WHOLE: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;

#[tokio::test(start_paused = true)]
async fn a_failed_response_whose_body_never_ends_is_read_no_longer_than_the_idle_timeout() {
    let layer = MidStreamFallbackLayer::new(chain()).idle_timeout(Duration::from_secs(10));
    let (status, bytes, called, _) = bounded_waits(
        &[("primary", Answer::HangingError(503, OVERLOADED_TORN))],
        layer,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        WHOLE
    );
    assert_eq!(called, ["primary", "fallback"], "the fallback was tried");
}

#[tokio::test(start_paused = true)]
async fn what_a_never_ending_error_body_sent_is_kept_for_the_error_report() {
    let layer = MidStreamFallbackLayer::new(chain()).idle_timeout(Duration::from_secs(10));
    // Torn: the client gets a 502 in its dialect naming the 503 and the body that stalled.
    let (status, bytes, called, error) = bounded_waits(
        &[
            ("primary", Answer::HangingError(503, OVERLOADED_TORN)),
            ("fallback", Answer::HangingError(529, OVERLOADED_TORN)),
        ],
        layer.clone(),
    )
    .await;
    assert_eq!((status, called.len()), (502, 2));
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("HTTP 503")
            && message.contains("did not complete within 10 s")
            && message.contains(&format!("after {} bytes", OVERLOADED_TORN.len())),
        "{message}"
    );
    assert_eq!(error.unwrap().attempts().len(), 2);
    // Whole but never ended: that error goes back to the client as the upstream sent it.
    let (status, bytes, _, error) = bounded_waits(
        &[
            ("primary", Answer::HangingError(503, OVERLOADED_WHOLE)),
            ("fallback", Answer::HangingError(529, OVERLOADED_TORN)),
        ],
        layer,
    )
    .await;
    assert_eq!((status, &bytes[..]), (503, OVERLOADED_WHOLE.as_bytes()));
    let original = error.unwrap().original().detail().to_owned();
    assert!(
        original.starts_with("overloaded_error: Overloaded (HTTP 503)"),
        "{original}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fallback_that_never_sends_headers_before_the_stream_is_given_up_on_after_its_first_token_deadline(
) {
    let chain = FallbackChain::new()
        .model("fallback", Prefill::Assistant)
        .model("fallback-2", Prefill::Assistant)
        .fallbacks("primary", ["fallback", "fallback-2"]);
    let layer = MidStreamFallbackLayer::new(chain).first_token_timeout(Duration::from_secs(10));
    let (status, bytes, called, _) = bounded_waits(
        &[
            ("primary", Answer::HangingError(529, OVERLOADED_WHOLE)),
            ("fallback", Answer::NoHeaders),
        ],
        layer,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        WHOLE
    );
    assert_eq!(called, ["primary", "fallback", "fallback-2"]);
}

#[tokio::test(start_paused = true)]
async fn a_primary_that_never_sends_headers_falls_back_after_its_first_token_deadline() {
    let started = tokio::time::Instant::now();
    let layer = MidStreamFallbackLayer::new(chain())
        .first_token_timeout(Duration::from_secs(10))
        .idle_timeout(Duration::from_secs(300));
    let (status, bytes, called, _) = bounded_waits(&[("primary", Answer::NoHeaders)], layer).await;
    assert_eq!(status, 200);
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        WHOLE
    );
    assert_eq!(called, ["primary", "fallback"]);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "the first-token deadline, not the idle timeout"
    );
}

const TEXT_START: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";

/// A text delta in the API's own shape, `literal` written into its data as it is (quotes
/// included), so that it can be anything an upstream might send.
fn text_delta(literal: &str) -> String {
    format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{literal}}}}}\n\n")
}

/// A primary that sends the start of `WHOLE` as text, then `bad`, then nothing more.
fn start_then(bad: String) -> Endless {
    let mut stream = START.to_owned() + TEXT_START + &text_delta("\"A short\"");
    stream.push_str(&bad);
    Endless {
        next: Box::new(move |n| (n == 0).then(|| Bytes::from(stream.clone()))),
        sent: Arc::default(),
        tick: None,
        every: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_text_delta_whose_data_ends_after_a_backslash_falls_back_instead_of_panicking() {
    for bad in [
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"abc\\\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\\\\\\\n\n",
    ] {
        let (bytes, calls) =
            through_layer(MidStreamFallbackLayer::new(chain()), start_then(bad.into())).await;
        let answer = check(Dialect::Anthropic, false, &bytes)
            .unwrap_or_else(|e| panic!("{bad:?}: {e}\n{}", String::from_utf8_lossy(&bytes)));
        assert_eq!(answer.text, WHOLE, "{bad:?}");
        assert_eq!(calls.len(), 1, "{bad:?}: the fallback continued the answer");
    }
}

#[tokio::test(start_paused = true)]
async fn a_text_delta_the_layer_cannot_read_exactly_never_reaches_the_client() {
    for literal in [
        r#"" answer\x""#,
        r#"" answer\ud800""#,
        r#"" answer\udc00""#,
        r#"" answer\ud800\u0041""#,
        r#"" answer\u12""#,
        "\" answer\u{1}\"",
        "\" answer\t\"",
    ] {
        let (bytes, calls) = through_layer(
            MidStreamFallbackLayer::new(chain()),
            start_then(text_delta(literal)),
        )
        .await;
        assert!(
            !String::from_utf8_lossy(&bytes).contains(" answer\\"),
            "{literal:?} reached the client:\n{}",
            String::from_utf8_lossy(&bytes)
        );
        let answer = check(Dialect::Anthropic, false, &bytes)
            .unwrap_or_else(|e| panic!("{literal:?}: {e}\n{}", String::from_utf8_lossy(&bytes)));
        assert_eq!(answer.text, WHOLE, "{literal:?}");
        assert_eq!(calls.len(), 1, "{literal:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn tool_blocks_without_deltas_count_against_the_hold_limit() {
    // Each block holds 16 KiB of id and name and nothing else; 2,000 of them would be 32 MB.
    let big = "x".repeat(8 * 1024);
    let sent = Arc::new(AtomicUsize::new(0));
    let primary = Endless {
        next: Box::new(move |n| {
            let block = n.saturating_sub(1) / 2;
            match n {
                0 => Some(Bytes::from(START)),
                n if n > 4_000 => None,
                n if n % 2 == 1 => Some(Bytes::from(format!(
                    "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{block},\"content_block\":{{\"type\":\"tool_use\",\"id\":\"toolu_{big}\",\"name\":\"{big}\",\"input\":{{}}}}}}\n\n"
                ))),
                _ => Some(Bytes::from(format!(
                    "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{block}}}\n\n"
                ))),
            }
        }),
        sent: sent.clone(),
        tick: None,
        every: None,
    };
    let layer = MidStreamFallbackLayer::new(chain()).max_held_bytes(256 * 1024);
    let (bytes, calls) = through_layer(layer, primary).await;
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        WHOLE
    );
    assert_eq!(calls.len(), 1, "the fallback answered");
    let read = sent.load(Ordering::SeqCst);
    assert!(
        read <= 1 + 2 * (256 / 16 + 1),
        "read {read} frames of 8 KiB blocks for a 256 KiB hold limit"
    );
}

#[tokio::test(start_paused = true)]
async fn chat_tool_calls_with_large_ids_and_no_arguments_count_against_the_hold_limit() {
    // Each chunk opens a new tool call with 16 KiB of id and name and no arguments.
    let big = "x".repeat(8 * 1024);
    let sent = Arc::new(AtomicUsize::new(0));
    let primary = Endless {
        next: Box::new(move |n| {
            let chunk = |delta: Value| {
                let c = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"primary","choices":[{"index":0,"delta":delta,"finish_reason":null}]});
                Bytes::from(format!("data: {c}\n\n"))
            };
            match n {
                0 => Some(chunk(json!({"role":"assistant","content":null}))),
                n if n > 2_000 => None,
                n => Some(chunk(
                    json!({"tool_calls":[{"index":n,"id":format!("call_{big}"),"type":"function","function":{"name":big,"arguments":""}}]}),
                )),
            }
        }),
        sent: sent.clone(),
        tick: None,
        every: None,
    };
    let layer = MidStreamFallbackLayer::new(chain()).max_held_bytes(256 * 1024);
    let (bytes, calls) = through_layer_as(Dialect::OpenAi, layer, primary).await;
    assert_eq!(check(Dialect::OpenAi, false, &bytes).unwrap().text, WHOLE);
    assert_eq!(calls.len(), 1, "the fallback answered");
    let read = sent.load(Ordering::SeqCst);
    assert!(
        read <= 1 + 256 / 16 + 1,
        "read {read} chunks of 16 KiB tool calls for a 256 KiB hold limit"
    );
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_only_pings_counts_as_stalled() {
    let sent = Arc::new(AtomicUsize::new(0));
    let primary = Endless {
        next: Box::new(|n| match n {
            0 => Some(Bytes::from_static(START.as_bytes())),
            // Pings for 100 s; the first-token deadline is 10 s.
            n if n > 200 => None,
            _ => Some(Bytes::from_static(
                b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
            )),
        }),
        sent: sent.clone(),
        tick: None,
        every: Some(Duration::from_millis(500)),
    };
    let layer = MidStreamFallbackLayer::new(chain()).first_token_timeout(Duration::from_secs(10));
    let (bytes, calls) = through_layer(layer, primary).await;
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        WHOLE
    );
    assert_eq!(calls.len(), 1);
    let pings = String::from_utf8_lossy(&bytes)
        .matches("event: ping")
        .count();
    assert!(
        (15..=21).contains(&pings),
        "{pings} pings relayed: a stream that only pings stalls after the first-token deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn pings_after_the_first_token_count_as_a_stall_after_the_idle_timeout() {
    let sent = Arc::new(AtomicUsize::new(0));
    let primary = Endless {
        next: Box::new(|n| match n {
            0 => Some(Bytes::from(
                START.to_owned() + TEXT_START + &text_delta("\"A short\""),
            )),
            n if n > 200 => None,
            _ => Some(Bytes::from_static(
                b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
            )),
        }),
        sent: sent.clone(),
        tick: None,
        every: Some(Duration::from_millis(500)),
    };
    let layer = MidStreamFallbackLayer::new(chain())
        .first_token_timeout(Duration::from_secs(60))
        .idle_timeout(Duration::from_secs(10));
    let (bytes, calls) = through_layer(layer, primary).await;
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        WHOLE
    );
    assert_eq!(calls.len(), 1, "the fallback continued the answer");
    let pings = String::from_utf8_lossy(&bytes)
        .matches("event: ping")
        .count();
    assert!(
        (15..=21).contains(&pings),
        "{pings} pings relayed: pings after content stall after the idle timeout"
    );
}
