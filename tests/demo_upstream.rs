//! The demo upstream's own rules, asked directly (no network, no gateway): the fault script in
//! every wire format, continuation and prefill per format, the providers' request rules, and
//! the shapes each OpenAI-compatible server takes. `conformance/run.py --direct` proves the
//! same streams are accepted by the official SDKs.

#[allow(dead_code)]
#[path = "../examples/gateway/demo.rs"]
mod demo;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use demo::{Demo, TEXT};

const VERTEX: &str =
    "/v1/projects/p/locations/global/publishers/anthropic/models/demo-claude-primary:streamRawPredict";
const GEMINI: &str = "/v1beta/models/demo-gemini-primary:streamGenerateContent?alt=sse";
const PARTIAL: &str = "Streams break in three ordinary ways";

struct Reply {
    status: StatusCode,
    body: String,
}

impl Reply {
    /// The data of each SSE event, in order.
    fn data(&self) -> Vec<&str> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

async fn ask(path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    let mut req = Request::post(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a request");
    let res = Demo::new(Duration::ZERO).answer(req).await;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|c| String::from_utf8(c.to_bytes().to_vec()).expect("UTF-8"))
        .unwrap_or_else(|e| format!("(reset: {e})"));
    Reply { status, body }
}

/// One format's streaming request: its name, path, credentials and body.
type Format = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Value,
);

/// A streaming request for the canned answer in each format, with its credentials.
fn formats() -> Vec<Format> {
    let messages = json!([{"role":"user","content":"Why?"}]);
    vec![
        (
            "messages",
            "/v1/messages",
            vec![],
            json!({"model":"demo-claude-primary","max_tokens":100,"stream":true,"messages":messages}),
        ),
        (
            "vertex",
            VERTEX,
            vec![("authorization", "Bearer token")],
            json!({"anthropic_version":"vertex-2023-10-16","max_tokens":100,"stream":true,"messages":messages}),
        ),
        (
            "chat",
            "/v1/chat/completions",
            vec![],
            json!({"model":"demo-gpt-primary","stream":true,"messages":messages}),
        ),
        (
            "responses",
            "/v1/responses",
            vec![],
            json!({"model":"demo-gpt-primary","stream":true,"input":"Why?"}),
        ),
        (
            "gemini",
            GEMINI,
            vec![("x-goog-api-key", "key")],
            json!({"contents":[{"role":"user","parts":[{"text":"Why?"}]}]}),
        ),
    ]
}

/// The text a format's stream carries, joined.
fn text_of(format: &str, reply: &Reply) -> String {
    let mut text = String::new();
    for data in reply.data() {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let piece = match format {
            "messages" | "vertex" => &v["delta"]["text"],
            "chat" => &v["choices"][0]["delta"]["content"],
            "responses" if v["type"] == "response.output_text.delta" => &v["delta"],
            "gemini" => &v["candidates"][0]["content"]["parts"][0]["text"],
            _ => &Value::Null,
        };
        text.push_str(piece.as_str().unwrap_or_default());
    }
    text
}

#[tokio::test]
async fn every_format_streams_the_whole_canned_answer_when_nothing_fails() {
    for (format, path, mut headers, body) in formats() {
        headers.push(("x-demo-fault", "none"));
        let reply = ask(path, &headers, body).await;
        assert_eq!(reply.status, 200, "{format}: {}", reply.body);
        assert_eq!(text_of(format, &reply), TEXT, "{format}");
    }
}

#[tokio::test]
async fn a_fault_at_n_sends_n_events_then_the_formats_own_in_band_error() {
    for (format, path, mut headers, body) in formats() {
        headers.push(("x-demo-fault", "error@3"));
        let reply = ask(path, &headers, body).await;
        let data = reply.data();
        assert_eq!(data.len(), 4, "{format}: {}", reply.body);
        let error: Value = serde_json::from_str(data[3]).unwrap();
        match format {
            "messages" | "vertex" => assert_eq!(error["error"]["type"], "overloaded_error"),
            "chat" => assert_eq!(error["error"]["type"], "server_error"),
            "responses" => {
                assert_eq!(error["type"], "error");
                assert_eq!(error["sequence_number"], 3, "numbered after the 3 sent");
                assert_eq!(error["error"]["code"], "server_error");
            }
            _ => {
                assert_eq!(error["error"]["code"], 503);
                assert_eq!(error["error"]["status"], "UNAVAILABLE");
                assert!(
                    data[3].starts_with(r#"{"error": "#),
                    "error first: {}",
                    data[3]
                );
            }
        }
    }
}

#[tokio::test]
async fn the_terminal_event_is_never_sent_however_late_the_fault() {
    for (format, path, mut headers, body) in formats() {
        let mut whole = headers.clone();
        whole.push(("x-demo-fault", "none"));
        let whole = ask(path, &whole, body.clone()).await;
        headers.push(("x-demo-fault", "truncate@100000"));
        let cut = ask(path, &headers, body).await;
        assert_eq!(
            cut.data().len() + 1,
            whole.data().len(),
            "{format}: one event short"
        );
        let last = cut.data().last().map(|d| d.to_string()).unwrap_or_default();
        for terminal in [
            "message_stop",
            "[DONE]",
            "response.completed",
            "finishReason",
        ] {
            assert!(!last.contains(terminal), "{format}: {last}");
        }
    }
}

#[tokio::test]
async fn response_failed_is_scripted_for_the_responses_api_only() {
    let body = json!({"model":"demo-gpt-primary","stream":true,"input":"Why?"});
    let reply = ask(
        "/v1/responses",
        &[("x-demo-fault", "failed:rate_limit_exceeded@2")],
        body,
    )
    .await;
    let last: Value = serde_json::from_str(reply.data()[2]).unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["sequence_number"], 2);
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "rate_limit_exceeded");

    let body = json!({"model":"demo-claude-primary","max_tokens":10,"stream":true,"messages":[]});
    let reply = ask("/v1/messages", &[("x-demo-fault", "failed@2")], body).await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("Responses API only"), "{}", reply.body);
}

#[tokio::test]
async fn claude_on_vertex_wants_a_bearer_token_no_model_and_a_known_anthropic_version() {
    let bearer = [("authorization", "Bearer token"), ("x-demo-fault", "none")];
    let messages = json!([{"role":"user","content":"Why?"}]);
    for version in ["vertex-2023-10-16", "2026-10-21"] {
        let body = json!({"anthropic_version":version,"max_tokens":10,"messages":messages});
        let reply = ask(VERTEX, &bearer, body).await;
        assert_eq!(reply.status, 200, "{version}: {}", reply.body);
        assert_eq!(reply.json()["id"], "msg_vrtx_demo");
    }
    let good = json!({"anthropic_version":"vertex-2023-10-16","max_tokens":10,"messages":messages});
    let reply = ask(VERTEX, &[], good.clone()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"]["status"], "UNAUTHENTICATED");
    let cases = [
        (
            json!({"model":"demo-claude-primary"}),
            "model: Extra inputs are not permitted",
        ),
        (
            json!({"anthropic_version":null}),
            "anthropic_version: Field required",
        ),
        (
            json!({"anthropic_version":"2023-06-01"}),
            "not supported on Vertex AI",
        ),
    ];
    for (change, message) in cases {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        let reply = ask(VERTEX, &bearer, body).await;
        assert_eq!(reply.status, 400, "{message}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
        assert!(reply.body.contains(message), "{}", reply.body);
    }
}

#[tokio::test]
async fn a_model_in_the_path_is_matched_as_written_never_decoded() {
    let bearer = [("authorization", "Bearer token")];
    for path in [
        "/v1/projects/p/locations/global/publishers/anthropic/models/demo-claude-primary%2F..:rawPredict",
        "/v1/projects/p/locations/global/publishers/anthropic/models/../demo-claude-primary:rawPredict",
        "/v1/projects/p/locations/global/publishers/google/models/demo-claude-primary:rawPredict",
    ] {
        let body = json!({"anthropic_version":"vertex-2023-10-16","max_tokens":10,"messages":[]});
        let reply = ask(path, &bearer, body).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.json()["error"]["status"], "NOT_FOUND");
    }
    let key = [("x-goog-api-key", "key")];
    for path in [
        "/v1beta/models/demo-gemini-primary/../x:generateContent",
        "/v1beta/models/demo-gemini-primary%3A:generateContent",
        "/v1beta/models/demo-claude-primary:generateContent",
    ] {
        let reply = ask(path, &key, json!({"contents":[]})).await;
        assert_eq!(reply.status, 404, "{path}");
    }
}

#[tokio::test]
async fn gemini_wants_an_api_key_and_server_sent_events() {
    let body = json!({"contents":[{"role":"user","parts":[{"text":"Why?"}]}]});
    let reply = ask(GEMINI, &[], body.clone()).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"]["status"], "PERMISSION_DENIED");
    let no_sse = "/v1beta/models/demo-gemini-primary:streamGenerateContent";
    let reply = ask(no_sse, &[("x-goog-api-key", "key")], body).await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("alt=sse"));
}

#[tokio::test]
async fn gemini_continues_a_trailing_model_turn_only_where_the_model_accepts_it() {
    let key = [("x-goog-api-key", "key"), ("x-demo-fault", "none")];
    let user = json!({"role":"user","parts":[{"text":"Why?"}]});
    let model = json!({"role":"model","parts":[{"text":PARTIAL}]});
    let instruction = json!({"role":"user","parts":[{"text":"Continue."}]});
    let rest = &TEXT[PARTIAL.len()..];

    let prefill = json!({"contents":[user, model]});
    let reply = ask(GEMINI, &key, prefill.clone()).await;
    assert_eq!(text_of("gemini", &reply), rest);

    let rejecting = "/v1beta/models/demo-gemini-no-prefill:streamGenerateContent?alt=sse";
    let reply = ask(rejecting, &key, prefill).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        json!({"error":{"code":400,"message":demo::GEMINI_MODEL_TURN_400,"status":"INVALID_ARGUMENT"}})
    );

    let reply = ask(
        rejecting,
        &key,
        json!({"contents":[user, model, instruction]}),
    )
    .await;
    assert_eq!(text_of("gemini", &reply), rest);
}

#[tokio::test]
async fn responses_continue_after_the_partial_answer_and_instruction_but_never_from_a_trailing_assistant_item(
) {
    let fault = [("x-demo-fault", "none")];
    let user = json!({"role":"user","content":"Why?"});
    let partial = json!({"role":"assistant","content":PARTIAL});
    let instruction = json!({"role":"user","content":[{"type":"input_text","text":"Continue."}]});
    let body = |input: Value| json!({"model":"demo-gpt-no-prefix","stream":true,"input":input});

    let reply = ask(
        "/v1/responses",
        &fault,
        body(json!([user, partial, instruction])),
    )
    .await;
    assert_eq!(text_of("responses", &reply), &TEXT[PARTIAL.len()..]);
    let output_text = json!({"type":"message","role":"assistant","content":[{"type":"output_text","text":PARTIAL}]});
    let reply = ask(
        "/v1/responses",
        &fault,
        body(json!([user, output_text, instruction])),
    )
    .await;
    assert_eq!(text_of("responses", &reply), &TEXT[PARTIAL.len()..]);

    let reply = ask("/v1/responses", &fault, body(json!([user, partial]))).await;
    assert_eq!(text_of("responses", &reply), TEXT, "no prefill in this API");
}

#[tokio::test]
async fn a_previous_response_id_is_known_only_to_the_model_that_gave_it() {
    let fault = [("x-demo-fault", "none")];
    let own = json!({"model":"demo-gpt-primary","input":"Why?","previous_response_id":"resp_demo_demo-gpt-primary"});
    assert_eq!(ask("/v1/responses", &fault, own).await.status, 200);
    let other = json!({"model":"demo-gpt-prefix","input":"Why?","previous_response_id":"resp_demo_demo-gpt-primary"});
    let reply = ask("/v1/responses", &fault, other).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "previous_response_not_found");

    let small = json!({"model":"demo-gpt-primary","input":"Why?","max_output_tokens":15});
    let reply = ask("/v1/responses", &fault, small).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["param"], "max_output_tokens");
}

async fn chat(server: &str, answer: &str, body: Value) -> Reply {
    let mut request = json!({"model":"demo-gpt-primary","stream":true,"messages":[{"role":"user","content":"Why?"}]});
    for (k, v) in body.as_object().unwrap() {
        request[k] = v.clone();
    }
    let headers = [
        ("x-demo-server", server),
        ("x-demo-answer", answer),
        ("x-demo-fault", "none"),
    ];
    ask("/v1/chat/completions", &headers, request).await
}

#[tokio::test]
async fn each_openai_compatible_server_streams_its_own_shapes() {
    let usage = json!({"stream_options":{"include_usage":true}});

    let framed = chat("framed", "text", json!({})).await;
    assert!(framed
        .body
        .starts_with("id: 0\r\ndata: {\"id\":\"chatcmpl-demo\",\"object\""));
    assert!(!framed.body.replace("\r\n", "").contains('\n'), "CRLF only");

    let compat = chat("gemini-compat", "parallel-tools", json!({})).await;
    assert!(!compat.body.contains("[DONE]"));
    let calls: Vec<Value> = compat
        .data()
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 2, "each call whole in one delta");
    assert!(calls.iter().all(|c| c.get("index").is_none()));

    let vllm = chat("vllm", "thinking", usage.clone()).await;
    let chunks: Vec<Value> = vllm
        .data()
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let finish = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop")
        .unwrap();
    assert_eq!(
        finish["usage"]["prompt_tokens"], 24,
        "usage on the finish chunk"
    );
    assert!(
        chunks.iter().all(|c| c["choices"] != json!([])),
        "no usage chunk of its own"
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["delta"]["reasoning"].is_string()));

    let deepseek = chat("deepseek", "thinking", json!({})).await;
    assert!(deepseek.body.starts_with(": keep-alive\n\n"));
    assert!(deepseek.body.contains(r#""reasoning_content":"#));

    let openrouter = chat("openrouter", "text", json!({})).await;
    assert!(openrouter
        .body
        .starts_with(": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n"));

    let azure = chat("azure", "text", json!({})).await;
    let first: Value = serde_json::from_str(azure.data()[0]).unwrap();
    assert_eq!(
        (first["choices"].clone(), first["id"].clone()),
        (json!([]), json!(""))
    );
    assert!(first["prompt_filter_results"].is_array());

    let refusal = chat("openai", "refusal", json!({})).await;
    assert!(refusal.body.contains(r#""refusal":"I'm "#));

    let two = chat("openai", "text", json!({"n":2})).await;
    let indices: Vec<i64> = two
        .data()
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["index"].as_i64())
        .take(4)
        .collect();
    assert_eq!(indices, [0, 1, 0, 1], "choices interleaved");
}

#[tokio::test]
async fn each_servers_in_band_error_has_its_own_shape() {
    let body = json!({"model":"demo-gpt-primary","stream":true,"messages":[]});
    let error = |server: &'static str, fault: &'static str| {
        let body = body.clone();
        async move {
            let headers = [("x-demo-server", server), ("x-demo-fault", fault)];
            ask("/v1/chat/completions", &headers, body).await
        }
    };
    let vllm = error("vllm", "error:invalid_request_error@2").await;
    let last: Value = serde_json::from_str(vllm.data()[2]).unwrap();
    assert_eq!(
        (last["object"].as_str(), last["code"].as_i64()),
        (Some("error"), Some(400))
    );

    let openrouter = error("openrouter", "error@2").await;
    let data = openrouter.data();
    let chunk: Value = serde_json::from_str(data[2]).unwrap();
    assert_eq!(chunk["choices"][0]["finish_reason"], "error");
    assert_eq!(chunk["error"]["code"], 500);
    assert_eq!(data[3], "[DONE]");
}

#[tokio::test]
async fn x_demo_server_picks_a_server_per_model_and_names_what_is_wrong() {
    let header = "vllm, demo-gpt-prefix=deepseek";
    let body = |model: &str| json!({"model":model,"stream":true,"messages":[]});
    let headers = [("x-demo-server", header), ("x-demo-fault", "none")];
    let primary = ask("/v1/chat/completions", &headers, body("demo-gpt-primary")).await;
    assert!(
        primary.body.contains(r#""stop_reason":null"#),
        "vLLM's choice keys"
    );
    // The first item that applies wins: `vllm` applies to every model.
    let headers = [
        ("x-demo-server", "demo-gpt-prefix=deepseek, vllm"),
        ("x-demo-fault", "none"),
    ];
    let prefix = ask("/v1/chat/completions", &headers, body("demo-gpt-prefix")).await;
    assert!(prefix.body.starts_with(": keep-alive"), "DeepSeek's");

    for (value, says) in [
        ("nope", "unknown server `nope`"),
        ("nobody=vllm", "no demo model is named `nobody`"),
    ] {
        let reply = ask(
            "/v1/chat/completions",
            &[("x-demo-server", value)],
            body("demo-gpt-primary"),
        )
        .await;
        assert_eq!(reply.status, 400);
        assert!(reply.body.contains(says), "{}", reply.body);
    }
    let reply = ask(
        "/v1/chat/completions",
        &[("x-demo-answer", "thinking")],
        body("demo-gpt-primary"),
    )
    .await;
    assert_eq!(reply.status, 400, "the default server streams no reasoning");
}
