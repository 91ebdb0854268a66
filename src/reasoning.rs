//! How reasoning reaches the client.

/// Whether reasoning that has nothing to wait for streams live or is held until complete.
///
/// OpenAI-compatible servers (DeepSeek, vLLM, OpenRouter...) stream a model's reasoning as
/// Chat deltas (`delta.reasoning_content`, `delta.reasoning`), plain text with no signature.
/// A reasoning model may think for a minute before its answer: held, the client sees nothing
/// all that time (a chat UI shows no "thinking", and a timeout outside the layer may fire).
/// Anthropic thinking blocks are always held, whatever this says: they are useless without
/// their closing signature.
///
/// Either way, reasoning is never duplicated nor appended after the answer: once the client
/// has some reasoning or content, a fallback's own reasoning is dropped.
///
/// ```
/// use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Reasoning};
///
/// // Evaluations that keep the reasoning want it whole, from the attempt that answered.
/// let layer = MidStreamFallbackLayer::new(FallbackChain::new()).reasoning(Reasoning::Held);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reasoning {
    /// Reasoning streams as it comes (the default). If the upstream fails mid-reasoning, the
    /// client keeps the part it saw and the fallback's answer follows it, without the
    /// fallback's own reasoning.
    #[default]
    Live,
    /// Reasoning is held until it is complete (until the answer starts), then sent in one
    /// piece. If the upstream fails mid-reasoning, the client saw none of it, and the fallback
    /// restarts with reasoning of its own, whole.
    Held,
}
