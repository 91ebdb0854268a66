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
use tower::{Layer, ServiceBuilder, ServiceExt};
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

/// The stack the crate docs recommend, in `Router::layer`: tower's timeout inside the layer
/// (each attempt's wait for headers) fails with an error, which the layer turns into a
/// fallback; nothing needs `HandleErrorLayer`.
#[tokio::test(start_paused = true)]
async fn a_tower_timeout_inside_the_layer_is_a_fallback_in_an_axum_router() {
    use std::time::Duration;
    use tower_http::compression::CompressionLayer;
    use tower_http::trace::TraceLayer;

    // Answers every call in full: only the primary's silence fails here.
    let upstream = Upstream::new(
        Dialect::Anthropic,
        Whole {
            text: PARTS.concat(),
            ..Whole::default()
        },
    );
    let handler_upstream = upstream.clone();
    let app = axum::Router::new()
        .route(
            "/v1/messages",
            axum::routing::post(
                move |axum::Extension(attempt): axum::Extension<tower_midstream::Attempt>,
                      req: axum::extract::Request| {
                    let upstream = handler_upstream.clone();
                    async move {
                        if attempt.is_first() {
                            // The primary never answers: the timeout fires.
                            std::future::pending::<()>().await;
                        }
                        upstream.answer(req).await.map(axum::body::Body::new)
                    }
                },
            ),
        )
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(CompressionLayer::new())
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(8))
                .layer(MidStreamFallbackLayer::new(chain()))
                .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5))),
        );
    let req = Request::post("/v1/messages")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(request_json()))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let bytes = read_all(res.into_body()).await;
    let got = check(Dialect::Anthropic, false, &bytes).unwrap();
    assert_eq!(got.text, PARTS.concat());
    let calls = upstream.calls();
    assert_eq!(calls.len(), 1, "only the fallback reached the upstream");
    assert_eq!(calls[0].body["model"], "fallback");
}

/// `route_service` around a hyper-util client: the client's errors are the layer's to handle,
/// and the `Attempt` in each request says which upstream to use.
#[tokio::test]
async fn a_hyper_util_client_in_route_service_routes_each_attempt_by_its_target() {
    let upstream = upstream();
    let addr = serve_upstream(upstream.clone()).await;
    let client: Client<_, ReplayBody<axum::body::Body>> =
        Client::builder(TokioExecutor::new()).build_http();
    // The primary's upstream refuses connections (a port just let go of); the fallback's is
    // the test upstream.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused: Uri = format!("http://{}", closed.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(closed);
    let served: Uri = format!("http://{addr}").parse().unwrap();
    let to_upstream = ServiceBuilder::new()
        .layer(MidStreamFallbackLayer::new(
            FallbackChain::new()
                .model("fallback", Prefill::Assistant)
                .fallbacks("primary", ["fallback"]),
        ))
        .map_request(move |mut req: Request<ReplayBody<axum::body::Body>>| {
            let attempt = req.extensions().get::<tower_midstream::Attempt>().cloned();
            let base = match attempt.as_ref().and_then(|a| a.target()) {
                Some("fallback") => served.clone(),
                _ => refused.clone(),
            };
            let mut parts = base.into_parts();
            parts.path_and_query = req.uri().path_and_query().cloned();
            *req.uri_mut() = Uri::from_parts(parts).unwrap();
            req
        })
        .service(client);
    let app = axum::Router::new().route_service("/v1/messages", to_upstream);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{app_addr}/v1/messages"))
        .body(Full::new(request_json()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let bytes = read_all(res.into_body()).await;
    // The fallback is the test upstream's scripted primary: it breaks after two deltas, and
    // with no fallback left the client gets them and an error event naming the refusal.
    let got = check(Dialect::Anthropic, false, &bytes).unwrap();
    let calls = upstream.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["model"], "fallback");
    assert_eq!(got.text, PARTS[..2].concat());
    // The client is told about the original failure: the refused connection.
    let error = got.error.expect("an error event");
    assert!(error.contains("(upstream unreachable)"), "{error}");
}

/// Requests the layer does not watch get a 502 too when the inner service fails: the layer
/// never fails, whatever it wraps.
#[tokio::test]
async fn an_inner_error_becomes_a_502_even_for_requests_the_layer_does_not_watch() {
    let failing = tower::service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        Err::<http::Response<Full<Bytes>>, _>(std::io::Error::other("no route to host"))
    });
    let svc = MidStreamFallbackLayer::new(chain()).layer(failing);
    // Opted out, on an Anthropic path: the error in Anthropic's format.
    let mut req = Request::post("/v1/messages")
        .body(Full::new(request_json()))
        .unwrap();
    req.extensions_mut().insert(tower_midstream::NoFallback);
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 502);
    let err = res
        .extensions()
        .get::<tower_midstream::FallbackError>()
        .cloned()
        .expect("the error, typed");
    assert_eq!(err.original().detail(), "no route to host");
    let bytes = read_all(res.into_body()).await;
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["type"], "error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no route to host"));
    // Another path: plain text.
    let req = Request::get("/v1/models")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
}

/// An inner service that fails to become ready: the layer stays ready, and the request it
/// was readied for gets the 502.
#[tokio::test]
async fn an_inner_service_that_cannot_become_ready_answers_502() {
    #[derive(Clone)]
    struct Broken;
    impl tower::Service<Request<ReplayBody<Full<Bytes>>>> for Broken {
        type Response = http::Response<Full<Bytes>>;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Err(std::io::Error::other("closed")))
        }
        fn call(&mut self, _: Request<ReplayBody<Full<Bytes>>>) -> Self::Future {
            unreachable!("never ready")
        }
    }
    let svc = MidStreamFallbackLayer::new(chain()).layer(Broken);
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 502);
    let bytes = read_all(res.into_body()).await;
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("closed"));
}

/// The README's handler takes `Extension<Attempt>`: every request it gets through the layer
/// has one, also those the layer does not watch (opted out, or a path of no generation
/// endpoint such as Anthropic's token counter).
#[tokio::test]
async fn a_handler_taking_the_attempt_gets_it_also_for_requests_the_layer_does_not_watch() {
    let app = axum::Router::new()
        .route(
            "/v1/messages",
            axum::routing::post(
                |axum::Extension(attempt): axum::Extension<tower_midstream::Attempt>| async move {
                    format!("attempt {}", attempt.number())
                },
            ),
        )
        .route(
            "/v1/messages/count_tokens",
            axum::routing::post(
                |axum::Extension(attempt): axum::Extension<tower_midstream::Attempt>| async move {
                    format!("attempt {}", attempt.number())
                },
            ),
        )
        .layer(MidStreamFallbackLayer::new(chain()));
    let opted_out = {
        let mut req = Request::post("/v1/messages")
            .body(axum::body::Body::from(request_json()))
            .unwrap();
        req.extensions_mut().insert(tower_midstream::NoFallback);
        req
    };
    let count_tokens = Request::post("/v1/messages/count_tokens")
        .body(axum::body::Body::from(request_json()))
        .unwrap();
    for req in [opted_out, count_tokens] {
        let path = req.uri().path().to_owned();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(&read_all(res.into_body()).await[..], b"attempt 1", "{path}");
    }
}

/// What `redact` promises holds for every request through the layer: an error body quoting a
/// key is redacted also when fallback is off for the request, or its path is not watched.
#[tokio::test]
async fn an_error_body_quoting_a_key_is_redacted_also_on_requests_the_layer_does_not_watch() {
    const KEY: &str = "tenant-key-0123456789";
    let quoting = tower::service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        let body = format!(
            r#"{{"type":"error","error":{{"type":"authentication_error","message":"bad key {KEY}"}}}}"#
        );
        let mut res = http::Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = http::StatusCode::UNAUTHORIZED;
        Ok::<_, Infallible>(res)
    });
    let svc = MidStreamFallbackLayer::new(chain())
        .redact(tower_midstream::Redactor::new().secret(KEY))
        .layer(quoting);
    let mut opted_out = Request::post("/v1/messages")
        .body(Full::new(request_json()))
        .unwrap();
    opted_out
        .extensions_mut()
        .insert(tower_midstream::NoFallback);
    let count_tokens = Request::post("/v1/messages/count_tokens")
        .body(Full::new(request_json()))
        .unwrap();
    let watched = Request::post("/v1/messages")
        .body(Full::new(request_json()))
        .unwrap();
    for req in [opted_out, count_tokens, watched] {
        let path = req.uri().path().to_owned();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let bytes = read_all(res.into_body()).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(KEY), "{path}: {text}");
        assert!(text.contains("bad key [redacted]"), "{path}: {text}");
    }
}
