//! What the layer tells programs: the attempt extension the inner service gets, the
//! observer's reports, and the provenance a response carries. Paused time, and an upstream
//! that takes 100 ms to answer each call, so every duration is exact.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tower::{Layer, Service, ServiceExt};
use tower_midstream::{
    Attempt, AttemptOutcome, AttemptReport, FailureClass, FallbackBody, MidStreamFallbackLayer,
    Observer, Prefill, Provenance, RequestOutcome, RequestReport, Strategy,
};

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

const CALL: Duration = Duration::from_millis(100);

/// `upstream` behind a service that takes 100 ms to answer and notes the attempt of every
/// request it gets.
fn slow_service(
    upstream: Upstream,
    seen: Arc<Mutex<Vec<Option<Attempt>>>>,
) -> impl Service<
    Request<tower_midstream::ReplayBody<Full<Bytes>>>,
    Response = Response<upstream::ScriptBody>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let inner = upstream::service(upstream);
    tower::service_fn(
        move |req: Request<tower_midstream::ReplayBody<Full<Bytes>>>| {
            seen.lock()
                .unwrap()
                .push(req.extensions().get::<Attempt>().cloned());
            let inner = inner.clone();
            async move {
                tokio::time::sleep(CALL).await;
                inner.oneshot(req).await
            }
        },
    )
}

/// A primary that breaks after two deltas, a first fallback that answers 503, and a second
/// that completes the answer with a prefill.
fn falls_back_twice() -> Upstream {
    broken_after(Dialect::Anthropic, &HELLO, 2).then(Scripted::Status {
        status: 503,
        content_type: "application/json",
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    })
}

struct Sent {
    head: http::response::Parts,
    body: FallbackBody<upstream::ScriptBody>,
    bytes: Bytes,
}

async fn send_through(
    layer: MidStreamFallbackLayer<tower_midstream::FallbackChain>,
    upstream: Upstream,
    seen: Arc<Mutex<Vec<Option<Attempt>>>>,
) -> Sent {
    let svc = layer.layer(slow_service(upstream, seen));
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let response = svc.oneshot(req).await.unwrap();
    let (head, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Sent {
        head,
        body,
        bytes: Bytes::from(bytes),
    }
}

#[tokio::test(start_paused = true)]
async fn every_request_the_inner_service_gets_names_its_attempt() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sent = send_through(
        MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true)),
        falls_back_twice(),
        seen.clone(),
    )
    .await;
    assert_eq!(
        check(Dialect::Anthropic, false, &sent.bytes).unwrap().text,
        HELLO.concat()
    );
    let prefill = Strategy::Prefill(Prefill::Assistant);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Some(Attempt::first(Some("primary".into()))),
            Some(Attempt::fallback(2, "fallback", prefill.clone())),
            Some(Attempt::fallback(3, "fallback-2", prefill)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_observer_hears_of_each_attempt_and_of_the_request_with_exact_timings() {
    let recorded = Arc::new(Recorded::default());
    let sent = send_through(
        MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true)).observer(recorded.clone()),
        falls_back_twice(),
        Arc::default(),
    )
    .await;
    drop(sent);
    let attempts = recorded.attempts.lock().unwrap().clone();
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| {
            (
                a.attempt().number(),
                a.attempt().target().map(str::to_owned),
                a.attempt().strategy_label(),
                a.outcome(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                1,
                Some("primary".into()),
                "original",
                AttemptOutcome::Failed(FailureClass::Transport)
            ),
            (
                2,
                Some("fallback".into()),
                "prefill",
                AttemptOutcome::Failed(FailureClass::Status(StatusCode::SERVICE_UNAVAILABLE))
            ),
            (
                3,
                Some("fallback-2".into()),
                "prefill",
                AttemptOutcome::Completed
            ),
        ]
    );
    let [first, second, third] = &attempts[..] else {
        unreachable!()
    };
    // Each call takes 100 ms; the client waited from the primary's failure (at 100 ms) until
    // the second fallback's first bytes (at 300 ms), through the first fallback's 503.
    assert_eq!(first.time_to_first_chunk(), Some(CALL));
    assert_eq!(second.time_to_first_chunk(), None);
    assert_eq!(third.time_to_first_chunk(), Some(CALL));
    assert_eq!(third.fallback_gap(), Some(2 * CALL));
    assert_eq!(first.fallback_gap(), None);
    assert_eq!(second.duration(), CALL);
    // What the client had when each attempt failed: "Hello there, ", two deltas.
    assert_eq!((first.sent_text_bytes(), first.sent_tokens()), (13, 2));
    assert_eq!((second.sent_text_bytes(), second.sent_tokens()), (13, 2));
    // Usage as each upstream reported it: the primary's message_start, nothing from the 503,
    // the whole of the last one.
    assert_eq!(first.usage().input_tokens(), Some(5));
    assert_eq!(first.usage().output_tokens(), None);
    assert_eq!(first.usage().response_model(), Some("primary"));
    assert_eq!(second.usage(), &tower_midstream::Usage::default());
    assert_eq!(third.usage().response_model(), Some("fallback-2"));
    assert!(third.usage().output_tokens().is_some_and(|n| n > 0));

    let requests = recorded.requests.lock().unwrap().clone();
    let [request] = &requests[..] else {
        panic!("one request report, got {requests:?}")
    };
    assert_eq!(request.outcome(), RequestOutcome::Completed);
    assert_eq!(request.attempts(), 3);
    assert_eq!(request.model(), Some("primary"));
    assert_eq!(request.time_to_first_chunk(), Some(CALL));
    assert_eq!(request.duration(), 3 * CALL);
    let served: Vec<u32> = request.served_by().iter().map(Attempt::number).collect();
    assert_eq!(served, [1, 3]);
    assert!(request.error().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_response_names_the_attempts_that_served_it_as_they_take_over() {
    // The primary answers 529 before its stream: the response's headers are the fallback's.
    let upstream = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: HELLO.concat(),
            ..Whole::default()
        },
    )
    .then(Scripted::Status {
        status: 529,
        content_type: "application/json",
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    })
    .cut_model_answer(4, Fault::Reset);
    let svc = MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true))
        .layer(slow_service(upstream, Arc::default()));
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let response = svc.oneshot(req).await.unwrap();
    let at_headers = response.extensions().get::<Provenance>().unwrap().clone();
    let targets = |p: &Provenance| -> Vec<String> {
        p.served_by()
            .iter()
            .map(|a| format!("{} {}", a.target().unwrap(), a.strategy_label()))
            .collect()
    };
    assert_eq!(targets(&at_headers), ["fallback restart"]);
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }
    // The first fallback broke mid-stream; the second continued it.
    assert_eq!(
        targets(&at_headers),
        ["fallback restart", "fallback-2 prefill"]
    );
    assert_eq!(
        targets(body.provenance().unwrap()),
        targets(&at_headers),
        "the body and the extension share one record"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_hangs_up_ends_the_attempt_and_the_request_as_gone() {
    let recorded = Arc::new(Recorded::default());
    let upstream = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: HELLO.concat(),
            ..Whole::default()
        },
    )
    .then(Scripted::Stream {
        bytes: Bytes::from(events_of(&anthropic_text_stream(&HELLO))[..3].concat()),
        cuts: vec![],
        fault: Some(Fault::Stall),
    });
    let svc = MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true))
        .observer(recorded.clone())
        .layer(slow_service(upstream, Arc::default()));
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let mut body = svc.oneshot(req).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    let attempts = recorded.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome(), AttemptOutcome::ClientGone);
    let requests = recorded.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].outcome(), RequestOutcome::ClientGone);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_gives_up_reports_every_failure() {
    let recorded = Arc::new(Recorded::default());
    let upstream = broken_after(Dialect::Anthropic, &HELLO, 1);
    let sent = send_through(
        MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true))
            .max_attempts(1)
            .observer(recorded.clone()),
        upstream,
        Arc::default(),
    )
    .await;
    assert!(sent.body.fallback_error().is_some());
    assert_eq!(sent.head.status, 200);
    drop(sent);
    let requests = recorded.requests.lock().unwrap().clone();
    assert_eq!(requests[0].outcome(), RequestOutcome::GaveUp);
    let err = requests[0].error().expect("the error given up with");
    assert_eq!(err.original().class(), FailureClass::Transport);
    assert_eq!(err.original().target(), Some("primary"));
}

#[tokio::test(start_paused = true)]
async fn a_retryable_status_with_no_attempt_left_gives_up_with_its_error_on_the_report_and_the_response(
) {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    for max_attempts in [1, 2] {
        let recorded = Arc::new(Recorded::default());
        let status = Scripted::Status {
            status: 503,
            content_type: "application/json",
            body,
        };
        let upstream = Upstream::new(Dialect::Anthropic, Whole::default())
            .then(status.clone())
            .then(status);
        let chain = tower_midstream::FallbackChain::new().fallbacks("primary", ["fallback"]);
        let sent = send_through(
            MidStreamFallbackLayer::new(chain)
                .max_attempts(max_attempts)
                .observer(recorded.clone()),
            upstream,
            Arc::default(),
        )
        .await;
        assert_eq!(sent.head.status, 503, "{max_attempts} attempts");
        assert_eq!(&sent.bytes[..], body.as_bytes(), "passed on as it came");
        let on_response = sent
            .head
            .extensions
            .get::<tower_midstream::FallbackError>()
            .cloned()
            .expect("the response carries the error");
        assert_eq!(on_response.attempts().len(), max_attempts as usize);
        drop(sent);
        let requests = recorded.requests.lock().unwrap().clone();
        assert_eq!(requests[0].outcome(), RequestOutcome::GaveUp);
        let err = requests[0].error().expect("the report carries the error");
        assert_eq!(
            err.original().class(),
            FailureClass::Status(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(err.attempts().len(), max_attempts as usize);
        let attempts = recorded.attempts.lock().unwrap().clone();
        assert!(attempts
            .iter()
            .all(|a| matches!(a.outcome(), AttemptOutcome::Failed(_))));
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_error_passed_on_is_reported_as_such() {
    let recorded = Arc::new(Recorded::default());
    let upstream = Upstream::new(Dialect::Anthropic, Whole::default()).then(Scripted::Status {
        status: 400,
        content_type: "application/json",
        body: r#"{"type":"error","error":{"type":"invalid_request_error","message":"no"}}"#,
    });
    let sent = send_through(
        MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true)).observer(recorded.clone()),
        upstream,
        Arc::default(),
    )
    .await;
    assert_eq!(sent.head.status, 400);
    let provenance = sent.head.extensions.get::<Provenance>().unwrap();
    assert_eq!(provenance.current().map(|a| a.number()), Some(1));
    drop(sent);
    let attempts = recorded.attempts.lock().unwrap().clone();
    assert_eq!(attempts[0].outcome(), AttemptOutcome::PassedOn);
    let requests = recorded.requests.lock().unwrap().clone();
    assert_eq!(requests[0].outcome(), RequestOutcome::PassedOn);
}

/// `Observer` is object safe: the layer keeps it as `Arc<dyn Observer>`.
#[allow(dead_code)]
fn observer_is_object_safe(observer: &dyn Observer) -> &dyn Observer {
    observer
}

#[tokio::test(start_paused = true)]
async fn the_first_attempts_model_is_read_from_the_body_only_when_asked_for() {
    // No observer, no subscriber: nobody has asked for the model when the inner service is
    // called, so the body has not been read for it.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: HELLO.concat(),
            ..Whole::default()
        },
    );
    let debug_at_call = Arc::new(Mutex::new(String::new()));
    let debug = debug_at_call.clone();
    let inner = slow_service(upstream, seen.clone());
    let svc =
        MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true)).layer(tower::service_fn(
            move |req: Request<tower_midstream::ReplayBody<Full<Bytes>>>| {
                *debug.lock().unwrap() =
                    format!("{:?}", req.extensions().get::<Attempt>().unwrap());
                inner.clone().oneshot(req)
            },
        ));
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    svc.oneshot(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert!(
        debug_at_call.lock().unwrap().contains("<in body>"),
        "{}",
        debug_at_call.lock().unwrap()
    );
    // Asked for, it is read.
    let attempt = seen.lock().unwrap()[0].clone().unwrap();
    assert_eq!(attempt.target(), Some("primary"));
    assert!(format!("{attempt:?}").contains("\"primary\""));
}
