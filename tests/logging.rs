//! What the layer logs. Alone in its binary: tracing caches per call site whether anyone
//! listens, and tests on other threads without a subscriber would spoil that cache.

mod support;

use std::sync::{Arc, Mutex};

use support::*;
use tower_midstream::{MidStreamFallbackLayer, Prefill};

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
