//! Failover: from the layer noticing a failure to the first continuation byte it sends the
//! client, minus the fallback's own time to first byte; request bodies of 10 KB and 1 MB.
//!
//! client → proxy with the layer → upstream on loopback (HTTP/1.1, a thread each). The primary
//! fails after 50 events (the connection is cut, or an in-band `overloaded_error`); the layer
//! continues on `fallback` with an assistant prefill. Marks taken in the proxy:
//!
//! * detect: the layer's "upstream attempt failed" warning (a tracing layer stamps it; the
//!   warning is issued as the failure is recorded, before planning);
//! * call / first byte: around the inner service (the hyper-util client), the fallback request
//!   leaving and the fallback's first body bytes arriving: the fallback's own time to first byte,
//!   body upload included;
//! * continuation: the first frame of the layer's response body after detect, as hyper's server
//!   takes it to write to the client.
//!
//! overhead = (continuation − detect) − (first byte − call): the planning, the request rewrite,
//! and relaying the fallback's first events up to the first byte the client gets.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::alloc::{self, Role};
use support::net::{self, Fault, Proto, Watched};
use support::stats::spread;
use support::stream::{self, Checker};
use support::sys;
use tower::{Layer, Service, ServiceBuilder};
use tower_midstream::{FallbackBody, MidStreamFallbackLayer, ReplayBody};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

const DELTAS: usize = 200;
const FAIL_AFTER: usize = 50;

/// The marks of the run in progress (runs are one at a time).
#[derive(Debug, Default, Clone, Copy)]
struct Marks {
    detect: Option<Instant>,
    call: Option<Instant>,
    first_byte: Option<Instant>,
    continuation: Option<Instant>,
}

static MARKS: Mutex<Marks> = Mutex::new(Marks {
    detect: None,
    call: None,
    first_byte: None,
    continuation: None,
});
static CALLS: AtomicUsize = AtomicUsize::new(0);

fn mark(f: impl FnOnce(&mut Marks)) {
    f(&mut MARKS.lock().unwrap())
}

/// Stamps the layer's failure warning.
struct Detect;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Detect {
    fn on_event(&self, ev: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let m = ev.metadata();
        if m.target() == "tower_midstream" && *m.level() == tracing::Level::WARN {
            let now = Instant::now();
            mark(|m| {
                m.detect.get_or_insert(now);
            });
        }
    }
}

/// Around the hyper-util client: stamps the fallback call and its first body bytes.
#[derive(Clone)]
struct Timed<S>(S);

type TimedFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Watched<Incoming>>, E>> + Send>>;

impl<S> Service<Request<ReplayBody<Incoming>>> for Timed<S>
where
    S: Service<Request<ReplayBody<Incoming>>, Response = Response<Incoming>>,
    S::Future: Send + 'static,
{
    type Response = Response<Watched<Incoming>>;
    type Error = S::Error;
    type Future = TimedFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody<Incoming>>) -> Self::Future {
        let fallback = CALLS.fetch_add(1, Ordering::Relaxed) > 0;
        if fallback {
            let now = Instant::now();
            mark(|m| m.call = Some(now));
        }
        let fut = self.0.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|inner| Watched {
                inner,
                on_frame: Arc::new(move |_: &[u8]| {
                    if fallback {
                        let now = Instant::now();
                        mark(|m| {
                            m.first_byte.get_or_insert(now);
                        });
                    }
                }),
            }))
        })
    }
}

/// What the client gets: the layer's body, its frames stamped after a failure.
fn stamp_out<B>(res: Response<FallbackBody<B>>) -> Response<Watched<FallbackBody<B>>> {
    res.map(|inner| Watched {
        inner,
        on_frame: Arc::new(|_: &[u8]| {
            let now = Instant::now();
            mark(|m| {
                if m.detect.is_some() && m.continuation.is_none() {
                    m.continuation = Some(now);
                }
            });
        }),
    })
}

#[derive(Default)]
struct Samples {
    plan_us: Vec<f64>,
    ttfb_us: Vec<f64>,
    relay_us: Vec<f64>,
    overhead_us: Vec<f64>,
}

fn main() {
    if support::skipped("failover") {
        return;
    }
    tracing_subscriber::registry().with(Detect).init();
    let quick = support::quick();
    let (ul, upstream) = std::net::TcpListener::bind("127.0.0.1:0")
        .map(|l| {
            let a = l.local_addr().unwrap();
            (l, a)
        })
        .unwrap();
    ul.set_nonblocking(true).unwrap();
    let (pl, proxy) = std::net::TcpListener::bind("127.0.0.1:0")
        .map(|l| {
            let a = l.local_addr().unwrap();
            (l, a)
        })
        .unwrap();
    pl.set_nonblocking(true).unwrap();
    sys::spawn_runtime_thread("upstream", Role::Upstream, move || async move {
        let l = tokio::net::TcpListener::from_std(ul).unwrap();
        net::serve_upstream(l, Proto::H1, Default::default()).await
    });
    sys::spawn_runtime_thread("proxy", Role::Proxy, move || async move {
        let l = tokio::net::TcpListener::from_std(pl).unwrap();
        let inner = Timed(net::Retarget::new(
            net::client::<ReplayBody<Incoming>>(Proto::H1),
            upstream,
        ));
        let svc = ServiceBuilder::new()
            .map_response(stamp_out)
            .service(MidStreamFallbackLayer::new(net::chain()).layer(inner));
        net::serve_proxy(l, svc, Proto::H1).await
    });
    alloc::set_role(Role::Client);
    let rt = sys::runtime();
    let client = net::client(Proto::H1);
    let whole: Arc<str> = stream::whole(DELTAS).into();
    let rounds = if quick { 3 } else { 40 };

    let mut table = format!(
        "## failover\n\nMachine: {}\n\n{rounds} runs each; the primary fails after {FAIL_AFTER} of {DELTAS} deltas; µs, median [p10–p90].\n\n\
         | request body | failure | detect → fallback call (plan + rewrite) | fallback's own TTFB (call → first byte) | fallback first byte → first continuation byte out | overhead = detect→continuation − TTFB |\n|---|---|---:|---:|---:|---:|\n",
        sys::machine()
    );
    for size in [10_000, 1_000_000] {
        let body = stream::request_body("primary", size);
        for (fault, name) in [
            (Fault::Reset, "connection cut"),
            (Fault::InBand, "in-band error"),
        ] {
            let mut s = Samples::default();
            for round in 0..rounds + 1 {
                *MARKS.lock().unwrap() = Marks::default();
                CALLS.store(0, Ordering::Relaxed);
                let fault_name = if fault == Fault::Reset {
                    "reset"
                } else {
                    "inband"
                };
                let req = net::stream_request(
                    proxy,
                    body.clone(),
                    DELTAS,
                    &[
                        (net::FAIL_AFTER, FAIL_AFTER.to_string()),
                        (net::FAULT, fault_name.to_string()),
                    ],
                );
                rt.block_on(async {
                    let res = client.request(req).await.expect("a response");
                    let mut b = res.into_body();
                    let mut check = Checker::new(whole.clone());
                    while let Some(f) = b.frame().await {
                        if let Some(d) = f.expect("a clean stream").data_ref() {
                            check.feed(d);
                        }
                    }
                    check.finish().expect("the whole answer, once");
                });
                let m = *MARKS.lock().unwrap();
                let (Some(d), Some(c), Some(f), Some(o)) =
                    (m.detect, m.call, m.first_byte, m.continuation)
                else {
                    panic!("a mark is missing: {m:?}");
                };
                if round == 0 {
                    continue; // warm-up: the pool's second connection, first rewrite
                }
                let us = |a: Instant, b: Instant| sys::micros(b.duration_since(a));
                s.plan_us.push(us(d, c));
                s.ttfb_us.push(us(c, f));
                s.relay_us.push(us(f, o));
                s.overhead_us.push(us(d, o) - us(c, f));
            }
            table.push_str(&format!(
                "| {} | {name} | {} | {} | {} | {} |\n",
                if size >= 1_000_000 { "1 MB" } else { "10 KB" },
                spread(&s.plan_us, 0),
                spread(&s.ttfb_us, 0),
                spread(&s.relay_us, 0),
                spread(&s.overhead_us, 0),
            ));
        }
    }
    support::report("failover", &table);
}
