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
