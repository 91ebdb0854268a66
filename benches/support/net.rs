//! On loopback: the bench upstream, the proxy (bare, or the same with the layer), a client.
//!
//! The proxy is one piece of code, [`Retarget`] around a hyper-util client, served by hyper;
//! the layered proxy is that same service with [`MidStreamFallbackLayer`] around it. Only the
//! request body type differs (the layer hands the client a `ReplayBody`), so the two are two
//! instances of the same generic code.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{Layer, Service};
use tower_midstream::{
    FallbackChain, MidStreamFallback, MidStreamFallbackLayer, Prefill, ReplayBody,
};

use super::stream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HTTP/1.1 everywhere (a gateway's usual hops), or HTTP/2 (many streams over few sockets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

// ---- upstream -------------------------------------------------------------------------

/// Request headers that script the bench upstream.
pub const DELTAS: &str = "x-bench-deltas";
pub const FAIL_AFTER: &str = "x-bench-fail-after";
pub const FAULT: &str = "x-bench-fault";
pub const HOLD_AFTER: &str = "x-bench-hold-after";
/// Microseconds the upstream waits between events (a model's pace), instead of just yielding.
pub const PACE_US: &str = "x-bench-pace-us";
/// The primary's wire format and key order (`stream::Shape::name`); Anthropic by default.
pub const SHAPE: &str = "x-bench-shape";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The body fails: HTTP/1.1 aborts the connection, HTTP/2 resets the stream.
    Reset,
    /// An in-band `overloaded_error` event, then the end.
    InBand,
}

/// Shared by the upstream's streams.
#[derive(Debug)]
pub struct UpstreamState {
    /// Streams told to hold wait until this turns true (`send_replace(true)`).
    pub released: tokio::sync::watch::Sender<bool>,
    pub primary_calls: AtomicUsize,
    pub fallback_calls: AtomicUsize,
}

impl Default for UpstreamState {
    fn default() -> Self {
        UpstreamState {
            released: tokio::sync::watch::channel(false).0,
            primary_calls: AtomicUsize::new(0),
            fallback_calls: AtomicUsize::new(0),
        }
    }
}

type Hold = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An upstream that streams like a model: one event per write. A request for `primary` gets
/// the `x-bench-deltas` stream, failing after `x-bench-fail-after` events if asked; any other
/// model continues the same answer from the request's assistant prefill.
pub async fn serve_upstream(listener: TcpListener, proto: Proto, state: Arc<UpstreamState>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| answer(req, state.clone()));
            let io = TokioIo::new(tcp);
            let _ = match proto {
                Proto::H1 => {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                }
                Proto::H2 => h2_server().serve_connection(io, svc).await,
            };
        });
    }
}

fn h2_server() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.max_concurrent_streams(100_000)
        .initial_connection_window_size(256 << 20)
        .initial_stream_window_size(4 << 20)
        .max_send_buf_size(64 << 10);
    b
}

fn header<B>(req: &Request<B>, name: &str) -> Option<usize> {
    req.headers().get(name)?.to_str().ok()?.parse().ok()
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<UpstreamState>,
) -> Result<Response<UpstreamBody>, Infallible> {
    let deltas = header(&req, DELTAS).unwrap_or(100);
    let fail_after = header(&req, FAIL_AFTER);
    let fault = match req.headers().get(FAULT).map(|v| v.as_bytes()) {
        Some(b"inband") => Fault::InBand,
        _ => Fault::Reset,
    };
    let hold_after = header(&req, HOLD_AFTER);
    let pace = header(&req, PACE_US).map(|us| std::time::Duration::from_micros(us as u64));
    let shape = req
        .headers()
        .get(SHAPE)
        .and_then(|v| stream::Shape::from_name(v.to_str().ok()?))
        .unwrap_or(stream::Shape::Anthropic);
    let body = req.into_body().collect().await.map(|c| c.to_bytes());
    let body = body.unwrap_or_default();
    let primary = body.starts_with(br#"{"model":"primary""#);
    let events = if primary {
        state.primary_calls.fetch_add(1, Ordering::Relaxed);
        stream::shaped_events(shape, deltas)
    } else {
        state.fallback_calls.fetch_add(1, Ordering::Relaxed);
        Arc::new(stream::fallback_events(deltas, &stream::prefill_of(&body)))
    };
    let body = UpstreamBody {
        events,
        next: 0,
        fail: if primary {
            fail_after.map(|n| (n, fault))
        } else {
            None
        },
        hold_after: if primary { hold_after } else { None },
        state,
        hold: None,
        yield_next: false,
        pace,
        wait: None,
        ended: false,
    };
    let mut res = Response::new(body);
    res.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    Ok(res)
}

/// The upstream's response body: its events one by one, yielding between them so that the
/// server writes each on its own, as a model streaming tokens does.
pub struct UpstreamBody {
    events: Arc<Vec<Bytes>>,
    next: usize,
    fail: Option<(usize, Fault)>,
    hold_after: Option<usize>,
    state: Arc<UpstreamState>,
    hold: Option<Hold>,
    yield_next: bool,
    pace: Option<std::time::Duration>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    ended: bool,
}

const OVERLOADED: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if this.yield_next {
            this.yield_next = false;
            match this.pace {
                Some(pace) => this.wait = Some(Box::pin(tokio::time::sleep(pace))),
                None => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        if let Some(wait) = &mut this.wait {
            std::task::ready!(wait.as_mut().poll(cx));
            this.wait = None;
        }
        if this.hold_after == Some(this.next) {
            let hold = this.hold.get_or_insert_with(|| {
                let mut rx = this.state.released.subscribe();
                Box::pin(async move {
                    let _ = rx.wait_for(|released| *released).await;
                })
            });
            std::task::ready!(hold.as_mut().poll(cx));
            this.hold_after = None;
            this.hold = None;
        }
        if let Some((at, fault)) = this.fail {
            if this.next == at {
                this.ended = true;
                return Poll::Ready(Some(match fault {
                    Fault::Reset => Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "bench upstream reset",
                    )),
                    Fault::InBand => Ok(Frame::data(Bytes::from_static(OVERLOADED))),
                }));
            }
        }
        match this.events.get(this.next) {
            Some(ev) => {
                this.next += 1;
                this.yield_next = true;
                Poll::Ready(Some(Ok(Frame::data(ev.clone()))))
            }
            None => {
                this.ended = true;
                Poll::Ready(None)
            }
        }
    }
}

// ---- proxy ----------------------------------------------------------------------------

/// The proxy's service: sends the request on to the upstream with a hyper-util client.
#[derive(Clone)]
pub struct Retarget<S> {
    inner: S,
    authority: Authority,
}

impl<S> Retarget<S> {
    pub fn new(inner: S, upstream: SocketAddr) -> Self {
        Retarget {
            inner,
            authority: upstream.to_string().parse().unwrap(),
        }
    }
}

impl<S, B> Service<Request<B>> for Retarget<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        *req.uri_mut() = Uri::from_parts(parts).expect("a full URI");
        // Hyper's server reads the request as HTTP/2 when the client spoke it; the client
        // below chooses its own version.
        *req.version_mut() = http::Version::HTTP_11;
        self.inner.call(req)
    }
}

/// The hyper-util client the proxy forwards with.
pub fn client<B>(proto: Proto) -> Client<HttpConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_max_idle_per_host(usize::MAX);
    if proto == Proto::H2 {
        b.http2_only(true)
            .http2_initial_connection_window_size(256 << 20)
            .http2_initial_stream_window_size(4 << 20)
            .http2_max_send_buf_size(64 << 10);
    }
    b.build(connector)
}

pub type Bare = Retarget<Client<HttpConnector, Incoming>>;
pub type Layered =
    MidStreamFallback<Retarget<Client<HttpConnector, ReplayBody<Incoming>>>, FallbackChain>;

/// The planner every bench uses: `primary` falls back to `fallback`, which takes a prefill.
pub fn chain() -> FallbackChain {
    FallbackChain::new()
        .model("fallback", Prefill::Assistant)
        .fallbacks("primary", ["fallback"])
}

pub fn bare(upstream: SocketAddr, proto: Proto) -> Bare {
    Retarget::new(client(proto), upstream)
}

pub fn layered(upstream: SocketAddr, proto: Proto) -> Layered {
    MidStreamFallbackLayer::new(chain()).layer(Retarget::new(client(proto), upstream))
}

/// Serves `svc` as a proxy: hyper's server, one task per connection.
pub async fn serve_proxy<S, B>(listener: TcpListener, svc: S, proto: Proto)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(svc.clone());
        tokio::spawn(async move {
            let io = TokioIo::new(tcp);
            let _ = match proto {
                Proto::H1 => {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                }
                Proto::H2 => h2_server().serve_connection(io, svc).await,
            };
        });
    }
}

/// Called with each data frame of a [`Watched`] body.
pub type OnFrame = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Wraps a response body to note when its frames leave (used to time failover).
pub struct Watched<B> {
    pub inner: B,
    pub on_frame: OnFrame,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                (self.on_frame)(data);
            }
        }
        polled
    }
}

// ---- loopback -------------------------------------------------------------------------

pub async fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// The bench client's request for an Anthropic stream of `deltas` deltas.
pub fn stream_request(
    addr: SocketAddr,
    body: Bytes,
    deltas: usize,
    extra: &[(&'static str, String)],
) -> Request<Full<Bytes>> {
    shaped_request(addr, body, stream::Shape::Anthropic, deltas, extra)
}

/// The bench client's request for a stream of `deltas` deltas in `shape`.
pub fn shaped_request(
    addr: SocketAddr,
    body: Bytes,
    shape: stream::Shape,
    deltas: usize,
    extra: &[(&'static str, String)],
) -> Request<Full<Bytes>> {
    let mut b = Request::post(format!("http://{addr}{}", shape.path()))
        .header(SHAPE, shape.name())
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header(DELTAS, deltas.to_string());
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(body)).unwrap()
}
