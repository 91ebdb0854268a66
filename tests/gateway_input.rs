//! Hostile request bodies through the example gateway, each with a clear, bounded outcome in
//! the client's own error format; and the gateway keeps serving afterwards.

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
#[allow(dead_code)]
#[path = "../examples/gateway/token.rs"]
mod token;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;

async fn gateway() -> (SocketAddr, demo::Demo) {
    let demo = demo::Demo::new(Duration::ZERO);
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(demo.clone().serve(upstream));
    let text = demo::gateway_config(upstream_addr, "127.0.0.1:0".parse().unwrap());
    let config = config::parse(&text, &|_| None).expect("a valid config");
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        proxy::build(&config),
        config.server.clone(),
        std::future::pending(),
    ));
    (addr, demo)
}

/// Posts `body` to `path`; the status, and the body if it is JSON.
async fn post(addr: SocketAddr, path: &str, body: Vec<u8>) -> (u16, Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("x-demo-fault", "none")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("answered in bounded time")
        .unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn error_message(path: &str, body: &Value) -> String {
    let message = if path == "/v1/messages" {
        assert_eq!(body["type"], "error", "Anthropic's error shape: {body}");
        &body["error"]["message"]
    } else {
        &body["error"]["message"]
    };
    message
        .as_str()
        .unwrap_or_else(|| panic!("an error message: {body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_request_bodies_get_a_clear_answer_in_the_clients_format() {
    let (addr, demo) = gateway().await;
    for (path, model) in [
        ("/v1/messages", demo::CLAUDE_PRIMARY),
        ("/v1/chat/completions", demo::GPT_PRIMARY),
    ] {
        let deep = format!(
            "{{\"model\":\"{model}\",\"stream\":true,\"messages\":{}1{}}}",
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("not JSON", b"model=x&stream=true".to_vec(), 400),
            ("a JSON array", format!("[\"{model}\"]").into_bytes(), 400),
            ("model is a number", json!({"model": 7, "messages": []}).to_string().into_bytes(), 400),
            ("invalid UTF-8", b"{\"model\":\"\xff\xfe\",\"messages\":[]}".to_vec(), 400),
            (
                "a string over the request limit",
                json!({"model": model, "messages": [{"role":"user","content": "x".repeat(5 << 20)}]})
                    .to_string()
                    .into_bytes(),
                413,
            ),
        ];
        for (what, body, status) in cases {
            let (got, answer) = post(addr, path, body).await;
            assert_eq!(got, status, "{path}, {what}: {answer}");
            let message = error_message(path, &answer);
            assert!(
                message.len() > 10,
                "{path}, {what}: a message that says what is wrong: {message}"
            );
        }
        // Deeply nested or wrongly typed fields the gateway does not read itself go to the
        // upstream, whose answer (a 400 here) comes back as it sent it, in bounded time.
        for (what, body) in [
            ("deeply nested", deep.into_bytes()),
            ("messages is a string", json!({"model": model, "stream": true, "messages": "hi"}).to_string().into_bytes()),
            (
                "max_tokens is a string",
                json!({"model": model, "stream": true, "max_tokens": "many", "messages": [{"role":"user","content":"hi"}]})
                    .to_string()
                    .into_bytes(),
            ),
        ] {
            let (got, answer) = post(addr, path, body).await;
            assert!((200..500).contains(&got), "{path}, {what}: {got} {answer}");
        }
        // And the gateway still answers a good request.
        let good = json!({"model": model, "max_tokens": 100, "stream": false, "messages": [{"role":"user","content":"hi"}]});
        let (got, _) = post(addr, path, good.to_string().into_bytes()).await;
        assert_eq!(got, 200, "{path}: a good request after the bad ones");
    }
    let _ = demo.calls();
}
