//! What the layer logs. Alone in its binary: tracing caches per call site whether anyone
//! listens, and tests on other threads without a subscriber would spoil that cache.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Value};
use support::*;
use tower::{Layer, ServiceExt};
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill, Redactor, ReplayBody};

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
    assert!(
        logs.contains("upstream attempt failed") && logs.contains("class=\"transport\""),
        "{logs}"
    );
    assert!(
        logs.contains("falling back")
            && logs.contains("to=fallback")
            && logs.contains("strategy=prefill (assistant)"),
        "{logs}"
    );
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

/// Runs `f` with every log line of this thread captured; returns what `f` gave and the logs.
async fn logged<F: std::future::Future>(f: F) -> (F::Output, String) {
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || LogWriter(writer.clone()))
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
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
    for (dialect, error) in [
        (Dialect::Anthropic, anthropic_error),
        (Dialect::OpenAi, openai_error),
    ] {
        // In the stream: the in-band error's message.
        let stream = match dialect {
            Dialect::Anthropic => anthropic_text_stream(&HELLO),
            Dialect::OpenAi => openai_text_stream(&HELLO),
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
    let quoted = format!(
        "Incorrect API key provided: {KEY}. Masked: sk-proj-abcd****************************wxyz."
    );
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
        for secret in [KEY, "sk-proj-abcd"] {
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
