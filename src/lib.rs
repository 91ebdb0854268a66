//! Keep streaming LLM responses alive when the upstream fails halfway through.
//!
//! (Crate documentation is written in full below the module list.)

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod body;
mod chain;
mod dialect;
mod error;
pub mod future;
mod json;
mod layer;
mod outbox;
mod plan;
mod recovery;
mod replay;
mod service;
mod sse;
mod stream;
mod transcript;

pub use body::FallbackBody;
pub use chain::{FallbackChain, WhenNoPrefill};
pub use dialect::Dialect;
pub use error::{AttemptError, FallbackError};
pub use layer::MidStreamFallbackLayer;
pub use plan::{
    Failure, FailureClass, Plan, Prefill, RetryPlanner, RewriteError, Strategy, DEFAULT_INSTRUCTION,
};
pub use replay::ReplayBody;
pub use service::{MidStreamFallback, NoFallback};
pub use transcript::Transcript;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Not part of the API: the SSE framer, exposed for the benchmarks and fuzz targets only.
/// It may change or go away in any release.
#[doc(hidden)]
pub mod internals {
    use bytes::Bytes;

    /// Cuts frames into complete events; see `src/sse.rs`.
    #[derive(Debug)]
    pub struct Framer(crate::sse::Framer);

    impl Framer {
        /// A framer refusing events over `max_event` bytes.
        pub fn new(max_event: usize) -> Self {
            Framer(crate::sse::Framer::new(max_event))
        }

        /// Starts cutting `frame`; drain `next_event` before the next push.
        pub fn push(&mut self, frame: Bytes) {
            self.0.push(frame)
        }

        /// The next complete event (raw bytes), `Some(Err(()))` if one exceeds the limit.
        #[allow(clippy::result_unit_err)]
        pub fn next_event(&mut self) -> Option<Result<&[u8], ()>> {
            self.0
                .next_event()
                .map(|r| r.map(|ev| ev.raw).map_err(|_| ()))
        }

        /// At the end of the body: a last event missing only its blank line.
        pub fn finish(&mut self) -> Option<&[u8]> {
            self.0.finish().map(|ev| ev.raw)
        }
    }

    /// The `event:` name and joined `data:` of a raw event.
    pub fn fields(raw: &[u8]) -> (Option<&[u8]>, Option<Vec<u8>>) {
        let f = crate::sse::Fields::parse(raw);
        let mut scratch = Vec::new();
        let data = f.data(raw, &mut scratch).map(<[u8]>::to_vec);
        (f.event, data)
    }
}
