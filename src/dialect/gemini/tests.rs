//! The Gemini dialect's unit tests: decoding, encoding, rewriting requests.

use super::template::same_but_counts;
use super::*;
use crate::rewrite::rewritten;

const BODY: &[u8] = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"temperature":0.5,"maxOutputTokens":100},"continuationToken":"abc"}"#;

fn items(decoder: &mut ChunkDecoder, data: &str) -> Vec<Item> {
    let mut items = Vec::new();
    decoder.decode(None, data, &mut items).unwrap();
    items
}

#[test]
fn prefill_is_a_trailing_model_turn_and_the_token_limit_shrinks() {
    let how = Strategy::Prefill(Prefill::Assistant);
    let v = rewritten(&WIRE, BODY, "b", &how, "Hello ", 7).unwrap();
    assert_eq!(
        v["contents"][1],
        json!({"role":"model","parts":[{"text":"Hello "}]})
    );
    assert_eq!(v["contents"].as_array().unwrap().len(), 2);
    assert_eq!(v["generationConfig"]["maxOutputTokens"], 93);
    assert_eq!(v["generationConfig"]["temperature"], 0.5);
    assert!(v.get("continuationToken").is_none(), "{v}");
}

#[test]
fn the_instruction_is_a_user_turn_after_the_partial_model_turn() {
    let body = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generation_config":{"max_output_tokens":10}}"#;
    let v = rewritten(
        &WIRE,
        body,
        "b",
        &Strategy::Instruction("go on".into()),
        "Hel",
        3,
    )
    .unwrap();
    let contents = v["contents"].as_array().unwrap();
    assert_eq!(
        contents[1],
        json!({"role":"model","parts":[{"text":"Hel"}]})
    );
    assert_eq!(
        contents[2],
        json!({"role":"user","parts":[{"text":"go on"}]})
    );
    assert_eq!(v["generation_config"]["max_output_tokens"], 7);
}

#[test]
fn a_client_model_turn_is_continued_and_several_candidates_are_not() {
    let body = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]},{"role":"model","parts":[{"text":"{"}]}]}"#;
    let v = rewritten(
        &WIRE,
        body,
        "b",
        &Strategy::Prefill(Prefill::Assistant),
        "\"a\"",
        1,
    )
    .unwrap();
    assert_eq!(
        v["contents"][1],
        json!({"role":"model","parts":[{"text":"{"},{"text":"\"a\""}]})
    );
    let two = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"candidateCount":2}}"#;
    assert!(rewritten(&WIRE, two, "b", &Strategy::instruction(), "x", 1).is_err());
    assert!(rewritten(&WIRE, two, "b", &Strategy::Restart, "x", 1).is_ok());
    let prefix = Strategy::Prefill(Prefill::Prefix);
    assert!(rewritten(&WIRE, BODY, "b", &prefix, "x", 1).is_err());
}

#[test]
fn the_model_is_found_in_both_api_versions_and_nowhere_else() {
    for (path, model) in [
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "gemini-2.5-flash",
        ),
        ("/v1/models/a/b:generateContent", "a/b"),
        ("/gw/v1alpha/models/x:streamGenerateContent", "x"),
    ] {
        let range = model_in_path(path).unwrap();
        assert_eq!(&path[range], model, "{path}");
    }
    for other in [
        "/v1beta/models/:streamGenerateContent",
        "/v1beta/models/x:countTokens",
        "/models/x:streamGenerateContent",
        "/v1beta/tunedModels/x:streamGenerateContent",
        "/v1/messages",
    ] {
        assert_eq!(model_in_path(other), None, "{other}");
    }
}

#[test]
fn thoughts_are_one_block_whose_signature_comes_with_the_next_part() {
    let mut d = ChunkDecoder::default();
    let first = items(
        &mut d,
        r#"{"candidates": [{"content": {"parts": [{"text": "hmm","thought": true}],"role": "model"}}],"responseId": "r"}"#,
    );
    assert!(matches!(
        first.as_slice(),
        [
            Item::Start(_),
            Item::BlockStart {
                block: 0,
                kind: BlockKind::Reasoning,
                ..
            },
            Item::Reasoning { block: 0, .. }
        ]
    ));
    let second = items(
        &mut d,
        r#"{"candidates": [{"content": {"parts": [{"text": "Hi","thoughtSignature": "c2ln"}],"role": "model"}}]}"#,
    );
    assert!(matches!(
        second.as_slice(),
        [
            Item::Signature { block: 0, .. },
            Item::BlockStop { block: 0 },
            Item::BlockStart {
                block: 1,
                kind: BlockKind::Text,
                ..
            },
            Item::Text { block: 1, .. }
        ]
    ));
    const LAST: &str = r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f","args": {}}}],"role": "model"},"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 3,"candidatesTokenCount": 5,"thoughtsTokenCount": 2}}"#;
    let last = items(&mut d, LAST);
    match last.as_slice() {
        [Item::BlockStop { block: 1 }, Item::BlockStart {
            block: 2,
            kind: BlockKind::ToolCall { .. },
            ..
        }, Item::ToolArgsObject { block: 2, json }, Item::BlockStop { block: 2 }, Item::Finish(stop), Item::Terminal] =>
        {
            // The arguments, for an encoder of another wire.
            assert_eq!(json.get(LAST), "{}");
            let usage = stop.usage.unwrap();
            assert_eq!(
                (usage.output_tokens, usage.input_tokens),
                (Some(7), Some(3))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tokens_several_candidates_and_continuation_are_never_relayed_as_they_came() {
    let mut d = ChunkDecoder::default();
    let token = items(
        &mut d,
        r#"{"candidates":[{"content":{"parts":[{"text":"a"}],"role":"model"},"continuationToken":"dG9r"}]}"#,
    );
    assert!(token.iter().any(|i| matches!(i, Item::AttemptBound)));
    let cont = items(
        &mut d,
        r#"{"candidates":[{"content":{"parts":[{"text":"b"}],"role":"model"},"finishReason":"CONTINUATION"}]}"#,
    );
    assert!(!cont
        .iter()
        .any(|i| matches!(i, Item::Finish(_) | Item::Terminal)));
    let two = items(
        &mut d,
        r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0},{"content":{"parts":[{"text":"b"}]},"index":1}]}"#,
    );
    assert!(matches!(two.as_slice(), [Item::Unwatched]));
    let mut named = Vec::new();
    d.decode(Some("message"), r#"{"candidates":[]}"#, &mut named)
        .unwrap();
    assert!(matches!(named.first(), Some(Item::AttemptBound)));
}

#[test]
fn hostile_chunks_are_unreadable_not_a_panic() {
    for bad in [
        "{",
        "[]",
        r#"{"candidates":{}}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":1}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":"\ud800"}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{},"willContinue":true}}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"functionCall":{"args":{}}}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":"{}"}}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":"a","thoughtSignature":7}]}}]}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":"a"}]}}],"candidates":[]}"#,
        r#"{"usageMetadata":"x"}"#,
    ] {
        let mut items = Vec::new();
        assert!(
            ChunkDecoder::default()
                .decode(None, bad, &mut items)
                .is_err(),
            "{bad}"
        );
    }
}

#[test]
fn in_band_errors_are_client_errors_by_code_or_status() {
    let mut d = ChunkDecoder::default();
    for (data, client) in [
        (
            r#"{"error": {"code": 503, "message": "x", "status": "UNAVAILABLE"}}"#,
            false,
        ),
        (
            r#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}"#,
            false,
        ),
        (
            r#"{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}"#,
            true,
        ),
        (r#"{"error": {"status": "PERMISSION_DENIED"}}"#, true),
    ] {
        match items(&mut d, data).as_slice() {
            [Item::Error(e)] => assert_eq!(e.client, client, "{data}"),
            other => panic!("{data}: {other:?}"),
        }
    }
}

#[test]
fn the_error_chunk_has_error_first_and_an_integer_code() {
    let body = error_json(&ErrorKind::Named("overloaded_error".into()), "down \"now\"");
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"error":{"code":503,"message":"down \"now\"","status":"UNAVAILABLE"}}"#
    );
    let v: Value = serde_json::from_slice(&error_json(&ErrorKind::Timeout, "t")).unwrap();
    assert_eq!(v["error"]["code"], 504);
}

#[test]
fn the_fast_path_reads_only_chunks_shaped_like_the_last_plain_one() {
    let mut d = ChunkDecoder::default();
    let chunk = |text: &str, n: u32| {
        format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"text": {}}}],"role": "model"}},"index": 0}}],"usageMetadata": {{"promptTokenCount": 18,"candidatesTokenCount": {n},"totalTokenCount": {}}},"modelVersion": "gemini-2.5-flash","responseId": "ru1g9"}}"#,
            serde_json::to_string(text).unwrap(),
            n + 18
        )
    };
    // Before any chunk was read, nothing is fast.
    assert!(d.fast_text(None, chunk("a", 1).as_bytes()).is_none());
    items(&mut d, &chunk("a", 1));
    items(&mut d, &chunk("b", 2));
    let c = chunk("c \"q\"", 31);
    let fast = d.fast_text(None, c.as_bytes()).unwrap();
    assert_eq!(
        (fast.block, fast.literal, fast.plain),
        (0, r#""c \"q\"""#, false)
    );
    for other in [
        c.replace(r#""index": 0"#, r#""index": 1"#)
            .replace("31", "031"),
        c.replace("gemini-2.5-flash", "gemini-2.5-pro"),
        c.replace("ru1g9", "ru1g10"),
        c.replace(
            r#"}],"usageMetadata""#,
            r#"}],"continuationToken": "x","usageMetadata""#,
        ),
        c.replace(
            r#""role": "model"}"#,
            r#""role": "model"},"finishReason": "STOP""#,
        ),
        c.replace("31", "-1"),
        c.replace("31", "3.1"),
        c.replace(r#""c \"q\"""#, r#""\ud800""#),
    ] {
        assert!(d.fast_text(None, other.as_bytes()).is_none(), "{other}");
    }
    assert!(d.fast_text(Some(b"x"), c.as_bytes()).is_none());
}

#[test]
fn only_counts_may_change() {
    let all = 0..100;
    assert!(same_but_counts(br#","n": 5}"#, br#","n": 12}"#, &all));
    assert!(same_but_counts(br#","n": 10}"#, br#","n": 0}"#, &all));
    assert!(!same_but_counts(br#","n": 5}"#, br#","n": 12}"#, &(0..3)));
    assert!(!same_but_counts(br#","n": 5}"#, br#","n": 05}"#, &all));
    assert!(!same_but_counts(br#","n": 5}"#, br#","n": }"#, &all));
    assert!(!same_but_counts(br#","n": 0.5}"#, br#","n": 0.7}"#, &all));
    assert!(!same_but_counts(br#","s": "a1"}"#, br#","s": "a2"}"#, &all));
    assert!(!same_but_counts(
        br#","s": "a\"1"}"#,
        br#","s": "a\"2"}"#,
        &all
    ));
    assert!(!same_but_counts(br#"}"#, br#"}x"#, &all));
}

/// The parts of the chunks `out` holds, in order.
fn parts_written(out: &mut Outbox) -> Vec<Value> {
    std::iter::from_fn(|| out.pop())
        .flat_map(|bytes| {
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            let data = text.strip_prefix("data: ").unwrap().trim_end().to_owned();
            let chunk: Value = serde_json::from_str(&data).unwrap();
            chunk["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap()
        })
        .collect()
}

fn foreign_call(wire: crate::dialect::Dialect) -> Held {
    let mut held = Held::new(HeldKind::ToolCall, wire, r#"{"type":"tool_use"}"#);
    held.id = "toolu_01".into();
    held.name = "get_weather".into();
    held.arguments = r#"{"city":"Paris"}"#.into();
    held
}

#[test]
fn a_call_another_model_made_carries_the_placeholder_signature_and_gemini_s_keep_their_own() {
    use crate::dialect::Dialect;
    let mut encoder = ChunkEncoder::default();
    let mut out = Outbox::default();
    for wire in [
        Dialect::ANTHROPIC_MESSAGES,
        Dialect::OPENAI_CHAT,
        Dialect::OPENAI_RESPONSES,
    ] {
        encoder.held(0, &foreign_call(wire), &mut out);
    }
    let signed = Held::new(
        HeldKind::ToolCall,
        Dialect::GEMINI,
        r#"{"functionCall":{"name":"get_time","args":{}},"thoughtSignature":"Y2FsbA=="}"#,
    );
    // A parallel call after the first: Gemini signs only the first, and that is its own choice.
    let unsigned = Held::new(
        HeldKind::ToolCall,
        Dialect::GEMINI,
        r#"{"functionCall":{"name":"get_date","args":{}}}"#,
    );
    encoder.held(1, &signed, &mut out);
    encoder.held(2, &unsigned, &mut out);
    let foreign = json!({"functionCall":{"id":"toolu_01","name":"get_weather","args":{"city":"Paris"}},
        "thoughtSignature":"skip_thought_signature_validator"});
    assert_eq!(
        parts_written(&mut out),
        [
            foreign.clone(),
            foreign.clone(),
            foreign,
            json!({"functionCall":{"name":"get_time","args":{}},"thoughtSignature":"Y2FsbA=="}),
            json!({"functionCall":{"name":"get_date","args":{}}}),
        ]
    );
}

#[test]
fn a_signature_owed_to_gemini_thoughts_is_not_spent_on_a_call_another_model_made() {
    use crate::dialect::Dialect;
    let mut encoder = ChunkEncoder::default();
    let mut out = Outbox::default();
    let mut thoughts = Held::new(HeldKind::Reasoning, Dialect::GEMINI, "");
    thoughts.text = "Think.".into();
    thoughts.signature = Some("c2ln".into());
    encoder.held(0, &thoughts, &mut out);
    encoder.held(1, &foreign_call(Dialect::ANTHROPIC_MESSAGES), &mut out);
    encoder.text(2, "Done.", &mut out);
    let parts = parts_written(&mut out);
    assert_eq!(parts[0], json!({"text":"Think.","thought":true}));
    assert_eq!(parts[1]["thoughtSignature"], FOREIGN_CALL_SIGNATURE);
    assert_eq!(parts[2], json!({"text":"Done.","thoughtSignature":"c2ln"}));
}

#[test]
fn the_placeholder_signature_is_base64url_that_reads_back_as_itself() {
    // google-genai keeps a signature as the bytes its base64url decodes to and writes them
    // again: only whole groups of four characters of that alphabet, no padding, come back
    // unchanged (a 31-character string comes back with `=`, `+` as `-`).
    let sig = FOREIGN_CALL_SIGNATURE.as_bytes();
    assert_eq!(sig.len() % 4, 0);
    assert!(sig
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
}
