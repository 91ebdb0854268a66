//! Keep streaming LLM responses alive when the upstream fails halfway through.
//!
//! A gateway relays a provider's server-sent events to its client. When the provider drops
//! the connection, stalls, sends `overloaded_error` mid-stream or ends the body early, the
//! client already holds a 200 and half an answer, and tower's `retry` and `timeout` cannot help:
//! they never see the body. [`MidStreamFallbackLayer`] watches the body, asks a
//! [`RetryPlanner`] how to go on, calls the inner service again with a rewritten request, and
//! splices the new stream onto the one the client is reading, so that the official SDKs see one
//! valid stream.
//!
//! ```no_run
//! use axum::{routing::post, Router};
//! use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill};
//!
//! # async fn proxy(
//! #     _attempt: axum::Extension<tower_midstream::Attempt>,
//! #     _req: axum::extract::Request,
//! # ) -> axum::response::Response { unimplemented!() }
//! # async fn run() {
//! let chain = FallbackChain::new()
//!     // What each model accepts; prefill is never sent to a model not declared to accept it.
//!     .model("claude-sonnet-4-6", Prefill::None)
//!     .model("claude-sonnet-4-5", Prefill::Assistant)
//!     .fallbacks("claude-sonnet-4-6", ["claude-sonnet-4-5"]);
//!
//! let app = Router::new()
//!     // `proxy` forwards to the provider chosen by the body's `model`.
//!     .route("/v1/messages", post(proxy))
//!     .layer(MidStreamFallbackLayer::new(chain));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! The layer calls the service inside it once per attempt: fallback requests go through the
//! same service as the first, with `model` changed, and each request names its [`Attempt`] in
//! its extensions (number, target model, strategy), so that service routes on it without
//! reading the body. examples/axum.rs is a complete app (`cargo run --example axum`).
//!
//! # What is watched
//!
//! A `POST` whose path ends in `/messages` (Anthropic Messages), `/chat/completions` (OpenAI
//! Chat Completions) or `/responses` (the OpenAI Responses API), unless fixed otherwise with [`MidStreamFallbackLayer::dialect`] or a
//! [`Dialect`] in the request's extensions. Its body is collected once (up to
//! [`max_request_bytes`](MidStreamFallbackLayer::max_request_bytes)) and replayed by refcount
//! for every attempt. A successful response that is not `text/event-stream` passes through
//! untouched; so does every other request, and a request carrying [`NoFallback`]. So does an
//! event stream with a `Content-Encoding` other than `identity`: compressed bytes are not
//! readable SSE, and the layer never writes its own events into them; a warning is logged for
//! each such response, since it has no fallback. To have such responses watched, put a
//! decompression layer (tower-http's `DecompressionLayer`) *inside* this one; a gateway can
//! simply ask its upstreams for `accept-encoding: identity` (clients and `CompressionLayer`
//! leave the client's `gzip` on the request otherwise).
//!
//! An error response is passed on as it came, except that its body is read first (up to 64
//! KiB, for no longer than the idle timeout) so that secrets can be taken out of it (see
//! [`MidStreamFallbackLayer::redact`]): for every request through the layer, watched or not.
//! Every request the inner service gets carries an [`Attempt`], watched or not (one the layer
//! does not watch is attempt 1, its target unknown: its body is not read).
//!
//! # Failures
//!
//! | class | seen as | fallback? |
//! |---|---|---|
//! | [`Transport`](FailureClass::Transport) | the body yields an error (reset, incomplete message) | yes |
//! | [`Stall`](FailureClass::Stall) | no content within the [first-token deadline](MidStreamFallbackLayer::first_token_timeout) of sending an attempt, or the [idle timeout](MidStreamFallbackLayer::idle_timeout) after its last content (comments, pings and envelope events do not count) | yes |
//! | [`InBand`](FailureClass::InBand) | Anthropic `event: error`; an OpenAI chunk with an `error` | yes, unless a client error (invalid request, content policy): that is passed on as it came |
//! | [`Truncated`](FailureClass::Truncated) | the body ends before `message_stop` / `data: [DONE]` | yes; or, if only the closing events are missing, the layer closes the stream itself |
//! | [`Malformed`](FailureClass::Malformed) | an event over the size limit or that does not parse | yes |
//! | [`Status`](FailureClass::Status) | 408, 429, 500, 502, 503, 504, 529 before the stream | yes, invisibly (a restart) |
//! | [`Connect`](FailureClass::Connect) | the inner service fails before headers | yes |
//! | [`ContextWindow`](FailureClass::ContextWindow) | a 400 saying the prompt is too long | on a larger-context target, if configured; else passed on |
//! | client error | any other 4xx before the stream | no: passed on as it came |
//! | client gone | the response body is dropped | no: the upstream is cancelled, nothing more is called |
//!
//! # Strategies
//!
//! The planner picks one per attempt ([`Strategy`]):
//!
//! * **restart**: the original request, `model` swapped. While nothing of the answer reached
//!   the client, the new stream simply replaces the old one.
//! * **prefill**: the partial answer as a trailing assistant message the target continues:
//!   Anthropic ([`Prefill::Assistant`], trailing whitespace stripped as the API requires),
//!   OpenAI-compatible `"prefix": true` ([`Prefill::Prefix`]: DeepSeek, Mistral), vLLM
//!   `continue_final_message` ([`Prefill::ContinueFinalMessage`]).
//! * **instruction**: the partial answer as an assistant message, then a short user message
//!   asking to continue exactly where it stopped. For targets that reject prefill (Claude
//!   Sonnet 4.6 and Opus 4.6 answer HTTP 400). No system prompt is added.
//! * **give up**: the client gets an error event in its dialect naming the *original* failure.
//!
//! `max_tokens` / `max_completion_tokens` shrink by the tokens already sent. [`FallbackChain`]
//! sends prefill only to targets declared to accept it, and retries a prefill answered with 400
//! once with the instruction; write your own [`RetryPlanner`] for other policies.
//!
//! # What the client sees
//!
//! One stream that obeys the rules the official clients impose (one `message_start`, dense block
//! and tool-call indices, one `finish_reason`, usage last, one terminal event...):
//!
//! * Only complete events are forwarded, each as a slice of the upstream's frame (no copy).
//! * Text streams live. Tool calls and reasoning blocks are held back until complete (tool
//!   calls until the end of the message), so that a failure inside one is recoverable and no
//!   client ever sees a truncated tool call. They are sent compacted: one delta per block.
//! * Reasoning without a signature (OpenAI-compatible servers' `delta.reasoning_content` and
//!   `delta.reasoning`) streams live by default, or is held until complete: see [`Reasoning`].
//!   Either way a fallback's own reasoning is dropped once the client has reasoning or content.
//!   A Chat refusal (`delta.refusal`) is held until complete.
//! * A stream with several choices (Chat `n > 1`) goes out as it came, nothing held; it restarts
//!   elsewhere only while none of its answers reached the client, and otherwise ends with an
//!   error event naming the failure.
//! * Keep-alives the layer writes never include a blank line once an upstream `id:` line reached
//!   the client (the openai Python SDK would dispatch an empty event at it); a line end never
//!   goes out on its own.
//! * At a seam, the continuation joins the open text block; an echo of the partial answer or
//!   whitespace the prefill had to strip is dropped; usage covers every attempt.
//! * If every attempt fails, the stream ends cleanly with an error event naming the original
//!   failure; Rust callers get a [`FallbackError`] with every attempt's cause from
//!   [`FallbackBody::fallback_error`]. When no attempt produced a response at all, the client
//!   gets the original failed response as it came (or a 502 in its dialect after a connection
//!   failure), with the `FallbackError` in the response's extensions.
//!
//! # Across dialects
//!
//! The fallback that saves an answer during a provider's outage is often another provider's
//! model. A [`Target`] may declare the wire format it speaks ([`Target::dialect`]): a request
//! for it is translated from the client's dialect (Anthropic Messages, OpenAI Chat
//! Completions and Gemini's own API, each way), the path's endpoint swapped (`…/v1/messages` and
//! `…/v1/chat/completions`; a Gemini target gets `/v1beta/models/{model}:streamGenerateContent?alt=sse`,
//! a request leaving Gemini `/v1/` and the other endpoint), and [`Attempt::dialect`] names the dialect so that the inner
//! service routes it (upstream, credentials). Its stream is read with its own dialect's reader
//! and written to the client in the client's: one start, the client's ids and envelope, text
//! continued in the open block, tool calls with dense indices, one stop reason mapped
//! (`end_turn`/`stop`/`STOP`, `max_tokens`/`length`/`MAX_TOKENS`, `tool_use`/`tool_calls`
//! (Gemini ends calls with `STOP`), `content_filter` to `refusal`),
//! usage over every attempt where the client's dialect reports it (a Chat client gets its usage
//! chunk only if it asked for one). A refusal keeps its words: a Chat model's `delta.refusal`
//! reaches an Anthropic client as `stop_reason: "refusal"` with the words in
//! `stop_details.explanation` (no answer text), and an Anthropic refusal reaches a Chat client
//! as OpenAI's own refusals come: a `delta.refusal` of its explanation (or, without one, "The
//! model refused to answer.") and `finish_reason: "stop"`, which every path of the openai SDK
//! accepts (its `category` has no Chat form). The continuation follows the target: a
//! restart while the client has nothing; else the target's own prefill form ([`Prefill`]) or
//! the instruction. Whether a request may carry a prefill is the target dialect's rule: a
//! Responses client's answer is prefilled on Claude or Gemini, though its own API has none
//! ([`Failure::strategy_on`]).
//!
//! Carried across: the system prompt, text, images (URL and base64), tool definitions and
//! `tool_choice` (`any` is `required`), parallel tool use, assistant tool calls and tool
//! results (results first in their Anthropic turn), stop sequences, the token limit
//! (`max_tokens` is required by Anthropic: 8192 when a Chat client set none), temperature
//! (at most 1 for Anthropic) and top_p, streaming usage. OpenAI Responses requests cross to
//! and from the others: `instructions` and system items are the system prompt, `function_call` and
//! `function_call_output` items the calls and results, `max_output_tokens` the limit (at
//! least the API's 16 when written), function tools flat (`strict: false` unless the client
//! set it). Tool-call ids that fit the other API
//! (Anthropic: `^[a-zA-Z0-9_-]+$`; Chat: at most 40 characters) are kept; one that does not,
//! or a call without an id, gets a derived one (`toolu_…`, `call_…`), the same for the call and
//! for the result the client sends back in its next turn.
//!
//! Dropped, because it changes how the answer is made, not what a valid answer is: Anthropic
//! `metadata`, `service_tier`, `top_k`, `cache_control`, the beta `fallbacks`, thinking blocks
//! of earlier turns while thinking is off; Chat `user`, `seed`, penalties, `logit_bias`,
//! `reasoning_effort`, `verbosity`, `prediction`, `store`, `metadata`, `service_tier`, prompt
//! cache keys, message `name`s, image `detail`, `is_error` of a tool result (its text says it),
//! vLLM's continuation flags (the final assistant message is the prefill); Responses `store`,
//! `metadata`, `user`, `safety_identifier`, prompt cache keys, `service_tier`, `truncation`,
//! `reasoning`, `include`, `stream_options`, `text.verbosity`, item ids, and reasoning items of
//! earlier turns (encrypted for OpenAI's models alone); Gemini
//! `safetySettings`, `labels`, `topK`, `seed`, penalties, `thinkingConfig`, `mediaResolution`,
//! thought parts of earlier turns and every `thoughtSignature` (they verify Gemini's reasoning
//! to Gemini only), a declaration's `response` schema; toward Gemini, `strict` and
//! `parallel_tool_calls` (no Gemini form).
//!
//! Gemini specifics: a function call without an id (the Developer API sends none) gets a
//! derived `call_…` id, and its `functionResponse` (paired by name, in order, as the API pairs
//! them) the same; a response of only `output` (or `error`, which is a failed call) is its
//! text, any other its JSON. Toward Gemini a tool result is a `functionResponse` named after its
//! call, `{"output": text}` or `{"error": text}`; every function call carries the placeholder
//! `thoughtSignature` Google names for calls Gemini did not make
//! (`skip_thought_signature_validator`: Gemini 3 refuses a history whose calls have none), and
//! so does each call another provider's fallback makes in a Gemini client's stream (a Gemini
//! fallback's calls keep their own); schemas go as `parametersJsonSchema`, and
//! Gemini's upper-case OpenAPI `parameters` types come out in JSON Schema's lower case; an image
//! URL goes as `fileData` with the media type its extension names; `temperature` at most 2.
//!
//! Never carried: a request that needs one of these is not sent to a target of another
//! dialect; [`FallbackChain`] passes over such a target (and says so in the log and in the
//! give-up reason) and gives up with the original failure if nothing else is left
//! ([`Failure::cannot_send_to`] says why for your own planner):
//!
//! * Anthropic: extended thinking (signed blocks come only from Anthropic, and the client's
//!   next turn needs them), server tools and their blocks (web search, code execution, MCP),
//!   documents and search results (and their citations), images by Files API id,
//!   `container`, `context_management`, `mcp_servers` and any parameter not listed above;
//!   more than 4 stop sequences for Chat; images in tool results for Chat; image types other
//!   than JPEG, PNG, GIF and WebP for Anthropic.
//! * Chat: `n` above 1, `logprobs`, structured output (`response_format` other than `text`),
//!   audio (input or output), files, web search, legacy `functions`, custom tools, a system
//!   message after the first turn, and any parameter not listed above.
//! * Responses: `previous_response_id` and `conversation` (the conversation is kept at
//!   OpenAI), `background`, `prompt` templates, `max_tool_calls`, `top_logprobs`, structured
//!   output (`text.format` other than `text`), built-in and custom tools (web and file
//!   search, code interpreter, MCP...), files, audio, images by file id, a system message
//!   after the first turn, any other input item type or parameter; and toward a Responses
//!   target: stop sequences (the API has none), images in tool results.
//! * Gemini: parts other than text, images and function calls and responses (audio, video,
//!   PDF, files Gemini stores, `gs://` objects, executable code and its results), tools other
//!   than function declarations (Google Search, code execution, URL context...),
//!   `cachedContent`, structured output (`responseMimeType` other than `text/plain`,
//!   `responseSchema`), output modalities other than text, speech, `candidateCount` above 1,
//!   logprobs, the `VALIDATED` calling mode or more than one allowed function name, and any
//!   parameter not listed above. Toward Gemini: more than 5 stop sequences, images in tool
//!   results, an image URL whose extension names no image type, a tool result whose call the
//!   conversation does not hold (Gemini names the function).
//! * Any: a request that is not streamed, or that ends with an assistant message of its own
//!   for a target that continues none.
//! * Claude on Vertex AI ([`Address::vertex`]) speaks Anthropic
//!   Messages: a Chat client's request is translated for it and placed in its path; a request a
//!   client sent to a Vertex path (with its `anthropic_version`) does not cross to Chat.
//!
//! A client error (HTTP 4xx, in-band) from a target of another dialect answers the translation,
//! not the client's request: the next fallback is tried. A fallback's tool call whose arguments
//! are not a JSON object is a failure of that attempt, never passed on.
//!
//! # Where to put this layer
//!
//! ```text
//! client ── server ── Trace ── Compression ── MidStreamFallbackLayer
//!              ── tower::timeout (time to headers) ── ResponseBodyTimeout ── tower::retry
//!              ── router to the upstreams (hyper-util client, or any Service)
//! ```
//!
//! * Everything **inside** runs once per attempt: a timeout there bounds each attempt's time
//!   to headers, a retry there retries each attempt before its stream starts, a body timeout
//!   there turns a stall into a failure this layer recovers from.
//! * Everything **outside** sees one request and one continuous body. Compression must be
//!   outside: the layer reads plain SSE. A body or idle timeout outside must allow for the gap
//!   while a fallback is called; the layer sends SSE comments
//!   ([`keep_alive`](MidStreamFallbackLayer::keep_alive)) during that gap.
//! * A **concurrency limit** (tower's) holds its permit until the response headers, not to the
//!   end of the stream. Outside, it bounds the requests being set up at once (collected bodies,
//!   waits for headers; in axum's `Router::layer`, use `GlobalConcurrencyLimitLayer`, since a
//!   layer there is applied per route); inside, it bounds calls to the upstream, fallbacks
//!   included, which then wait for a permit.
//!
//! The layer never fails ([`MidStreamFallback`]'s error type is `Infallible`): an error of the
//! service inside it (a `tower::timeout` elapsed, a refused connection) is a failure like a 503,
//! retried on a fallback, and once none is left the client gets a 502 in its dialect naming it,
//! with the [`FallbackError`] in the response's extensions. So axum takes the stack above as it
//! is, in `Router::layer` or in `route_service`. A fallible layer *outside* this one still needs
//! axum's `HandleErrorLayer`; for a deadline on the whole answer, tower-http's `TimeoutLayer`
//! answers 408 itself.
//!
//! # What it tells you
//!
//! * **Spans**: one `midstream.request` span per request (inside the current span, a
//!   `TraceLayer`'s for instance), and one `midstream.attempt` span per attempt inside it, in
//!   which the inner service is called (its own spans nest there), with the OpenTelemetry GenAI names
//!   where one fits (`gen_ai.request.model`, `gen_ai.response.model`,
//!   `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//!   `gen_ai.response.time_to_first_chunk`, `error.type`) and `midstream.*` otherwise (strategy,
//!   outcome, fallback gap, answer text and tokens the client had at a failure), units in the
//!   name, durations in seconds. Events: `upstream attempt failed`, `falling back`, `stream
//!   recovered`, `completed on a fallback`, `giving up`. The README shows a whole tree.
//! * **[`Attempt`]** in the extensions of every request the inner service gets.
//! * **[`Observer`]** ([`MidStreamFallbackLayer::observer`]): typed [`AttemptReport`]s and
//!   [`RequestReport`]s, for metrics, billing or dashboards; with the `metrics` feature,
//!   `MetricsObserver` feeds the `metrics` facade.
//! * **[`Provenance`]** in the extensions of every watched response (and on its body): the
//!   attempts that served the answer.
//!
//! # Limits
//!
//! | option | default | beyond it |
//! |---|---|---|
//! | [`max_attempts`](MidStreamFallbackLayer::max_attempts) | 3, the first included | give up |
//! | [`first_token_timeout`](MidStreamFallbackLayer::first_token_timeout) | 60 s from sending an attempt to its first content | a stall |
//! | [`idle_timeout`](MidStreamFallbackLayer::idle_timeout) | 60 s between content events | a stall |
//! | [`keep_alive`](MidStreamFallbackLayer::keep_alive) | every 5 s while waiting for a fallback | |
//! | [`max_request_bytes`](MidStreamFallbackLayer::max_request_bytes) | 4 MiB | 413 in the client's dialect; nothing is sent upstream |
//! | [`max_event_bytes`](MidStreamFallbackLayer::max_event_bytes) | 1 MiB | a malformed stream |
//! | [`max_transcript_bytes`](MidStreamFallbackLayer::max_transcript_bytes) | 1 MiB of answer text | the answer can no longer be continued: a failure ends it with an error event |
//! | [`max_held_bytes`](MidStreamFallbackLayer::max_held_bytes) | 4 MiB held back (tool calls, reasoning: their ids, names, starts and content) | a malformed stream |
//! | a failed response's body, read to describe it, redact it and hand it back | 64 KiB, within the idle timeout | what was read is described; a torn body is replaced by an error in the client's dialect |
//!
//! Text from upstreams (error messages and types, transport errors) is cut to 2 KiB and its
//! control characters escaped before it reaches a log or an error event, so that it cannot
//! forge a log line or drive a terminal; secrets are taken out of it as
//! [`redact`](MidStreamFallbackLayer::redact) says.
//!
//! What a stream retains grows with its generated text (the transcript and held blocks are
//! kept as text, not as SSE), not with the raw bytes relayed.
//!
//! # Differences from the retry in LiteLLM's router
//!
//! LiteLLM appended the partial answer as an assistant prefill for every fallback; newer Claude
//! models reject that with HTTP 400, so its fallback failed exactly when needed and the client
//! saw the 400. Here prefill goes only where it is accepted, and the client is always told about
//! the original failure.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod address;
mod attempt;
mod backoff;
mod before_stream;
mod body;
mod breaker;
mod chain;
mod clock;
mod config;
mod context_window;
mod dialect;
mod error;
mod failure;
pub mod future;
mod json;
mod layer;
#[cfg(feature = "metrics")]
mod metrics;
mod observe;
mod outbox;
mod plan;
mod provenance;
mod reasoning;
mod recovery;
mod relay;
mod replay;
mod respond;
mod rewrite;
mod service;
mod sse;
mod strategy;
mod stream;
mod target;
mod trace;
mod transcript;
mod translate;
mod untrusted;
mod walk;

pub use address::{Address, VERTEX_ANTHROPIC_VERSION};
pub use attempt::Attempt;
pub use backoff::{Backoff, RetryBudget};
pub use body::FallbackBody;
pub use breaker::{Admission, Breaker, CircuitState};
pub use chain::{FallbackChain, WhenNoPrefill};
pub use dialect::Dialect;
pub use error::{AttemptError, FailureClass, FallbackError};
pub use failure::{Failure, FailureBuilder};
pub use layer::MidStreamFallbackLayer;
#[cfg(feature = "metrics")]
pub use metrics::MetricsObserver;
pub use observe::{AttemptOutcome, AttemptReport, Observer, RequestOutcome, RequestReport, Usage};
pub use plan::{First, FirstAttempt, Plan, RetryPlanner};
pub use provenance::Provenance;
pub use reasoning::Reasoning;
pub use replay::ReplayBody;
pub use service::{MidStreamFallback, NoFallback};
pub use strategy::{Prefill, RewriteError, Strategy, DEFAULT_INSTRUCTION};
pub use target::Target;
pub use transcript::Transcript;
pub use untrusted::Redactor;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

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

    /// The `event:` name and joined `data:` of the next complete event, as the framer read
    /// them while cutting it; `Some(Err(()))` if it exceeds the limit.
    #[allow(clippy::result_unit_err, clippy::type_complexity)]
    pub fn next_fields(
        framer: &mut Framer,
    ) -> Option<Result<(Option<&[u8]>, Option<Vec<u8>>), ()>> {
        framer.0.next_event().map(|r| {
            r.map(|ev| {
                let f = ev.fields;
                let name = f.event().map(|r| &ev.raw[r]);
                let data = match f.data() {
                    [] => None,
                    lines => Some(
                        lines
                            .iter()
                            .map(|r| &ev.raw[r.clone()])
                            .collect::<Vec<_>>()
                            .join(&b'\n'),
                    ),
                };
                (name, data)
            })
            .map_err(|_| ())
        })
    }
}
