//! The `metrics` feature: `MetricsObserver`'s figures for a request that fell back twice, read
//! back from a recorder local to the test's thread (current-thread runtime, paused time, an
//! upstream that takes 100 ms per call).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use support::*;
use tower::{Layer, Service, ServiceExt};
use tower_midstream::{MetricsObserver, MidStreamFallbackLayer, ReplayBody};

const CALL: Duration = Duration::from_millis(100);

fn slow(
    upstream: Upstream,
) -> impl Service<
    Request<ReplayBody<Full<Bytes>>>,
    Response = Response<upstream::ScriptBody>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let inner = upstream::service(upstream);
    tower::service_fn(move |req| {
        let inner = inner.clone();
        async move {
            tokio::time::sleep(CALL).await;
            inner.oneshot(req).await
        }
    })
}

async fn read_all(
    layer: MidStreamFallbackLayer<tower_midstream::FallbackChain>,
    upstream: Upstream,
    model: &str,
) {
    let mut body = anthropic_request();
    body["model"] = model.into();
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = layer.layer(slow(upstream)).oneshot(req).await.unwrap();
    response.into_body().collect().await.unwrap();
}

/// `name{label=value,...}` → value, labels sorted.
fn figures(recorder: &DebuggingRecorder) -> BTreeMap<String, String> {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(n) => n.to_string(),
                DebugValue::Histogram(values) => format!(
                    "{:?}",
                    values.iter().map(|v| v.into_inner()).collect::<Vec<f64>>()
                ),
                DebugValue::Gauge(g) => g.into_inner().to_string(),
            };
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_request_that_fell_back_twice_is_counted_by_target_class_and_strategy() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let upstream = broken_after(Dialect::Anthropic, &HELLO, 2).then(Scripted::Status {
        status: 503,
        content_type: "application/json",
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    });
    let observer = MetricsObserver::new().targets(["primary", "fallback", "fallback-2"]);
    let layer = MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true)).observer(observer);
    read_all(layer, upstream, "primary").await;

    let got = figures(&recorder);
    let want: BTreeMap<String, String> = [
        (
            "midstream_attempts_total{class=transport,strategy=original,target=primary}",
            "1",
        ),
        (
            "midstream_attempts_total{class=status,strategy=prefill,target=fallback}",
            "1",
        ),
        (
            "midstream_attempts_total{class=completed,strategy=prefill,target=fallback-2}",
            "1",
        ),
        (
            "midstream_requests_total{dialect=anthropic,outcome=completed}",
            "1",
        ),
        (
            "midstream_attempts_per_request{dialect=anthropic,outcome=completed}",
            "[3.0]",
        ),
        // Each call takes 0.1 s; the client waited 0.2 s, through the 503.
        (
            "midstream_time_to_first_chunk_seconds{strategy=original,target=primary}",
            "[0.1]",
        ),
        (
            "midstream_time_to_first_chunk_seconds{strategy=prefill,target=fallback-2}",
            "[0.1]",
        ),
        (
            "midstream_fallback_gap_seconds{strategy=prefill,target=fallback-2}",
            "[0.2]",
        ),
        // The primary's message_start said 5 input tokens; the 503 said nothing.
        (
            "midstream_usage_tokens_total{target=primary,type=input}",
            "5",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (key, value) in &want {
        assert_eq!(got.get(key), Some(value), "{key} in {got:#?}");
    }
    // The last attempt's own usage: whatever it reported, counted under its name.
    for kind in ["input", "output"] {
        let key = format!("midstream_usage_tokens_total{{target=fallback-2,type={kind}}}");
        assert!(got.get(&key).is_some_and(|n| n != "0"), "{key} in {got:#?}");
    }
    let counted = got.keys().filter(|k| !want.contains_key(*k)).count();
    assert_eq!(counted, 2, "nothing else recorded: {got:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_model_not_listed_is_counted_as_other() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let upstream = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: HELLO.concat(),
            ..Whole::default()
        },
    );
    let observer = MetricsObserver::new().targets(["primary", "fallback"]);
    let layer = MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true)).observer(observer);
    read_all(layer, upstream, "made-up-by-a-client").await;
    let got = figures(&recorder);
    assert_eq!(
        got.get("midstream_attempts_total{class=completed,strategy=original,target=other}"),
        Some(&"1".to_owned()),
        "{got:#?}"
    );
    assert!(
        !got.keys().any(|k| k.contains("made-up")),
        "a client's model is never a label: {got:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_list_every_target_is_other_unless_all_are_asked_for() {
    let answer = || {
        Upstream::new(
            Dialect::Anthropic,
            Whole {
                text: HELLO.concat(),
                ..Whole::default()
            },
        )
    };
    let key = |target: &str| {
        format!("midstream_attempts_total{{class=completed,strategy=original,target={target}}}")
    };

    let recorder = DebuggingRecorder::new();
    let local = metrics::set_default_local_recorder(&recorder);
    let layer = MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true))
        .observer(MetricsObserver::new());
    read_all(layer, answer(), "made-up-by-a-client").await;
    let got = figures(&recorder);
    assert_eq!(got.get(&key("other")), Some(&"1".to_owned()), "{got:#?}");
    assert!(!got.keys().any(|k| k.contains("made-up")), "{got:#?}");
    drop(local);

    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let layer = MidStreamFallbackLayer::new(chain(Dialect::Anthropic, true))
        .observer(MetricsObserver::new().record_all_targets());
    read_all(layer, answer(), "made-up-by-a-client").await;
    let got = figures(&recorder);
    assert_eq!(
        got.get(&key("made-up-by-a-client")),
        Some(&"1".to_owned()),
        "{got:#?}"
    );
}
