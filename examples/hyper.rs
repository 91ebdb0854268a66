//! `MidStreamFallbackLayer` in a plain hyper server, with a hyper-util client inside it.
//!
//! ```text
//! cargo run --example gateway -- --demo-upstream-only   # prints demo_upstream=http://127.0.0.1:PORT
//! cargo run --example hyper -- http://127.0.0.1:PORT    # listens on 127.0.0.1:8080
//! ```
//!
//! then send it the `curl` commands that `cargo run --example gateway` prints, on port 8080.
//!
//! Every request goes to one upstream: the layer sets the body's `model` to the fallback's, so
//! an upstream that serves several models is all it needs. This proxy forwards headers as they
//! come, the client's key included; examples/gateway routes by model to several upstreams,
//! each with its own key.

use http::{header, Request, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill, ReplayBody};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream: Uri = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:9000".into())
        .parse()?;

    // The demo upstream's models; a model not declared here is assumed to reject prefill.
    let chain = FallbackChain::new()
        .model("demo-claude-no-prefill", Prefill::None)
        .model("demo-claude-prefill", Prefill::Assistant)
        .fallbacks(
            "demo-claude-primary",
            ["demo-claude-no-prefill", "demo-claude-prefill"],
        )
        .model("demo-gpt-prefix", Prefill::Prefix)
        .fallbacks("demo-gpt-primary", ["demo-gpt-prefix"]);

    // The client sends the layer's `ReplayBody` as it is: the collected request, by refcount.
    let client: Client<HttpConnector, ReplayBody<Incoming>> =
        Client::builder(TokioExecutor::new()).build_http();
    let service = ServiceBuilder::new()
        .layer(MidStreamFallbackLayer::new(chain))
        // Inside the layer: runs for every attempt.
        .map_request(move |mut req: Request<ReplayBody<Incoming>>| {
            let mut parts = upstream.clone().into_parts();
            parts.path_and_query = req.uri().path_and_query().cloned();
            *req.uri_mut() = Uri::from_parts(parts).expect("the upstream's URI and the path");
            // The client sets the upstream's own.
            req.headers_mut().remove(header::HOST);
            req
        })
        .service(client);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            // A connection failure that the fallbacks hit too comes back as a 502 from the layer;
            // only requests it does not watch can fail here, and hyper closes their connection.
            if let Err(err) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection: {err}");
            }
        });
    }
}
