//! What a planner is told about a failure, the decisions every planner makes about it, and a
//! way to make one by hand in a planner's unit tests.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;

use crate::address::Address;
use crate::chain::WhenNoPrefill;
use crate::dialect::{Continuation, Dialect};
use crate::error::{AttemptError, FailureClass};
use crate::json::RequestIndex;
use crate::plan::Plan;
use crate::strategy::{Prefill, RewriteError, Strategy};
use crate::target::Target;
use crate::transcript::Transcript;
use crate::translate;

/// What the planner is told about a failure.
///
/// Besides the facts (class, history, request, transcript), it answers the questions every
/// planner asks: may the answer restart invisibly ([`answer_started`](Self::answer_started)),
/// can it be continued at all ([`cannot_continue`](Self::cannot_continue)), how to continue on a
/// target of known capability ([`strategy_for`](Self::strategy_for)), and what to do after a
/// prefill was refused ([`retry_refused_prefill`](Self::retry_refused_prefill)).
/// [`FallbackChain`](crate::FallbackChain) is built from these; a planner of your own can be
/// too, and tested with a [`FailureBuilder`].
#[derive(Debug)]
pub struct Failure<'a> {
    pub(crate) class: FailureClass,
    pub(crate) detail: &'a str,
    pub(crate) attempt: u32,
    pub(crate) target: Option<&'a str>,
    pub(crate) address: &'a Address,
    pub(crate) dialect: Dialect,
    /// The wire format of the failed attempt's request.
    pub(crate) attempt_dialect: Dialect,
    pub(crate) request: &'a Request<Bytes>,
    pub(crate) index: &'a RequestIndex,
    pub(crate) transcript: &'a Transcript,
    pub(crate) history: &'a [AttemptError],
    /// Asked for a hedge: the attempt has not failed, it is slow to start.
    pub(crate) hedge: bool,
}

impl<'a> Failure<'a> {
    /// A failure made by hand, for a planner's unit tests: see [`FailureBuilder`].
    pub fn builder(dialect: Dialect, request: Request<Bytes>) -> FailureBuilder {
        FailureBuilder::new(dialect, request)
    }

    /// Whether the planner is asked for a hedge rather than about a failure: the attempt
    /// (still in flight) has sent no content within its hedge delay, and a restart on the
    /// target planned now races it (the class is then [`FailureClass::Stall`]). A plan that
    /// is not a restart, or gives up, means no hedge.
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }

    /// What kind of failure it was.
    pub fn class(&self) -> FailureClass {
        self.class
    }

    /// What the upstream said or did, in words.
    pub fn detail(&self) -> &str {
        self.detail
    }

    /// The attempt that failed: 1 for the request as the client sent it.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Where the attempt that failed went: the model the client asked for on the first
    /// attempt, then the target the planner chose.
    pub fn target(&self) -> Option<&str> {
        self.target
    }

    /// Where the attempt that failed sent its request: its target's [`Address`] (on the first
    /// attempt, the address of the request as the client sent it).
    pub fn address(&self) -> &Address {
        self.address
    }

    /// How long the failed response asked to wait before a retry (`Retry-After` in seconds or
    /// as an HTTP date, or `retry-after-ms`), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.history.last().and_then(AttemptError::retry_after)
    }

    /// Every failed attempt so far, this one last, with the target and strategy each used.
    pub fn history(&self) -> &[AttemptError] {
        self.history
    }

    /// The wire format of the request.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The wire format of the failed attempt's request: the client's, unless its target speaks
    /// another.
    pub fn attempt_dialect(&self) -> Dialect {
        self.attempt_dialect
    }

    /// The request as the client sent it, body included.
    pub fn request(&self) -> &Request<Bytes> {
        self.request
    }

    /// What the client has received so far.
    pub fn transcript(&self) -> &Transcript {
        self.transcript
    }

    /// The model the client asked for, if its request names one (in the body's `model`, or in
    /// the path: Gemini, Claude on Vertex AI).
    pub fn model(&self) -> Option<String> {
        self.index.model_name.clone()
    }

    /// Whether this request may carry an assistant prefill at all, whatever the target: not
    /// when Anthropic extended thinking is enabled, which the API refuses with prefill.
    pub fn prefill_allowed(&self) -> bool {
        self.dialect.spec().prefill_allowed(self.index)
    }

    /// Whether the request may carry a prefill to `target`: [`prefill_allowed`](Self::prefill_allowed)
    /// for a target of the client's dialect; for one of another, whether the request as
    /// translated for it may (a Responses client's request may reach Claude or Gemini with
    /// one; no request reaches a Responses model with one, the API has none).
    pub fn prefill_allowed_on(&self, target: &Target) -> bool {
        let to = target.speaks().unwrap_or(self.dialect);
        if to == self.dialect {
            return self.prefill_allowed();
        }
        self.translated_for(target, to)
            .is_ok_and(|translated| to.spec().prefill_allowed(&to.index("", &translated)))
    }

    /// Whether any of the answer reached the client (text, a refusal, a tool call, anything
    /// of one of several choices). While none has, a restart elsewhere is invisible to the
    /// client; reasoning alone does not count, since the layer drops a fallback's reasoning
    /// once the client has some.
    pub fn answer_started(&self) -> bool {
        let t = self.transcript;
        !t.text().is_empty()
            || t.tool_calls() > 0
            || t.refused()
            || t.overflowed()
            || (t.several_choices() && !t.is_empty())
    }

    /// Why the answer the client has cannot be continued elsewhere, if it cannot: it has
    /// several choices and some reached the client, it outgrew the transcript limit (the text
    /// to continue from is gone), a refusal reached the client, or tool calls already reached
    /// the client (a continuation request cannot carry them faithfully). A restart is still
    /// possible, but the client would see a second answer after the first.
    pub fn cannot_continue(&self) -> Option<&'static str> {
        let t = self.transcript;
        if t.several_choices() && !t.is_empty() {
            Some("the answer has several choices (n > 1), which no request can continue")
        } else if t.overflowed() {
            Some("the answer so far is longer than the transcript limit")
        } else if t.tool_calls() > 0 {
            Some("tool calls already reached the client")
        } else if t.refused() {
            Some("a refusal already reached the client")
        } else {
            None
        }
    }

    /// The strategy that continues the answer on a target of the client's dialect that accepts
    /// `prefill`, or why there is none, the way [`FallbackChain`](crate::FallbackChain) decides
    /// (for a target of any dialect, [`strategy_on`](Self::strategy_on)):
    ///
    /// * nothing of the answer reached the client: [`Strategy::Restart`];
    /// * it [`cannot_continue`](Self::cannot_continue) (more text than the transcript keeps,
    ///   or tool calls reached the client): no strategy, so that the client gets a clean error
    ///   naming the original failure; except that text past the transcript limit restarts
    ///   when `when_no_prefill` is [`WhenNoPrefill::Restart`], the one setting under which
    ///   the operator accepted a new answer after the partial one;
    /// * the target accepts prefill and the request allows it
    ///   ([`prefill_allowed`](Self::prefill_allowed)): [`Strategy::Prefill`];
    /// * otherwise `when_no_prefill`: the continue instruction ([`Strategy::instruction`]), a
    ///   restart, or no strategy.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_midstream::{Dialect, Failure, FailureClass, Prefill, Strategy, WhenNoPrefill};
    ///
    /// let request = http::Request::post("/v1/messages").body(Bytes::from_static(
    ///     br#"{"model":"a","max_tokens":99,"messages":[{"role":"user","content":"Hi"}]}"#,
    /// ))?;
    /// let scenario = Failure::builder(Dialect::ANTHROPIC_MESSAGES, request)
    ///     .class(FailureClass::Transport)
    ///     .sent_text("Hello, wor");
    /// let failure = scenario.build();
    /// let when = WhenNoPrefill::Instruction;
    /// assert_eq!(failure.strategy_for(Prefill::Assistant, when), Ok(Strategy::Prefill(Prefill::Assistant)));
    /// assert_eq!(failure.strategy_for(Prefill::None, when), Ok(Strategy::instruction()));
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn strategy_for(
        &self,
        prefill: Prefill,
        when_no_prefill: WhenNoPrefill,
    ) -> Result<Strategy, Cow<'static, str>> {
        self.strategy_with(prefill, || self.prefill_allowed(), when_no_prefill)
    }

    /// As [`strategy_for`](Self::strategy_for), for `target` as declared: its prefill form,
    /// and whether the request may carry one there ([`prefill_allowed_on`](Self::prefill_allowed_on)),
    /// which for a target of another dialect is that dialect's rule, not the client's.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_midstream::{Dialect, Failure, Prefill, Strategy, Target, WhenNoPrefill};
    ///
    /// let request = http::Request::post("/v1/responses").body(Bytes::from_static(
    ///     br#"{"model":"gpt-5","stream":true,"input":"Hi"}"#,
    /// ))?;
    /// let scenario = Failure::builder(Dialect::OPENAI_RESPONSES, request).sent_text("Hello, wor");
    /// let failure = scenario.build();
    /// let when = WhenNoPrefill::Instruction;
    /// // The Responses API has no prefill; Claude takes the answer so far as its own turn.
    /// let gpt = Target::new("gpt-5-mini");
    /// let claude = Target::new("claude-sonnet-4-5")
    ///     .prefill(Prefill::Assistant)
    ///     .dialect(Dialect::ANTHROPIC_MESSAGES);
    /// assert_eq!(failure.strategy_on(&gpt, when), Ok(Strategy::instruction()));
    /// assert_eq!(failure.strategy_on(&claude, when), Ok(Strategy::Prefill(Prefill::Assistant)));
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn strategy_on(
        &self,
        target: &Target,
        when_no_prefill: WhenNoPrefill,
    ) -> Result<Strategy, Cow<'static, str>> {
        let prefill_allowed = || self.prefill_allowed_on(target);
        self.strategy_with(target.accepts(), prefill_allowed, when_no_prefill)
    }

    /// `prefill_allowed` is asked only when a prefill would continue the answer (for a target
    /// of another dialect it translates the request).
    fn strategy_with(
        &self,
        prefill: Prefill,
        prefill_allowed: impl FnOnce() -> bool,
        when_no_prefill: WhenNoPrefill,
    ) -> Result<Strategy, Cow<'static, str>> {
        if !self.answer_started() {
            return Ok(Strategy::Restart);
        }
        let t = self.transcript;
        let overflowed_text =
            t.overflowed() && t.tool_calls() == 0 && !t.refused() && !t.several_choices();
        if overflowed_text && when_no_prefill == WhenNoPrefill::Restart {
            return Ok(Strategy::Restart);
        }
        if let Some(why) = self.cannot_continue() {
            return Err(why.into());
        }
        if prefill != Prefill::None && prefill_allowed() {
            return Ok(Strategy::Prefill(prefill));
        }
        match when_no_prefill {
            WhenNoPrefill::Instruction => Ok(Strategy::instruction()),
            WhenNoPrefill::Restart => Ok(Strategy::Restart),
            WhenNoPrefill::Error => {
                Err("the target does not accept prefill and when_no_prefill is `error`".into())
            }
        }
    }

    /// A target answered a prefill with HTTP 400: it does not accept prefill after all.
    pub fn prefill_refused(&self) -> bool {
        self.class == FailureClass::PrefillRejected
    }

    /// After a [refused prefill](Self::prefill_refused): the same target again (at the same
    /// address) with `instead` (the continue instruction, or a restart), unless an earlier
    /// attempt already tried that target that way. `None` for any other failure, or when it
    /// was tried.
    pub fn retry_refused_prefill(&self, instead: Strategy) -> Option<Plan> {
        if !self.prefill_refused() {
            return None;
        }
        let target = self.target?;
        let tried = self
            .history
            .iter()
            .any(|a| a.target() == Some(target) && a.strategy() == Some(&instead));
        // In the dialect it was tried in, at the address it went to; it takes no prefill
        // after all.
        let again = Target::new(target)
            .dialect(self.attempt_dialect)
            .at(self.address.clone());
        (!tried).then(|| self.retry_to(&again, instead))
    }

    /// The request for the next attempt: the original, sent to `target` (a model name, or a
    /// [`Target`] with its [`Address`]: its name placed in the body's `model` or in the path,
    /// as the address says) and the partial answer added as `strategy` says. `max_tokens` (or
    /// `max_completion_tokens`, `maxOutputTokens`) shrinks by the tokens already kept when the
    /// answer is continued. A [`Target`] that speaks another dialect gets the request
    /// translated, as [`rewrite_for`](Self::rewrite_for) says.
    ///
    /// Fails with a clear message when the body is not a request this dialect can rewrite
    /// (not JSON, no `messages` array, a prefill kind the dialect does not have, an address
    /// the dialect has no place for...), or when the request cannot be retried once the client
    /// has part of the response (an OpenAI Responses request with `background: true`, whose
    /// response goes on at the provider).
    pub fn rewrite(
        &self,
        target: impl Into<Target>,
        strategy: &Strategy,
    ) -> Result<Request<Bytes>, RewriteError> {
        self.rewrite_for(&target.into(), strategy)
    }

    /// [`rewrite`](Self::rewrite) into a [`Plan::retry`] (a [`Plan::retry_in`] for a target of
    /// another dialect), or a give-up that says why the request could not be rewritten.
    pub fn retry(&self, target: impl Into<Target>, strategy: Strategy) -> Plan {
        self.retry_to(&target.into(), strategy)
    }

    /// The client's request translated for `target`, which speaks `to`, another dialect than
    /// the client's.
    fn translated_for(
        &self,
        target: &Target,
        to: Dialect,
    ) -> Result<Bytes, translate::Untranslatable> {
        translate::translate(
            self.dialect,
            to,
            self.request.body(),
            target.name(),
            target.accepts(),
        )
    }

    /// Why the request cannot be sent to `target` at all, if it cannot: `target` speaks
    /// another dialect than the client's, and the request carries something that dialect has
    /// no form for (extended thinking, a server tool, a document, structured output, a
    /// parameter only the client's provider has...), or is not streamed. A planner skips such
    /// a target; [`FallbackChain`](crate::FallbackChain) does. `None` for a target of the
    /// client's own dialect.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_midstream::{Dialect, Failure, Target};
    ///
    /// let request = http::Request::post("/v1/messages").body(Bytes::from_static(
    ///     br#"{"model":"a","max_tokens":99,"stream":true,"thinking":{"type":"enabled","budget_tokens":64},
    ///         "messages":[{"role":"user","content":"Hi"}]}"#,
    /// ))?;
    /// let scenario = Failure::builder(Dialect::ANTHROPIC_MESSAGES, request);
    /// let gpt = Target::new("gpt-4.1").dialect(Dialect::OPENAI_CHAT);
    /// let why = scenario.build().cannot_send_to(&gpt).unwrap();
    /// assert!(why.contains("extended thinking"));
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn cannot_send_to(&self, target: &Target) -> Option<Cow<'static, str>> {
        let to = target.speaks().unwrap_or(self.dialect);
        if to == self.dialect {
            return None;
        }
        self.translated_for(target, to)
            .err()
            // It may quote the client's request (a parameter's name): fit for a log line.
            .map(|why| crate::untrusted::escaped(&why.0).into())
    }

    /// The request for the next attempt, to `target`, in the dialect it speaks: as
    /// [`rewrite`](Self::rewrite) for a target of the client's dialect; for another, the
    /// client's request translated (see [`cannot_send_to`](Self::cannot_send_to)), the answer
    /// so far carried in that dialect's own form as `strategy` says, and the path set as the
    /// target's address says, else the endpoint set to that dialect's (`…/messages` and
    /// `…/chat/completions` swap).
    pub fn rewrite_for(
        &self,
        target: &Target,
        strategy: &Strategy,
    ) -> Result<Request<Bytes>, RewriteError> {
        self.dialect
            .spec()
            .check_retry(strategy, self.index, self.transcript)?;
        let continuation = Continuation {
            text: self.transcript.text(),
            kept_tokens: self.transcript.kept_tokens(),
        };
        let to = target.speaks().unwrap_or(self.dialect);
        if to == self.dialect {
            return target.request_for(
                self.dialect,
                self.request,
                self.index,
                strategy,
                &continuation,
            );
        }
        let translated = self.translated_for(target, to).map_err(|why| {
            RewriteError::new(format!(
                "cannot translate the request to {}: {}",
                to.name(),
                crate::untrusted::escaped(&why.0)
            ))
        })?;
        // The translation names its model in its body; the target's address places it.
        let index = to.index("", &translated);
        let translated = crate::replay::rebuild(self.request, translated);
        let mut request = target.request_for(to, &translated, &index, strategy, &continuation)?;
        if request.uri() == self.request.uri() {
            translate::set_endpoint(&mut request, self.dialect, to, target.name());
        }
        Ok(request)
    }

    /// [`rewrite_for`](Self::rewrite_for) into a plan ([`Plan::retry_in`] for a target of
    /// another dialect), or a give-up that says why the request could not be written for it.
    pub fn retry_to(&self, target: &Target, strategy: Strategy) -> Plan {
        match (self.rewrite_for(target, &strategy), target.speaks()) {
            (Ok(request), Some(to)) if to != self.dialect => {
                Plan::retry_in(target.clone(), to, strategy, request)
            }
            (Ok(request), _) => Plan::retry(target.clone(), strategy, request),
            (Err(err), _) => Plan::give_up(format!(
                "cannot rewrite the request for {}: {err}",
                target.name()
            )),
        }
    }
}

/// Makes a [`Failure`] by hand, for a planner's unit tests: the request, what the client had
/// received, and the attempts that failed before.
///
/// By default it is the first attempt (to the model the request names) failing with a broken
/// stream before any of the answer reached the client.
///
/// ```
/// use bytes::Bytes;
/// use tower_midstream::{
///     Dialect, Failure, FailureClass, FallbackChain, Prefill, RetryPlanner, Strategy,
/// };
///
/// let request = http::Request::post("/v1/messages").body(Bytes::from_static(
///     br#"{"model":"big","max_tokens":99,"messages":[{"role":"user","content":"Hi"}]}"#,
/// ))?;
/// let scenario = Failure::builder(Dialect::ANTHROPIC_MESSAGES, request)
///     .class(FailureClass::Stall)
///     .sent_text("Once upon a");
/// let mut chain = FallbackChain::new()
///     .model("small", Prefill::Assistant)
///     .fallbacks("big", ["small"]);
/// let plan = chain.plan(&scenario.build());
/// assert_eq!(plan.strategy(), Some(&Strategy::Prefill(Prefill::Assistant)));
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Debug)]
pub struct FailureBuilder {
    dialect: Dialect,
    /// Where the failed attempt went.
    address: Address,
    attempt_dialect: Dialect,
    request: Request<Bytes>,
    index: RequestIndex,
    transcript: Transcript,
    /// Earlier attempts, then the one that failed.
    history: Vec<AttemptError>,
    hedge: bool,
}

impl FailureBuilder {
    fn new(dialect: Dialect, request: Request<Bytes>) -> Self {
        let index = dialect.index(request.uri().path(), request.body());
        let failed = AttemptError {
            attempt: 1,
            target: index.model_name.as_deref().map(Arc::from),
            strategy: None,
            class: FailureClass::Transport,
            detail: "connection reset".into(),
            error_type: None,
            retry_after: None,
            hedge: false,
        };
        FailureBuilder {
            dialect,
            address: index.named.address(),
            attempt_dialect: dialect,
            request,
            index,
            transcript: Transcript::new(usize::MAX),
            history: vec![failed],
            hedge: false,
        }
    }

    fn failed(&mut self) -> &mut AttemptError {
        self.history
            .last_mut()
            .expect("the failed attempt is always there")
    }

    /// How the attempt failed (default: [`FailureClass::Transport`]).
    pub fn class(mut self, class: FailureClass) -> Self {
        self.failed().class = class;
        self
    }

    /// Asks for a hedge beside the attempt instead (see [`Failure::is_hedge`]).
    pub fn hedge(mut self) -> Self {
        self.hedge = true;
        self
    }

    /// The failed response asked to wait `wait` before a retry (its `Retry-After`).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.failed().retry_after = Some(wait);
        self
    }

    /// What the upstream said or did (default: "connection reset").
    pub fn detail(mut self, detail: &str) -> Self {
        self.failed().detail = detail.into();
        self
    }

    /// The failed attempt went to `target` with `strategy` (default: the first attempt, to the
    /// model the request names).
    pub fn attempt_to(mut self, target: impl Into<Target>, strategy: Strategy) -> Self {
        let target = target.into();
        self.address = target.address().clone();
        let failed = self.failed();
        failed.target = Some(target.name().into());
        failed.strategy = Some(strategy);
        self
    }

    /// The failed attempt's request was in `dialect` (default: the client's): its target
    /// speaks another.
    pub fn attempt_in(mut self, dialect: Dialect) -> Self {
        self.attempt_dialect = dialect;
        self
    }

    /// An attempt that failed before this one, with `class`; call in order. The first call
    /// describes the first attempt (its strategy is ignored: it is the request as sent).
    pub fn after(mut self, target: &str, strategy: Strategy, class: FailureClass) -> Self {
        let at = self.history.len() - 1;
        let earlier = AttemptError {
            attempt: 0,
            target: Some(target.into()),
            strategy: (at > 0).then_some(strategy),
            class,
            detail: class.to_string().into(),
            error_type: None,
            retry_after: None,
            hedge: false,
        };
        self.history.insert(at, earlier);
        for (n, attempt) in self.history.iter_mut().enumerate() {
            attempt.attempt = n as u32 + 1;
        }
        self
    }

    /// The client received `text` of the answer, as one delta (one token).
    pub fn sent_text(mut self, text: &str) -> Self {
        if !text.is_empty() {
            self.transcript.mark_started();
            if let Some(t) = self.transcript.text_mut() {
                t.push_str(text);
            }
            self.transcript.check_limit();
            self.transcript.add_kept_token();
        }
        self
    }

    /// The client received `calls` complete tool calls.
    pub fn sent_tool_calls(mut self, calls: usize) -> Self {
        self.transcript.mark_started();
        for _ in 0..calls {
            self.transcript.add_tool_call();
        }
        self
    }

    /// The answer the client received outgrew the transcript limit.
    pub fn overflowed(mut self) -> Self {
        let mut transcript = Transcript::new(0);
        transcript.mark_started();
        if let Some(t) = transcript.text_mut() {
            t.push('…');
        }
        transcript.check_limit();
        self.transcript = transcript;
        self
    }

    /// The failure, as a planner sees it.
    pub fn build(&self) -> Failure<'_> {
        let failed = self
            .history
            .last()
            .expect("the failed attempt is always there");
        Failure {
            class: failed.class,
            detail: &failed.detail,
            attempt: failed.attempt,
            target: failed.target.as_deref(),
            address: &self.address,
            dialect: self.dialect,
            attempt_dialect: self.attempt_dialect,
            request: &self.request,
            index: &self.index,
            transcript: &self.transcript,
            history: &self.history,
            hedge: self.hedge,
        }
    }
}
