//! Every log line of a test binary, for tests whose work runs on other threads (the gateway's
//! connection tasks), which a thread-local subscriber would not see. A binary that uses it is
//! alone in its binary for that reason: the subscriber is global.

use std::sync::{Mutex, Once};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// What was logged so far; the first call installs the global subscriber, at `level`.
pub fn install(level: tracing::Level) -> &'static Mutex<Vec<u8>> {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| Writer)
            .with_ansi(false)
            .with_max_level(level)
            .init();
    });
    &LOGS
}

struct Writer;

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
