//! The layer in the stacks users have: `axum::Router::layer`, and a hyper-util client as the
//! inner service; real sockets on loopback.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use support::*;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill, ReplayBody};

const PARTS: [&str; 4] = ["Streams ", "break; ", "answers ", "survive."];

fn upstream() -> Upstream {
    let bytes = anthropic_text_stream(&PARTS);
    Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: PARTS.concat(),
            ..Whole::default()
        },
    )
    .then(Scripted::Stream {
        bytes: Bytes::from(events_of(&bytes)[..4].concat()),
        cuts: vec![],
        fault: Some(Fault::Reset),
    })
}

fn chain() -> FallbackChain {
    FallbackChain::new()
        .model("fallback", Prefill::Assistant)
        .fallbacks("primary", ["fallback"])
}

fn request_json() -> Bytes {
    Bytes::from(
        json!({"model":"primary","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}).to_string(),
    )
}

/// Serves `upstream` over HTTP/1.1 on loopback; the reset becomes a real aborted body.
async fn serve_upstream(upstream: Upstream) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let upstream = upstream.clone();
                    async move { Ok::<_, Infallible>(upstream.answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn read_all<B>(body: B) -> Bytes
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    body.collect().await.expect("a clean end").to_bytes()
}

#[tokio::test]
async fn works_as_an_axum_router_layer() {
    let upstream = upstream();
    let handler_upstream = upstream.clone();
    let app = axum::Router::new()
        .route(
            "/v1/messages",
            axum::routing::post(move |req: Request<axum::body::Body>| {
                let upstream = handler_upstream.clone();
                async move { upstream.answer(req).await.map(axum::body::Body::new) }
            }),
        )
        .layer(MidStreamFallbackLayer::new(chain()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{addr}/v1/messages"))
        .header("content-type", "application/json")
        .body(Full::new(request_json()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let bytes = read_all(res.into_body()).await;
    let got = check(Dialect::Anthropic, false, &bytes).unwrap();
    assert_eq!(got.text, PARTS.concat());
    assert_eq!(upstream.calls().len(), 2);
}

#[tokio::test]
async fn works_around_a_hyper_util_client() {
    let upstream = upstream();
    let addr = serve_upstream(upstream.clone()).await;
    let client: Client<_, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let base: Uri = format!("http://{addr}").parse().unwrap();
    let svc = ServiceBuilder::new()
        .layer(MidStreamFallbackLayer::new(chain()))
        .map_request(move |mut req: Request<ReplayBody<Full<Bytes>>>| {
            let path = req.uri().path_and_query().unwrap().clone();
            let mut parts = base.clone().into_parts();
            parts.path_and_query = Some(path);
            *req.uri_mut() = Uri::from_parts(parts).unwrap();
            req
        })
        .service(client);
    let req = Request::post("/v1/messages")
        .body(Full::new(request_json()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let bytes = read_all(res.into_body()).await;
    let got = check(Dialect::Anthropic, false, &bytes).unwrap();
    assert_eq!(got.text, PARTS.concat());
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].body["messages"][1],
        json!({"role":"assistant","content":"Streams break;"})
    );
}
