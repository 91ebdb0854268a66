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
        // The Responses API has no prefill: its continuations are all instructions.
        let prefills: &[bool] = match f.dialect {
            Dialect::Responses => &[false],
            _ => &[true, false],
        };
        for &prefill in prefills {
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

/// One run of a stream that ends in an in-band error: `primary` from the first call, and the
/// fallbacks answer as `upstream` was set up. Checks what the client got; returns the calls made.
async fn error_case(
    e: &ErrorFixture,
    upstream: &Upstream,
    prefill: bool,
    want: &check::Answer,
    error_data: &str,
) -> Result<usize, String> {
    let f = &e.fixture;
    let layer = MidStreamFallbackLayer::new(chain(f.dialect, prefill))
        .idle_timeout(Duration::from_secs(10));
    let body = Bytes::from(request_body(f).to_string());
    let out = run(layer, upstream, path(f.dialect), body).await;
    let shown = |why: String| format!("{why}\n{}", String::from_utf8_lossy(&out.bytes));
    let got = check(f.dialect, f.usage, &out.bytes).map_err(shown)?;
    if e.client_error {
        // The whole answer up to the error, then the error exactly as the server sent it.
        let last = check::parse_sse_as_openai_python(&out.bytes)
            .into_iter()
            .rfind(|ev| ev.data != "[DONE]")
            .map(|ev| ev.data);
        if last.as_deref() != Some(error_data) {
            return Err(shown(format!(
                "the last event is not the error as it came: {last:?}"
            )));
        }
        let mut answered = got.clone();
        answered.error = None;
        same_answer(&answered, want).map_err(shown)?;
    } else {
        same_answer(&got, want).map_err(shown)?;
        if out.error.is_some() {
            return Err(shown("a FallbackError on a stream that completed".into()));
        }
    }
    let calls = upstream.calls();
    if !prefill && calls.iter().skip(1).any(trailing_assistant) {
        return Err("a prefill reached a model that rejects it".into());
    }
    Ok(calls.len())
}

#[tokio::test(start_paused = true)]
async fn every_in_band_error_fixture_survives_every_failure_class_at_every_event_before_its_error()
{
    let mut failures = Vec::new();
    let mut runs = 0;
    for e in ERROR_FIXTURES {
        let f = &e.fixture;
        let bytes = fixture(f.name);
        let events = events_of(&bytes);
        let at = events
            .iter()
            .position(|ev| check::parse_sse(ev).iter().any(|s| is_error_data(&s.data)))
            .unwrap_or_else(|| panic!("{} has no in-band error", f.name));
        let error_data = check::parse_sse(&events[at]).remove(0).data;
        // The error event and what the server sent after it (`[DONE]`).
        let ending = Bytes::from(events[at..].concat());
        let whole = whole_of(f.dialect, &Bytes::from(events[..at].concat()));
        let want = expected(&whole);
        for prefill in [true, false] {
            let fresh = || {
                let upstream = Upstream::new(f.dialect, whole.clone());
                match prefill {
                    true => upstream,
                    false => upstream
                        .rejecting_prefill("fallback")
                        .rejecting_prefill("fallback-2"),
                }
            };
            // The stream as the server sent it: its own error is the only failure, and a
            // healthy fallback finishes a server's error.
            let upstream = fresh().then(Scripted::Stream {
                bytes: bytes.clone(),
                cuts: vec![],
                fault: None,
            });
            runs += 1;
            let case = format!("{} prefill={prefill} as it came", f.name);
            match error_case(e, &upstream, prefill, &want, &error_data).await {
                Err(why) => failures.push(format!("{case}: {why}")),
                Ok(calls) if calls != if e.client_error { 1 } else { 2 } => {
                    failures.push(format!("{case}: {calls} calls"))
                }
                Ok(_) => {}
            }
            // A failure before the error; the fallback answers the same way and meets the same
            // error, which a second fallback finishes when it is the server's.
            for fault in FAULTS {
                for p in 0..at {
                    let upstream =
                        fresh()
                            .end_model_answer_with(ending.clone())
                            .then(Scripted::Stream {
                                bytes: Bytes::from(events[..p].concat()),
                                cuts: vec![],
                                fault: Some(fault),
                            });
                    runs += 1;
                    let case = format!(
                        "{} prefill={prefill} {fault:?} after {p} of {} events",
                        f.name,
                        events.len()
                    );
                    // The primary, the fallback that meets the error, and for a server's
                    // error the one that finishes.
                    let want_calls = if e.client_error { 2 } else { 3 };
                    match error_case(e, &upstream, prefill, &want, &error_data).await {
                        Err(why) => failures.push(format!("{case}: {why}")),
                        Ok(calls) if calls != want_calls => {
                            failures.push(format!("{case}: {calls} calls, not {want_calls}"))
                        }
                        Ok(_) => {}
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
    assert!(runs > 200, "the matrix ran only {runs} cases");
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
