//! Fallbacks across Gemini's own API and the other dialects: a Gemini client continued by an
//! Anthropic, Chat or Responses model, and an Anthropic, Chat or Responses client by a Gemini
//! model. The client gets
//! one stream in its own dialect that obeys its seam rules and holds the whole answer; the
//! fallback gets a request in its own dialect, at its own endpoint (Gemini's names the model in
//! its path), carrying the continuation in its own form.

mod support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use support::*;
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill, Target};

fn wire(dialect: Dialect) -> tower_midstream::Dialect {
    match dialect {
        Dialect::Anthropic => tower_midstream::Dialect::ANTHROPIC_MESSAGES,
        Dialect::OpenAi => tower_midstream::Dialect::OPENAI_CHAT,
        Dialect::Gemini => tower_midstream::Dialect::GEMINI,
        Dialect::Responses => tower_midstream::Dialect::OPENAI_RESPONSES,
    }
}

/// The prefill form a model of `dialect` takes, when it takes one.
fn prefill_of(dialect: Dialect, prefill: bool) -> Prefill {
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
fn chain_to(to: Dialect, prefill: bool) -> FallbackChain {
    let kind = prefill_of(to, prefill);
    FallbackChain::new()
        .target(Target::new("fallback").prefill(kind).dialect(wire(to)))
        .target(Target::new("fallback-2").prefill(kind).dialect(wire(to)))
        .fallbacks("primary", ["fallback", "fallback-2"])
}

/// The stop reason a client of `dialect` must end with.
fn stop_reason(dialect: Dialect, tools: bool) -> &'static str {
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
fn valid_id(dialect: Dialect, id: &str) -> bool {
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
fn client_got(
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

/// Every call after the first went to the fallback's own endpoint, in its own dialect.
fn fallback_calls_in(to: Dialect, calls: &[upstream::Call]) -> Result<(), String> {
    for call in calls.iter().skip(1) {
        let body = &call.body;
        let shaped = match to {
            Dialect::Anthropic => {
                call.uri.ends_with("/v1/messages")
                    && body["max_tokens"].is_u64()
                    && body["stream"] == true
                    && body["messages"].as_array().is_some_and(|m| {
                        m.iter()
                            .all(|m| m["role"] == "user" || m["role"] == "assistant")
                    })
            }
            Dialect::OpenAi => {
                call.uri.ends_with("/v1/chat/completions")
                    && body["stream"] == true
                    && body["stream_options"]["include_usage"] == true
                    && body.get("system").is_none()
            }
            Dialect::Gemini => {
                call.uri.ends_with(":streamGenerateContent?alt=sse")
                    && call.uri.contains("/models/fallback")
                    && body.get("model").is_none()
                    && body.get("stream").is_none()
                    && body["contents"].as_array().is_some_and(|c| {
                        c.iter()
                            .all(|c| c["role"] == "user" || c["role"] == "model")
                    })
                    && unsigned_calls(&body["contents"]).is_empty()
            }
            Dialect::Responses => {
                call.uri.ends_with("/v1/responses")
                    && body["model"] == "fallback"
                    && body["stream"] == true
                    && body.get("messages").is_none()
                    && body.get("contents").is_none()
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

/// The `functionCall` parts without a `thoughtSignature` in `parts` (a list of parts, or of
/// turns that have them).
fn unsigned_calls(value: &Value) -> Vec<Value> {
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

/// Whether a call ends with a turn of the model's own (a prefill).
fn trailing_model_turn(call: &upstream::Call) -> bool {
    let turns = call.body["messages"]
        .as_array()
        .or_else(|| call.body["contents"].as_array())
        .or_else(|| call.body["input"].as_array());
    turns
        .and_then(|t| t.last())
        .is_some_and(|t| t["role"] == "assistant" || t["role"] == "model")
}

/// The recorded streams of `client`'s dialect a fallback of another can continue (thinking
/// is the client provider's own; a refusal's stop reason depends on who gave it).
fn fixtures_of(client: Dialect) -> impl Iterator<Item = &'static Fixture> {
    FIXTURES.iter().filter(move |f| {
        f.dialect == client
            && !f.thinking
            && whole_of(f.dialect, &fixture(f.name)).refusal.is_none()
    })
}

/// Positions sampled to keep time down: every one of a short stream or of one with tool calls
/// (a failure in the middle of a call must leave the client the whole call); of a longer one
/// the first events, every third, the last ones.
fn sampled(events: usize, every: bool) -> impl Iterator<Item = usize> {
    (0..events).filter(move |p| every || events <= 12 || *p < 3 || p % 3 == 0 || *p + 2 >= events)
}

/// The matrix for the pair `client` / `to`: every fixture of the client's dialect, every
/// failure class, sampled positions, with and without prefill (without only, for a target
/// that has none).
async fn matrix(client: Dialect, to: Dialect) {
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
                for p in sampled(events.len(), !whole.tools.is_empty()) {
                    let mut upstream = Upstream::new(f.dialect, whole.clone()).speaking_by_path();
                    if !prefill {
                        upstream = upstream
                            .rejecting_prefill("fallback")
                            .rejecting_prefill("fallback-2");
                    }
                    let upstream = upstream.then(Scripted::Stream {
                        bytes: Bytes::from(events[..p].concat()),
                        cuts: vec![],
                        fault: Some(fault),
                    });
                    let layer = MidStreamFallbackLayer::new(chain_to(to, prefill))
                        .idle_timeout(Duration::from_secs(10));
                    let body = Bytes::from(request_body(f).to_string());
                    let out = run(layer, &upstream, path(f.dialect), body).await;
                    runs += 1;
                    let case = format!(
                        "{} to {to:?} prefill={prefill} {fault:?} after {p} of {} events",
                        f.name,
                        events.len()
                    );
                    if let Err(e) = client_got(f.dialect, f.usage, &out, &whole) {
                        failures.push(format!("{case}: {e}"));
                        continue;
                    }
                    if f.dialect == Dialect::Gemini {
                        let unsigned = unsigned_calls(&json!(function_call_parts(&out.bytes)));
                        if !unsigned.is_empty() {
                            failures.push(format!(
                                "{case}: calls a Gemini 3 model refuses in the next turn: \
                                 {unsigned:?}"
                            ));
                        }
                    }
                    let calls = upstream.calls();
                    if let Err(e) = fallback_calls_in(to, &calls) {
                        failures.push(format!("{case}: {e}"));
                    }
                    if !prefill && calls.iter().skip(1).any(trailing_model_turn) {
                        failures.push(format!("{case}: a prefill reached a model that rejects it"));
                    }
                    if calls.len() > 2 {
                        failures.push(format!(
                            "{case}: {} calls where one fallback suffices",
                            calls.len()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{client:?} client, {to:?} fallback: {} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        runs >= 32 * prefills.len(),
        "the matrix ran only {runs} cases"
    );
}

#[tokio::test(start_paused = true)]
async fn every_gemini_fixture_continues_on_an_anthropic_fallback_after_every_failure_at_sampled_events(
) {
    matrix(Dialect::Gemini, Dialect::Anthropic).await;
}

#[tokio::test(start_paused = true)]
async fn every_anthropic_fixture_continues_on_a_gemini_fallback_after_every_failure_at_sampled_events(
) {
    matrix(Dialect::Anthropic, Dialect::Gemini).await;
}

#[tokio::test(start_paused = true)]
async fn every_gemini_fixture_continues_on_a_chat_fallback_after_every_failure_at_sampled_events() {
    matrix(Dialect::Gemini, Dialect::OpenAi).await;
}

#[tokio::test(start_paused = true)]
async fn every_chat_fixture_continues_on_a_gemini_fallback_after_every_failure_at_sampled_events() {
    matrix(Dialect::OpenAi, Dialect::Gemini).await;
}

#[tokio::test(start_paused = true)]
async fn every_gemini_fixture_continues_on_a_responses_fallback_after_every_failure_at_sampled_events(
) {
    matrix(Dialect::Gemini, Dialect::Responses).await;
}

#[tokio::test(start_paused = true)]
async fn every_responses_fixture_continues_on_a_gemini_fallback_after_every_failure_at_sampled_events(
) {
    matrix(Dialect::Responses, Dialect::Gemini).await;
}

#[test]
fn gemini_translates_to_and_from_the_other_dialects() {
    use tower_midstream::Dialect as Wire;
    for other in [
        Wire::ANTHROPIC_MESSAGES,
        Wire::OPENAI_CHAT,
        Wire::OPENAI_RESPONSES,
    ] {
        assert!(Wire::GEMINI.translates_to(other), "{other:?}");
        assert!(other.translates_to(Wire::GEMINI), "{other:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_carrying_what_the_other_dialect_cannot_take_is_never_sent_there_nor_from_there()
{
    // A Gemini request with Google Search (a tool only Gemini runs) is never sent to Claude;
    // an Anthropic request with extended thinking is never sent to Gemini. With nothing else
    // left, the client hears of the original failure in its own dialect.
    let gemini_text = FIXTURES
        .iter()
        .find(|f| f.name == "gemini_text.sse")
        .unwrap();
    let mut searching = request_body(gemini_text);
    searching["tools"] = json!([{"googleSearch":{}}]);
    let thinking = FIXTURES
        .iter()
        .find(|f| f.name == "anthropic_thinking.sse")
        .unwrap();
    let cases = [
        (gemini_text, searching, Dialect::Anthropic, "googleSearch"),
        (
            thinking,
            request_body(thinking),
            Dialect::Gemini,
            "extended thinking",
        ),
    ];
    for (f, body, to, why) in cases {
        let bytes = fixture(f.name);
        let events = events_of(&bytes);
        let whole = whole_of(f.dialect, &bytes);
        let primary = Scripted::Stream {
            bytes: Bytes::from(events[..events.len() / 2].concat()),
            cuts: vec![],
            fault: Some(Fault::Reset),
        };
        let chain = FallbackChain::new()
            .target(
                Target::new("elsewhere")
                    .prefill(prefill_of(to, true))
                    .dialect(wire(to)),
            )
            .fallbacks("primary", ["elsewhere"]);
        let upstream = Upstream::new(f.dialect, whole.clone())
            .speaking_by_path()
            .then(primary);
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
        let shown = out.error.expect("the FallbackError").to_string();
        assert!(
            shown.contains("elsewhere cannot take this request"),
            "{shown}"
        );
        let plan_why = tower_midstream::Failure::builder(
            wire(f.dialect),
            http::Request::post(path(f.dialect))
                .body(Bytes::from(body.to_string()))
                .unwrap(),
        )
        .build()
        .cannot_send_to(&Target::new("elsewhere").dialect(wire(to)))
        .expect("never sent");
        assert!(plan_why.contains(why), "{plan_why}");
    }
}

/// One Gemini chunk, as the API writes it.
fn gemini_chunk(parts: Value, finish: Option<&str>) -> String {
    let mut candidate = json!({"content":{"parts":parts,"role":"model"},"index":0});
    if let Some(reason) = finish {
        candidate["finishReason"] = json!(reason);
    }
    let chunk = json!({"candidates":[candidate],
        "usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},
        "modelVersion":"gemini-2.5-flash","responseId":"r-1"});
    format!("data: {chunk}\r\n\r\n")
}

#[tokio::test(start_paused = true)]
async fn the_request_a_gemini_client_sends_reaches_an_anthropic_fallback_translated_with_the_continuation(
) {
    // The Gemini primary says "Hello, " and breaks; Claude continues with a prefill.
    let whole = Whole {
        text: "Hello, world.".into(),
        ..Whole::default()
    };
    let primary = Scripted::Stream {
        bytes: Bytes::from(gemini_chunk(json!([{"text":"Hello, "}]), None)),
        cuts: vec![],
        fault: Some(Fault::Reset),
    };
    let upstream = Upstream::new(Dialect::Gemini, whole.clone())
        .speaking_by_path()
        .then(primary);
    let request = json!({"contents":[{"role":"user","parts":[{"text":"Greet the world."}]}],
        "systemInstruction":{"parts":[{"text":"Be brief."}]},
        "generationConfig":{"maxOutputTokens":100,"temperature":0.2}});
    let layer = MidStreamFallbackLayer::new(
        FallbackChain::new()
            .target(
                Target::new("claude")
                    .prefill(Prefill::Assistant)
                    .dialect(wire(Dialect::Anthropic)),
            )
            .fallbacks("primary", ["claude"]),
    );
    let out = run(
        layer,
        &upstream,
        path(Dialect::Gemini),
        Bytes::from(request.to_string()),
    )
    .await;
    let got = client_got(Dialect::Gemini, true, &out, &whole).unwrap();
    assert_eq!(got.text, "Hello, world.");
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].uri, "/v1/messages");
    let sent = &calls[1].body;
    assert_eq!(sent["model"], "claude");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["stream"], true);
    assert_eq!(
        sent["messages"],
        json!([{"role":"user","content":"Greet the world."},
               {"role":"assistant","content":"Hello,"}])
    );
    assert!(sent["max_tokens"].as_u64().is_some_and(|n| n <= 100));
}

#[tokio::test(start_paused = true)]
async fn the_request_an_anthropic_client_sends_reaches_a_gemini_fallback_translated_with_the_continuation(
) {
    let whole = Whole {
        text: "Hello, world.".into(),
        ..Whole::default()
    };
    let primary = Scripted::Stream {
        bytes: events_of(&fixture("anthropic_text.sse"))
            .first()
            .cloned()
            .unwrap_or_default(),
        cuts: vec![],
        fault: Some(Fault::Reset),
    };
    let upstream = Upstream::new(Dialect::Anthropic, whole.clone())
        .speaking_by_path()
        .then(primary);
    let request = json!({"model":"primary","max_tokens":100,"stream":true,"system":"Be brief.",
        "messages":[{"role":"user","content":"Greet the world."}]});
    let layer = MidStreamFallbackLayer::new(
        FallbackChain::new()
            .target(
                Target::new("gemini-2.5-flash")
                    .prefill(Prefill::Assistant)
                    .dialect(wire(Dialect::Gemini)),
            )
            .fallbacks("primary", ["gemini-2.5-flash"]),
    );
    let out = run(
        layer,
        &upstream,
        path(Dialect::Anthropic),
        Bytes::from(request.to_string()),
    )
    .await;
    client_got(Dialect::Anthropic, true, &out, &whole).unwrap();
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].uri,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        calls[1].body,
        json!({"contents":[{"role":"user","parts":[{"text":"Greet the world."}]}],
            "systemInstruction":{"parts":[{"text":"Be brief."}]},
            "generationConfig":{"maxOutputTokens":100}})
    );
}

#[tokio::test(start_paused = true)]
async fn the_request_a_gemini_client_sends_reaches_a_responses_fallback_translated_with_the_continuation(
) {
    // The Gemini primary says "Hello, " and breaks; the Responses API has no prefill, so the
    // model gets the partial answer as an assistant item and the instruction to continue.
    let whole = Whole {
        text: "Hello, world.".into(),
        ..Whole::default()
    };
    let primary = Scripted::Stream {
        bytes: Bytes::from(gemini_chunk(json!([{"text":"Hello, "}]), None)),
        cuts: vec![],
        fault: Some(Fault::Reset),
    };
    let upstream = Upstream::new(Dialect::Gemini, whole.clone())
        .speaking_by_path()
        .then(primary);
    let request = json!({"contents":[{"role":"user","parts":[{"text":"Greet the world."}]}],
        "systemInstruction":{"parts":[{"text":"Be brief."}]},
        "generationConfig":{"maxOutputTokens":100,"temperature":0.2,"topP":0.9}});
    let layer = MidStreamFallbackLayer::new(
        FallbackChain::new()
            .target(Target::new("gpt-5").dialect(wire(Dialect::Responses)))
            .fallbacks("primary", ["gpt-5"]),
    );
    let out = run(
        layer,
        &upstream,
        path(Dialect::Gemini),
        Bytes::from(request.to_string()),
    )
    .await;
    let got = client_got(Dialect::Gemini, true, &out, &whole).unwrap();
    assert_eq!(got.text, "Hello, world.");
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].uri, "/v1/responses");
    let mut sent = calls[1].body.clone();
    // The continuation's turns: the partial answer, then the instruction (its words are the
    // instruction strategy's, tested with it).
    let input = sent["input"].as_array_mut().unwrap();
    let instruction = input.pop().unwrap();
    assert_eq!(instruction["role"], "user");
    assert!(instruction["content"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    // The limit, less what the primary spent (at least the API's 16).
    let limit = sent["max_output_tokens"].take().as_u64().unwrap();
    assert!((16..100).contains(&limit), "{limit}");
    assert_eq!(
        sent,
        json!({"model":"gpt-5",
            "input":[{"role":"system","content":"Be brief."},
                     {"role":"user","content":"Greet the world."},
                     {"role":"assistant","content":"Hello, "}],
            "max_output_tokens":null,"temperature":0.2,"top_p":0.9,"stream":true}),
        "{}",
        calls[1].body
    );
}

/// Responses events as the API writes them, numbered from 0.
fn responses_events(events: &[Value]) -> String {
    let mut out = String::new();
    for (n, e) in events.iter().enumerate() {
        let mut e = e.clone();
        e["sequence_number"] = json!(n);
        out.push_str(&format!(
            "event: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap()
        ));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_request_a_responses_client_sends_reaches_a_gemini_fallback_translated_with_the_continuation(
) {
    // The Responses primary says "Hello, " and breaks; Gemini continues the model turn.
    let whole = Whole {
        text: "Hello, world.".into(),
        ..Whole::default()
    };
    let response = json!({"id":"resp_1","object":"response","created_at":1700000000,
        "status":"in_progress","model":"primary","output":[],"usage":null});
    let primary = Scripted::Stream {
        bytes: Bytes::from(responses_events(&[
            json!({"type":"response.created","response":response}),
            json!({"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}),
            json!({"type":"response.content_part.added","item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"text":""}}),
            json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello, "}),
        ])),
        cuts: vec![],
        fault: Some(Fault::Reset),
    };
    let upstream = Upstream::new(Dialect::Responses, whole.clone())
        .speaking_by_path()
        .then(primary);
    let request = json!({"model":"primary","stream":true,"instructions":"Be brief.",
        "input":"Greet the world.","max_output_tokens":100,"temperature":0.2,"store":false});
    let layer = MidStreamFallbackLayer::new(
        FallbackChain::new()
            .target(
                Target::new("gemini-2.5-flash")
                    .prefill(Prefill::Assistant)
                    .dialect(wire(Dialect::Gemini)),
            )
            .fallbacks("primary", ["gemini-2.5-flash"]),
    );
    let out = run(
        layer,
        &upstream,
        path(Dialect::Responses),
        Bytes::from(request.to_string()),
    )
    .await;
    let got = client_got(Dialect::Responses, true, &out, &whole).unwrap();
    assert_eq!(got.text, "Hello, world.");
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].uri,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    // `store` is dropped (nothing is stored at Gemini); the answer so far is the model's own
    // turn, which Gemini continues (a prefill, though the client's API has none); the limit is
    // less what the primary spent.
    let mut sent = calls[1].body.clone();
    let limit = sent["generationConfig"]["maxOutputTokens"]
        .take()
        .as_u64()
        .unwrap();
    assert!((1..100).contains(&limit), "{limit}");
    assert_eq!(
        sent,
        json!({"contents":[{"role":"user","parts":[{"text":"Greet the world."}]},
                           {"role":"model","parts":[{"text":"Hello, "}]}],
            "systemInstruction":{"parts":[{"text":"Be brief."}]},
            "generationConfig":{"maxOutputTokens":null,"temperature":0.2}}),
        "{}",
        calls[1].body
    );
}

/// The placeholder `thoughtSignature` Google names for function calls Gemini did not make.
const PLACEHOLDER: &str = "skip_thought_signature_validator";

/// The `functionCall` parts of a Gemini stream, whole (with their `thoughtSignature`).
fn function_call_parts(bytes: &[u8]) -> Vec<Value> {
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

/// A Gemini client asking for the weather with a tool, in a conversation where an earlier call
/// of Gemini 3's came with its signature.
fn gemini_tool_request() -> Value {
    json!({"contents":[
        {"role":"user","parts":[{"text":"Time in Paris?"}]},
        {"role":"model","parts":[{"functionCall":{"name":"get_time","args":{"city":"Paris"}},
            "thoughtSignature":"RWFybGllcg=="}]},
        {"role":"user","parts":[{"functionResponse":{"name":"get_time","response":{"output":"noon"}}}]}],
        "tools":[{"functionDeclarations":[{"name":"get_weather"},{"name":"get_time"}]}]})
}

#[tokio::test(start_paused = true)]
async fn a_gemini_client_continued_on_another_provider_gets_its_calls_with_the_placeholder_signature(
) {
    // Without a signature on the call, the client's next turn (the call and its result) is
    // refused by a Gemini 3 model: the fallback's call carries the one Google names.
    for to in [Dialect::Anthropic, Dialect::OpenAi, Dialect::Responses] {
        let whole = Whole {
            text: "Let me check. ".into(),
            tools: vec![("get_weather".into(), r#"{"city":"Paris"}"#.into())],
            ..Whole::default()
        };
        let primary = Scripted::Stream {
            bytes: Bytes::from(gemini_chunk(json!([{"text":"Let me "}]), None)),
            cuts: vec![],
            fault: Some(Fault::Reset),
        };
        let upstream = Upstream::new(Dialect::Gemini, whole.clone())
            .speaking_by_path()
            .then(primary);
        let layer = MidStreamFallbackLayer::new(chain_to(to, true));
        let out = run(
            layer,
            &upstream,
            path(Dialect::Gemini),
            Bytes::from(gemini_tool_request().to_string()),
        )
        .await;
        client_got(Dialect::Gemini, true, &out, &whole).unwrap();
        let calls = function_call_parts(&out.bytes);
        assert_eq!(calls.len(), 1, "{to:?}: {calls:?}");
        assert_eq!(calls[0]["functionCall"]["name"], "get_weather", "{to:?}");
        assert_eq!(calls[0]["thoughtSignature"], PLACEHOLDER, "{to:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_gemini_fallback_s_own_call_signature_and_the_client_s_own_reach_their_ends_untouched() {
    let whole = Whole {
        text: "Let me check. ".into(),
        tools: vec![("get_weather".into(), r#"{"city":"Paris"}"#.into())],
        ..Whole::default()
    };
    let primary = Scripted::Stream {
        bytes: Bytes::from(gemini_chunk(json!([{"text":"Let me "}]), None)),
        cuts: vec![],
        fault: Some(Fault::Reset),
    };
    let upstream = Upstream::new(Dialect::Gemini, whole.clone())
        .speaking_by_path()
        .then(primary);
    let layer = MidStreamFallbackLayer::new(chain_to(Dialect::Gemini, true));
    let request = gemini_tool_request();
    let out = run(
        layer,
        &upstream,
        path(Dialect::Gemini),
        Bytes::from(request.to_string()),
    )
    .await;
    client_got(Dialect::Gemini, true, &out, &whole).unwrap();
    // The test upstream's Gemini signs its call `Y2FsbA==`: the client gets that one.
    let calls = function_call_parts(&out.bytes);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["thoughtSignature"], "Y2FsbA==");
    // Gemini to Gemini, the client's history goes as it came, its signature with it.
    let sent = upstream.calls();
    assert_eq!(sent.len(), 2);
    let history = &sent[1].body["contents"];
    assert_eq!(history[1], request["contents"][1]);
    assert_eq!(history[2], request["contents"][2]);
}

#[tokio::test(start_paused = true)]
async fn a_conversation_with_tool_calls_reaches_a_gemini_fallback_with_the_placeholder_on_each_call(
) {
    // An Anthropic client's second step, then a Chat client's: each call in the history is
    // one Gemini did not make, and a Gemini 3 fallback refuses the request unless it carries
    // the placeholder.
    let anthropic = json!({"model":"primary","max_tokens":100,"stream":true,"messages":[
        {"role":"user","content":"Weather and time in Paris?"},
        {"role":"assistant","content":[
            {"type":"text","text":"Checking."},
            {"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"city":"Paris"}},
            {"type":"tool_use","id":"toolu_01B","name":"get_time","input":{}}]},
        {"role":"user","content":[
            {"type":"tool_result","tool_use_id":"toolu_01A","content":"sunny"},
            {"type":"tool_result","tool_use_id":"toolu_01B","content":"noon"}]}],
        "tools":[{"name":"get_weather","input_schema":{"type":"object"}},
                 {"name":"get_time","input_schema":{"type":"object"}}]});
    let chat = json!({"model":"primary","stream":true,"stream_options":{"include_usage":true},
        "messages":[
            {"role":"user","content":"Weather and time in Paris?"},
            {"role":"assistant","content":"Checking.","tool_calls":[
                {"id":"toolu_01A","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"toolu_01B","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"toolu_01A","content":"sunny"},
            {"role":"tool","tool_call_id":"toolu_01B","content":"noon"}],
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}},
                 {"type":"function","function":{"name":"get_time","parameters":{"type":"object"}}}]});
    let want = json!([
        {"role":"user","parts":[{"text":"Weather and time in Paris?"}]},
        {"role":"model","parts":[
            {"text":"Checking."},
            {"functionCall":{"id":"toolu_01A","name":"get_weather","args":{"city":"Paris"}},
                "thoughtSignature":PLACEHOLDER},
            {"functionCall":{"id":"toolu_01B","name":"get_time","args":{}},
                "thoughtSignature":PLACEHOLDER}]},
        {"role":"user","parts":[
            {"functionResponse":{"id":"toolu_01A","name":"get_weather","response":{"output":"sunny"}}},
            {"functionResponse":{"id":"toolu_01B","name":"get_time","response":{"output":"noon"}}}]}
    ]);
    for (client, request) in [(Dialect::Anthropic, anthropic), (Dialect::OpenAi, chat)] {
        let whole = Whole {
            text: "Sunny, at noon.".into(),
            ..Whole::default()
        };
        // The primary is down before it says anything: the fallback starts the answer.
        let primary = Scripted::Status {
            status: 529,
            content_type: "application/json",
            body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        };
        // The test model reads the history's last model text as a partial answer: it answers
        // the whole answer anyway.
        let upstream = Upstream::new(client, whole.clone())
            .speaking_by_path()
            .lenient()
            .then(primary);
        let layer = MidStreamFallbackLayer::new(chain_to(Dialect::Gemini, true));
        let out = run(
            layer,
            &upstream,
            path(client),
            Bytes::from(request.to_string()),
        )
        .await;
        client_got(client, true, &out, &whole).unwrap();
        let sent = upstream.calls();
        assert_eq!(sent.len(), 2, "{client:?}");
        assert_eq!(sent[1].body["contents"], want, "{client:?}");
    }
}
