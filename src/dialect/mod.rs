//! Wire formats. A dialect file holds its wire format and nothing else: which requests it
//! serves, how to read its events ([`Decode`]), how to write them back when an event cannot go
//! out as it came ([`Encode`]), how its request carries a continuation and how it tells the
//! client about an error ([`Rules`]), and the facts the core needs ([`Wire`]). What every
//! dialect shares (modes, hold budgets, seam bookkeeping, the outline of a rewrite) lives once,
//! in `crate::relay` and `crate::rewrite`.
//!
//! Adding a format is one new file with a `const WIRE: Wire` (its facts, its codec and its
//! rules), its `mod` line and one line in [`REGISTRY`] (`openai_responses.rs` is the newest).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use crate::address::Named;
use crate::error::FailureClass;
use crate::json::{write_str, RequestIndex, RequestShape};
use crate::outbox::Outbox;
use crate::relay::hold::Held;
use crate::relay::item::{BlockKind, Item, Source, Span, Start, Stop, StopKind, Usage};
use crate::strategy::{RewriteError, Strategy};
use crate::transcript::Transcript;
use crate::untrusted::Redactor;

pub(crate) use crate::rewrite::Continuation;
pub(crate) use gemini::FOREIGN_CALL_SIGNATURE;

mod anthropic;
mod gemini;
mod openai_chat;
mod openai_responses;

/// What every dialect file works with: the core's traits, the items its events become, and the
/// JSON helpers its wire format is read and written with. A dialect file imports this and then
/// only what is its own.
mod prelude {
    pub(super) use super::{
        assistant_prefill_only, sse_event, stop_kind_of, Codec, Decode, Decoded, Encode, ErrorKind,
        FastText, Rewritten, Rules, Unreadable, Wire,
    };
    pub(super) use crate::json::{
        members, not_null, text, to_vec, write_str, RequestIndex, RequestShape,
    };
    pub(super) use crate::outbox::Outbox;
    pub(super) use crate::relay::hold::{Held, HeldKind};
    pub(super) use crate::relay::item::{
        BlockKind, InBand, Item, Literal, Source, Span, Start, Stop, StopKind, Usage,
    };
    pub(super) use crate::strategy::{Prefill, RewriteError, Strategy};
    pub(super) use bytes::Bytes;
    pub(super) use serde_json::{json, Value};
}

/// The wire format of a request and its stream.
///
/// By default the layer recognizes it from the request path (`…/messages` for Anthropic
/// Messages, `…/chat/completions` for OpenAI Chat Completions, `…/responses` for the OpenAI
/// Responses API) and passes any other request through untouched. Fix it for a whole layer with
/// [`MidStreamFallbackLayer::dialect`](crate::MidStreamFallbackLayer::dialect), or for one
/// request by inserting a `Dialect` into its extensions.
#[derive(Clone, Copy)]
pub struct Dialect(&'static Wire);

impl Dialect {
    /// Anthropic Messages (`POST /v1/messages`).
    pub const ANTHROPIC_MESSAGES: Dialect = Dialect(&anthropic::WIRE);
    /// OpenAI Chat Completions (`POST /v1/chat/completions`) and compatible servers.
    pub const OPENAI_CHAT: Dialect = Dialect(&openai_chat::WIRE);
    /// Gemini's own API (`POST /v1beta/models/{model}:streamGenerateContent?alt=sse`, also
    /// `/v1/`): the model in the path.
    pub const GEMINI: Dialect = Dialect(&gemini::WIRE);
    /// The OpenAI Responses API (`POST /v1/responses`).
    pub const OPENAI_RESPONSES: Dialect = Dialect(&openai_responses::WIRE);

    /// `anthropic`, `openai-chat`, `openai-responses` or `gemini`.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The dialect whose endpoint `path` is, if any: by the end of the path, or by a path that
    /// names a model where the dialect does (Gemini's `…/models/{model}:streamGenerateContent`,
    /// Claude on Vertex AI's `…/publishers/anthropic/models/{model}:streamRawPredict`).
    pub fn from_path(path: &str) -> Option<Dialect> {
        let path = path.trim_end_matches('/');
        REGISTRY.iter().copied().find(|d| {
            path.ends_with(d.0.path)
                || d.0.rules.model_in_path(path).is_some()
                || (*d == Dialect::ANTHROPIC_MESSAGES
                    && !matches!(Named::of(*d, path), Named::Body))
        })
    }

    /// The model a request of this dialect to `path` names in its path (Gemini's
    /// `…/models/{model}:…`, Claude on Vertex AI's `…/publishers/anthropic/models/{model}:…`),
    /// percent-decoded; `None` when the path names none (the body's `model` does), or names
    /// one that does not decode to text. For an inner service that routes by model.
    ///
    /// ```
    /// use tower_midstream::Dialect;
    ///
    /// let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
    /// assert_eq!(Dialect::GEMINI.model_in_path(path).as_deref(), Some("gemini-2.5-flash"));
    /// assert_eq!(Dialect::ANTHROPIC_MESSAGES.model_in_path("/v1/messages"), None);
    /// ```
    pub fn model_in_path(&self, path: &str) -> Option<String> {
        Named::of(*self, path).path_model(path)
    }

    /// The dialect called `name` (`anthropic`, `openai-chat`, `openai-responses`, `gemini`).
    pub fn from_name(name: &str) -> Option<Dialect> {
        REGISTRY.iter().copied().find(|d| d.name() == name)
    }

    pub(crate) fn spec(&self) -> &'static Wire {
        self.0
    }

    /// Whether this is `wire`'s dialect.
    pub(crate) fn is(&self, wire: &Wire) -> bool {
        self.0.name == wire.name
    }

    /// What rewriting a request of this dialect to `path` needs, read from its body in one
    /// pass; the model from the path where the request names it there.
    pub(crate) fn index(&self, path: &str, body: &[u8]) -> RequestIndex {
        let named = Named::of(*self, path);
        let mut index = RequestIndex::read(body, &self.0.request);
        if !matches!(named, Named::Body) {
            index.model_name = named.path_model(path);
        }
        index.named = named;
        index
    }
}

/// Every known dialect, in the order paths are matched.
const REGISTRY: &[Dialect] = &[
    Dialect::ANTHROPIC_MESSAGES,
    Dialect::OPENAI_CHAT,
    Dialect::OPENAI_RESPONSES,
    Dialect::GEMINI,
];

impl fmt::Debug for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Dialect").field(&self.name()).finish()
    }
}

impl PartialEq for Dialect {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Dialect {}

/// A wire format: the facts the core needs, and where its behaviour lives.
pub(crate) struct Wire {
    /// Its name in configuration files (`anthropic`).
    pub(crate) name: &'static str,
    /// Its generation endpoint's path ends with this.
    pub(crate) path: &'static str,
    /// What its requests are called in error messages (`Messages`).
    pub(crate) request_name: &'static str,
    /// Where its requests keep what a rewrite reads and changes.
    pub(crate) request: RequestShape,
    /// Every event repeats the stream's envelope (Chat's `id`, `created`, `model` in each
    /// chunk): once the client has another attempt's envelope, no event goes out as it came.
    pub(crate) stamps_every_event: bool,
    /// The event a whole stream ends with, to name a truncation (`message_stop`).
    pub(crate) terminal: &'static str,
    /// A partial answer a request carries loses its trailing whitespace (the Anthropic API
    /// rejects a prefill ending in whitespace); the seam then expects the model to send it
    /// again.
    pub(crate) trims_continuation: bool,
    /// Its reasoning is text with nothing to wait for (no signature, as Chat's reasoning
    /// deltas): it may stream live ([`Reasoning::Live`](crate::Reasoning::Live)).
    pub(crate) live_reasoning: bool,
    /// Its decoder and encoder (a [`Codec`]).
    pub(crate) codec: &'static dyn Codecs,
    pub(crate) rules: &'static dyn Rules,
}

/// Makes the decoders and encoders of a wire.
pub(crate) trait Codecs: Send + Sync + 'static {
    /// A reader for one attempt's stream.
    fn decoder(&self) -> Box<dyn Decode>;
    /// A writer for one client's stream.
    fn encoder(&self) -> Box<dyn Encode>;
}

/// The [`Codecs`] of a wire whose decoder is `D` and encoder `E`.
pub(crate) struct Codec<D, E>(PhantomData<fn() -> (D, E)>);

impl<D, E> Codec<D, E> {
    pub(crate) const NEW: Self = Codec(PhantomData);
}

impl<D, E> Codecs for Codec<D, E>
where
    D: Decode + Default + 'static,
    E: Encode + Default + 'static,
{
    fn decoder(&self) -> Box<dyn Decode> {
        Box::<D>::default()
    }

    fn encoder(&self) -> Box<dyn Encode> {
        Box::<E>::default()
    }
}

impl Wire {
    /// An error response body in this format.
    pub(crate) fn error_body(&self, kind: &ErrorKind, message: &str) -> Bytes {
        self.rules.error_body(kind, message)
    }

    /// Whether the request may end with an assistant prefill at all.
    pub(crate) fn prefill_allowed(&self, index: &RequestIndex) -> bool {
        self.rules.prefill_allowed(index)
    }
}

/// A rewrite step's result.
pub(crate) type Rewritten<T> = Result<T, RewriteError>;

/// How a wire format's requests carry a continuation, and how it writes an error body.
pub(crate) trait Rules: Send + Sync + 'static {
    /// An error response body in this format.
    fn error_body(&self, kind: &ErrorKind, message: &str) -> Bytes;

    /// Its clients read every line that is not blank and not `data: ` as data (google-genai
    /// parses it as JSON): comments and fields without data never go out as they came.
    fn data_lines_only(&self) -> bool {
        false
    }

    /// Whether the request may end with an assistant prefill at all.
    fn prefill_allowed(&self, _index: &RequestIndex) -> bool {
        true
    }

    /// Whether `strategy` can continue an answer in this format, for this request.
    fn check_continuation(&self, strategy: &Strategy, index: &RequestIndex) -> Rewritten<()>;

    /// Adds `partial` to the `content` of the client's own trailing assistant message.
    fn continue_content(&self, content: &mut serde_json::Value, partial: &str) -> Rewritten<()>;

    /// The key an assistant message carrying a prefill sets to `true` (`prefix`), if any.
    fn prefill_flag(&self, _strategy: &Strategy) -> Option<&'static str> {
        None
    }

    /// Top-level keys a continuation sets (vLLM's `continue_final_message`).
    fn continuation_flags(&self, _strategy: &Strategy) -> &'static [(&'static str, &'static [u8])] {
        &[]
    }

    /// The smallest token limit this request may be given (above a thinking budget).
    fn min_token_limit(&self, _index: &RequestIndex) -> u64 {
        1
    }

    /// Where a request to `path` names its model, for a dialect whose requests name it in the
    /// path (Gemini): the range of the model in `path`, percent-encoded as it came. A path
    /// this answers for is this dialect's too.
    fn model_in_path(&self, _path: &str) -> Option<Range<usize>> {
        None
    }

    /// The role of the model's own turns (`assistant`; Gemini's `model`).
    fn assistant_role(&self) -> &'static str {
        "assistant"
    }

    /// The partial answer as a new trailing assistant turn, marked with `flag` if given.
    fn assistant_turn(&self, partial: &str, flag: Option<&str>) -> Vec<u8> {
        let mut out = br#"{"role":"assistant","content":"#.to_vec();
        write_str(&mut out, partial);
        if let Some(flag) = flag {
            out.push(b',');
            write_str(&mut out, flag);
            out.extend_from_slice(b":true");
        }
        out.push(b'}');
        out
    }

    /// A user turn saying `text`.
    fn user_turn(&self, text: &str) -> Vec<u8> {
        let mut out = br#"{"role":"user","content":"#.to_vec();
        write_str(&mut out, text);
        out.push(b'}');
        out
    }

    /// Adds `partial` to the client's own trailing assistant turn (by default, to its
    /// `content`, as [`continue_content`](Self::continue_content) says).
    fn continue_turn(&self, turn: &mut serde_json::Value, partial: &str) -> Rewritten<()> {
        let content = turn
            .get_mut("content")
            .ok_or_else(|| RewriteError::new("the last message has no `content`"))?;
        self.continue_content(content, partial)
    }

    /// Top-level keys of the client's request that no other attempt may carry (Gemini's
    /// `continuationToken`, which resumes one upstream's stream); each must be one of the
    /// shape's extra keys.
    fn attempt_bound_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// A conversation given as one string (a JSON string literal, as it came), written as the
    /// turn that opens an array of them; `None`: this format's conversation is always an array.
    fn text_turn(&self, _literal: &str) -> Option<Vec<u8>> {
        None
    }

    /// Whether a partial answer continues the client's own trailing assistant message (a
    /// prefill the client began) rather than following it as a message of its own.
    fn extends_own_prefill(&self) -> bool {
        true
    }

    /// Why this request cannot be retried as `strategy` once the client has `transcript`, if
    /// it cannot (checked before any rewrite, restarts included).
    fn check_retry(
        &self,
        _strategy: &Strategy,
        _index: &RequestIndex,
        _transcript: &Transcript,
    ) -> Rewritten<()> {
        Ok(())
    }

    /// Whether the client's stream reports usage, for this request (its body): always on a wire
    /// whose streams always do (Anthropic), on Chat only with `stream_options.include_usage`.
    /// The one place that decides it: a stream translated from another wire's reports usage
    /// only then, and only then does the layer write an estimate when the upstream's report is
    /// lost.
    fn asks_usage(&self, _request: &[u8]) -> bool {
        false
    }

    /// What a stop reason of this wire (its text: `end_turn`, `length`) means, for an encoder
    /// of another wire.
    fn stop_kind(&self, _reason: &str) -> StopKind {
        StopKind::Other
    }
}

/// For a wire whose only prefill is a trailing assistant turn: every strategy but another
/// kind of prefill, which is not part of `wire` (named with what to use instead).
pub(crate) fn assistant_prefill_only(strategy: &Strategy, wire: &str) -> Rewritten<()> {
    match strategy {
        Strategy::Prefill(crate::strategy::Prefill::Assistant)
        | Strategy::Restart
        | Strategy::Instruction(_) => Ok(()),
        Strategy::Prefill(other) => Err(RewriteError::new(format!(
            "prefill `{}` is not part of {wire}",
            other.name()
        ))),
    }
}

/// The stop reason of the event in `src` (of any wire), in no wire's terms, for a client that
/// has had `tool_calls` calls: a turn that ended plainly after some ends for them (the clients
/// run calls only on a tool-use stop).
pub(crate) fn stop_kind_of(stop: &Stop, src: &Source<'_>, tool_calls: u32) -> StopKind {
    let raw = src.get(stop.reason);
    let kind = match crate::json::text(raw) {
        Some(reason) => src.wire.spec().rules.stop_kind(&reason),
        None => StopKind::Other,
    };
    match kind {
        StopKind::EndTurn | StopKind::StopSequence | StopKind::Other if tool_calls > 0 => {
            StopKind::ToolUse
        }
        kind => kind,
    }
}

/// Reads one attempt's stream: each event into the dialect-neutral items the core decides on.
pub(crate) trait Decode: Send {
    /// One complete event: its `event:` name and its data (the `data:` lines joined), both
    /// UTF-8. Pushes what it says onto `items`, in order; an event it cannot read exactly is
    /// `Err`, and nothing of it reaches the client. Pushing nothing means the event carries
    /// nothing the core needs.
    fn decode(&mut self, name: Option<&str>, data: &str, items: &mut Vec<Item>) -> Decoded;

    /// The event in the shape nearly every one has, a piece of text, read from its `event:`
    /// name and data as bytes and proven valid on the way: every byte checked, or fixed text
    /// around a literal that reads exactly. `None` sends the event to [`decode`](Self::decode).
    fn fast_text<'a>(&mut self, _name: Option<&[u8]>, _data: &'a [u8]) -> Option<FastText<'a>> {
        None
    }

    /// The output tokens the attempt's events said it had generated so far, for a wire whose
    /// every event carries a running count the client sees (Gemini's `usageMetadata`): a
    /// fallback's counts must start above it. `None` where events carry no such count.
    fn output_so_far(&self) -> Option<u64> {
        None
    }

    /// The client's stream has several choices (the relay is in its multi-choice mode): read
    /// every event as one of them, from the first ([`Item::ChoiceStart`]...).
    fn expect_choices(&mut self) {}
}

/// A piece of text read by [`Decode::fast_text`].
#[derive(Debug)]
pub(crate) struct FastText<'a> {
    pub(crate) block: u32,
    /// The JSON string literal, quotes included, that reads exactly.
    pub(crate) literal: &'a str,
    /// It has no escapes.
    pub(crate) plain: bool,
    /// Where the event says it stands in its stream, on a wire that numbers its events (the
    /// Responses API's `sequence_number`); `None` where it says nothing.
    pub(crate) number: Option<u64>,
}

/// What reading an event came to.
pub(crate) type Decoded = Result<(), Unreadable>;

/// An event a decoder cannot read exactly: what it is.
#[derive(Debug)]
pub(crate) struct Unreadable(pub(crate) Cow<'static, str>);

impl Unreadable {
    pub(crate) fn new(what: impl Into<Cow<'static, str>>) -> Self {
        Unreadable(what.into())
    }
}

/// Writes a client's stream, for events that cannot go out as they came. Every method gets
/// what it writes in neutral terms; `src` (the upstream event, and the wire it came in) lets
/// an encoder of the same wire keep what it does not model.
pub(crate) trait Encode: Send {
    /// `start` is the envelope of the client's stream: keep what later events need.
    fn begin(&mut self, start: &Start, src: &Source<'_>);

    /// The start did not go out as it came (its event was held): write it now, before the
    /// first event the encoder writes.
    fn start(&mut self, out: &mut Outbox);

    /// A live block (text) begins at the client's `index`.
    fn block_start(
        &mut self,
        index: u32,
        kind: BlockKind,
        native: Span,
        src: &Source<'_>,
        out: &mut Outbox,
    );

    /// Text for the client's block `index`.
    fn text(&mut self, index: u32, text: &str, out: &mut Outbox);

    /// Reasoning streaming live, for the client's block `index`; `native` is the block's start
    /// as its wire wrote it (Chat's delta key), or empty. Only for wires with
    /// [`Wire::live_reasoning`].
    fn reasoning(&mut self, _index: u32, _native: &str, _text: &str, _out: &mut Outbox) {}

    /// A delta the core does not read (the event in `src`), for the client's block `index`.
    fn other_delta(&mut self, index: u32, src: &Source<'_>, out: &mut Outbox);

    /// The client's block `index` is complete.
    fn block_stop(&mut self, index: u32, out: &mut Outbox);

    /// A whole held block at the client's `index`, compacted: start, content, stop.
    fn held(&mut self, index: u32, held: &Held, out: &mut Outbox);

    /// Whether [`held`](Self::held) writes `held` as a block of its own, which takes the
    /// client's next index: not a refusal on a wire that tells one with its stop reason
    /// (Anthropic's `stop_details`).
    fn takes_block(&self, _held: &Held) -> bool {
        true
    }

    /// The answer's stop reason, with usage when the wire reports it there; `base` output
    /// tokens of earlier attempts are added to the reported usage.
    fn finish(&mut self, stop: Stop, base: u32, src: &Source<'_>, out: &mut Outbox);

    /// A usage report, `base` output tokens of earlier attempts added.
    fn usage(&mut self, usage: Usage, base: u32, src: &Source<'_>, out: &mut Outbox);

    /// A usage report the layer makes up when the upstream's was lost: a lower bound.
    fn usage_estimate(&mut self, output_tokens: u32, out: &mut Outbox);

    /// The stream's last event.
    fn terminal(&mut self, out: &mut Outbox);

    /// An event of the client's own wire that the core does not read, fitted to the client's
    /// stream (its envelope).
    fn restamp(&mut self, src: &Source<'_>, out: &mut Outbox);

    /// An event of a stream with several choices, fitted to the client's stream: its
    /// envelope, no second start for the first `had` choices (the client has theirs), `base`
    /// output tokens of earlier attempts added to its usage.
    fn choices_event(&mut self, src: &Source<'_>, _base: u32, _had: u32, out: &mut Outbox) {
        self.restamp(src, out);
    }

    /// The error event that ends a stream the layer gives up on.
    fn error(&mut self, kind: &ErrorKind, message: &str, out: &mut Outbox);

    /// Whether it follows the client's stream: it is then told about every event that goes
    /// out as it came ([`sent`](Self::sent), [`sent_text`](Self::sent_text)), and once it has
    /// written an event itself ([`wrote`](Self::wrote)) no event goes out as it came any more
    /// (a keep-alive or client error of the upstream included). For a wire whose later events
    /// depend on the earlier ones (numbered events; closing events that repeat the whole
    /// answer). Asked once per stream.
    fn follows(&self) -> bool {
        false
    }

    /// Whether it has written an event of its own numbering, when it [`follows`](Self::follows)
    /// the client's stream.
    fn wrote(&self) -> bool {
        false
    }

    /// What it may keep of the client's stream, when it [`follows`](Self::follows) it.
    fn bound(&mut self, _limits: &Limits) {}

    /// An event went out to the client as it came; `items` are what it said.
    fn sent(&mut self, _items: &[Item], _src: &Source<'_>) {}

    /// A piece of text went out as it came, as the decoder's fast lane read it.
    fn sent_text(&mut self, _text: &FastText<'_>) {}

    /// The events that follow come from another attempt, and the client has events of an
    /// earlier one.
    fn splice(&mut self) {}

    /// What to send while waiting for a fallback, so that the client and the timeouts around
    /// it do not give up. `after_id`: an event with an `id:` field reached the client, whose
    /// parser may then dispatch an event at any blank line.
    fn keep_alive(&self, after_id: bool) -> Bytes;
}

/// A failure seen inside a stream.
#[derive(Debug)]
pub(crate) struct StreamFailure {
    pub(crate) class: FailureClass,
    pub(crate) detail: String,
    /// The upstream's own error type (`overloaded_error`...), to name to the client.
    pub(crate) error_type: Option<Arc<str>>,
    /// How long a failed response asked to wait before a retry.
    pub(crate) retry_after: Option<std::time::Duration>,
}

impl StreamFailure {
    pub(crate) fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        StreamFailure {
            class,
            detail: detail.into(),
            error_type: None,
            retry_after: None,
        }
    }

    /// The failure with the secrets taken out of what the upstream said, before it is logged,
    /// kept in the history or told to the client. A second pass: upstream words are cleaned
    /// where they enter; this catches what came in another way (a transport error's text).
    pub(crate) fn redacted(mut self, redactor: &Redactor) -> Self {
        if let Cow::Owned(detail) = redactor.redact(&self.detail) {
            self.detail = detail;
        }
        if let Some(t) = &self.error_type {
            if let Cow::Owned(t) = redactor.redact(t) {
                self.error_type = Some(t.into());
            }
        }
        self
    }
}

/// The `type` and `message` of an error body (`{"error":{"type":..,"message":..}}`, the shape
/// both Anthropic and OpenAI use), for naming a failure: secrets out, control characters
/// escaped.
pub(crate) fn describe_error_body(
    body: &[u8],
    redactor: &Redactor,
) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Outer {
        error: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "type")]
        kind: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Outer>(body)
        .ok()
        .and_then(|o| o.error)
    {
        // Upstream words, bound for logs and the client: cleaned here, where they enter.
        Some(inner) => (
            inner.kind.as_deref().map(|t| redactor.clean(t)),
            inner.message.as_deref().map(|t| redactor.clean(t)),
        ),
        None => (None, None),
    }
}

/// Limits a relay keeps to, and how it delivers reasoning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) transcript: usize,
    pub(crate) held: usize,
    pub(crate) reasoning: crate::Reasoning,
}

/// The kind of an error told to the client, mapped to each format's error types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    TooLarge,
    BadRequest,
    Overloaded,
    RateLimited,
    Timeout,
    Upstream,
    /// The upstream's own error type, passed on.
    Named(Arc<str>),
}

impl ErrorKind {
    /// The kind to report for an original failure.
    pub(crate) fn of(class: FailureClass, error_type: Option<&Arc<str>>) -> ErrorKind {
        if let Some(t) = error_type {
            return ErrorKind::Named(t.clone());
        }
        match class {
            FailureClass::Status(StatusCode::TOO_MANY_REQUESTS) => ErrorKind::RateLimited,
            FailureClass::Status(s)
                if s.as_u16() == 529 || s == StatusCode::SERVICE_UNAVAILABLE =>
            {
                ErrorKind::Overloaded
            }
            FailureClass::Status(StatusCode::GATEWAY_TIMEOUT)
            | FailureClass::Status(StatusCode::REQUEST_TIMEOUT)
            | FailureClass::Stall => ErrorKind::Timeout,
            _ => ErrorKind::Upstream,
        }
    }
}

/// `event: NAME\ndata: JSON\n\n` (or a data-only event without a name).
pub(crate) fn sse_event(name: Option<&str>, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 32);
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
