//! OpenAI-compatible servers as they really stream (issue 9): reasoning, refusals, several
//! choices, usage, their in-band errors, framing. Each case is one shape and one failure; the
//! splice matrix runs the recorded and written fixtures at every position.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use support::*;
use tower_midstream::{
    AttemptOutcome, AttemptReport, FailureClass, FallbackChain, MidStreamFallbackLayer, Observer,
    Prefill, Reasoning,
};

/// A chunk of the primary's stream with one choice.
fn chunk(delta: Value, finish: Value) -> String {
    let c = json!({"id":"chatcmpl-primary","object":"chat.completion.chunk","created":1,"model":"primary","choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
    format!("data: {c}\n\n")
}

fn piece(key: &str, text: &str) -> String {
    chunk(json!({ key: text }), Value::Null)
}

fn role() -> String {
    chunk(json!({"role":"assistant","content":""}), Value::Null)
}

/// `bytes` from the primary, then `fault`; later calls answer `whole` as a model would.
fn primary(whole: Whole, bytes: String, fault: Option<Fault>) -> Upstream {
    Upstream::new(Dialect::OpenAi, whole).then(Scripted::Stream {
        bytes: Bytes::from(bytes),
        cuts: vec![],
        fault,
    })
}

fn request(usage: bool) -> Value {
    let mut body = json!({"model":"primary","stream":true,"max_completion_tokens":500,"messages":[{"role":"user","content":"Please answer."}]});
    if usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

async fn through(
    layer: MidStreamFallbackLayer<FallbackChain>,
    upstream: &Upstream,
    body: &Value,
) -> Outcome {
    send(layer, upstream, Dialect::OpenAi, body).await
}

fn layer() -> MidStreamFallbackLayer<FallbackChain> {
    MidStreamFallbackLayer::new(chain(Dialect::OpenAi, true)).idle_timeout(Duration::from_secs(10))
}

/// Every attempt's report.
#[derive(Default, Clone)]
struct Outcomes(Arc<Mutex<Vec<AttemptOutcome>>>);

impl Observer for Outcomes {
    fn attempt_ended(&self, attempt: &AttemptReport) {
        self.0.lock().unwrap().push(attempt.outcome());
    }
}

const REASONING: [&str; 4] = ["The user", " wants", " a short", " answer."];

fn reasoning_whole(key: &'static str) -> Whole {
    Whole {
        thinking: Some(REASONING.concat()),
        reasoning_key: key,
        text: "Paris is the capital of France.".into(),
        ..Whole::default()
    }
}

// ---- 1. reasoning ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn reasoning_cut_by_a_failure_is_kept_once_and_the_fallback_adds_no_second_copy() {
    for key in ["reasoning_content", "reasoning"] {
        let whole = reasoning_whole(key);
        let sent = format!(
            "{}{}{}",
            role(),
            piece(key, REASONING[0]),
            piece(key, REASONING[1])
        );
        let upstream = primary(whole.clone(), sent, Some(Fault::Reset));
        let out = through(layer(), &upstream, &request(true)).await;
        let got = check(Dialect::OpenAi, true, &out.bytes)
            .unwrap_or_else(|e| panic!("{key}: {e}\n{}", String::from_utf8_lossy(&out.bytes)));
        assert_eq!(
            got.reasoning, "The user wants",
            "{key}: the part it saw, once"
        );
        assert_eq!(got.text, whole.text, "{key}");
        assert_eq!(upstream.calls().len(), 2, "{key}");
        // The fallback restarted (nothing of the answer had reached the client) and reasoned
        // again: its reasoning went nowhere.
        let text = String::from_utf8_lossy(&out.bytes);
        assert_eq!(text.matches("The user").count(), 1, "{key}: {text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_fallbacks_reasoning_is_never_appended_after_content() {
    let whole = reasoning_whole("reasoning_content");
    let key = "reasoning_content";
    let sent = format!(
        "{}{}{}{}",
        role(),
        REASONING.iter().map(|r| piece(key, r)).collect::<String>(),
        piece("content", "Paris is"),
        piece("content", " the"),
    );
    let upstream = primary(whole.clone(), sent, Some(Fault::Reset));
    let out = through(layer(), &upstream, &request(true)).await;
    // The checker fails on reasoning after content.
    let got = check(Dialect::OpenAi, true, &out.bytes).unwrap();
    assert_eq!(got.reasoning, REASONING.concat());
    assert_eq!(got.text, whole.text);
    let calls = upstream.calls();
    assert_eq!(
        calls[1].body["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"],
        "Paris is the"
    );
}

#[tokio::test(start_paused = true)]
async fn held_reasoning_reaches_the_client_whole_from_the_attempt_that_answered() {
    for key in ["reasoning_content", "reasoning"] {
        let whole = reasoning_whole(key);
        let sent = format!(
            "{}{}{}",
            role(),
            piece(key, REASONING[0]),
            piece(key, REASONING[1])
        );
        let upstream = primary(whole.clone(), sent, Some(Fault::Reset));
        let out = through(
            layer().reasoning(Reasoning::Held),
            &upstream,
            &request(true),
        )
        .await;
        let got = check(Dialect::OpenAi, true, &out.bytes).unwrap();
        assert_eq!(
            got.reasoning,
            REASONING.concat(),
            "{key}: the fallback's, whole"
        );
        assert_eq!(got.text, whole.text);
        let text = String::from_utf8_lossy(&out.bytes);
        assert_eq!(
            text.matches(&format!("\"{key}\"")).count(),
            1,
            "{key}: one piece: {text}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn live_reasoning_goes_out_as_it_comes_before_the_answer_is_known() {
    let key = "reasoning";
    let sent = format!("{}{}", role(), piece(key, REASONING[0]));
    // The primary reasons, then stalls: the client has the reasoning while it waits.
    let upstream = primary(reasoning_whole(key), sent.clone(), Some(Fault::Stall));
    let out = through(layer(), &upstream, &request(true)).await;
    assert!(
        out.bytes.starts_with(sent.as_bytes()),
        "{}",
        String::from_utf8_lossy(&out.bytes)
    );
}

// ---- 2. refusals -----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_refusal_cut_by_a_failure_reaches_the_client_once_and_whole() {
    let refusal = ["I'm sorry,", " but I", " can't help", " with that."];
    let whole = Whole {
        refusal: Some(refusal.concat()),
        ..Whole::default()
    };
    for sent in 1..refusal.len() {
        let bytes = format!(
            "{}{}",
            role(),
            refusal[..sent]
                .iter()
                .map(|r| piece("refusal", r))
                .collect::<String>()
        );
        let upstream = primary(whole.clone(), bytes, Some(Fault::Reset));
        let out = through(layer(), &upstream, &request(true)).await;
        let got = check(Dialect::OpenAi, true, &out.bytes).unwrap();
        assert_eq!(got.refusal, refusal.concat(), "after {sent} pieces");
        assert_eq!(
            String::from_utf8_lossy(&out.bytes)
                .matches("I'm sorry")
                .count(),
            1
        );
    }
}

// ---- 3. several choices ----------------------------------------------------------------

/// What a client accumulates of a stream with several choices: each choice's text and finish
/// count, and the error it ended with.
#[derive(Debug, Default, PartialEq)]
struct Choices {
    text: Vec<String>,
    finishes: Vec<u32>,
    roles: Vec<u32>,
    error: Option<String>,
    done: bool,
}

fn choices_of(bytes: &[u8]) -> Result<Choices, String> {
    let mut got = Choices::default();
    for ev in support::check::parse_sse_as_openai_python(bytes) {
        if got.done {
            return Err(format!("an event after [DONE]: {:?}", ev.data));
        }
        if ev.data == "[DONE]" {
            got.done = true;
            continue;
        }
        if got.error.is_some() {
            return Err(format!("a chunk after the error: {:?}", ev.data));
        }
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| format!("{e}: {:?}", ev.data))?;
        if let Some(e) = v.get("error") {
            got.error = Some(e["message"].as_str().unwrap_or("").to_owned());
            continue;
        }
        for choice in v["choices"].as_array().ok_or("no choices")? {
            let i = choice["index"].as_u64().ok_or("a choice without index")? as usize;
            if i > got.text.len() {
                return Err(format!("choice {i} before choice {}", got.text.len()));
            }
            if i == got.text.len() {
                got.text.push(String::new());
                got.finishes.push(0);
                got.roles.push(0);
            }
            if let Some(t) = choice["delta"]["content"].as_str() {
                got.text[i].push_str(t);
            }
            if choice["delta"].get("role").is_some_and(|r| !r.is_null()) {
                got.roles[i] += 1;
            }
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                got.finishes[i] += 1;
            }
        }
    }
    Ok(got)
}

#[tokio::test(start_paused = true)]
async fn two_choices_restart_invisibly_while_the_client_has_none_and_end_in_a_clean_error_after() {
    let bytes = fixture("openai_two_choices.sse");
    let events = events_of(&bytes);
    let mut failures = Vec::new();
    let (mut restarts, mut errors) = (0, 0);
    for fault in FAULTS {
        for p in 0..events.len() - 1 {
            let upstream = Upstream::new(Dialect::OpenAi, Whole::default())
                .then(Scripted::Stream {
                    bytes: Bytes::from(events[..p].concat()),
                    cuts: vec![],
                    fault: Some(fault),
                })
                .then(Scripted::Stream {
                    bytes: bytes.clone(),
                    cuts: vec![],
                    fault: None,
                });
            let mut body = request(true);
            body["n"] = json!(2);
            let out = through(layer(), &upstream, &body).await;
            let case = format!("{fault:?} after {p} events");
            let got = match choices_of(&out.bytes) {
                Ok(got) => got,
                Err(e) => {
                    failures.push(format!("{case}: {e}"));
                    continue;
                }
            };
            // Some choice's text, or a finish, reached the client before the failure?
            let answered = events[..p].iter().any(|e| {
                e.windows(10).any(|w| w == b"\"content\":")
                    && !e.windows(12).any(|w| w == b"\"content\":\"\"")
                    || e.windows(17).any(|w| w == b"\"finish_reason\":\"")
            });
            let whole = got.text == ["Red is warm.", "Blue is cool."]
                && got.finishes == [1, 1]
                && got.roles == [1, 1]
                && got.done
                && got.error.is_none();
            let all_finished = events[..p]
                .iter()
                .filter(|e| e.windows(17).any(|w| w == b"\"finish_reason\":\""))
                .count()
                == 2;
            let ok = if !answered || all_finished {
                restarts += usize::from(upstream.calls().len() == 2);
                whole
            } else {
                errors += 1;
                // A clean error naming the failure, after what the client had, nothing mixed in.
                got.error.is_some()
                    && got
                        .text
                        .iter()
                        .zip(["Red is warm.", "Blue is cool."])
                        .all(|(t, w)| w.starts_with(t.as_str()))
                    && got.finishes.iter().all(|f| *f <= 1)
                    && upstream.calls().len() == 1
            };
            if !ok {
                failures.push(format!(
                    "{case}: {got:?}\n{}",
                    String::from_utf8_lossy(&out.bytes)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        restarts > 0 && errors > 0,
        "{restarts} restarts, {errors} errors"
    );
}

// ---- 4. usage --------------------------------------------------------------------------

fn usage_chunks(bytes: &[u8]) -> Vec<Value> {
    support::check::parse_sse(bytes)
        .into_iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_lost_usage_report_is_estimated_once_as_a_lower_bound() {
    let deltas = ["a", "b", "c", "d", "e", "f"];
    let sent = format!(
        "{}{}{}",
        role(),
        deltas
            .iter()
            .map(|d| piece("content", d))
            .collect::<String>(),
        chunk(json!({}), json!("stop")),
    );
    let whole = Whole {
        text: deltas.concat(),
        ..Whole::default()
    };
    let upstream = primary(whole, sent, Some(Fault::Reset));
    let out = through(layer(), &upstream, &request(true)).await;
    check(Dialect::OpenAi, true, &out.bytes).unwrap();
    let usage = usage_chunks(&out.bytes);
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["completion_tokens"], 6, "each delta counted once");
    assert_eq!(
        upstream.calls().len(),
        1,
        "the answer was whole: no fallback"
    );
}

#[tokio::test(start_paused = true)]
async fn usage_on_the_finish_chunk_is_the_real_report_and_no_estimate_replaces_it() {
    let report = json!({"prompt_tokens":14,"completion_tokens":41,"total_tokens":55});
    let finish = format!(
        "data: {}\n\n",
        json!({"id":"chatcmpl-primary","object":"chat.completion.chunk","created":1,"model":"primary","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":report})
    );
    let sent = format!("{}{}{}", role(), piece("content", "Hi."), finish);
    let upstream = primary(Whole::default(), sent, Some(Fault::Reset));
    let out = through(layer(), &upstream, &request(true)).await;
    check(Dialect::OpenAi, true, &out.bytes).unwrap();
    assert_eq!(usage_chunks(&out.bytes), [report]);
}

#[tokio::test(start_paused = true)]
async fn without_include_usage_no_usage_report_is_invented() {
    let sent = format!(
        "{}{}{}",
        role(),
        piece("content", "Hi."),
        chunk(json!({}), json!("stop"))
    );
    let upstream = primary(Whole::default(), sent, Some(Fault::Reset));
    let out = through(layer(), &upstream, &request(false)).await;
    check(Dialect::OpenAi, false, &out.bytes).unwrap();
    assert!(usage_chunks(&out.bytes).is_empty());
}

// ---- 5. errors as these servers send them ----------------------------------------------

const VLLM_400: &str = r#"{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","param":null,"code":400}"#;
const VLLM_500: &str = r#"{"object":"error","message":"Internal server error","type":"InternalServerError","param":null,"code":500}"#;

#[tokio::test(start_paused = true)]
async fn client_errors_in_band_reach_the_client_as_they_came_without_a_fallback_even_without_done()
{
    let openrouter_400 = r#"{"id":"gen-1","object":"chat.completion.chunk","created":1,"model":"primary","choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}],"error":{"code":400,"message":"Provider returned error"}}"#;
    let numeric_403 = r#"{"error":{"message":"Forbidden","code":403}}"#;
    for error in [VLLM_400, openrouter_400, numeric_403] {
        for done in ["", "data: [DONE]\n\n"] {
            let sent = format!(
                "{}{}data: {error}\n\n{done}",
                role(),
                piece("content", "Hel")
            );
            let whole = Whole {
                text: "Hello".into(),
                ..Whole::default()
            };
            let upstream = primary(whole, sent.clone(), None);
            let outcomes = Outcomes::default();
            let out = through(
                layer().observer(outcomes.clone()),
                &upstream,
                &request(true),
            )
            .await;
            assert_eq!(upstream.calls().len(), 1, "{error} {done:?}: no fallback");
            let text = String::from_utf8_lossy(&out.bytes);
            assert!(
                text.starts_with(&sent),
                "{error} {done:?}: as it came: {text}"
            );
            assert!(!text.contains("fallback"), "{text}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn server_errors_in_band_fall_back() {
    let openrouter_502 = r#"{"id":"gen-1","object":"chat.completion.chunk","created":1,"model":"primary","choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}],"error":{"code":502,"message":"Provider returned error"}}"#;
    let bare_finish_error = r#"{"id":"gen-1","object":"chat.completion.chunk","created":1,"model":"primary","choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;
    let numeric_503 = r#"{"error":{"message":"Overloaded","code":503}}"#;
    for error in [VLLM_500, openrouter_502, bare_finish_error, numeric_503] {
        let sent = format!("{}{}data: {error}\n\n", role(), piece("content", "Hel"));
        let whole = Whole {
            text: "Hello".into(),
            ..Whole::default()
        };
        let upstream = primary(whole.clone(), sent, None);
        let outcomes = Outcomes::default();
        let out = through(
            layer().observer(outcomes.clone()),
            &upstream,
            &request(true),
        )
        .await;
        let got = check(Dialect::OpenAi, true, &out.bytes)
            .unwrap_or_else(|e| panic!("{error}: {e}\n{}", String::from_utf8_lossy(&out.bytes)));
        assert_eq!(got.text, "Hello", "{error}");
        assert_eq!(upstream.calls().len(), 2, "{error}");
        assert_eq!(
            outcomes.0.lock().unwrap()[0],
            AttemptOutcome::Failed(FailureClass::InBand),
            "{error}"
        );
    }
}

// ---- 7. framing ------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn after_a_seam_no_line_end_reaches_the_client_on_its_own_wherever_frames_cut_a_crlf() {
    let bytes = fixture("framed_ids_crlf.sse");
    let whole = whole_of(Dialect::OpenAi, &bytes);
    let events = events_of(&bytes);
    let mut failures = Vec::new();
    for p in 1..events.len() - 2 {
        let sent = events[..p].concat();
        // Every CR of the primary's bytes ends a frame: its LF comes alone in the next one.
        let cuts: Vec<usize> = sent
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\r')
            .map(|(i, _)| i + 1)
            .collect();
        let upstream = Upstream::new(Dialect::OpenAi, whole.clone()).then(Scripted::Stream {
            bytes: Bytes::from(sent),
            cuts,
            fault: Some(Fault::Reset),
        });
        let out = through(layer(), &upstream, &request(true)).await;
        if let Err(e) = check(Dialect::OpenAi, true, &out.bytes)
            .and_then(|got| same_answer(&got, &expected(&whole)))
        {
            failures.push(format!(
                "after {p}: {e}\n{:?}",
                String::from_utf8_lossy(&out.bytes)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(start_paused = true)]
async fn keep_alives_after_an_id_field_are_comments_without_a_blank_line() {
    let bytes = fixture("framed_ids_crlf.sse");
    let whole = whole_of(Dialect::OpenAi, &bytes);
    let events = events_of(&bytes);
    // The primary fails after events with `id:` lines; the first fallback answers its headers
    // and then nothing: keep-alives flow while the layer waits for it.
    let upstream = Upstream::new(Dialect::OpenAi, whole.clone())
        .then(Scripted::Stream {
            bytes: Bytes::from(events[..4].concat()),
            cuts: vec![],
            fault: Some(Fault::Reset),
        })
        .cut_model_answer(0, Fault::Stall);
    let layer = MidStreamFallbackLayer::new(chain(Dialect::OpenAi, true))
        .idle_timeout(Duration::from_secs(10))
        .keep_alive(Duration::from_secs(2));
    let out = through(layer, &upstream, &request(true)).await;
    let text = String::from_utf8_lossy(&out.bytes);
    assert!(text.matches(": keep-alive\n").count() >= 3, "{text:?}");
    assert!(!text.contains(": keep-alive\n\n"), "{text:?}");
    let got = check(Dialect::OpenAi, true, &out.bytes).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    same_answer(&got, &expected(&whole)).unwrap();
}

#[tokio::test(start_paused = true)]
async fn keep_alives_before_any_id_field_are_whole_comment_events() {
    let upstream = broken_after(Dialect::OpenAi, &HELLO, 1);
    let upstream = upstream.cut_model_answer(0, Fault::Stall);
    let layer = MidStreamFallbackLayer::new(
        FallbackChain::new()
            .model("fallback", Prefill::Prefix)
            .model("fallback-2", Prefill::Prefix)
            .fallbacks("primary", ["fallback", "fallback-2"]),
    )
    .idle_timeout(Duration::from_secs(10))
    .keep_alive(Duration::from_secs(2));
    let out = through(layer, &upstream, &openai_request()).await;
    let text = String::from_utf8_lossy(&out.bytes);
    assert!(text.contains(": keep-alive\n\n"), "{text:?}");
}

// ---- Hardening II, item 6: nothing invalid reaches the client --------------------------

#[tokio::test(start_paused = true)]
async fn a_chunk_with_broken_json_around_valid_content_is_malformed_before_anything_of_it_is_forwarded(
) {
    let broken = [
        // The closing brace is missing.
        r#"{"id":"chatcmpl-primary","choices":[{"index":0,"delta":{"content":"BROKEN"},"finish_reason":null}]"#,
        // An invalid escape in a member the fast path does not read.
        r#"{"id":"chatcmpl-pri\xmary","choices":[{"index":0,"delta":{"content":"BROKEN"},"finish_reason":null}]}"#,
        // A bad literal after the piece.
        r#"{"choices":[{"index":0,"delta":{"content":"BROKEN"},"finish_reason":nul}]}"#,
    ];
    for bad in broken {
        let whole = Whole {
            text: "Hello, world".into(),
            ..Whole::default()
        };
        let sent = format!("{}{}data: {bad}\n\n", role(), piece("content", "Hello"));
        let upstream = primary(whole.clone(), sent, None);
        let outcomes = Outcomes::default();
        let out = through(
            layer().observer(outcomes.clone()),
            &upstream,
            &request(true),
        )
        .await;
        let text = String::from_utf8_lossy(&out.bytes);
        assert!(!text.contains("BROKEN"), "{bad}: {text}");
        let got = check(Dialect::OpenAi, true, &out.bytes).unwrap();
        assert_eq!(got.text, whole.text, "{bad}");
        assert_eq!(
            outcomes.0.lock().unwrap()[0],
            AttemptOutcome::Failed(FailureClass::Malformed),
            "{bad}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_event_with_fields_but_no_data_never_reaches_the_client() {
    // A torn `id: 8\ndat` followed by the server's error event reads as one event with an
    // `id:` and an unknown field: the openai Python SDK would dispatch it as an empty event.
    let bytes = fixture("framed_ids_crlf.sse");
    let whole = whole_of(Dialect::OpenAi, &bytes);
    let events = events_of(&bytes);
    // An empty `data:` (what a fuzzed cut right after the field name left) is no better: the
    // SDK dispatches it and fails to read "" as JSON.
    let extras = [
        "id: 8\r\n\r\n",
        "retry: 1000\r\n\r\n",
        "id: 8\r\ndat",
        "data: \r\n\r\n",
        "data:\r\n\r\n",
    ];
    for extra in extras {
        let sent = format!(
            "{}{extra}",
            String::from_utf8(events[..8].concat()).unwrap()
        );
        let upstream = Upstream::new(Dialect::OpenAi, whole.clone()).then(Scripted::Stream {
            bytes: Bytes::from(sent),
            cuts: vec![],
            fault: Some(Fault::InBand),
        });
        let out = through(layer(), &upstream, &request(true)).await;
        let got = check(Dialect::OpenAi, true, &out.bytes)
            .unwrap_or_else(|e| panic!("{extra:?}: {e}\n{}", String::from_utf8_lossy(&out.bytes)));
        same_answer(&got, &expected(&whole)).unwrap();
    }
}
