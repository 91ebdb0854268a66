//! Scale: 10,000 concurrent streams through one process, 10% of them failing mid-way; every
//! stream must end with the whole answer, and memory per open stream is measured.
//!
//! File descriptors: `ulimit -n` is 20,000 here, and HTTP/1.1 would need 4 per stream with
//! client, proxy and upstream in one process (40,000). So both hops speak HTTP/2: the client
//! multiplexes its streams over one connection to the proxy, the proxy over one to the
//! upstream (a handful of sockets in all). That is how a gateway talks to providers anyway.
//!
//! Each mode (the bare proxy, the proxy with the layer) runs in a child process of its own, so
//! that its peak RSS is its own. In a child: upstream, proxy and client each on a thread; every
//! stream is held by the upstream after 40 events until all are open, then the figures are
//! read (RSS, and the heap bytes live per the counting allocator), then they are released; one
//! in ten is cut (half by a stream reset, half by an in-band `overloaded_error`) after 60
//! events and, with the layer, continued on the fallback.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::{json, Value};
use support::alloc::{self, Role};
use support::net::{self, Proto, UpstreamState};
use support::stats::median;
use support::stream::{self, Checker};
use support::sys;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

const DELTAS: usize = 100;
const HOLD_AFTER: usize = 40;
const FAIL_AFTER: usize = 60;

fn std_listener() -> (std::net::TcpListener, std::net::SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// One mode, in this (child) process; prints one JSON line of figures.
fn child(mode: &str, n: usize) {
    let state = Arc::new(UpstreamState::default());
    let (ul, upstream) = std_listener();
    let (pl, proxy) = std_listener();
    let up_state = state.clone();
    let proxy_mode = mode.to_owned();
    sys::spawn_runtime_thread("upstream", Role::Upstream, move || async move {
        let l = tokio::net::TcpListener::from_std(ul).unwrap();
        net::serve_upstream(l, Proto::H2, up_state).await
    });
    sys::spawn_runtime_thread("proxy", Role::Proxy, move || async move {
        let l = tokio::net::TcpListener::from_std(pl).unwrap();
        match proxy_mode.as_str() {
            "bare" => net::serve_proxy(l, net::bare(upstream, Proto::H2), Proto::H2).await,
            _ => net::serve_proxy(l, net::layered(upstream, Proto::H2), Proto::H2).await,
        }
    });
    alloc::set_role(Role::Client);
    let rt = sys::runtime();
    let client: Client<HttpConnector, Full<Bytes>> = net::client(Proto::H2);
    let whole: Arc<str> = stream::whole(DELTAS).into();
    let body = stream::request_body("primary", 1_000);

    // Warm up: connections on both hops, pools, the runtimes' buffers.
    rt.block_on(run_one(&client, proxy, &body, whole.clone(), None, None))
        .expect("the warm-up stream");
    let rss_base = sys::status_bytes("VmRSS");
    let live_base = alloc::live_bytes();

    let reached = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let (rss_open, live_open, results) = rt.block_on(async {
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let fault = match i % 20 {
                0 => Some("reset"),
                10 => Some("inband"),
                _ => None,
            };
            let client = client.clone();
            let body = body.clone();
            let whole = whole.clone();
            let reached = reached.clone();
            tasks.push(tokio::spawn(async move {
                run_one(&client, proxy, &body, whole, fault, Some(reached)).await
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while reached.load(Ordering::Acquire) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} streams opened",
                reached.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rss_open = sys::status_bytes("VmRSS");
        let live_open = alloc::live_bytes();
        state.released.send_replace(true);
        let mut results = Vec::with_capacity(n);
        for t in tasks {
            results.push(t.await.expect("a stream task"));
        }
        (rss_open, live_open, results)
    });
    let secs = start.elapsed().as_secs_f64();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let failed_of_failing = results
        .iter()
        .enumerate()
        .filter(|(i, r)| i % 10 == 0 && r.is_err())
        .count();
    let errors: Vec<&String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .take(3)
        .collect();
    let line = json!({
        "mode": mode,
        "streams": n,
        "ok": ok,
        "failed_of_failing": failed_of_failing,
        "errors": errors,
        "fallback_calls": state.fallback_calls.load(Ordering::Relaxed),
        "rss_base": rss_base,
        "rss_open": rss_open,
        "hwm": sys::status_bytes("VmHWM"),
        "live_base": live_base,
        "live_open": live_open,
        "text_at_hold": whole.len() * HOLD_AFTER / DELTAS,
        "secs": secs,
    });
    println!("SCALE {line}");
}

/// One stream; `Err` says how it ended if not with the whole answer.
async fn run_one(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: std::net::SocketAddr,
    body: &Bytes,
    whole: Arc<str>,
    fault: Option<&str>,
    reached: Option<Arc<AtomicUsize>>,
) -> Result<(), String> {
    let mut extra = vec![(net::HOLD_AFTER, HOLD_AFTER.to_string())];
    if reached.is_none() {
        extra.clear();
    }
    if let Some(f) = fault {
        extra.push((net::FAIL_AFTER, FAIL_AFTER.to_string()));
        extra.push((net::FAULT, f.to_string()));
    }
    let req = net::stream_request(proxy, body.clone(), DELTAS, &extra);
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    if res.status() != 200 {
        return Err(format!("HTTP {}", res.status()));
    }
    let mut b = res.into_body();
    let mut check = Checker::new(whole);
    let mut counted = reached.is_none();
    while let Some(frame) = b.frame().await {
        let frame = frame.map_err(|e| format!("body error: {e}"))?;
        if let Some(d) = frame.data_ref() {
            check.feed(d);
        }
        if !counted && check.events >= HOLD_AFTER {
            counted = true;
            if let Some(r) = &reached {
                r.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
    if !counted {
        if let Some(r) = &reached {
            r.fetch_add(1, Ordering::AcqRel);
        }
    }
    check.finish()
}

/// An upstream body in memory: the events up to the hold, then nothing, ever.
struct Held {
    events: Arc<Vec<Bytes>>,
    next: usize,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.next == HOLD_AFTER {
            return std::task::Poll::Pending;
        }
        self.next += 1;
        let ev = self.events[self.next - 1].clone();
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(ev))))
    }
}

fn held_response() -> http::Response<Held> {
    let mut res = http::Response::new(Held {
        events: stream::primary_events(DELTAS),
        next: 0,
    });
    res.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    res
}

/// Reads a body until it has nothing ready; returns the bytes read.
fn drain_ready<B: http_body::Body<Data = Bytes> + Unpin>(body: &mut B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    let mut n = 0;
    while let std::task::Poll::Ready(Some(frame)) =
        std::pin::Pin::new(&mut *body).poll_frame(&mut cx)
    {
        if let Ok(d) = frame.expect("no error").into_data() {
            n += d.len();
        }
    }
    n
}

/// The heap each open stream keeps, exactly: `n` streams opened in memory (no sockets) and held
/// after 40 events, the bodies kept as a server would keep them; live bytes after minus before,
/// per stream. Bare: the upstream body itself. Layer: the layer's body around it.
fn retained_in_process(n: usize) -> (f64, f64, usize) {
    use tower::{Layer, ServiceExt};
    let rt = sys::runtime();
    let body = stream::request_body("primary", 1_000);
    let req = || {
        http::Request::post("/v1/messages")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap()
    };
    rt.block_on(async {
        // Bare: the inner service's body is what a proxy holds.
        let mut bare = Vec::with_capacity(n);
        let before = alloc::live_bytes();
        for _ in 0..n {
            let svc = tower::service_fn(|_: http::Request<Full<Bytes>>| async {
                Ok::<_, std::convert::Infallible>(held_response())
            });
            let mut b = svc.oneshot(req()).await.unwrap().into_body();
            drain_ready(&mut b);
            bare.push(b);
        }
        let bare_per = (alloc::live_bytes() - before) as f64 / n as f64;
        drop(bare);

        let mut layered = Vec::with_capacity(n);
        let mut sent = 0;
        let before = alloc::live_bytes();
        for _ in 0..n {
            let inner = tower::service_fn(
                |_: http::Request<tower_midstream::ReplayBody<Full<Bytes>>>| async {
                    Ok::<_, std::convert::Infallible>(held_response())
                },
            );
            let svc = tower_midstream::MidStreamFallbackLayer::new(net::chain()).layer(inner);
            let mut b = svc.oneshot(req()).await.unwrap().into_body();
            sent = drain_ready(&mut b);
            layered.push(b);
        }
        let layer_per = (alloc::live_bytes() - before) as f64 / n as f64;
        drop(layered);
        (bare_per, layer_per, sent)
    })
}

fn run_child(mode: &str, n: usize) -> Value {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--scale-child", mode, &n.to_string()])
        .output()
        .expect("run the scale child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SCALE "))
        .unwrap_or_else(|| {
            panic!(
                "the {mode} child printed no figures: {}\n{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scale-child") {
        child(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    if support::skipped("scale") {
        return;
    }
    let n = if support::quick() { 1_000 } else { 10_000 };
    let (bare_heap, layer_heap, sent) = retained_in_process(n);
    let text = stream::whole(HOLD_AFTER - stream::ENVELOPE_EVENTS / 2).len();
    // Three runs of each, alternating; each figure is the median of its three.
    let runs = if support::quick() { 1 } else { 3 };
    let mut bare = Vec::new();
    let mut layer = Vec::new();
    for _ in 0..runs {
        bare.push(run_child("bare", n));
        layer.push(run_child("layer", n));
    }
    let kib = |x: f64| x / 1024.0;
    let per = |runs: &[Value], a: &str, b: &str| {
        let xs: Vec<f64> = runs
            .iter()
            .map(|v| (v[a].as_f64().unwrap() - v[b].as_f64().unwrap()) / n as f64)
            .collect();
        median(&xs)
    };
    let abs = |runs: &[Value], a: &str| {
        let xs: Vec<f64> = runs.iter().map(|v| v[a].as_f64().unwrap()).collect();
        median(&xs)
    };
    let all = |runs: &[Value], k: &str| {
        runs.iter()
            .map(|v| v[k].to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut t = format!(
        "## scale\n\nMachine: {}\n\n{n} concurrent streams of {DELTAS} deltas over HTTP/2 (client → proxy → upstream, one process, three threads); all held open after {HOLD_AFTER} events while memory is read; 10% cut after {FAIL_AFTER} events (half stream resets, half in-band errors). {runs} runs of each mode (a fresh process each), alternating; per-stream figures are medians of the runs.\n\n\
         | figure | bare proxy | with the layer | layer − bare |\n|---|---:|---:|---:|\n",
        sys::machine()
    );
    t.push_str(&format!(
        "| streams with the whole answer (each run) | {} of {n} | {} of {n} | |\n",
        all(&bare, "ok"),
        all(&layer, "ok")
    ));
    t.push_str(&format!(
        "| fallback calls (each run) | {} | {} | |\n",
        all(&bare, "fallback_calls"),
        all(&layer, "fallback_calls")
    ));
    for (label, a, b) in [
        (
            "RSS per open stream (KiB, (RSS open − RSS before) / n)",
            "rss_open",
            "rss_base",
        ),
        (
            "peak RSS per stream (KiB, (VmHWM − RSS before) / n)",
            "hwm",
            "rss_base",
        ),
        (
            "heap live per open stream (KiB, counting allocator)",
            "live_open",
            "live_base",
        ),
    ] {
        let (x, y) = (per(&bare, a, b), per(&layer, a, b));
        t.push_str(&format!(
            "| {label} | {:.2} | {:.2} | {:+.2} |\n",
            kib(x),
            kib(y),
            kib(y - x)
        ));
    }
    t.push_str(&format!(
        "| peak RSS of the process (MiB) | {:.1} | {:.1} | |\n",
        abs(&bare, "hwm") / 1048576.0,
        abs(&layer, "hwm") / 1048576.0
    ));
    t.push_str(&format!(
        "| wall time, all streams (s) | {:.1} | {:.1} | |\n",
        abs(&bare, "secs"),
        abs(&layer, "secs")
    ));
    t.push_str(&format!(
        "\nText each stream had generated when memory was read: {} bytes. Bare-proxy streams that were cut and did not end with the whole answer (each run): {} of {}, as expected. Errors seen (first 3): bare {}, layer {}.\n",
        layer[0]["text_at_hold"],
        all(&bare, "failed_of_failing"),
        n / 10,
        bare[0]["errors"],
        layer[0]["errors"]
    ));
    t.push_str(&format!(
        "\n### Retained by the layer, in process\n\n{n} streams opened in memory (no sockets, the request body shared), each held after {HOLD_AFTER} events ({sent} bytes relayed, about {text} bytes of generated text): heap live per stream, counting allocator.\n\n| bare (the upstream body) | with the layer | layer − bare | target: 16 KiB + text |\n|---:|---:|---:|---:|\n| {:.0} B | {:.0} B | {:.0} B ({:.2} KiB) | {:.0} B |\n",
        bare_heap,
        layer_heap,
        layer_heap - bare_heap,
        (layer_heap - bare_heap) / 1024.0,
        16384 + text
    ));
    support::report("scale", &t);
}
