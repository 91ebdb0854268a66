//! `MidStreamFallbackLayer` in an axum 0.8 app that routes each request by model to a
//! hyper-util client, with the tower and tower-http layers a service has, each where it works:
//!
//! ```text
//! cargo run --example axum                       # the demo upstream, and the app on 127.0.0.1:8080
//! cargo run --example axum -- --listen 127.0.0.1:3000
//! ```
//!
//! It starts the demo upstream of examples/gateway on loopback (its primaries break half-way
//! through every stream) and prints `curl` commands to try; the log shows each request's span
//! with an attempt span per upstream call inside it.
//!
//! ```text
//! Router ── Trace ── Compression ── GlobalConcurrencyLimit ── MidStreamFallbackLayer ── Timeout ── forward ── client
//! └─ outside: one request, one continuous body ──────────────┘                         └─ inside: once per attempt ─┘
//! ```
//!
//! * `TraceLayer`, outside: one span per client request; the layer's `midstream.request` span
//!   and its attempt spans nest inside it.
//! * `CompressionLayer`, outside: the layer reads the upstream's SSE as plain text (and
//!   tower-http leaves `text/event-stream` uncompressed anyway).
//! * `GlobalConcurrencyLimitLayer`, outside: bounds the requests being set up at once
//!   (collected bodies, waits for headers), across both routes (`Router::layer` gives each
//!   route its own copy of a layer, so tower's `ConcurrencyLimitLayer` would count per route).
//!   Its permit is released when the response headers go out, not when the stream ends.
//! * `MidStreamFallbackLayer`: never fails (`Infallible`), so whatever fails inside it is a
//!   failure it can fall back from, and `Router::layer` accepts the stack without a
//!   `HandleErrorLayer`.
//! * `tower::timeout::TimeoutLayer`, inside: bounds each attempt's wait for response headers;
//!   an elapsed timeout is an error the layer answers with a fallback. Outside the layer it
//!   would need `HandleErrorLayer` (or tower-http's `TimeoutLayer`, which answers 408 itself),
//!   and would bound the whole answer, fallbacks included.
//!
//! The handler, `forward`, is an ordinary axum handler: it takes `axum::extract::Request`
//! (the layer's collected body, boxed as axum's `Body`) and the `Attempt` the layer names in
//! the request's extensions, whose `target` is the model to route to: no need to read the
//! body again. It asks the upstream for `accept-encoding: identity` whatever the client
//! accepts: the layer reads plain SSE, and an upstream (or a CDN before it) that compressed
//! the stream would leave it unwatched, without fallback.
//!
//! Both sockets of a stream have `TCP_NODELAY`: the accepted one (`tap_io` on the listener)
//! and the upstream's (the connector), so that each event leaves at once instead of waiting
//! for the previous one's acknowledgement (Nagle).

#[allow(dead_code)]
#[path = "gateway/demo.rs"]
mod demo;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::{Listener, ListenerExt};
use axum::{Extension, Router};
use http::{header, HeaderValue, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpStream};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;
use tower_midstream::{Attempt, FallbackChain, MidStreamFallbackLayer, Prefill};

/// Where each model is served. Here every model is the demo's; in production the Claude models
/// would go to `https://api.anthropic.com` and the GPT ones to `https://api.openai.com` (with
/// an HTTPS connector, and each provider's key set in `forward`).
#[derive(Clone)]
struct Upstreams {
    by_model: Arc<HashMap<&'static str, Uri>>,
    client: Client<HttpConnector, Body>,
}

/// Sends one attempt to the upstream serving its model.
async fn forward(
    State(upstreams): State<Upstreams>,
    Extension(attempt): Extension<Attempt>,
    mut req: Request,
) -> Response {
    let Some(base) = attempt.target().and_then(|m| upstreams.by_model.get(m)) else {
        // A client error: the layer passes it on as it is.
        let message = format!("model {:?} is not served here", attempt.target());
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = req.uri().path_and_query().cloned();
    *req.uri_mut() = Uri::from_parts(parts).expect("a base URI and a path");
    // The client sets the upstream's own.
    req.headers_mut().remove(header::HOST);
    // Plain SSE, whatever the client accepts (CompressionLayer outside leaves the header on):
    // the layer cannot watch a compressed stream.
    req.headers_mut().insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    match upstreams.client.request(req).await {
        Ok(response) => response.map(Body::new),
        // A 502 is retryable: the layer tries the next fallback.
        Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    }
}

/// The app, proxying to the demo upstream at `demo`.
fn app(demo: SocketAddr) -> Router {
    let chain = FallbackChain::new()
        .model(demo::CLAUDE_NO_PREFILL, Prefill::None) // rejects prefill: gets the instruction
        .model(demo::CLAUDE_PREFILL, Prefill::Assistant)
        .fallbacks(
            demo::CLAUDE_PRIMARY,
            [demo::CLAUDE_NO_PREFILL, demo::CLAUDE_PREFILL],
        )
        .model(demo::GPT_PREFIX, Prefill::Prefix)
        .fallbacks(demo::GPT_PRIMARY, [demo::GPT_PREFIX, demo::GPT_NO_PREFIX]);
    let base: Uri = format!("http://{demo}")
        .parse()
        .expect("an address is a URI");
    let models = [
        demo::CLAUDE_PRIMARY,
        demo::CLAUDE_NO_PREFILL,
        demo::CLAUDE_PREFILL,
        demo::GPT_PRIMARY,
        demo::GPT_PREFIX,
        demo::GPT_NO_PREFIX,
    ];
    let upstreams = Upstreams {
        by_model: Arc::new(models.into_iter().map(|m| (m, base.clone())).collect()),
        client: Client::builder(TokioExecutor::new()).build(connector()),
    };

    Router::new()
        .route("/v1/messages", post(forward))
        .route("/v1/chat/completions", post(forward))
        .with_state(upstreams)
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(CompressionLayer::new())
                .layer(GlobalConcurrencyLimitLayer::new(512))
                .layer(MidStreamFallbackLayer::new(chain).idle_timeout(Duration::from_secs(30)))
                .layer(TimeoutLayer::new(Duration::from_secs(20))),
        )
}

/// Connections to the upstreams, with `TCP_NODELAY`: a request leaves at once.
fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

/// The app's listener, with `TCP_NODELAY` on every accepted socket (`axum::serve` sets none):
/// each SSE event is a small write that must leave at once.
fn with_nodelay(listener: TcpListener) -> impl Listener<Io = TcpStream, Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=debug".into()),
        )
        .init();
    let listen = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => SocketAddr::from(([127, 0, 0, 1], 8080)),
        [flag, addr] if flag == "--listen" => addr.parse()?,
        _ => return Err("usage: axum [--listen ADDR]".into()),
    };

    let demo_listener = TcpListener::bind("127.0.0.1:0").await?;
    let demo_addr = demo_listener.local_addr()?;
    tokio::spawn(demo::Demo::new(Duration::from_millis(40)).serve(demo_listener));

    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!("demo_upstream=http://{demo_addr}\napp=http://{addr}");
    println!(
        r#"
Both primaries break half-way; the layer continues each answer on a fallback. Try:

  curl -N http://{addr}/v1/messages -H 'content-type: application/json' \
    -d '{{"model":"{claude}","max_tokens":1024,"stream":true,"messages":[{{"role":"user","content":"Why do streams break?"}}]}}'

  curl -N http://{addr}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"{gpt}","stream":true,"messages":[{{"role":"user","content":"Why do streams break?"}}]}}'
"#,
        claude = demo::CLAUDE_PRIMARY,
        gpt = demo::GPT_PRIMARY,
    );
    axum::serve(with_nodelay(listener), app(demo_addr)).await?;
    Ok(())
}

/// `cargo test` runs these (the example has `test = true` in Cargo.toml): the app above, on
/// loopback, in front of the demo upstream.
#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    async fn started() -> (SocketAddr, demo::Demo) {
        let demo = demo::Demo::new(Duration::ZERO);
        let demo_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let demo_addr = demo_listener.local_addr().unwrap();
        tokio::spawn(demo.clone().serve(demo_listener));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(with_nodelay(listener), app(demo_addr))
                .await
                .unwrap()
        });
        (addr, demo)
    }

    async fn post(addr: SocketAddr, path: &str, body: serde_json::Value) -> (StatusCode, String) {
        post_accepting(addr, path, body, "identity").await
    }

    async fn post_accepting(
        addr: SocketAddr,
        path: &str,
        body: serde_json::Value,
        accept: &str,
    ) -> (StatusCode, String) {
        let client: Client<_, Full<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let req = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .header("accept-encoding", accept)
            .body(Full::new(body.to_string().into()))
            .unwrap();
        let res = client.request(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// The text of every `"text"` / `"content"` delta, in order.
    fn text_of(stream: &str) -> String {
        let mut text = String::new();
        for data in stream.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            let piece = v["delta"]["text"]
                .as_str()
                .or_else(|| v["choices"][0]["delta"]["content"].as_str());
            text.push_str(piece.unwrap_or(""));
        }
        text
    }

    #[tokio::test]
    async fn a_stream_that_breaks_reaches_the_client_whole_in_both_dialects() {
        let (addr, demo) = started().await;
        let question = serde_json::json!([{"role":"user","content":"Why do streams break?"}]);
        // As the official Python SDKs do: a streamed answer is not compressed anyway
        // (tower-http leaves `text/event-stream` alone), but the header reaches the handler.
        let (status, stream) = post_accepting(
            addr,
            "/v1/messages",
            serde_json::json!({"model":demo::CLAUDE_PRIMARY,"max_tokens":1024,"stream":true,"messages":question}),
            "gzip, deflate",
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(text_of(&stream), demo::TEXT);
        assert!(stream.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        let models: Vec<String> = demo.calls().into_iter().map(|c| c.model).collect();
        assert_eq!(models, [demo::CLAUDE_PRIMARY, demo::CLAUDE_NO_PREFILL]);
        for call in demo.calls() {
            // The client accepts gzip; the upstream is asked for what the layer can read.
            assert_eq!(call.headers["accept-encoding"], "identity");
        }

        let (status, stream) = post(
            addr,
            "/v1/chat/completions",
            serde_json::json!({"model":demo::GPT_PRIMARY,"stream":true,"messages":question}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(text_of(&stream), demo::TEXT);
        assert!(stream.ends_with("data: [DONE]\n\n"));
        let calls = demo.calls();
        assert_eq!(calls[3].model, demo::GPT_PREFIX);
        assert!(calls[3].ends_with_assistant(), "a prefill");
    }

    #[tokio::test]
    async fn an_unknown_model_is_a_404_from_the_handler_passed_on_by_the_layer() {
        let (addr, demo) = started().await;
        let (status, body) = post(
            addr,
            "/v1/messages",
            serde_json::json!({"model":"nobody","max_tokens":10,"stream":true,"messages":[]}),
        )
        .await;
        assert_eq!(status, 404);
        assert!(body.contains("nobody"), "{body}");
        assert!(demo.calls().is_empty());
    }

    #[tokio::test]
    async fn accepted_and_upstream_sockets_have_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = with_nodelay(listener);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap(), "the accepted socket");

        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let upstream = tower::Service::call(&mut connector(), uri).await.unwrap();
        assert!(upstream.inner().nodelay().unwrap(), "the upstream socket");
    }
}
