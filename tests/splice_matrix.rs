//! Every recorded stream × every mid-stream failure class × a failure after every event: the
//! client gets one stream that obeys its dialect's seam rules and holds the whole answer.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::*;
use tower_midstream::MidStreamFallbackLayer;

/// Runs one request whose primary answers `primary` then `fault`; returns the problems found.
async fn case(
    dialect: Dialect,
    usage: bool,
    body: &serde_json::Value,
    whole: &Whole,
    upstream: Upstream,
    prefill: bool,
    max_calls: usize,
) -> Result<(), String> {
    let layer =
        MidStreamFallbackLayer::new(chain(dialect, prefill)).idle_timeout(Duration::from_secs(10));
    let out = run(
        layer,
        &upstream,
        path(dialect),
        Bytes::from(body.to_string()),
    )
    .await;
    let got = check(dialect, usage, &out.bytes)
        .map_err(|e| format!("{e}\n{}", String::from_utf8_lossy(&out.bytes)))?;
    same_answer(&got, &expected(whole))
        .map_err(|e| format!("{e}\n{}", String::from_utf8_lossy(&out.bytes)))?;
    let calls = upstream.calls();
    if !prefill && calls.iter().skip(1).any(trailing_assistant) {
        return Err("a prefill reached a model that rejects it".into());
    }
    if calls.len() > max_calls {
        return Err(format!(
            "{} calls, expected at most {max_calls}",
            calls.len()
        ));
    }
    if out.error.is_some() {
        return Err("a FallbackError on a stream that completed".into());
    }
    Ok(())
}

/// Whether a request ends with the model's own turn (a prefill): an `assistant` message, or
/// Gemini's `model` turn.
fn trailing_assistant(call: &upstream::Call) -> bool {
    let last = |key: &str| call.body[key].as_array().and_then(|m| m.last()).cloned();
    last("messages").is_some_and(|m| m["role"] == "assistant")
        || last("contents").is_some_and(|c| c["role"] == "model")
}

#[tokio::test(start_paused = true)]
async fn every_fixture_survives_every_failure_class_at_every_event_position() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for f in FIXTURES {
        let bytes = fixture(f.name);
        let events = events_of(&bytes);
        let whole = whole_of(f.dialect, &bytes);
        let want = expected(&whole);
        for prefill in [true, false] {
            for fault in FAULTS {
                for p in 0..events.len() {
                    let primary = Bytes::from(events[..p].concat());
                    let mut upstream = Upstream::new(f.dialect, whole.clone());
                    if !prefill {
                        upstream = upstream
                            .rejecting_prefill("fallback")
                            .rejecting_prefill("fallback-2");
                    }
                    let upstream = upstream.then(Scripted::Stream {
                        bytes: primary,
                        cuts: vec![],
                        fault: Some(fault),
                    });
                    let layer = MidStreamFallbackLayer::new(chain(f.dialect, prefill))
                        .idle_timeout(Duration::from_secs(10));
                    let body = Bytes::from(request_body(f).to_string());
                    let out = run(layer, &upstream, path(f.dialect), body).await;
                    runs += 1;
                    let case = format!(
                        "{} prefill={prefill} {fault:?} after {p} of {} events",
                        f.name,
                        events.len()
                    );
                    let result = check(f.dialect, f.usage, &out.bytes)
                        .and_then(|got| same_answer(&got, &want));
                    if let Err(e) = result {
                        failures.push(format!(
                            "{case}: {e}\n{}",
                            String::from_utf8_lossy(&out.bytes)
                        ));
                        continue;
                    }
                    let calls = upstream.calls();
                    if !prefill && calls.iter().skip(1).any(trailing_assistant) {
                        failures.push(format!("{case}: a prefill reached a model that rejects it"));
                    }
                    if calls.len() > 2 {
                        failures.push(format!(
                            "{case}: {} calls where one fallback suffices",
                            calls.len()
                        ));
                    }
                    if out.error.is_some() {
                        failures.push(format!(
                            "{case}: a FallbackError on a stream that completed"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(runs > 500, "the matrix ran only {runs} cases");
}

#[tokio::test(start_paused = true)]
async fn a_retryable_status_before_the_stream_restarts_on_the_fallback_invisibly() {
    for f in FIXTURES {
        for status in [408u16, 429, 500, 502, 503, 504, 529] {
            let bytes = fixture(f.name);
            let whole = whole_of(f.dialect, &bytes);
            let upstream = Upstream::new(f.dialect, whole.clone()).then(Scripted::Status {
                status,
                content_type: "application/json",
                body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            });
            let layer = MidStreamFallbackLayer::new(chain(f.dialect, true));
            let out = run(
                layer,
                &upstream,
                path(f.dialect),
                Bytes::from(request_body(f).to_string()),
            )
            .await;
            assert_eq!(out.status, 200, "{} after {status}", f.name);
            let got =
                check(f.dialect, f.usage, &out.bytes).unwrap_or_else(|e| panic!("{}: {e}", f.name));
            same_answer(&got, &expected(&whole)).unwrap();
            let calls = upstream.calls();
            assert_eq!(calls.len(), 2);
            // A restart: the original request, only the model swapped (in the path, for a
            // dialect that names it there).
            let mut original = request_body(f);
            if f.dialect == Dialect::Gemini {
                assert_eq!(
                    calls[1].uri,
                    path(f.dialect).replace("/primary:", "/fallback:")
                );
            } else {
                original["model"] = "fallback".into();
            }
            assert_eq!(calls[1].body, original, "{} after {status}", f.name);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_fallback_that_fails_too_is_continued_by_the_next_one_at_any_point() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for f in FIXTURES {
        let bytes = fixture(f.name);
        let events = events_of(&bytes);
        let whole = whole_of(f.dialect, &bytes);
        // The primary fails early, midway and late; the first fallback then fails after each
        // of its own events; the second fallback finishes.
        for p in [1, events.len() / 2, events.len() - 2] {
            for fault in FAULTS {
                for k in 0..40 {
                    let upstream = Upstream::new(f.dialect, whole.clone())
                        .then(Scripted::Stream {
                            bytes: Bytes::from(events[..p].concat()),
                            cuts: vec![],
                            fault: Some(Fault::Reset),
                        })
                        .cut_model_answer(k, fault);
                    runs += 1;
                    if let Err(e) = case(
                        f.dialect,
                        f.usage,
                        &request_body(f),
                        &whole,
                        upstream,
                        true,
                        3,
                    )
                    .await
                    {
                        failures.push(format!(
                            "{} primary cut at {p}, fallback {fault:?} after {k}: {e}",
                            f.name
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(start_paused = true)]
async fn a_fallback_that_echoes_the_partial_answer_does_not_repeat_it() {
    let mut failures = Vec::new();
    for f in FIXTURES {
        let bytes = fixture(f.name);
        let events = events_of(&bytes);
        let whole = whole_of(f.dialect, &bytes);
        for p in 0..events.len() {
            let upstream =
                Upstream::new(f.dialect, whole.clone())
                    .echoing()
                    .then(Scripted::Stream {
                        bytes: Bytes::from(events[..p].concat()),
                        cuts: vec![],
                        fault: Some(Fault::Reset),
                    });
            if let Err(e) = case(
                f.dialect,
                f.usage,
                &request_body(f),
                &whole,
                upstream,
                true,
                2,
            )
            .await
            {
                failures.push(format!("{} after {p}: {e}", f.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(start_paused = true)]
async fn whitespace_stripped_from_a_prefill_and_sent_again_reaches_the_client_once() {
    let deltas = [
        "Hello, ",
        "world.\n\n",
        "Next ",
        "paragraph here. ",
        "\n",
        "End.",
    ];
    let whole = Whole {
        text: deltas.concat(),
        ..Whole::default()
    };
    let mut failures = Vec::new();
    for (dialect, bytes) in [
        (Dialect::Anthropic, anthropic_text_stream(&deltas)),
        (Dialect::OpenAi, openai_text_stream(&deltas)),
    ] {
        let f = Fixture {
            name: "synthetic",
            dialect,
            thinking: false,
            usage: dialect == Dialect::OpenAi,
        };
        let events = events_of(&bytes);
        for prefill in [true, false] {
            for p in 0..events.len() {
                let mut upstream = Upstream::new(dialect, whole.clone());
                if !prefill {
                    upstream = upstream.rejecting_prefill("fallback");
                }
                let upstream = upstream.then(Scripted::Stream {
                    bytes: Bytes::from(events[..p].concat()),
                    cuts: vec![],
                    fault: Some(Fault::Reset),
                });
                if let Err(e) = case(
                    dialect,
                    f.usage,
                    &request_body(&f),
                    &whole,
                    upstream,
                    prefill,
                    2,
                )
                .await
                {
                    failures.push(format!("{dialect:?} prefill={prefill} after {p}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
