//! The serving loop: accepting connections, the limits that keep slow or idle clients from
//! holding them, and a graceful shutdown.
//!
//! ```text
//! accept ── (max_connections: wait in the backlog) ── TCP_NODELAY ── HTTP/1.1 or h2c
//!   per connection: header read timeout (HTTP/1.1), h2 stream and header limits,
//!                   closed after keep_alive_timeout with no request in flight
//!   per request:    request body timeouts (between pieces, and in all) ── Gateway::handle
//! shutdown: stop accepting, let every connection finish what it serves, up to the grace
//! period, then cut what is left
//! ```
//!
//! Every limit is a key of the config's `[server]` section (`config::Server`). The same loop
//! serves the clients' listener (the [`Gateway`]) and the admin listener (`admin::Admin`),
//! each a [`Handler`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower_http::timeout::TimeoutBody;

use crate::config::Server;
use crate::proxy::{BoxError, Gateway, GatewayBody};

/// A request as a handler gets it: its body bounded in time.
pub type ClientBody = TimeoutBody<Deadline<Incoming>>;

/// What a listener answers with.
pub trait Handler: Clone + Send + Sync + 'static {
    /// The response to one request; never fails: errors are responses.
    fn answer(
        &self,
        req: Request<ClientBody>,
    ) -> impl Future<Output = Response<GatewayBody>> + Send;
}

impl Handler for Gateway {
    fn answer(
        &self,
        req: Request<ClientBody>,
    ) -> impl Future<Output = Response<GatewayBody>> + Send {
        self.handle(req)
    }
}

/// Serves `handler` on `listener` (HTTP/1.1 and h2c) within `limits`, until `shutdown`
/// completes; then stops accepting and returns once every connection has finished, or when
/// the grace period is over (what is left is cut).
pub async fn serve(
    listener: TcpListener,
    handler: impl Handler,
    limits: Server,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut last_full_warning: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Not an error per connection: warn at most every ten seconds.
                if last_full_warning.map_or(true, |at| at.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(
                        target: "gateway",
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until one closes \
                         (server.max_connections)"
                    );
                    last_full_warning = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("never closed"),
                    () = &mut shutdown => break,
                    Some(_) = connections.join_next() => continue,
                }
            }
        };
        let stream = tokio::select! {
            stream = accept(&listener) => stream,
            () = &mut shutdown => break,
            Some(_) = connections.join_next() => continue,
        };
        let (handler, limits, stopping) = (handler.clone(), limits.clone(), stopping.clone());
        connections.spawn(async move {
            serve_connection(stream, handler, &limits, stopping).await;
            drop(slot);
        });
    }
    drop(listener);
    let open = connections.len();
    tracing::info!(
        target: "gateway",
        open,
        grace_ms = limits.shutdown_grace.as_millis() as u64,
        "shutting down: no new connections; open ones finish what they serve"
    );
    let _ = stop.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            target: "gateway",
            cut = connections.len(),
            "shutdown grace period over: cutting the connections still open"
        );
        connections.shutdown().await;
    }
    tracing::info!(target: "gateway", "shut down");
}

/// The next connection, with `TCP_NODELAY` set: an SSE event is a small write that must leave
/// at once, not wait for the previous one's acknowledgement (Nagle).
pub async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(target: "gateway", %err, "cannot set TCP_NODELAY");
                }
                return stream;
            }
            Err(err) => {
                // Out of file descriptors and the like: keep serving the connections we have.
                tracing::warn!(target: "gateway", %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection, until it ends: closed after `keep_alive_timeout` with no request in
/// flight, and gracefully (the requests in flight finish) once `stopping` turns true.
async fn serve_connection(
    stream: TcpStream,
    handler: impl Handler,
    limits: &Server,
    mut stopping: watch::Receiver<bool>,
) {
    let (active, mut watch_active) = watch::channel(0usize);
    let body_limits = (limits.request_body_timeout, limits.request_body_deadline);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        // Counted from the start: a request whose answer is dropped halfway stops counting.
        let guard = InFlight::new(active.clone());
        async move {
            let req = req.map(|body| {
                TimeoutBody::new(
                    body_limits.0.unwrap_or(Duration::MAX),
                    Deadline::new(body_limits.1, body),
                )
            });
            let response = handler.answer(req).await;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _guard: guard,
            }))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        // Idle from now when nothing is in flight; re-read whenever that count changes.
        let idle_at = match (*watch_active.borrow_and_update(), limits.keep_alive_timeout) {
            (0, Some(idle)) => Some(Instant::now() + idle),
            _ => None,
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(target: "gateway", %err, "connection ended with an error");
                }
                return;
            }
            _ = watch_active.changed() => {}
            _ = stopping.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = sleep_until(idle_at), if !closing && idle_at.is_some() => {
                tracing::debug!(target: "gateway", "closing a connection idle for keep_alive_timeout");
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counts a request as in flight for as long as it lives (its response body included).
struct InFlight(watch::Sender<usize>);

impl InFlight {
    fn new(count: watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight until it is done.
    pub struct Tracked {
        #[pin]
        body: GatewayBody,
        _guard: InFlight,
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().body.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// A request body that must arrive whole within a deadline from its first read: tower-http's
    /// timeout bounds each wait between pieces, which a client sending a byte at a time keeps
    /// short.
    pub struct Deadline<B> {
        #[pin]
        body: B,
        within: Option<Duration>,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<B> Deadline<B> {
    pub fn new(within: Option<Duration>, body: B) -> Self {
        Deadline {
            body,
            within,
            sleep: None,
        }
    }
}

/// The request body did not arrive within `server.request_body_deadline_ms`.
#[derive(Debug)]
pub struct BodyDeadline(Duration);

impl std::fmt::Display for BodyDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} ms",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for BodyDeadline {}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(within) = *this.within {
            if this.sleep.is_none() {
                this.sleep.set(Some(tokio::time::sleep(within)));
            }
            let sleep = this.sleep.as_mut().as_pin_mut().expect("armed above");
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(Some(Err(BodyDeadline(within).into())));
            }
        }
        this.body.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
