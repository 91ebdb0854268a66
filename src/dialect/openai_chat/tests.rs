use super::*;
use crate::rewrite::rewritten;

const BODY: &[u8] = br#"{"model":"a","max_completion_tokens":50,"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"stream":true}"#;

#[test]
fn prefix_prefill_marks_the_assistant_message() {
    let how = Strategy::Prefill(Prefill::Prefix);
    let v = rewritten(&WIRE, BODY, "b", &how, "Hello ", 3).unwrap();
    assert_eq!(v["model"], "b");
    assert_eq!(v["max_completion_tokens"], 47);
    assert_eq!(
        v["messages"][2],
        json!({"role":"assistant","content":"Hello ","prefix":true})
    );
}

#[test]
fn vllm_prefill_sets_continue_final_message() {
    let how = Strategy::Prefill(Prefill::ContinueFinalMessage);
    let v = rewritten(&WIRE, BODY, "b", &how, "Hi", 1).unwrap();
    assert_eq!(v["messages"][2], json!({"role":"assistant","content":"Hi"}));
    assert_eq!(v["continue_final_message"], true);
    assert_eq!(v["add_generation_prompt"], false);
}

#[test]
fn instruction_follows_the_partial_answer_with_a_user_turn() {
    let how = Strategy::Instruction("go on".into());
    let v = rewritten(&WIRE, BODY, "b", &how, "Hi", 1).unwrap();
    assert_eq!(v["messages"][2], json!({"role":"assistant","content":"Hi"}));
    assert_eq!(v["messages"][3], json!({"role":"user","content":"go on"}));
    assert!(v.get("continue_final_message").is_none());
}

fn piece(data: &str) -> Option<(Option<&str>, &str, bool)> {
    fast_piece(data).map(|p| (p.reasoning.map(|(_, key)| key), p.literal, p.plain))
}

#[test]
fn the_fast_piece_is_read_whatever_order_a_server_writes_its_keys_in() {
    let content = Some((None, r#"" \"hi\"""#, false));
    for chunk in [
        // OpenAI's order.
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","service_tier":"default","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":" \"hi\""},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x"}"#,
        // Azure's: sorted, content filter results in the choice.
        r#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":" \"hi\""},"finish_reason":null,"index":0,"logprobs":null}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk","system_fingerprint":"fp"}"#,
        // vLLM's: `stop_reason` in the choice.
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" \"hi\""},"logprobs":null,"finish_reason":null,"stop_reason":null}]}"#,
        // DeepSeek's: the other pieces null beside the one there is.
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":" \"hi\"","reasoning_content":null},"logprobs":null,"finish_reason":null}]}"#,
        // Whitespace anywhere JSON allows it.
        "{ \"choices\" : [ { \"delta\" : { \"content\" : \" \\\"hi\\\"\" } , \"index\" : 0 } ] }",
    ] {
        assert_eq!(piece(chunk), content, "{chunk}");
    }
    let reasoning = r#"{"id":"c","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"hm"},"finish_reason":null}]}"#;
    assert_eq!(
        piece(reasoning),
        Some((Some(r#""reasoning_content""#), r#""hm""#, true))
    );
    let vllm =
        r#"{"id":"c","choices":[{"index":0,"delta":{"reasoning":"hm"},"finish_reason":null}]}"#;
    assert_eq!(piece(vllm), Some((Some(r#""reasoning""#), r#""hm""#, true)));
}

#[test]
fn anything_but_a_lone_valid_piece_takes_the_exact_path() {
    for other in [
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a","tool_calls":[]},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#,
        r#"{"error":{"message":"x"},"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"completion_tokens":1}}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a","refusal":"no"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a","reasoning":"b"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a"},"delta":{"content":"b"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a","content":"b"}}]}"#,
        r#"{"choices":[],"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
        // An escaped key may name a member a second time.
        r#"{"choices":[{"index":0,"delta":{"content":"a","\u0063ontent":"b"}}]}"#,
        // Broken JSON around a valid piece: never forwarded as it came.
        r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":nul}]}"#,
        r#"{"id":"c" "choices":[{"index":0,"delta":{"content":"a"}}]}"#,
        r#"{"id":"c\x","choices":[{"index":0,"delta":{"content":"a"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"created":01}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a"}}]} trailing"#,
        r#"{"choices":[{"index":0,"delta":{"content":"bad \ud800 surrogate"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{}}]}"#,
    ] {
        assert_eq!(piece(other), None, "{other}");
    }
}

#[test]
fn client_errors_in_band_are_recognized_by_type_or_code() {
    assert!(is_client_error(None, Some("400")));
    assert!(is_client_error(Some("invalid_request_error"), None));
    assert!(is_client_error(None, Some("context_length_exceeded")));
    assert!(!is_client_error(None, Some("429")));
    assert!(!is_client_error(Some("server_error"), None));
    assert!(!is_client_error(None, None));
}
