//! Fallbacks of another dialect: an Anthropic Messages client continued by an OpenAI Chat
//! model, and a Chat client by an Anthropic model. The client gets one stream in its own
//! dialect that obeys its seam rules and holds the whole answer; the fallback gets a request
//! in its own dialect, at its own endpoint, that carries the continuation in its own form.

mod support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use support::cross::{self, *};
use support::*;
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill, Target};

/// The other dialect of the first pair (Anthropic and Chat); Responses' is Anthropic.
fn other(dialect: Dialect) -> Dialect {
    match dialect {
        Dialect::Anthropic => Dialect::OpenAi,
        Dialect::OpenAi | Dialect::Responses => Dialect::Anthropic,
        Dialect::Gemini => unreachable!("Gemini's pairs are tests/cross_gemini.rs's"),
    }
}

/// `primary` (the client's dialect) falls back to `fallback` and `fallback-2`, both speaking
/// the other dialect.
fn cross_chain(client: Dialect, prefill: bool) -> FallbackChain {
    chain_to(other(client), prefill)
}

/// The recorded streams of the first pair (Anthropic and Chat) a fallback of another dialect
/// can continue (Gemini's pairs are tests/cross_gemini.rs's).
fn fixtures() -> impl Iterator<Item = &'static Fixture> {
    [Dialect::Anthropic, Dialect::OpenAi]
        .into_iter()
        .flat_map(fixtures_of)
}

/// Failure positions in a stream of `events`: its first few, its last few, and some between
/// (every one for a short stream), so that each pair runs in seconds.
fn sampled(events: usize, _tool_calls: bool) -> Vec<usize> {
    if events <= 10 {
        return (0..events).collect();
    }
    let mut at: Vec<usize> = [0, 1, 2, 3, events / 3, events / 2, 2 * events / 3]
        .into_iter()
        .chain(events - 3..events)
        .collect();
    at.sort_unstable();
    at.dedup();
    at
}

/// Every event of a stream of `events`.
fn every(events: usize, _tool_calls: bool) -> Vec<usize> {
    (0..events).collect()
}

#[tokio::test(start_paused = true)]
async fn every_fixture_continues_across_responses_and_anthropic_after_every_failure_at_sampled_events(
) {
    let mut all = MatrixRuns::default();
    for (client, to) in [
        (Dialect::Responses, Dialect::Anthropic),
        (Dialect::Anthropic, Dialect::Responses),
        (Dialect::Responses, Dialect::OpenAi),
        (Dialect::OpenAi, Dialect::Responses),
    ] {
        let pair = cross::matrix(client, to, sampled).await;
        assert!(
            pair.runs > 20,
            "{client:?} to {to:?} ran only {} cases",
            pair.runs
        );
        all.add(pair);
    }
    all.assert_none_failed("Responses and the first pair");
}

#[tokio::test(start_paused = true)]
async fn every_fixture_continues_on_a_fallback_of_the_other_dialect_after_every_failure_at_every_event(
) {
    let mut all = MatrixRuns::default();
    for client in [Dialect::Anthropic, Dialect::OpenAi] {
        all.add(cross::matrix(client, other(client), every).await);
    }
    all.assert_none_failed("the first pair");
    assert!(all.runs > 300, "the matrix ran only {} cases", all.runs);
}

#[tokio::test(start_paused = true)]
async fn a_fallback_of_the_other_dialect_that_fails_too_is_continued_by_one_of_the_clients() {
    // primary (client's dialect) → fallback (the other) fails after k of its events →
    // fallback-2 (the client's dialect again) finishes.
    let mut failures = Vec::new();
    for f in fixtures() {
        let bytes = fixture(f.name);
        let events = events_of(&bytes);
        let whole = whole_of(f.dialect, &bytes);
        let to = other(f.dialect);
        let chain = |_| {
            FallbackChain::new()
                .target(
                    Target::new("fallback")
                        .prefill(prefill_of(to, true))
                        .dialect(wire(to)),
                )
                .target(Target::new("fallback-2").prefill(prefill_of(f.dialect, true)))
                .fallbacks("primary", ["fallback", "fallback-2"])
        };
        for p in [1, events.len() / 2, events.len() - 2] {
            for fault in FAULTS {
                for k in 0..30 {
                    let upstream = Upstream::new(f.dialect, whole.clone())
                        .speaking_by_path()
                        .then(Scripted::Stream {
                            bytes: Bytes::from(events[..p].concat()),
                            cuts: vec![],
                            fault: Some(Fault::Reset),
                        })
                        .cut_model_answer(k, fault);
                    let layer = MidStreamFallbackLayer::new(chain(()))
                        .idle_timeout(Duration::from_secs(10));
                    let body = Bytes::from(request_body(f).to_string());
                    let out = run(layer, &upstream, path(f.dialect), body).await;
                    let case = format!(
                        "{} primary cut at {p}, fallback {fault:?} after {k}",
                        f.name
                    );
                    if let Err(e) = client_got(f.dialect, f.usage, &out, &whole) {
                        failures.push(format!("{case}: {e}"));
                        continue;
                    }
                    let calls = upstream.calls();
                    if calls.len() > 3 {
                        failures.push(format!("{case}: {} calls", calls.len()));
                    }
                    if let Some(third) = calls.get(2) {
                        if !third.uri.ends_with(path(f.dialect))
                            || third.body["model"] != "fallback-2"
                        {
                            failures.push(format!("{case}: the third call went to {}", third.uri));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A primary of `client`'s dialect that sends two pieces of [`HELLO`] and resets; the model
/// answers in whichever dialect it is called in.
fn hello_upstream(client: Dialect) -> Upstream {
    let bytes = match client {
        Dialect::Anthropic => anthropic_text_stream(&HELLO),
        Dialect::OpenAi => openai_text_stream(&HELLO),
        Dialect::Responses => unreachable!("this case is of Anthropic and Chat"),
        Dialect::Gemini => unreachable!("Gemini's pairs are tests/cross_gemini.rs's"),
    };
    let lead = match client {
        Dialect::Anthropic => 2,
        Dialect::OpenAi => 1,
        Dialect::Responses => unreachable!("this case is of Anthropic and Chat"),
        Dialect::Gemini => unreachable!("Gemini's pairs are tests/cross_gemini.rs's"),
    };
    let whole = Whole {
        text: HELLO.concat(),
        ..Whole::default()
    };
    Upstream::new(client, whole)
        .speaking_by_path()
        .rejecting_prefill("no-prefill")
        .then(Scripted::Stream {
            bytes: Bytes::from(events_of(&bytes)[..lead + 2].concat()),
            cuts: vec![],
            fault: Some(Fault::Reset),
        })
}

fn hello_request(client: Dialect) -> Value {
    match client {
        Dialect::Anthropic => anthropic_request(),
        Dialect::OpenAi => openai_request(),
        Dialect::Responses => responses_request(),
        Dialect::Gemini => gemini_request(),
    }
}

async fn hello_through(client: Dialect, target: Target) -> (Outcome, Vec<upstream::Call>) {
    let name = target.name().to_owned();
    let chain = FallbackChain::new()
        .target(target)
        .fallbacks("primary", [name]);
    let upstream = hello_upstream(client);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        client,
        &hello_request(client),
    )
    .await;
    (out, upstream.calls())
}

#[tokio::test(start_paused = true)]
async fn the_continuation_is_sent_in_the_fallbacks_own_dialect_and_form() {
    let hello = Whole {
        text: HELLO.concat(),
        ..Whole::default()
    };
    let instruction = tower_midstream::DEFAULT_INSTRUCTION;

    // Anthropic client, Chat model that takes `prefix`.
    let target = Target::new("prefix")
        .prefill(Prefill::Prefix)
        .dialect(wire(Dialect::OpenAi));
    let (out, calls) = hello_through(Dialect::Anthropic, target).await;
    client_got(Dialect::Anthropic, false, &out, &hello).unwrap();
    assert_eq!(calls[1].uri, "/v1/chat/completions");
    // The inner service can route by the attempt's dialect as well as by the path.
    assert_eq!(calls[0].dialect, Some(wire(Dialect::Anthropic)));
    assert_eq!(calls[1].dialect, Some(wire(Dialect::OpenAi)));
    assert_eq!(
        calls[1].body,
        json!({
            "model": "prefix",
            "messages": [
                {"role":"user","content":"Say hello."},
                {"role":"assistant","content":"Hello there, ","prefix":true}
            ],
            "max_completion_tokens": 98,
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );

    // Anthropic client, Chat model without prefill: the instruction.
    let target = Target::new("no-prefill").dialect(wire(Dialect::OpenAi));
    let (out, calls) = hello_through(Dialect::Anthropic, target).await;
    client_got(Dialect::Anthropic, false, &out, &hello).unwrap();
    assert_eq!(
        calls[1].body,
        json!({
            "model": "no-prefill",
            "messages": [
                {"role":"user","content":"Say hello."},
                {"role":"assistant","content":"Hello there, "},
                {"role":"user","content":instruction}
            ],
            "max_completion_tokens": 98,
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );

    // Chat client, Anthropic model that takes prefill: without its trailing whitespace.
    let target = Target::new("prefill")
        .prefill(Prefill::Assistant)
        .dialect(wire(Dialect::Anthropic));
    let (out, calls) = hello_through(Dialect::OpenAi, target).await;
    client_got(Dialect::OpenAi, true, &out, &hello).unwrap();
    assert_eq!(calls[1].uri, "/v1/messages");
    assert_eq!(
        calls[1].body,
        json!({
            "model": "prefill",
            "max_tokens": 98,
            "messages": [
                {"role":"user","content":"Say hello."},
                {"role":"assistant","content":"Hello there,"}
            ],
            "stream": true
        })
    );

    // Chat client, Anthropic model without prefill.
    let target = Target::new("no-prefill").dialect(wire(Dialect::Anthropic));
    let (out, calls) = hello_through(Dialect::OpenAi, target).await;
    client_got(Dialect::OpenAi, true, &out, &hello).unwrap();
    assert_eq!(
        calls[1].body,
        json!({
            "model": "no-prefill",
            "max_tokens": 98,
            "messages": [
                {"role":"user","content":"Say hello."},
                {"role":"assistant","content":"Hello there,"},
                {"role":"user","content":instruction}
            ],
            "stream": true
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_retryable_status_restarts_on_the_other_dialect_with_the_request_translated() {
    for f in fixtures() {
        let bytes = fixture(f.name);
        let whole = whole_of(f.dialect, &bytes);
        let upstream = Upstream::new(f.dialect, whole.clone())
            .speaking_by_path()
            .then(Scripted::Status {
                status: 529,
                content_type: "application/json",
                body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            });
        let layer = MidStreamFallbackLayer::new(cross_chain(f.dialect, true));
        let out = run(
            layer,
            &upstream,
            path(f.dialect),
            Bytes::from(request_body(f).to_string()),
        )
        .await;
        assert_eq!(out.status, 200, "{}", f.name);
        client_got(f.dialect, f.usage, &out, &whole).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let calls = upstream.calls();
        assert_eq!(calls.len(), 2);
        let want = match f.dialect {
            Dialect::Anthropic => json!({
                "model": "fallback",
                "messages": [{"role":"user","content":"Please answer."}],
                "max_completion_tokens": 4096,
                "stream": true,
                "stream_options": {"include_usage": true}
            }),
            Dialect::OpenAi => json!({
                "model": "fallback",
                "max_tokens": 500,
                "system": "Be brief.",
                "messages": [{"role":"user","content":"Please answer."}],
                "stream": true
            }),
            Dialect::Responses => unreachable!("this case is of Anthropic and Chat"),
            Dialect::Gemini => unreachable!("Gemini's pairs are tests/cross_gemini.rs's"),
        };
        assert_eq!(calls[1].body, want, "{}", f.name);
        assert_eq!(calls[1].uri, path(other(f.dialect)));
    }
}

#[tokio::test(start_paused = true)]
async fn usage_after_a_seam_across_dialects_covers_every_attempt() {
    let hello = Whole {
        text: HELLO.concat(),
        ..Whole::default()
    };
    // Anthropic client: two deltas from the primary, and the Chat fallback's own count.
    let target = Target::new("prefix")
        .prefill(Prefill::Prefix)
        .dialect(wire(Dialect::OpenAi));
    let (out, _) = hello_through(Dialect::Anthropic, target).await;
    let got = client_got(Dialect::Anthropic, false, &out, &hello).unwrap();
    let fallback_deltas = "friend!".chars().count().div_ceil(4) as u64;
    assert_eq!(got.output_tokens, Some(2 + fallback_deltas));

    // Chat client asking for usage: the Anthropic fallback's count, in one usage chunk.
    let target = Target::new("prefill")
        .prefill(Prefill::Assistant)
        .dialect(wire(Dialect::Anthropic));
    let (out, _) = hello_through(Dialect::OpenAi, target).await;
    let got = client_got(Dialect::OpenAi, true, &out, &hello).unwrap();
    let fallback_deltas = " friend!".chars().count().div_ceil(7) as u64;
    assert_eq!(got.output_tokens, Some(2 + fallback_deltas));

    // Chat client that did not ask: no usage chunk, though the translated request asks for one.
    let mut request = openai_request();
    request.as_object_mut().unwrap().remove("stream_options");
    let chain = FallbackChain::new()
        .target(
            Target::new("prefill")
                .prefill(Prefill::Assistant)
                .dialect(wire(Dialect::Anthropic)),
        )
        .fallbacks("primary", ["prefill"]);
    // A primary not asked for usage has no `usage` key in its chunks.
    let primary = String::from_utf8(openai_text_stream(&HELLO).to_vec())
        .unwrap()
        .replace(r#","usage":null"#, "");
    let upstream = Upstream::new(Dialect::OpenAi, hello.clone())
        .speaking_by_path()
        .then(Scripted::Stream {
            bytes: Bytes::from(events_of(&Bytes::from(primary))[..3].concat()),
            cuts: vec![],
            fault: Some(Fault::Reset),
        });
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::OpenAi,
        &request,
    )
    .await;
    client_got(Dialect::OpenAi, false, &out, &hello).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_carrying_what_the_other_dialect_cannot_take_is_never_sent_there() {
    // Extended thinking (Anthropic) and structured output (Chat): the target of the other
    // dialect is passed over for the next one of the client's own.
    let thinking = FIXTURES
        .iter()
        .find(|f| f.name == "anthropic_thinking.sse")
        .unwrap();
    let text = FIXTURES
        .iter()
        .find(|f| f.name == "openai_chat_text.sse")
        .unwrap();
    let mut structured = request_body(text);
    structured["response_format"] =
        json!({"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object"}}});
    for (f, body) in [(thinking, request_body(thinking)), (text, structured)] {
        passed_over(f, &body, other(f.dialect), true).await;
    }
}

fn sse_lines(events: &[(Option<&str>, Value)]) -> Bytes {
    let mut out = String::new();
    for (name, data) in events {
        if let Some(name) = name {
            out.push_str(&format!("event: {name}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    }
    Bytes::from(out)
}

fn chat_chunk(delta: Value, finish: Value) -> (Option<&'static str>, Value) {
    (
        None,
        json!({"id":"chatcmpl-x","object":"chat.completion.chunk","created":7,"model":"other",
               "choices":[{"index":0,"delta":delta,"finish_reason":finish}]}),
    )
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_the_middle_of_a_tool_call_leaves_the_client_the_whole_call_with_an_id_it_can_send_back(
) {
    let whole = Whole {
        text: "Let me check.".into(),
        tools: vec![("get_weather".into(), r#"{"city":"Paris"}"#.into())],
        ..Whole::default()
    };

    // An Anthropic client; the primary breaks inside the tool call's arguments.
    let primary = sse_lines(&[
        (
            Some("message_start"),
            json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"primary","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type":"content_block_stop","index":0}),
        ),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{}}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}),
        ),
    ]);
    // The Chat fallback continues with the call, under an id Anthropic would refuse.
    let fallback = sse_lines(&[
        chat_chunk(json!({"role":"assistant","content":""}), Value::Null),
        chat_chunk(
            json!({"tool_calls":[{"index":0,"id":"functions.get_weather:0","type":"function","function":{"name":"get_weather","arguments":""}}]}),
            Value::Null,
        ),
        chat_chunk(
            json!({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\""}}]}),
            Value::Null,
        ),
        chat_chunk(
            json!({"tool_calls":[{"index":0,"function":{"arguments":":\"Paris\"}"}}]}),
            Value::Null,
        ),
        chat_chunk(json!({}), json!("tool_calls")),
        (
            None,
            json!({"id":"chatcmpl-x","object":"chat.completion.chunk","created":7,"model":"other","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":6,"total_tokens":26}}),
        ),
    ]);
    let fallback = Bytes::from([&fallback[..], b"data: [DONE]\n\n"].concat());
    let upstream = Upstream::new(Dialect::Anthropic, whole.clone())
        .speaking_by_path()
        .then(Scripted::Stream {
            bytes: primary,
            cuts: vec![],
            fault: Some(Fault::Reset),
        })
        .then(Scripted::Stream {
            bytes: fallback,
            cuts: vec![],
            fault: None,
        });
    let chain = FallbackChain::new()
        .target(
            Target::new("gpt")
                .prefill(Prefill::Prefix)
                .dialect(wire(Dialect::OpenAi)),
        )
        .fallbacks("primary", ["gpt"]);
    let request = json!({"model":"primary","max_tokens":100,"stream":true,
        "tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
        "messages":[{"role":"user","content":"Weather in Paris?"}]});
    let out = send(
        MidStreamFallbackLayer::new(chain.clone()),
        &upstream,
        Dialect::Anthropic,
        &request,
    )
    .await;
    let got = client_got(Dialect::Anthropic, false, &out, &whole).unwrap();
    let id = got.tool_ids[0].clone();
    assert!(id.starts_with("toolu_"), "{id}");
    let sent = &upstream.calls()[1].body;
    assert_eq!(
        sent["messages"][1],
        json!({"role":"assistant","content":"Let me check.","prefix":true}),
        "the text the client has is continued; the broken call is not"
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");

    // The client's next turn refers to that id; a request of that turn sent to the Chat model
    // carries it for the call and its result alike.
    let next = json!({"model":"primary","max_tokens":100,"stream":true,
        "tools":request["tools"],
        "messages":[
            {"role":"user","content":"Weather in Paris?"},
            {"role":"assistant","content":[{"type":"text","text":"Let me check."},
                {"type":"tool_use","id":id,"name":"get_weather","input":{"city":"Paris"}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":id,"content":"18 degrees"}]}]});
    let upstream = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: "18 degrees.".into(),
            ..Whole::default()
        },
    )
    .speaking_by_path()
    .lenient()
    .then(Scripted::Status {
        status: 529,
        content_type: "application/json",
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    });
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &next,
    )
    .await;
    check(Dialect::Anthropic, false, &out.bytes).unwrap();
    let sent = &upstream.calls()[1].body;
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], json!(id));
    assert_eq!(
        sent["messages"][2],
        json!({"role":"tool","tool_call_id":id,"content":"18 degrees"})
    );

    // A Chat client; the primary breaks inside the call; the Anthropic fallback finishes it.
    let primary = sse_lines(&[
        chat_chunk(
            json!({"role":"assistant","content":"Let me check."}),
            Value::Null,
        ),
        chat_chunk(
            json!({"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}),
            Value::Null,
        ),
        chat_chunk(
            json!({"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]}),
            Value::Null,
        ),
    ]);
    let fallback = sse_lines(&[
        (
            Some("message_start"),
            json!({"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01B","name":"get_weather","input":{}}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Paris\"}"}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type":"content_block_stop","index":0}),
        ),
        (
            Some("message_delta"),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}),
        ),
        (Some("message_stop"), json!({"type":"message_stop"})),
    ]);
    let upstream = Upstream::new(Dialect::OpenAi, whole.clone())
        .speaking_by_path()
        .then(Scripted::Stream {
            bytes: primary,
            cuts: vec![],
            fault: Some(Fault::Truncate),
        })
        .then(Scripted::Stream {
            bytes: fallback,
            cuts: vec![],
            fault: None,
        });
    let chain = FallbackChain::new()
        .target(
            Target::new("claude")
                .prefill(Prefill::Assistant)
                .dialect(wire(Dialect::Anthropic)),
        )
        .fallbacks("primary", ["claude"]);
    let request = json!({"model":"primary","stream":true,"stream_options":{"include_usage":true},
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],
        "messages":[{"role":"user","content":"Weather in Paris?"}]});
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::OpenAi,
        &request,
    )
    .await;
    let got = client_got(Dialect::OpenAi, true, &out, &whole).unwrap();
    assert_eq!(got.tool_ids, ["toolu_01B"]);
    assert_eq!(
        upstream.calls()[1].body["messages"][1],
        json!({"role":"assistant","content":"Let me check."})
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_error_from_a_fallback_of_the_other_dialect_moves_on_to_the_next() {
    // The translation, not the client's request, is what a fallback of another dialect
    // refuses: its 400 (before its stream, or in it) sends the request on to the next target.
    let refusals = [
        Scripted::Status {
            status: 400,
            content_type: "application/json",
            body: r#"{"error":{"message":"Unrecognized request argument","type":"invalid_request_error","param":null,"code":null}}"#,
        },
        Scripted::Stream {
            bytes: Bytes::from_static(b"data: {\"error\":{\"message\":\"Invalid tool schema\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}\n\n"),
            cuts: vec![],
            fault: None,
        },
    ];
    for refusal in refusals {
        let upstream = hello_upstream(Dialect::Anthropic).then(refusal);
        // No prefill: a 400 to a prefill would first be retried with the instruction.
        let chain = FallbackChain::new()
            .target(Target::new("gpt").dialect(wire(Dialect::OpenAi)))
            .target(Target::new("claude").prefill(Prefill::Assistant))
            .fallbacks("primary", ["gpt", "claude"]);
        let out = send(
            MidStreamFallbackLayer::new(chain),
            &upstream,
            Dialect::Anthropic,
            &anthropic_request(),
        )
        .await;
        let hello = Whole {
            text: HELLO.concat(),
            ..Whole::default()
        };
        client_got(Dialect::Anthropic, false, &out, &hello).unwrap();
        let calls = upstream.calls();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[1].uri, "/v1/chat/completions");
        assert_eq!(calls[2].uri, "/v1/messages");
        assert_eq!(calls[2].body["model"], "claude");
    }
}

#[tokio::test(start_paused = true)]
async fn a_tool_call_whose_arguments_an_anthropic_client_cannot_read_is_never_passed_on() {
    let whole = Whole {
        text: "Let me check.".into(),
        tools: vec![("get_weather".into(), r#"{"city":"Paris"}"#.into())],
        ..Whole::default()
    };
    let bad = sse_lines(&[
        chat_chunk(
            json!({"role":"assistant","content":"Let me check."}),
            Value::Null,
        ),
        chat_chunk(
            json!({"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"Paris, please"}}]}),
            Value::Null,
        ),
        chat_chunk(json!({}), json!("tool_calls")),
    ]);
    let bad = Bytes::from([&bad[..], b"data: [DONE]\n\n"].concat());
    let upstream = Upstream::new(Dialect::Anthropic, whole.clone())
        .speaking_by_path()
        .then(Scripted::Status {
            status: 529,
            content_type: "application/json",
            body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        })
        .then(Scripted::Stream {
            bytes: bad,
            cuts: vec![],
            fault: None,
        });
    let chain = FallbackChain::new()
        .target(Target::new("gpt").dialect(wire(Dialect::OpenAi)))
        .target(Target::new("claude"))
        .fallbacks("primary", ["gpt", "claude"]);
    let request = json!({"model":"primary","max_tokens":100,"stream":true,
        "messages":[{"role":"user","content":"Weather in Paris?"}]});
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &request,
    )
    .await;
    let got = client_got(Dialect::Anthropic, false, &out, &whole).unwrap();
    assert_eq!(got.tools[0].1, json!({"city":"Paris"}));
    let calls = upstream.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[2].body["model"], "claude");
}

/// A whole answer "Hi." that ends for `reason`, in `dialect`.
fn ending_with(dialect: Dialect, reason: &str) -> Bytes {
    match dialect {
        Dialect::OpenAi => {
            let events = sse_lines(&[
                chat_chunk(json!({"role":"assistant","content":""}), Value::Null),
                chat_chunk(json!({"content":"Hi."}), Value::Null),
                chat_chunk(json!({}), json!(reason)),
                (
                    None,
                    json!({"id":"chatcmpl-x","object":"chat.completion.chunk","created":7,"model":"other","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}),
                ),
            ]);
            Bytes::from([&events[..], b"data: [DONE]\n\n"].concat())
        }
        Dialect::Anthropic => sse_lines(&[
            (
                Some("message_start"),
                json!({"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}}),
            ),
            (
                Some("content_block_start"),
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi."}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type":"content_block_stop","index":0}),
            ),
            (
                Some("message_delta"),
                json!({"type":"message_delta","delta":{"stop_reason":reason,"stop_sequence":null},"usage":{"output_tokens":2}}),
            ),
            (Some("message_stop"), json!({"type":"message_stop"})),
        ]),
        Dialect::Responses => {
            // `completed`, or the `incomplete_details.reason` of an incomplete response.
            let (kind, status, details) = match reason {
                "completed" => ("response.completed", "completed", Value::Null),
                why => (
                    "response.incomplete",
                    "incomplete",
                    json!({ "reason": why }),
                ),
            };
            let part = json!({"type":"output_text","annotations":[],"text":"Hi."});
            let item = json!({"id":"msg_2","type":"message","status":"completed","role":"assistant","content":[part]});
            let response = |status: &str, output: Value, usage: Value, details: Value| json!({"id":"resp_2","object":"response","status":status,"model":"other","output":output,"usage":usage,"incomplete_details":details});
            let mut events = vec![
                json!({"type":"response.created","response":response("in_progress", json!([]), Value::Null, Value::Null)}),
                json!({"type":"response.output_item.added","output_index":0,"item":{"id":"msg_2","type":"message","status":"in_progress","role":"assistant","content":[]}}),
                json!({"type":"response.content_part.added","item_id":"msg_2","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"text":""}}),
                json!({"type":"response.output_text.delta","item_id":"msg_2","output_index":0,"content_index":0,"delta":"Hi."}),
                json!({"type":"response.output_text.done","item_id":"msg_2","output_index":0,"content_index":0,"text":"Hi."}),
                json!({"type":"response.content_part.done","item_id":"msg_2","output_index":0,"content_index":0,"part":part}),
                json!({"type":"response.output_item.done","output_index":0,"item":item}),
                json!({"type":kind,"response":response(status, json!([item]), json!({"input_tokens":3,"output_tokens":2,"total_tokens":5}), details)}),
            ];
            for (n, e) in events.iter_mut().enumerate() {
                e["sequence_number"] = json!(n);
            }
            let names: Vec<String> = events
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_owned())
                .collect();
            let named: Vec<(Option<&str>, Value)> =
                names.iter().map(|n| Some(n.as_str())).zip(events).collect();
            sse_lines(&named)
        }
        Dialect::Gemini => unreachable!("Gemini's pairs are tests/cross_gemini.rs's"),
    }
}

#[tokio::test(start_paused = true)]
async fn each_stop_reason_of_the_fallback_is_told_in_the_clients_words() {
    let cases = [
        (Dialect::OpenAi, "stop", "end_turn"),
        (Dialect::OpenAi, "length", "max_tokens"),
        (Dialect::OpenAi, "content_filter", "refusal"),
        (Dialect::Anthropic, "end_turn", "stop"),
        (Dialect::Anthropic, "stop_sequence", "stop"),
        (Dialect::Anthropic, "max_tokens", "length"),
        (
            Dialect::Anthropic,
            "model_context_window_exceeded",
            "length",
        ),
        (Dialect::Anthropic, "refusal", "stop"),
    ];
    let cases = cases
        .into_iter()
        .map(|(fallback, reason, told)| (other(fallback), fallback, reason, told))
        .chain([
            // A Responses model's ending under the others' clients, and theirs under its.
            (
                Dialect::Anthropic,
                Dialect::Responses,
                "completed",
                "end_turn",
            ),
            (
                Dialect::Anthropic,
                Dialect::Responses,
                "max_output_tokens",
                "max_tokens",
            ),
            (
                Dialect::Anthropic,
                Dialect::Responses,
                "content_filter",
                "refusal",
            ),
            (Dialect::OpenAi, Dialect::Responses, "completed", "stop"),
            (
                Dialect::OpenAi,
                Dialect::Responses,
                "max_output_tokens",
                "length",
            ),
            (
                Dialect::Responses,
                Dialect::Anthropic,
                "end_turn",
                "completed",
            ),
            (
                Dialect::Responses,
                Dialect::Anthropic,
                "stop_sequence",
                "completed",
            ),
            (
                Dialect::Responses,
                Dialect::Anthropic,
                "max_tokens",
                "incomplete",
            ),
            (
                Dialect::Responses,
                Dialect::Anthropic,
                "model_context_window_exceeded",
                "incomplete",
            ),
            (Dialect::Responses, Dialect::OpenAi, "stop", "completed"),
            (Dialect::Responses, Dialect::OpenAi, "length", "incomplete"),
        ]);
    for (client, fallback, reason, told) in cases {
        let upstream = Upstream::new(client, Whole::default())
            .speaking_by_path()
            .then(Scripted::Status {
                status: 503,
                content_type: "application/json",
                body: r#"{"error":{"message":"busy"}}"#,
            })
            .then(Scripted::Stream {
                bytes: ending_with(fallback, reason),
                cuts: vec![],
                fault: None,
            });
        let chain = FallbackChain::new()
            .target(Target::new("other").dialect(wire(fallback)))
            .fallbacks("primary", ["other"]);
        let out = send(
            MidStreamFallbackLayer::new(chain),
            &upstream,
            client,
            &hello_request(client),
        )
        .await;
        let got = check(client, client != Dialect::Anthropic, &out.bytes)
            .unwrap_or_else(|e| panic!("{reason}: {e}"));
        assert_eq!(got.text, "Hi.", "{reason}");
        assert_eq!(got.stop_reason.as_deref(), Some(told), "{reason}");
        if client == Dialect::Responses {
            let last = client_events(&out.bytes).pop().unwrap().1;
            let why = &last["response"]["incomplete_details"]["reason"];
            match told {
                "incomplete" => assert_eq!(why, "max_output_tokens", "{reason}"),
                _ => assert_eq!(last["type"], "response.completed", "{reason}"),
            }
            assert_eq!(
                last["response"]["usage"]["output_tokens"], 2,
                "{reason}: the fallback's usage"
            );
        }
        if client == Dialect::OpenAi {
            // A refusal without words gets the layer's: a Chat refusal is told in words.
            let said = if reason == "refusal" {
                "The model refused to answer."
            } else {
                ""
            };
            assert_eq!(got.refusal, said, "{reason}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_fallback_of_the_other_dialect_that_refuses_its_declared_prefill_gets_the_instruction_in_its_own_dialect(
) {
    for client in [Dialect::Anthropic, Dialect::OpenAi] {
        let to = other(client);
        // Declared to take prefill; the model behind it answers a prefill with 400.
        let target = Target::new("no-prefill")
            .prefill(prefill_of(to, true))
            .dialect(wire(to));
        let (out, calls) = hello_through(client, target).await;
        let hello = Whole {
            text: HELLO.concat(),
            ..Whole::default()
        };
        client_got(client, client == Dialect::OpenAi, &out, &hello).unwrap();
        assert_eq!(calls.len(), 3, "{client:?}");
        for call in &calls[1..] {
            assert_eq!(call.uri, path(to), "{client:?}");
        }
        assert!(trailing_model_turn(&calls[1]), "{client:?}: the prefill");
        assert!(
            !trailing_model_turn(&calls[2]),
            "{client:?}: then the instruction"
        );
        let last = calls[2].body["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["content"], tower_midstream::DEFAULT_INSTRUCTION);
    }
}

#[test]
fn why_a_target_cannot_take_a_request_is_fit_for_a_log_line() {
    let body = json!({"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}],
        "evil\nINFO forged line\u{1b}[2J":1});
    let request = http::Request::post("/v1/chat/completions")
        .body(Bytes::from(body.to_string()))
        .unwrap();
    let failure = tower_midstream::Failure::builder(wire(Dialect::OpenAi), request);
    let claude = Target::new("claude").dialect(wire(Dialect::Anthropic));
    let why = failure.build().cannot_send_to(&claude).expect("refused");
    assert!(why.contains("evil"), "{why}");
    assert!(!why.contains('\n') && !why.contains('\u{1b}'), "{why}");
}

/// Circuits that admit every target and remember which were asked.
#[derive(Debug, Default, Clone)]
struct AskedCircuits(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl tower_midstream::CircuitState for AskedCircuits {
    fn admit(&self, target: &str) -> tower_midstream::Admission {
        self.0.lock().unwrap().push(target.to_owned());
        tower_midstream::Admission::Closed
    }
    fn record(&self, _: &str, _: bool) {}
}

fn anthropic_failure(body: Value) -> tower_midstream::FailureBuilder {
    let request = http::Request::post("/v1/messages")
        .body(Bytes::from(body.to_string()))
        .unwrap();
    tower_midstream::Failure::builder(wire(Dialect::Anthropic), request)
}

fn model_of(plan: &mut tower_midstream::Plan) -> Value {
    let body: Value = serde_json::from_slice(plan.request_mut().expect("a retry").body()).unwrap();
    body["model"].clone()
}

#[test]
fn a_fallback_that_cannot_take_the_request_is_passed_over_before_its_circuit_is_asked() {
    use tower_midstream::RetryPlanner;
    // Asking a half-open circuit hands out its one probe: a target the request never goes to
    // must not take it.
    let circuits = AskedCircuits::default();
    let mut chain = FallbackChain::new()
        .target(Target::new("gpt").dialect(wire(Dialect::OpenAi)))
        .target(Target::new("claude-b"))
        .fallbacks("primary", ["gpt", "claude-b"])
        .circuit_breaker(circuits.clone());
    let thinking = json!({"model":"primary","max_tokens":4000,"stream":true,
        "thinking":{"type":"enabled","budget_tokens":2000},
        "messages":[{"role":"user","content":"Hi"}]});
    let mut plan = chain.plan(&anthropic_failure(thinking).build());
    assert_eq!(model_of(&mut plan), "claude-b");
    assert_eq!(plan.dialect(), None);
    assert_eq!(*circuits.0.lock().unwrap(), ["claude-b"]);

    // Without thinking, the circuits choose among both, in order.
    let circuits = AskedCircuits::default();
    let mut chain = FallbackChain::new()
        .target(Target::new("gpt").dialect(wire(Dialect::OpenAi)))
        .fallbacks("primary", ["gpt", "claude-b"])
        .circuit_breaker(circuits.clone());
    let plain = json!({"model":"primary","max_tokens":400,"stream":true,
        "messages":[{"role":"user","content":"Hi"}]});
    let mut plan = chain.plan(&anthropic_failure(plain).build());
    assert_eq!(model_of(&mut plan), "gpt");
    assert_eq!(plan.dialect(), Some(wire(Dialect::OpenAi)));
    assert_eq!(*circuits.0.lock().unwrap(), ["gpt"]);
}

#[test]
fn a_context_window_fallback_of_another_dialect_gets_the_request_translated_or_is_passed_over() {
    use tower_midstream::{FailureClass, RetryPlanner};
    let chain = || {
        FallbackChain::new()
            .target(Target::new("gpt-long").dialect(wire(Dialect::OpenAi)))
            .context_window_fallbacks("primary", ["gpt-long", "claude-long"])
    };
    let plain = json!({"model":"primary","max_tokens":400,"stream":true,"system":"Be brief.",
        "messages":[{"role":"user","content":"Hi"}]});
    let mut plan = chain().plan(
        &anthropic_failure(plain)
            .class(FailureClass::ContextWindow)
            .build(),
    );
    assert_eq!(plan.dialect(), Some(wire(Dialect::OpenAi)));
    let request = plan.request_mut().unwrap();
    assert!(request.uri().path().ends_with("/chat/completions"));
    let body: Value = serde_json::from_slice(request.body()).unwrap();
    assert_eq!(body["model"], "gpt-long");
    assert_eq!(
        body["messages"][0],
        json!({"role":"system","content":"Be brief."})
    );

    // A request the Chat model cannot take goes to the next larger-context target instead.
    let thinking = json!({"model":"primary","max_tokens":4000,"stream":true,
        "thinking":{"type":"enabled","budget_tokens":2000},
        "messages":[{"role":"user","content":"Hi"}]});
    let mut plan = chain().plan(
        &anthropic_failure(thinking)
            .class(FailureClass::ContextWindow)
            .build(),
    );
    assert_eq!(plan.dialect(), None);
    assert_eq!(model_of(&mut plan), "claude-long");
}

/// The events a client got, in order: each `event:` name and its data as JSON (`[DONE]` as a
/// string). A Chat chunk's `created` must be one number across the stream, and is left out.
fn client_events(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut created = None;
    check::parse_sse(bytes)
        .into_iter()
        .map(|ev| {
            let mut data: Value =
                serde_json::from_str(&ev.data).unwrap_or_else(|_| Value::String(ev.data.clone()));
            if let Some(c) = data.as_object_mut().and_then(|o| o.remove("created")) {
                assert!(c.is_u64(), "created is a number: {c}");
                assert_eq!(
                    *created.get_or_insert_with(|| c.clone()),
                    c,
                    "created is constant"
                );
            }
            (ev.event, data)
        })
        .collect()
}

fn named(name: &str, data: Value) -> (Option<String>, Value) {
    (Some(name.to_owned()), data)
}

/// An Anthropic stream that says `text` and stops for a refusal, with `explanation` in its
/// `stop_details` when there is one.
fn anthropic_refusal(text: &str, explanation: Option<&str>) -> Bytes {
    let mut events = vec![(
        Some("message_start"),
        json!({"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}),
    )];
    if !text.is_empty() {
        events.extend([
            (
                Some("content_block_start"),
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type":"content_block_stop","index":0}),
            ),
        ]);
    }
    // Another key order than the SDK's types, as servers may send.
    let details = explanation.map_or(
        Value::Null,
        |words| json!({"explanation":words,"category":"cyber","type":"refusal"}),
    );
    events.extend([
        (
            Some("message_delta"),
            json!({"type":"message_delta","delta":{"stop_sequence":null,"stop_details":details,"stop_reason":"refusal"},"usage":{"output_tokens":4}}),
        ),
        (Some("message_stop"), json!({"type":"message_stop"})),
    ]);
    sse_lines(&events)
}

#[tokio::test(start_paused = true)]
async fn a_chat_fallbacks_refusal_reaches_an_anthropic_client_as_a_refusal_stop_with_its_words() {
    let words = "I'm sorry, but I can't help with that.";
    let refusal = json!({"type":"message_delta","delta":{"stop_reason":"refusal","stop_sequence":null,
        "stop_details":{"type":"refusal","category":null,"explanation":words}},
        "usage":{"output_tokens":8,"input_tokens":31}});
    let chain = FallbackChain::new()
        .target(
            Target::new("gpt")
                .prefill(Prefill::Prefix)
                .dialect(wire(Dialect::OpenAi)),
        )
        .fallbacks("primary", ["gpt"]);

    // Nothing reached the client: the refusal is the whole answer. No text block: an
    // Anthropic refusal is a stop reason, its words in `stop_details` (anthropic-python 2.12
    // `RawMessageDeltaEvent.delta.stop_details`).
    let upstream = Upstream::new(Dialect::Anthropic, Whole::default())
        .speaking_by_path()
        .then(Scripted::Status {
            status: 529,
            content_type: "application/json",
            body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        })
        .then(Scripted::Stream {
            bytes: fixture("openai_refusal.sse"),
            cuts: vec![],
            fault: None,
        });
    let out = send(
        MidStreamFallbackLayer::new(chain.clone()),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    check(Dialect::Anthropic, false, &out.bytes).unwrap();
    assert_eq!(
        client_events(&out.bytes),
        [
            named(
                "message_start",
                json!({"type":"message_start","message":{"id":"chatcmpl-Refusal0000000000000000000","type":"message","role":"assistant","model":"gpt-4o-2024-08-06","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}})
            ),
            named("message_delta", refusal.clone()),
            named("message_stop", json!({"type":"message_stop"})),
        ]
    );

    // After text from the primary: the client keeps it, and the refusal ends the message.
    let upstream = hello_upstream(Dialect::Anthropic).then(Scripted::Stream {
        bytes: fixture("openai_refusal.sse"),
        cuts: vec![],
        fault: None,
    });
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    let got = check(Dialect::Anthropic, false, &out.bytes).unwrap();
    assert_eq!(got.text, "Hello there, ");
    let mut refusal = refusal;
    refusal["usage"]["output_tokens"] = json!(2 + 8);
    let events = client_events(&out.bytes);
    assert_eq!(
        events[events.len() - 3..],
        [
            named(
                "content_block_stop",
                json!({"type":"content_block_stop","index":0})
            ),
            named("message_delta", refusal),
            named("message_stop", json!({"type":"message_stop"})),
        ]
    );
    assert_eq!(
        events.len(),
        7,
        "start, block start, two deltas, then these"
    );
    assert_eq!(
        upstream.calls()[1].body["messages"][1],
        json!({"role":"assistant","content":"Hello there, ","prefix":true})
    );
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_fallbacks_refusal_reaches_a_chat_client_as_openais_own_refusal_a_refusal_delta_and_stop(
) {
    let chain = FallbackChain::new()
        .target(
            Target::new("claude")
                .prefill(Prefill::Assistant)
                .dialect(wire(Dialect::Anthropic)),
        )
        .fallbacks("primary", ["claude"]);
    let chunk = |delta: Value, finish: Value| {
        (
            None,
            json!({"id":"msg_2","object":"chat.completion.chunk","model":"claude",
                "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}]}),
        )
    };
    let usage = |completion: u64| {
        (
            None,
            json!({"id":"msg_2","object":"chat.completion.chunk","model":"claude","choices":[],
                "usage":{"prompt_tokens":9,"completion_tokens":completion,"total_tokens":9 + completion}}),
        )
    };
    let done = (None, json!("[DONE]"));

    // Nothing reached the client: the explanation is the refusal's words (`message.refusal`
    // to the openai SDK), and the stop is `stop`, as OpenAI's own refusals have it (with
    // `content_filter` the SDK's stream helper raises on its final completion). Without an
    // explanation, the layer's words: a Chat client learns of a refusal from them.
    for (explanation, said) in [
        (
            Some("This could enable cyber harm."),
            "This could enable cyber harm.",
        ),
        (None, "The model refused to answer."),
    ] {
        let events = vec![
            chunk(json!({"role":"assistant","refusal":said}), Value::Null),
            chunk(json!({}), json!("stop")),
            usage(4),
            done.clone(),
        ];
        let upstream = Upstream::new(Dialect::OpenAi, Whole::default())
            .speaking_by_path()
            .then(Scripted::Status {
                status: 503,
                content_type: "application/json",
                body: r#"{"error":{"message":"busy"}}"#,
            })
            .then(Scripted::Stream {
                bytes: anthropic_refusal("", explanation),
                cuts: vec![],
                fault: None,
            });
        let out = send(
            MidStreamFallbackLayer::new(chain.clone()),
            &upstream,
            Dialect::OpenAi,
            &openai_request(),
        )
        .await;
        let got = check(Dialect::OpenAi, true, &out.bytes).unwrap();
        assert_eq!(got.refusal, said);
        assert_eq!(client_events(&out.bytes), events, "{explanation:?}");
    }

    // After text from the primary: the fallback says a little more before its classifier
    // stops it; the client has all of the text, then the refusal.
    let upstream = hello_upstream(Dialect::OpenAi).then(Scripted::Stream {
        bytes: anthropic_refusal("friend", Some("This could enable cyber harm.")),
        cuts: vec![],
        fault: None,
    });
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::OpenAi,
        &openai_request(),
    )
    .await;
    let got = check(Dialect::OpenAi, true, &out.bytes).unwrap();
    assert_eq!(got.text, "Hello there, friend");
    assert_eq!(got.refusal, "This could enable cyber harm.");
    let envelope = |v: Value| {
        let mut v = v;
        v["id"] = json!("chatcmpl-primary");
        v["model"] = json!("primary");
        v
    };
    let events = client_events(&out.bytes);
    let tail: Vec<_> = [
        chunk(json!({"content":"friend"}), Value::Null),
        chunk(
            json!({"refusal":"This could enable cyber harm."}),
            Value::Null,
        ),
        chunk(json!({}), json!("stop")),
        usage(2 + 4),
    ]
    .into_iter()
    .map(|(name, data)| (name, envelope(data)))
    .chain([done])
    .collect();
    assert_eq!(events[events.len() - 5..], tail);
    assert_eq!(events.len(), 3 + 5, "role, two pieces of text, then these");
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_refusal_reaches_an_anthropic_client_whole_its_details_kept() {
    // The refusal's words are read (for clients of other dialects); the client of Anthropic's
    // own still gets every event as the upstream sent it, `stop_details` and all.
    let refusal = anthropic_refusal("Sure, here", Some("This could enable cyber harm."));
    let upstream = Upstream::new(Dialect::Anthropic, Whole::default())
        .speaking_by_path()
        .then(Scripted::Stream {
            bytes: refusal.clone(),
            cuts: vec![],
            fault: None,
        });
    let out = send(
        MidStreamFallbackLayer::new(cross_chain(Dialect::Anthropic, true)),
        &upstream,
        Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    let got = check(Dialect::Anthropic, false, &out.bytes).unwrap();
    assert_eq!(got.stop_reason.as_deref(), Some("refusal"));
    assert_eq!(client_events(&out.bytes), client_events(&refusal));
}

#[tokio::test(start_paused = true)]
async fn a_failure_inside_the_second_of_parallel_tool_calls_leaves_an_anthropic_client_each_call_once_with_ids_it_can_send_back(
) {
    let whole = Whole {
        text: "Let me check both.".into(),
        tools: vec![
            ("get_weather".into(), r#"{"city":"Paris"}"#.into()),
            ("get_weather".into(), r#"{"city":"Rome"}"#.into()),
        ],
        ..Whole::default()
    };
    // The first call is whole, the second cut inside its arguments: neither reached the
    // client (calls wait for the end of the message), so the fallback's two are the only ones.
    let primary = sse_lines(&[
        (
            Some("message_start"),
            json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"primary","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check both."}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type":"content_block_stop","index":0}),
        ),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{}}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":\"Paris\"}"}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type":"content_block_stop","index":1}),
        ),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01B","name":"get_weather","input":{}}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}),
        ),
    ]);
    // The Chat fallback sends both calls in one delta, the first under an id Anthropic would
    // refuse, the second with none (as some OpenAI-compatible servers do).
    let fallback = sse_lines(&[
        chat_chunk(json!({"role":"assistant","content":""}), Value::Null),
        chat_chunk(
            json!({"tool_calls":[
                {"index":0,"id":"functions.get_weather:0","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"index":1,"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]}),
            Value::Null,
        ),
        chat_chunk(json!({}), json!("tool_calls")),
    ]);
    let fallback = Bytes::from([&fallback[..], b"data: [DONE]\n\n"].concat());
    let request = json!({"model":"primary","max_tokens":100,"stream":true,
        "tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
        "messages":[{"role":"user","content":"Weather in Paris and Rome?"}]});
    let chain = FallbackChain::new()
        .target(
            Target::new("gpt")
                .prefill(Prefill::Prefix)
                .dialect(wire(Dialect::OpenAi)),
        )
        .fallbacks("primary", ["gpt"]);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let upstream = Upstream::new(Dialect::Anthropic, whole.clone())
            .speaking_by_path()
            .then(Scripted::Stream {
                bytes: primary.clone(),
                cuts: vec![],
                fault: Some(Fault::Reset),
            })
            .then(Scripted::Stream {
                bytes: fallback.clone(),
                cuts: vec![],
                fault: None,
            });
        let out = send(
            MidStreamFallbackLayer::new(chain.clone()),
            &upstream,
            Dialect::Anthropic,
            &request,
        )
        .await;
        let got = client_got(Dialect::Anthropic, false, &out, &whole).unwrap();
        assert_eq!(got.tool_ids.len(), 2);
        assert!(
            got.tool_ids.iter().all(|id| id.starts_with("toolu_")),
            "{:?}",
            got.tool_ids
        );
        let sent = &upstream.calls()[1].body;
        assert_eq!(
            sent["messages"][1],
            json!({"role":"assistant","content":"Let me check both.","prefix":true}),
            "the text the client has is continued; neither held call is"
        );
        seen.push(got.tool_ids);
    }
    assert_eq!(seen[0], seen[1], "the same answer gets the same ids");

    // The client's next turn sends both ids back; the Chat model gets them for the calls and
    // their results alike.
    let ids = &seen[0];
    let next = json!({"model":"primary","max_tokens":100,"stream":true,
        "tools":request["tools"],
        "messages":[
            {"role":"user","content":"Weather in Paris and Rome?"},
            {"role":"assistant","content":[{"type":"text","text":"Let me check both."},
                {"type":"tool_use","id":ids[0],"name":"get_weather","input":{"city":"Paris"}},
                {"type":"tool_use","id":ids[1],"name":"get_weather","input":{"city":"Rome"}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":ids[0],"content":"18 degrees"},
                {"type":"tool_result","tool_use_id":ids[1],"content":"21 degrees"}]}]});
    let upstream = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: "18 and 21 degrees.".into(),
            ..Whole::default()
        },
    )
    .speaking_by_path()
    .lenient()
    .then(Scripted::Status {
        status: 529,
        content_type: "application/json",
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    });
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Anthropic,
        &next,
    )
    .await;
    check(Dialect::Anthropic, false, &out.bytes).unwrap();
    let sent = &upstream.calls()[1].body["messages"];
    let call_ids: Vec<_> = sent[1]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(call_ids, [json!(ids[0]), json!(ids[1])]);
    assert_eq!(
        [&sent[2], &sent[3]],
        [
            &json!({"role":"tool","tool_call_id":ids[0],"content":"18 degrees"}),
            &json!({"role":"tool","tool_call_id":ids[1],"content":"21 degrees"})
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_anywhere_in_a_responses_function_call_leaves_the_client_the_whole_call_from_another_dialect(
) {
    // A Responses answer of text and two function calls, broken at every event, continued by
    // an Anthropic or a Chat model: the client's final response holds the text and each call
    // once, whole, with a `call_id` it can send back.
    let whole = Whole {
        text: "Let me check the weather.".into(),
        tools: vec![
            (
                "get_weather".into(),
                r#"{"city":"Paris","unit":"c"}"#.into(),
            ),
            ("get_time".into(), r#"{"zone":"CET"}"#.into()),
        ],
        ..Whole::default()
    };
    let primary = Bytes::from(upstream::responses_stream(
        "primary",
        None,
        &whole.text,
        &whole.tools,
    ));
    let events = events_of(&primary);
    let request = json!({"model":"primary","stream":true,"max_output_tokens":500,
        "input":[{"role":"user","content":"Weather and time in Paris?"}],
        "tools":[{"type":"function","name":"get_weather","parameters":{"type":"object"}},
                 {"type":"function","name":"get_time","parameters":{"type":"object"}}]});
    let mut failures = Vec::new();
    for to in [Dialect::Anthropic, Dialect::OpenAi] {
        for p in 0..events.len() {
            let upstream = Upstream::new(Dialect::Responses, whole.clone())
                .speaking_by_path()
                .then(Scripted::Stream {
                    bytes: Bytes::from(events[..p].concat()),
                    cuts: vec![],
                    fault: Some(Fault::Reset),
                });
            let out = send(
                MidStreamFallbackLayer::new(chain_to(to, false)),
                &upstream,
                Dialect::Responses,
                &request,
            )
            .await;
            let case = format!("to {to:?} after {p} of {} events", events.len());
            if let Err(e) = client_got(Dialect::Responses, true, &out, &whole) {
                failures.push(format!("{case}: {e}"));
                continue;
            }
            if let Err(e) = fallback_calls_in(to, &upstream.calls()) {
                failures.push(format!("{case}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `body` (a request for fixture `f`) broken mid-answer, with `to` first in the chain: the
/// target of `to` is passed over for one of the client's own dialect; with nothing else left,
/// the client hears of the original failure and nothing reaches `to`. With `prefill`, both
/// targets take their dialect's prefill.
async fn passed_over(f: &Fixture, body: &Value, to: Dialect, prefill: bool) {
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
                .prefill(prefill_of(to, prefill))
                .dialect(wire(to)),
        )
        .target(Target::new("fallback").prefill(prefill_of(f.dialect, prefill)))
        .fallbacks("primary", ["elsewhere", "fallback"]);
    let upstream = Upstream::new(f.dialect, whole.clone())
        .speaking_by_path()
        .then(primary);
    let send = |chain, upstream| {
        run(
            MidStreamFallbackLayer::new(chain),
            upstream,
            path(f.dialect),
            Bytes::from(body.to_string()),
        )
    };
    let out = send(chain, &upstream).await;
    let got = check(f.dialect, f.usage, &out.bytes).unwrap();
    same_answer(&got, &expected(&whole)).unwrap();
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2, "{} to {to:?}", f.name);
    assert_eq!(calls[1].uri, path(f.dialect));
    assert_eq!(calls[1].body["model"], "fallback");

    never_sent_to(f, body, Target::new("elsewhere").dialect(wire(to))).await;
}

#[tokio::test(start_paused = true)]
async fn a_request_a_responses_target_cannot_take_or_only_responses_can_say_is_never_sent_across() {
    let named = |name: &str| FIXTURES.iter().find(|f| f.name == name).unwrap();
    let responses = named("openai_responses_text_queued.sse");
    let anthropic = named("anthropic_text.sse");
    let chat = named("openai_chat_text.sse");
    // What only Responses says: state kept at OpenAI, a built-in tool.
    let mut stored = request_body(responses);
    stored["previous_response_id"] = json!("resp_earlier");
    passed_over(responses, &stored, Dialect::Anthropic, false).await;
    let mut searching = request_body(responses);
    searching["tools"] = json!([{"type":"web_search"}]);
    passed_over(responses, &searching, Dialect::OpenAi, false).await;
    // What a Responses model cannot take: stop sequences.
    let mut stopping = request_body(anthropic);
    stopping["stop_sequences"] = json!(["END"]);
    passed_over(anthropic, &stopping, Dialect::Responses, false).await;
    let mut stopping = request_body(chat);
    stopping["stop"] = json!("END");
    passed_over(chat, &stopping, Dialect::Responses, false).await;
}
