//! What the layer logs. Alone in its binary: tracing caches per call site whether anyone
//! listens, and tests on other threads without a subscriber would spoil that cache.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};
use support::*;
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill};

fn anthropic_request() -> Value {
    json!({"model":"primary","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"Say hello."}]})
}

/// A primary that sends `deltas` of the answer and then resets.
fn broken_after(dialect: Dialect, all: &[&str], sent: usize) -> Upstream {
    let whole = Whole {
        text: all.concat(),
        ..Whole::default()
    };
    let bytes = match dialect {
        Dialect::Anthropic => anthropic_text_stream(all),
        Dialect::OpenAi => openai_text_stream(all),
    };
    // message_start + block start, or the role chunk, come before the deltas.
    let lead = match dialect {
        Dialect::Anthropic => 2,
        Dialect::OpenAi => 1,
    };
    let events = events_of(&bytes);
    Upstream::new(dialect, whole).then(Scripted::Stream {
        bytes: Bytes::from(events[..lead + sent].concat()),
        cuts: vec![],
        fault: Some(Fault::Reset),
    })
}

async fn send(
    layer: MidStreamFallbackLayer<FallbackChain>,
    upstream: &Upstream,
    dialect: Dialect,
    body: &Value,
) -> Outcome {
    run(
        layer,
        upstream,
        path(dialect),
        Bytes::from(body.to_string()),
    )
    .await
}

const HELLO: [&str; 4] = ["Hello", " there, ", "friend", "!"];

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
    let chain = FallbackChain::new()
        .model("fallback", Prefill::Assistant)
        .fallbacks("primary", ["fallback"]);
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
