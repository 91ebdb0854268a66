//! One `ServiceBuilder` stack with the tower and tower-http layers a gateway uses around
//! `MidStreamFallbackLayer`, each on the side of it where it works:
//!
//! ```text
//! Trace ── Compression ── MidStreamFallbackLayer ── Timeout ── ResponseBodyTimeout ── Retry ── client
//! └── outside: sees one request and ──┘            └── inside: runs once per attempt ──────┘
//!     one continuous body
//! ```
//!
//! * `TraceLayer`, outside: one span per client request, however many attempts it takes.
//! * `CompressionLayer`, outside: the layer must read the upstream's SSE in plain text. (It
//!   leaves `text/event-stream` alone anyway and compresses the JSON of non-streaming answers.)
//! * `MidStreamFallbackLayer`: its keep-alive sends SSE comments while a fallback is being
//!   called, so that the client and any idle timeout outside it do not give up in that gap.
//! * `tower::timeout::TimeoutLayer`, inside: bounds each attempt's time to response headers.
//!   A timeout becomes an error before the stream, and the layer restarts on a fallback.
//!   Outside, it would bound the whole answer, fallbacks included.
//! * `tower_http::timeout::ResponseBodyTimeoutLayer`, inside: a body that sends no bytes for
//!   that long (a dead connection) errors, which the layer treats as a broken stream and
//!   continues elsewhere. Outside, it would cut the client off during a fallback instead. The
//!   layer's own `idle_timeout` is the other half: it counts events, not bytes, so make it
//!   longer, for models that think silently while the provider sends pings.
//! * `tower::retry::RetryLayer`, innermost: retries a connection error on the same upstream
//!   before any response exists, at no cost to the stream. It cannot help once the body has
//!   started; that is what the layer is for.
//!
//! ```text
//! cargo run --example gateway -- --demo-upstream-only   # prints demo_upstream=http://127.0.0.1:PORT
//! cargo run --example compose -- http://127.0.0.1:PORT  # listens on 127.0.0.1:8080
//! ```

use std::future::{ready, Ready};
use std::time::Duration;

use http::{header, Request, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::retry::{Policy, RetryLayer};
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::ResponseBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_midstream::{FallbackChain, MidStreamFallbackLayer, Prefill, ReplayBody};

/// Retries errors (no response at all) up to `left` more times. The layer's collected body
/// makes the request cheap to copy; a body it did not collect cannot be retried.
#[derive(Clone)]
struct RetryConnectErrors {
    left: u32,
}

impl<B, Res, E> Policy<Request<ReplayBody<B>>, Res, E> for RetryConnectErrors {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<ReplayBody<B>>,
        result: &mut Result<Res, E>,
    ) -> Option<Self::Future> {
        if result.is_err() && self.left > 0 {
            self.left -= 1;
            Some(ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let mut copy = Request::new(req.body().try_clone()?);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // INFO shows each request's span and the layer's failures and fallbacks.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let upstream: Uri = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:9000".into())
        .parse()?;
    let chain = FallbackChain::new()
        .model("demo-claude-prefill", Prefill::Assistant)
        .fallbacks("demo-claude-primary", ["demo-claude-prefill"])
        .model("demo-gpt-prefix", Prefill::Prefix)
        .fallbacks("demo-gpt-primary", ["demo-gpt-prefix"]);
    let client: Client<HttpConnector, ReplayBody<Incoming>> =
        Client::builder(TokioExecutor::new()).build_http();

    let service = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(CompressionLayer::new())
        .layer(
            MidStreamFallbackLayer::new(chain)
                .idle_timeout(Duration::from_secs(60))
                .keep_alive(Duration::from_secs(5)),
        )
        .layer(TimeoutLayer::new(Duration::from_secs(20)))
        .layer(ResponseBodyTimeoutLayer::new(Duration::from_secs(15)))
        .layer(RetryLayer::new(RetryConnectErrors { left: 2 }))
        .map_request(move |mut req: Request<ReplayBody<Incoming>>| {
            let mut parts = upstream.clone().into_parts();
            parts.path_and_query = req.uri().path_and_query().cloned();
            *req.uri_mut() = Uri::from_parts(parts).expect("the upstream's URI and the path");
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
            if let Err(err) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection: {err}");
            }
        });
    }
}
