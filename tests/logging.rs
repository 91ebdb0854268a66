//! What the layer logs. Alone in its binary: tracing caches per call site whether anyone
//! listens, and tests on other threads without a subscriber would spoil that cache.

mod support;

use std::sync::{Arc, Mutex};

use support::*;
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill};

#[tokio::test(start_paused = true)]
async fn each_failure_and_attempt_is_logged_with_target_strategy_and_class() {
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || LogWriter(writer.clone()))
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let upstream = broken_after(Dialect::Anthropic, &HELLO, 2);
    let chain = one_fallback(Prefill::Assistant);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    assert_eq!(
        check(Dialect::Anthropic, false, &out.bytes).unwrap().text,
        HELLO.concat()
    );
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let failed = line_with(&logs, "upstream attempt failed");
    for field in [
        r#"midstream.attempt=1 "#,
        r#"gen_ai.request.model="primary""#,
        r#"midstream.strategy="original""#,
        r#"error.type="transport""#,
        r#"midstream.failure.detail="connection reset by peer""#,
        "midstream.sent_text_bytes=13",
        "midstream.sent_tokens=2",
    ] {
        assert!(failed.contains(field), "{field} missing: {failed}");
    }
    let fell_back = line_with(&logs, "falling back");
    for field in [
        r#"midstream.attempt=2 "#,
        r#"gen_ai.request.model="fallback""#,
        r#"midstream.strategy="prefill""#,
        r#"midstream.prefill="assistant""#,
    ] {
        assert!(fell_back.contains(field), "{field} missing: {fell_back}");
    }
    assert!(logs.contains("stream recovered"), "{logs}");
    assert!(logs.contains("completed on a fallback"), "{logs}");
}

/// Every field the layer writes reads the same way: strings quoted, numbers and flags bare,
/// never a bare word (the `to=fallback` next to `to="original"` of old).
#[tokio::test(start_paused = true)]
async fn every_field_is_a_quoted_string_a_number_or_a_flag() {
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || LogWriter(writer.clone()))
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // A stall, a fallback that answers 503, another that completes, and a request that gives
    // up: every event and span field the layer has.
    let upstream = broken_after(Dialect::OpenAi, &HELLO, 2).then(Scripted::Status {
        status: 503,
        content_type: "application/json",
        body: r#"{"error":{"type":"server_error","message":"busy"}}"#,
    });
    let chain = FallbackChain::new()
        .model("fallback", Prefill::Prefix)
        .model("fallback-2", Prefill::Prefix)
        .fallbacks("primary", ["fallback", "fallback-2"]);
    send(
        MidStreamFallbackLayer::new(chain.clone()),
        &upstream,
        Dialect::OpenAi,
        &openai_request(),
    )
    .await;
    let upstream = broken_after(Dialect::OpenAi, &HELLO, 2);
    send(
        MidStreamFallbackLayer::new(chain).max_attempts(1),
        &upstream,
        Dialect::OpenAi,
        &openai_request(),
    )
    .await;
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("giving up"), "{logs}");
    let mut checked = 0;
    for line in logs.lines() {
        for (name, value) in fields(line) {
            checked += 1;
            let bare_ok = value.parse::<f64>().is_ok() || value == "true" || value == "false";
            assert!(
                value.starts_with('"') || bare_ok,
                "{name}={value} is neither quoted nor a number: {line}"
            );
            assert!(
                name.starts_with("midstream.")
                    || name.starts_with("gen_ai.")
                    || name == "error.type",
                "{name} is outside the layer's namespaces: {line}"
            );
        }
    }
    assert!(checked > 40, "only {checked} fields in {logs}");
}

fn line_with<'a>(logs: &'a str, message: &str) -> &'a str {
    logs.lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no `{message}` in {logs}"))
}

/// The `name=value` pairs of a fmt line, in its spans and its event.
fn fields(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let Some(eq) = line[i..].find('=').map(|p| p + i) else {
            break;
        };
        let start = line[..eq].rfind([' ', '{', ':']).map_or(0, |p| p + 1);
        let name = line[start..eq].to_owned();
        let mut end = eq + 1;
        if bytes.get(end) == Some(&b'"') {
            end += 1;
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            end = (end + 1).min(bytes.len());
        } else {
            while end < bytes.len() && bytes[end] != b' ' && bytes[end] != b'}' {
                end += 1;
            }
        }
        out.push((name, line[eq + 1..end].to_owned()));
        i = end;
    }
    out
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The README shows this tree: a request that fell back twice, as the spans recorded it. Run
/// this test to see it; it fails when the README's copy is not what the code records.
#[tokio::test(start_paused = true)]
async fn the_span_tree_of_a_request_that_fell_back_twice_is_the_one_the_readme_shows() {
    use tower::{Layer, ServiceExt};
    use tracing_subscriber::layer::SubscriberExt;

    let tree = support::span_tree::SpanTree::default();
    let subscriber = tracing_subscriber::registry().with(tree.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    // claude-sonnet-4-6 breaks after two deltas; claude-opus-4-6 (no prefill: the instruction)
    // is overloaded; claude-sonnet-4-5 continues the answer from a prefill. Each call takes
    // 100 ms.
    let primary = String::from_utf8(events_of(&anthropic_text_stream(&HELLO))[..4].concat())
        .unwrap()
        .replace(r#""model":"primary""#, r#""model":"claude-sonnet-4-6""#);
    let upstream = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: HELLO.concat(),
            ..Whole::default()
        },
    )
    .then(Scripted::Stream {
        bytes: primary.into(),
        cuts: vec![],
        fault: Some(Fault::Reset),
    })
    .then(Scripted::Status {
        status: 529,
        content_type: "application/json",
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    });
    let chain = FallbackChain::new()
        .model("claude-opus-4-6", Prefill::None)
        .model("claude-sonnet-4-5", Prefill::Assistant)
        .fallbacks(
            "claude-sonnet-4-6",
            ["claude-opus-4-6", "claude-sonnet-4-5"],
        );
    let inner = support::upstream::service(upstream);
    let slow = tower::service_fn(move |req| {
        let inner = inner.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            inner.oneshot(req).await
        }
    });
    let mut body = anthropic_request();
    body["model"] = "claude-sonnet-4-6".into();
    let req = http::Request::post("/v1/messages")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let response = MidStreamFallbackLayer::new(chain)
        .layer(slow)
        .oneshot(req)
        .await
        .unwrap();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        check(Dialect::Anthropic, false, &bytes).unwrap().text,
        HELLO.concat()
    );
    let rendered = tree.render();
    println!("{rendered}");

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let shown = readme
        .split("<!-- span tree: tests/logging.rs -->\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has the span tree block");
    assert_eq!(
        shown, rendered,
        "README.md's span tree differs from what the code records (above)"
    );
}
