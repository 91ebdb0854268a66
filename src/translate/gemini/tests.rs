use serde_json::{json, Value};

use crate::dialect::Dialect;
use crate::strategy::Prefill;
use crate::translate::tests::{refused_with, translated, ANTHROPIC, CHAT, PNG};
use crate::translate::{ids, set_endpoint, translate};

const GEMINI: Dialect = Dialect::GEMINI;

/// Why `body` cannot be translated, for a target that continues an assistant turn.
fn refused(from: Dialect, to: Dialect, body: &Value) -> String {
    refused_with(from, to, body, Prefill::Assistant)
}

/// A Gemini request with everything the other dialects can carry, as the Python client writes
/// it (some keys in snake case), plus what is dropped.
fn gemini_request() -> Value {
    json!({
        "contents": [
            {"role":"user","parts":[
                {"text":"What is in this picture, and the weather?"},
                {"inlineData":{"mimeType":"image/png","data":PNG}},
                {"file_data":{"file_uri":"https://example.com/a.jpg","mime_type":"image/jpeg"}}]},
            {"role":"model","parts":[
                {"text":"I should look it up.","thought":true},
                {"text":"Let me check.","thoughtSignature":"c2ln"},
                {"functionCall":{"name":"get_weather","args":{"city":"Paris","unit":"c"}}},
                {"functionCall":{"id":"fc-7","name":"get_time","args":{}}}]},
            {"role":"user","parts":[
                {"functionResponse":{"name":"get_weather","response":{"output":"18 degrees"}}},
                {"functionResponse":{"id":"fc-7","name":"get_time","response":{"error":"no clock"}}},
                {"text":"And tomorrow?"}]}
        ],
        "systemInstruction": {"role":"user","parts":[{"text":"Be brief."},{"text":"Answer in French."}]},
        "tools": [{"functionDeclarations":[
            {"name":"get_weather","description":"Weather now","parameters":{"type":"OBJECT","properties":{"city":{"type":"STRING"},"days":{"type":"ARRAY","items":{"type":"INTEGER"}}},"required":["city"]}},
            {"name":"get_time","parameters_json_schema":{"type":"object","properties":{}}}]}],
        "toolConfig": {"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}},
        "generationConfig": {"temperature":0.5,"topP":0.9,"candidateCount":1,"maxOutputTokens":1000,
            "stopSequences":["END"],"topK":40,"thinkingConfig":{"include_thoughts":true,"thinking_budget":128}},
        "safetySettings": [{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_NONE"}]
    })
}

/// The id Gemini's reader gives the first call of the request above, which came without one.
fn weather_id() -> String {
    ids::minted("call_", &["get_weather", "1"])
}

#[test]
fn a_gemini_request_is_written_as_anthropic_messages_field_by_field() {
    let id = weather_id();
    let want = json!({
        "model": "target",
        "max_tokens": 1000,
        "system": [{"type":"text","text":"Be brief."},{"type":"text","text":"Answer in French."}],
        "messages": [
            {"role":"user","content":[
                {"type":"text","text":"What is in this picture, and the weather?"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}},
                {"type":"image","source":{"type":"url","url":"https://example.com/a.jpg"}}]},
            {"role":"assistant","content":[
                {"type":"text","text":"Let me check."},
                {"type":"tool_use","id":id,"name":"get_weather","input":{"city":"Paris","unit":"c"}},
                {"type":"tool_use","id":"fc-7","name":"get_time","input":{}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":id,"content":"18 degrees"},
                {"type":"tool_result","tool_use_id":"fc-7","content":"no clock","is_error":true},
                {"type":"text","text":"And tomorrow?"}]}
        ],
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "tools": [
            {"name":"get_weather","description":"Weather now","input_schema":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"array","items":{"type":"integer"}}},"required":["city"]}},
            {"name":"get_time","input_schema":{"type":"object","properties":{}}}],
        "tool_choice": {"type":"tool","name":"get_weather"},
        "stream": true
    });
    assert_eq!(
        translated(GEMINI, ANTHROPIC, &gemini_request(), Prefill::None),
        want
    );
}

#[test]
fn a_gemini_request_is_written_as_chat_completions_field_by_field() {
    let id = weather_id();
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
                {"id":id,"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"unit\":\"c\"}"}},
                {"id":"fc-7","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":id,"content":"18 degrees"},
            {"role":"tool","tool_call_id":"fc-7","content":"no clock"},
            {"role":"user","content":"And tomorrow?"}
        ],
        "max_completion_tokens": 1000,
        "stop": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "tools": [
            {"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"array","items":{"type":"integer"}}},"required":["city"]}}},
            {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{}}}}],
        "tool_choice": {"type":"function","function":{"name":"get_weather"}},
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    assert_eq!(
        translated(GEMINI, CHAT, &gemini_request(), Prefill::None),
        want
    );
}

#[test]
fn an_anthropic_request_is_written_as_gemini_field_by_field() {
    let body = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 1000,
        "stream": true,
        "system": [{"type":"text","text":"Be brief."},{"type":"text","text":"Answer in French."}],
        "messages": [
            {"role":"user","content":[
                {"type":"text","text":"What is in this picture, and the weather?"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}},
                {"type":"image","source":{"type":"url","url":"https://example.com/a.JPG?x=1"}}]},
            {"role":"assistant","content":[
                {"type":"text","text":"Let me check."},
                {"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"city":"Paris"}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":"toolu_01A","content":"18 degrees"},
                {"type":"text","text":"And tomorrow?"}]},
            {"role":"assistant","content":[
                {"type":"tool_use","id":"toolu_01B","name":"get_weather","input":{"city":"Paris","day":1}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":"toolu_01B","content":[{"type":"text","text":"service down"}],"is_error":true}]}
        ],
        "tools": [{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"additionalProperties":false},"strict":true}],
        "tool_choice": {"type":"any","disable_parallel_tool_use":true},
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "metadata": {"user_id":"u-1"}
    });
    let want = json!({
        "contents": [
            {"role":"user","parts":[
                {"text":"What is in this picture, and the weather?"},
                {"inlineData":{"mimeType":"image/png","data":PNG}},
                {"fileData":{"mimeType":"image/jpeg","fileUri":"https://example.com/a.JPG?x=1"}}]},
            {"role":"model","parts":[
                {"text":"Let me check."},
                {"functionCall":{"id":"toolu_01A","name":"get_weather","args":{"city":"Paris"}},
                    "thoughtSignature":"skip_thought_signature_validator"}]},
            {"role":"user","parts":[
                {"functionResponse":{"id":"toolu_01A","name":"get_weather","response":{"output":"18 degrees"}}},
                {"text":"And tomorrow?"}]},
            {"role":"model","parts":[
                {"functionCall":{"id":"toolu_01B","name":"get_weather","args":{"city":"Paris","day":1}},
                    "thoughtSignature":"skip_thought_signature_validator"}]},
            {"role":"user","parts":[
                {"functionResponse":{"id":"toolu_01B","name":"get_weather","response":{"error":"service down"}}}]}
        ],
        "systemInstruction": {"parts":[{"text":"Be brief."},{"text":"Answer in French."}]},
        "tools": [{"functionDeclarations":[
            {"name":"get_weather","description":"Weather","parametersJsonSchema":{"type":"object","properties":{"city":{"type":"string"}},"additionalProperties":false}}]}],
        "toolConfig": {"functionCallingConfig":{"mode":"ANY"}},
        "generationConfig": {"maxOutputTokens":1000,"temperature":0.5,"topP":0.9,"stopSequences":["END"]}
    });
    assert_eq!(translated(ANTHROPIC, GEMINI, &body, Prefill::None), want);
}

#[test]
fn a_chat_request_is_written_as_gemini_field_by_field() {
    let body = json!({
        "model": "gpt-4.1",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role":"developer","content":"Be brief."},
            {"role":"user","content":[
                {"type":"text","text":"Weather here?"},
                {"type":"image_url","image_url":{"url":format!("data:image/webp;base64,{PNG}"),"detail":"low"}}]},
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
        "tool_choice": "auto",
        "max_tokens": 300,
        "stop": "END",
        "temperature": 2.5,
        "user": "u-1"
    });
    let want = json!({
        "contents": [
            {"role":"user","parts":[
                {"text":"Weather here?"},
                {"inlineData":{"mimeType":"image/webp","data":PNG}}]},
            {"role":"model","parts":[
                // Every call Gemini did not make carries Google's placeholder signature.
                {"functionCall":{"id":"call_1","name":"get_weather","args":{"city":"Paris"}},
                    "thoughtSignature":"skip_thought_signature_validator"},
                {"functionCall":{"id":"functions.get_time:1","name":"get_time","args":{}},
                    "thoughtSignature":"skip_thought_signature_validator"}]},
            // Chat's tool messages are the user's turn, as Gemini has it.
            {"role":"user","parts":[
                {"functionResponse":{"id":"call_1","name":"get_weather","response":{"output":"18 degrees"}}},
                {"functionResponse":{"id":"functions.get_time:1","name":"get_time","response":{"output":"noon"}}},
                {"text":"Thanks. Tomorrow?"}]}
        ],
        "systemInstruction": {"parts":[{"text":"Be brief."}]},
        "tools": [{"functionDeclarations":[
            {"name":"get_weather","parametersJsonSchema":{"type":"object","properties":{"city":{"type":"string"}}}},
            {"name":"get_time","description":"Time now"}]}],
        "toolConfig": {"functionCallingConfig":{"mode":"AUTO"}},
        // Gemini's temperature ends at 2.
        "generationConfig": {"maxOutputTokens":300,"temperature":2.0,"stopSequences":["END"]}
    });
    assert_eq!(translated(CHAT, GEMINI, &body, Prefill::None), want);
}

#[test]
fn a_call_without_an_id_and_its_response_get_one_id_the_client_can_send_back() {
    let body = json!({"contents":[
        {"role":"user","parts":[{"text":"Two cities"}]},
        {"role":"model","parts":[
            {"functionCall":{"name":"w","args":{"city":"A"}}},
            {"functionCall":{"name":"w","args":{"city":"B"}}},
            {"functionCall":{"name":"t"}}]},
        {"role":"user","parts":[
            {"functionResponse":{"name":"t","response":{"output":"noon"}}},
            {"functionResponse":{"name":"w","response":{"output":"A: 1"}}},
            {"functionResponse":{"name":"w","response":{"temp":2,"unit":"c"}}}]}]});
    let out = translated(GEMINI, ANTHROPIC, &body, Prefill::None);
    let calls = out["messages"][1]["content"].as_array().unwrap();
    let results = out["messages"][2]["content"].as_array().unwrap();
    let call_ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let result_ids: Vec<&str> = results
        .iter()
        .map(|r| r["tool_use_id"].as_str().unwrap())
        .collect();
    // Paired by name, in order, as the API pairs them.
    assert_eq!(result_ids, [call_ids[2], call_ids[0], call_ids[1]]);
    assert_ne!(call_ids[0], call_ids[1]);
    for id in &call_ids {
        assert_eq!(ids::anthropic(id), *id, "{id} fits Anthropic as it is");
        assert_eq!(ids::chat(id), *id, "{id} fits Chat as it is");
    }
    // A response that is not only `output` or `error` goes as its JSON.
    assert_eq!(results[2]["content"], r#"{"temp":2,"unit":"c"}"#);
    assert_eq!(calls[2]["input"], json!({}));
    // The same request gets the same ids: the client's next turn maps back.
    assert_eq!(translated(GEMINI, ANTHROPIC, &body, Prefill::None), out);
}

#[test]
fn the_clients_own_prefill_and_tool_choices_cross_to_gemini_in_its_form() {
    let anthropic = json!({"model":"m","max_tokens":9,"stream":true,"messages":[
        {"role":"user","content":"JSON please"},{"role":"assistant","content":"{"}]});
    let out = translated(ANTHROPIC, GEMINI, &anthropic, Prefill::Assistant);
    assert_eq!(
        out["contents"][1],
        json!({"role":"model","parts":[{"text":"{"}]})
    );
    assert!(refused_with(ANTHROPIC, GEMINI, &anthropic, Prefill::None).contains("no prefill"));
    let gemini = json!({"contents":[{"role":"user","parts":[{"text":"Hi"}]},
        {"role":"model","parts":[{"text":"Hello"}]}]});
    let out = translated(GEMINI, CHAT, &gemini, Prefill::Prefix);
    assert_eq!(
        out["messages"][1],
        json!({"role":"assistant","content":"Hello","prefix":true})
    );

    let tool = json!({"type":"function","function":{"name":"f"}});
    for (choice, mode) in [
        (json!("none"), json!({"mode":"NONE"})),
        (json!("required"), json!({"mode":"ANY"})),
        (
            json!({"type":"function","function":{"name":"f"}}),
            json!({"mode":"ANY","allowedFunctionNames":["f"]}),
        ),
    ] {
        let chat = json!({"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}],
            "tools":[tool],"tool_choice":choice});
        let out = translated(CHAT, GEMINI, &chat, Prefill::None);
        assert_eq!(out["toolConfig"]["functionCallingConfig"], mode, "{choice}");
        let back = json!({"contents":[{"parts":[{"text":"Hi"}]}],
            "tools":[{"functionDeclarations":[{"name":"f"}]}],
            "toolConfig":{"functionCallingConfig":mode}});
        assert_eq!(
            translated(GEMINI, CHAT, &back, Prefill::None)["tool_choice"],
            choice
        );
    }
}

#[test]
fn what_no_other_dialect_can_carry_is_refused_with_its_name() {
    let hi = json!([{"role":"user","parts":[{"text":"Hi"}]}]);
    let with = |key: &str, value: Value| {
        let mut body = json!({ "contents": hi });
        body[key] = value;
        body
    };
    let part = |part: Value| json!({"contents":[{"role":"user","parts":[part]}]});
    let cases = [
        (
            part(json!({"inlineData":{"mimeType":"application/pdf","data":"JVBE"}})),
            "application/pdf",
        ),
        (
            part(
                json!({"fileData":{"fileUri":"https://generativelanguage.googleapis.com/v1beta/files/abc","mimeType":"image/png"}}),
            ),
            "files Gemini stores",
        ),
        (
            part(json!({"fileData":{"fileUri":"gs://bucket/a.png","mimeType":"image/png"}})),
            "gs://",
        ),
        (
            part(json!({"executableCode":{"language":"PYTHON","code":"1"}})),
            "code execution",
        ),
        (
            part(json!({"text":"a","inlineData":{"mimeType":"image/png","data":PNG}})),
            "more than one kind",
        ),
        (
            part(json!({"functionResponse":{"name":"f","response":{"output":"x"}}})),
            "no earlier call",
        ),
        (
            part(json!({"functionResponse":{"id":"x","name":"f","response":"x"}})),
            "not an object",
        ),
        (with("tools", json!([{"googleSearch":{}}])), "googleSearch"),
        (
            with("tools", json!([{"codeExecution":{}}])),
            "codeExecution",
        ),
        (
            with("cachedContent", json!("cachedContents/1")),
            "cachedContent",
        ),
        (
            with("generationConfig", json!({"candidateCount":2})),
            "candidateCount",
        ),
        (
            with(
                "generationConfig",
                json!({"responseMimeType":"application/json"}),
            ),
            "structured output",
        ),
        (
            with(
                "generationConfig",
                json!({"responseSchema":{"type":"OBJECT"}}),
            ),
            "responseSchema",
        ),
        (
            with("generationConfig", json!({"responseModalities":["IMAGE"]})),
            "responseModalities",
        ),
        (
            with("generationConfig", json!({"responseLogprobs":true})),
            "responseLogprobs",
        ),
        (
            with(
                "toolConfig",
                json!({"functionCallingConfig":{"mode":"VALIDATED"}}),
            ),
            "VALIDATED",
        ),
        (
            with(
                "toolConfig",
                json!({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["a","b"]}}),
            ),
            "allowedFunctionNames",
        ),
        (
            json!({"contents":[{"role":"function","parts":[{"text":"x"}]}]}),
            "role `function`",
        ),
        (
            with(
                "systemInstruction",
                json!({"parts":[{"inlineData":{"mimeType":"image/png","data":PNG}}]}),
            ),
            "not text",
        ),
        (with("speechConfig", json!({})), "speechConfig"),
    ];
    for (body, why) in cases {
        for to in [ANTHROPIC, CHAT] {
            let got = refused(GEMINI, to, &body);
            assert!(got.contains(why), "{body}: {got}");
        }
    }

    // And what Gemini has no form for, written.
    let anthropic = |content: Value| json!({"model":"m","max_tokens":9,"stream":true,"messages":[{"role":"user","content":content}]});
    let cases = [
        (
            anthropic(json!([{"type":"image","source":{"type":"url","url":"https://e/pic"}}])),
            "media type",
        ),
        (
            json!({"model":"m","max_tokens":9,"stream":true,"messages":[{"role":"user","content":[
                {"type":"tool_result","tool_use_id":"t","content":"x"}]}]}),
            "not in the conversation",
        ),
        (
            json!({"model":"m","max_tokens":9,"stream":true,"messages":[
                {"role":"user","content":"Hi"},
                {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[
                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG}}]}]}]}),
            "image in a tool result",
        ),
        (
            json!({"model":"m","max_tokens":9,"stream":true,"stop_sequences":["1","2","3","4","5","6"],
                "messages":[{"role":"user","content":"Hi"}]}),
            "at most 5",
        ),
    ];
    for (body, why) in cases {
        let got = refused(ANTHROPIC, GEMINI, &body);
        assert!(got.contains(why), "{body}: {got}");
    }
}

#[test]
fn what_only_changes_how_the_answer_is_made_is_dropped() {
    let body = json!({"contents":[{"parts":[{"text":"Hi"},{"thoughtSignature":"c2ln"}]}],
        "safetySettings":[],"labels":{"team":"a"},
        "generationConfig":{"topK":3,"seed":1,"presencePenalty":0.1,"frequency_penalty":0.2,
            "thinking_config":{"thinkingBudget":0},"mediaResolution":"MEDIA_RESOLUTION_LOW",
            "responseMimeType":"text/plain","responseModalities":["TEXT"]}});
    assert_eq!(
        translated(GEMINI, ANTHROPIC, &body, Prefill::None),
        json!({"model":"target","max_tokens":crate::translate::anthropic::DEFAULT_MAX_TOKENS,
            "messages":[{"role":"user","content":"Hi"}],"stream":true})
    );
}

#[test]
fn the_endpoint_to_and_from_gemini_names_the_model_in_gemini_s_path() {
    let mut request = http::Request::post("http://h/v1/messages")
        .body(())
        .unwrap();
    set_endpoint(&mut request, ANTHROPIC, GEMINI, "gemini-2.5/flash");
    assert_eq!(
        request.uri(),
        "http://h/v1beta/models/gemini-2.5%2Fflash:streamGenerateContent?alt=sse",
        "the model is one segment, encoded"
    );
    set_endpoint(&mut request, GEMINI, CHAT, "gpt-4.1");
    assert_eq!(request.uri(), "http://h/v1/chat/completions");
    let mut request = http::Request::post("/v1/models/primary:streamGenerateContent?alt=sse")
        .body(())
        .unwrap();
    set_endpoint(&mut request, GEMINI, ANTHROPIC, "claude");
    assert_eq!(request.uri(), "/v1/messages");
}

#[test]
fn a_gemini_request_cut_anywhere_or_of_the_wrong_shape_is_refused_without_a_panic() {
    let bytes = gemini_request().to_string().into_bytes();
    for end in 0..bytes.len() {
        let cut = translate(GEMINI, CHAT, &bytes[..end], "t", Prefill::None);
        assert!(cut.is_err(), "cut at {end} read as whole");
    }
    // Every value replaced by one of another type.
    let whole = gemini_request();
    let mut paths = Vec::new();
    collect(&whole, &mut Vec::new(), &mut paths);
    for path in paths {
        for wrong in [json!(null), json!(1), json!("x"), json!([]), json!({})] {
            let mut body = whole.clone();
            *pointer(&mut body, &path) = wrong;
            let _ = translate(
                GEMINI,
                ANTHROPIC,
                body.to_string().as_bytes(),
                "t",
                Prefill::None,
            );
        }
    }
    // A schema nested past what the reader walks, and past what JSON is read at all.
    for (levels, why) in [(40, "too deep"), (200, "recursion limit")] {
        let mut schema = json!({"type":"STRING"});
        for _ in 0..levels {
            schema = json!({"type":"OBJECT","properties":{"a":schema}});
        }
        let deep = json!({"contents":[{"parts":[{"text":"Hi"}]}],
            "tools":[{"functionDeclarations":[{"name":"f","parameters":schema}]}]});
        let got = refused(GEMINI, CHAT, &deep);
        assert!(got.contains(why), "{levels}: {got}");
    }
}

fn collect(value: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => Vec::new(),
    };
    for (key, child) in children {
        at.push(key);
        collect(child, at, out);
        at.pop();
    }
}

fn pointer<'a>(value: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(value, |v, key| match v {
        Value::Array(items) => &mut items[key.parse::<usize>().expect("an index")],
        other => &mut other[key.as_str()],
    })
}
