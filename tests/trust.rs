//! Trust boundaries of the example gateway, over real loopback sockets: credentials stay with
//! their upstream (also when a request falls back from one upstream to another), no client
//! header can steer a request, no key ever reaches the logs, and a client that goes away at any
//! phase stops the upstream work.
//!
//! Alone in its binary: it installs a global tracing subscriber to read the logs.

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
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::net::TcpListener;

const KEY_A: &str = "sk-upstream-a-0123456789abcdef";
const KEY_B: &str = "sk-upstream-b-fedcba9876543210";
const CLIENT_KEY: &str = "sk-client-own-secret-key";

/// Everything logged by this test binary (a global subscriber: tasks run on other threads).
fn logs() -> &'static Mutex<Vec<u8>> {
    support::global_logs::install(tracing::Level::DEBUG)
}

struct Two {
    gateway: SocketAddr,
    a: demo::Demo,
    a_addr: SocketAddr,
    b: demo::Demo,
    b_addr: SocketAddr,
}

/// Two upstreams, each with its own key: model `on-a` (upstream a) falls back to `on-b`, then
/// `on-b2` (both upstream b), so that a cancelled attempt that were not would show as a call.
async fn two_upstreams() -> Two {
    let _ = logs();
    let (a, b) = (
        demo::Demo::new(Duration::ZERO),
        demo::Demo::new(Duration::ZERO),
    );
    let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a_addr, b_addr) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    tokio::spawn(a.clone().serve(la));
    tokio::spawn(b.clone().serve(lb));
    let text = format!(
        r#"listen = "127.0.0.1:0"
[fallback]
idle_timeout_ms = 300
keep_alive_ms = 50

[[upstreams]]
name = "a"
dialect = "anthropic"
base_url = "http://{a_addr}"
api_key_env = "KEY_A"

[[upstreams]]
name = "b"
dialect = "anthropic"
base_url = "http://{b_addr}"
api_key_env = "KEY_B"

[[models]]
name = "on-a"
upstream = "a"
upstream_model = "{primary}"
fallbacks = ["on-b", "on-b2"]

[[models]]
name = "on-b"
upstream = "b"
upstream_model = "{fallback}"
prefill = "assistant"

[[models]]
name = "on-b2"
upstream = "b"
upstream_model = "{fallback}"
prefill = "assistant"
"#,
        primary = demo::CLAUDE_PRIMARY,
        fallback = demo::CLAUDE_PREFILL,
    );
    let env = |var: &str| match var {
        "KEY_A" => Some(KEY_A.to_owned()),
        "KEY_B" => Some(KEY_B.to_owned()),
        _ => None,
    };
    let config = config::parse(&text, &env).expect("a valid config");
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let gateway = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        proxy::build(&config),
        config.server.clone(),
        std::future::pending(),
    ));
    Two {
        gateway,
        a,
        a_addr,
        b,
        b_addr,
    }
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn messages_request(gateway: SocketAddr, fault: &str) -> http::request::Builder {
    Request::post(format!("http://{gateway}/v1/messages"))
        .header("content-type", "application/json")
        .header("x-api-key", CLIENT_KEY)
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("cookie", format!("session={CLIENT_KEY}"))
        .header("x-demo-fault", fault)
}

fn body() -> Full<Bytes> {
    Full::new(Bytes::from(
        json!({"model":"on-a","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}).to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_gets_only_its_own_key_also_when_falling_back_across_upstreams() {
    let two = two_upstreams().await;
    let req = messages_request(two.gateway, "reset@8")
        .body(body())
        .unwrap();
    let res = client().request(req).await.unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let answer = support::check(support::Dialect::Anthropic, false, &bytes).unwrap();
    assert!(answer.error.is_none() && !answer.text.is_empty());

    let (a, b) = (two.a.calls(), two.b.calls());
    assert_eq!(
        (a.len(), b.len()),
        (1, 1),
        "the primary on a, the fallback on b"
    );
    assert_eq!(a[0].headers["x-api-key"], KEY_A);
    assert_eq!(b[0].headers["x-api-key"], KEY_B);
    for call in a.iter().chain(&b) {
        let all: String = call
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        assert!(
            !all.contains(CLIENT_KEY),
            "the client's credentials reached an upstream:\n{all}"
        );
        assert!(
            call.headers.get("cookie").is_none() && call.headers.get("authorization").is_none()
        );
    }
    assert!(
        !b[0]
            .headers
            .iter()
            .any(|(_, v)| v.as_bytes() == KEY_A.as_bytes()),
        "a's key went to b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_header_changes_where_a_request_goes() {
    let two = two_upstreams().await;
    let b = two.b_addr.to_string();
    let req = messages_request(two.gateway, "none")
        .header("host", &b)
        .header("x-forwarded-host", &b)
        .header("forwarded", format!("host={b}"))
        .header("x-upstream", &b)
        .body(body())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.into_body().collect().await.unwrap();
    assert_eq!(
        two.a.calls().len(),
        1,
        "served by the upstream the config names"
    );
    assert!(
        two.b.calls().is_empty(),
        "no header steered the request to b"
    );
    let _ = two.a_addr;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_ever_reaches_the_logs() {
    let two = two_upstreams().await;
    // A failure, a fallback across upstreams, a give-up, a client error: everything that logs.
    for fault in [
        "reset@8",
        "reset@4, fallbacks=503",
        "error@3",
        "400",
        "none",
    ] {
        let req = messages_request(two.gateway, fault).body(body()).unwrap();
        let res = client().request(req).await.unwrap();
        let _ = res.into_body().collect().await;
    }
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logs.contains("upstream attempt failed"),
        "the logs were captured:\n{logs}"
    );
    for secret in [KEY_A, KEY_B, CLIENT_KEY] {
        assert!(!logs.contains(secret), "a key is in the logs:\n{logs}");
    }
}

/// A client that goes away at each phase: nothing more is asked of the upstreams after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_at_any_phase_stops_the_upstream_work() {
    let two = two_upstreams().await;
    // (fault, frames read before hanging up, calls expected in all)
    let phases = [
        // Right after the headers, before any event (the primary stalls): before headers is
        // tested where a service can keep them back (behaviour.rs).
        ("stall@0", 0, 1),
        // Mid-stream, while the primary streams.
        ("stall@6", 3, 1),
        // During the fallback call and its keep-alives: the fallback stalls at once.
        ("reset@6, fallbacks=stall@0", usize::MAX, 2),
    ];
    for (fault, frames, calls) in phases {
        let before = two.a.calls().len() + two.b.calls().len();
        let req = messages_request(two.gateway, fault).body(body()).unwrap();
        let client = client();
        let read = async {
            let res = client.request(req).await.unwrap();
            let mut body = res.into_body();
            let mut n = 0;
            while n < frames {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        // In the fallback phase, hang up on the first keep-alive.
                        if frame
                            .data_ref()
                            .is_some_and(|d| d.starts_with(b": keep-alive"))
                        {
                            break;
                        }
                    }
                    _ => break,
                }
                n += 1;
            }
        };
        read.await;
        drop(client);
        // Longer than every timer in play: idle timeouts would have started more attempts.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = two.a.calls().len() + two.b.calls().len();
        assert_eq!(
            after - before,
            calls,
            "{fault}: upstream calls after the client left"
        );
    }
}

/// What a counting upstream received.
#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    headers: http::HeaderMap,
}

/// An upstream on loopback that records every request and answers it with `status` and
/// `body`, with the response headers that name the operator's account at the provider.
async fn counting_upstream(
    status: u16,
    content_type: &'static str,
    body: impl Fn(&http::HeaderMap) -> String + Send + Sync + 'static,
) -> (SocketAddr, std::sync::Arc<Mutex<Vec<Seen>>>) {
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let body = std::sync::Arc::new(body);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (record, body) = (record.clone(), body.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (record, body) = (record.clone(), body.clone());
                        async move {
                            let text = body(req.headers());
                            record.lock().unwrap().push(Seen {
                                uri: req.uri().to_string(),
                                headers: req.headers().clone(),
                            });
                            let _ = req.into_body().collect().await;
                            let res = http::Response::builder()
                                .status(status)
                                .header("content-type", content_type)
                                .header("set-cookie", "__cf_bm=operator-session; path=/")
                                .header("anthropic-organization-id", "org-operator-0001")
                                .header("openai-organization", "org-operator-0001")
                                .header("openai-project", "proj_operator_0001")
                                .header("request-id", "req_0001")
                                .body(Full::new(Bytes::from(text)))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A gateway with one Anthropic upstream at `upstream` (key `KEY_A`), serving model `m`.
async fn gateway_to(upstream: SocketAddr, fallback: &str) -> SocketAddr {
    let _ = logs();
    let text = format!(
        r#"listen = "127.0.0.1:0"
[fallback]
{fallback}

[[upstreams]]
name = "internal-anthropic-eu"
dialect = "anthropic"
base_url = "http://{upstream}"
api_key_env = "KEY_A"

[[models]]
name = "m"
upstream = "internal-anthropic-eu"
fallbacks = ["m2"]

[[models]]
name = "m2"
upstream = "internal-anthropic-eu"
"#
    );
    let env = |var: &str| (var == "KEY_A").then(|| KEY_A.to_owned());
    let config = config::parse(&text, &env).expect("a valid config");
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let gateway = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        proxy::build(&config),
        config.server.clone(),
        std::future::pending(),
    ));
    gateway
}

fn m_body(model: &str) -> Full<Bytes> {
    Full::new(Bytes::from(
        json!({"model": model,"max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}).to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_operator_owns_stays_inside_and_what_the_client_claims_stays_outside() {
    let stream = support::anthropic_text_stream(&["Hello", " world"]);
    let (upstream, seen) = counting_upstream(200, "text/event-stream", move |_| {
        String::from_utf8_lossy(&stream).into_owned()
    })
    .await;
    let gateway = gateway_to(upstream, "").await;
    let req = Request::post(format!(
        "http://{gateway}/v1/messages?beta=true&key={CLIENT_KEY}"
    ))
    .header("content-type", "application/json")
    .header("x_api_key", CLIENT_KEY)
    .header("x-forwarded-for", "10.9.8.7")
    .header("x-forwarded-host", "evil.example")
    .header("x-real-ip", "10.9.8.7")
    .header("forwarded", "for=10.9.8.7;host=evil.example")
    .header("x-original-url", "/admin")
    .header("expect", "100-continue")
    .header("accept-encoding", "gzip, br")
    .header("anthropic-beta", "tools-2024-04-04")
    .body(m_body("m"))
    .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    for name in [
        "set-cookie",
        "anthropic-organization-id",
        "openai-organization",
        "openai-project",
    ] {
        assert!(
            res.headers().get(name).is_none(),
            "{name} reached the client"
        );
    }
    assert_eq!(
        res.headers()["request-id"],
        "req_0001",
        "other headers pass"
    );
    let _ = res.into_body().collect().await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert_eq!(call.uri, "/v1/messages", "no query string upstream");
    for name in [
        "x_api_key",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
        "x-original-url",
        "expect",
    ] {
        assert!(
            call.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    assert_eq!(call.headers["x-api-key"], KEY_A, "the upstream's own key");
    assert_eq!(call.headers["accept-encoding"], "identity");
    assert_eq!(call.headers["anthropic-beta"], "tools-2024-04-04");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_is_not_told_which_models_exist() {
    let (upstream, seen) = counting_upstream(200, "text/event-stream", |_| String::new()).await;
    let gateway = gateway_to(upstream, "").await;
    let req = Request::post(format!("http://{gateway}/v1/messages"))
        .header("content-type", "application/json")
        .body(m_body("gpt-9"))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 404);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("gpt-9") && !text.contains("\"m\"") && !text.contains("m2"),
        "{text}"
    );
    assert!(!text.contains("`m`") && !text.contains(": m"), "{text}");
    // A model that exists, asked for on another endpoint: the same answer as one that does
    // not, so that probing endpoints does not tell which names exist.
    let on_chat = |model: &str| {
        let req = Request::post(format!("http://{gateway}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(m_body(model))
            .unwrap();
        async move {
            let res = client().request(req).await.unwrap();
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (unknown, served) = (on_chat("gpt-9").await, on_chat("m").await);
    assert_eq!(served.0, 404);
    assert_eq!(served, (unknown.0, unknown.1.replace("gpt-9", "m")));
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_names_neither_the_internal_upstream_nor_its_socket_error() {
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gateway = gateway_to(closed, "max_attempts = 2").await;
    for opt_out in [false, true] {
        let mut req = Request::post(format!("http://{gateway}/v1/messages"))
            .header("content-type", "application/json");
        if opt_out {
            req = req.header("x-midstream-fallback", "off");
        }
        let res = client()
            .request(req.body(m_body("m")).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 502);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("could not be reached"), "{text}");
        for internal in [
            "internal-anthropic-eu",
            "127.0.0.1",
            &closed.port().to_string(),
            "refused",
            "tcp",
        ] {
            assert!(
                !text.contains(internal),
                "the client learned `{internal}`: {text}"
            );
        }
    }
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logs.lines()
            .any(|l| l.contains("internal-anthropic-eu") && l.contains("onnection refused")),
        "the log keeps both:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_quotes_its_key_never_gets_it_to_the_client_or_the_log() {
    // A misconfigured proxy quoting the key it was sent, whole.
    let (upstream, _) = counting_upstream(401, "application/json", |headers| {
        let key = headers["x-api-key"].to_str().unwrap();
        json!({"type":"error","error":{"type":"authentication_error","message":format!("invalid x-api-key: {key}")}}).to_string()
    })
    .await;
    let gateway = gateway_to(upstream, "").await;
    for opt_out in [false, true] {
        let mut req = Request::post(format!("http://{gateway}/v1/messages"))
            .header("content-type", "application/json");
        if opt_out {
            req = req.header("x-midstream-fallback", "off");
        }
        let res = client()
            .request(req.body(m_body("m")).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("invalid x-api-key: [redacted]"), "{text}");
        assert!(!text.contains(KEY_A), "the key reached the client: {text}");
    }
    // Retryable, with a fallback that fails alike: logged, then handed back.
    let (upstream, seen) = counting_upstream(503, "application/json", |headers| {
        let key = headers["x-api-key"].to_str().unwrap();
        json!({"type":"error","error":{"type":"overloaded_error","message":format!("overloaded for {key}")}}).to_string()
    })
    .await;
    let gateway = gateway_to(upstream, "").await;
    let res = client()
        .request(
            Request::post(format!("http://{gateway}/v1/messages"))
                .header("content-type", "application/json")
                .body(m_body("m"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&body).contains(KEY_A));
    assert_eq!(seen.lock().unwrap().len(), 2, "the fallback was tried");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logs.contains("overloaded for [redacted]"), "{logs}");
    assert!(!logs.contains(KEY_A), "the key reached the log:\n{logs}");
}
