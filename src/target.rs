//! What the built-in planner knows about one model it can send a request to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;

use crate::address::{Address, Placement};
use crate::dialect::{Continuation, Dialect};
use crate::plan::Deadlines;
use crate::strategy::{Prefill, RewriteError, Strategy};

/// A model a [`FallbackChain`](crate::FallbackChain) may send a request to, and what it
/// accepts.
///
/// Every fact about a target lives here, so that a chain, a planner wrapping one, and the
/// example gateway's config read it from one place.
///
/// ```
/// use tower_midstream::{Address, Dialect, FallbackChain, Prefill, Target};
///
/// let chain = FallbackChain::new()
///     .target(Target::new("claude-sonnet-4-5").prefill(Prefill::Assistant))
///     .target(Target::new("claude-sonnet-4-6")) // rejects prefill: gets the instruction
///     // The model in the URL, the body without `model`: Claude on Vertex AI.
///     .target(Target::new("claude-sonnet-4-6@default").at(Address::vertex("proj", "global")))
///     // Another provider, reached in another wire format: requests are translated.
///     .target(Target::new("gpt-4.1").dialect(Dialect::OPENAI_CHAT))
///     .fallbacks(
///         "claude-sonnet-4-6",
///         ["claude-sonnet-4-5", "claude-sonnet-4-6@default", "gpt-4.1"],
///     );
/// assert_eq!(chain.target_of("claude-sonnet-4-5").unwrap().accepts(), Prefill::Assistant);
/// assert_eq!(chain.target_of("gpt-4.1").unwrap().speaks(), Some(Dialect::OPENAI_CHAT));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    name: Arc<str>,
    prefill: Prefill,
    address: Address,
    dialect: Option<Dialect>,
    /// Its attempts' deadlines, where they differ from the layer's.
    deadlines: Deadlines,
    /// Its same-target retries, where they differ from the chain's.
    retries: Option<u32>,
}

impl Target {
    /// The model called `name`, taken to reject prefill until declared otherwise, at its
    /// dialect's own address ([`Address::native`]), speaking whatever dialect the client speaks.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Target {
            name: name.into(),
            prefill: Prefill::None,
            address: Address::native(),
            dialect: None,
            deadlines: Deadlines::default(),
            retries: None,
        }
    }

    /// How many times it is retried, before anything reached the client, before the next
    /// target is tried (default: the chain's [`retries`](crate::FallbackChain::retries)).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Its same-target retries, if declared.
    pub(crate) fn declared_retries(&self) -> Option<u32> {
        self.retries
    }

    /// Its attempts' first-token deadline, instead of the layer's
    /// ([`first_token_timeout`](crate::MidStreamFallbackLayer::first_token_timeout)): a model
    /// that thinks long before it writes wants a longer one.
    pub fn first_token_timeout(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadlines.first_token = Some(deadline.into());
        self
    }

    /// Its attempts' idle timeout, instead of the layer's
    /// ([`idle_timeout`](crate::MidStreamFallbackLayer::idle_timeout)).
    pub fn idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.deadlines.idle = Some(idle.into());
        self
    }

    /// Its attempts' hedge delay, instead of the layer's
    /// ([`hedge_after`](crate::MidStreamFallbackLayer::hedge_after); `None`: never hedged): a
    /// model known to be slow to start wants a longer one, or none.
    pub fn hedge_after(mut self, delay: impl Into<Option<Duration>>) -> Self {
        self.deadlines.hedge = Some(delay.into());
        self
    }

    /// Its deadlines, where they differ from the layer's.
    pub(crate) fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    /// How it accepts its own partial answer (default [`Prefill::None`]: never sent one).
    pub fn prefill(mut self, prefill: Prefill) -> Self {
        self.prefill = prefill;
        self
    }

    /// Where requests for it name their model (default [`Address::native`]).
    pub fn at(mut self, address: Address) -> Self {
        self.address = address;
        self
    }

    /// The wire format it is reached in. A target that speaks another dialect than the
    /// client's gets the client's request translated (and its stream translated back); a
    /// request carrying something the translation cannot carry is never sent to it (see the
    /// crate documentation, "Across dialects"). Undeclared, a target speaks the client's
    /// dialect, whichever that is.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = Some(dialect);
        self
    }

    /// Its name: the model a request for it names, in its body or its path as its
    /// [`address`](Self::address) says.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it accepts prefill, as declared.
    pub fn accepts(&self) -> Prefill {
        self.prefill
    }

    /// The dialect it was declared to speak, else the one its address implies (Claude on
    /// Vertex AI speaks Anthropic Messages); `None`: the client's.
    pub fn speaks(&self) -> Option<Dialect> {
        self.dialect.or_else(|| self.address.dialect())
    }

    /// Where requests for it name their model.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// `request`, a request of `dialect` as a client sent it (naming its model in the body, or
    /// in its path), sent to this target instead: its name placed where the address says, its
    /// path and body changed as that address needs, the rest as it came.
    ///
    /// This is what the layer does to every fallback's request; an inner service does it to
    /// the first attempt when the model the client asked for is served at another address
    /// (a client speaking the Anthropic API whose model is on Vertex AI).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_midstream::{Address, Dialect, Target};
    ///
    /// let request = http::Request::post("/v1/messages")
    ///     .header("anthropic-version", "2023-06-01")
    ///     .body(Bytes::from_static(
    ///         br#"{"model":"claude","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
    ///     ))?;
    /// let vertex = Target::new("claude-sonnet-4-5@20250929").at(Address::vertex("p", "us-east5"));
    /// let sent = vertex.readdress(Dialect::ANTHROPIC_MESSAGES, &request)?;
    /// assert_eq!(
    ///     sent.uri().path(),
    ///     "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
    /// );
    /// assert_eq!(
    ///     &sent.body()[..],
    ///     br#"{"anthropic_version":"vertex-2023-10-16","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#
    /// );
    /// assert!(sent.headers().get("anthropic-version").is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn readdress(
        &self,
        dialect: Dialect,
        request: &Request<Bytes>,
    ) -> Result<Request<Bytes>, RewriteError> {
        let index = dialect.index(request.uri().path(), request.body());
        let continuation = Continuation {
            text: "",
            kept_tokens: 0,
        };
        self.request_for(dialect, request, &index, &Strategy::Restart, &continuation)
    }

    /// The request for this target: `request` (whose body `index` describes) continued as
    /// `strategy` says.
    pub(crate) fn request_for(
        &self,
        dialect: Dialect,
        request: &Request<Bytes>,
        index: &crate::json::RequestIndex,
        strategy: &Strategy,
        continuation: &Continuation<'_>,
    ) -> Result<Request<Bytes>, RewriteError> {
        let stream = index.value("stream").is_some_and(|v| v.trim() == "true");
        let placement = Placement::new(
            dialect,
            request.uri(),
            &index.named,
            &self.name,
            &self.address,
            stream,
        )?;
        let body =
            dialect
                .spec()
                .rewrite(request.body(), index, &placement, strategy, continuation)?;
        let mut out = crate::replay::rebuild(request, body);
        if let Some(path) = &placement.path {
            let mut parts = out.uri().clone().into_parts();
            parts.path_and_query = Some(
                path.parse()
                    .map_err(|_| RewriteError::new("the new path is not a valid URI path"))?,
            );
            *out.uri_mut() = http::Uri::from_parts(parts)
                .map_err(|_| RewriteError::new("the new path is not a valid URI"))?;
        }
        for name in placement.drop_headers {
            out.headers_mut().remove(*name);
        }
        Ok(out)
    }
}

impl From<&str> for Target {
    fn from(name: &str) -> Self {
        Target::new(name)
    }
}

impl From<String> for Target {
    fn from(name: String) -> Self {
        Target::new(name)
    }
}

impl From<&String> for Target {
    fn from(name: &String) -> Self {
        Target::new(name.as_str())
    }
}

impl From<Arc<str>> for Target {
    fn from(name: Arc<str>) -> Self {
        Target::new(name)
    }
}

impl From<&Target> for Target {
    fn from(target: &Target) -> Self {
        target.clone()
    }
}
