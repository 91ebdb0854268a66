//! What the inner service is told about each attempt.

use std::sync::Arc;

use crate::strategy::Strategy;

/// The attempt a request belongs to, in the extensions of every request the layer sends to the
/// inner service, so that it routes without reading the body again.
///
/// [`target`](Self::target) is where this attempt goes: on the first attempt, the `model` the
/// client's body names; on later ones, the target the planner chose (with
/// [`FallbackChain`](crate::FallbackChain), the fallback model, which the layer has also
/// written into the body's `model`).
///
/// In an axum handler behind the layer, take it with `Extension<Attempt>`:
///
/// ```
/// use axum::{extract::Request, response::IntoResponse, Extension};
/// use tower_midstream::Attempt;
///
/// async fn forward(Extension(attempt): Extension<Attempt>, req: Request) -> impl IntoResponse {
///     let upstream = match attempt.target() {
///         Some(model) if model.starts_with("claude-") => "https://api.anthropic.com",
///         Some(_) => "https://api.openai.com",
///         None => return (http::StatusCode::BAD_REQUEST, "the request names no model"),
///     };
///     // ...send `req` to `upstream`: see examples/axum.rs.
///     # let _ = (upstream, req);
///     # (http::StatusCode::OK, "")
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    number: u32,
    target: Option<Arc<str>>,
    strategy: Option<Strategy>,
    hedge: bool,
}

impl Attempt {
    /// The first attempt: the request as the client sent it, for `model` (the body's, if it
    /// names one).
    pub fn first(model: Option<Arc<str>>) -> Self {
        Attempt {
            number: 1,
            target: model,
            strategy: None,
            hedge: false,
        }
    }

    /// Attempt `number` (2 or more), sent to `target` with a request rewritten by `strategy`.
    pub fn fallback(number: u32, target: impl Into<Arc<str>>, strategy: Strategy) -> Self {
        Attempt {
            number: number.max(2),
            target: Some(target.into()),
            strategy: Some(strategy),
            hedge: false,
        }
    }

    /// 1 for the request as the client sent it, 2 for the first fallback, and so on.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Where this attempt goes: the model the client asked for on the first attempt (`None` if
    /// the body names none), then the target the planner chose.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// How this attempt's request continues the answer; `None` on the first attempt.
    pub fn strategy(&self) -> Option<&Strategy> {
        self.strategy.as_ref()
    }

    /// Whether this is the request as the client sent it.
    pub fn is_first(&self) -> bool {
        self.strategy.is_none()
    }

    /// Whether this attempt races another one still in flight. Always false for now: reserved
    /// for hedged requests, so that inner services and observers can tell them apart once
    /// they exist.
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }

    /// The strategy as a label for logs and metrics: `original` for the first attempt, else
    /// [`Strategy::name`].
    pub fn strategy_label(&self) -> &'static str {
        self.strategy.as_ref().map_or("original", Strategy::name)
    }

    pub(crate) fn target_arc(&self) -> Option<&Arc<str>> {
        self.target.as_ref()
    }
}
