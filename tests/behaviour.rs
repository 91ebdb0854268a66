//! The layer's promises one by one: the request each fallback receives, what passes through
//! untouched, limits, opt-out, giving up, a client that goes away, keep-alives, logs.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use support::*;
use tower::{Layer, ServiceExt};
use tower_midstream::{
    FailureClass, FallbackChain, MidStreamFallbackLayer, NoFallback, Prefill, ReplayBody,
    RetryPlanner, Strategy,
};

#[tokio::test]
async fn prefill_is_sent_as_a_trailing_assistant_message_without_trailing_whitespace() {
    let upstream = broken_after(Dialect::Anthropic, &HELLO, 2);
    let chain = one_fallback(Prefill::Assistant);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    let got = check(Dialect::Anthropic, false, &out.bytes).unwrap();
    assert_eq!(got.text, "Hello there, friend!");
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].body,
        json!({"model":"fallback","max_tokens":98,"stream":true,"messages":[
            {"role":"user","content":"Say hello."},
            {"role":"assistant","content":"Hello there,"}
        ]})
    );
}

#[tokio::test]
async fn prefill_is_never_sent_to_a_model_that_rejects_it() {
    let upstream =
        broken_after(Dialect::Anthropic, &HELLO, 2).rejecting_prefill("claude-sonnet-4-6");
    let chain = FallbackChain::new()
        .model("claude-sonnet-4-6", Prefill::None)
        .fallbacks("primary", ["claude-sonnet-4-6"]);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    let got = check(Dialect::Anthropic, false, &out.bytes).unwrap();
    assert_eq!(got.text, "Hello there, friend!");
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2, "no 400 round trip");
    assert_eq!(
        calls[1].body["messages"],
        json!([
            {"role":"user","content":"Say hello."},
            {"role":"assistant","content":"Hello there,"},
            {"role":"user","content":tower_midstream::DEFAULT_INSTRUCTION}
        ])
    );
}

#[tokio::test]
async fn a_fallback_that_rejects_a_prefill_after_all_is_retried_once_with_the_instruction() {
    // Declared to accept prefill, but answers it with the real 400.
    let upstream = broken_after(Dialect::Anthropic, &HELLO, 1).rejecting_prefill("fallback");
    let chain = one_fallback(Prefill::Assistant).instruction("Continue.");
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    let got = check(Dialect::Anthropic, false, &out.bytes).unwrap();
    assert_eq!(
        got.text, "Hello there, friend!",
        "the client never sees the 400"
    );
    let calls = upstream.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls[1].body["messages"][1],
        json!({"role":"assistant","content":"Hello"})
    );
    assert_eq!(calls[2].body["model"], "fallback");
    assert_eq!(
        calls[2].body["messages"][2],
        json!({"role":"user","content":"Continue."})
    );
}

#[tokio::test]
async fn openai_prefix_and_vllm_prefill_mark_the_assistant_message_as_each_expects() {
    for (prefill, extra) in [
        (Prefill::Prefix, json!({"prefix": true})),
        (Prefill::ContinueFinalMessage, json!({})),
        (Prefill::Assistant, json!({})),
    ] {
        let upstream = broken_after(Dialect::OpenAi, &HELLO, 2);
        let chain = one_fallback(prefill);
        let out = send(
            MidStreamFallbackLayer::new(chain),
            &upstream,
            Dialect::OpenAi,
            &openai_request(),
        )
        .await;
        let got = check(Dialect::OpenAi, true, &out.bytes).unwrap();
        assert_eq!(got.text, "Hello there, friend!");
        let body = &upstream.calls()[1].body;
        let mut assistant = json!({"role":"assistant","content":"Hello there, "});
        for (k, v) in extra.as_object().unwrap() {
            assistant[k] = v.clone();
        }
        assert_eq!(body["messages"][1], assistant, "{prefill:?}");
        assert_eq!(body["max_tokens"], 98);
        let vllm = prefill == Prefill::ContinueFinalMessage;
        assert_eq!(
            body.get("continue_final_message"),
            vllm.then_some(&json!(true))
        );
        assert_eq!(
            body.get("add_generation_prompt"),
            vllm.then_some(&json!(false))
        );
    }
}

#[tokio::test]
async fn usage_reported_after_a_seam_covers_every_attempt() {
    let upstream = broken_after(Dialect::OpenAi, &HELLO, 2);
    let chain = one_fallback(Prefill::Prefix);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::OpenAi,
        &openai_request(),
    )
    .await;
    let got = check(Dialect::OpenAi, true, &out.bytes).unwrap();
    // Two deltas from the primary, plus what the fallback reported for its own.
    let fallback_deltas = "friend!".chars().count().div_ceil(4) as u64;
    assert_eq!(got.output_tokens, Some(2 + fallback_deltas));

    let upstream = broken_after(Dialect::Anthropic, &HELLO, 2);
    let chain = one_fallback(Prefill::Assistant);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    let got = check(Dialect::Anthropic, false, &out.bytes).unwrap();
    let fallback_deltas = " friend!".chars().count().div_ceil(7) as u64;
    assert_eq!(got.output_tokens, Some(2 + fallback_deltas));
}

#[tokio::test(start_paused = true)]
async fn when_every_attempt_fails_the_client_hears_of_the_original_failure_and_rust_gets_all() {
    for dialect in [Dialect::Anthropic, Dialect::OpenAi] {
        let whole = Whole {
            text: HELLO.concat(),
            ..Whole::default()
        };
        let primary = match dialect {
            Dialect::Anthropic => anthropic_text_stream(&HELLO),
            Dialect::OpenAi => openai_text_stream(&HELLO),
            Dialect::Gemini => gemini_text_stream(&HELLO),
            Dialect::Responses => unreachable!("not in this loop"),
        };
        let lead = if dialect == Dialect::Anthropic { 3 } else { 2 };
        let upstream = Upstream::new(dialect, whole)
            .rejecting_prefill("fallback")
            .rejecting_prefill("fallback-2")
            .then(Scripted::Stream {
                bytes: Bytes::from(events_of(&primary)[..lead].concat()),
                cuts: vec![],
                fault: Some(Fault::InBand),
            })
            .then(Scripted::Status {
                status: 400,
                content_type: "application/json",
                body: upstream::ANTHROPIC_PREFILL_400,
            })
            .then(Scripted::Status {
                status: 503,
                content_type: "application/json",
                body: r#"{"error":{"message":"down"}}"#,
            });
        let chain = FallbackChain::new()
            .model("fallback", Prefill::Assistant)
            .model("fallback-2", Prefill::Assistant)
            .fallbacks("primary", ["fallback", "fallback-2"]);
        let body = if dialect == Dialect::Anthropic {
            anthropic_request()
        } else {
            openai_request()
        };
        let out = send(
            MidStreamFallbackLayer::new(chain),
            &upstream,
            dialect,
            &body,
        )
        .await;
        assert_eq!(out.status, 200);
        let events = check::parse_sse(&out.bytes);
        let got = match dialect {
            Dialect::Anthropic => check::anthropic(&events).unwrap(),
            Dialect::OpenAi => check::openai(&events, true).unwrap(),
            Dialect::Gemini => check::gemini(&out.bytes, &events).unwrap(),
            Dialect::Responses => unreachable!("not in this loop"),
        };
        let message = got.error.expect("an error event");
        let original = if dialect == Dialect::Anthropic {
            "Overloaded"
        } else {
            "server had an error"
        };
        assert!(message.contains(original), "{message}");
        assert!(
            !message.contains("prefill"),
            "the fallback's 400 is not what the client hears: {message}"
        );
        assert_eq!(got.text, "Hello", "what was sent stays sent");
        if dialect == Dialect::OpenAi {
            assert_eq!(
                events.last().unwrap().data,
                "[DONE]",
                "the stream ends cleanly"
            );
        }
        let err = out.error.expect("a typed FallbackError");
        let classes: Vec<_> = err.attempts().iter().map(|a| a.class()).collect();
        assert_eq!(
            classes,
            vec![
                FailureClass::InBand,
                FailureClass::PrefillRejected,
                FailureClass::Status(StatusCode::SERVICE_UNAVAILABLE)
            ]
        );
        assert_eq!(err.attempts()[1].target(), Some("fallback"));
        assert_eq!(
            err.attempts()[1].strategy(),
            Some(&Strategy::Prefill(Prefill::Assistant))
        );
        assert!(err.to_string().contains(original), "{err}");
    }
}

#[tokio::test]
async fn a_retryable_status_with_no_fallback_left_reaches_the_client_as_it_came() {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let upstream = Upstream::new(Dialect::Anthropic, Whole::default())
        .then(Scripted::Status {
            status: 529,
            content_type: "application/json",
            body,
        })
        .then(Scripted::Status {
            status: 500,
            content_type: "application/json",
            body: r#"{"error":{"message":"fallback down"}}"#,
        });
    let chain = FallbackChain::new().fallbacks("primary", ["fallback"]);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    assert_eq!(out.status.as_u16(), 529);
    assert_eq!(&out.bytes[..], body.as_bytes());
    let err = out
        .extension_error
        .expect("the error rides in the extensions");
    assert_eq!(err.attempts().len(), 2);
    assert_eq!(
        err.original().class(),
        FailureClass::Status(StatusCode::from_u16(529).unwrap())
    );
}

#[tokio::test]
async fn an_unreachable_upstream_becomes_a_502_in_the_clients_dialect() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = tower::service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<Response<Full<Bytes>>, _>(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ))
        }
    });
    let chain = FallbackChain::new().fallbacks("primary", ["fallback"]);
    let svc = MidStreamFallbackLayer::new(chain).layer(svc);
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(openai_request().to_string())))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{body}"
    );
}

#[tokio::test]
async fn non_sse_and_client_error_responses_pass_through_byte_for_byte() {
    let json_body = r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"Hi"}]}"#;
    let bad = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;
    for (status, ct, body) in [
        (200u16, "application/json", json_body),
        (400, "application/json", bad),
        (401, "application/json", bad),
        (404, "text/plain", "nope"),
    ] {
        let upstream = Upstream::new(Dialect::Anthropic, Whole::default()).then(Scripted::Status {
            status,
            content_type: ct,
            body,
        });
        let chain = FallbackChain::new().fallbacks("primary", ["fallback"]);
        let out = send(
            MidStreamFallbackLayer::new(chain),
            &upstream,
            Dialect::Anthropic,
            &anthropic_request(),
        )
        .await;
        assert_eq!(out.status.as_u16(), status);
        assert_eq!(out.headers["content-type"], ct);
        assert_eq!(&out.bytes[..], body.as_bytes());
        assert_eq!(upstream.calls().len(), 1, "no fallback for {status}");
    }
}

#[tokio::test]
async fn requests_on_other_paths_pass_through_without_being_buffered() {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let svc = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        *record.lock().unwrap() = Some(req.body().bytes().is_some());
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
    });
    let svc = MidStreamFallbackLayer::new(FallbackChain::new()).layer(svc);
    let req = Request::post("/v1/embeddings")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert!(!res.body().is_watched());
    assert_eq!(
        *seen.lock().unwrap(),
        Some(false),
        "streamed through, not collected"
    );
}

#[tokio::test]
async fn an_oversized_request_gets_a_413_in_its_dialect_and_no_upstream_call() {
    let big = Bytes::from(
        json!({"model":"primary","messages":[{"role":"user","content":"x".repeat(5000)}]})
            .to_string(),
    );
    for dialect in [Dialect::Anthropic, Dialect::OpenAi, Dialect::Responses] {
        // Known in advance (content length) and found while reading (chunks of unknown size).
        for announced in [true, false] {
            let upstream = Upstream::new(dialect, Whole::default());
            let layer = MidStreamFallbackLayer::new(FallbackChain::new()).max_request_bytes(1000);
            let svc = layer.layer(upstream::service(upstream.clone()));
            let body = if announced {
                Chunks::whole(big.clone())
            } else {
                Chunks::split(big.clone(), 700)
            };
            let res = svc
                .oneshot(Request::post(path(dialect)).body(body).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
            let body: Value =
                serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes())
                    .unwrap();
            let message = match dialect {
                Dialect::Anthropic => {
                    assert_eq!(body["type"], "error");
                    assert_eq!(body["error"]["type"], "request_too_large");
                    body["error"]["message"].as_str().unwrap().to_owned()
                }
                Dialect::OpenAi | Dialect::Responses => {
                    assert_eq!(body["error"]["code"], "request_too_large");
                    body["error"]["message"].as_str().unwrap().to_owned()
                }
                Dialect::Gemini => {
                    assert_eq!(body["error"]["code"], 413);
                    body["error"]["message"].as_str().unwrap().to_owned()
                }
            };
            assert!(message.contains("1000 bytes"), "{message}");
            assert!(upstream.calls().is_empty());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_opted_out_request_is_neither_retried_before_the_stream_nor_continued_during_it() {
    let chain = FallbackChain::new().fallbacks("primary", ["fallback"]);
    // Before: a 529 is handed back as it came.
    let upstream = Upstream::new(Dialect::Anthropic, Whole::default()).then(Scripted::Status {
        status: 529,
        content_type: "application/json",
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    });
    let svc = MidStreamFallbackLayer::new(chain.clone()).layer(upstream::service(upstream.clone()));
    let mut req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    req.extensions_mut().insert(NoFallback);
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status().as_u16(), 529);
    assert_eq!(upstream.calls().len(), 1);

    // During: the break reaches the client as it happened, and nothing else is called.
    let upstream = broken_after(Dialect::Anthropic, &HELLO, 2);
    let svc = MidStreamFallbackLayer::new(chain).layer(upstream::service(upstream.clone()));
    let mut req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    req.extensions_mut().insert(NoFallback);
    let res = svc.oneshot(req).await.unwrap();
    assert!(!res.body().is_watched());
    let mut body = res.into_body();
    let mut got = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(frame)) => got.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(err)) => break err,
            None => panic!("the upstream's failure was hidden"),
        }
    };
    assert!(err.to_string().contains("reset"), "{err}");
    assert_eq!(upstream.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_mid_stream_cancels_the_upstream_and_triggers_no_fallback() {
    let whole = Whole {
        text: HELLO.concat(),
        ..Whole::default()
    };
    let events = events_of(&anthropic_text_stream(&HELLO));
    let upstream = Upstream::new(Dialect::Anthropic, whole).then(Scripted::Stream {
        bytes: Bytes::from(events[..4].concat()),
        cuts: vec![],
        fault: Some(Fault::Stall),
    });
    let chain = FallbackChain::new().fallbacks("primary", ["fallback"]);
    let svc = MidStreamFallbackLayer::new(chain)
        .idle_timeout(Duration::from_secs(1))
        .layer(upstream::service(upstream.clone()));
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let mut body = svc.oneshot(req).await.unwrap().into_body();
    assert!(body.frame().await.is_some());
    drop(body);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        upstream.calls().len(),
        1,
        "no fallback after the client left"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_before_the_headers_cancels_the_call_and_nothing_follows() {
    let calls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (c, d) = (calls.clone(), dropped.clone());
    let svc = tower::service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
        c.fetch_add(1, Ordering::SeqCst);
        let guard = Guard(d.clone());
        async move {
            let _guard = guard;
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
        }
    });
    let svc = MidStreamFallbackLayer::new(one_fallback(Prefill::Assistant)).layer(svc);
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let pending = svc.oneshot(req);
    // The client waits a while for the headers, then goes away.
    assert!(tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the upstream call was cancelled"
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "nothing was called after the client left"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_during_the_fallback_call_cancels_that_call() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let events = events_of(&anthropic_text_stream(&HELLO));
    let primary = Upstream::new(Dialect::Anthropic, Whole::default()).then(Scripted::Stream {
        bytes: Bytes::from(events[..3].concat()),
        cuts: vec![],
        fault: Some(Fault::Reset),
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (c, d) = (calls.clone(), dropped.clone());
    let svc = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let (primary, guard) = (primary.clone(), (n > 0).then(|| Guard(d.clone())));
        async move {
            if n == 0 {
                return Ok::<_, Infallible>(primary.answer(req).await);
            }
            let _guard = guard;
            std::future::pending::<()>().await;
            unreachable!()
        }
    });
    let chain = FallbackChain::new().fallbacks("primary", ["fallback"]);
    let svc = MidStreamFallbackLayer::new(chain).layer(svc);
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let mut body = svc.oneshot(req).await.unwrap().into_body();
    // Read until the keep-alive that shows the fallback call is under way.
    loop {
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        if data.starts_with(b": keep-alive") {
            break;
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    drop(body);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the fallback call was cancelled"
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn keep_alives_flow_while_the_fallback_takes_its_time() {
    let upstream = broken_after(Dialect::Anthropic, &HELLO, 1);
    let n = Arc::new(AtomicUsize::new(0));
    let svc = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let (upstream, n) = (upstream.clone(), n.fetch_add(1, Ordering::SeqCst));
        async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(12)).await;
            }
            Ok::<_, Infallible>(upstream.answer(req).await)
        }
    });
    let chain = one_fallback(Prefill::Assistant);
    let svc = MidStreamFallbackLayer::new(chain)
        .keep_alive(Duration::from_secs(5))
        .layer(svc);
    expect_two_keep_alives_then_the_answer(svc).await;
}

#[tokio::test]
async fn an_in_band_client_error_passes_through_without_a_fallback() {
    let bytes = fixture("openrouter_midstream_error.sse");
    let upstream = Upstream::new(Dialect::OpenAi, Whole::default()).then(Scripted::Stream {
        bytes: bytes.clone(),
        cuts: vec![],
        fault: None,
    });
    let chain = FallbackChain::new().fallbacks("primary", ["fallback"]);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::OpenAi,
        &openai_request(),
    )
    .await;
    assert_eq!(out.bytes, bytes, "the upstream's own words, byte for byte");
    assert_eq!(upstream.calls().len(), 1);
}

#[test]
fn retry_planner_is_object_safe() {
    fn takes(_: Box<dyn RetryPlanner + Send>) {}
    takes(Box::new(FallbackChain::new()));
}

/// A body that sends nothing for a while, then its inner body: a fallback that answered its
/// headers at once but is slow to its first token.
struct SlowStart<B> {
    wait: Pin<Box<tokio::time::Sleep>>,
    waited: bool,
    inner: B,
}

impl<B: http_body::Body + Unpin> http_body::Body for SlowStart<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        if !self.waited {
            std::task::ready!(self.wait.as_mut().poll(cx));
            self.waited = true;
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn keep_alives_flow_until_a_fallback_that_answered_sends_its_first_event() {
    let upstream = broken_after(Dialect::Anthropic, &HELLO, 1);
    let n = Arc::new(AtomicUsize::new(0));
    let svc = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let (upstream, n) = (upstream.clone(), n.fetch_add(1, Ordering::SeqCst));
        async move {
            let res = upstream.answer(req).await;
            let wait = if n > 0 { 12 } else { 0 };
            Ok::<_, Infallible>(res.map(|inner| SlowStart {
                wait: Box::pin(tokio::time::sleep(Duration::from_secs(wait))),
                waited: false,
                inner,
            }))
        }
    });
    let svc = MidStreamFallbackLayer::new(one_fallback(Prefill::Assistant))
        .keep_alive(Duration::from_secs(5))
        .layer(svc);
    expect_two_keep_alives_then_the_answer(svc).await;
}

#[tokio::test]
async fn after_a_seam_a_repeated_finish_reason_reaches_the_client_once() {
    let primary = openai_text_stream(&HELLO);
    // A fallback that, like some OpenAI-compatible servers, repeats its finish chunk.
    let finish = r#"data: {"id":"f","object":"chat.completion.chunk","created":2,"model":"fallback","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    let fallback = format!(
        "data: {{\"id\":\"f\",\"object\":\"chat.completion.chunk\",\"created\":2,\"model\":\"fallback\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"friend!\"}},\"finish_reason\":null}}]}}\n\n{finish}\n\n{finish}\n\ndata: [DONE]\n\n"
    );
    let upstream = Upstream::new(Dialect::OpenAi, Whole::default())
        .then(Scripted::Stream {
            bytes: Bytes::from(events_of(&primary)[..3].concat()),
            cuts: vec![],
            fault: Some(Fault::Reset),
        })
        .then(Scripted::Stream {
            bytes: Bytes::from(fallback),
            cuts: vec![],
            fault: None,
        });
    let mut body = openai_request();
    body.as_object_mut().unwrap().remove("stream_options");
    let out = send(
        MidStreamFallbackLayer::new(one_fallback(Prefill::Prefix)),
        &upstream,
        Dialect::OpenAi,
        &body,
    )
    .await;
    let got = check(Dialect::OpenAi, false, &out.bytes).unwrap();
    assert_eq!(got.text, "Hello there, friend!");
}

/// Sends the usual request through `svc` (keep-alive every 5 s, a 12 s wait in the fallback):
/// the client gets two keep-alives, then the whole answer.
async fn expect_two_keep_alives_then_the_answer<S, B>(svc: S)
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let bytes = svc
        .oneshot(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.matches(": keep-alive\n\n").count(), 2, "{text}");
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        HELLO.concat()
    );
}

type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A service answering each model in turn: `encoded` models with a gzip-encoded event stream,
/// the others as `model` would; the models called go into `called`, in order.
fn encoded_for(
    encoded: &'static [&'static str],
    model: Upstream,
    called: &Arc<Mutex<Vec<String>>>,
) -> impl tower::Service<
    Request<ReplayBody<Full<Bytes>>>,
    Response = Response<Boxed>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let record = called.clone();
    tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let (model, record) = (model.clone(), record.clone());
        async move {
            let v: Value = serde_json::from_slice(req.body().bytes().unwrap()).unwrap();
            let name = v["model"].as_str().unwrap().to_owned();
            record.lock().unwrap().push(name.clone());
            if encoded.contains(&name.as_str()) {
                let mut r = Response::new(
                    Full::new(Bytes::from_static(GZIP_BYTES))
                        .map_err(|never: Infallible| match never {})
                        .boxed_unsync(),
                );
                r.headers_mut()
                    .insert("content-type", "text/event-stream".parse().unwrap());
                r.headers_mut()
                    .insert("content-encoding", "gzip".parse().unwrap());
                return Ok::<_, Infallible>(r);
            }
            let res = model.answer(req).await;
            Ok(res.map(|b| b.map_err(std::io::Error::other).boxed_unsync()))
        }
    })
}

/// The first bytes of a gzip stream: unreadable as SSE, and without an end.
const GZIP_BYTES: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\x56\x4a\x49\x2c\x49\x54";

#[tokio::test]
async fn an_encoded_event_stream_passes_through_unwatched_with_nothing_written_into_it() {
    let model = Upstream::new(Dialect::Anthropic, Whole::default());
    let called = Arc::default();
    let svc = encoded_for(&["primary"], model, &called);
    let chain = FallbackChain::new().fallbacks("primary", ["fallback"]);
    let svc = MidStreamFallbackLayer::new(chain).layer(svc);
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert!(!res.body().is_watched());
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &bytes[..],
        GZIP_BYTES,
        "the bytes as they came, nothing added"
    );
    assert_eq!(*called.lock().unwrap(), ["primary"]);
}

#[tokio::test(start_paused = true)]
async fn a_fallback_answering_an_encoded_stream_mid_answer_is_a_failure_and_the_next_one_continues()
{
    let model = broken_after(Dialect::Anthropic, &HELLO, 2);
    let called = Arc::default();
    let svc = encoded_for(&["fallback"], model, &called);
    let chain = FallbackChain::new()
        .model("fallback", Prefill::Assistant)
        .model("fallback-2", Prefill::Assistant)
        .fallbacks("primary", ["fallback", "fallback-2"]);
    let svc = MidStreamFallbackLayer::new(chain).layer(svc);
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert!(
        !bytes.windows(2).any(|w| w == &GZIP_BYTES[..2]),
        "no gzip byte reached the plain stream"
    );
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        HELLO.concat()
    );
    assert_eq!(
        *called.lock().unwrap(),
        ["primary", "fallback", "fallback-2"]
    );
}
