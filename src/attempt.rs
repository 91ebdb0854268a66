//! What the inner service is told about each attempt.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use crate::address::Address;
use crate::dialect::Dialect;
use crate::strategy::Strategy;

/// The attempt a request belongs to, in the extensions of every request the layer sends to the
/// inner service, so that it routes without reading the body again.
///
/// [`target`](Self::target) is where this attempt goes: on the first attempt, the model the
/// client's request names (its body's `model`, or its path's for Gemini and Claude on Vertex
/// AI); on later ones, the target the planner chose (with
/// [`FallbackChain`](crate::FallbackChain), the fallback model, which the layer has also
/// written where its [`address`](Self::address) says: the body's `model`, or the path). The
/// first attempt's is read from the body when first asked for (by the inner service, the
/// layer's spans when a subscriber listens to them, the observer), or on the first failure,
/// once; a request nobody asks about costs no read of its body.
///
/// [`dialect`](Self::dialect) is the wire format of this attempt's request: the client's, unless
/// the target speaks another ([`Target::dialect`](crate::Target::dialect), or Claude on Vertex
/// AI's address for a client of another dialect); then the layer has translated the body, and
/// set the path's endpoint to that dialect's (`/v1/messages` becomes `/v1/chat/completions`) or
/// to the address's, and the inner service routes the request (its upstream, its credentials)
/// by it and by [`address`](Self::address).
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
#[derive(Clone)]
pub struct Attempt {
    number: u32,
    target: Target,
    address: Address,
    strategy: Option<Strategy>,
    hedge: bool,
    dialect: Option<Dialect>,
}

#[derive(Clone)]
enum Target {
    Known(Option<Arc<str>>),
    /// The first attempt's: the `model` of the client's body, read once, when first asked for.
    InBody(Arc<ModelInBody>),
}

/// The `model` a collected request body names, read at most once, by whoever needs it first.
///
/// It lets go of the body once the model is known: an `Attempt` outlives its request (in
/// `Provenance`, in reports an observer may queue) and must not keep a body of megabytes alive.
pub(crate) struct ModelInBody {
    body: Mutex<Option<Bytes>>,
    model: OnceLock<Option<Arc<str>>>,
}

impl fmt::Debug for ModelInBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelInBody")
            .field("model", &self.known())
            .finish_non_exhaustive()
    }
}

impl ModelInBody {
    pub(crate) fn new(body: Bytes) -> Arc<Self> {
        Arc::new(ModelInBody {
            body: Mutex::new(Some(body)),
            model: OnceLock::new(),
        })
    }

    /// The model, reading the body the first time.
    pub(crate) fn get(&self) -> Option<&Arc<str>> {
        self.model
            .get_or_init(|| self.take_body().and_then(|body| read_model(&body)))
            .as_ref()
    }

    /// The body, the one time it is needed; `None` after.
    fn take_body(&self) -> Option<Bytes> {
        self.body.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The model, if it was read already.
    pub(crate) fn known(&self) -> Option<Option<&Arc<str>>> {
        self.model.get().map(Option::as_ref)
    }

    /// Records the model read along with the rest of the body, so it is not read twice.
    pub(crate) fn set(&self, model: Option<&str>) {
        let _ = self.model.set(model.map(Arc::from));
        drop(self.take_body());
    }
}

/// The top-level `model` string of a JSON object; `None` for anything else.
fn read_model(body: &[u8]) -> Option<Arc<str>> {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        model: Option<Cow<'a, str>>,
    }
    // A derived struct would read an array too, field by field: no request is one.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let top: Top<'_> = serde_json::from_slice(body).ok()?;
    top.model.map(|m| Arc::from(m.as_ref()))
}

impl Attempt {
    /// The first attempt: the request as the client sent it, for `model` (the body's, if it
    /// names one).
    pub fn first(model: Option<Arc<str>>) -> Self {
        Attempt {
            number: 1,
            target: Target::Known(model),
            address: Address::native(),
            strategy: None,
            hedge: false,
            dialect: None,
        }
    }

    /// The first attempt, whose target is read from `model` when asked for, at `address`
    /// (where the client's request names its model).
    pub(crate) fn first_in(model: &Arc<ModelInBody>, address: Address) -> Self {
        Attempt {
            number: 1,
            target: Target::InBody(model.clone()),
            address,
            strategy: None,
            hedge: false,
            dialect: None,
        }
    }

    /// Attempt `number` (2 or more), sent to `target` with a request rewritten by `strategy`.
    ///
    /// A fallback numbered 0 or 1 cannot exist: debug builds panic on one, release builds
    /// count it as 2.
    pub fn fallback(number: u32, target: impl Into<Arc<str>>, strategy: Strategy) -> Self {
        debug_assert!(
            number >= 2,
            "a fallback is attempt 2 or later, not {number}"
        );
        Attempt {
            number: number.max(2),
            target: Target::Known(Some(target.into())),
            address: Address::native(),
            strategy: Some(strategy),
            hedge: false,
            dialect: None,
        }
    }

    /// This attempt with its request addressed as `address` says.
    pub fn at(mut self, address: Address) -> Self {
        self.address = address;
        self
    }

    /// Where this attempt's request names its model: the target's [`Address`] (the body's
    /// `model`, or the path: Claude on Vertex AI). On the first attempt, the address of the
    /// request as the client sent it; an inner service that serves the model the client
    /// asked for elsewhere re-addresses it there ([`Target::readdress`](crate::Target::readdress)).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The same attempt, its request in `dialect`.
    pub fn in_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = Some(dialect);
        self
    }

    /// The wire format of this attempt's request. The layer always sets it; `None` only for an
    /// attempt made by hand without [`in_dialect`](Self::in_dialect).
    pub fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// 1 for the request as the client sent it, 2 for the first fallback, and so on.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Where this attempt goes: the model the client asked for on the first attempt (`None` if
    /// the body names none), then the target the planner chose.
    pub fn target(&self) -> Option<&str> {
        self.target_arc().map(|t| &**t)
    }

    /// How this attempt's request continues the answer; `None` on the first attempt.
    pub fn strategy(&self) -> Option<&Strategy> {
        self.strategy.as_ref()
    }

    /// Whether this is the request as the client sent it.
    pub fn is_first(&self) -> bool {
        self.strategy.is_none()
    }

    /// Whether this attempt is a hedge: started beside another that had sent no content
    /// within its hedge delay, to race it (see
    /// [`hedge_after`](crate::MidStreamFallbackLayer::hedge_after)).
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }

    /// The same attempt, as a hedge racing another.
    pub(crate) fn hedging(mut self) -> Self {
        self.hedge = true;
        self
    }

    /// The strategy as a label for logs and metrics: `original` for the first attempt, else
    /// [`Strategy::name`].
    pub fn strategy_label(&self) -> &'static str {
        self.strategy.as_ref().map_or("original", Strategy::name)
    }

    pub(crate) fn target_arc(&self) -> Option<&Arc<str>> {
        match &self.target {
            Target::Known(target) => target.as_ref(),
            Target::InBody(model) => model.get(),
        }
    }

    /// The target if it is known without reading the body.
    pub(crate) fn known_target(&self) -> Option<&str> {
        match &self.target {
            Target::Known(target) => target.as_deref(),
            Target::InBody(model) => model.known().flatten().map(|t| &**t),
        }
    }
}

// The dialect follows from the target (a chain declares each target's once): not compared, so
// that an attempt made by hand equals the layer's.
impl PartialEq for Attempt {
    fn eq(&self, other: &Self) -> bool {
        self.number == other.number
            && self.strategy == other.strategy
            && self.address == other.address
            && self.hedge == other.hedge
            && self.target() == other.target()
    }
}

impl Eq for Attempt {}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Attempt");
        d.field("number", &self.number);
        // Debug reads nothing: a target still in the body shows as such.
        match &self.target {
            Target::InBody(model) if model.known().is_none() => d.field("target", &"<in body>"),
            _ => d.field("target", &self.known_target()),
        };
        d.field("address", &self.address)
            .field("strategy", &self.strategy)
            .field("hedge", &self.hedge)
            .field("dialect", &self.dialect)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_let_go_once_its_model_is_known() {
        let body = Bytes::from(br#"{"model":"m","messages":[]}"#.to_vec());
        let read = ModelInBody::new(body.clone());
        assert!(!body.is_unique());
        let attempt = Attempt::first_in(&read, Address::native());
        assert_eq!(attempt.target(), Some("m"));
        assert!(body.is_unique(), "an attempt keeps its model, not the body");
        assert_eq!(attempt.target(), Some("m"), "and still answers");

        let set = ModelInBody::new(body.clone());
        set.set(Some("n"));
        assert!(body.is_unique());
        assert_eq!(
            Attempt::first_in(&set, Address::native()).target(),
            Some("n")
        );
    }
}
