//! The example gateway end to end: the gateway on an ephemeral loopback port in front of the
//! embedded demo upstream, driven over real HTTP by a hyper-util client, in both dialects.
//!
//! The demo's pacing is off, so streams arrive as fast as loopback allows; the only timer that
//! matters is the idle timeout of the stall cases, and every assertion holds whenever it fires.

#[allow(dead_code)]
#[path = "../examples/gateway/admin.rs"]
mod admin;
#[allow(dead_code)]
#[path = "../examples/gateway/budget.rs"]
mod budget;
#[allow(dead_code)]
#[path = "../examples/gateway/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../examples/gateway/demo.rs"]
mod demo;
#[allow(dead_code)]
#[path = "../examples/gateway/proxy.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "../examples/gateway/server.rs"]
mod server;
mod support;
#[allow(dead_code)]
#[path = "../examples/gateway/token.rs"]
mod token;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use demo::{
    Demo, CLAUDE_NO_PREFILL, CLAUDE_PREFILL, CLAUDE_PRIMARY, GPT_NO_PREFIX, GPT_PREFIX, GPT_PRIMARY,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Anthropic,
    OpenAi,
}

const WIRES: [Wire; 2] = [Wire::Anthropic, Wire::OpenAi];

impl Wire {
    fn path(self) -> &'static str {
        match self {
            Wire::Anthropic => "/v1/messages",
            Wire::OpenAi => "/v1/chat/completions",
        }
    }

    fn primary(self) -> &'static str {
        match self {
            Wire::Anthropic => CLAUDE_PRIMARY,
            Wire::OpenAi => GPT_PRIMARY,
        }
    }

    /// The fallback that rejects prefill, and the one that accepts it.
    fn fallbacks(self) -> (&'static str, &'static str) {
        match self {
            Wire::Anthropic => (CLAUDE_NO_PREFILL, CLAUDE_PREFILL),
            Wire::OpenAi => (GPT_NO_PREFIX, GPT_PREFIX),
        }
    }

    fn request(self, model: &str, stream: bool) -> Value {
        let messages = json!([{"role":"user","content":"Why do streams break?"}]);
        match self {
            Wire::Anthropic => {
                json!({"model":model,"max_tokens":1024,"stream":stream,"messages":messages})
            }
            Wire::OpenAi if stream => {
                json!({"model":model,"stream":true,"stream_options":{"include_usage":true},"messages":messages})
            }
            Wire::OpenAi => json!({"model":model,"messages":messages}),
        }
    }

    fn check(self, bytes: &[u8]) -> Result<support::check::Answer, String> {
        let dialect = match self {
            Wire::Anthropic => support::Dialect::Anthropic,
            Wire::OpenAi => support::Dialect::OpenAi,
        };
        support::check(dialect, self == Wire::OpenAi, bytes)
    }
}

/// A gateway and its demo upstream, both on ephemeral loopback ports.
struct Running {
    gateway: SocketAddr,
    demo: Demo,
}

/// The demo's gateway config with a short idle timeout, so that stalls are found quickly.
fn demo_config(upstream: SocketAddr) -> String {
    demo::gateway_config(upstream, "127.0.0.1:0".parse().unwrap())
        .replace("idle_timeout_ms = 2000", "idle_timeout_ms = 300")
}

async fn start() -> Running {
    start_with(demo_config, &|_| None).await
}

async fn start_with(
    config: impl FnOnce(SocketAddr) -> String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Running {
    let demo = Demo::new(Duration::ZERO);
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(demo.clone().serve(upstream));
    let config = config::parse(&config(upstream_addr), env).expect("a valid config");
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let gateway = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        proxy::build(&config),
        config.server.clone(),
        std::future::pending(),
    ));
    Running { gateway, demo }
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: Result<Bytes, String>,
}

impl Reply {
    fn bytes(&self) -> &Bytes {
        self.body.as_ref().expect("a body that ended cleanly")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(self.bytes()).expect("a JSON body")
    }

    /// Asserts the reply is a 200 stream of `dialect`'s that holds the demo's whole answer
    /// and no error.
    fn assert_demo_answer(&self, dialect: support::Dialect) {
        assert_eq!(
            self.status,
            200,
            "{}",
            String::from_utf8_lossy(self.bytes())
        );
        let answer = support::check(dialect, true, self.bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.error, None);
        assert_eq!(answer.text, demo::TEXT);
    }
}

impl Running {
    async fn send(&self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = Request::post(format!("http://{}{path}", self.gateway))
            .header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .expect("the gateway answers");
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = res
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| e.to_string());
        Reply {
            status,
            content_type,
            body,
        }
    }

    async fn ask(&self, wire: Wire, fault: Option<&str>) -> Reply {
        let mut headers = Vec::new();
        if let Some(fault) = fault {
            headers.push(("x-demo-fault", fault));
        }
        let body = wire.request(wire.primary(), true).to_string();
        self.send(wire.path(), &headers, body).await
    }

    /// The calls the upstream received for `model`.
    fn calls_to(&self, model: &str) -> Vec<demo::Call> {
        self.demo
            .calls()
            .into_iter()
            .filter(|c| c.model == model)
            .collect()
    }

    /// The one call the upstream received for `model`, asserted to be at a path ending with
    /// `path_end`.
    fn one_call_to(&self, model: &str, path_end: &str) -> demo::Call {
        let mut calls = self.calls_to(model);
        assert_eq!(calls.len(), 1, "{model}");
        let call = calls.remove(0);
        assert!(call.path.ends_with(path_end), "{}", call.path);
        call
    }
}

#[tokio::test]
async fn a_stream_that_breaks_on_the_primary_completes_on_a_fallback_in_both_dialects() {
    let gw = start().await;
    for wire in WIRES {
        let reply = gw.ask(wire, None).await;
        assert_eq!(reply.status, 200, "{wire:?}");
        assert!(reply.content_type.starts_with("text/event-stream"));
        let answer = wire
            .check(reply.bytes())
            .unwrap_or_else(|e| panic!("{wire:?}: {e}"));
        assert_eq!(answer.error, None, "{wire:?}");
        assert_eq!(answer.text, demo::TEXT, "{wire:?}");
        assert_eq!(gw.calls_to(wire.primary()).len(), 1, "{wire:?}");
    }
    // The first fallbacks: Anthropic's rejects prefill (so it got the instruction), OpenAI's
    // accepts `prefix` (so it got one).
    let claude = gw.calls_to(CLAUDE_NO_PREFILL);
    assert!(!claude.is_empty() && claude.iter().all(|c| !c.ends_with_assistant()));
    let messages = claude[0].body["messages"].as_array().unwrap().clone();
    assert_eq!(
        messages.len(),
        3,
        "user, partial answer, instruction: {messages:?}"
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[2]["role"], "user");
    let gpt = gw.calls_to(GPT_PREFIX);
    let last = gpt[0].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["role"].as_str(), last["prefix"].as_bool()),
        (Some("assistant"), Some(true))
    );
}

#[tokio::test]
async fn every_failure_class_on_the_primary_is_recovered_in_both_dialects() {
    let gw = start().await;
    for wire in WIRES {
        for fault in ["reset@6", "stall@6", "error@6", "truncate@6", "529", "503"] {
            let reply = gw.ask(wire, Some(fault)).await;
            assert_eq!(reply.status, 200, "{wire:?} {fault}");
            let answer = wire
                .check(reply.bytes())
                .unwrap_or_else(|e| panic!("{wire:?} {fault}: {e}"));
            assert_eq!(answer.error, None, "{wire:?} {fault}");
            assert_eq!(answer.text, demo::TEXT, "{wire:?} {fault}");
        }
    }
}

#[tokio::test]
async fn tool_calls_and_thinking_survive_a_failure_whole() {
    let gw = start().await;
    let cases = [
        (Wire::Anthropic, "tool", 1),
        (Wire::Anthropic, "parallel-tools", 2),
        (Wire::OpenAi, "tool", 1),
        (Wire::OpenAi, "parallel-tools", 2),
    ];
    for (wire, shape, tools) in cases {
        for fault in ["reset@4", "reset@9"] {
            let headers = [("x-demo-answer", shape), ("x-demo-fault", fault)];
            let body = wire.request(wire.primary(), true).to_string();
            let reply = gw.send(wire.path(), &headers, body).await;
            let answer = wire
                .check(reply.bytes())
                .unwrap_or_else(|e| panic!("{wire:?} {shape} {fault}: {e}"));
            assert_eq!(answer.error, None, "{wire:?} {shape} {fault}");
            assert_eq!(answer.tools.len(), tools, "{wire:?} {shape} {fault}");
            assert_eq!(answer.tools[0].1, json!({"city":"Paris","unit":"celsius"}));
        }
    }
    let mut body = Wire::Anthropic.request(CLAUDE_PRIMARY, true);
    body["thinking"] = json!({"type":"enabled","budget_tokens":1024});
    let headers = [("x-demo-answer", "thinking"), ("x-demo-fault", "reset@20")];
    let reply = gw.send("/v1/messages", &headers, body.to_string()).await;
    let answer = Wire::Anthropic.check(reply.bytes()).unwrap();
    assert!(answer.thinking);
    assert_eq!(answer.text, demo::TEXT);
}

#[tokio::test]
async fn prefill_is_never_sent_to_a_model_that_rejects_it() {
    let gw = start().await;
    for wire in WIRES {
        let (rejects, accepts) = wire.fallbacks();
        // Each fallback in turn is first: the other one fails before its stream.
        for fault in [
            format!("reset@8, {accepts}=529"),
            format!("reset@8, {rejects}=529"),
        ] {
            let reply = gw.ask(wire, Some(&fault)).await;
            let answer = wire.check(reply.bytes()).unwrap();
            assert_eq!(answer.text, demo::TEXT, "{wire:?} {fault}");
        }
        let rejecting = gw.calls_to(rejects);
        assert!(
            !rejecting.is_empty(),
            "{wire:?}: the rejecting fallback was tried"
        );
        assert!(
            rejecting.iter().all(|c| !c.ends_with_assistant()),
            "{wire:?}: a prefill reached {rejects}"
        );
        assert!(
            gw.calls_to(accepts).iter().any(|c| c.ends_with_assistant()),
            "{wire:?}: {accepts} accepts prefill and got one"
        );
    }
}

#[tokio::test]
async fn when_every_attempt_fails_the_stream_ends_with_an_error_naming_the_first_failure() {
    let gw = start().await;
    for wire in WIRES {
        let reply = gw.ask(wire, Some("reset@8, fallbacks=reset@3")).await;
        assert_eq!(reply.status, 200);
        let answer = wire.check(reply.bytes()).unwrap();
        let error = answer.error.expect("an error event");
        assert!(error.contains("stream broken"), "{wire:?}: {error}");
        assert!(demo::TEXT.starts_with(&answer.text));
    }
}

#[tokio::test]
async fn a_client_error_from_the_primary_is_passed_on_and_not_retried() {
    let gw = start().await;
    for wire in WIRES {
        let reply = gw.ask(wire, Some("400")).await;
        assert_eq!(reply.status, 400, "{wire:?}");
        assert!(reply.json().to_string().contains("invalid_request_error"));
        assert_eq!(gw.calls_to(wire.primary()).len(), 1, "{wire:?}");
        let (a, b) = wire.fallbacks();
        assert!(
            gw.calls_to(a).is_empty() && gw.calls_to(b).is_empty(),
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn the_opt_out_header_lets_the_failure_reach_the_client() {
    let gw = start().await;
    for wire in WIRES {
        let body = wire.request(wire.primary(), true).to_string();
        let reply = gw
            .send(
                wire.path(),
                &[("x-midstream-fallback", "off"), ("x-demo-fault", "reset@8")],
                body,
            )
            .await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.body.is_err(),
            "{wire:?}: the client sees the broken body"
        );
        let (a, b) = wire.fallbacks();
        assert!(
            gw.calls_to(a).is_empty() && gw.calls_to(b).is_empty(),
            "{wire:?}"
        );
        let call = &gw.calls_to(wire.primary())[0];
        assert!(!call.headers.contains_key("x-midstream-fallback"));
    }
}

#[tokio::test]
async fn non_streaming_requests_are_proxied_and_restarted_on_a_retryable_status() {
    let gw = start().await;
    for (wire, fault) in [
        (Wire::Anthropic, "none"),
        (Wire::OpenAi, "none"),
        (Wire::Anthropic, "529"),
        (Wire::OpenAi, "503"),
    ] {
        let body = wire.request(wire.primary(), false).to_string();
        let reply = gw.send(wire.path(), &[("x-demo-fault", fault)], body).await;
        assert_eq!(reply.status, 200, "{wire:?} {fault}");
        let json = reply.json();
        let text = match wire {
            Wire::Anthropic => &json["content"][0]["text"],
            Wire::OpenAi => &json["choices"][0]["message"]["content"],
        };
        assert_eq!(text, demo::TEXT, "{wire:?} {fault}");
    }
}

#[tokio::test]
async fn an_unknown_model_is_404_in_the_clients_dialect() {
    let gw = start().await;
    let body = Wire::Anthropic
        .request("claude-nonexistent", true)
        .to_string();
    let reply = gw.send("/v1/messages", &[], body).await;
    assert_eq!(reply.status, 404);
    let json = reply.json();
    assert_eq!(json["type"], "error");
    assert_eq!(json["error"]["type"], "not_found_error");
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("claude-nonexistent"));

    let body = Wire::OpenAi.request("gpt-nonexistent", true).to_string();
    let reply = gw.send("/v1/chat/completions", &[], body).await;
    assert_eq!(reply.status, 404);
    let json = reply.json();
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert_eq!(json["error"]["code"], "model_not_found");
    assert_eq!(json["error"]["param"], Value::Null);
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-nonexistent"));

    // A model of the other dialect is not found at this endpoint either, and the answer does
    // not say where it is: that would confirm the name exists.
    let body = Wire::OpenAi.request(CLAUDE_PRIMARY, true).to_string();
    let reply = gw.send("/v1/chat/completions", &[], body).await;
    assert_eq!(reply.status, 404);
    let json = reply.json();
    assert_eq!(json["error"]["code"], "model_not_found");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(!message.contains("/v1/messages"), "{message}");
    assert!(!message.contains("Anthropic"), "{message}");
    assert!(gw.demo.calls().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn malformed_json_is_400_in_the_clients_dialect() {
    let gw = start().await;
    for (wire, body) in [
        (
            Wire::Anthropic,
            r#"{"model": "demo-claude-primary", "messages": ["#,
        ),
        (Wire::OpenAi, "not json"),
        (Wire::OpenAi, r#"{"messages":[]}"#),
    ] {
        let reply = gw.send(wire.path(), &[], body).await;
        assert_eq!(reply.status, 400, "{wire:?} {body}");
        let json = reply.json();
        match wire {
            Wire::Anthropic => {
                assert_eq!(json["type"], "error");
                assert_eq!(json["error"]["type"], "invalid_request_error");
            }
            Wire::OpenAi => assert_eq!(json["error"]["type"], "invalid_request_error"),
        }
    }
    assert!(gw.demo.calls().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn the_clients_credentials_never_reach_the_upstream_and_each_upstream_gets_its_own_key() {
    let config = |addr: SocketAddr| {
        demo_config(addr)
            // The first Anthropic upstream: the API (the Vertex one takes a token).
            .replacen(
                "dialect = \"anthropic\"",
                "dialect = \"anthropic\"\napi_key_env = \"TEST_ANTHROPIC_KEY\"",
                1,
            )
            .replace(
                "dialect = \"openai-chat\"",
                "dialect = \"openai-chat\"\napi_key_env = \"TEST_OPENAI_KEY\"",
            )
            + &format!(
                "\n[[models]]\nname = \"house-model\"\nupstream = \"demo-anthropic\"\nupstream_model = \"{CLAUDE_PRIMARY}\"\nfallbacks = [\"{CLAUDE_PREFILL}\"]\n"
            )
    };
    let env = |var: &str| match var {
        "TEST_ANTHROPIC_KEY" => Some("anthropic-key".to_owned()),
        "TEST_OPENAI_KEY" => Some("openai-key".to_owned()),
        _ => None,
    };
    let gw = start_with(config, &env).await;
    let client_headers = [
        ("authorization", "Bearer client-secret"),
        ("x-api-key", "client-secret"),
        ("api-key", "client-secret"),
        ("cookie", "session=client-secret"),
        ("connection", "x-private-hop"),
        ("x-private-hop", "1"),
        ("anthropic-beta", "some-feature"),
    ];
    for wire in WIRES {
        let body = wire.request(wire.primary(), true).to_string();
        let reply = gw.send(wire.path(), &client_headers, body).await;
        assert_eq!(wire.check(reply.bytes()).unwrap().text, demo::TEXT);
    }
    let body = Wire::Anthropic.request("house-model", true).to_string();
    let reply = gw.send("/v1/messages", &client_headers, body).await;
    assert_eq!(
        Wire::Anthropic.check(reply.bytes()).unwrap().text,
        demo::TEXT
    );

    let calls = gw.demo.calls();
    assert!(
        calls.len() >= 6,
        "primary and fallback, three times: {}",
        calls.len()
    );
    for call in &calls {
        let h = &call.headers;
        for leaked in ["api-key", "cookie", "x-private-hop"] {
            assert!(!h.contains_key(leaked), "{leaked} reached {}", call.model);
        }
        if call.path == "/v1/messages" {
            assert_eq!(h["x-api-key"], "anthropic-key");
            assert!(!h.contains_key("authorization"));
            assert_eq!(h["anthropic-beta"], "some-feature", "other headers pass");
            assert_eq!(h["anthropic-version"], "2023-06-01", "added when missing");
        } else {
            assert_eq!(h["authorization"], "Bearer openai-key");
            assert!(!h.contains_key("x-api-key"));
        }
    }
    // `house-model` reached the upstream as its upstream_model.
    assert!(calls.iter().all(|c| c.model != "house-model"));
    assert_eq!(gw.calls_to(CLAUDE_PRIMARY).len(), 2);
}

#[tokio::test]
async fn a_model_falls_back_to_a_model_of_another_provider_in_its_own_dialect() {
    // A Claude model whose fallback is on the OpenAI upstream, and a GPT model whose fallback
    // is on the Anthropic one.
    let config = |addr: SocketAddr| {
        demo_config(addr)
            + &format!(
                "\n[[models]]\nname = \"claude-cross\"\nupstream = \"demo-anthropic\"\nupstream_model = \"{CLAUDE_PRIMARY}\"\nfallbacks = [\"{GPT_PREFIX}\"]\n\
                 \n[[models]]\nname = \"gpt-cross\"\nupstream = \"demo-openai\"\nupstream_model = \"{GPT_PRIMARY}\"\nfallbacks = [\"{CLAUDE_NO_PREFILL}\"]\n"
            )
    };
    let gw = start_with(config, &|_| None).await;
    let cases = [
        (
            Wire::Anthropic,
            "claude-cross",
            GPT_PREFIX,
            "/v1/chat/completions",
        ),
        (Wire::OpenAi, "gpt-cross", CLAUDE_NO_PREFILL, "/v1/messages"),
    ];
    for (wire, model, fallback, path) in cases {
        for (answer, tools) in [("text", 0), ("tool", 1)] {
            // The whole answer, as the primary gives it when nothing fails.
            let headers = [("x-demo-answer", answer), ("x-demo-fault", "none")];
            let body = wire.request(model, true).to_string();
            let whole = wire
                .check(gw.send(wire.path(), &headers, body).await.bytes())
                .unwrap();
            for fault in ["reset@6", "stall@6", "error@6", "truncate@6", "529"] {
                let headers = [
                    ("x-demo-answer", answer),
                    ("x-demo-fault", fault),
                    ("anthropic-beta", "some-feature"),
                ];
                let body = wire.request(model, true).to_string();
                let reply = gw.send(wire.path(), &headers, body).await;
                let case = format!("{wire:?} {answer} {fault}");
                assert_eq!(reply.status, 200, "{case}");
                let got = wire
                    .check(reply.bytes())
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(got.error, None, "{case}");
                assert_eq!(got.text, whole.text, "{case}");
                assert_eq!(got.tools, whole.tools, "{case}");
                assert_eq!(got.tools.len(), tools, "{case}");
            }
        }
        let calls = gw.calls_to(fallback);
        assert_eq!(calls.len(), 10, "{wire:?}: every case fell back");
        for call in &calls {
            assert_eq!(call.path, path, "{wire:?}: the fallback's own endpoint");
            match wire {
                // Anthropic's client, a Chat model that takes `prefix`.
                Wire::Anthropic => {
                    assert_eq!(call.body["stream_options"]["include_usage"], true);
                    assert_eq!(call.headers.get("anthropic-beta"), None);
                    assert_eq!(call.headers.get("anthropic-version"), None);
                }
                // Chat's client, a Claude model that rejects prefill: never sent one.
                Wire::OpenAi => {
                    assert!(!call.ends_with_assistant());
                    assert!(call.body["max_tokens"].is_u64());
                    assert_eq!(call.headers["anthropic-version"], "2023-06-01");
                }
            }
        }
        assert!(
            calls.iter().any(|c| c.body["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["role"] == "assistant"))),
            "{wire:?}: a continuation carried the partial answer"
        );
    }
}

#[tokio::test]
async fn an_anthropic_client_is_continued_by_every_openai_compatible_server_shape() {
    // Key orders, usage on the finish chunk, `id:` lines and CRLF, tool calls whole or without
    // `index`, reasoning deltas: read by the Chat decoder, written for an Anthropic client.
    let config = |addr: SocketAddr| {
        demo_config(addr)
            + &format!(
                "\n[[models]]\nname = \"claude-cross\"\nupstream = \"demo-anthropic\"\nupstream_model = \"{CLAUDE_PRIMARY}\"\nfallbacks = [\"{GPT_PREFIX}\"]\n"
            )
    };
    let gw = start_with(config, &|_| None).await;
    for answer in ["text", "tool", "parallel-tools", "thinking"] {
        let headers = [("x-demo-answer", answer), ("x-demo-fault", "none")];
        let body = Wire::Anthropic.request("claude-cross", true).to_string();
        let whole = Wire::Anthropic
            .check(
                gw.send("/v1/messages", &headers, body.clone())
                    .await
                    .bytes(),
            )
            .unwrap();
        for server in [
            "openai",
            "azure",
            "vllm",
            "deepseek",
            "openrouter",
            "gemini-compat",
            "framed",
        ] {
            if answer == "thinking" && !["vllm", "deepseek", "openrouter"].contains(&server) {
                // Only these stream reasoning (the demo answers 400 otherwise).
                continue;
            }
            for fault in ["reset@5", "529"] {
                let headers = [
                    ("x-demo-answer", answer),
                    ("x-demo-fault", fault),
                    ("x-demo-server", server),
                ];
                let reply = gw.send("/v1/messages", &headers, body.clone()).await;
                let case = format!("{answer} {server} {fault}");
                let got = Wire::Anthropic
                    .check(reply.bytes())
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(got.error, None, "{case}");
                assert_eq!(got.text, whole.text, "{case}");
                assert_eq!(got.tools, whole.tools, "{case}");
                assert!(!got.thinking, "{case}: no reasoning crosses providers");
                for id in &got.tool_ids {
                    assert!(
                        !id.is_empty()
                            && id
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                        "{case}: tool id {id:?}"
                    );
                }
                let want = if got.tools.is_empty() {
                    "end_turn"
                } else {
                    "tool_use"
                };
                assert_eq!(got.stop_reason.as_deref(), Some(want), "{case}");
            }
        }
    }
}

#[tokio::test]
async fn unknown_paths_get_a_404_that_names_the_endpoints() {
    let gw = start().await;
    let reply = gw.send("/v1/completions", &[], "{}").await;
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/chat/completions"));
}

const GOOD: &str = r#"
[[upstreams]]
name = "anthropic"
dialect = "anthropic"
base_url = "https://api.anthropic.com"

[[upstreams]]
name = "openai"
dialect = "openai-chat"
base_url = "https://api.openai.com"

[[models]]
name = "claude-sonnet-4-6"
upstream = "anthropic"
fallbacks = ["claude-sonnet-4-5"]

[[models]]
name = "claude-sonnet-4-5"
upstream = "anthropic"
prefill = "assistant"

[[models]]
name = "gpt-4o"
upstream = "openai"
"#;

fn config_error(text: &str) -> String {
    config::parse(text, &|_| None)
        .expect_err("an invalid config")
        .to_string()
}

#[test]
fn a_valid_config_builds_the_chain_and_the_layer() {
    let config = config::parse(GOOD, &|_| None).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.admin_listen, None, "no /metrics unless asked for");
    assert_eq!(config.fallback.max_attempts, 3);
    assert_eq!(config.models[0].upstream_model, "claude-sonnet-4-6");
    assert_eq!(config.models[0].fallbacks, ["claude-sonnet-4-5"]);
    let _ = config.layer();
}

#[test]
fn a_fallback_of_another_dialect_is_declared_with_the_dialect_of_its_upstream() {
    let text = GOOD.replace(
        "fallbacks = [\"claude-sonnet-4-5\"]",
        "fallbacks = [\"claude-sonnet-4-5\", \"gpt-4o\"]",
    );
    let config = config::parse(&text, &|_| None).unwrap();
    assert_eq!(config.models[0].fallbacks, ["claude-sonnet-4-5", "gpt-4o"]);
    let chain = config.chain();
    let gpt = chain.target_of("gpt-4o").unwrap();
    assert_eq!(gpt.speaks(), Some(tower_midstream::Dialect::OPENAI_CHAT));
    let claude = chain.target_of("claude-sonnet-4-5").unwrap();
    assert_eq!(
        claude.speaks(),
        Some(tower_midstream::Dialect::ANTHROPIC_MESSAGES)
    );
    assert_eq!(claude.accepts(), tower_midstream::Prefill::Assistant);
    // A larger-context target may be of another dialect too.
    let text = GOOD.replace(
        "fallbacks = [\"claude-sonnet-4-5\"]",
        "fallbacks = [\"claude-sonnet-4-5\"]\ncontext_window_fallbacks = [\"gpt-4o\"]",
    );
    let config = config::parse(&text, &|_| None).unwrap();
    assert_eq!(config.models[0].context_window_fallbacks, ["gpt-4o"]);
}

#[test]
fn a_model_on_the_responses_api_falls_back_to_other_dialects_and_back() {
    let text = format!(
        "{GOOD}\n[[upstreams]]\nname = \"responses\"\ndialect = \"openai-responses\"\n\
         base_url = \"https://api.openai.com\"\n\n[[models]]\nname = \"gpt-r\"\n\
         upstream = \"responses\"\nfallbacks = [\"gpt-4o\", \"claude-sonnet-4-5\"]\n"
    )
    .replace(
        "fallbacks = [\"claude-sonnet-4-5\"]",
        "fallbacks = [\"claude-sonnet-4-5\", \"gpt-r\"]",
    );
    let config = config::parse(&text, &|_| None).unwrap();
    let chain = config.chain();
    assert_eq!(
        chain.target_of("gpt-r").unwrap().speaks(),
        Some(tower_midstream::Dialect::OPENAI_RESPONSES)
    );
    assert_eq!(chain.fallbacks_of("gpt-r")[0].as_ref(), "gpt-4o");
    assert_eq!(chain.fallbacks_of("gpt-r")[1].as_ref(), "claude-sonnet-4-5");
    assert_eq!(chain.fallbacks_of("claude-sonnet-4-6")[1].as_ref(), "gpt-r");
}

#[test]
fn the_readmes_cross_provider_config_is_valid_and_crosses_providers() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("### Across providers")
        .nth(1)
        .expect("README.md has an Across providers section");
    let toml = section
        .split("```toml\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .expect("a toml block in it");
    let config = config::parse(toml, &|_| Some("key".to_owned())).unwrap();
    let chain = config.chain();
    let claude = tower_midstream::Dialect::ANTHROPIC_MESSAGES;
    let openai = tower_midstream::Dialect::OPENAI_CHAT;
    assert_eq!(
        chain.fallbacks_of("claude-sonnet-4-6")[1].as_ref(),
        "gpt-4.1"
    );
    assert_eq!(chain.target_of("gpt-4.1").unwrap().speaks(), Some(openai));
    assert_eq!(
        chain.fallbacks_of("gpt-4.1")[0].as_ref(),
        "claude-sonnet-4-5"
    );
    assert_eq!(
        chain.target_of("claude-sonnet-4-5").unwrap().speaks(),
        Some(claude)
    );
    assert_eq!(
        chain.target_of("gpt-5").unwrap().speaks(),
        Some(tower_midstream::Dialect::OPENAI_RESPONSES)
    );
    assert_eq!(chain.fallbacks_of("gpt-5")[0].as_ref(), "claude-sonnet-4-5");
    assert_eq!(chain.fallbacks_of("gpt-5")[1].as_ref(), "gemini-2.5-flash");
    assert_eq!(
        chain.fallbacks_of("gemini-2.5-flash")[0].as_ref(),
        "claude-sonnet-4-5"
    );
    assert_eq!(chain.fallbacks_of("gemini-2.5-flash")[1].as_ref(), "gpt-5");
    assert_eq!(
        chain.target_of("gemini-2.5-flash").unwrap().speaks(),
        Some(tower_midstream::Dialect::GEMINI)
    );
}

#[test]
fn hedging_is_off_by_default_and_its_delay_is_set_per_layer_and_per_model() {
    let defaults = config::parse(GOOD, &|_| None).unwrap();
    assert_eq!(defaults.fallback.policy.hedge_after, None);
    assert_eq!(defaults.models[0].hedge_after, None);
    let text = format!(
        "[fallback]\nhedge_after_ms = 1500\n{}",
        GOOD.replace(
            "fallbacks = [\"claude-sonnet-4-5\"]",
            "fallbacks = [\"claude-sonnet-4-5\"]\nhedge_after_ms = 0",
        )
    );
    let set = config::parse(&text, &|_| None).unwrap();
    assert_eq!(
        set.fallback.policy.hedge_after,
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        set.models[0].hedge_after,
        Some(None),
        "0: never, for this model"
    );
    let chain = set.chain();
    assert_eq!(
        chain.target_of("claude-sonnet-4-6").unwrap(),
        &tower_midstream::Target::new("claude-sonnet-4-6")
            .hedge_after(None)
            .dialect(tower_midstream::Dialect::ANTHROPIC_MESSAGES)
    );
    let _ = set.layer();
}

#[test]
fn the_attempt_policy_keys_have_careful_defaults_and_reach_the_chain() {
    let defaults = config::parse(GOOD, &|_| None).unwrap();
    let policy = &defaults.fallback.policy;
    assert_eq!(policy.first_token_timeout, Some(Duration::from_secs(60)));
    assert_eq!(
        (policy.retries, policy.retry_base, policy.retry_cap),
        (0, Duration::from_millis(500), Duration::from_secs(8))
    );
    assert_eq!(policy.retry_budget, 20);
    assert_eq!(policy.breaker_failures, None);
    let text = format!(
        "[fallback]\nfirst_token_timeout_ms = 0\nretries = 2\nretry_base_ms = 250\nretry_cap_ms = 4000\nretry_budget_per_s = 5\nbreaker_failures = 3\nbreaker_cooldown_ms = 10000\n{}",
        GOOD.replace(
            "fallbacks = [\"claude-sonnet-4-5\"]",
            "fallbacks = [\"claude-sonnet-4-5\"]\ncontext_window_fallbacks = [\"claude-sonnet-4-5\"]\nretries = 1\nfirst_token_timeout_ms = 90000\nidle_timeout_ms = 0",
        )
    );
    let set = config::parse(&text, &|_| None).unwrap();
    let policy = &set.fallback.policy;
    assert_eq!(policy.first_token_timeout, None);
    assert_eq!(
        (policy.retries, policy.retry_base, policy.retry_cap),
        (2, Duration::from_millis(250), Duration::from_secs(4))
    );
    assert_eq!(policy.retry_budget, 5);
    assert_eq!(
        (policy.breaker_failures, policy.breaker_cooldown),
        (Some(3), Duration::from_secs(10))
    );
    let model = &set.models[0];
    assert_eq!(model.context_window_fallbacks, ["claude-sonnet-4-5"]);
    assert_eq!(model.retries, Some(1));
    assert_eq!(
        model.first_token_timeout,
        Some(Some(Duration::from_secs(90)))
    );
    assert_eq!(model.idle_timeout, Some(None));
    let chain = set.chain();
    let target = chain.target_of("claude-sonnet-4-6").unwrap();
    assert_eq!(
        target,
        &tower_midstream::Target::new("claude-sonnet-4-6")
            .retries(1)
            .first_token_timeout(Duration::from_secs(90))
            .idle_timeout(None)
            .dialect(tower_midstream::Dialect::ANTHROPIC_MESSAGES)
    );
    let _ = set.layer();
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        // An unknown key.
        (
            format!("[fallback]\nmax_atempts = 3\n{GOOD}"),
            vec!["max_atempts"],
        ),
        // A bad dialect.
        (
            GOOD.replace("dialect = \"openai-chat\"", "dialect = \"openai\""),
            vec!["upstreams[1]", "dialect", "openai-chat"],
        ),
        // A model whose upstream does not exist.
        (
            GOOD.replace("upstream = \"openai\"", "upstream = \"open-ai\""),
            vec!["models[2]", "upstream", "open-ai"],
        ),
        // A fallback that is not a model.
        (
            GOOD.replace("[\"claude-sonnet-4-5\"]", "[\"claude-opus\"]"),
            vec!["models[0]", "fallbacks[0]", "claude-opus"],
        ),
        // A prefill Anthropic does not have.
        (
            GOOD.replace("prefill = \"assistant\"", "prefill = \"prefix\""),
            vec!["models[1]", "prefill"],
        ),
        (
            format!("[fallback]\nwhen_no_prefill = \"retry\"\n{GOOD}"),
            vec!["fallback.when_no_prefill", "instruction"],
        ),
        (
            GOOD.replace(
                "base_url = \"https://api.openai.com\"",
                "base_url = \"api.openai.com\"",
            ),
            vec!["upstreams[1]", "base_url"],
        ),
        (
            GOOD.replace(
                "base_url = \"https://api.anthropic.com\"",
                "base_url = \"https://api.anthropic.com\"\napi_key_env = \"NOT_SET_ANYWHERE\"",
            ),
            vec!["upstreams[0]", "api_key_env", "NOT_SET_ANYWHERE"],
        ),
        (format!("listen = \"localhost\"\n{GOOD}"), vec!["listen"]),
        (
            format!("admin_listen = \"localhost\"\n{GOOD}"),
            vec!["admin_listen"],
        ),
        // The metrics must not be on the clients' port.
        (
            format!("admin_listen = \"127.0.0.1:8080\"\n{GOOD}"),
            vec!["admin_listen", "listen"],
        ),
        (
            format!("[server]\nmax_connections = 0\n{GOOD}"),
            vec!["server.max_connections"],
        ),
        (
            format!("[server]\nmax_concurrent_streams = 0\n{GOOD}"),
            vec!["server.max_concurrent_streams"],
        ),
        (
            format!("[server]\nmax_header_bytes = 100\n{GOOD}"),
            vec!["server.max_header_bytes", "8192"],
        ),
        // A body of the largest size allowed must fit in the budget of all of them.
        (
            format!("[server]\nmax_request_bytes_held = 1000\n{GOOD}"),
            vec![
                "server.max_request_bytes_held",
                "fallback.max_request_bytes",
            ],
        ),
        (
            format!("[server]\nheader_timeout_ms = 100\n{GOOD}"),
            vec!["header_timeout_ms"],
        ),
        // The attempt policy.
        (
            GOOD.replace(
                "fallbacks = [\"claude-sonnet-4-5\"]",
                "fallbacks = [\"claude-sonnet-4-5\"]\ncontext_window_fallbacks = [\"claude-1m\"]",
            ),
            vec!["models[0]", "context_window_fallbacks[0]", "claude-1m"],
        ),
        (
            format!("[fallback]\nretry_base_ms = 1000\nretry_cap_ms = 10\n{GOOD}"),
            vec!["fallback.retry_cap_ms", "1000 ms"],
        ),
        (
            format!("[fallback]\nbreaker_failures = 3\nbreaker_cooldown_ms = 0\n{GOOD}"),
            vec!["fallback.breaker_cooldown_ms"],
        ),
        (format!("[fallback]\nretries = -1\n{GOOD}"), vec!["retries"]),
    ];
    for (text, needles) in cases {
        let err = config_error(&text);
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in: {err}");
        }
    }
}

#[test]
fn server_limits_have_defaults_and_every_one_can_be_set() {
    let defaults = config::parse(GOOD, &|_| None).unwrap().server;
    assert_eq!(defaults.max_connections, 512);
    assert_eq!(defaults.header_read_timeout, Some(Duration::from_secs(10)));
    assert_eq!(defaults.request_body_timeout, Some(Duration::from_secs(10)));
    assert_eq!(
        defaults.request_body_deadline,
        Some(Duration::from_secs(60))
    );
    assert_eq!(defaults.keep_alive_timeout, Some(Duration::from_secs(60)));
    assert_eq!(defaults.max_concurrent_streams, 32);
    assert_eq!(defaults.max_header_bytes, 65536);
    assert_eq!(defaults.shutdown_grace, Duration::from_secs(30));
    assert_eq!(defaults.max_request_bytes_held, 256 << 20);
    let text = format!(
        "[server]\nmax_connections = 7\nheader_read_timeout_ms = 1\nrequest_body_timeout_ms = 2\n\
         request_body_deadline_ms = 0\nkeep_alive_timeout_ms = 4\nmax_concurrent_streams = 5\n\
         max_header_bytes = 9000\nshutdown_grace_ms = 6\nmax_request_bytes_held = 8388608\n{GOOD}"
    );
    let set = config::parse(&text, &|_| None).unwrap().server;
    assert_eq!(set.max_connections, 7);
    assert_eq!(set.header_read_timeout, Some(Duration::from_millis(1)));
    assert_eq!(set.request_body_timeout, Some(Duration::from_millis(2)));
    assert_eq!(set.request_body_deadline, None, "0: never");
    assert_eq!(set.keep_alive_timeout, Some(Duration::from_millis(4)));
    assert_eq!(set.max_concurrent_streams, 5);
    assert_eq!(set.max_header_bytes, 9000);
    assert_eq!(set.shutdown_grace, Duration::from_millis(6));
    assert_eq!(set.max_request_bytes_held, 8 << 20);
}

#[test]
fn a_base_url_ending_in_v1_is_warned_about_by_key() {
    assert!(config::parse(GOOD, &|_| None).unwrap().warnings.is_empty());
    let text = GOOD.replace("https://api.openai.com", "https://api.openai.com/v1/");
    let config = config::parse(&text, &|_| None).unwrap();
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let warning = &config.warnings[0];
    assert!(
        warning.contains("upstreams[1]")
            && warning.contains("base_url")
            && warning.contains("/v1/v1/"),
        "{warning}"
    );
}

#[test]
fn the_example_config_file_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/gateway/gateway.example.toml"
    );
    let config = config::load(path, &|var| Some(format!("key-from-{var}"))).unwrap();
    assert_eq!(config.upstreams.len(), 4);
    assert_eq!(config.admin_listen, Some("127.0.0.1:9464".parse().unwrap()));
    let (name, value) = config.upstreams[0].credential.clone().unwrap();
    assert_eq!(
        (name.as_str(), value.to_str().unwrap()),
        ("x-api-key", "key-from-ANTHROPIC_API_KEY")
    );
}

/// The example binary built by `cargo test` (or `cargo build --example gateway`).
fn gateway_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("gateway{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --example gateway` first",
        bin.display()
    );
    bin
}

#[test]
fn a_bad_config_file_stops_the_gateway_before_it_listens() {
    let dir = std::env::temp_dir().join(format!("midstream-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        GOOD.replace("dialect = \"anthropic\"", "dialect = \"claude\""),
    )
    .unwrap();
    let out = std::process::Command::new(gateway_binary())
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstreams[0]") && stderr.contains("dialect"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("gateway="),
        "it never listened"
    );
}

#[tokio::test]
async fn a_model_may_be_its_own_fallback_as_in_the_library() {
    // The Claude primary retries itself (it takes prefill) before the no-prefill fallback.
    let gw = start_with(
        |upstream| {
            demo_config(upstream).replace(
                &format!(r#"fallbacks = ["{CLAUDE_NO_PREFILL}", "{CLAUDE_PREFILL}"]"#),
                &format!(r#"fallbacks = ["{CLAUDE_PRIMARY}", "{CLAUDE_NO_PREFILL}"]"#),
            )
        },
        &|_| None,
    )
    .await;
    let reply = gw.ask(Wire::Anthropic, Some("reset@6")).await;
    let answer = Wire::Anthropic.check(reply.bytes()).unwrap();
    assert_eq!(answer.text, demo::TEXT);
    let calls: Vec<(String, bool)> = gw
        .demo
        .calls()
        .into_iter()
        .map(|c| (c.model.clone(), c.ends_with_assistant()))
        .collect();
    assert_eq!(
        calls,
        [
            (CLAUDE_PRIMARY.to_owned(), false),
            (CLAUDE_PRIMARY.to_owned(), true),
            (CLAUDE_NO_PREFILL.to_owned(), false),
        ],
        "the primary, the primary again with a prefill, then the instruction elsewhere"
    );
}

/// One request, with its response headers.
async fn post_with_headers(gw: &Running, wire: Wire, fault: &str) -> (http::HeaderMap, Bytes) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{}{}", gw.gateway, wire.path()))
        .header("content-type", "application/json")
        .header("x-demo-fault", fault)
        .body(Full::new(
            wire.request(wire.primary(), true).to_string().into(),
        ))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let headers = res.headers().clone();
    (headers, res.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn the_response_names_the_model_serving_it_when_the_primary_failed_before_its_stream() {
    let gw = start().await;
    let (headers, bytes) = post_with_headers(&gw, Wire::Anthropic, "529").await;
    assert_eq!(
        headers["x-midstream-served-by"],
        format!("{CLAUDE_NO_PREFILL}; attempt=2; strategy=restart")
    );
    assert_eq!(Wire::Anthropic.check(&bytes).unwrap().text, demo::TEXT);
    let (headers, _) = post_with_headers(&gw, Wire::OpenAi, "none").await;
    assert_eq!(
        headers["x-midstream-served-by"],
        format!("{GPT_PRIMARY}; attempt=1; strategy=original")
    );
}

/// `/metrics` names every configured model: it is served on the admin listener only, and the
/// clients' port answers it like any path it does not serve.
#[tokio::test]
async fn metrics_count_each_attempt_by_model_class_and_strategy_on_the_admin_listener_only() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // The gateway's tasks run on this test's thread: they record into this recorder.
    let _local = metrics::set_default_local_recorder(&recorder);
    let demo = Demo::new(Duration::ZERO);
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(demo.clone().serve(upstream));
    let config = config::parse(&demo_config(upstream_addr), &|_| None).unwrap();
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let gateway = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        proxy::build(&config),
        config.server.clone(),
        std::future::pending(),
    ));
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        admin_listener,
        admin::Admin::new(handle),
        config.server.clone(),
        std::future::pending(),
    ));
    let gw = Running { gateway, demo };

    // Resets half-way on the primary; the first fallback continues (instruction).
    let reply = gw.ask(Wire::Anthropic, None).await;
    assert_eq!(
        Wire::Anthropic.check(reply.bytes()).unwrap().text,
        demo::TEXT
    );
    // A model no one configured: counted as `other`, never under the client's name.
    let unknown = Wire::Anthropic.request("made-up-model", true).to_string();
    assert_eq!(
        gw.send(Wire::Anthropic.path(), &[], unknown).await.status,
        404
    );

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = |addr: SocketAddr, path: &str| {
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let client = client.clone();
        async move {
            let res = client.request(req).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        }
    };
    let (status, public) = get(gw.gateway, "/metrics").await;
    assert_eq!(status, 404, "{public}");
    for model in [CLAUDE_PRIMARY, CLAUDE_NO_PREFILL, "midstream_"] {
        assert!(!public.contains(model), "{public}");
    }
    assert_eq!(
        get(admin, "/healthz").await,
        (StatusCode::OK, "ok\n".into())
    );
    let (status, page) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        format!(
            r#"midstream_attempts_total{{target="{CLAUDE_PRIMARY}",strategy="original",class="transport"}} 1"#
        ),
        format!(
            r#"midstream_attempts_total{{target="{CLAUDE_NO_PREFILL}",strategy="instruction",class="completed"}} 1"#
        ),
        r#"midstream_attempts_total{target="other",strategy="original",class="passed_on"} 1"#
            .to_owned(),
        r#"midstream_requests_total{dialect="anthropic",outcome="completed"} 1"#.to_owned(),
        r#"midstream_requests_total{dialect="anthropic",outcome="passed_on"} 1"#.to_owned(),
    ] {
        assert!(page.lines().any(|l| l == line), "{line} not in:\n{page}");
    }
    assert!(page.contains("midstream_fallback_gap_seconds"), "{page}");
    assert!(!page.contains("made-up-model"), "{page}");
}

/// The binary as a service: SIGTERM lets an open stream finish, then it exits cleanly; its
/// log has no colour codes when stderr is not a terminal (here, a pipe).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_stream_finish_and_the_log_has_no_colour_codes_in_a_pipe() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(gateway_binary())
        .args(["--demo-pace-ms", "20"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let gateway = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "it printed its address"
        );
        if let Some(addr) = line.trim().strip_prefix("gateway=http://") {
            break addr.to_owned();
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = Wire::Anthropic.request(CLAUDE_PRIMARY, true).to_string();
    let req = Request::post(format!("http://{gateway}/v1/messages"))
        .header("content-type", "application/json")
        .header("x-demo-fault", "none")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let mut body = res.into_body();
    let mut bytes = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while let Some(frame) = body.frame().await {
        bytes.extend_from_slice(&frame.expect("the stream goes on").into_data().unwrap());
    }
    let answer = Wire::Anthropic.check(&bytes).unwrap();
    assert!(
        answer.error.is_none() && answer.text.len() > 50,
        "{answer:?}"
    );
    drop(client);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "a clean exit: {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shutting down") && stderr.contains("shut down"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr}"
    );
}

// ---- Gemini and Claude on Vertex AI ------------------------------------------------------

fn gemini_request() -> String {
    json!({"contents":[{"role":"user","parts":[{"text":"Why do streams break?"}]}],"generationConfig":{"maxOutputTokens":1024}}).to_string()
}

fn gemini_path(model: &str) -> String {
    format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
}

#[tokio::test]
async fn a_gemini_stream_that_breaks_completes_on_a_fallback_with_the_gateways_key() {
    let gw = start().await;
    for version in ["v1beta", "v1"] {
        let path = gemini_path(demo::GEMINI_PRIMARY).replace("v1beta", version);
        let reply = gw
            .send(
                &path,
                &[("x-goog-api-key", "the-clients-own-key")],
                gemini_request(),
            )
            .await;
        assert_eq!(reply.status, 200, "{version}");
        let answer = support::check(support::Dialect::Gemini, true, reply.bytes())
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        assert_eq!(answer.error, None);
        assert_eq!(answer.text, demo::TEXT, "{version}");
    }
    // The first fallback rejects prefill: the partial answer as a model turn, then the
    // instruction as a user turn; its own name in the path; the gateway's key, never the
    // client's.
    let calls = gw.calls_to(demo::GEMINI_NO_PREFILL);
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert!(call
            .path
            .ends_with("/models/demo-gemini-no-prefill:streamGenerateContent"));
        assert_eq!(call.headers["x-goog-api-key"], "demo-key");
        let contents = call.body["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3, "{contents:?}");
        assert_eq!(contents[1]["role"], "model");
        assert_eq!(contents[2]["role"], "user");
    }
}

#[tokio::test]
async fn an_anthropic_request_falls_back_to_claude_on_vertex_through_the_gateway() {
    let gw = start().await;
    let body = Wire::Anthropic
        .request(demo::CLAUDE_WITH_VERTEX_FALLBACK, true)
        .to_string();
    let reply = gw.send("/v1/messages", &[], body).await;
    assert_eq!(reply.status, 200);
    let answer = Wire::Anthropic.check(reply.bytes()).unwrap();
    assert_eq!(answer.error, None);
    assert_eq!(answer.text, demo::TEXT);
    // The primary on the Anthropic API, under its upstream name.
    let primary = gw.calls_to(CLAUDE_PRIMARY);
    assert_eq!(primary.len(), 1);
    assert_eq!(primary[0].path, "/v1/messages");
    // The fallback on Vertex AI: the model in the path, none in the body, the version in the
    // body and not in a header, the access token the command printed, a prefill (it takes one).
    let vertex = gw.calls_to(CLAUDE_PREFILL);
    assert_eq!(vertex.len(), 1);
    let call = &vertex[0];
    assert_eq!(
        call.path,
        "/v1/projects/demo-project/locations/us-east5/publishers/anthropic/models/demo-claude-prefill:streamRawPredict"
    );
    assert!(call.body.get("model").is_none());
    assert_eq!(call.body["anthropic_version"], "vertex-2023-10-16");
    assert!(call.headers.get("anthropic-version").is_none());
    assert!(call.headers.get("x-api-key").is_none());
    assert_eq!(call.headers["authorization"], "Bearer demo-vertex-token");
    assert!(call.ends_with_assistant());
}

#[tokio::test]
async fn claude_on_vertex_as_the_primary_falls_back_to_the_anthropic_api_through_the_gateway() {
    let gw = start().await;
    // As anthropic-python's AnthropicVertex sends it.
    let mut body = Wire::Anthropic.request("ignored", true);
    body.as_object_mut().unwrap().remove("model");
    body["anthropic_version"] = json!("2026-10-21");
    let path = format!(
        "/v1/projects/the-clients-project/locations/europe-west1/publishers/anthropic/models/{}:streamRawPredict",
        demo::CLAUDE_VERTEX
    );
    let reply = gw
        .send(
            &path,
            &[
                ("authorization", "Bearer the-clients-token"),
                ("x-demo-fault", "demo-claude-prefill=reset@5"),
            ],
            body.to_string(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let answer = Wire::Anthropic.check(reply.bytes()).unwrap();
    assert_eq!(answer.error, None);
    assert_eq!(answer.text, demo::TEXT);
    // The gateway's project and region and token, not the client's.
    let first = gw.calls_to(CLAUDE_PREFILL);
    assert_eq!(first.len(), 1);
    assert!(first[0]
        .path
        .starts_with("/v1/projects/demo-project/locations/us-east5/"));
    assert_eq!(first[0].body["anthropic_version"], "2026-10-21");
    assert_eq!(
        first[0].headers["authorization"],
        "Bearer demo-vertex-token"
    );
    // Then the Anthropic API: the body's model, no anthropic_version, the instruction (it
    // rejects prefill).
    let api = gw.calls_to(CLAUDE_NO_PREFILL);
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].path, "/v1/messages");
    assert_eq!(api[0].body["model"], CLAUDE_NO_PREFILL);
    assert!(api[0].body.get("anthropic_version").is_none());
    assert!(!api[0].ends_with_assistant());
    assert!(api[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn a_model_in_a_path_is_only_a_configured_name_else_404_in_the_clients_dialect() {
    let gw = start().await;
    for model in [
        "gemini-nonexistent",
        "..%2F..%2Fv1%2Fmessages",
        "demo-gemini-primary%3Fkey%3D1",
        "demo-gemini-primary%23x",
        "a%40evil.example",
        "demo-gemini-primary%2",
        // A model of another kind of target.
        CLAUDE_PRIMARY,
    ] {
        let reply = gw.send(&gemini_path(model), &[], gemini_request()).await;
        assert_eq!(reply.status, 404, "{model}");
        let json = reply.json();
        assert_eq!(json["error"]["code"], 404, "{model}");
        assert_eq!(json["error"]["status"], "NOT_FOUND", "{model}");
        assert!(
            reply.bytes().starts_with(br#"{"error""#),
            "google-genai raises only on `error` first"
        );
    }
    // A Gemini model asked for on Vertex's path, and an unknown one there.
    for model in [demo::GEMINI_PRIMARY, "claude-nonexistent"] {
        let path = format!(
            "/v1/projects/p/locations/r/publishers/anthropic/models/{model}:streamRawPredict"
        );
        let body = json!({"anthropic_version":"vertex-2023-10-16","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"hi"}]});
        let reply = gw.send(&path, &[], body.to_string()).await;
        assert_eq!(reply.status, 404, "{model}");
        assert_eq!(reply.json()["error"]["type"], "not_found_error", "{model}");
    }
    assert!(gw.demo.calls().is_empty(), "nothing reached the upstream");
}

const VERTEX_UPSTREAM: &str = r#"
[[upstreams]]
name = "vertex"
dialect = "anthropic"
base_url = "https://us-east5-aiplatform.googleapis.com"
vertex = { project = "my-proj", region = "us-east5" }
access_token_env = "VERTEX_TOKEN"

[[upstreams]]
name = "gemini"
dialect = "gemini"
base_url = "https://generativelanguage.googleapis.com"
api_key_env = "GEMINI_KEY"

[[models]]
name = "claude-on-vertex"
upstream = "vertex"
upstream_model = "claude-sonnet-4-5@20250929"
prefill = "assistant"

[[models]]
name = "gemini-2.5-flash"
upstream = "gemini"
prefill = "none"
"#;

#[test]
fn vertex_and_gemini_upstreams_are_configured_with_their_own_credentials() {
    let env = |var: &str| match var {
        "VERTEX_TOKEN" => Some("ya29.secret-token".to_owned()),
        "GEMINI_KEY" => Some("AIza-secret-key".to_owned()),
        _ => None,
    };
    let config = config::parse(&format!("{GOOD}{VERTEX_UPSTREAM}"), &env).unwrap();
    let vertex = config
        .upstreams
        .iter()
        .find(|u| u.name == "vertex")
        .unwrap();
    assert_eq!(
        vertex.address,
        tower_midstream::Address::vertex("my-proj", "us-east5")
    );
    assert!(!format!("{vertex:?}").contains("secret-token"));
    let gemini = config
        .upstreams
        .iter()
        .find(|u| u.name == "gemini")
        .unwrap();
    let (name, value) = gemini.credential.as_ref().unwrap();
    assert_eq!(
        (name.as_str(), value.to_str().unwrap()),
        ("x-goog-api-key", "AIza-secret-key")
    );
    // Both secrets are taken out of whatever an upstream says.
    let redacted = config
        .redactor()
        .redact("token ya29.secret-token key AIza-secret-key")
        .into_owned();
    assert!(!redacted.contains("secret"), "{redacted}");
    // The chain knows where the Vertex model lives.
    let chain = config.chain();
    let target = chain.target_of("claude-on-vertex").unwrap();
    assert_eq!(target.address(), &vertex.address);
}

#[test]
fn a_gemini_model_may_fall_back_on_claude_and_claude_on_gemini() {
    let env = |var: &str| match var {
        "VERTEX_TOKEN" => Some("ya29.secret-token".to_owned()),
        "GEMINI_KEY" => Some("AIza-secret-key".to_owned()),
        _ => None,
    };
    let text = VERTEX_UPSTREAM
        .replace(
            "prefill = \"none\"",
            "prefill = \"none\"\nfallbacks = [\"claude-on-vertex\"]",
        )
        .replace(
            "prefill = \"assistant\"",
            "prefill = \"assistant\"\nfallbacks = [\"gemini-2.5-flash\"]\ncontext_window_fallbacks = [\"gemini-2.5-flash\"]",
        );
    let config = config::parse(&format!("{GOOD}{text}"), &env).unwrap();
    let model = |name: &str| config.models.iter().find(|m| m.name == name).unwrap();
    assert_eq!(model("gemini-2.5-flash").fallbacks, ["claude-on-vertex"]);
    assert_eq!(model("claude-on-vertex").fallbacks, ["gemini-2.5-flash"]);
    assert_eq!(
        model("claude-on-vertex").context_window_fallbacks,
        ["gemini-2.5-flash"]
    );
    // Each target speaks its upstream's dialect: the layer translates for it.
    let chain = config.chain();
    assert_eq!(
        chain.target_of("gemini-2.5-flash").unwrap().speaks(),
        Some(tower_midstream::Dialect::GEMINI)
    );
}

#[test]
fn vertex_and_gemini_config_errors_name_the_key() {
    let env = |var: &str| (var == "VERTEX_TOKEN" || var == "GEMINI_KEY").then(|| "t".to_owned());
    let cases = [
        (
            VERTEX_UPSTREAM.replace("dialect = \"anthropic\"", "dialect = \"openai-chat\""),
            vec!["upstreams[0]", "vertex", "Anthropic Messages"],
        ),
        (
            VERTEX_UPSTREAM.replace("access_token_env = \"VERTEX_TOKEN\"\n", ""),
            vec!["upstreams[0]", "vertex", "access_token_command"],
        ),
        (
            VERTEX_UPSTREAM.replace("VERTEX_TOKEN", "UNSET_TOKEN"),
            vec!["upstreams[0]", "access_token_env", "UNSET_TOKEN"],
        ),
        (
            VERTEX_UPSTREAM.replace(
                "access_token_env = \"VERTEX_TOKEN\"",
                "access_token_env = \"VERTEX_TOKEN\"\naccess_token_command = [\"gcloud\"]",
            ),
            vec!["upstreams[0]", "not both"],
        ),
        (
            VERTEX_UPSTREAM.replace(
                "access_token_env = \"VERTEX_TOKEN\"",
                "access_token_command = []",
            ),
            vec!["upstreams[0]", "access_token_command", "program"],
        ),
        (
            VERTEX_UPSTREAM.replace("project = \"my-proj\"", "project = \"../x\""),
            vec!["upstreams[0]", "vertex.project"],
        ),
        (
            VERTEX_UPSTREAM.replace("region = \"us-east5\"", "region = \"us east\""),
            vec!["upstreams[0]", "vertex.region"],
        ),
        (
            VERTEX_UPSTREAM.replace(
                "api_key_env = \"GEMINI_KEY\"",
                "api_key_env = \"GEMINI_KEY\"\naccess_token_env = \"VERTEX_TOKEN\"",
            ),
            vec!["upstreams[1]", "access_token_env", "vertex"],
        ),
        (
            VERTEX_UPSTREAM.replace("prefill = \"none\"", "prefill = \"prefix\""),
            vec!["models[1]", "prefill", "gemini"],
        ),
    ];
    for (text, needles) in cases {
        let err = config::parse(&text, &env)
            .expect_err("an invalid config")
            .to_string();
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in: {err}");
        }
    }
}

#[tokio::test]
async fn a_responses_stream_that_breaks_completes_on_a_fallback_through_the_gateway() {
    let gw = start().await;
    let body = json!({"model": demo::RESPONSES_PRIMARY, "stream": true, "input": "Say hello."});
    let reply = gw.send("/v1/responses", &[], body.to_string()).await;
    reply.assert_demo_answer(support::Dialect::Responses);
    // The Responses API has no prefill: the string input opens an array, then the partial
    // answer as an assistant item and the instruction as a user item, at the same endpoint.
    let call = gw.one_call_to(GPT_NO_PREFIX, "/v1/responses");
    let input = call.body["input"].as_array().unwrap();
    assert_eq!(input.len(), 3, "{input:?}");
    assert_eq!(input[1]["role"], "assistant");
    assert_eq!(input[2]["role"], "user");
}

#[tokio::test]
async fn gemini_and_responses_models_fall_back_on_each_other_through_the_gateway() {
    // A Gemini model whose fallback is on the Responses API, and a Responses model whose
    // fallback is Gemini's: the config takes both, and each client reads one stream of its own
    // holding the whole answer.
    let config = |addr: SocketAddr| {
        demo_config(addr)
            + &format!(
                "\n[[models]]\nname = \"gemini-cross\"\nupstream = \"demo-gemini\"\nupstream_model = \"{}\"\nprefill = \"assistant\"\nfallbacks = [\"{}\"]\n\
                 \n[[models]]\nname = \"responses-cross\"\nupstream = \"demo-responses\"\nupstream_model = \"{}\"\nfallbacks = [\"{}\"]\n",
                demo::GEMINI_PRIMARY,
                demo::RESPONSES_FALLBACK,
                demo::GPT_PRIMARY,
                demo::GEMINI_PREFILL,
            )
    };
    let gw = start_with(config, &|_| None).await;

    let reply = gw
        .send(&gemini_path("gemini-cross"), &[], gemini_request())
        .await;
    reply.assert_demo_answer(support::Dialect::Gemini);
    // The Responses model (no prefill): the partial answer as an assistant item, then the
    // instruction, at the Responses endpoint.
    let call = gw.one_call_to(demo::GPT_NO_PREFIX, "/v1/responses");
    let input = call.body["input"].as_array().unwrap();
    let roles: Vec<&str> = input.iter().filter_map(|it| it["role"].as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{input:?}");

    let body = json!({"model": "responses-cross", "stream": true, "input": "Say hello."});
    let reply = gw.send("/v1/responses", &[], body.to_string()).await;
    reply.assert_demo_answer(support::Dialect::Responses);
    // The Gemini model takes the answer so far as its own turn, at its own path.
    let call = gw.one_call_to(
        demo::GEMINI_PREFILL,
        "/models/demo-gemini-prefill:streamGenerateContent",
    );
    let contents = call.body["contents"].as_array().unwrap();
    assert_eq!(contents.last().unwrap()["role"], "model", "{contents:?}");
}
