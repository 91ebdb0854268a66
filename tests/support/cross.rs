//! The per-dialect facts of a fallback across dialects, said once for every pair of the four
//! (Anthropic, Chat, Gemini, Responses), and the matrix that runs a pair over the fixtures.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill, Target};

use super::upstream::{self, Dialect, Scripted, Upstream, Whole, FAULTS};
use super::{
    check, events_of, expected, fixture, path, request_body, run, same_answer, whole_of, Fixture,
    Outcome, FIXTURES,
};

/// The library's name for a dialect of the tests.
pub fn wire(dialect: Dialect) -> tower_midstream::Dialect {
    match dialect {
        Dialect::Anthropic => tower_midstream::Dialect::ANTHROPIC_MESSAGES,
        Dialect::OpenAi => tower_midstream::Dialect::OPENAI_CHAT,
        Dialect::Gemini => tower_midstream::Dialect::GEMINI,
        Dialect::Responses => tower_midstream::Dialect::OPENAI_RESPONSES,
    }
}

/// The prefill form a model of `dialect` takes, when it takes one.
pub fn prefill_of(dialect: Dialect, prefill: bool) -> Prefill {
    match (prefill, dialect) {
        (false, _) => Prefill::None,
        (true, Dialect::Anthropic | Dialect::Gemini) => Prefill::Assistant,
        (true, Dialect::OpenAi) => Prefill::Prefix,
        // The Responses API has none.
        (true, Dialect::Responses) => Prefill::None,
    }
}

/// `primary` (the client's dialect) falls back to `fallback` and `fallback-2`, both speaking
/// `to`.
pub fn chain_to(to: Dialect, prefill: bool) -> FallbackChain {
    let kind = prefill_of(to, prefill);
    FallbackChain::new()
        .target(Target::new("fallback").prefill(kind).dialect(wire(to)))
        .target(Target::new("fallback-2").prefill(kind).dialect(wire(to)))
        .fallbacks("primary", ["fallback", "fallback-2"])
}

/// The stop reason a client of `dialect` must end with.
pub fn stop_reason(dialect: Dialect, tools: bool) -> &'static str {
    match (dialect, tools) {
        (Dialect::Anthropic, false) => "end_turn",
        (Dialect::Anthropic, true) => "tool_use",
        (Dialect::OpenAi, false) => "stop",
        (Dialect::OpenAi, true) => "tool_calls",
        // Gemini ends tool calls with STOP too.
        (Dialect::Gemini, _) => "STOP",
        // A response's status, with calls in its output or not.
        (Dialect::Responses, _) => "completed",
    }
}

/// Whether a tool-call id is one the client's API takes back in its next turn (Gemini's are
/// optional; when one is there, any text goes).
pub fn valid_id(dialect: Dialect, id: &str) -> bool {
    match dialect {
        Dialect::Anthropic => {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        Dialect::OpenAi => !id.is_empty() && id.len() <= 40,
        Dialect::Gemini => true,
        // A `call_id`, which the API takes back up to 64 characters.
        Dialect::Responses => !id.is_empty() && id.len() <= 64,
    }
}

/// What the client got, checked against its dialect's rules and the whole answer.
pub fn client_got(
    client: Dialect,
    usage: bool,
    out: &Outcome,
    whole: &Whole,
) -> Result<check::Answer, String> {
    let shown = || String::from_utf8_lossy(&out.bytes).into_owned();
    let got = check(client, usage, &out.bytes).map_err(|e| format!("{e}\n{}", shown()))?;
    same_answer(&got, &expected(whole)).map_err(|e| format!("{e}\n{}", shown()))?;
    let want = stop_reason(client, !whole.tools.is_empty());
    if got.stop_reason.as_deref() != Some(want) {
        return Err(format!(
            "stop reason {:?}, want {want:?}\n{}",
            got.stop_reason,
            shown()
        ));
    }
    if let Some(id) = got.tool_ids.iter().find(|id| !valid_id(client, id)) {
        return Err(format!(
            "the tool-call id {id:?} is not valid for the client"
        ));
    }
    let mut ids = got.tool_ids.clone();
    ids.sort();
    ids.dedup();
    if ids.len() != got.tool_ids.len() {
        return Err(format!("tool-call ids repeat: {:?}", got.tool_ids));
    }
    if out.error.is_some() {
        return Err("a FallbackError on a stream that completed".into());
    }
    Ok(got)
}

/// Every call after the first went to the fallback's own endpoint (one of [`chain_to`]'s
/// targets), in its own dialect.
pub fn fallback_calls_in(to: Dialect, calls: &[upstream::Call]) -> Result<(), String> {
    for call in calls.iter().skip(1) {
        let body = &call.body;
        let shaped = body_stream_is_right(to, body)
            && match to {
                Dialect::Anthropic => {
                    call.uri.ends_with("/v1/messages")
                        && body["max_tokens"].is_u64()
                        && body.get("stream_options").is_none()
                        && body["messages"].as_array().is_some_and(|m| {
                            m.iter()
                                .all(|m| m["role"] == "user" || m["role"] == "assistant")
                        })
                }
                Dialect::OpenAi => {
                    call.uri.ends_with("/v1/chat/completions")
                        && body["stream_options"]["include_usage"] == true
                        && body.get("max_tokens").is_none()
                        && body.get("system").is_none()
                }
                Dialect::Gemini => {
                    call.uri.ends_with(":streamGenerateContent?alt=sse")
                        && call.uri.contains("/models/fallback")
                        && body.get("model").is_none()
                        && body["contents"].as_array().is_some_and(|c| {
                            c.iter()
                                .all(|c| c["role"] == "user" || c["role"] == "model")
                        })
                        && unsigned_calls(&body["contents"]).is_empty()
                }
                Dialect::Responses => {
                    call.uri.ends_with("/v1/responses")
                        && matches!(body["model"].as_str(), Some("fallback" | "fallback-2"))
                        && body.get("messages").is_none()
                        && body.get("contents").is_none()
                        && body.get("stream_options").is_none()
                        && body.get("max_tokens").is_none()
                        && body["input"].as_array().is_some_and(|items| {
                            items.iter().all(|it| {
                                matches!(it["role"].as_str(), Some("user" | "assistant" | "system"))
                                    || matches!(
                                        it["type"].as_str(),
                                        Some("function_call" | "function_call_output")
                                    )
                            })
                        })
                }
            };
        if !shaped {
            return Err(format!(
                "a fallback call is not a {to:?} request: {} {body}",
                call.uri
            ));
        }
    }
    Ok(())
}

/// Gemini says it streams by its path, not in the body; the others ask with `"stream": true`.
fn body_stream_is_right(to: Dialect, body: &Value) -> bool {
    match to {
        Dialect::Gemini => body.get("stream").is_none(),
        _ => body["stream"] == true,
    }
}

/// The `functionCall` parts without a `thoughtSignature` in `parts` (a list of parts, or of
/// turns that have them).
pub fn unsigned_calls(value: &Value) -> Vec<Value> {
    let mut parts = Vec::new();
    for item in value.as_array().into_iter().flatten() {
        match item["parts"].as_array() {
            Some(inner) => parts.extend(inner.iter().cloned()),
            None => parts.push(item.clone()),
        }
    }
    parts
        .into_iter()
        .filter(|p| p.get("functionCall").is_some())
        .filter(|p| {
            !p["thoughtSignature"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .collect()
}

/// The `functionCall` parts of a Gemini stream, whole (with their `thoughtSignature`).
pub fn function_call_parts(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .flat_map(|chunk| {
            chunk["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|part| part.get("functionCall").is_some())
        .collect()
}

/// Whether a call ends with a turn of the model's own (a prefill), in any dialect.
pub fn trailing_model_turn(call: &upstream::Call) -> bool {
    let turns = call.body["messages"]
        .as_array()
        .or_else(|| call.body["contents"].as_array())
        .or_else(|| call.body["input"].as_array());
    turns
        .and_then(|t| t.last())
        .is_some_and(|t| t["role"] == "assistant" || t["role"] == "model")
}

/// The recorded streams of `client`'s dialect a fallback of another can continue (a request
/// asking for extended thinking is never sent there; a refusal, whose stop reason depends on
/// which dialect's model gave it, has tests of its own).
pub fn fixtures_of(client: Dialect) -> impl Iterator<Item = &'static Fixture> {
    FIXTURES.iter().filter(move |f| {
        f.dialect == client
            && !f.thinking
            && whole_of(f.dialect, &fixture(f.name)).refusal.is_none()
    })
}

/// What a matrix ran, and what went wrong in it (one line a failed run, naming the case).
#[derive(Default)]
pub struct MatrixRuns {
    pub runs: usize,
    pub failures: Vec<String>,
}

impl MatrixRuns {
    /// Counts `pair`'s runs and failures with these.
    pub fn add(&mut self, pair: MatrixRuns) {
        self.runs += pair.runs;
        self.failures.extend(pair.failures);
    }

    /// Panics, listing every failed run of `what`, if any failed.
    pub fn assert_none_failed(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} of {} runs failed:\n{}",
            self.failures.len(),
            self.runs,
            self.failures.join("\n\n")
        );
    }
}

/// The matrix for the pair `client` / `to`: every fixture of the client's dialect, every
/// failure class, at the positions `at(events, has_tool_calls)` names, with and without prefill
/// (without only, for a target that has none), continued by [`chain_to`]'s fallbacks.
pub async fn matrix(client: Dialect, to: Dialect, at: fn(usize, bool) -> Vec<usize>) -> MatrixRuns {
    let mut failures = Vec::new();
    let mut runs = 0;
    let prefills: &[bool] = match to {
        Dialect::Responses => &[false],
        _ => &[true, false],
    };
    for f in fixtures_of(client) {
        let bytes = fixture(f.name);
        let events = events_of(&bytes);
        let whole = whole_of(f.dialect, &bytes);
        for &prefill in prefills {
            for fault in FAULTS {
                for p in at(events.len(), !whole.tools.is_empty()) {
                    runs += 1;
                    let broken = Bytes::from(events[..p].concat());
                    if let Err(e) = one_case(f, &whole, broken, to, prefill, fault).await {
                        failures.push(format!(
                            "{} to {to:?} prefill={prefill} {fault:?} after {p} of {} events: {e}",
                            f.name,
                            events.len()
                        ));
                    }
                }
            }
        }
    }
    MatrixRuns { runs, failures }
}

/// One fixture `f` (whose answer is `whole`) broken after `broken` with `fault`, continued by
/// fallbacks speaking `to`: what is wrong with the result, if anything.
async fn one_case(
    f: &Fixture,
    whole: &Whole,
    broken: Bytes,
    to: Dialect,
    prefill: bool,
    fault: upstream::Fault,
) -> Result<(), String> {
    let mut upstream = Upstream::new(f.dialect, whole.clone()).speaking_by_path();
    if !prefill {
        upstream = upstream
            .rejecting_prefill("fallback")
            .rejecting_prefill("fallback-2");
    }
    let upstream = upstream.then(Scripted::Stream {
        bytes: broken,
        cuts: vec![],
        fault: Some(fault),
    });
    let layer =
        MidStreamFallbackLayer::new(chain_to(to, prefill)).idle_timeout(Duration::from_secs(10));
    let body = Bytes::from(request_body(f).to_string());
    let out = run(layer, &upstream, path(f.dialect), body).await;
    client_got(f.dialect, f.usage, &out, whole)?;
    if f.dialect == Dialect::Gemini {
        let unsigned = unsigned_calls(&json!(function_call_parts(&out.bytes)));
        if !unsigned.is_empty() {
            return Err(format!(
                "calls a Gemini 3 model refuses in the next turn: {unsigned:?}"
            ));
        }
    }
    let calls = upstream.calls();
    fallback_calls_in(to, &calls)?;
    if !prefill && calls.iter().skip(1).any(trailing_model_turn) {
        return Err("a prefill reached a model that rejects it".into());
    }
    if calls.len() > 2 {
        return Err(format!("{} calls where one fallback suffices", calls.len()));
    }
    Ok(())
}

/// `body` (a request for fixture `f`) broken halfway with a reset, `elsewhere` (a target that
/// cannot take it, named "elsewhere") the only fallback: nothing reaches it, and the client
/// hears of the original failure in its own dialect.
pub async fn never_sent_to(f: &Fixture, body: &Value, elsewhere: Target) {
    let bytes = fixture(f.name);
    let events = events_of(&bytes);
    let whole = whole_of(f.dialect, &bytes);
    let upstream = Upstream::new(f.dialect, whole)
        .speaking_by_path()
        .then(Scripted::Stream {
            bytes: Bytes::from(events[..events.len() / 2].concat()),
            cuts: vec![],
            fault: Some(upstream::Fault::Reset),
        });
    let chain = FallbackChain::new()
        .target(elsewhere)
        .fallbacks("primary", ["elsewhere"]);
    let out = run(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        path(f.dialect),
        Bytes::from(body.to_string()),
    )
    .await;
    assert_eq!(
        upstream.calls().len(),
        1,
        "{}: nothing sent elsewhere",
        f.name
    );
    let got = check(f.dialect, f.usage, &out.bytes).unwrap();
    let error = got.error.expect("the stream ends with an error event");
    assert!(error.contains("reset"), "{}: {error}", f.name);
    let why = out.error.expect("the FallbackError").to_string();
    assert!(why.contains("elsewhere cannot take this request"), "{why}");
}
