//! The OpenAI Responses API dialect end to end: seams the official SDKs accept, continuation
//! by instruction as input items, and the request fields that change what a retry may do.
//! (Every recorded Responses stream also runs through tests/splice_matrix.rs.)

mod support;

use serde_json::{json, Value};
use support::*;
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill, Target};

fn layer() -> MidStreamFallbackLayer<FallbackChain> {
    MidStreamFallbackLayer::new(one_fallback(Prefill::None))
}

fn events(bytes: &[u8]) -> Vec<Value> {
    check::parse_sse(bytes)
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// A primary that sends HELLO's first `sent` deltas, then `tail` (an error event...) or resets.
fn primary_then(sent: usize, tail: Option<&str>) -> Upstream {
    let whole = Whole {
        text: HELLO.concat(),
        ..Whole::default()
    };
    let lead = events_of(&responses_text_stream(&HELLO))[..4 + sent].concat();
    let (bytes, fault) = match tail {
        Some(tail) => ([lead, tail.as_bytes().to_vec()].concat(), None),
        None => (lead, Some(Fault::Reset)),
    };
    Upstream::new(Dialect::Responses, whole).then(Scripted::Stream {
        bytes: bytes.into(),
        cuts: vec![],
        fault,
    })
}

const SERVER_ERROR: &str = "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":6,\"response\":{\"id\":\"resp_primary\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"The model melted.\"},\"output\":[]}}\n\n";

#[tokio::test(start_paused = true)]
async fn a_break_mid_text_is_continued_by_instruction_in_the_open_part_under_one_numbering() {
    let upstream = broken_after(Dialect::Responses, &HELLO, 2);
    let out = send(layer(), &upstream, Dialect::Responses, &responses_request()).await;
    let got = check(Dialect::Responses, true, &out.bytes)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out.bytes)));
    assert_eq!(got.text, HELLO.concat());
    let events = events(&out.bytes);
    assert_eq!(of_type(&events, "response.created").len(), 1);
    assert_eq!(of_type(&events, "response.in_progress").len(), 1);
    assert_eq!(of_type(&events, "response.output_item.added").len(), 1);
    assert_eq!(of_type(&events, "response.content_part.added").len(), 1);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(
        last["response"]["id"], "resp_primary",
        "the primary's id, kept"
    );
    // Usage covers both attempts: 2 deltas of the primary, 2 of the fallback (" friend!" in
    // pieces of 5 characters, as the test model streams).
    assert_eq!(got.output_tokens, Some(4));
    assert_eq!(last["response"]["usage"]["total_tokens"], 14);
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());

    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    let sent = &calls[1].body;
    assert_eq!(sent["model"], "fallback");
    assert_eq!(sent["max_output_tokens"], 98, "100 less the 2 tokens kept");
    let input = sent["input"].as_array().unwrap();
    assert_eq!(input.len(), 3);
    assert_eq!(input[0], json!({"role":"user","content":"Say hello."}));
    assert_eq!(
        input[1],
        json!({"role":"assistant","content":"Hello there, "})
    );
    assert_eq!(input[2]["role"], "user");
    assert!(input[2]["content"].as_str().unwrap().contains("Continue"));
}

#[tokio::test(start_paused = true)]
async fn a_string_input_is_continued_as_input_items() {
    let upstream = broken_after(Dialect::Responses, &HELLO, 1);
    let mut request = responses_request();
    request["input"] = json!("Say \"hello\".");
    let out = send(layer(), &upstream, Dialect::Responses, &request).await;
    let got = check(Dialect::Responses, true, &out.bytes).unwrap();
    assert_eq!(got.text, HELLO.concat());
    let input = upstream.calls()[1].body["input"].clone();
    assert_eq!(input[0], json!({"role":"user","content":"Say \"hello\"."}));
    assert_eq!(input[1], json!({"role":"assistant","content":"Hello"}));
    assert_eq!(input[2]["role"], "user");
}

#[tokio::test(start_paused = true)]
async fn a_failed_response_with_a_server_error_is_continued_elsewhere() {
    let upstream = primary_then(2, Some(SERVER_ERROR));
    let out = send(layer(), &upstream, Dialect::Responses, &responses_request()).await;
    let got = check(Dialect::Responses, true, &out.bytes).unwrap();
    assert_eq!(got.text, HELLO.concat());
    assert!(!String::from_utf8_lossy(&out.bytes).contains("melted"));
    assert_eq!(upstream.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_error_a_retry_cannot_fix_reaches_the_client_as_the_api_sent_it() {
    let invalid = "event: error\ndata: {\"type\":\"error\",\"sequence_number\":6,\"error\":{\"type\":\"invalid_request_error\",\"code\":\"invalid_prompt\",\"message\":\"Not allowed.\",\"param\":null}}\n\n";
    let upstream = primary_then(2, Some(invalid));
    let out = send(layer(), &upstream, Dialect::Responses, &responses_request()).await;
    let got = check(Dialect::Responses, true, &out.bytes).unwrap();
    assert_eq!(got.error.as_deref(), Some("Not allowed."));
    assert_eq!(got.text, "Hello there, ");
    assert_eq!(upstream.calls().len(), 1, "no fallback for a client error");
}

#[tokio::test(start_paused = true)]
async fn giving_up_ends_with_an_error_event_both_sdk_shapes_raise_on_naming_the_original_failure() {
    let upstream = primary_then(2, Some(SERVER_ERROR)).then(Scripted::Status {
        status: 503,
        content_type: "application/json",
        body: r#"{"error":{"message":"fallback down","type":"server_error"}}"#,
    });
    let out = send(layer(), &upstream, Dialect::Responses, &responses_request()).await;
    let got = check(Dialect::Responses, true, &out.bytes).unwrap();
    assert_eq!(got.text, "Hello there, ", "what was sent stays sent");
    let message = got.error.expect("an error event");
    assert!(message.contains("The model melted."), "{message}");
    let events = events(&out.bytes);
    let error = events.last().unwrap();
    // Documented (top level) and sent by the API (nested): openai-python and openai-node
    // raise APIError on the nested `error`, raw streams and helpers alike.
    assert_eq!(error["type"], "error");
    assert_eq!(error["message"], error["error"]["message"]);
    assert_eq!(error["code"], error["error"]["code"]);
    assert!(error["error"]["type"].is_string());
    assert!(out.error.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_target_that_cannot_resolve_previous_response_id_is_not_what_the_client_hears() {
    // The id names a response stored at the primary's provider; a fallback elsewhere answers
    // 400. The client hears of the original failure, not of the fallback's 400.
    let upstream = primary_then(2, Some(SERVER_ERROR)).then(Scripted::Status {
        status: 400,
        content_type: "application/json",
        body: r#"{"error":{"message":"Previous response with id 'resp_earlier' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}"#,
    });
    let mut request = responses_request();
    request["previous_response_id"] = json!("resp_earlier");
    let out = send(layer(), &upstream, Dialect::Responses, &request).await;
    let got = check(Dialect::Responses, true, &out.bytes).unwrap();
    let message = got.error.expect("an error event");
    assert!(message.contains("The model melted."), "{message}");
    assert!(!message.contains("not found"), "{message}");
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].body["previous_response_id"], "resp_earlier",
        "kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_with_a_conversation_is_not_continued_into_it() {
    // A continuation would append the layer's partial-answer and instruction turns to the
    // user's server-side conversation.
    let upstream = primary_then(2, Some(SERVER_ERROR));
    let mut request = responses_request();
    request["conversation"] = json!("conv_1");
    let out = send(layer(), &upstream, Dialect::Responses, &request).await;
    let got = check(Dialect::Responses, true, &out.bytes).unwrap();
    let message = got.error.expect("an error event");
    assert!(message.contains("The model melted."), "{message}");
    assert_eq!(upstream.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_conversation_request_is_restarted_while_nothing_reached_the_client() {
    let upstream = Upstream::new(
        Dialect::Responses,
        Whole {
            text: HELLO.concat(),
            ..Whole::default()
        },
    )
    .then(Scripted::Status {
        status: 503,
        content_type: "application/json",
        body: r#"{"error":{"message":"down","type":"server_error"}}"#,
    });
    let mut request = responses_request();
    request["conversation"] = json!("conv_1");
    let out = send(layer(), &upstream, Dialect::Responses, &request).await;
    let got = check(Dialect::Responses, true, &out.bytes).unwrap();
    assert_eq!(got.text, HELLO.concat());
    assert_eq!(upstream.calls()[1].body["conversation"], "conv_1");
}

#[tokio::test(start_paused = true)]
async fn a_background_response_is_not_retried_once_the_client_has_its_events() {
    let upstream = primary_then(2, None);
    let mut request = responses_request();
    request["background"] = json!(true);
    let out = send(layer(), &upstream, Dialect::Responses, &request).await;
    let got = check(Dialect::Responses, true, &out.bytes).unwrap();
    assert!(got.error.is_some());
    assert_eq!(got.text, "Hello there, ");
    assert_eq!(upstream.calls().len(), 1);
}

/// A chain whose only fallback is declared to speak `to`.
fn fallback_in(to: tower_midstream::Dialect) -> MidStreamFallbackLayer<FallbackChain> {
    MidStreamFallbackLayer::new(
        FallbackChain::new()
            .target(Target::new("fallback").dialect(to))
            .fallbacks("primary", ["fallback"]),
    )
}

#[tokio::test(start_paused = true)]
async fn a_responses_client_is_continued_by_a_fallback_of_another_dialect_in_one_response() {
    use tower_midstream::Dialect as Wire;
    for (other, speaks, endpoint) in [
        (Wire::OPENAI_CHAT, Dialect::OpenAi, "/v1/chat/completions"),
        (Wire::ANTHROPIC_MESSAGES, Dialect::Anthropic, "/v1/messages"),
    ] {
        assert!(Wire::OPENAI_RESPONSES.translates_to(other));
        assert!(other.translates_to(Wire::OPENAI_RESPONSES));
        let upstream = primary_then(2, Some(SERVER_ERROR)).speaking_by_path();
        let out = send(
            fallback_in(other),
            &upstream,
            Dialect::Responses,
            &responses_request(),
        )
        .await;
        let shown = String::from_utf8_lossy(&out.bytes).into_owned();
        let got = check(Dialect::Responses, true, &out.bytes)
            .unwrap_or_else(|e| panic!("{other:?}: {e}\n{shown}"));
        assert_eq!(got.text, HELLO.concat(), "{other:?}: {shown}");
        assert!(got.error.is_none(), "{other:?}: {shown}");
        let calls = upstream.calls();
        assert_eq!(calls.len(), 2, "{other:?}");
        assert!(calls[1].uri.ends_with(endpoint), "{}", calls[1].uri);
        assert_eq!(calls[1].dialect, Some(other));
        // The continuation in the fallback's own words: the partial answer, then the ask.
        let turns = calls[1].body["messages"].as_array().unwrap();
        let partial = &turns[turns.len() - 2];
        assert_eq!(
            partial["role"], "assistant",
            "{speaks:?}: {}",
            calls[1].body
        );
        assert_eq!(turns.last().unwrap()["role"], "user");
        let events = events(&out.bytes);
        assert_eq!(of_type(&events, "response.created").len(), 1);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.completed", "{shown}");
        assert_eq!(last["response"]["id"], "resp_primary");
        assert_eq!(last["response"]["status"], "completed");
        assert_eq!(
            last["response"]["output"][0]["content"][0]["text"],
            HELLO.concat()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_of_another_dialect_is_continued_by_a_responses_fallback_in_its_own_stream() {
    use tower_midstream::Dialect as Wire;
    for (client, request) in [
        (Dialect::OpenAi, openai_request()),
        (Dialect::Anthropic, anthropic_request()),
    ] {
        let upstream = broken_after(client, &HELLO, 2).speaking_by_path();
        let out = send(
            fallback_in(Wire::OPENAI_RESPONSES),
            &upstream,
            client,
            &request,
        )
        .await;
        let shown = String::from_utf8_lossy(&out.bytes).into_owned();
        let got =
            check(client, true, &out.bytes).unwrap_or_else(|e| panic!("{client:?}: {e}\n{shown}"));
        assert_eq!(got.text, HELLO.concat(), "{client:?}: {shown}");
        assert!(got.error.is_none(), "{client:?}: {shown}");
        let calls = upstream.calls();
        assert_eq!(calls.len(), 2);
        assert!(calls[1].uri.ends_with("/v1/responses"), "{}", calls[1].uri);
        let input = calls[1].body["input"].as_array().unwrap();
        assert_eq!(
            input[input.len() - 2],
            json!({"role":"assistant","content":"Hello there, "})
        );
        assert_eq!(input.last().unwrap()["role"], "user");
    }
}
