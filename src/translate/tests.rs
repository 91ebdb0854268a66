use serde_json::{json, Value};

use super::*;

// What the Gemini tests (`gemini/tests.rs`) use too.
pub(super) const ANTHROPIC: Dialect = Dialect::ANTHROPIC_MESSAGES;
pub(super) const CHAT: Dialect = Dialect::OPENAI_CHAT;

/// A tiny base64 image, for requests that carry one.
pub(super) const PNG: &str = "iVBORw0KGgo=";

/// `body` translated, as JSON; a test failure naming why if it cannot be.
pub(super) fn translated(from: Dialect, to: Dialect, body: &Value, prefill: Prefill) -> Value {
    let out = translate(from, to, body.to_string().as_bytes(), "target", prefill)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&out).expect("JSON")
}

/// Why `body` cannot be translated for a target whose prefill form is `prefill`.
pub(super) fn refused_with(from: Dialect, to: Dialect, body: &Value, prefill: Prefill) -> String {
    translate(from, to, body.to_string().as_bytes(), "target", prefill)
        .expect_err("untranslatable")
        .to_string()
}

fn refused(from: Dialect, to: Dialect, body: &Value) -> String {
    refused_with(from, to, body, Prefill::None)
}

#[test]
fn an_anthropic_request_is_written_as_chat_completions_field_by_field() {
    let body = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 1000,
        "stream": true,
        "system": [{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral"}},
                   {"type":"text","text":"Answer in French."}],
        "messages": [
            {"role":"user","content":[
                {"type":"text","text":"What is in this picture, and the weather?"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}},
                {"type":"image","source":{"type":"url","url":"https://example.com/a.jpg"}}]},
            {"role":"assistant","content":[
                {"type":"text","text":"Let me check."},
                {"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"city":"Paris","unit":"c"}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":"toolu_01A","content":"18 degrees"},
                {"type":"text","text":"And tomorrow?"}]}
        ],
        "tools": [{"name":"get_weather","description":"Weather now","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"cache_control":{"type":"ephemeral"}}],
        "tool_choice": {"type":"any","disable_parallel_tool_use":true},
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "metadata": {"user_id":"u-1"},
        "top_k": 5
    });
    let want = json!({
        "model": "target",
        "messages": [
            {"role":"system","content":"Be brief."},
            {"role":"system","content":"Answer in French."},
            {"role":"user","content":[
                {"type":"text","text":"What is in this picture, and the weather?"},
                {"type":"image_url","image_url":{"url":format!("data:image/png;base64,{PNG}")}},
                {"type":"image_url","image_url":{"url":"https://example.com/a.jpg"}}]},
            {"role":"assistant","content":"Let me check.","tool_calls":[
                {"id":"toolu_01A","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"unit\":\"c\"}"}}]},
            {"role":"tool","tool_call_id":"toolu_01A","content":"18 degrees"},
            {"role":"user","content":"And tomorrow?"}
        ],
        "max_completion_tokens": 1000,
        "stop": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "tools": [{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    assert_eq!(translated(ANTHROPIC, CHAT, &body, Prefill::None), want);
}

#[test]
fn a_chat_request_is_written_as_anthropic_messages_field_by_field() {
    let body = json!({
        "model": "gpt-4.1",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role":"developer","content":"Be brief."},
            {"role":"user","name":"ann","content":[
                {"type":"text","text":"Weather here?"},
                {"type":"image_url","image_url":{"url":format!("data:image/png;base64,{PNG}"),"detail":"low"}}]},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"functions.get_time:1","type":"function","function":{"name":"get_time","arguments":""}}]},
            {"role":"tool","tool_call_id":"call_1","content":"18 degrees"},
            {"role":"tool","tool_call_id":"functions.get_time:1","content":[{"type":"text","text":"noon"}]},
            {"role":"user","content":"Thanks. Tomorrow?"}
        ],
        "tools": [
            {"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}},
            {"type":"function","function":{"name":"get_time","description":"Time now"}}],
        "tool_choice": {"type":"function","function":{"name":"get_weather"}},
        "max_completion_tokens": 300,
        "stop": "END",
        "temperature": 1.4,
        "top_p": 0.5,
        "user": "u-1",
        "seed": 7
    });
    let time_id = ids::anthropic("functions.get_time:1").into_owned();
    let want = json!({
        "model": "target",
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [
            {"role":"user","content":[
                {"type":"text","text":"Weather here?"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}}]},
            {"role":"assistant","content":[
                {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},
                {"type":"tool_use","id":time_id,"name":"get_time","input":{}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":"call_1","content":"18 degrees"},
                {"type":"tool_result","tool_use_id":time_id,"content":"noon"},
                {"type":"text","text":"Thanks. Tomorrow?"}]}
        ],
        "stop_sequences": ["END"],
        // Anthropic's range ends at 1; top_p is left out beside a temperature.
        "temperature": 1.0,
        "tools": [
            {"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true},
            {"name":"get_time","description":"Time now","input_schema":{"type":"object","properties":{}}}],
        "tool_choice": {"type":"tool","name":"get_weather"},
        "stream": true
    });
    assert_eq!(translated(CHAT, ANTHROPIC, &body, Prefill::None), want);
}

#[test]
fn a_chat_request_without_a_limit_gets_anthropics_required_one() {
    let body = json!({"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]});
    let out = translated(CHAT, ANTHROPIC, &body, Prefill::None);
    assert_eq!(out["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
    assert_eq!(out["messages"], json!([{"role":"user","content":"Hi"}]));
}

#[test]
fn a_clients_own_prefill_is_continued_in_the_targets_form_or_refused() {
    let anthropic = json!({"model":"m","max_tokens":9,"stream":true,"messages":[
        {"role":"user","content":"JSON please"},{"role":"assistant","content":"{"}]});
    let prefix = translated(ANTHROPIC, CHAT, &anthropic, Prefill::Prefix);
    assert_eq!(
        prefix["messages"][1],
        json!({"role":"assistant","content":"{","prefix":true})
    );
    let vllm = translated(ANTHROPIC, CHAT, &anthropic, Prefill::ContinueFinalMessage);
    assert_eq!(
        vllm["messages"][1],
        json!({"role":"assistant","content":"{"})
    );
    assert_eq!(
        (
            &vllm["continue_final_message"],
            &vllm["add_generation_prompt"]
        ),
        (&json!(true), &json!(false))
    );
    assert!(refused(ANTHROPIC, CHAT, &anthropic).contains("does not continue one"));

    let chat = json!({"model":"m","stream":true,"messages":[
        {"role":"user","content":"Hi"},{"role":"assistant","content":"Hello \n"}]});
    let out = translated(CHAT, ANTHROPIC, &chat, Prefill::Assistant);
    assert_eq!(
        out["messages"][1],
        json!({"role":"assistant","content":"Hello"}),
        "Anthropic refuses a prefill ending in whitespace"
    );
}

#[test]
fn what_another_dialect_cannot_carry_is_refused_with_its_name() {
    let anthropic = |extra: Value| {
        let mut body = json!({"model":"m","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"Hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        refused(ANTHROPIC, CHAT, &body)
    };
    for (extra, says) in [
        (
            json!({"thinking":{"type":"enabled","budget_tokens":1024}}),
            "extended thinking",
        ),
        (
            json!({"tools":[{"type":"web_search_20250305","name":"web_search"}]}),
            "server tool",
        ),
        (
            json!({"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"x"}}]}]}),
            "document",
        ),
        (
            json!({"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}),
            "source `file`",
        ),
        (
            json!({"messages":[{"role":"assistant","content":[{"type":"server_tool_use","id":"s","name":"web_search","input":{}}]}]}),
            "server_tool_use",
        ),
        (json!({"mcp_servers":[]}), "`mcp_servers`"),
        (json!({"container":"c"}), "`container`"),
        (json!({"stream":false}), "not streamed"),
        (
            json!({"stop_sequences":["a","b","c","d","e"]}),
            "stop sequences",
        ),
        (
            json!({"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}}]}]}]}),
            "image in a tool result",
        ),
    ] {
        let why = anthropic(extra.clone());
        assert!(why.contains(says), "{extra}: {why}");
    }
    let chat = |extra: Value| {
        let mut body =
            json!({"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        refused(CHAT, ANTHROPIC, &body)
    };
    for (extra, says) in [
        (json!({"n":2}), "`n`"),
        (json!({"logprobs":true}), "logprobs"),
        (
            json!({"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}}),
            "structured output",
        ),
        (json!({"modalities":["text","audio"]}), "modalities"),
        (json!({"audio":{"voice":"alloy","format":"wav"}}), "`audio`"),
        (json!({"web_search_options":{}}), "`web_search_options`"),
        (json!({"functions":[]}), "`functions`"),
        (json!({"guided_json":{}}), "`guided_json`"),
        (
            json!({"tools":[{"type":"custom","custom":{"name":"x"}}]}),
            "type `custom`",
        ),
        (
            json!({"messages":[{"role":"user","content":"Hi"},{"role":"system","content":"Now French."}]}),
            "system message after the first turn",
        ),
        (
            json!({"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]}),
            "`input_audio`",
        ),
        (
            json!({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/bmp;base64,Qk0="}}]}]}),
            "image/bmp",
        ),
        (
            json!({"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}),
            "not a JSON object",
        ),
    ] {
        let why = chat(extra.clone());
        assert!(why.contains(says), "{extra}: {why}");
    }
}

#[test]
fn what_only_changes_how_the_answer_is_made_is_dropped() {
    let body = json!({"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}],
        "n":1,"logprobs":false,"response_format":{"type":"text"},"seed":1,"user":"u",
        "presence_penalty":0.1,"frequency_penalty":0.1,"logit_bias":{"50256":-100},
        "store":false,"metadata":{"a":"b"},"service_tier":"auto","reasoning_effort":"low",
        "prompt_cache_key":"k","safety_identifier":"s","temperature":null});
    let out = translated(CHAT, ANTHROPIC, &body, Prefill::None);
    assert_eq!(
        out,
        json!({"model":"target","max_tokens":anthropic::DEFAULT_MAX_TOKENS,"messages":[{"role":"user","content":"Hi"}],"stream":true})
    );
}

#[test]
fn a_body_that_is_not_a_request_says_so() {
    for body in [
        &b"nope"[..],
        b"[]",
        br#"{"model":"a","model":"b"}"#,
        br#"{"messages":"x"}"#,
    ] {
        let why = translate(ANTHROPIC, CHAT, body, "t", Prefill::None).unwrap_err();
        assert!(!why.0.is_empty());
    }
}

#[test]
fn whether_the_client_asked_for_usage_is_read_from_its_request() {
    let asks = |dialect: Dialect, body: Value| {
        dialect.spec().rules.asks_usage(body.to_string().as_bytes())
    };
    let chat = |options: Value| {
        let body = json!({"model":"m","stream":true,"stream_options":options,"messages":[]});
        asks(CHAT, body)
    };
    assert!(chat(json!({"include_usage":true})));
    assert!(!chat(json!({"include_usage":false})));
    assert!(!chat(json!({})));
    assert!(!chat(Value::Null));
    assert!(!asks(
        CHAT,
        json!({"model":"m","stream":true,"messages":[]})
    ));
    // Every Messages stream reports usage.
    let anthropic = json!({"model":"m","max_tokens":1,"messages":[]});
    assert!(asks(ANTHROPIC, anthropic));
}

#[test]
fn the_endpoint_follows_the_dialect_and_keeps_the_query() {
    let mut request = http::Request::post("http://h/api/v1/messages?beta=true")
        .body(())
        .unwrap();
    set_endpoint(&mut request, ANTHROPIC, CHAT, "m");
    assert_eq!(request.uri(), "http://h/api/v1/chat/completions?beta=true");
    set_endpoint(&mut request, CHAT, ANTHROPIC, "m");
    assert_eq!(request.uri(), "http://h/api/v1/messages?beta=true");
    let mut other = http::Request::post("/generate").body(()).unwrap();
    set_endpoint(&mut other, CHAT, ANTHROPIC, "m");
    assert_eq!(
        other.uri(),
        "/generate",
        "a path of no dialect is left to the inner service"
    );
}

/// Rich requests of both dialects, for the hostile-input tests.
fn rich() -> [(Dialect, Value); 3] {
    [
        (
            ANTHROPIC,
            json!({"model":"m","max_tokens":9,"stream":true,"system":[{"type":"text","text":"S"}],
                "messages":[{"role":"user","content":[{"type":"text","text":"Hi"},
                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}}]},
                    {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":1}}]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"ok"}]}],
                "tools":[{"name":"f","input_schema":{"type":"object"}}],
                "tool_choice":{"type":"auto"},"stop_sequences":["x"],"temperature":0.5}),
        ),
        (
            CHAT,
            json!({"model":"m","stream":true,"stream_options":{"include_usage":true},
                "messages":[{"role":"system","content":"S"},
                    {"role":"user","content":[{"type":"text","text":"Hi"},
                        {"type":"image_url","image_url":{"url":"https://e/x.png"}}]},
                    {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
                    {"role":"tool","tool_call_id":"c","content":"ok"}],
                "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
                "tool_choice":"auto","stop":["x"],"max_completion_tokens":9}),
        ),
        (
            RESPONSES,
            json!({"model":"m","stream":true,"instructions":"S",
                "input":[{"role":"user","content":[{"type":"input_text","text":"Hi"},
                        {"type":"input_image","image_url":"https://e/x.png"}]},
                    {"type":"function_call","call_id":"c","name":"f","arguments":"{}"},
                    {"type":"function_call_output","call_id":"c","output":"ok"}],
                "tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],
                "tool_choice":"auto","max_output_tokens":99}),
        ),
    ]
}

#[test]
fn a_request_cut_anywhere_is_refused_without_a_panic() {
    for (from, body) in rich() {
        let to = if from == ANTHROPIC { CHAT } else { ANTHROPIC };
        let bytes = body.to_string().into_bytes();
        assert!(translate(from, to, &bytes, "t", Prefill::None).is_ok());
        for end in 0..bytes.len() {
            let cut = translate(from, to, &bytes[..end], "t", Prefill::None);
            assert!(cut.is_err(), "{}: cut at {end} read as whole", from.name());
        }
    }
}

#[test]
fn a_value_of_the_wrong_type_anywhere_is_refused_or_read_without_a_panic() {
    // Every member of the request, and of each message, replaced in turn by a value of each
    // JSON type: a refusal or a translation, never a panic.
    let wrong = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e300),
        json!("x"),
        json!([]),
        json!([null]),
        json!({}),
        json!({"type":"x"}),
    ];
    for (from, body) in rich() {
        let to = if from == ANTHROPIC { CHAT } else { ANTHROPIC };
        let mut paths: Vec<Vec<Value>> = Vec::new();
        for (key, value) in body.as_object().unwrap() {
            paths.push(vec![json!(key)]);
            if let Some(messages) = value.as_array() {
                for (i, m) in messages.iter().enumerate() {
                    for inner in m.as_object().into_iter().flat_map(|o| o.keys()) {
                        paths.push(vec![json!(key), json!(i), json!(inner)]);
                    }
                }
            }
        }
        for path in paths {
            for value in &wrong {
                let mut mutated = body.clone();
                let mut at = &mut mutated;
                for step in &path {
                    at = match step {
                        Value::String(k) => &mut at[k.as_str()],
                        Value::Number(i) => &mut at[i.as_u64().unwrap() as usize],
                        _ => unreachable!(),
                    };
                }
                *at = value.clone();
                let bytes = mutated.to_string().into_bytes();
                for prefill in [Prefill::None, Prefill::Assistant, Prefill::Prefix] {
                    for to in [to, RESPONSES] {
                        let _ = translate(from, to, &bytes, "t", prefill);
                    }
                }
            }
        }
    }
}

#[test]
fn a_tool_definition_reads_alike_in_both_dialects_escapes_included() {
    let function = json!({"name":"get_weather","description":"Weather \"now\"\n\u{e9}",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true});
    let chat = json!({"model":"m","stream":true,"temperature":null,"top_p":0.5,
        "messages":[{"role":"user","content":"hi"}],
        "tools":[{"type":"function","function":function}],"tool_choice":"required"});
    let messages = translated(CHAT, ANTHROPIC, &chat, Prefill::None);
    assert_eq!(
        messages["tools"],
        json!([{"name":"get_weather","description":"Weather \"now\"\n\u{e9}",
            "input_schema":function["parameters"],"strict":true}])
    );
    assert_eq!(messages["top_p"], 0.5);
    assert!(messages.get("temperature").is_none());
    let back = translated(ANTHROPIC, CHAT, &messages, Prefill::None);
    assert_eq!(
        back["tools"],
        json!([{"type":"function","function":function}])
    );
    assert_eq!(back["tool_choice"], "required");
    // A definition without a name is not a tool in either.
    let nameless = json!({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],
        "tools":[{"type":"function","function":{"parameters":{}}}]});
    assert!(refused(CHAT, ANTHROPIC, &nameless).contains("`tools` is not readable"));
    let nameless = json!({"model":"m","max_tokens":5,"stream":true,
        "messages":[{"role":"user","content":"hi"}],"tools":[{"input_schema":{}}]});
    assert!(refused(ANTHROPIC, CHAT, &nameless).contains("`tools` is not readable"));
}

#[test]
fn every_form_of_tool_choice_crosses_both_ways_and_only_beside_tools() {
    let anthropic = |choice: Value, tools: bool| {
        let mut body = json!({"model":"m","max_tokens":9,"stream":true,
            "messages":[{"role":"user","content":"Hi"}],"tool_choice":choice});
        if tools {
            body["tools"] = json!([{"name":"f","input_schema":{"type":"object"}}]);
        }
        let out = translated(ANTHROPIC, CHAT, &body, Prefill::None);
        (
            out["tool_choice"].clone(),
            out["parallel_tool_calls"].clone(),
        )
    };
    for (choice, want, parallel) in [
        (json!({"type":"auto"}), json!("auto"), Value::Null),
        (json!({"type":"any"}), json!("required"), Value::Null),
        (json!({"type":"none"}), json!("none"), Value::Null),
        (
            json!({"type":"tool","name":"f"}),
            json!({"type":"function","function":{"name":"f"}}),
            Value::Null,
        ),
        (
            json!({"type":"auto","disable_parallel_tool_use":true}),
            json!("auto"),
            json!(false),
        ),
        (
            json!({"type":"any","disable_parallel_tool_use":false}),
            json!("required"),
            Value::Null,
        ),
    ] {
        assert_eq!(
            anthropic(choice.clone(), true),
            (want, parallel),
            "{choice}"
        );
        // OpenAI refuses `tool_choice` and `parallel_tool_calls` without tools.
        assert_eq!(
            anthropic(choice.clone(), false),
            (Value::Null, Value::Null),
            "{choice}"
        );
    }

    let chat = |choice: Value, parallel: Value, tools: bool| {
        let mut body = json!({"model":"m","stream":true,
            "messages":[{"role":"user","content":"Hi"}],
            "tool_choice":choice,"parallel_tool_calls":parallel});
        if tools {
            body["tools"] = json!([{"type":"function","function":{"name":"f"}}]);
        }
        translated(CHAT, ANTHROPIC, &body, Prefill::None)["tool_choice"].clone()
    };
    for (choice, parallel, want) in [
        (json!("auto"), Value::Null, json!({"type":"auto"})),
        (json!("required"), Value::Null, json!({"type":"any"})),
        (json!("none"), Value::Null, json!({"type":"none"})),
        (
            json!({"type":"function","function":{"name":"f"}}),
            json!(false),
            json!({"type":"tool","name":"f","disable_parallel_tool_use":true}),
        ),
        (
            Value::Null,
            json!(false),
            json!({"type":"auto","disable_parallel_tool_use":true}),
        ),
        (Value::Null, json!(true), Value::Null),
    ] {
        assert_eq!(
            chat(choice.clone(), parallel.clone(), true),
            want,
            "{choice} {parallel}"
        );
        assert_eq!(
            chat(choice.clone(), parallel, false),
            Value::Null,
            "{choice}"
        );
    }
}

#[test]
fn every_form_of_a_token_limit_crosses_both_ways() {
    let chat = |limits: Value| {
        let mut body =
            json!({"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]});
        for (k, v) in limits.as_object().unwrap() {
            body[k] = v.clone();
        }
        translated(CHAT, ANTHROPIC, &body, Prefill::None)["max_tokens"].clone()
    };
    // `max_tokens` is deprecated on Chat but still sent; `max_completion_tokens` wins.
    assert_eq!(chat(json!({"max_tokens":70})), json!(70));
    assert_eq!(chat(json!({"max_completion_tokens":80})), json!(80));
    assert_eq!(
        chat(json!({"max_tokens":70,"max_completion_tokens":80})),
        json!(80)
    );
    assert_eq!(
        chat(json!({"max_tokens":null})),
        json!(anthropic::DEFAULT_MAX_TOKENS)
    );
    let body = json!({"model":"m","max_tokens":90,"stream":true,"messages":[{"role":"user","content":"Hi"}]});
    let out = translated(ANTHROPIC, CHAT, &body, Prefill::None);
    assert_eq!(
        (&out["max_completion_tokens"], out.get("max_tokens")),
        (&json!(90), None),
        "o-series models refuse `max_tokens`"
    );
}

#[test]
fn tool_results_of_every_shape_and_image_urls_cross_both_ways() {
    let body = json!({"model":"m","max_tokens":9,"stream":true,"messages":[
        {"role":"user","content":"Go"},
        {"role":"assistant","content":[
            {"type":"tool_use","id":"t1","name":"f","input":{}},
            {"type":"tool_use","id":"t2","name":"f","input":{"a":[1,{"b":null}]}},
            {"type":"tool_use","id":"t3","name":"f"}]},
        {"role":"user","content":[
            {"type":"text","text":"Here:"},
            {"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
            {"type":"tool_result","tool_use_id":"t2","is_error":true,"content":"boom"},
            {"type":"tool_result","tool_use_id":"t3"}]}]});
    let out = translated(ANTHROPIC, CHAT, &body, Prefill::None);
    assert_eq!(
        out["messages"],
        json!([
            {"role":"user","content":"Go"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}},
                {"id":"t2","type":"function","function":{"name":"f","arguments":"{\"a\":[1,{\"b\":null}]}"}},
                {"id":"t3","type":"function","function":{"name":"f","arguments":"{}"}}]},
            // Each result its own `tool` message, ahead of the rest of the turn; `is_error`
            // has no Chat form (its text says what went wrong).
            {"role":"tool","tool_call_id":"t1","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
            {"role":"tool","tool_call_id":"t2","content":"boom"},
            {"role":"tool","tool_call_id":"t3","content":""},
            {"role":"user","content":"Here:"}
        ])
    );

    let body = json!({"model":"m","stream":true,"messages":[
        {"role":"user","content":[{"type":"image_url","image_url":{"url":"https://e/x.png","detail":"high"}}]},
        {"role":"assistant","content":[{"type":"text","text":"I can't"},{"type":"refusal","refusal":" do that."}]},
        {"role":"user","content":"Why?"}]});
    let out = translated(CHAT, ANTHROPIC, &body, Prefill::None);
    assert_eq!(
        out["messages"],
        json!([
            {"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://e/x.png"}}]},
            {"role":"assistant","content":[{"type":"text","text":"I can't"},{"type":"text","text":" do that."}]},
            {"role":"user","content":"Why?"}
        ])
    );
}

// ---- OpenAI Responses ------------------------------------------------------------------

const RESPONSES: Dialect = Dialect::OPENAI_RESPONSES;

/// A Responses request with every part that crosses: instructions and a system item, a string
/// and a parts message, both image forms, a message with two function calls and their
/// outputs, reasoning of an earlier turn, tools, a named tool_choice and the sampling knobs.
fn rich_responses() -> Value {
    json!({
        "model": "gpt-5",
        "stream": true,
        "instructions": "Be brief.",
        "input": [
            {"role":"developer","content":"Answer in French."},
            {"type":"message","role":"user","content":[
                {"type":"input_text","text":"Weather here?"},
                {"type":"input_image","image_url":format!("data:image/png;base64,{PNG}"),"detail":"low"},
                {"type":"input_image","image_url":"https://example.com/a.jpg"}]},
            {"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAA"},
            {"type":"message","id":"msg_1","role":"assistant","status":"completed","content":[
                {"type":"output_text","text":"Let me check.","annotations":[]}]},
            {"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}","status":"completed"},
            {"type":"function_call","call_id":"functions.get_time:1","name":"get_time","arguments":""},
            {"type":"function_call_output","call_id":"call_1","output":"18 degrees"},
            {"type":"function_call_output","call_id":"functions.get_time:1","output":[{"type":"input_text","text":"noon"}]},
            {"role":"user","content":"Tomorrow?"}
        ],
        "tools": [
            {"type":"function","name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true},
            {"type":"function","name":"get_time","parameters":null,"strict":false}],
        "tool_choice": {"type":"function","name":"get_weather"},
        "parallel_tool_calls": false,
        "max_output_tokens": 500,
        "temperature": 0.5,
        "top_p": 0.9,
        "store": false,
        "reasoning": {"effort":"low","summary":"auto"},
        "include": ["reasoning.encrypted_content"],
        "text": {"format":{"type":"text"},"verbosity":"low"},
        "truncation": "disabled",
        "metadata": {"a":"b"}
    })
}

#[test]
fn a_responses_request_is_written_as_anthropic_messages_field_by_field() {
    let time_id = ids::anthropic("functions.get_time:1").into_owned();
    let want = json!({
        "model": "target",
        "max_tokens": 500,
        "system": [{"type":"text","text":"Be brief."},{"type":"text","text":"Answer in French."}],
        "messages": [
            {"role":"user","content":[
                {"type":"text","text":"Weather here?"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}},
                {"type":"image","source":{"type":"url","url":"https://example.com/a.jpg"}}]},
            {"role":"assistant","content":[
                {"type":"text","text":"Let me check."},
                {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},
                {"type":"tool_use","id":time_id,"name":"get_time","input":{}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":"call_1","content":"18 degrees"},
                {"type":"tool_result","tool_use_id":time_id,"content":"noon"},
                {"type":"text","text":"Tomorrow?"}]}
        ],
        "temperature": 0.5,
        "tools": [
            {"name":"get_weather","description":"Weather now","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true},
            {"name":"get_time","input_schema":{"type":"object","properties":{}},"strict":false}],
        "tool_choice": {"type":"tool","name":"get_weather","disable_parallel_tool_use":true},
        "stream": true
    });
    assert_eq!(
        translated(RESPONSES, ANTHROPIC, &rich_responses(), Prefill::None),
        want
    );
}

#[test]
fn a_responses_request_is_written_as_chat_completions_field_by_field() {
    let want = json!({
        "model": "target",
        "messages": [
            {"role":"system","content":"Be brief."},
            {"role":"system","content":"Answer in French."},
            {"role":"user","content":[
                {"type":"text","text":"Weather here?"},
                {"type":"image_url","image_url":{"url":format!("data:image/png;base64,{PNG}")}},
                {"type":"image_url","image_url":{"url":"https://example.com/a.jpg"}}]},
            {"role":"assistant","content":"Let me check.","tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"functions.get_time:1","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"18 degrees"},
            {"role":"tool","tool_call_id":"functions.get_time:1","content":"noon"},
            {"role":"user","content":"Tomorrow?"}
        ],
        "max_completion_tokens": 500,
        "temperature": 0.5,
        "top_p": 0.9,
        "tools": [
            {"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}},
            {"type":"function","function":{"name":"get_time","strict":false}}],
        "tool_choice": {"type":"function","function":{"name":"get_weather"}},
        "parallel_tool_calls": false,
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    assert_eq!(
        translated(RESPONSES, CHAT, &rich_responses(), Prefill::None),
        want
    );
}

#[test]
fn an_anthropic_request_is_written_as_responses_field_by_field() {
    let body = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 1000,
        "stream": true,
        "system": [{"type":"text","text":"Be brief."},{"type":"text","text":"Answer in French."}],
        "messages": [
            {"role":"user","content":[
                {"type":"text","text":"What is in this picture, and the weather?"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}},
                {"type":"image","source":{"type":"url","url":"https://example.com/a.jpg"}}]},
            {"role":"assistant","content":[
                {"type":"text","text":"Let me check."},
                {"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"city":"Paris"}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":"toolu_01A","content":[{"type":"text","text":"18"},{"type":"text","text":"degrees"}]},
                {"type":"text","text":"And tomorrow?"}]}
        ],
        "tools": [{"name":"get_weather","description":"Weather now","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
        "tool_choice": {"type":"any","disable_parallel_tool_use":true},
        "temperature": 0.5,
        "metadata": {"user_id":"u-1"}
    });
    let want = json!({
        "model": "target",
        "input": [
            {"role":"system","content":"Be brief."},
            {"role":"system","content":"Answer in French."},
            {"role":"user","content":[
                {"type":"input_text","text":"What is in this picture, and the weather?"},
                {"type":"input_image","image_url":format!("data:image/png;base64,{PNG}"),"detail":"auto"},
                {"type":"input_image","image_url":"https://example.com/a.jpg","detail":"auto"}]},
            {"role":"assistant","content":"Let me check."},
            {"type":"function_call","call_id":"toolu_01A","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
            {"type":"function_call_output","call_id":"toolu_01A","output":"18\ndegrees"},
            {"role":"user","content":"And tomorrow?"}
        ],
        "max_output_tokens": 1000,
        "temperature": 0.5,
        "tools": [{"type":"function","name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":false}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "stream": true
    });
    assert_eq!(translated(ANTHROPIC, RESPONSES, &body, Prefill::None), want);
}

#[test]
fn a_chat_request_is_written_as_responses_field_by_field() {
    let long = "x".repeat(70);
    let body = json!({
        "model": "gpt-4.1",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role":"system","content":"Be brief."},
            {"role":"user","content":"Weather?"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":long,"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
            {"role":"tool","tool_call_id":long,"content":"18 degrees"}
        ],
        "tools": [{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"},"strict":true}}],
        "tool_choice": "auto",
        "max_completion_tokens": 4,
        "top_p": 0.5,
        "user": "u-1"
    });
    let id = ids::responses(&long).into_owned();
    assert!(id.len() <= 64 && id.starts_with("call_"));
    let want = json!({
        "model": "target",
        "input": [
            {"role":"system","content":"Be brief."},
            {"role":"user","content":"Weather?"},
            {"type":"function_call","call_id":id,"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
            {"type":"function_call_output","call_id":id,"output":"18 degrees"}
        ],
        // The API's minimum.
        "max_output_tokens": 16,
        "top_p": 0.5,
        "tools": [{"type":"function","name":"get_weather","parameters":{"type":"object"},"strict":true}],
        "tool_choice": "auto",
        "stream": true
    });
    assert_eq!(translated(CHAT, RESPONSES, &body, Prefill::None), want);
}

#[test]
fn a_string_input_is_one_user_turn() {
    let body = json!({"model":"m","stream":true,"input":"Hi","instructions":"Be brief."});
    let out = translated(RESPONSES, ANTHROPIC, &body, Prefill::None);
    assert_eq!(out["system"], "Be brief.");
    assert_eq!(out["messages"], json!([{"role":"user","content":"Hi"}]));
    assert_eq!(out["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
}

#[test]
fn what_responses_cannot_carry_or_take_is_refused_with_its_name() {
    let responses = |extra: Value| {
        let mut body = json!({"model":"m","stream":true,"input":"Hi"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        [
            refused(RESPONSES, ANTHROPIC, &body),
            refused(RESPONSES, CHAT, &body),
        ]
    };
    for (extra, says) in [
        (
            json!({"previous_response_id":"resp_1"}),
            "previous_response_id",
        ),
        (json!({"conversation":"conv_1"}), "`conversation`"),
        (json!({"background":true}), "background"),
        (json!({"prompt":{"id":"pmpt_1"}}), "`prompt`"),
        (json!({"max_tool_calls":3}), "`max_tool_calls`"),
        (json!({"top_logprobs":2}), "top_logprobs"),
        (json!({"stream":false}), "not streamed"),
        (
            json!({"text":{"format":{"type":"json_schema","name":"x","schema":{}}}}),
            "structured output",
        ),
        (
            json!({"tools":[{"type":"web_search"}]}),
            "type `web_search`",
        ),
        (
            json!({"tools":[{"type":"custom","name":"grammar"}]}),
            "type `custom`",
        ),
        (
            json!({"tool_choice":{"type":"file_search"}}),
            "tool_choice of type `file_search`",
        ),
        (
            json!({"input":[{"role":"user","content":[{"type":"input_file","file_id":"file_1"}]}]}),
            "`input_file`",
        ),
        (
            json!({"input":[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]}),
            "file id",
        ),
        (
            json!({"input":[{"role":"user","content":"Hi"},{"role":"system","content":"French."}]}),
            "system message after the first turn",
        ),
        (
            json!({"input":[{"type":"item_reference","id":"msg_1"}]}),
            "`item_reference`",
        ),
        (
            json!({"input":[{"type":"function_call","call_id":"c","name":"f","arguments":"[1]"}]}),
            "not a JSON object",
        ),
        (
            json!({"input":[{"type":"function_call_output","output":"x"}]}),
            "without a `call_id`",
        ),
    ] {
        for why in responses(extra.clone()) {
            assert!(why.contains(says), "{extra}: {why}");
        }
    }
    // Toward a Responses target: what the API has no form for.
    let anthropic = json!({"model":"m","max_tokens":9,"stream":true,"stop_sequences":["END"],
        "messages":[{"role":"user","content":"Hi"}]});
    assert!(refused(ANTHROPIC, RESPONSES, &anthropic).contains("stop sequences"));
    let chat =
        json!({"model":"m","stream":true,"stop":"END","messages":[{"role":"user","content":"Hi"}]});
    assert!(refused(CHAT, RESPONSES, &chat).contains("stop sequences"));
    let image_result = json!({"model":"m","max_tokens":9,"stream":true,"messages":[{"role":"user","content":[
        {"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}}]}]}]});
    assert!(refused(ANTHROPIC, RESPONSES, &image_result).contains("image in a tool result"));
    let prefill = json!({"model":"m","max_tokens":9,"stream":true,"messages":[
        {"role":"user","content":"JSON please"},{"role":"assistant","content":"{"}]});
    assert!(refused(ANTHROPIC, RESPONSES, &prefill).contains("does not continue one"));
    let misdeclared = translate(
        ANTHROPIC,
        RESPONSES,
        prefill.to_string().as_bytes(),
        "t",
        Prefill::Prefix,
    )
    .unwrap_err();
    assert!(misdeclared.0.contains("no prefill"), "{misdeclared}");
}

#[test]
fn a_responses_request_crosses_to_chat_and_back_unchanged_in_what_it_says() {
    // Responses -> Chat -> Responses keeps every turn, call and result (in the written form).
    let chat = translate(
        RESPONSES,
        CHAT,
        rich_responses().to_string().as_bytes(),
        "m",
        Prefill::None,
    )
    .unwrap();
    let back: Value = serde_json::from_slice(
        &translate(CHAT, RESPONSES, &chat, "target", Prefill::None).unwrap(),
    )
    .unwrap();
    assert_eq!(
        back["input"],
        json!([
            {"role":"system","content":"Be brief."},
            {"role":"system","content":"Answer in French."},
            {"role":"user","content":[
                {"type":"input_text","text":"Weather here?"},
                {"type":"input_image","image_url":format!("data:image/png;base64,{PNG}"),"detail":"auto"},
                {"type":"input_image","image_url":"https://example.com/a.jpg","detail":"auto"}]},
            {"role":"assistant","content":"Let me check."},
            {"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
            {"type":"function_call","call_id":"functions.get_time:1","name":"get_time","arguments":"{}"},
            {"type":"function_call_output","call_id":"call_1","output":"18 degrees"},
            {"type":"function_call_output","call_id":"functions.get_time:1","output":"noon"},
            {"role":"user","content":"Tomorrow?"}
        ])
    );
    assert_eq!(
        back["tool_choice"],
        json!({"type":"function","name":"get_weather"})
    );
    assert_eq!(back["parallel_tool_calls"], false);
    assert_eq!(back["max_output_tokens"], 500);
}
