//! What the layer logs. Alone in its binary: tracing caches per call site whether anyone
//! listens, and tests on other threads without a subscriber would spoil that cache.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Value};
use support::*;
use tower::{Layer, ServiceExt};
use tower_midstream::{
    Backoff, Breaker, FallbackChain, MidStreamFallbackLayer, Prefill, Redactor, ReplayBody,
};

#[tokio::test(start_paused = true)]
async fn each_failure_and_attempt_is_logged_with_target_strategy_and_class() {
    let upstream = broken_after(Dialect::Anthropic, &HELLO, 2);
    let chain = one_fallback(Prefill::Assistant);
    let (out, logs) = logged_at(
        tracing::Level::INFO,
        send(
            MidStreamFallbackLayer::new(chain),
            &upstream,
            Dialect::Anthropic,
            &anthropic_request(),
        ),
    )
    .await;
    assert_eq!(
        check(Dialect::Anthropic, false, &out.bytes).unwrap().text,
        HELLO.concat()
    );
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
    let gives_up = broken_after(Dialect::OpenAi, &HELLO, 2);
    let ((), logs) = logged_at(tracing::Level::INFO, async {
        send(
            MidStreamFallbackLayer::new(chain.clone()),
            &upstream,
            Dialect::OpenAi,
            &openai_request(),
        )
        .await;
        send(
            MidStreamFallbackLayer::new(chain).max_attempts(1),
            &gives_up,
            Dialect::OpenAi,
            &openai_request(),
        )
        .await;
    })
    .await;
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
#[tokio::test(start_paused = true)]
async fn the_attempt_policy_logs_the_rule_that_acted_the_wait_chosen_and_circuit_changes() {
    const FAILED: &str = r#"{"type":"error","error":{"type":"api_error","message":"Internal"}}"#;
    // The primary answers 500, then 503 on its retry; the fallback answers.
    let upstream = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: HELLO.concat(),
            ..Whole::default()
        },
    )
    .then(Scripted::Status {
        status: 500,
        content_type: "application/json",
        body: FAILED,
    })
    .then(Scripted::Status {
        status: 503,
        content_type: "application/json",
        body: FAILED,
    });
    let chain = one_fallback(Prefill::Assistant)
        .retries(1)
        .backoff(Backoff::new(Duration::from_millis(500), Duration::from_secs(8)).jitter(|| 1.0))
        .circuit_breaker(Breaker::new(2, Duration::from_secs(30)));
    let (out, logs) = logged(send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    ))
    .await;
    assert_eq!(
        check(Dialect::Anthropic, false, &out.bytes).unwrap().text,
        HELLO.concat()
    );
    for needle in [
        "midstream.rule=\"same_target_retry\"",
        "midstream.wait_s=0.5",
        "falling back after a wait",
        "midstream.circuit=\"open\"",
        "midstream.target=\"primary\"",
    ] {
        assert!(logs.contains(needle), "{needle} not in:\n{logs}");
    }
}

/// Runs `f` with every log line of this thread captured; returns what `f` gave and the logs.
async fn logged<F: std::future::Future>(f: F) -> (F::Output, String) {
    logged_at(tracing::Level::DEBUG, f).await
}

/// [`logged`], with lines up to `level` only.
async fn logged_at<F: std::future::Future>(level: tracing::Level, f: F) -> (F::Output, String) {
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || LogWriter(writer.clone()))
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    let out = {
        let _guard = tracing::subscriber::set_default(subscriber);
        f.await
    };
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    (out, logs)
}

/// The messages of the error events (or error body) the client got.
fn error_messages(bytes: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut look = |v: &Value| {
        if let Some(m) = v["error"]["message"].as_str() {
            found.push(m.to_owned());
        }
    };
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        look(&v);
    }
    for ev in check::parse_sse(bytes) {
        if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
            look(&v);
        }
    }
    found
}

/// Text that would forge a log line and drive the operator's terminal, if written raw.
/// As JSON string content: the escapes decode to a newline and ESC.
const FORGERY: &str = r"bad\nWARN tower_midstream: forged line\u001b[2J\u001b[31m";

fn assert_not_forged(logs: &str, messages: &[String]) {
    assert!(
        logs.contains("forged line"),
        "the upstream text was logged:\n{logs}"
    );
    for line in logs.lines() {
        assert!(
            !line.starts_with("WARN tower_midstream: forged"),
            "a forged log line:\n{logs}"
        );
    }
    assert!(
        !logs.contains('\u{1b}'),
        "an escape sequence reached the log:\n{logs}"
    );
    assert!(!messages.is_empty(), "the client was told");
    for m in messages {
        assert!(
            m.contains("forged line") && !m.chars().any(char::is_control),
            "control characters in the error the layer wrote: {m:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn upstream_error_text_cannot_forge_a_log_line_or_reach_a_terminal() {
    let anthropic_error = format!(
        "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":\"{FORGERY}\"}}}}\n\n"
    );
    let openai_error = format!(
        "data: {{\"error\":{{\"message\":\"{FORGERY}\",\"type\":\"server_error\",\"code\":\"x\\u001b[0m\"}}}}\n\n"
    );
    let responses_error = format!(
        "event: error\ndata: {{\"type\":\"error\",\"sequence_number\":3,\"error\":{{\"type\":\"server_error\",\"code\":\"x\\u001b[0m\",\"message\":\"{FORGERY}\"}}}}\n\n"
    );
    for (dialect, error) in [
        (Dialect::Anthropic, anthropic_error),
        (Dialect::OpenAi, openai_error),
        (Dialect::Responses, responses_error),
    ] {
        // In the stream: the in-band error's message.
        let stream = match dialect {
            Dialect::Anthropic => anthropic_text_stream(&HELLO),
            Dialect::OpenAi => openai_text_stream(&HELLO),
            Dialect::Gemini => gemini_text_stream(&HELLO),
            Dialect::Responses => responses_text_stream(&HELLO),
        };
        let lead = events_of(&stream)[..3].concat();
        let upstream = Upstream::new(dialect, Whole::default()).then(Scripted::Stream {
            bytes: Bytes::from([lead, error.into_bytes()].concat()),
            cuts: vec![],
            fault: None,
        });
        let request = match dialect {
            Dialect::Anthropic => anthropic_request(),
            Dialect::OpenAi => openai_request(),
            Dialect::Gemini => gemini_request(),
            Dialect::Responses => responses_request(),
        };
        let layer = MidStreamFallbackLayer::new(one_fallback(Prefill::Assistant)).max_attempts(1);
        let (out, logs) = logged(send(layer, &upstream, dialect, &request)).await;
        assert_not_forged(&logs, &error_messages(&out.bytes));
    }
    // Before the stream: the description of an error body, twice (the fallback's too).
    const BODY: &str = r#"{"type":"error","error":{"type":"overloaded_error","message":"bad\nWARN tower_midstream: forged line\u001b[2J"}}"#;
    let status = Scripted::Status {
        status: 503,
        content_type: "application/json",
        body: BODY,
    };
    let upstream = Upstream::new(Dialect::Anthropic, Whole::default())
        .then(status.clone())
        .then(status);
    let layer = MidStreamFallbackLayer::new(one_fallback(Prefill::Assistant));
    let (out, logs) = logged(send(
        layer,
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    ))
    .await;
    assert_eq!(out.status.as_u16(), 503, "the original, as it came");
    assert_not_forged(
        &logs,
        &[out
            .error
            .or(out.extension_error)
            .unwrap()
            .original()
            .detail()
            .to_owned()],
    );
}

#[tokio::test(start_paused = true)]
async fn transport_error_text_cannot_forge_a_log_line() {
    let svc = tower::service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
            Ok(http_body::Frame::data(
                events_of(&anthropic_text_stream(&HELLO))[..3]
                    .concat()
                    .into(),
            )),
            Err(std::io::Error::other(
                "reset\nWARN tower_midstream: forged line\u{1b}[2J",
            )),
        ];
        let mut r = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        Ok::<_, Infallible>(r)
    });
    let svc = MidStreamFallbackLayer::new(FallbackChain::new())
        .max_attempts(1)
        .layer(svc);
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let (bytes, logs) = logged(async {
        let res = svc.oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap().to_bytes()
    })
    .await;
    assert_not_forged(&logs, &error_messages(&bytes));
}

const KEY: &str = "gw-upstream-key-0123456789abcdef";

/// Where an upstream may quote the key it was sent, and what reaches the client.
#[tokio::test(start_paused = true)]
async fn an_upstream_quoting_its_key_never_gets_it_to_the_client_or_the_log() {
    // Keys in the shapes real messages put them in: after a space, a newline (which the
    // layer escapes to `\n`), `=`, `/`; and one given key that straddles the 2 KiB cut of a
    // logged message, so that cutting before redacting would leave its first half.
    let shapes = format!(
        "Incorrect API key provided: {KEY}. Masked: sk-proj-abcd****************************wxyz.\n\
         Incorrect API key:\nsk-proj-NEWLINE0123456789 api_key=sk-proj-QUERY0123456789 \
         via proxy/sk-ant-PATH0123456789 Authorization=Bearer BEARER0123456789abcdef "
    );
    let quoted = format!("{shapes}{}{KEY}", "x".repeat(2030 - shapes.len()));
    let json_quoted = serde_json::to_string(&quoted).unwrap();
    let leak: &'static str = Box::leak(
        json!({"type":"error","error":{"type":"overloaded_error","message":quoted}})
            .to_string()
            .into_boxed_str(),
    );
    let auth: &'static str = Box::leak(
        json!({"error":{"message":quoted,"type":"invalid_request_error","code":"invalid_api_key"}})
            .to_string()
            .into_boxed_str(),
    );
    let lead = events_of(&anthropic_text_stream(&HELLO))[..3].concat();
    let in_band = |kind: &str| {
        Bytes::from(
            [
                lead.clone(),
                format!("event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":{json_quoted}}}}}\n\n").into_bytes(),
            ]
            .concat(),
        )
    };
    let status = |status, body| Scripted::Status {
        status,
        content_type: "application/json",
        body,
    };
    let stream = |bytes| Scripted::Stream {
        bytes,
        cuts: vec![],
        fault: None,
    };
    let cases: Vec<(&str, Vec<Scripted>)> = vec![
        ("a 401 passed on", vec![status(401, auth)]),
        (
            "a 529 handed back after the fallback failed too",
            vec![status(529, leak), status(503, leak)],
        ),
        (
            "an in-band server error, then giving up",
            vec![stream(in_band("api_error")), stream(in_band("api_error"))],
        ),
        (
            "an in-band client error passed on",
            vec![stream(in_band("invalid_request_error"))],
        ),
    ];
    for (what, script) in cases {
        let mut upstream = Upstream::new(Dialect::Anthropic, Whole::default());
        for s in script {
            upstream = upstream.then(s);
        }
        let layer = MidStreamFallbackLayer::new(one_fallback(Prefill::Assistant))
            .redact(Redactor::new().secret(KEY));
        let (out, logs) = logged(send(
            layer,
            &upstream,
            Dialect::Anthropic,
            &anthropic_request(),
        ))
        .await;
        let body = String::from_utf8_lossy(&out.bytes);
        assert!(
            body.contains("[redacted]"),
            "{what}: the client was told:\n{body}"
        );
        for secret in [
            &KEY[..11],
            "sk-proj-abcd",
            "NEWLINE0123",
            "QUERY0123",
            "PATH0123",
            "BEARER0123",
        ] {
            assert!(
                !body.contains(secret),
                "{what}: the key reached the client:\n{body}"
            );
            assert!(
                !logs.contains(secret),
                "{what}: the key reached the log:\n{logs}"
            );
            for e in out.error.iter().chain(&out.extension_error) {
                assert!(!e.to_string().contains(secret), "{what}: {e}");
            }
        }
    }
}

/// An upstream that compresses its event stream turns fallback off for it: the operator is
/// told, at a level they see, once for the response.
#[tokio::test]
async fn an_encoded_event_stream_passing_through_unwatched_is_a_warning() {
    let svc = tower::service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        let mut r = Response::new(Full::new(Bytes::from_static(b"\x1f\x8b\x08\x00")));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        r.headers_mut()
            .insert("content-encoding", "gzip".parse().unwrap());
        Ok::<_, Infallible>(r)
    });
    let svc = MidStreamFallbackLayer::new(FallbackChain::new()).layer(svc);
    let req = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(anthropic_request().to_string())))
        .unwrap();
    let (bytes, logs) = logged(async {
        let res = svc.oneshot(req).await.unwrap();
        assert!(!res.body().is_watched());
        res.into_body().collect().await.unwrap().to_bytes()
    })
    .await;
    assert_eq!(&bytes[..], b"\x1f\x8b\x08\x00", "passed on as it came");
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("passes through unwatched"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(
        warnings[0].contains(" WARN ") && warnings[0].contains("content_encoding=gzip"),
        "{}",
        warnings[0]
    );
}
