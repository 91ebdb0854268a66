//! Fallbacks across Gemini's own API and the other dialects: a Gemini client continued by an
//! Anthropic, Chat or Responses model, and an Anthropic, Chat or Responses client by a Gemini
//! model. The client gets
//! one stream in its own dialect that obeys its seam rules and holds the whole answer; the
//! fallback gets a request in its own dialect, at its own endpoint (Gemini's names the model in
//! its path), carrying the continuation in its own form.

mod support;

use bytes::Bytes;
use serde_json::{json, Value};
use support::cross::{self, *};
use support::*;
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill, Target};

/// Positions sampled to keep time down: every one of a short stream or of one with tool calls
/// (a failure in the middle of a call must leave the client the whole call); of a longer one
/// the first events, every third, the last ones.
fn sampled(events: usize, every: bool) -> Vec<usize> {
    (0..events)
        .filter(|p| every || events <= 12 || *p < 3 || p % 3 == 0 || *p + 2 >= events)
        .collect()
}

/// The matrix for the pair `client` / `to` at [`sampled`] positions: no run fails, and it
/// runs at least 32 cases for each prefill setting.
async fn matrix(client: Dialect, to: Dialect) {
    let prefills = if to == Dialect::Responses { 1 } else { 2 };
    let pair = cross::matrix(client, to, sampled).await;
    pair.assert_none_failed(&format!("{client:?} client, {to:?} fallback"));
    assert!(
        pair.runs >= 32 * prefills,
        "the matrix ran only {} cases",
        pair.runs
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
        never_sent_to(
            f,
            &body,
            Target::new("elsewhere")
                .prefill(prefill_of(to, true))
                .dialect(wire(to)),
        )
        .await;
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

/// A `client` request whose primary sends `primary` (the start of "Hello, world.") and resets,
/// continued by `target` alone: the client reads the whole answer in its own dialect, and the
/// one fallback call is returned.
async fn hello_across(
    client: Dialect,
    primary: Bytes,
    request: Value,
    target: Target,
) -> upstream::Call {
    let whole = Whole {
        text: "Hello, world.".into(),
        ..Whole::default()
    };
    let upstream = Upstream::new(client, whole.clone())
        .speaking_by_path()
        .then(Scripted::Stream {
            bytes: primary,
            cuts: vec![],
            fault: Some(Fault::Reset),
        });
    let name = target.name().to_owned();
    let chain = FallbackChain::new()
        .target(target)
        .fallbacks("primary", [name]);
    let out = run(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        path(client),
        Bytes::from(request.to_string()),
    )
    .await;
    let got = client_got(client, true, &out, &whole).unwrap();
    assert_eq!(got.text, "Hello, world.");
    let mut calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    calls.remove(1)
}

#[tokio::test(start_paused = true)]
async fn the_request_a_gemini_client_sends_reaches_an_anthropic_fallback_translated_with_the_continuation(
) {
    // The Gemini primary says "Hello, " and breaks; Claude continues with a prefill.
    let request = json!({"contents":[{"role":"user","parts":[{"text":"Greet the world."}]}],
        "systemInstruction":{"parts":[{"text":"Be brief."}]},
        "generationConfig":{"maxOutputTokens":100,"temperature":0.2}});
    let call = hello_across(
        Dialect::Gemini,
        Bytes::from(gemini_chunk(json!([{"text":"Hello, "}]), None)),
        request,
        Target::new("claude")
            .prefill(Prefill::Assistant)
            .dialect(wire(Dialect::Anthropic)),
    )
    .await;
    assert_eq!(call.uri, "/v1/messages");
    let sent = &call.body;
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
    let request = json!({"model":"primary","max_tokens":100,"stream":true,"system":"Be brief.",
        "messages":[{"role":"user","content":"Greet the world."}]});
    let call = hello_across(
        Dialect::Anthropic,
        events_of(&fixture("anthropic_text.sse"))
            .first()
            .cloned()
            .unwrap_or_default(),
        request,
        Target::new("gemini-2.5-flash")
            .prefill(Prefill::Assistant)
            .dialect(wire(Dialect::Gemini)),
    )
    .await;
    assert_eq!(
        call.uri,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        call.body,
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
    let request = json!({"contents":[{"role":"user","parts":[{"text":"Greet the world."}]}],
        "systemInstruction":{"parts":[{"text":"Be brief."}]},
        "generationConfig":{"maxOutputTokens":100,"temperature":0.2,"topP":0.9}});
    let call = hello_across(
        Dialect::Gemini,
        Bytes::from(gemini_chunk(json!([{"text":"Hello, "}]), None)),
        request,
        Target::new("gpt-5").dialect(wire(Dialect::Responses)),
    )
    .await;
    assert_eq!(call.uri, "/v1/responses");
    let mut sent = call.body.clone();
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
        call.body
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
    let response = json!({"id":"resp_1","object":"response","created_at":1700000000,
        "status":"in_progress","model":"primary","output":[],"usage":null});
    let primary = responses_events(&[
        json!({"type":"response.created","response":response}),
        json!({"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}),
        json!({"type":"response.content_part.added","item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"text":""}}),
        json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello, "}),
    ]);
    let request = json!({"model":"primary","stream":true,"instructions":"Be brief.",
        "input":"Greet the world.","max_output_tokens":100,"temperature":0.2,"store":false});
    let call = hello_across(
        Dialect::Responses,
        Bytes::from(primary),
        request,
        Target::new("gemini-2.5-flash")
            .prefill(Prefill::Assistant)
            .dialect(wire(Dialect::Gemini)),
    )
    .await;
    assert_eq!(
        call.uri,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    // `store` is dropped (nothing is stored at Gemini); the answer so far is the model's own
    // turn, which Gemini continues (a prefill, though the client's API has none); the limit is
    // less what the primary spent.
    let mut sent = call.body.clone();
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
        call.body
    );
}

/// The placeholder `thoughtSignature` Google names for function calls Gemini did not make.
const PLACEHOLDER: &str = "skip_thought_signature_validator";

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

/// [`gemini_tool_request`] to a Gemini primary that says "Let me " and resets, continued on
/// [`chain_to`] `to` with prefill: the client reads the whole answer (one call of
/// `get_weather`); its call parts and the calls upstream are returned.
async fn gemini_tool_call_on(to: Dialect) -> (Vec<Value>, Vec<upstream::Call>) {
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
    let parts = function_call_parts(&out.bytes);
    assert_eq!(parts.len(), 1, "{to:?}: {parts:?}");
    assert_eq!(parts[0]["functionCall"]["name"], "get_weather", "{to:?}");
    (parts, upstream.calls())
}

#[tokio::test(start_paused = true)]
async fn a_gemini_client_continued_on_another_provider_gets_its_calls_with_the_placeholder_signature(
) {
    // Without a signature on the call, the client's next turn (the call and its result) is
    // refused by a Gemini 3 model: the fallback's call carries the one Google names.
    for to in [Dialect::Anthropic, Dialect::OpenAi, Dialect::Responses] {
        let (parts, _) = gemini_tool_call_on(to).await;
        assert_eq!(parts[0]["thoughtSignature"], PLACEHOLDER, "{to:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_gemini_fallback_s_own_call_signature_and_the_client_s_own_reach_their_ends_untouched() {
    let (parts, sent) = gemini_tool_call_on(Dialect::Gemini).await;
    // The test upstream's Gemini signs its call `Y2FsbA==`: the client gets that one.
    assert_eq!(parts[0]["thoughtSignature"], "Y2FsbA==");
    // Gemini to Gemini, the client's history goes as it came, its signature with it.
    let request = gemini_tool_request();
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
